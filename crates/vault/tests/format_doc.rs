//! docs/FORMAT.md is a promise: its constants table must say what the code writes.

use std::collections::HashMap;

use vault::{blob, config, index, keyfile, manifest};

fn documented_constants() -> HashMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/FORMAT.md");
    let text = std::fs::read_to_string(path).expect("docs/FORMAT.md");
    let table = text.split("## Constants").nth(1).expect("a Constants section");
    table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (cells[1].to_string(), cells[2].trim_matches('`').to_string())
        })
        .collect()
}

#[test]
fn format_doc_matches_the_code() {
    let doc = documented_constants();
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    let expected: Vec<(&str, String)> = vec![
        ("chunk blob magic", text(&blob::BLOB_MAGIC)),
        ("chunk blob version", blob::BLOB_VERSION.to_string()),
        ("chunk blob header length", blob::BLOB_HEADER_LEN.to_string()),
        ("chunk blob checksum length", blob::BLOB_CHECKSUM_LEN.to_string()),
        ("blob flag compressed", format!("{:#04x}", blob::FLAG_COMPRESSED)),
        ("blob flag encrypted", format!("{:#04x}", blob::FLAG_ENCRYPTED)),
        ("largest chunk plaintext", blob::MAX_PLAINTEXT.to_string()),
        ("zstd level", blob::ZSTD_LEVEL.to_string()),
        ("fixed index magic", text(&index::INDEX_MAGIC)),
        ("fixed index version", index::INDEX_VERSION.to_string()),
        ("fixed index header length", index::INDEX_HEADER_LEN.to_string()),
        ("chunk size", index::CHUNK_SIZE.to_string()),
        ("key file magic", text(&keyfile::KEY_FILE_MAGIC)),
        ("key file version", keyfile::KEY_FILE_VERSION.to_string()),
        ("key file length", keyfile::KEY_FILE_LEN.to_string()),
        ("smallest Argon2id memory (KiB)", keyfile::KdfParams::MIN_MEMORY_KIB.to_string()),
        ("manifest format", manifest::MANIFEST_FORMAT.to_string()),
        ("manifest version", manifest::MANIFEST_VERSION.to_string()),
        ("vault format", config::VAULT_FORMAT.to_string()),
        ("vault format version", config::VAULT_FORMAT_VERSION.to_string()),
    ];
    for (name, value) in &expected {
        assert_eq!(doc.get(*name), Some(value), "docs/FORMAT.md constant {name:?}");
    }
    assert_eq!(doc.len(), expected.len(), "a documented constant is not checked here");
}

#[test]
fn an_index_is_laid_out_as_documented() {
    let mut idx = vault::FixedIndex::zeroed(5 << 20).unwrap();
    idx.set(1, vault::ChunkId::from_bytes([0xab; 32])).unwrap();
    let bytes = idx.encode();
    assert_eq!(bytes.len(), 64 + 2 * 32);
    assert_eq!(&bytes[0..4], b"VMVI");
    assert_eq!(bytes[4], 1);
    assert_eq!(u64::from_le_bytes(bytes[8..16].try_into().unwrap()), 5 << 20);
    assert_eq!(u32::from_le_bytes(bytes[16..20].try_into().unwrap()), 4 << 20);
    assert_eq!(u64::from_le_bytes(bytes[24..32].try_into().unwrap()), 2);
    let mut zeroed = bytes.clone();
    zeroed[32..64].fill(0);
    assert_eq!(blake3::hash(&zeroed).as_bytes(), &bytes[32..64]);
    assert_eq!(&bytes[64..96], &[0; 32], "block 0 is zeros");
    assert_eq!(&bytes[96..128], &[0xab; 32]);
}

#[test]
fn a_blob_is_laid_out_as_documented() {
    let keys = vault::Keys::unencrypted(&"00112233445566778899aabbccddeeff".parse().unwrap());
    let data = vec![b'a'; 10_000];
    let id = keys.chunk_id(&data);
    let bytes = blob::seal(&keys, &id, &data).unwrap();
    assert_eq!(&bytes[0..4], b"VMVB");
    assert_eq!(bytes[4], 1);
    assert_eq!(bytes[5], blob::FLAG_COMPRESSED);
    assert_eq!(&bytes[6..32], &[0; 26], "reserved and (unencrypted) nonce are zero");
    let body = &bytes[32..bytes.len() - 32];
    assert_eq!(zstd::bulk::decompress(body, 1 << 20).unwrap(), data);
    assert_eq!(blake3::hash(&bytes[..bytes.len() - 32]).as_bytes(), &bytes[bytes.len() - 32..]);
}

#[test]
fn point_kind_and_consistency_names_match_their_json() {
    use vault::{Consistency, PointKind};
    for kind in [PointKind::Scheduled, PointKind::OnDemand] {
        assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
    }
    for c in [Consistency::Application, Consistency::FileSystem, Consistency::Crash] {
        assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
    }
}

/// Every object key `vault::layout` builds is a row of docs/FORMAT.md's table of objects,
/// written with placeholders, and every row of the table is a key layout builds.
#[test]
fn the_documented_object_keys_are_the_ones_layout_builds() {
    use vault::layout;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/FORMAT.md");
    let text = std::fs::read_to_string(path).expect("docs/FORMAT.md");
    let documented: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| {
            l.split('|').nth(1).unwrap_or_default().split(',').map(|k| k.trim().trim_matches('`').to_string())
        })
        .filter(|k| k.contains('/') || k == "config")
        .collect();
    let chunk =
        layout::chunk(&vault::ChunkId::from_bytes([0xab; 32])).to_string().replace(&"ab".repeat(32), "<id>");
    let built: Vec<String> = vec![
        layout::config().into(),
        layout::key_file().into(),
        chunk.replacen("ab/", "<hh>/", 1),
        layout::index("<vm>", "<point>", "<disk>").into(),
        layout::manifest("<vm>", "<point>").into(),
        layout::vm("<vm>").into(),
        layout::checkpoints("<vm>").into(),
        layout::verified("<vm>").into(),
        layout::policy("<name>").into(),
        layout::item("<vm>").into(),
        layout::group("<name>").into(),
        layout::settings().into(),
        layout::schedule_claim("<vm>").into(),
        layout::cleanup_claim().into(),
        layout::job("<id>").into(),
        layout::job_cancel("<id>").into(),
        layout::session(&layout::backup_session_name("<vm>")).into(),
        layout::gc_state().into(),
        layout::gc_condemned("<gc id>").into(),
        layout::gc_rescue("<gc id>", &vault::ChunkId::from_bytes([0xab; 32]))
            .to_string()
            .replace(&"ab".repeat(32), "<id>"),
    ];
    for key in &built {
        assert!(documented.contains(key), "docs/FORMAT.md does not document the object {key}");
    }
    for key in &documented {
        assert!(built.contains(key), "docs/FORMAT.md documents {key}, which vault::layout does not build");
    }
}
