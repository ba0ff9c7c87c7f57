//! The NBD protocol: vmvault's own client (and, later, server).

pub mod client;
pub mod proto;
pub mod source;

pub use client::{NbdClient, StatusExtent};
pub use source::NbdSource;
