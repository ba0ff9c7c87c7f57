//! NBD protocol constants (the "newstyle" protocol as documented by the NBD project), shared by
//! vmvault's client and server.

/// First magic sent by a newstyle server: `NBDMAGIC`.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// Second magic of the greeting and prefix of every option request: `IHAVEOPT`.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Prefix of every option reply.
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Prefix of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Prefix of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Prefix of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag: fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
/// Handshake flag: no 124 zero bytes after export data.
pub const FLAG_NO_ZEROES: u16 = 2;
/// Client flag: fixed newstyle.
pub const CLIENT_FIXED_NEWSTYLE: u32 = 1;
/// Client flag: no zeroes.
pub const CLIENT_NO_ZEROES: u32 = 2;

/// Option: select an export the old way (no option reply; straight to transmission).
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: end the handshake without an export.
pub const OPT_ABORT: u32 = 2;
/// Option: list exports.
pub const OPT_LIST: u32 = 3;
/// Option: ask about an export without entering transmission.
pub const OPT_INFO: u32 = 6;
/// Option: select an export and enter transmission.
pub const OPT_GO: u32 = 7;
/// Option: use structured replies.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// Option: list metadata contexts.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// Option: select metadata contexts for BLOCK_STATUS.
pub const OPT_SET_META_CONTEXT: u32 = 10;

/// Option reply: success, end of replies to this option.
pub const REP_ACK: u32 = 1;
/// Option reply: an export's name (OPT_LIST).
pub const REP_SERVER: u32 = 2;
/// Option reply: information about the export.
pub const REP_INFO: u32 = 3;
/// Option reply: a selected metadata context.
pub const REP_META_CONTEXT: u32 = 4;
/// Option reply error: option not supported.
pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
/// Option reply error: policy refusal.
pub const REP_ERR_POLICY: u32 = 0x8000_0002;
/// Option reply error: invalid option data.
pub const REP_ERR_INVALID: u32 = 0x8000_0003;
/// Option reply error: unknown export.
pub const REP_ERR_UNKNOWN: u32 = 0x8000_0006;

/// Info type: export size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// Info type: block size constraints.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flag: the server sent flags.
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: the export is read-only.
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: FLUSH is supported.
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: reads may be served from several connections.
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Command: read.
pub const CMD_READ: u16 = 0;
/// Command: write.
pub const CMD_WRITE: u16 = 1;
/// Command: disconnect.
pub const CMD_DISC: u16 = 2;
/// Command: flush.
pub const CMD_FLUSH: u16 = 3;
/// Command: block status of metadata contexts.
pub const CMD_BLOCK_STATUS: u16 = 7;
/// Command flag: do not fragment a read reply.
pub const CMD_FLAG_DF: u16 = 1 << 1;
/// Command flag: one descriptor per context is enough.
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;

/// Reply chunk flag: the last chunk of this reply.
pub const REPLY_FLAG_DONE: u16 = 1;
/// Reply chunk: nothing (just done).
pub const REPLY_TYPE_NONE: u16 = 0;
/// Reply chunk: data at an offset.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Reply chunk: a hole (reads as zeros) at an offset.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Reply chunk: block status descriptors of one context.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Reply chunk: an error.
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;
/// Reply chunk: an error at an offset.
pub const REPLY_TYPE_ERROR_OFFSET: u16 = (1 << 15) + 2;

/// base:allocation status flag: unallocated.
pub const STATE_HOLE: u32 = 1;
/// base:allocation status flag: reads as zeros.
pub const STATE_ZERO: u32 = 2;
/// qemu:dirty-bitmap status flag: dirty.
pub const STATE_DIRTY: u32 = 1;

/// The metadata context of allocation.
pub const CONTEXT_BASE_ALLOCATION: &str = "base:allocation";
/// Prefix of QEMU's dirty-bitmap contexts.
pub const CONTEXT_DIRTY_BITMAP_PREFIX: &str = "qemu:dirty-bitmap:";

/// errno values carried in replies.
pub const EPERM: u32 = 1;
/// I/O error.
pub const EIO: u32 = 5;
/// Invalid argument.
pub const EINVAL: u32 = 22;
/// No space.
pub const ENOSPC: u32 = 28;
/// Not supported.
pub const ENOTSUP: u32 = 95;

/// Largest payload either side accepts in one request: 32 MiB, as QEMU.
pub const MAX_PAYLOAD: u32 = 32 * 1024 * 1024;
