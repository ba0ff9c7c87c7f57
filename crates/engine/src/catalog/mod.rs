//! The catalog: plain records the vault keeps beside its points — VMs, policies, protected
//! items, consistency groups, settings and change-tracking checkpoints — with get, list,
//! create, update and delete. Nothing here knows a rule that spans two records (a protected VM
//! cannot be removed, a policy in use cannot be deleted): those live in [`crate::services`].
//!
//! A [`Catalog`] is reached only from an opened [`Vault`], never from a bare backend, so a
//! record is always read from a vault whose config was checked. Every write is one
//! compare-and-swap of one document ([`vault::catalog`]): two writers never lose each other's
//! update, and a record that exists is never overwritten by a create.

pub mod check;
pub mod checkpoint;
pub mod group;
pub mod item;
pub mod job;
pub mod policy;
pub mod settings;
pub mod verified;
pub mod vm;

use serde::Serialize;
use serde::de::DeserializeOwned;
use vault::backend::Backend;
use vault::layout::{ObjectKey, Prefix};
use vault::{Vault, VaultError, catalog};

use crate::error::{EngineError, Record as RecordKind, Result};
use crate::names::check_name;

/// A record kept as one catalog document, named by one name.
pub trait Record: Serialize + DeserializeOwned + Send {
    /// What kind of record it is, for messages.
    const KIND: RecordKind;
    /// Where the record named `name` lives.
    fn object_key(name: &str) -> ObjectKey;
    /// Where all of them live.
    fn prefix() -> Prefix;
    /// Its name.
    fn name(&self) -> &str;
}

/// The catalog of one opened vault.
#[derive(Clone, Copy)]
pub struct Catalog<'a> {
    backend: &'a dyn Backend,
}

impl<'a> Catalog<'a> {
    /// The catalog of `vault`.
    pub fn of(vault: &'a Vault) -> Catalog<'a> {
        Catalog { backend: vault.backend().as_ref() }
    }

    /// The backend, for the single documents below (settings, checkpoints).
    pub(crate) fn backend(&self) -> &'a dyn Backend {
        self.backend
    }

    /// The record named `name`, if there is one.
    pub async fn find<R: Record>(&self, name: &str) -> Result<Option<R>> {
        check_name(R::KIND.as_str(), name)?;
        Ok(catalog::read(self.backend, &R::object_key(name)).await?)
    }

    /// The record named `name`; [`EngineError::NotFound`] if there is none.
    pub async fn get<R: Record>(&self, name: &str) -> Result<R> {
        self.find(name).await?.ok_or_else(|| EngineError::not_found(R::KIND, name))
    }

    /// Every record of this kind, by name.
    pub async fn list<R: Record>(&self) -> Result<Vec<R>> {
        let mut out: Vec<R> = catalog::read_all(self.backend, &R::prefix()).await?;
        out.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(out)
    }

    /// Store a new record; [`EngineError::Exists`] if one of its name exists.
    pub async fn create<R: Record + Sync>(&self, record: &R) -> Result<()> {
        check_name(R::KIND.as_str(), record.name())?;
        match catalog::create(self.backend, &R::object_key(record.name()), record).await {
            Err(VaultError::Exists { .. }) => Err(EngineError::exists(R::KIND, record.name())),
            other => Ok(other?),
        }
    }

    /// Read-modify-write an existing record (again on a lost race); NotFound if absent.
    pub async fn update<R: Record>(&self, name: &str, change: impl Fn(R) -> Result<R>) -> Result<R> {
        self.upsert(name, |current: Option<R>| match current {
            Some(record) => change(record),
            None => Err(EngineError::not_found(R::KIND, name)),
        })
        .await
    }

    /// Read-modify-write a record that may not exist yet.
    pub async fn upsert<R: Record>(&self, name: &str, change: impl Fn(Option<R>) -> Result<R>) -> Result<R> {
        check_name(R::KIND.as_str(), name)?;
        catalog::update(self.backend, &R::object_key(name), change).await
    }

    /// Delete the record named `name`; NotFound if there is none.
    pub async fn delete<R: Record>(&self, name: &str) -> Result<R> {
        let record = self.get::<R>(name).await?;
        self.backend.delete(&R::object_key(name)).await?;
        Ok(record)
    }

    /// Delete the record named `name` if there is one.
    pub async fn forget<R: Record>(&self, name: &str) -> Result<()> {
        check_name(R::KIND.as_str(), name)?;
        Ok(self.backend.delete(&R::object_key(name)).await?)
    }
}
