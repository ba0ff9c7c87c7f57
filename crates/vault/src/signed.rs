//! Signed JSON documents: plaintext a server can read, with a keyed MAC a client checks.
//!
//! A document is a JSON object whose `mac` member is a keyed BLAKE3 over the canonical bytes
//! of all its other members: object keys sorted by their UTF-8 bytes, no insignificant
//! whitespace, strings escaped as serde_json does. The canonical form is computed from the
//! parsed value, so members a newer version adds are still covered by the MAC.
//!
//! A point's manifest also has a `sig` member: an Ed25519 signature over the canonical bytes
//! of all members but `mac` and `sig`, which a server checks with the config's public point
//! key (see [`crate::point_key`]). The MAC covers `sig` too.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Result, VaultError};
use crate::keys::{Keys, Mac};
use crate::point_key::PointKey;

/// Name of the member that holds the MAC.
pub const MAC_FIELD: &str = "mac";

/// Name of the member that holds a point's public-key signature.
pub const SIG_FIELD: &str = "sig";

/// Serialise `doc` (a struct that serialises to a JSON object) and add its MAC.
pub fn sign<T: Serialize>(keys: &Keys, doc: &T) -> Result<Vec<u8>> {
    with_mac(keys, to_object(doc)?)
}

/// Serialise a point's manifest, add its public-key signature, then its MAC.
pub fn sign_point<T: Serialize>(keys: &Keys, doc: &T) -> Result<Vec<u8>> {
    let mut map = to_object(doc)?;
    map.remove(SIG_FIELD);
    let sig = keys.sign_point(&canonical(&Value::Object(map.clone())));
    map.insert(SIG_FIELD.to_string(), Value::String(sig));
    with_mac(keys, map)
}

/// Parse a point's manifest without the vault key, check its public-key signature, then
/// deserialise it: what a server does before it acts on the point.
pub fn read_point<T: DeserializeOwned>(bytes: &[u8], key: &PointKey, what: &str) -> Result<T> {
    let mut value = parse_object(bytes, what)?;
    let sig = match &mut value {
        Value::Object(map) => {
            map.remove(MAC_FIELD);
            map.remove(SIG_FIELD)
        }
        _ => None,
    };
    match sig.as_ref().and_then(Value::as_str) {
        Some(sig) if key.verifies(&canonical(&value), sig) => {
            serde_json::from_value(value).map_err(|e| VaultError::corrupt(what, e.to_string()))
        }
        _ => Err(VaultError::BadSignature { what: what.to_string() }),
    }
}

fn to_object<T: Serialize>(doc: &T) -> Result<serde_json::Map<String, Value>> {
    match serde_json::to_value(doc).map_err(|e| VaultError::Failed(format!("serialise: {e}")))? {
        Value::Object(mut map) => {
            map.remove(MAC_FIELD);
            Ok(map)
        }
        _ => Err(VaultError::Failed("a signed document must be a JSON object".into())),
    }
}

fn with_mac(keys: &Keys, mut map: serde_json::Map<String, Value>) -> Result<Vec<u8>> {
    let mac = keys.sign(&canonical(&Value::Object(map.clone())));
    map.insert(MAC_FIELD.to_string(), Value::String(mac.to_hex()));
    let value = Value::Object(map);
    let mut out =
        serde_json::to_vec_pretty(&value).map_err(|e| VaultError::Failed(format!("serialise: {e}")))?;
    out.push(b'\n');
    Ok(out)
}

/// Parse a signed document, check its MAC, then deserialise it; `what` names it in errors.
pub fn verify<T: DeserializeOwned>(keys: &Keys, bytes: &[u8], what: &str) -> Result<T> {
    let mut value = parse_object(bytes, what)?;
    let mac = match &mut value {
        Value::Object(map) => map.remove(MAC_FIELD),
        _ => None,
    };
    let mac = mac
        .as_ref()
        .and_then(Value::as_str)
        .and_then(Mac::from_hex)
        .ok_or_else(|| VaultError::BadSignature { what: what.to_string() })?;
    if !keys.sign(&canonical(&value)).verify(&mac) {
        return Err(VaultError::BadSignature { what: what.to_string() });
    }
    serde_json::from_value(value).map_err(|e| VaultError::corrupt(what, e.to_string()))
}

/// Read a signed document without checking its MAC: for a server that has no key and only
/// needs the structure (which chunks a point references). Never trust it for restores.
pub fn read_unverified<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    let mut value = parse_object(bytes, what)?;
    if let Value::Object(map) = &mut value {
        map.remove(MAC_FIELD);
    }
    serde_json::from_value(value).map_err(|e| VaultError::corrupt(what, e.to_string()))
}

fn parse_object(bytes: &[u8], what: &str) -> Result<Value> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| VaultError::corrupt(what, format!("JSON: {e}")))?;
    if !value.is_object() {
        return Err(VaultError::corrupt(what, "not a JSON object"));
    }
    Ok(value)
}

/// Canonical bytes of a JSON value (see the module documentation).
pub fn canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(member, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Serialising a scalar Value into a Vec cannot fail.
    if let Ok(bytes) = serde_json::to_vec(value) {
        out.extend_from_slice(&bytes);
    }
}
