//! The vmvault vault: where recovery points live, and everything needed to trust them.
//!
//! # Layout
//! A vault is a set of objects in a [`backend::Backend`] (a local directory or a bucket),
//! every one named by [`layout`]: the config (identity, signed), the wrapped master key,
//! chunk blobs, point files (fixed indexes and signed manifests), catalog documents, leases
//! and job records. docs/FORMAT.md gives every byte.
//!
//! # Commit order
//! A backup writes chunks (create-if-absent), then each disk's fixed index, then calls
//! [`backend::Backend::flush`] so all of them are durable, and only then stores the manifest,
//! itself create-if-absent. A recovery point exists exactly when its manifest does, so a
//! crash or a cancel at any moment leaves either the whole point or only unreferenced
//! objects that garbage collection may remove.
//!
//! # Concurrency
//! Nothing takes a lock that outlives its process: writes are create-if-absent or one
//! document's compare-and-swap, and backups ([`session`]) and collections ([`gc`]) hold
//! leases ([`lease`]). Why GC never deletes a chunk a committed point or a running backup
//! will reference, and why every other pair of operations is safe, is the concurrency table
//! of docs/ARCHITECTURE.md — the one place that argument is written.
//!
//! # Threat model
//! The storage (a disk, a bucket, a vault server) is not trusted with content: chunks are
//! AES-256-GCM encrypted with the chunk id and header as associated data, and chunk ids are
//! keyed hashes, so the store learns neither content nor whether a guessed content is present.
//! Manifests, indexes and the config carry no guest data and are plaintext, so a server can
//! list, prune and check structure; they are signed with a keyed MAC (indexes through the
//! digest their signed manifest records), so a client detects any change. The store can
//! still delete or withhold objects (caught by verify), and it sees sizes and timing.
//! The master key lives only in the client: wrapped by an Argon2id-derived key in the key
//! file, zeroized in memory, never logged. A lost passphrase (without the paper recovery key)
//! means the backups are lost.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod backend;
pub mod blob;
pub mod catalog;
mod chunk_cipher;
pub mod config;
pub mod error;
pub mod gc;
pub mod id;
pub mod index;
pub mod keyfile;
pub mod keys;
pub mod layout;
pub mod lease;
pub mod manifest;
pub mod point_key;
pub mod session;
pub mod signed;
pub mod vault;
pub mod verify;

pub use config::{Encryption, VaultConfig};
pub use error::{ErrorKind, Result, VaultError};
pub use id::{ChunkId, VaultId};
pub use index::FixedIndex;
pub use keyfile::{KdfParams, RecoveryKey};
pub use keys::{Keys, MasterKey, Passphrase};
pub use layout::{ObjectClass, ObjectKey};
pub use manifest::{Consistency, Manifest, ManifestDisk, PointGroup, PointKind};
pub use vault::{InitEncryption, UnlockedVault, Vault, VaultInfo};
