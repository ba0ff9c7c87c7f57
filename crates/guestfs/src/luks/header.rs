//! LUKS headers, read-only: the LUKS1 binary header (keyslots in fixed places) and the LUKS2
//! binary header with its JSON metadata (the primary copy, or the secondary when the
//! primary's SHA-256 checksum fails). Only what unlocking needs is kept; numbers from the
//! guest are bounded before they size any allocation or any key derivation.

use base64::Engine as _;
use serde_json::Value;
use sha2::Digest as _;

use crate::bytes::{be16, be32, be64};
use crate::error::{GuestError, Result};
use crate::reader::Slice;

/// Most PBKDF2 iterations accepted (cryptsetup's own choice is a few million).
const MAX_ITERATIONS: u64 = 100_000_000;
/// Most Argon2 memory accepted, KiB (cryptsetup caps its own at 4 GiB).
const MAX_MEMORY_KIB: u64 = 4 << 20;
/// Most anti-forensic stripes accepted (cryptsetup uses 4000).
const MAX_STRIPES: u64 = 1 << 16;
/// Largest LUKS2 header (binary + JSON) accepted.
const MAX_LUKS2_HEADER: u64 = 4 << 20;

/// How a keyslot's key is derived from the passphrase.
#[derive(Clone, Debug)]
pub enum Kdf {
    /// PBKDF2-HMAC with `hash`.
    Pbkdf2 { hash: String, iterations: u32, salt: Vec<u8> },
    /// Argon2i (`id: false`) or Argon2id.
    Argon2 { id: bool, time: u32, memory_kib: u32, lanes: u32, salt: Vec<u8> },
}

/// One keyslot: how to get its key and where its (anti-forensic split) volume key is.
#[derive(Clone, Debug)]
pub struct Keyslot {
    /// Its number.
    pub id: String,
    /// The volume key's length.
    pub key_size: usize,
    /// Key derivation.
    pub kdf: Kdf,
    /// Where the split key is, from the start of the volume.
    pub area_offset: u64,
    /// The split key's cipher and key length.
    pub area_cipher: String,
    pub area_key_size: usize,
    /// Anti-forensic stripes and their hash.
    pub stripes: u32,
    pub af_hash: String,
}

/// How a candidate volume key is checked.
#[derive(Clone, Debug)]
pub struct KeyDigest {
    /// Keyslots it checks (LUKS2; all for LUKS1).
    pub keyslots: Vec<String>,
    /// PBKDF2 hash, iterations, salt and the expected value.
    pub hash: String,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub digest: Vec<u8>,
}

/// The encrypted data.
#[derive(Clone, Debug)]
pub struct Segment {
    /// First byte of the data on the volume.
    pub offset: u64,
    /// Its length, when fixed (else to the end of the volume).
    pub size: Option<u64>,
    /// Cipher as cryptsetup names it (`aes-xts-plain64`).
    pub cipher: String,
    /// Encryption sector size (512 or 4096).
    pub sector_size: u32,
    /// Added to every sector number to make its IV.
    pub iv_tweak: u64,
}

/// A LUKS header.
#[derive(Clone, Debug)]
pub struct Header {
    /// 1 or 2.
    pub version: u16,
    /// Its UUID.
    pub uuid: String,
    /// The data.
    pub segment: Segment,
    /// Active keyslots.
    pub keyslots: Vec<Keyslot>,
    /// Volume key digests.
    pub digests: Vec<KeyDigest>,
}

fn bad(reason: impl std::fmt::Display) -> GuestError {
    GuestError::corrupt("LUKS header", reason)
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn bounded(what: &str, n: u64, max: u64) -> Result<u64> {
    if n > max { Err(bad(format!("{what} {n} is beyond {max}"))) } else { Ok(n) }
}

/// Read the header at the start of `volume`.
pub fn read(volume: &Slice) -> Result<Header> {
    let mut head = vec![0u8; 4096];
    volume.read_at(0, &mut head)?;
    if &head[0..6] != b"LUKS\xba\xbe" {
        return Err(bad("no LUKS magic"));
    }
    match be16(&head, 6) {
        1 => luks1(&head),
        2 => luks2(volume, &head),
        v => Err(bad(format!("unknown version {v}"))),
    }
}

fn luks1(h: &[u8]) -> Result<Header> {
    let cipher = format!("{}-{}", text(&h[8..40]), text(&h[40..72]));
    let hash = text(&h[72..104]);
    let key_size = bounded("key size", u64::from(be32(h, 108)), 64)? as usize;
    let mut keyslots = Vec::new();
    for i in 0..8 {
        let k = &h[208 + i * 48..208 + (i + 1) * 48];
        if be32(k, 0) != 0x00AC_71F3 {
            continue;
        }
        keyslots.push(Keyslot {
            id: i.to_string(),
            key_size,
            kdf: Kdf::Pbkdf2 {
                hash: hash.clone(),
                iterations: bounded("iterations", u64::from(be32(k, 4)), MAX_ITERATIONS)? as u32,
                salt: k[8..40].to_vec(),
            },
            area_offset: u64::from(be32(k, 40)) * 512,
            area_cipher: cipher.clone(),
            area_key_size: key_size,
            stripes: bounded("stripes", u64::from(be32(k, 44)), MAX_STRIPES)? as u32,
            af_hash: hash.clone(),
        });
    }
    Ok(Header {
        version: 1,
        uuid: text(&h[168..208]),
        segment: Segment {
            offset: u64::from(be32(h, 104)) * 512,
            size: None,
            cipher,
            sector_size: 512,
            iv_tweak: 0,
        },
        digests: vec![KeyDigest {
            keyslots: keyslots.iter().map(|k| k.id.clone()).collect(),
            hash,
            iterations: bounded("iterations", u64::from(be32(h, 164)), MAX_ITERATIONS)? as u32,
            salt: h[132..164].to_vec(),
            digest: h[112..132].to_vec(),
        }],
        keyslots,
    })
}

/// The LUKS2 header area at `at` of `size` bytes, if its checksum holds.
fn luks2_area(volume: &Slice, at: u64, size: u64) -> Result<Option<Vec<u8>>> {
    let mut area = vec![0u8; size as usize];
    if at.checked_add(size).is_none_or(|end| end > volume.len()) {
        return Ok(None);
    }
    volume.read_at(at, &mut area)?;
    if &area[0..4] != b"LUKS" && &area[0..4] != b"SKUL" {
        return Ok(None);
    }
    if text(&area[72..104]) != "sha256" {
        return Err(bad(format!("header checksum {:?} is not supported", text(&area[72..104]))));
    }
    let stored = area[448..480].to_vec();
    area[448..512].fill(0);
    let actual = sha2::Sha256::digest(&area);
    // Under the fuzzer the checksum is not required, so mutations reach the JSON behind it.
    Ok((cfg!(fuzzing) || actual.as_slice() == stored.as_slice()).then_some(area))
}

fn luks2(volume: &Slice, head: &[u8]) -> Result<Header> {
    let size = be64(head, 8);
    if !(8192..=MAX_LUKS2_HEADER).contains(&size) || !size.is_multiple_of(4096) {
        return Err(bad(format!("a header size of {size} bytes")));
    }
    let area = match luks2_area(volume, 0, size)? {
        Some(a) => a,
        None => {
            luks2_area(volume, size, size)?.ok_or_else(|| bad("both header copies fail their checksum"))?
        }
    };
    let json_end = area[4096..].iter().position(|&c| c == 0).map_or(area.len(), |p| 4096 + p);
    let json: Value =
        serde_json::from_slice(&area[4096..json_end]).map_err(|e| bad(format!("its JSON: {e}")))?;
    let segments = json["segments"].as_object().ok_or_else(|| bad("no segments"))?;
    if segments.len() != 1 {
        return Err(GuestError::Unsupported {
            what: "LUKS2 volume".into(),
            reason: format!("{} data segments (a reencryption in progress?)", segments.len()),
        });
    }
    let (_, seg) = segments.iter().next().ok_or_else(|| bad("no segments"))?;
    if seg["type"] != "crypt" {
        return Err(bad(format!("a segment of type {}", seg["type"])));
    }
    let segment = Segment {
        offset: number(&seg["offset"]).ok_or_else(|| bad("a segment without an offset"))?,
        size: number(&seg["size"]),
        cipher: seg["encryption"].as_str().unwrap_or("").to_string(),
        sector_size: number(&seg["sector_size"])
            .filter(|s| [512, 1024, 2048, 4096].contains(s))
            .ok_or_else(|| bad("a bad sector size"))? as u32,
        iv_tweak: number(&seg["iv_tweak"]).unwrap_or(0),
    };
    let mut keyslots = Vec::new();
    for (id, k) in json["keyslots"].as_object().into_iter().flatten() {
        if k["type"] != "luks2" {
            continue;
        }
        let kdf = &k["kdf"];
        let salt = b64(&kdf["salt"])?;
        let kdf = match kdf["type"].as_str() {
            Some("pbkdf2") => Kdf::Pbkdf2 {
                hash: kdf["hash"].as_str().unwrap_or("").to_string(),
                iterations: bounded("iterations", number(&kdf["iterations"]).unwrap_or(0), MAX_ITERATIONS)?
                    as u32,
                salt,
            },
            Some(t @ ("argon2i" | "argon2id")) => Kdf::Argon2 {
                id: t == "argon2id",
                time: bounded("Argon2 time", number(&kdf["time"]).unwrap_or(0), 1000)? as u32,
                memory_kib: bounded("Argon2 memory", number(&kdf["memory"]).unwrap_or(0), MAX_MEMORY_KIB)?
                    as u32,
                lanes: bounded("Argon2 lanes", number(&kdf["cpus"]).unwrap_or(1), 64)? as u32,
                salt,
            },
            other => return Err(bad(format!("keyslot {id}: key derivation {other:?}"))),
        };
        let area = &k["area"];
        keyslots.push(Keyslot {
            id: id.clone(),
            key_size: bounded("key size", number(&k["key_size"]).unwrap_or(0), 64)? as usize,
            kdf,
            area_offset: number(&area["offset"]).ok_or_else(|| bad("a keyslot area without an offset"))?,
            area_cipher: area["encryption"].as_str().unwrap_or("").to_string(),
            area_key_size: bounded("key size", number(&area["key_size"]).unwrap_or(0), 64)? as usize,
            stripes: bounded("stripes", number(&k["af"]["stripes"]).unwrap_or(0), MAX_STRIPES)? as u32,
            af_hash: k["af"]["hash"].as_str().unwrap_or("").to_string(),
        });
    }
    let mut digests = Vec::new();
    for (_, d) in json["digests"].as_object().into_iter().flatten() {
        if d["type"] != "pbkdf2" {
            continue;
        }
        digests.push(KeyDigest {
            keyslots: d["keyslots"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            hash: d["hash"].as_str().unwrap_or("").to_string(),
            iterations: bounded("iterations", number(&d["iterations"]).unwrap_or(0), MAX_ITERATIONS)? as u32,
            salt: b64(&d["salt"])?,
            digest: b64(&d["digest"])?,
        });
    }
    Ok(Header { version: 2, uuid: text(&area[168..208]), segment, keyslots, digests })
}

/// A JSON number, or a number in a string (LUKS2 writes 64-bit values as strings).
fn number(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn b64(v: &Value) -> Result<Vec<u8>> {
    let s = v.as_str().ok_or_else(|| bad("a missing salt or digest"))?;
    base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| bad(format!("base64: {e}")))
}
