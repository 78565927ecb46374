//! # fog-store — fogd's metadata store
//!
//! A small key-value contract shaped like etcd's, so a distributed backend can replace the
//! embedded one without touching its callers:
//!
//! * keys are strings; every write bumps one store-wide **revision**, and each record carries
//!   the revision that last modified it ([`Record::revision`]);
//! * writes are **compare-and-swap**: each [`Write`] states a [`Precondition`] (absent, or at a
//!   given revision), and [`Store::commit`] applies a batch atomically or not at all;
//! * [`Store::range`] reads every key under a prefix;
//! * [`Store::watch`] streams [`Event`]s for keys under a prefix.
//!
//! [`SqliteStore`] is the embedded default; [`MemoryStore`] serves fast engine tests.
//! [`typed`] adds the JSON envelope with a format
//! version that every persisted type carries. [`conformance`] is the one test suite every
//! backend must pass.

pub mod conformance;
mod memory;
mod sqlite;
pub mod typed;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;

/// One stored key with its value and the revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub value: Vec<u8>,
    pub revision: u64,
}

/// What must hold for a write to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// The key must not exist.
    Absent,
    /// The key must exist and have been last written at exactly this revision.
    Revision(u64),
    /// No condition.
    Any,
}

/// What a [`Write`] does to its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    Put(Vec<u8>),
    Delete,
    /// Changes nothing; only the precondition matters (an etcd `Compare` without a `Put`).
    Check,
}

/// One write in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub key: String,
    pub op: WriteOp,
    pub precondition: Precondition,
}

impl Write {
    pub fn put(key: impl Into<String>, value: Vec<u8>, precondition: Precondition) -> Self {
        Self {
            key: key.into(),
            op: WriteOp::Put(value),
            precondition,
        }
    }

    pub fn delete(key: impl Into<String>, precondition: Precondition) -> Self {
        Self {
            key: key.into(),
            op: WriteOp::Delete,
            precondition,
        }
    }

    /// Requires `key` to still be at `revision` without changing it.
    pub fn check(key: impl Into<String>, revision: u64) -> Self {
        Self {
            key: key.into(),
            op: WriteOp::Check,
            precondition: Precondition::Revision(revision),
        }
    }
}

/// A change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub key: String,
    /// `None` when the key was deleted.
    pub value: Option<Vec<u8>>,
    pub revision: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A precondition did not hold; nothing in the batch was applied.
    #[error("precondition failed for key {key}")]
    Conflict { key: String },
    /// The backend failed (I/O, corruption, unreachable).
    #[error("store backend: {0}")]
    Backend(String),
    /// A stored value could not be decoded.
    #[error("decode {key}: {reason}")]
    Decode { key: String, reason: String },
}

/// Receives the events for one watch, in revision order.
pub type Watcher = tokio::sync::mpsc::UnboundedReceiver<Event>;

/// The store contract. Implementations must make [`Store::commit`] atomic and linearisable.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError>;
    /// Reads every key that starts with `prefix`, in key order.
    async fn range(&self, prefix: &str) -> Result<Vec<Record>, StoreError>;
    /// Applies all writes if every precondition holds; returns the new store revision.
    async fn commit(&self, writes: Vec<Write>) -> Result<u64, StoreError>;
    /// The current store revision.
    async fn revision(&self) -> Result<u64, StoreError>;
    /// Streams changes to keys under `prefix` made after this call.
    fn watch(&self, prefix: &str) -> Watcher;
}
