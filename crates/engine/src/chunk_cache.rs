//! The opened chunks a point reader keeps: most recently used first, 16 of them — unless
//! reads keep coming back to chunks it has just let go (a filesystem that scatters small
//! files over the disk, as ntfs-3g does: consecutive files 16 MiB apart), when it grows, up to
//! 64 (256 MiB), so a cycle over a few dozen chunks opens each once instead of every time.

use std::collections::VecDeque;
use std::sync::Arc;

/// Chunks kept to begin with (4 MiB each).
pub const CACHE_CHUNKS: usize = 16;
/// Most chunks kept once reads return to evicted ones.
pub const CACHE_CHUNKS_MAX: usize = 64;

/// Opened chunks by block number, and the numbers of those recently evicted.
pub struct ChunkCache {
    kept: VecDeque<(usize, Arc<Vec<u8>>)>,
    evicted: VecDeque<usize>,
    limit: usize,
}

impl Default for ChunkCache {
    fn default() -> ChunkCache {
        ChunkCache { kept: VecDeque::new(), evicted: VecDeque::new(), limit: CACHE_CHUNKS }
    }
}

impl ChunkCache {
    /// The chunk of `block`, if kept (it becomes the most recent).
    pub fn get(&mut self, block: usize) -> Option<Arc<Vec<u8>>> {
        let pos = self.kept.iter().position(|(b, _)| *b == block)?;
        let entry = self.kept.remove(pos)?;
        let data = Arc::clone(&entry.1);
        self.kept.push_front(entry);
        Some(data)
    }

    /// Keep a chunk just opened; a block evicted not long ago doubles how many are kept.
    pub fn insert(&mut self, block: usize, data: Arc<Vec<u8>>) {
        if self.evicted.contains(&block) {
            self.limit = (self.limit * 2).min(CACHE_CHUNKS_MAX);
            self.evicted.retain(|&b| b != block);
        }
        self.kept.push_front((block, data));
        while self.kept.len() > self.limit {
            if let Some((old, _)) = self.kept.pop_back() {
                self.evicted.push_front(old);
            }
        }
        self.evicted.truncate(CACHE_CHUNKS_MAX);
    }

    /// How many chunks it keeps now.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_over_more_chunks_than_kept_grows_the_cache_until_it_fits() {
        let mut cache = ChunkCache::default();
        let mut opened = 0;
        for _round in 0..10 {
            for block in 0..40 {
                if cache.get(block).is_none() {
                    opened += 1;
                    cache.insert(block, Arc::new(vec![0u8; 1]));
                }
            }
        }
        assert_eq!(cache.limit(), CACHE_CHUNKS_MAX);
        assert!(opened < 40 * 3, "{opened} opens for 40 chunks read 10 times");
        // Reads that never return keep it small.
        let mut fresh = ChunkCache::default();
        for block in 0..1000 {
            fresh.insert(block, Arc::new(vec![0u8; 1]));
        }
        assert_eq!(fresh.limit(), CACHE_CHUNKS);
    }
}
