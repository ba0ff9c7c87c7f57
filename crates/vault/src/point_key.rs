//! Public-key signatures on recovery points. The vault key stays on the client hosts, yet a
//! server that prunes without it must not act on a manifest that someone without the key
//! forged or damaged. So every manifest also carries an Ed25519 signature by a key derived
//! from the master key, and the vault's config holds the public half.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// The public half of a vault's point-signing key, as its config records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PointKey(VerifyingKey);

impl PointKey {
    /// Hex form, as stored in the config.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// Parse the hex form; `None` if it is not a valid Ed25519 public key.
    pub fn from_hex(text: &str) -> Option<PointKey> {
        let bytes: [u8; 32] = hex::decode(text).ok()?.try_into().ok()?;
        VerifyingKey::from_bytes(&bytes).ok().map(PointKey)
    }

    /// Whether `signature` (hex) is this key's signature of `message`. Strict verification:
    /// no malleable or small-order forms.
    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let Some(bytes) = hex::decode(signature).ok().and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
            return false;
        };
        self.0.verify_strict(message, &Signature::from_bytes(&bytes)).is_ok()
    }
}

/// The private half; zeroized on drop, never printed.
pub(crate) struct PointSigner(SigningKey);

impl PointSigner {
    pub(crate) fn from_seed(seed: &[u8; 32]) -> PointSigner {
        PointSigner(SigningKey::from_bytes(seed))
    }

    /// Sign `message`; the signature in hex.
    pub(crate) fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.0.sign(message).to_bytes())
    }

    pub(crate) fn public(&self) -> PointKey {
        PointKey(self.0.verifying_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_its_message_under_its_key() {
        let signer = PointSigner::from_seed(&[7; 32]);
        let other = PointSigner::from_seed(&[8; 32]);
        let signature = signer.sign(b"point");
        let key = PointKey::from_hex(&signer.public().to_hex()).expect("round trip");
        assert!(key.verifies(b"point", &signature));
        assert!(!key.verifies(b"point!", &signature));
        assert!(!other.public().verifies(b"point", &signature));
        assert!(!key.verifies(b"point", "00"));
        assert!(!key.verifies(b"point", "not hex"));
        assert_eq!(PointKey::from_hex("abcd"), None);
    }
}
