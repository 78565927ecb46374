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
//! * [`Store::watch`] streams [`Event`]s for keys under a prefix; [`Store::watch_from`]
//!   first replays the changes after a given revision (or reports [`StoreError::Compacted`]
//!   when that history is gone) — [`Store::range_with_revision`] gives the revision to
//!   resume from;
//! * **leases** ([`Store::grant_lease`], [`Store::keep_alive`], [`Store::revoke_lease`]):
//!   a put bound to a lease ([`Write::with_lease`]) lives only as long as the lease; when it
//!   expires or is revoked its keys are deleted in one revision and watchers see the deletes.
//!   This is what several fogd nodes build ownership and liveness on.
//!
//! Backends: [`SqliteStore`] is the embedded default (one process); [`EtcdStore`] keeps the
//! same contract in etcd 3.4+ for several nodes; [`MemoryStore`] serves fast engine tests.
//! The two one-process backends keep leases and watch history in memory (`local`): leases
//! do not survive a restart (keys bound to them are deleted when a [`SqliteStore`] is
//! reopened) and the history is a bounded log (older revisions count as compacted).
//! [`typed`] adds the JSON envelope with a format
//! version that every persisted type carries. [`conformance`] is the one test suite every
//! backend must pass.

pub mod conformance;
mod etcd;
mod local;
mod memory;
mod sqlite;
pub mod testing;
pub mod typed;

pub use etcd::EtcdStore;
pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use std::time::Duration;

/// A lease: keys bound to it are deleted when it expires (no [`Store::keep_alive`] within
/// its TTL) or is revoked. The number is the backend's (etcd's lease id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// One member of a replicated store (an etcd member), as [`Store::members`] saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreMember {
    pub name: String,
    /// Its client URL.
    pub endpoint: String,
    /// It answered a status request.
    pub healthy: bool,
    /// It is the raft leader.
    pub leader: bool,
    /// Why it is not healthy.
    pub error: Option<String>,
}

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
    /// For a put: the lease the key is bound to (`None`: the key outlives every lease, and a
    /// put without a lease unbinds a key that had one). Ignored for deletes and checks.
    pub lease: Option<LeaseId>,
}

impl Write {
    pub fn put(key: impl Into<String>, value: Vec<u8>, precondition: Precondition) -> Self {
        Self {
            key: key.into(),
            op: WriteOp::Put(value),
            precondition,
            lease: None,
        }
    }

    /// A put whose key is deleted when `lease` expires or is revoked.
    pub fn put_with_lease(
        key: impl Into<String>,
        value: Vec<u8>,
        precondition: Precondition,
        lease: LeaseId,
    ) -> Self {
        Self::put(key, value, precondition).with_lease(lease)
    }

    /// Binds this put to `lease`.
    pub fn with_lease(mut self, lease: LeaseId) -> Self {
        self.lease = Some(lease);
        self
    }

    pub fn delete(key: impl Into<String>, precondition: Precondition) -> Self {
        Self {
            key: key.into(),
            op: WriteOp::Delete,
            precondition,
            lease: None,
        }
    }

    /// Requires `key` to still be at `revision` without changing it.
    pub fn check(key: impl Into<String>, revision: u64) -> Self {
        Self {
            key: key.into(),
            op: WriteOp::Check,
            precondition: Precondition::Revision(revision),
            lease: None,
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
    /// The history a watch asked for is gone: [`Store::watch_from`] with `requested` older
    /// than the store's compaction revision `compacted`. Read afresh
    /// ([`Store::range_with_revision`]) and watch from that revision instead.
    #[error("revision {requested} is compacted (history is kept from revision {compacted}): read afresh and watch from there")]
    Compacted { requested: u64, compacted: u64 },
    /// The lease expired, was revoked or never existed (nothing in the batch was applied).
    #[error("lease {0} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
}

/// Receives the events for one watch, in revision order. The channel closes when the watch
/// cannot go on (for [`EtcdStore`]: its history was compacted while it was disconnected);
/// the receiver then rebuilds from [`Store::range_with_revision`] and [`Store::watch_from`].
pub type Watcher = tokio::sync::mpsc::UnboundedReceiver<Event>;

fn unsupported(what: &str) -> StoreError {
    StoreError::Backend(format!("{what} is not supported by this store backend"))
}

/// The store contract. Implementations must make [`Store::commit`] atomic and linearisable.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError>;
    /// Reads every key that starts with `prefix`, in key order.
    async fn range(&self, prefix: &str) -> Result<Vec<Record>, StoreError>;
    /// Applies all writes if every precondition holds; returns the new store revision.
    /// Fails with [`StoreError::Conflict`] naming a key whose precondition failed, or
    /// [`StoreError::LeaseNotFound`] if a put names a lease that ended (nothing applied
    /// either way). A batch that changes nothing may leave the revision as it was (etcd).
    async fn commit(&self, writes: Vec<Write>) -> Result<u64, StoreError>;
    /// The current store revision.
    async fn revision(&self) -> Result<u64, StoreError>;
    /// Streams changes to keys under `prefix` made after this call.
    fn watch(&self, prefix: &str) -> Watcher;

    /// Reads every key under `prefix` (as [`Store::range`]) and the store revision the read
    /// reflects: [`Store::watch_from`] that revision misses nothing and repeats nothing.
    /// The default reads the revision first, then the range, so a watch from it may repeat
    /// changes the range already shows (never miss one); backends override it with one read.
    async fn range_with_revision(&self, prefix: &str) -> Result<(Vec<Record>, u64), StoreError> {
        let revision = self.revision().await?;
        Ok((self.range(prefix).await?, revision))
    }

    /// Streams changes to keys under `prefix` with a revision greater than `after`: first
    /// the recorded ones, in order, then live ones as [`Store::watch`] does. Fails with
    /// [`StoreError::Compacted`] when that history is gone (it always succeeds from the
    /// store's compaction revision on).
    async fn watch_from(&self, prefix: &str, after: u64) -> Result<Watcher, StoreError> {
        let _ = (prefix, after);
        Err(unsupported("watch_from"))
    }

    /// Discards the change history up to and including `revision` (etcd's compaction): a
    /// later [`Store::watch_from`] an older revision fails with [`StoreError::Compacted`].
    /// Keys are not affected. Compacting an already compacted revision does nothing.
    async fn compact_history(&self, revision: u64) -> Result<(), StoreError> {
        let _ = revision;
        Err(unsupported("compact_history"))
    }

    /// Grants a lease of at least `ttl` (etcd counts whole seconds and has a minimum of
    /// about 2 s; the one-process backends keep `ttl` as given).
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let _ = ttl;
        Err(unsupported("leases"))
    }

    /// Renews `lease` for its full TTL; [`StoreError::LeaseNotFound`] once it expired or
    /// was revoked (its keys are gone then).
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let _ = lease;
        Err(unsupported("leases"))
    }

    /// The members of a replicated store and their health (the one-process stores have
    /// none: an empty list).
    async fn members(&self) -> Result<Vec<StoreMember>, StoreError> {
        Ok(Vec::new())
    }

    /// Ends `lease` now: every key bound to it is deleted in one revision, and watchers
    /// see the deletes. [`StoreError::LeaseNotFound`] if it had already ended.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let _ = lease;
        Err(unsupported("leases"))
    }
}
