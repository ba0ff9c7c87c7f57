//! LZNT1, the compression of NTFS files: a compression unit (16 clusters) is stored as a run
//! of 4 KiB chunks, each a 2-byte header (size, and whether it is compressed) followed by
//! literals and back-references whose offset/length split depends on how far into the chunk
//! the output is. Malformed input is an error, never a panic or output past the unit.

/// Bytes of output one chunk decompresses to.
const CHUNK: usize = 4096;

/// Decompress `input` (the allocated clusters of one compression unit) into `out`, which is
/// the unit's size; returns how many bytes were produced (the rest of `out` is zeros).
pub fn decompress(input: &[u8], out: &mut [u8]) -> Result<usize, String> {
    let mut at = 0;
    let mut produced = 0;
    while at + 2 <= input.len() && produced < out.len() {
        let header = u16::from_le_bytes([input[at], input[at + 1]]);
        if header == 0 {
            break;
        }
        let size = usize::from(header & 0x0FFF) + 1;
        let data = input.get(at + 2..at + 2 + size).ok_or("a chunk runs past its compression unit")?;
        at += 2 + size;
        let end = (produced + CHUNK).min(out.len());
        let window = &mut out[produced..end];
        let n = if header & 0x8000 == 0 {
            let n = data.len().min(window.len());
            window[..n].copy_from_slice(&data[..n]);
            n
        } else {
            chunk(data, window)?
        };
        produced += n;
    }
    Ok(produced)
}

/// One compressed chunk into `window` (at most 4 KiB); returns the bytes produced.
fn chunk(data: &[u8], window: &mut [u8]) -> Result<usize, String> {
    let (mut i, mut pos) = (0, 0);
    while i < data.len() {
        let flags = data[i];
        i += 1;
        for bit in 0..8 {
            if i >= data.len() {
                return Ok(pos);
            }
            if flags >> bit & 1 == 0 {
                *window.get_mut(pos).ok_or("a chunk decompresses past 4 KiB")? = data[i];
                pos += 1;
                i += 1;
                continue;
            }
            let token = u16::from_le_bytes([data[i], *data.get(i + 1).ok_or("a token cut short")?]);
            i += 2;
            if pos == 0 {
                return Err("a back-reference before any output".into());
            }
            // The further into the chunk, the more bits the offset takes from the length.
            let mut length_bits = 12u32;
            let mut p = pos - 1;
            while p >= 0x10 {
                length_bits -= 1;
                p >>= 1;
            }
            let offset = usize::from(token >> length_bits) + 1;
            let length = usize::from(token & ((1u16 << length_bits) - 1)) + 3;
            if offset > pos {
                return Err("a back-reference before the chunk's start".into());
            }
            for _ in 0..length {
                let byte = window[pos - offset];
                *window.get_mut(pos).ok_or("a chunk decompresses past 4 KiB")? = byte;
                pos += 1;
            }
        }
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_a_repeat_decompress() {
        // "abcabcabc": three literals, then a back-reference of 6 bytes at offset 3.
        let token: u16 = ((3 - 1) << 12) | (6 - 3);
        let mut data = vec![0b0000_1000, b'a', b'b', b'c'];
        data.extend_from_slice(&token.to_le_bytes());
        let header = 0x8000 | 0x3000 | (data.len() as u16 - 1);
        let mut input = header.to_le_bytes().to_vec();
        input.extend_from_slice(&data);
        let mut out = vec![0u8; 65536];
        let n = decompress(&input, &mut out).unwrap();
        assert_eq!(&out[..n], b"abcabcabc");
    }

    #[test]
    fn hostile_chunks_are_errors() {
        let mut out = vec![0u8; 65536];
        // A back-reference as the first symbol.
        assert!(decompress(&[0x02, 0xB0, 0x01, 0x00, 0x10], &mut out).is_err());
        // A chunk longer than its input.
        assert!(decompress(&[0xFF, 0xBF, 0x00], &mut out).is_err());
    }
}
