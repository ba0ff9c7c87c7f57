//! Chunk blobs: how one chunk's content is stored. Byte layout in docs/FORMAT.md ("Chunk blob").
//!
//! Sealing compresses with zstd (kept only when smaller), encrypts with AES-256-GCM under a
//! random nonce with the chunk id and the header as associated data, and appends a plain
//! BLAKE3 checksum of everything before it so a server without the key can check integrity.

use crate::chunk_cipher::{NONCE_LEN, TAG_LEN};
use crate::error::{Result, VaultError, random_bytes};
use crate::id::ChunkId;
use crate::keys::Keys;

/// Magic number of a chunk blob.
pub const BLOB_MAGIC: [u8; 4] = *b"VMVB";
/// Version of the blob layout this code writes and reads.
pub const BLOB_VERSION: u8 = 1;
/// Fixed header length.
pub const BLOB_HEADER_LEN: usize = 32;
/// Trailing checksum length.
pub const BLOB_CHECKSUM_LEN: usize = 32;
/// Flag bit: payload is a zstd frame.
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Flag bit: payload is AES-256-GCM ciphertext followed by its 16-byte tag.
pub const FLAG_ENCRYPTED: u8 = 0x02;
/// Largest plaintext a blob may hold; bounds decompression of hostile input.
pub const MAX_PLAINTEXT: usize = 16 * 1024 * 1024;
/// zstd level used for chunks: fast, since throughput matters more than the last few percent.
pub const ZSTD_LEVEL: i32 = 1;

thread_local! {
    /// One zstd context per thread, reused: making one per chunk repeats its table setup.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Seal a chunk's plaintext into its stored form. `id` must be `keys.chunk_id(plaintext)`.
pub fn seal(keys: &Keys, id: &ChunkId, plaintext: &[u8]) -> Result<Vec<u8>> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(VaultError::Invalid(format!(
            "chunk of {} bytes is larger than the {MAX_PLAINTEXT}-byte limit",
            plaintext.len()
        )));
    }
    let mut flags = 0u8;
    let compressed = COMPRESSOR
        .with(|cell| {
            let mut slot = cell.borrow_mut();
            let compressor = match slot.as_mut() {
                Some(c) => c,
                None => slot.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
            };
            compressor.compress(plaintext)
        })
        .map_err(|e| VaultError::Failed(format!("zstd: {e}")))?;
    let body: &[u8] = if compressed.len() < plaintext.len() {
        flags |= FLAG_COMPRESSED;
        &compressed
    } else {
        plaintext
    };

    let mut header = [0u8; BLOB_HEADER_LEN];
    header[0..4].copy_from_slice(&BLOB_MAGIC);
    header[4] = BLOB_VERSION;
    let mut out = Vec::with_capacity(BLOB_HEADER_LEN + body.len() + TAG_LEN + BLOB_CHECKSUM_LEN);
    match keys.chunk_cipher() {
        Some(cipher) => {
            header[5] = flags | FLAG_ENCRYPTED;
            let mut nonce = [0u8; NONCE_LEN];
            random_bytes(&mut nonce)?;
            header[8..20].copy_from_slice(&nonce);
            out.extend_from_slice(&header);
            out.extend_from_slice(body);
            let aad = associated_data(id, &header);
            let tag = cipher.seal(&nonce, &aad, &mut out[BLOB_HEADER_LEN..])?;
            out.extend_from_slice(&tag);
        }
        None => {
            header[5] = flags;
            out.extend_from_slice(&header);
            out.extend_from_slice(body);
        }
    }
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    Ok(out)
}

/// Check a stored blob's structure and checksum without any key. This is all a server can do.
pub fn check(id: &ChunkId, stored: &[u8]) -> Result<()> {
    parse(id, stored).map(|_| ())
}

/// Open a stored blob: check, decrypt (which authenticates it against its id), decompress;
/// an unencrypted blob's plaintext is hashed again to confirm its id.
pub fn open(keys: &Keys, id: &ChunkId, stored: &[u8]) -> Result<Vec<u8>> {
    let blob = parse(id, stored)?;
    let encrypted = blob.flags & FLAG_ENCRYPTED != 0;
    let body = match (keys.chunk_cipher(), encrypted) {
        (Some(cipher), true) => {
            if blob.payload.len() < TAG_LEN {
                return Err(VaultError::corrupt(format!("chunk {id}"), "ciphertext shorter than its tag"));
            }
            let (ciphertext, tag) = blob.payload.split_at(blob.payload.len() - TAG_LEN);
            let mut buf = ciphertext.to_vec();
            let aad = associated_data(id, blob.header);
            let mut nonce = [0u8; NONCE_LEN];
            nonce.copy_from_slice(&blob.header[8..20]);
            if !cipher.open(&nonce, &aad, &mut buf, tag) {
                return Err(VaultError::ChunkAuthentication { id: *id });
            }
            buf
        }
        (None, false) => blob.payload.to_vec(),
        (Some(_), false) => {
            // An encrypted vault never holds plaintext chunks: one found here was planted.
            return Err(VaultError::ChunkAuthentication { id: *id });
        }
        (None, true) => {
            return Err(VaultError::corrupt(
                format!("chunk {id}"),
                "encrypted, but the vault is not encrypted",
            ));
        }
    };
    let plaintext = if blob.flags & FLAG_COMPRESSED != 0 {
        DECOMPRESSOR
            .with(|cell| {
                let mut slot = cell.borrow_mut();
                let decompressor = match slot.as_mut() {
                    Some(d) => d,
                    None => slot.insert(zstd::bulk::Decompressor::new()?),
                };
                decompressor.decompress(&body, MAX_PLAINTEXT)
            })
            .map_err(|e| VaultError::corrupt(format!("chunk {id}"), format!("zstd: {e}")))?
    } else {
        body
    };
    // Encrypted: the GCM tag over (id, header, ciphertext) already proves the content was sealed
    // for this id by a holder of the key. Unencrypted: the id itself is the only proof.
    if !encrypted && keys.chunk_id(&plaintext) != *id {
        return Err(VaultError::ChunkAuthentication { id: *id });
    }
    Ok(plaintext)
}

struct ParsedBlob<'a> {
    header: &'a [u8],
    flags: u8,
    payload: &'a [u8],
}

fn parse<'a>(id: &ChunkId, stored: &'a [u8]) -> Result<ParsedBlob<'a>> {
    let corrupt = |reason: &str| VaultError::corrupt(format!("chunk {id}"), reason);
    if stored.len() < BLOB_HEADER_LEN + BLOB_CHECKSUM_LEN {
        return Err(corrupt("shorter than header and checksum"));
    }
    let (content, checksum) = stored.split_at(stored.len() - BLOB_CHECKSUM_LEN);
    if content[0..4] != BLOB_MAGIC {
        return Err(corrupt("not a vmvault chunk (bad magic)"));
    }
    if blake3::hash(content).as_bytes() != checksum {
        return Err(VaultError::ChunkChecksum { id: *id });
    }
    if content[4] != BLOB_VERSION {
        return Err(VaultError::UnsupportedVersion {
            what: format!("chunk {id}"),
            found: content[4].into(),
            supported: BLOB_VERSION.into(),
        });
    }
    let flags = content[5];
    if flags & !(FLAG_COMPRESSED | FLAG_ENCRYPTED) != 0 {
        return Err(corrupt("unknown flag bits set"));
    }
    let header = &content[..BLOB_HEADER_LEN];
    let reserved_ok = header[6..8] == [0, 0] && header[20..32] == [0; 12];
    let nonce_ok = flags & FLAG_ENCRYPTED != 0 || header[8..20] == [0; 12];
    if !reserved_ok || !nonce_ok {
        return Err(corrupt("reserved header bytes set"));
    }
    Ok(ParsedBlob { header, flags, payload: &content[BLOB_HEADER_LEN..] })
}

fn associated_data(id: &ChunkId, header: &[u8]) -> [u8; 32 + BLOB_HEADER_LEN] {
    let mut aad = [0u8; 32 + BLOB_HEADER_LEN];
    aad[..32].copy_from_slice(id.as_bytes());
    aad[32..].copy_from_slice(header);
    aad
}
