//! Tampering with stored objects is detected, and the error names the object.

mod common;

use jiff::Timestamp;
use vault::vault::chunk_key;
use vault::{Consistency, FixedIndex, Manifest, ManifestDisk, Passphrase, PointKind, Vault, VaultError};

use common::*;

fn manifest(index_key: &str, digest: &str) -> Manifest {
    Manifest {
        format: vault::manifest::MANIFEST_FORMAT.into(),
        version: vault::manifest::MANIFEST_VERSION,
        point_id: "p1".into(),
        vm: "web01".into(),
        time: Timestamp::from_second(1_790_000_000).unwrap(),
        kind: PointKind::OnDemand,
        consistency: Consistency::Crash,
        retain_until: None,
        disks: vec![ManifestDisk {
            label: "vda".into(),
            size: 10 << 20,
            index: index_key.into(),
            index_digest: digest.into(),
            stored_new: 0,
        }],
        group: None,
    }
}

#[tokio::test]
async fn a_flipped_byte_in_a_stored_chunk_is_reported_with_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let vault = encrypted_vault(dir.path()).await;
    let (id, added) = vault.put_chunk(&compressible_data(50_000)).await.unwrap();
    assert!(added > 0);
    flip_byte(&dir.path().join(chunk_key(&id)), 60);
    let err = reopen(dir.path()).await.get_chunk(&id).await.unwrap_err();
    assert!(matches!(err, VaultError::ChunkChecksum { .. }), "{err}");
    assert!(err.to_string().contains(&id.to_hex()), "{err}");
}

#[tokio::test]
async fn a_chunk_renamed_to_another_chunks_id_is_rejected() {
    for encrypted in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let vault =
            if encrypted { encrypted_vault(dir.path()).await } else { unencrypted_vault(dir.path()).await };
        let (a, _) = vault.put_chunk(&random_data(1, 70_000)).await.unwrap();
        let (b, _) = vault.put_chunk(&random_data(2, 70_000)).await.unwrap();
        std::fs::rename(dir.path().join(chunk_key(&b)), dir.path().join(chunk_key(&a))).unwrap();
        let err = vault.get_chunk(&a).await.unwrap_err();
        assert!(matches!(err, VaultError::ChunkAuthentication { .. }), "encrypted={encrypted}: {err}");
        assert!(err.to_string().contains(&a.to_hex()));
    }
}

#[tokio::test]
async fn a_flipped_or_truncated_index_is_reported_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let vault = encrypted_vault(dir.path()).await;
    let mut index = FixedIndex::zeroed(10 << 20).unwrap();
    let (id, _) = vault.put_chunk(b"block one").await.unwrap();
    index.set(1, id).unwrap();
    let key = "points/web01/p1/vda.fidx";
    let digest = vault.put_index(key, &index).await.unwrap();
    assert_eq!(vault.vault().get_index(key, Some(&digest)).await.unwrap(), index);

    let path = dir.path().join(key);
    let good = std::fs::read(&path).unwrap();
    for offset in [0, 9, 40, 64 + 32 + 3] {
        flip_byte(&path, offset);
        let err = vault.vault().get_index(key, Some(&digest)).await.unwrap_err();
        assert!(err.to_string().contains(key), "offset {offset}: {err}");
        std::fs::write(&path, &good).unwrap();
    }
    std::fs::write(&path, &good[..good.len() - 32]).unwrap();
    let err = vault.vault().get_index(key, Some(&digest)).await.unwrap_err();
    assert!(matches!(err, VaultError::Corrupt { .. }) && err.to_string().contains(key), "{err}");
}

#[tokio::test]
async fn an_index_swapped_for_another_valid_index_is_caught_by_the_manifest_digest() {
    let dir = tempfile::tempdir().unwrap();
    let vault = unencrypted_vault(dir.path()).await;
    let first = FixedIndex::zeroed(8 << 20).unwrap();
    let mut second = first.clone();
    second.set(0, vault.put_chunk(b"other").await.unwrap().0).unwrap();
    let digest = vault.put_index("points/a/p/vda.fidx", &first).await.unwrap();
    vault.put_index("points/a/q/vda.fidx", &second).await.unwrap();
    std::fs::copy(dir.path().join("points/a/q/vda.fidx"), dir.path().join("points/a/p/vda.fidx")).unwrap();
    let err = vault.vault().get_index("points/a/p/vda.fidx", Some(&digest)).await.unwrap_err();
    assert!(err.to_string().contains("points/a/p/vda.fidx"), "{err}");
}

#[tokio::test]
async fn an_edited_manifest_fails_its_signature() {
    let dir = tempfile::tempdir().unwrap();
    let vault = encrypted_vault(dir.path()).await;
    let key = "points/web01/p1/manifest.json";
    let original = manifest("points/web01/p1/vda.fidx", &"ab".repeat(32));
    vault.commit_manifest(key, &original).await.unwrap();
    assert_eq!(reopen(dir.path()).await.get_manifest(key).await.unwrap(), original);

    let path = dir.path().join(key);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("web01", "web02")).unwrap();
    let err = vault.get_manifest(key).await.unwrap_err();
    assert!(matches!(err, VaultError::BadSignature { .. }), "{err}");
    assert!(err.to_string().contains(key), "{err}");

    // A flipped byte anywhere: a signature or JSON error, always naming the manifest.
    for offset in (0..text.len()).step_by(7) {
        let mut bytes = text.clone().into_bytes();
        bytes[offset] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        match vault.get_manifest(key).await {
            Ok(m) => assert_eq!(m, original, "offset {offset} changed the manifest unnoticed"),
            Err(err) => assert!(err.to_string().contains(key), "offset {offset}: {err}"),
        }
    }
}

#[tokio::test]
async fn a_manifest_signed_by_another_vault_is_rejected() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let a = encrypted_vault(dir_a.path()).await;
    let b = encrypted_vault(dir_b.path()).await;
    let key = "points/x/p/manifest.json";
    a.commit_manifest(key, &manifest("i", &"00".repeat(32))).await.unwrap();
    std::fs::create_dir_all(dir_b.path().join("points/x/p")).unwrap();
    std::fs::copy(dir_a.path().join(key), dir_b.path().join(key)).unwrap();
    let err = b.get_manifest(key).await.unwrap_err();
    assert!(matches!(err, VaultError::BadSignature { .. }), "{err}");
}

#[tokio::test]
async fn a_flipped_byte_in_the_key_file_is_reported_as_damage_not_a_wrong_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    encrypted_vault(dir.path()).await;
    let path = dir.path().join("keys/master.key");
    let good = std::fs::read(&path).unwrap();
    for offset in [0, 5, 9, 30, 60, 80, 147] {
        flip_byte(&path, offset);
        let vault = Vault::open(backend(dir.path())).await.unwrap();
        let err = vault.unlock(&Passphrase::new(PASSPHRASE.into())).await.err().expect("must fail");
        assert!(matches!(err, VaultError::Corrupt { .. }), "offset {offset}: {err}");
        assert!(err.to_string().contains("keys/master.key"), "{err}");
        std::fs::write(&path, &good).unwrap();
    }
}

#[tokio::test]
async fn an_edited_config_fails_its_signature_on_unlock() {
    let dir = tempfile::tempdir().unwrap();
    encrypted_vault(dir.path()).await;
    let path = dir.path().join("config");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"created\": \"20", "\"created\": \"19")).unwrap();
    let vault = Vault::open(backend(dir.path())).await.unwrap();
    let err = vault.unlock(&Passphrase::new(PASSPHRASE.into())).await.err().expect("must fail");
    assert!(matches!(err, VaultError::BadSignature { .. }) && err.to_string().contains("config"), "{err}");
}
