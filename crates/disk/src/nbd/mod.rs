//! The NBD protocol: vmvault's own client (and, later, server).

pub mod client;
pub mod proto;

pub use client::{NbdClient, StatusExtent};
