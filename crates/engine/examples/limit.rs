//! What this machine can do at best: each stage of a backup and of a restore timed alone, on
//! every core, over the same data vmvault would read from these images — so a measured backup
//! can be put beside its limit. `bench/limit.sh` runs it over the benchmark's disks.
//!
//! Usage: `limit IMAGE…` (qcow2 or raw). As root the first read is from a cold page cache.
//!
//! The stages are those of `engine::transfer` and `vault::blob`, with the same libraries and
//! parameters: 4 MiB blocks of the allocated extents, all-zero blocks dropped, keyed BLAKE3
//! for chunk ids, zstd at the vault's level (kept only when smaller), AES-256-GCM (ring), a BLAKE3
//! checksum of the sealed blob, chunk files stored by vault's own local backend (O_DIRECT, an
//! fsync each, one flush); a restore reads them back through it, opens, decompresses and writes
//! one raw image through the restore's own sink (`disk::writer`, O_DIRECT, a final fsync).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use disk::DiskFormat;
use engine::transfer::{blocks_of, is_zero};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use vault::backend::{Backend, LocalBackend};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const BLOCK: u64 = vault::index::CHUNK_SIZE as u64;

fn main() -> Res<()> {
    let images: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if images.is_empty() {
        return Err("usage: limit IMAGE… (qcow2 or raw)".into());
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cold = drop_caches();
    let (blocks, read_first) = timed(|| read_blocks(&images))?;
    let (_, read_warm) = timed(|| read_blocks(&images))?;
    let bytes: u64 = blocks.iter().map(|b| b.len() as u64).sum();
    let dir = tempfile::tempdir_in(std::env::var_os("LIMIT_DIR").unwrap_or_else(|| ".".into()))?;

    let id_key = [7u8; 32];
    let cipher = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[9u8; 32]).map_err(|_| "AES key")?);
    let (_, hash) = timed(|| parallel(&blocks, cores, |b| Ok(blake3::keyed_hash(&id_key, b))))?;
    let (packed, compress) = timed(|| parallel(&blocks, cores, |b| compress_block(b)))?;
    let (sealed, encrypt) = timed(|| parallel(&packed, cores, |p| seal(&cipher, p)))?;
    let (_, checksum) = timed(|| parallel(&sealed, cores, |s| Ok(blake3::hash(&s.0))))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let store = LocalBackend::new(dir.path().join("vault"));
    let keys: Vec<String> = (0..sealed.len()).map(|i| format!("chunks/{:02x}/c{i}", i % 256)).collect();
    let jobs: Vec<(&String, &Sealed)> = keys.iter().zip(&sealed).collect();
    let (_, write) = timed(|| {
        parallel(&jobs, cores, |(key, s)| Ok(runtime.block_on(store.put_if_absent(key, s.0.clone()))?))?;
        Ok(runtime.block_on(store.flush())?)
    })?;
    let stored: u64 = sealed.iter().map(|s| s.0.len() as u64).sum();
    let compressed: Vec<bool> = packed.iter().map(|p| p.1).collect();
    drop((packed, sealed));

    let (read_back, fetch) = timed(|| parallel(&keys, cores, |key| Ok(runtime.block_on(store.get(key))?)))?;
    let read_back: Vec<(Bytes, bool)> = read_back.into_iter().zip(compressed).collect();
    let (opened, decrypt) = timed(|| parallel(&read_back, cores, |s| open(&cipher, s)))?;
    let (plain, decompress) = timed(|| parallel(&opened, cores, decompress_block))?;
    drop((read_back, opened));
    let image = dir.path().join("restored.raw");
    let ((), write_image) = timed(|| write_image(&image, &plain))?;
    if plain != blocks {
        return Err("the restored blocks differ from those read: the measurement is wrong".into());
    }

    let gb = |s: f64| bytes as f64 / s / 1e9;
    println!(
        "limit on this machine: {cores} cores; {:.2} GB in {} non-zero 4 MiB blocks of {} image(s), {:.2} GB stored",
        bytes as f64 / 1e9,
        blocks.len(),
        images.len(),
        stored as f64 / 1e9
    );
    println!("{:<44} {:>8} {:>10}", "stage (each alone, on every core)", "seconds", "GB/s read");
    let first = if cold {
        "read the images, cold page cache"
    } else {
        "read the images (not root: cache not dropped)"
    };
    let rows = [
        (first, read_first),
        ("read the images, warm page cache", read_warm),
        ("chunk ids: keyed BLAKE3", hash),
        ("compress: zstd", compress),
        ("encrypt: AES-256-GCM", encrypt),
        ("checksum: BLAKE3 of the blob", checksum),
        ("write chunk files (local backend), flush", write),
        ("restore: read chunk files (local backend)", fetch),
        ("restore: decrypt", decrypt),
        ("restore: decompress", decompress),
        ("restore: write the image (raw sink), fsync", write_image),
    ];
    for (name, s) in rows {
        println!("{name:<44} {s:>8.2} {:>10.2}", gb(s));
    }
    let cpu = hash + compress + encrypt + checksum;
    let backup = cpu.max(read_warm).max(write);
    let restore_cpu = decrypt + decompress;
    let restore = restore_cpu.max(fetch).max(write_image);
    println!(
        "full backup: CPU stages {cpu:.2} s on {cores} cores; with every stage overlapped the limit is {backup:.2} s \
         (the slowest of CPU {cpu:.2}, warm read {read_warm:.2}, write {write:.2}); in sequence {:.2} s",
        cpu + read_warm + write
    );
    println!(
        "restore: CPU stages {restore_cpu:.2} s; with every stage overlapped the limit is {restore:.2} s; \
         in sequence {:.2} s",
        restore_cpu + fetch + write_image
    );
    Ok(())
}

/// Drop the page cache (root only): whether it was dropped.
fn drop_caches() -> bool {
    let synced = std::process::Command::new("sync").status().is_ok_and(|s| s.success());
    synced && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn timed<T>(f: impl FnOnce() -> Res<T>) -> Res<(T, f64)> {
    let began = Instant::now();
    let value = f()?;
    Ok((value, began.elapsed().as_secs_f64()))
}

/// Every non-zero 4 MiB block of the images' allocated extents, read by one thread in disk
/// order (as vmvault's image reader does).
fn read_blocks(images: &[PathBuf]) -> Res<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for path in images {
        let info = disk::image::probe(path)?;
        let mut source = disk::open_source(path, info.format)?;
        for block in blocks_of(&source.allocated()?, info.size) {
            let offset = block as u64 * BLOCK;
            let mut buf = vec![0u8; BLOCK.min(info.size - offset) as usize];
            source.read_at(offset, &mut buf)?;
            if !is_zero(&buf) {
                out.push(buf);
            }
        }
    }
    Ok(out)
}

/// `f` over every item on `threads` threads; the results in order.
fn parallel<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> Res<R> + Sync) -> Res<Vec<R>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let failed: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { return };
                    match f(item) {
                        Ok(r) => results.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(r),
                        Err(e) => {
                            *failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(PoisonError::into_inner) {
        return Err(e.into());
    }
    Ok(results.into_inner().unwrap_or_else(PoisonError::into_inner).into_iter().flatten().collect())
}

/// A block as stored: compressed or not.
struct Packed(Vec<u8>, bool);
/// A sealed blob: nonce, ciphertext and tag (whether it was compressed is kept aside).
struct Sealed(Bytes);

fn compress_block(block: &[u8]) -> Res<Packed> {
    let compressed = zstd::bulk::compress(block, vault::blob::ZSTD_LEVEL)?;
    Ok(if compressed.len() < block.len() { Packed(compressed, true) } else { Packed(block.to_vec(), false) })
}

fn decompress_block(packed: &Packed) -> Res<Vec<u8>> {
    Ok(if packed.1 { zstd::bulk::decompress(&packed.0, BLOCK as usize)? } else { packed.0.clone() })
}

fn seal(cipher: &LessSafeKey, packed: &Packed) -> Res<Sealed> {
    let mut out = Vec::with_capacity(12 + packed.0.len() + 16);
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&packed.0);
    let tag = cipher
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(b"limit"), &mut out[12..])
        .map_err(|_| "encryption failed")?;
    out.extend_from_slice(tag.as_ref());
    Ok(Sealed(Bytes::from(out)))
}

fn open(cipher: &LessSafeKey, sealed: &(Bytes, bool)) -> Res<Packed> {
    let (blob, compressed) = sealed;
    let (nonce, rest) = blob.split_at(12);
    let (body, tag) = rest.split_at(rest.len() - 16);
    let mut buf = body.to_vec();
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "nonce")?;
    let tag = Tag::try_from(tag).map_err(|_| "tag")?;
    cipher
        .open_in_place_separate_tag(nonce, Aad::from(b"limit"), tag, &mut buf, 0..)
        .map_err(|_| "authentication failed")?;
    Ok(Packed(buf, *compressed))
}

/// The blocks one after the other in a new raw image, through the restore's own sink.
fn write_image(path: &Path, blocks: &[Vec<u8>]) -> Res<()> {
    let mut sink = disk::writer::create_sink(path, DiskFormat::Raw, blocks.len() as u64 * BLOCK)?;
    for (i, block) in blocks.iter().enumerate() {
        sink.write_at(i as u64 * BLOCK, block)?;
    }
    Ok(sink.finish()?)
}
