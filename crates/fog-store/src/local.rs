//! What the two one-process backends ([`MemoryStore`](crate::MemoryStore) and
//! [`SqliteStore`](crate::SqliteStore)) share to offer watches with history and leases
//! without a server:
//!
//! * [`Hub`]: the watchers and a bounded log of recent events. A watch from a revision
//!   replays the log after it, then follows live events; revisions that fell off the log
//!   (or were discarded by [`Hub::compact`]) are *compacted*, as etcd's would be.
//! * [`Leases`]: deadlines and the keys bound to each lease. The backends delete the keys
//!   of an expired lease in one revision, checked on every call and by a [`spawn_reaper`]
//!   task, so that watchers see expiry deletes even when nobody calls the store.
//!
//! Leases live in the process: they end with it.

use crate::{Event, LeaseId, StoreError, Watcher};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

/// How many events the history log keeps (older ones count as compacted).
pub(crate) const HISTORY_EVENTS: usize = 4096;

/// The longest the reaper sleeps between two looks at the leases.
const REAPER_IDLE: Duration = Duration::from_secs(1);

struct WatchEntry {
    prefix: String,
    /// Only events with a greater revision are sent.
    after: u64,
    tx: UnboundedSender<Event>,
}

/// Watchers and the bounded event history.
pub(crate) struct Hub {
    log: VecDeque<Event>,
    /// Events with a revision up to this one are no longer in the log.
    floor: u64,
    cap: usize,
    watchers: Vec<WatchEntry>,
}

impl Hub {
    /// A hub whose history starts after `floor` (the store's revision when it was opened).
    pub(crate) fn new(floor: u64) -> Self {
        Self {
            log: VecDeque::new(),
            floor,
            cap: HISTORY_EVENTS,
            watchers: Vec::new(),
        }
    }

    /// Records the events of one applied change (in revision order, after every earlier
    /// one) and sends them to the watchers whose prefix they match.
    pub(crate) fn publish(&mut self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        self.watchers.retain(|w| {
            events
                .iter()
                .filter(|e| e.revision > w.after && e.key.starts_with(w.prefix.as_str()))
                .all(|e| w.tx.send(e.clone()).is_ok())
                && !w.tx.is_closed()
        });
        self.log.extend(events);
        while self.log.len() > self.cap {
            if let Some(e) = self.log.pop_front() {
                self.floor = self.floor.max(e.revision);
            }
        }
        self.trim();
    }

    /// Drops log entries at or below the floor (the rest of a revision that was cut).
    fn trim(&mut self) {
        while self.log.front().is_some_and(|e| e.revision <= self.floor) {
            self.log.pop_front();
        }
    }

    /// A watch of changes published from now on.
    pub(crate) fn watch(&mut self, prefix: &str) -> Watcher {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.watchers.push(WatchEntry {
            prefix: prefix.to_string(),
            after: 0,
            tx,
        });
        rx
    }

    /// A watch that first replays the recorded changes after `after`.
    pub(crate) fn watch_from(&mut self, prefix: &str, after: u64) -> Result<Watcher, StoreError> {
        if after < self.floor {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: self.floor,
            });
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for e in self
            .log
            .iter()
            .filter(|e| e.revision > after && e.key.starts_with(prefix))
        {
            // The receiver is ours until we return it.
            let _ = tx.send(e.clone());
        }
        self.watchers.push(WatchEntry {
            prefix: prefix.to_string(),
            after,
            tx,
        });
        Ok(rx)
    }

    /// Discards the history up to and including `revision` (`current`: the store's).
    pub(crate) fn compact(&mut self, revision: u64, current: u64) -> Result<(), StoreError> {
        if revision > current {
            return Err(StoreError::Backend(format!(
                "cannot compact revision {revision}: the store is at {current}"
            )));
        }
        self.floor = self.floor.max(revision);
        self.trim();
        Ok(())
    }
}

struct LeaseState {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

/// Leases, their deadlines and the keys bound to each.
pub(crate) struct Leases {
    next: i64,
    leases: HashMap<LeaseId, LeaseState>,
    key_lease: HashMap<String, LeaseId>,
}

impl Default for Leases {
    fn default() -> Self {
        // Ids are not reused across processes that share a store file: start from the clock.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| (d.as_micros() & 0x3fff_ffff_ffff) as i64)
            .unwrap_or(1);
        Self {
            next: seed.max(1),
            leases: HashMap::new(),
            key_lease: HashMap::new(),
        }
    }
}

impl Leases {
    pub(crate) fn grant(&mut self, ttl: Duration) -> LeaseId {
        self.next += 1;
        let id = LeaseId(self.next);
        self.leases.insert(
            id,
            LeaseState {
                ttl,
                deadline: Instant::now() + ttl,
                keys: BTreeSet::new(),
            },
        );
        id
    }

    /// Whether `id` exists and has not reached its deadline.
    pub(crate) fn is_live(&self, id: LeaseId) -> bool {
        self.leases
            .get(&id)
            .is_some_and(|l| l.deadline > Instant::now())
    }

    pub(crate) fn keep_alive(&mut self, id: LeaseId) -> Result<(), StoreError> {
        let now = Instant::now();
        match self.leases.get_mut(&id) {
            Some(l) if l.deadline > now => {
                l.deadline = now + l.ttl;
                Ok(())
            }
            _ => Err(StoreError::LeaseNotFound(id)),
        }
    }

    /// Ends `id`, returning the keys bound to it (for the backend to delete).
    pub(crate) fn take(&mut self, id: LeaseId) -> Result<BTreeSet<String>, StoreError> {
        let lease = self
            .leases
            .remove(&id)
            .ok_or(StoreError::LeaseNotFound(id))?;
        for k in &lease.keys {
            self.key_lease.remove(k);
        }
        Ok(lease.keys)
    }

    /// Whether some lease has reached its deadline.
    pub(crate) fn any_due(&self) -> bool {
        let now = Instant::now();
        self.leases.values().any(|l| l.deadline <= now)
    }

    /// Ends every lease past its deadline, returning the keys bound to each.
    pub(crate) fn take_expired(&mut self) -> Vec<BTreeSet<String>> {
        let now = Instant::now();
        let due: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        due.into_iter()
            .filter_map(|id| self.take(id).ok())
            .collect()
    }

    /// Records that `key` was written bound to `lease` (or to none), or deleted (`None`).
    pub(crate) fn bind(&mut self, key: &str, lease: Option<LeaseId>) {
        if let Some(old) = self.key_lease.remove(key) {
            if let Some(l) = self.leases.get_mut(&old) {
                l.keys.remove(key);
            }
        }
        if let Some(id) = lease {
            if let Some(l) = self.leases.get_mut(&id) {
                l.keys.insert(key.to_string());
                self.key_lease.insert(key.to_string(), id);
            }
        }
    }

    /// The earliest deadline, if any lease is live.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.deadline).min()
    }
}

/// Makes sure a task runs that expires leases on time: `tick` expires what is due and
/// returns the next deadline, or `None` once the store is gone (the task then ends). The
/// task lives in the runtime of the caller; if that runtime ends, the next call starts one
/// in the current runtime.
pub(crate) fn spawn_reaper<F, Fut>(slot: &Mutex<Option<JoinHandle<()>>>, tick: F)
where
    F: Fn() -> Option<Fut> + Send + 'static,
    Fut: Future<Output = Option<Instant>> + Send + 'static,
{
    let Ok(mut slot) = slot.lock() else { return };
    if slot.as_ref().is_some_and(|h| !h.is_finished()) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    *slot = Some(runtime.spawn(async move {
        loop {
            let Some(pass) = tick() else { return };
            let next = pass.await;
            let idle = Instant::now() + REAPER_IDLE;
            let wake = next.map_or(idle, |d| d.min(idle));
            tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
        }
    }));
}
