//! LUKS1 and LUKS2 volumes opened with a passphrase (or key file), in process and read-only:
//! each keyslot's key is derived (PBKDF2-SHA1/256/512, Argon2i, Argon2id), its split volume
//! key decrypted and merged (the anti-forensic splitter), and the result checked against the
//! header's digest in constant time. The volume's data is then decrypted sector by sector as
//! it is read (aes-xts-plain64, 128- or 256-bit), through a [`BlockReader`]: the decrypted
//! view is never written anywhere, and keys are zeroized when dropped.

mod header;

use std::io;

use aes::cipher::KeyInit;
use aes::{Aes128, Aes256};
use subtle::ConstantTimeEq;
use xts_mode::{Xts128, get_tweak_default};
use zeroize::Zeroizing;

pub use header::{Header, Kdf, Keyslot, read as read_header};

use crate::error::{GuestError, Result};
use crate::reader::{BlockReader, Slice};

/// What opening a LUKS volume can fail with, beyond damage.
fn refused(reason: impl Into<String>) -> GuestError {
    GuestError::Unsupported { what: "LUKS volume".into(), reason: reason.into() }
}

/// AES-XTS with either key length.
enum Cipher {
    Aes128(Box<Xts128<Aes128>>),
    Aes256(Box<Xts128<Aes256>>),
}

impl Cipher {
    /// XTS for cryptsetup's cipher name; only `aes-xts-plain64` (the default since 2012).
    fn new(name: &str, key: &[u8]) -> Result<Cipher> {
        if name != "aes-xts-plain64" {
            return Err(refused(format!("cipher {name:?}: vmvault reads aes-xts-plain64 only")));
        }
        let half = key.len() / 2;
        let (a, b) = key.split_at(half);
        let bad_key = || refused(format!("a {}-byte key for {name}", key.len()));
        Ok(match key.len() {
            32 => Cipher::Aes128(Box::new(Xts128::new(
                Aes128::new_from_slice(a).map_err(|_| bad_key())?,
                Aes128::new_from_slice(b).map_err(|_| bad_key())?,
            ))),
            64 => Cipher::Aes256(Box::new(Xts128::new(
                Aes256::new_from_slice(a).map_err(|_| bad_key())?,
                Aes256::new_from_slice(b).map_err(|_| bad_key())?,
            ))),
            _ => return Err(bad_key()),
        })
    }

    /// Decrypt whole sectors of `sector` bytes in place, the first numbered `first`.
    fn decrypt(&self, buf: &mut [u8], sector: usize, first: u128) {
        match self {
            Cipher::Aes128(x) => x.decrypt_area(buf, sector, first, get_tweak_default),
            Cipher::Aes256(x) => x.decrypt_area(buf, sector, first, get_tweak_default),
        }
    }
}

fn pbkdf2(hash: &str, password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) -> Result<()> {
    match hash {
        "sha1" => pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, iterations, out),
        "sha256" => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, out),
        "sha512" => pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, salt, iterations, out),
        other => return Err(refused(format!("hash {other:?}: vmvault reads sha1, sha256 and sha512"))),
    }
    Ok(())
}

/// The anti-forensic splitter's diffusion: each hash-sized block replaced by the hash of its
/// index and itself.
fn diffuse(hash: &str, data: &mut [u8]) -> Result<()> {
    fn with<D: sha2::Digest>(data: &mut [u8]) {
        let size = <D as sha2::Digest>::output_size();
        for (i, block) in data.chunks_mut(size).enumerate() {
            let mut h = D::new();
            h.update((i as u32).to_be_bytes());
            h.update(&*block);
            let out = h.finalize();
            let n = block.len();
            block.copy_from_slice(&out[..n]);
        }
    }
    match hash {
        "sha1" => with::<sha1::Sha1>(data),
        "sha256" => with::<sha2::Sha256>(data),
        "sha512" => with::<sha2::Sha512>(data),
        other => return Err(refused(format!("hash {other:?}: vmvault reads sha1, sha256 and sha512"))),
    }
    Ok(())
}

/// Merge `stripes` split blocks of `key_size` bytes back into the key.
fn af_merge(split: &[u8], key_size: usize, stripes: usize, hash: &str) -> Result<Zeroizing<Vec<u8>>> {
    let mut d = Zeroizing::new(vec![0u8; key_size]);
    for i in 0..stripes {
        let block = &split[i * key_size..(i + 1) * key_size];
        d.iter_mut().zip(block).for_each(|(a, b)| *a ^= b);
        if i + 1 < stripes {
            diffuse(hash, &mut d)?;
        }
    }
    Ok(d)
}

fn derive(kdf: &Kdf, passphrase: &[u8], out: &mut [u8]) -> Result<()> {
    match kdf {
        Kdf::Pbkdf2 { hash, iterations, salt } => pbkdf2(hash, passphrase, salt, *iterations, out),
        Kdf::Argon2 { id, time, memory_kib, lanes, salt } => {
            let params = argon2::Params::new(*memory_kib, *time, *lanes, Some(out.len()))
                .map_err(|e| GuestError::corrupt("LUKS keyslot", format!("Argon2 parameters: {e}")))?;
            let algorithm = if *id { argon2::Algorithm::Argon2id } else { argon2::Algorithm::Argon2i };
            argon2::Argon2::new(algorithm, argon2::Version::V0x13, params)
                .hash_password_into(passphrase, salt, out)
                .map_err(|e| GuestError::corrupt("LUKS keyslot", format!("Argon2: {e}")))
        }
    }
}

/// The volume key from one keyslot, if `passphrase` opens it.
fn open_keyslot(
    volume: &Slice,
    header: &Header,
    slot: &Keyslot,
    passphrase: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let mut slot_key = Zeroizing::new(vec![0u8; slot.area_key_size]);
    derive(&slot.kdf, passphrase, &mut slot_key)?;
    let split_len = slot.key_size * slot.stripes as usize;
    let mut split = Zeroizing::new(vec![0u8; split_len.div_ceil(512) * 512]);
    volume.read_at(slot.area_offset, &mut split)?;
    Cipher::new(&slot.area_cipher, &slot_key)?.decrypt(&mut split, 512, 0);
    let candidate = af_merge(&split, slot.key_size, slot.stripes as usize, &slot.af_hash)?;
    for digest in header.digests.iter().filter(|d| d.keyslots.contains(&slot.id)) {
        let mut check = Zeroizing::new(vec![0u8; digest.digest.len()]);
        pbkdf2(&digest.hash, &candidate, &digest.salt, digest.iterations, &mut check)?;
        if bool::from(check.as_slice().ct_eq(&digest.digest)) {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

/// A LUKS volume's decrypted data.
pub struct Unlocked {
    volume: Slice,
    header: Header,
    cipher: Cipher,
    size: u64,
}

impl Unlocked {
    /// The header it was opened with.
    pub fn header(&self) -> &Header {
        &self.header
    }
}

/// Open the LUKS volume `volume` with `passphrase`, trying every keyslot.
pub fn unlock(volume: &Slice, passphrase: &[u8]) -> Result<Unlocked> {
    let header = header::read(volume)?;
    if header.keyslots.is_empty() {
        return Err(refused("it has no active keyslot"));
    }
    let segment = &header.segment;
    let end = match segment.size {
        Some(n) => segment.offset.checked_add(n).filter(|&e| e <= volume.len()),
        None => Some(volume.len()),
    };
    let size = end
        .and_then(|e| e.checked_sub(segment.offset))
        .ok_or_else(|| GuestError::corrupt("LUKS header", "its data segment lies outside the volume"))?;
    for slot in &header.keyslots {
        if let Some(key) = open_keyslot(volume, &header, slot, passphrase)? {
            let cipher = Cipher::new(&segment.cipher, &key)?;
            let size = size - size % u64::from(segment.sector_size);
            return Ok(Unlocked { volume: volume.clone(), header, cipher, size });
        }
    }
    Err(GuestError::Invalid(format!(
        "LUKS{} volume {}: the passphrase given opens none of its {} keyslots",
        header.version,
        header.uuid,
        header.keyslots.len()
    )))
}

impl BlockReader for Unlocked {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= self.size).ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the LUKS volume")
        })?;
        let sector = u64::from(self.header.segment.sector_size);
        let first = offset / sector;
        let last = end.div_ceil(sector);
        let mut data = Zeroizing::new(vec![0u8; ((last - first) * sector) as usize]);
        self.volume
            .read_at(self.header.segment.offset + first * sector, &mut data)
            .map_err(io::Error::other)?;
        // plain64 with large sectors: the IV counts sectors of the segment's own size.
        let tweak = u128::from(first) + u128::from(self.header.segment.iv_tweak);
        self.cipher.decrypt(&mut data, sector as usize, tweak);
        let skip = (offset - first * sector) as usize;
        buf.copy_from_slice(&data[skip..skip + buf.len()]);
        Ok(())
    }
}
