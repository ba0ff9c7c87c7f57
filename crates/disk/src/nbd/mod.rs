//! The NBD protocol: vmvault's own client and read-only server.

pub mod client;
pub mod proto;
pub mod server;
pub mod source;

pub use client::{NbdClient, StatusExtent};
pub use source::NbdSource;
