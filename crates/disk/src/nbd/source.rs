//! An NBD export as a [`BlockSource`]: how a backup reads through qemu-nbd (dirty bitmaps,
//! formats imago lacks) and, later, through a running QEMU's export.

use std::os::unix::net::UnixStream;
use std::path::Path;

use super::client::NbdClient;
use super::proto::{CONTEXT_BASE_ALLOCATION, CONTEXT_DIRTY_BITMAP_PREFIX, STATE_DIRTY, STATE_ZERO};
use crate::error::Result;
use crate::image::{BlockSource, Extent, push_extent};

/// A connected export, with `base:allocation` and optionally one dirty bitmap selected.
pub struct NbdSource {
    client: NbdClient<UnixStream>,
    bitmap_context: Option<String>,
}

impl NbdSource {
    /// Connect to the default export of `socket` (qemu-nbd's); with `bitmap`, select
    /// `qemu:dirty-bitmap:<bitmap>` as well.
    pub fn connect(socket: &Path, bitmap: Option<&str>) -> Result<Self> {
        Self::connect_named(socket, "", bitmap)
    }

    /// Connect to the export `export` of `socket` (a running QEMU's NBD server).
    pub fn connect_named(socket: &Path, export: &str, bitmap: Option<&str>) -> Result<Self> {
        let bitmap_context = bitmap.map(|b| format!("{CONTEXT_DIRTY_BITMAP_PREFIX}{b}"));
        let mut contexts = vec![CONTEXT_BASE_ALLOCATION];
        if let Some(c) = &bitmap_context {
            contexts.push(c);
        }
        let client = NbdClient::connect_unix(socket, export, &contexts)?;
        Ok(NbdSource { client, bitmap_context })
    }

    /// Ranges marked dirty in the selected bitmap (everything, if none was selected).
    pub fn dirty(&mut self) -> Result<Vec<Extent>> {
        let size = self.client.size();
        let Some(context) = self.bitmap_context.clone() else {
            return Ok(vec![Extent { offset: 0, length: size }]);
        };
        let mut out = Vec::new();
        for e in self.client.extents(&context, 0, size)? {
            if e.flags & STATE_DIRTY != 0 {
                push_extent(&mut out, e.offset, e.length);
            }
        }
        Ok(out)
    }
}

impl BlockSource for NbdSource {
    fn size(&self) -> u64 {
        self.client.size()
    }

    fn allocated(&mut self) -> Result<Vec<Extent>> {
        let size = self.client.size();
        let mut out = Vec::new();
        for e in self.client.extents(CONTEXT_BASE_ALLOCATION, 0, size)? {
            if e.flags & STATE_ZERO == 0 {
                push_extent(&mut out, e.offset, e.length);
            }
        }
        Ok(out)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.client.read(offset, buf)
    }
}
