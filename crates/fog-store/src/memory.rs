//! An in-memory [`Store`]: the same contract as SQLite, nothing on disk. For tests of the
//! engine that must run in milliseconds (with a simulated agent), never for an end-to-end
//! claim. Clones share one store, so a "restarted" orchestrator can be handed the same one.
//! Leases and the watch history work as in [`SqliteStore`](crate::SqliteStore) (see
//! `local`).

use crate::local::{spawn_reaper, Hub, Leases};
use crate::{Event, LeaseId, Precondition, Record, Store, StoreError, Watcher, Write, WriteOp};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// In-memory [`Store`] (see the module documentation).
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    reaper: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                revision: 0,
                data: BTreeMap::new(),
                hub: Hub::new(0),
                leases: Leases::default(),
            })),
            reaper: Arc::default(),
        }
    }
}

struct Inner {
    revision: u64,
    /// key → (value, revision of its last write)
    data: BTreeMap<String, (Vec<u8>, u64)>,
    hub: Hub,
    leases: Leases,
}

impl Inner {
    /// Deletes the keys of every expired lease (one revision per lease); returns the next
    /// lease deadline.
    fn expire(&mut self) -> Option<Instant> {
        if self.leases.any_due() {
            for keys in self.leases.take_expired() {
                self.delete_keys(keys);
            }
        }
        self.leases.next_deadline()
    }

    /// Deletes `keys` in one revision (none if none of them exists).
    fn delete_keys(&mut self, keys: BTreeSet<String>) {
        let revision = self.revision + 1;
        let events: Vec<Event> = keys
            .into_iter()
            .filter(|k| self.data.remove(k).is_some())
            .map(|key| Event {
                key,
                value: None,
                revision,
            })
            .collect();
        if !events.is_empty() {
            self.revision = revision;
            self.hub.publish(events);
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks the store, first deleting the keys of expired leases.
    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))?;
        inner.expire();
        Ok(inner)
    }

    fn records(inner: &Inner, prefix: &str) -> Vec<Record> {
        inner
            .data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, r))| Record {
                key: k.clone(),
                value: v.clone(),
                revision: *r,
            })
            .collect()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        Ok(self.lock()?.data.get(key).map(|(v, r)| Record {
            key: key.to_string(),
            value: v.clone(),
            revision: *r,
        }))
    }

    async fn range(&self, prefix: &str) -> Result<Vec<Record>, StoreError> {
        let inner = self.lock()?;
        Ok(Self::records(&inner, prefix))
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<u64, StoreError> {
        let mut inner = self.lock()?;
        for w in &writes {
            let current = inner.data.get(&w.key).map(|(_, r)| *r);
            let holds = match w.precondition {
                Precondition::Absent => current.is_none(),
                Precondition::Revision(r) => current == Some(r),
                Precondition::Any => true,
            };
            if !holds {
                return Err(StoreError::Conflict { key: w.key.clone() });
            }
        }
        for w in &writes {
            if let (WriteOp::Put(_), Some(lease)) = (&w.op, w.lease) {
                if !inner.leases.is_live(lease) {
                    return Err(StoreError::LeaseNotFound(lease));
                }
            }
        }
        inner.revision += 1;
        let revision = inner.revision;
        let mut events = Vec::new();
        for w in writes {
            match w.op {
                WriteOp::Put(v) => {
                    inner.data.insert(w.key.clone(), (v.clone(), revision));
                    inner.leases.bind(&w.key, w.lease);
                    events.push(Event {
                        key: w.key,
                        value: Some(v),
                        revision,
                    });
                }
                WriteOp::Delete => {
                    if inner.data.remove(&w.key).is_some() {
                        inner.leases.bind(&w.key, None);
                        events.push(Event {
                            key: w.key,
                            value: None,
                            revision,
                        });
                    }
                }
                WriteOp::Check => {}
            }
        }
        inner.hub.publish(events);
        Ok(revision)
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        Ok(self.lock()?.revision)
    }

    fn watch(&self, prefix: &str) -> Watcher {
        match self.lock() {
            Ok(mut inner) => inner.hub.watch(prefix),
            // A closed channel: the watcher sees the end at once.
            Err(_) => tokio::sync::mpsc::unbounded_channel().1,
        }
    }

    async fn range_with_revision(&self, prefix: &str) -> Result<(Vec<Record>, u64), StoreError> {
        let inner = self.lock()?;
        Ok((Self::records(&inner, prefix), inner.revision))
    }

    async fn watch_from(&self, prefix: &str, after: u64) -> Result<Watcher, StoreError> {
        self.lock()?.hub.watch_from(prefix, after)
    }

    async fn compact_history(&self, revision: u64) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let current = inner.revision;
        inner.hub.compact(revision, current)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let id = self.lock()?.leases.grant(ttl);
        let weak = Arc::downgrade(&self.inner);
        spawn_reaper(&self.reaper, move || {
            let inner = weak.upgrade()?;
            Some(async move { inner.lock().ok().and_then(|mut i| i.expire()) })
        });
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.lock()?.leases.keep_alive(lease)
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let keys = inner.leases.take(lease)?;
        inner.delete_keys(keys);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_passes_conformance() {
        crate::conformance::run(&super::MemoryStore::new()).await;
    }
}
