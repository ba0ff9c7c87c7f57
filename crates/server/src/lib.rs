//! The vmvault vault server and its client.
//!
//! Many hypervisor hosts back up into one vault through a server. The server stores and lists
//! vault objects for them over HTTPS and never sees a key or plaintext: chunks arrive sealed,
//! manifests and indexes signed. What a caller may do is decided per object key by its token's
//! role and VM scope ([`auth`]); what it may write, by what the object holds
//! ([`validate`]). The client side is a [`vault::backend::Backend`]
//! ([`client::RemoteBackend`]), so every vault operation runs unchanged against a server.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod auth;
pub mod client;
pub mod limit;
pub mod owners;
pub mod run;
pub mod scope;
pub mod tls;
pub mod tokens;
pub mod validate;
