//! An in-memory [`Store`]: the same contract as SQLite, nothing on disk. For tests of the
//! engine that must run in milliseconds (with a simulated agent), never for an end-to-end
//! claim. Clones share one store, so a "restarted" orchestrator can be handed the same one.

use crate::{Event, Precondition, Record, Store, StoreError, Watcher, Write, WriteOp};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::UnboundedSender;

/// In-memory [`Store`] (see the module documentation).
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    revision: u64,
    /// key → (value, revision of its last write)
    data: BTreeMap<String, (Vec<u8>, u64)>,
    watchers: Vec<(String, UnboundedSender<Event>)>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))
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
        Ok(self
            .lock()?
            .data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, r))| Record {
                key: k.clone(),
                value: v.clone(),
                revision: *r,
            })
            .collect())
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
        inner.revision += 1;
        let revision = inner.revision;
        let mut events = Vec::new();
        for w in writes {
            match w.op {
                WriteOp::Put(v) => {
                    inner.data.insert(w.key.clone(), (v.clone(), revision));
                    events.push(Event {
                        key: w.key,
                        value: Some(v),
                        revision,
                    });
                }
                WriteOp::Delete => {
                    if inner.data.remove(&w.key).is_some() {
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
        inner.watchers.retain(|(prefix, tx)| {
            events
                .iter()
                .filter(|e| e.key.starts_with(prefix.as_str()))
                .all(|e| tx.send(e.clone()).is_ok())
                && !tx.is_closed()
        });
        Ok(revision)
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        Ok(self.lock()?.revision)
    }

    fn watch(&self, prefix: &str) -> Watcher {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        if let Ok(mut inner) = self.inner.lock() {
            inner.watchers.push((prefix.to_string(), tx));
        }
        rx
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_passes_conformance() {
        crate::conformance::run(&super::MemoryStore::new()).await;
    }
}
