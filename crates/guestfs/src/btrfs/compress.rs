//! btrfs's compressed extents: zlib (1), LZO (2: btrfs's own framing of LZO1X segments, one
//! or more per 4 KiB page) and zstd (3). Output is capped at the extent's decompressed size.

use crate::bytes::le32;

/// Decompress `data` (compression `kind`) into at most `ram` bytes.
pub fn decompress(kind: u8, data: &[u8], ram: u64) -> Result<Vec<u8>, String> {
    let ram = usize::try_from(ram).map_err(|_| "an extent too large".to_string())?;
    if ram > 128 << 20 {
        return Err("a decompressed size larger than btrfs makes".into());
    }
    let mut out = match kind {
        0 => data.to_vec(),
        1 => miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(data, ram)
            .map_err(|e| format!("zlib: {e:?}"))?,
        2 => lzo(data, ram)?,
        3 => zstd_frame(data, ram)?,
        other => return Err(format!("compression {other} is unknown")),
    };
    out.truncate(ram);
    Ok(out)
}

/// btrfs LZO: a u32 total length, then segments (u32 length + LZO1X data); a segment header
/// never straddles a 4 KiB page (the rest of such a page is padding).
fn lzo(data: &[u8], ram: usize) -> Result<Vec<u8>, String> {
    let total = (le32(data, 0) as usize).min(data.len());
    let mut at = 4;
    let mut out = Vec::with_capacity(ram);
    while at + 4 <= total && out.len() < ram {
        if 4096 - at % 4096 < 4 {
            at += 4096 - at % 4096;
            continue;
        }
        let len = le32(data, at) as usize;
        at += 4;
        let segment = data.get(at..at + len).ok_or("an LZO segment past its extent")?;
        let plain = lzokay_native::decompress_all(segment, None).map_err(|e| format!("lzo: {e:?}"))?;
        out.extend_from_slice(&plain);
        at += len;
    }
    Ok(out)
}

/// One zstd frame, followed on disk by padding to the sector: read only the frame.
fn zstd_frame(data: &[u8], ram: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let decoder = zstd::stream::read::Decoder::with_buffer(data).map_err(|e| format!("zstd: {e}"))?;
    let mut out = Vec::with_capacity(ram);
    decoder.single_frame().take(ram as u64).read_to_end(&mut out).map_err(|e| format!("zstd: {e}"))?;
    Ok(out)
}
