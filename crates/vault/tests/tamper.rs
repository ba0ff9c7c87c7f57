//! Tampering with stored objects is detected, and the error names the object — in a local
//! directory and in an S3 bucket alike.

mod common;

use jiff::Timestamp;
use vault::layout;
use vault::{Consistency, FixedIndex, Manifest, ManifestDisk, Passphrase, PointKind, VaultError};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_stored_chunk_is_reported_with_its_id() {
    for place in places() {
        let vault = place.encrypted().await;
        let (id, added) = vault.put_chunk(&compressible_data(50_000)).await.unwrap();
        assert!(added > 0);
        place.flip(&layout::chunk(&id), 60).await;
        let err = place.reopen().await.get_chunk(&id).await.unwrap_err();
        assert!(matches!(err, VaultError::ChunkChecksum { .. }), "{}: {err}", place.at());
        assert!(err.to_string().contains(&id.to_hex()), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_renamed_to_another_chunks_id_is_rejected() {
    for encrypted in [true, false] {
        for place in places() {
            let vault = if encrypted { place.encrypted().await } else { place.unencrypted().await };
            let (a, _) = vault.put_chunk(&random_data(1, 70_000)).await.unwrap();
            let (b, _) = vault.put_chunk(&random_data(2, 70_000)).await.unwrap();
            let moved = place.read(&layout::chunk(&b)).await;
            place.remove(&layout::chunk(&b)).await;
            place.write(&layout::chunk(&a), &moved).await;
            let err = vault.get_chunk(&a).await.unwrap_err();
            assert!(
                matches!(err, VaultError::ChunkAuthentication { .. }),
                "{} encrypted={encrypted}: {err}",
                place.at()
            );
            assert!(err.to_string().contains(&a.to_hex()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_or_truncated_index_is_reported_with_its_name() {
    for place in places() {
        let vault = place.encrypted().await;
        let mut index = FixedIndex::zeroed(10 << 20).unwrap();
        let (id, _) = vault.put_chunk(b"block one").await.unwrap();
        index.set(1, id).unwrap();
        let key = "points/web01/p1/vda.fidx";
        let digest = vault.put_index(key, &index).await.unwrap();
        assert_eq!(vault.vault().get_index(key, Some(&digest)).await.unwrap(), index);

        let good = place.read(key).await;
        for offset in [0, 9, 40, 64 + 32 + 3] {
            place.flip(key, offset).await;
            let err = vault.vault().get_index(key, Some(&digest)).await.unwrap_err();
            assert!(err.to_string().contains(key), "{} offset {offset}: {err}", place.at());
            place.write(key, &good).await;
        }
        place.write(key, &good[..good.len() - 32]).await;
        let err = vault.vault().get_index(key, Some(&digest)).await.unwrap_err();
        assert!(matches!(err, VaultError::Corrupt { .. }) && err.to_string().contains(key), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_swapped_for_another_valid_index_is_caught_by_the_manifest_digest() {
    for place in places() {
        let vault = place.unencrypted().await;
        let first = FixedIndex::zeroed(8 << 20).unwrap();
        let mut second = first.clone();
        second.set(0, vault.put_chunk(b"other").await.unwrap().0).unwrap();
        let digest = vault.put_index("points/a/p/vda.fidx", &first).await.unwrap();
        vault.put_index("points/a/q/vda.fidx", &second).await.unwrap();
        place.write("points/a/p/vda.fidx", &place.read("points/a/q/vda.fidx").await).await;
        let err = vault.vault().get_index("points/a/p/vda.fidx", Some(&digest)).await.unwrap_err();
        assert!(err.to_string().contains("points/a/p/vda.fidx"), "{}: {err}", place.at());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_manifest_fails_its_signature() {
    for place in places() {
        let vault = place.encrypted().await;
        let key = "points/web01/p1/manifest.json";
        let original = manifest("points/web01/p1/vda.fidx", &"ab".repeat(32));
        vault.commit_manifest(key, &original).await.unwrap();
        assert_eq!(place.reopen().await.get_manifest(key).await.unwrap(), original);

        let text = String::from_utf8(place.read(key).await).unwrap();
        place.write(key, text.replace("web01", "web02").as_bytes()).await;
        let err = vault.get_manifest(key).await.unwrap_err();
        assert!(matches!(err, VaultError::BadSignature { .. }), "{}: {err}", place.at());
        assert!(err.to_string().contains(key), "{err}");

        // A flipped byte anywhere: a signature or JSON error, always naming the manifest.
        for offset in (0..text.len()).step_by(if place.at().starts_with("s3") { 61 } else { 7 }) {
            let mut bytes = text.clone().into_bytes();
            bytes[offset] ^= 0x01;
            place.write(key, &bytes).await;
            match vault.get_manifest(key).await {
                Ok(m) => assert_eq!(m, original, "offset {offset} changed the manifest unnoticed"),
                Err(err) => assert!(err.to_string().contains(key), "offset {offset}: {err}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_signed_by_another_vault_is_rejected() {
    for (a_place, b_place) in places().into_iter().zip(places()) {
        let a = a_place.encrypted().await;
        let b = b_place.encrypted().await;
        let key = "points/x/p/manifest.json";
        a.commit_manifest(key, &manifest("i", &"00".repeat(32))).await.unwrap();
        b_place.write(key, &a_place.read(key).await).await;
        let err = b.get_manifest(key).await.unwrap_err();
        assert!(matches!(err, VaultError::BadSignature { .. }), "{}: {err}", b_place.at());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_the_key_file_is_reported_as_damage_not_a_wrong_passphrase() {
    for place in places() {
        place.encrypted().await;
        let key = "keys/master.key";
        let good = place.read(key).await;
        for offset in [0, 5, 9, 30, 60, 80, 147] {
            place.flip(key, offset).await;
            let vault = place.open_locked().await;
            let err = vault.unlock(&Passphrase::new(PASSPHRASE.into())).await.err().expect("must fail");
            assert!(matches!(err, VaultError::Corrupt { .. }), "{} offset {offset}: {err}", place.at());
            assert!(err.to_string().contains("keys/master.key"), "{err}");
            place.write(key, &good).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_config_fails_its_signature_on_unlock() {
    for place in places() {
        place.encrypted().await;
        let text = String::from_utf8(place.read("config").await).unwrap();
        place.write("config", text.replace("\"created\": \"20", "\"created\": \"19").as_bytes()).await;
        let vault = place.open_locked().await;
        let err = vault.unlock(&Passphrase::new(PASSPHRASE.into())).await.err().expect("must fail");
        assert!(
            matches!(err, VaultError::BadSignature { .. }) && err.to_string().contains("config"),
            "{}: {err}",
            place.at()
        );
    }
}
