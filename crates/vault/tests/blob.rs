//! Chunk blobs: every combination round-trips, and any change to a stored blob is caught.

mod common;

use vault::blob::{self, FLAG_COMPRESSED, FLAG_ENCRYPTED};
use vault::{UnlockedVault, VaultError};

use common::*;

fn cases() -> Vec<(&'static str, Vec<u8>, bool)> {
    vec![
        ("empty", vec![], false),
        ("one byte", vec![7], false),
        ("incompressible 4 MiB", random_data(1, 4 << 20), false),
        ("compressible 4 MiB", compressible_data(4 << 20), true),
        ("compressible short tail", compressible_data(12_345), true),
    ]
}

fn assert_round_trips(vault: &UnlockedVault, encrypted: bool) {
    let keys = vault.keys();
    for (name, data, expect_compressed) in cases() {
        let id = keys.chunk_id(&data);
        let stored = blob::seal(keys, &id, &data).expect("seal");
        let flags = stored[5];
        assert_eq!(flags & FLAG_COMPRESSED != 0, expect_compressed, "{name}: compression flag");
        assert_eq!(flags & FLAG_ENCRYPTED != 0, encrypted, "{name}: encryption flag");
        if expect_compressed {
            assert!(stored.len() < data.len(), "{name}: compression kept although not smaller");
        }
        blob::check(&id, &stored).expect("keyless check");
        assert_eq!(blob::open(keys, &id, &stored).expect("open"), data, "{name}: round trip");
    }
}

#[tokio::test]
async fn every_blob_kind_round_trips_in_an_encrypted_vault() {
    let dir = tempfile::tempdir().unwrap();
    let vault = encrypted_vault(dir.path()).await;
    assert_round_trips(&vault, true);
}

#[tokio::test]
async fn every_blob_kind_round_trips_in_an_unencrypted_vault() {
    let dir = tempfile::tempdir().unwrap();
    let vault = unencrypted_vault(dir.path()).await;
    assert_round_trips(&vault, false);
}

#[tokio::test]
async fn encrypted_chunk_ids_are_keyed_and_plain_ones_are_blake3() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let plain = unencrypted_vault(dir_a.path()).await;
    let keyed = encrypted_vault(dir_b.path()).await;
    let data = compressible_data(1000);
    assert_eq!(plain.keys().chunk_id(&data).as_bytes(), blake3::hash(&data).as_bytes());
    assert_ne!(keyed.keys().chunk_id(&data).as_bytes(), blake3::hash(&data).as_bytes());
}

#[tokio::test]
async fn any_flipped_byte_in_a_sealed_blob_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let vault = encrypted_vault(dir.path()).await;
    let data = compressible_data(100_000);
    let id = vault.keys().chunk_id(&data);
    let stored = blob::seal(vault.keys(), &id, &data).unwrap();
    for offset in [0, 4, 5, 6, 9, 25, 40, stored.len() / 2, stored.len() - 40, stored.len() - 1] {
        let mut damaged = stored.clone();
        damaged[offset] ^= 0x80;
        let err = blob::open(vault.keys(), &id, &damaged).expect_err("damage must be caught");
        assert!(err.to_string().contains(&id.to_hex()), "error names the chunk: {err}");
        assert!(blob::check(&id, &damaged).is_err(), "keyless check catches offset {offset}");
    }
}

#[tokio::test]
async fn a_blob_with_a_recomputed_checksum_still_fails_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let vault = encrypted_vault(dir.path()).await;
    let data = random_data(3, 5000);
    let id = vault.keys().chunk_id(&data);
    let mut stored = blob::seal(vault.keys(), &id, &data).unwrap();
    let body = stored.len() - 32;
    stored[100] ^= 1;
    let sum = blake3::hash(&stored[..body]);
    stored[body..].copy_from_slice(sum.as_bytes());
    blob::check(&id, &stored).expect("the checksum was forged, so the keyless check passes");
    let err = blob::open(vault.keys(), &id, &stored).unwrap_err();
    assert!(matches!(err, VaultError::ChunkAuthentication { .. }), "{err}");
}

#[tokio::test]
async fn a_plaintext_blob_is_refused_by_an_encrypted_vault() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let plain = unencrypted_vault(dir_a.path()).await;
    let keyed = encrypted_vault(dir_b.path()).await;
    let data = compressible_data(3000);
    let id = keyed.keys().chunk_id(&data);
    let planted = blob::seal(plain.keys(), &id, &data).unwrap();
    let err = blob::open(keyed.keys(), &id, &planted).unwrap_err();
    assert!(matches!(err, VaultError::ChunkAuthentication { .. }), "{err}");
}
