//! The etcd backend (etcd 3.4+, v3 gRPC API, plain HTTP), for several fogd nodes sharing
//! one store.
//!
//! * **Keys** live under a prefix (default [`EtcdStore::DEFAULT_PREFIX`], `/fogd/`), so one
//!   etcd cluster can hold other data; the prefix is invisible to callers.
//! * **Revisions** are etcd's: a record's revision is its `mod_revision`, a commit returns
//!   the header revision of its `Txn`. A batch that changes nothing (only checks, or deletes
//!   of missing keys) leaves the revision as it was, as etcd does.
//! * **Commit** is one `Txn`: the compares are the preconditions (`Absent` →
//!   `create_revision == 0`, `Revision(r)` → `mod_revision == r`, `Check` compares only) and
//!   the success ops are the puts (with their lease) and deletes. The failure branch reads
//!   the compared keys in the same transaction, so [`StoreError::Conflict`] names a key whose
//!   precondition really failed. etcd refuses more than `--max-txn-ops` (128 by default)
//!   compares or ops in one transaction, and one key written twice.
//! * **Range** reads in pages of [`EtcdStore::PAGE`] keys at one revision.
//! * **Watch** follows an etcd watch on the prefix from the revision after the newest one
//!   this client has seen (so nothing committed after [`Store::watch`] returns is missed;
//!   a few earlier changes by other nodes may be delivered too), reconnecting from the next
//!   revision when the stream breaks. If the history it needs was compacted meanwhile, a
//!   [`Store::watch`] resumes at the compaction revision (its callers re-read the store
//!   anyway) while a [`Store::watch_from`] channel closes, so its owner re-reads and
//!   watches again. [`Store::watch_from`] checks for compaction before it starts (a range
//!   read at the first revision it needs) and reports [`StoreError::Compacted`].
//! * **Leases** are etcd leases (TTL rounded up to whole seconds; etcd enforces a minimum of
//!   about 2 s with its default election timeout).
//!
//! Every unary call is bounded by [`EtcdStore::REQUEST_TIMEOUT`]; failures of the
//! transport or the cluster become [`StoreError::Backend`].

use crate::{Event, LeaseId, Precondition, Record, Store, StoreError, Watcher, Write, WriteOp};
use async_trait::async_trait;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, EventType, GetOptions,
    PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// [`Store`] in an etcd cluster (see the module documentation). Clones share one
/// connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
    /// The newest store revision any response has shown this client.
    seen: Arc<AtomicU64>,
    endpoints: Arc<Vec<String>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn etcd_err(what: &str, e: etcd_client::Error) -> StoreError {
    StoreError::Backend(format!("etcd {what}: {e}"))
}

fn message(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.message().to_string(),
        other => other.to_string(),
    }
}

fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    let m = message(e);
    m.contains("requested lease not found") || m.contains("lease not found")
}

/// Whether the request never reached a server (a member is down): safe to send again,
/// even a commit.
fn is_unreached(e: &etcd_client::Error) -> bool {
    let m = message(e);
    m.contains("tcp connect error") || m.contains("Connection refused")
}

/// Whether a commit was refused before it could apply: the request never reached a member,
/// or the member had no leader (`require_leader` refuses such requests up front). Safe to
/// send again.
fn is_refused_unapplied(e: &etcd_client::Error) -> bool {
    is_unreached(e) || message(e).contains("no leader")
}

/// Whether a read failed for a reason that passes (a member going down, a leader election):
/// a read changes nothing, so it is simply sent again.
fn is_transient(e: &etcd_client::Error) -> bool {
    if is_refused_unapplied(e) {
        return true;
    }
    // The message and the error's display (which names the gRPC code, e.g. Unavailable).
    let m = format!("{} {e}", message(e)).to_ascii_lowercase();
    [
        "leader changed",
        "transport",
        "connection",
        "broken pipe",
        "unavailable",
        "timed out",
        "h2 protocol",
        "stream closed",
        "error trying to connect",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    message(e).contains("required revision has been compacted")
}

/// The end of the key range of every key starting with `prefix` (etcd's rule).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdStore {
    /// The key prefix fogd uses unless told otherwise.
    pub const DEFAULT_PREFIX: &'static str = "/fogd/";
    /// How many keys one range request reads.
    pub const PAGE: i64 = 1000;
    /// The longest one request may take.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// etcd's default `--max-txn-ops`: the most compares, and the most operations, one
    /// transaction may carry. A larger batch is refused here with an error saying so.
    pub const MAX_TXN_OPS: usize = 128;

    /// Parses `etcd://HOST:PORT[,HOST:PORT…]` (also `http://…` endpoints) into endpoint URLs.
    pub fn parse_url(url: &str) -> Result<Vec<String>, String> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("{url:?}: an etcd store is etcd://HOST:PORT[,HOST:PORT…]"))?;
        let endpoints: Vec<String> = rest
            .trim_end_matches('/')
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.starts_with("http://") {
                    e.to_string()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        if endpoints.is_empty() {
            return Err(format!("{url:?}: no etcd endpoint"));
        }
        for e in &endpoints {
            let hostport = e.trim_start_matches("http://");
            let ok = hostport
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(format!("{url:?}: endpoint {hostport:?} is not HOST:PORT"));
            }
        }
        Ok(endpoints)
    }

    /// Connects to the cluster at `endpoints` (`http://HOST:PORT` or `HOST:PORT`) and checks
    /// it answers; keys live under `prefix` (e.g. [`EtcdStore::DEFAULT_PREFIX`]).
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(3))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let client = Client::connect(&endpoints, Some(options))
            .await
            .map_err(|e| etcd_err(&format!("connect {endpoints:?}"), e))?;
        let store = Self {
            client,
            prefix: prefix.to_string(),
            seen: Arc::new(AtomicU64::new(0)),
            endpoints: Arc::new(endpoints),
        };
        store.revision().await?;
        Ok(store)
    }

    /// The key prefix this store lives under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn strip(&self, key: &[u8]) -> Result<String, StoreError> {
        let key = std::str::from_utf8(key)
            .map_err(|e| StoreError::Backend(format!("etcd key is not UTF-8: {e}")))?;
        key.strip_prefix(self.prefix.as_str())
            .map(str::to_string)
            .ok_or_else(|| StoreError::Backend(format!("etcd key {key:?} outside the prefix")))
    }

    fn observe(&self, header: Option<&etcd_client::ResponseHeader>) -> u64 {
        let revision = header.map_or(0, |h| h.revision().max(0) as u64);
        self.seen.fetch_max(revision, Ordering::SeqCst);
        revision
    }

    /// Runs one request against a clone of the client, bounded by the request timeout. The
    /// balanced channel may pick a member that is down; a request that could not reach
    /// it is sent again (to another member, or the same one once it is back).
    async fn call<T, F, Fut>(
        &self,
        what: &str,
        f: F,
    ) -> Result<Result<T, etcd_client::Error>, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_retrying(what, is_refused_unapplied, f).await
    }

    /// [`Self::call`] for a request that changes nothing: sent again on any transient
    /// failure too (a member going down mid-request, a leader election), within the same
    /// request timeout.
    async fn read<T, F, Fut>(
        &self,
        what: &str,
        f: F,
    ) -> Result<Result<T, etcd_client::Error>, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_retrying(what, is_transient, f).await
    }

    async fn call_retrying<T, F, Fut>(
        &self,
        what: &str,
        again: fn(&etcd_client::Error) -> bool,
        f: F,
    ) -> Result<Result<T, etcd_client::Error>, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let attempts = async {
            let mut pause = Duration::from_millis(10);
            loop {
                match f(self.client.clone()).await {
                    Err(e) if again(&e) => {
                        tracing::debug!(error = %e, "etcd {what}: member unreachable or no leader; sending again");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(500));
                    }
                    other => return other,
                }
            }
        };
        tokio::time::timeout(Self::REQUEST_TIMEOUT, attempts)
            .await
            .map_err(|_| {
                StoreError::Backend(format!(
                    "etcd {what}: no answer within {:?} from {:?}",
                    Self::REQUEST_TIMEOUT,
                    self.endpoints
                ))
            })
    }

    fn record(&self, kv: &etcd_client::KeyValue) -> Result<Record, StoreError> {
        Ok(Record {
            key: self.strip(kv.key())?,
            value: kv.value().to_vec(),
            revision: kv.mod_revision().max(0) as u64,
        })
    }

    /// Every record under `prefix` and the revision they were read at, in pages.
    async fn read_range(&self, prefix: &str) -> Result<(Vec<Record>, u64), StoreError> {
        let full = self.full(prefix).into_bytes();
        let end = prefix_end(&full);
        let mut start = full;
        let mut at: i64 = 0;
        let mut out = Vec::new();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(Self::PAGE);
            if at > 0 {
                options = options.with_revision(at);
            }
            let key = start.clone();
            let resp = self
                .read("range", |mut c| {
                    let (key, options) = (key.clone(), options.clone());
                    async move { c.get(key, Some(options)).await }
                })
                .await?
                .map_err(|e| etcd_err("range", e))?;
            let revision = self.observe(resp.header());
            if at == 0 {
                at = revision as i64;
            }
            for kv in resp.kvs() {
                out.push(self.record(kv)?);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok((out, at as u64)),
            }
        }
    }

    /// The cluster's compaction revision, learned from a watch of the oldest history (only
    /// asked once a read said the history is compacted); `fallback` if it does not tell.
    async fn compaction_revision(&self, fallback: u64) -> u64 {
        let key = self.full("");
        let probe = async {
            let mut c = self.client.clone();
            let options = WatchOptions::new().with_prefix().with_start_revision(1);
            let mut stream = c.watch(key, Some(options)).await.ok()?;
            while let Ok(Some(resp)) = stream.message().await {
                if resp.compact_revision() > 0 {
                    return Some(resp.compact_revision() as u64);
                }
                if !resp.events().is_empty() || resp.canceled() {
                    return None;
                }
            }
            None
        };
        tokio::time::timeout(Duration::from_secs(3), probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(fallback)
    }

    /// Starts the task that feeds `tx` from an etcd watch beginning at revision `start`.
    fn spawn_watch(&self, prefix: &str, start: u64, end_on_compaction: bool) -> Watcher {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(forward(
                    self.clone(),
                    self.full(prefix),
                    start,
                    end_on_compaction,
                    tx,
                ));
            }
            Err(_) => tracing::warn!("etcd watch outside a tokio runtime: it sees nothing"),
        }
        rx
    }
}

/// Forwards one etcd watch into `tx` until the receiver is dropped, reconnecting when the
/// stream breaks (see the module documentation for compaction).
async fn forward(
    store: EtcdStore,
    key: String,
    mut next: u64,
    end_on_compaction: bool,
    tx: UnboundedSender<Event>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if tx.is_closed() {
            return;
        }
        let mut client = store.client.clone();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(next.max(1) as i64);
        let stream = tokio::select! {
            s = client.watch(key.clone(), Some(options)) => s,
            _ = tx.closed() => return,
        };
        match stream {
            Ok(mut stream) => loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = tx.closed() => return,
                };
                let resp = match msg {
                    Ok(Some(resp)) => resp,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "etcd watch stream broke; reconnecting");
                        break;
                    }
                };
                backoff = Duration::from_millis(100);
                store.observe(resp.header());
                if resp.compact_revision() > 0 {
                    let compacted = resp.compact_revision() as u64;
                    if end_on_compaction {
                        tracing::warn!(
                            from = next,
                            compacted,
                            "etcd watch history compacted; ending the watch"
                        );
                        return;
                    }
                    tracing::warn!(
                        from = next,
                        compacted,
                        "etcd watch history compacted; resuming at the compaction revision"
                    );
                    next = compacted;
                    break;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let Ok(k) = store.strip(kv.key()) else {
                        continue;
                    };
                    let revision = kv.mod_revision().max(0) as u64;
                    let value = match ev.event_type() {
                        EventType::Put => Some(kv.value().to_vec()),
                        EventType::Delete => None,
                    };
                    if tx
                        .send(Event {
                            key: k,
                            value,
                            revision,
                        })
                        .is_err()
                    {
                        return;
                    }
                    next = next.max(revision + 1);
                }
                if resp.canceled() {
                    tracing::debug!(reason = resp.cancel_reason(), "etcd watch canceled");
                    break;
                }
            },
            Err(e) => tracing::debug!(error = %e, "etcd watch could not start; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tx.closed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let full = self.full(key);
        let resp = self
            .read("get", |mut c| {
                let full = full.clone();
                async move { c.get(full, None).await }
            })
            .await?
            .map_err(|e| etcd_err("get", e))?;
        self.observe(resp.header());
        resp.kvs().first().map(|kv| self.record(kv)).transpose()
    }

    async fn range(&self, prefix: &str) -> Result<Vec<Record>, StoreError> {
        Ok(self.read_range(prefix).await?.0)
    }

    async fn range_with_revision(&self, prefix: &str) -> Result<(Vec<Record>, u64), StoreError> {
        self.read_range(prefix).await
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<u64, StoreError> {
        // The last put or delete of each key wins (etcd refuses a key written twice).
        let mut last_op: HashMap<&str, usize> = HashMap::new();
        for (i, w) in writes.iter().enumerate() {
            if !matches!(w.op, WriteOp::Check) {
                last_op.insert(w.key.as_str(), i);
            }
        }
        let mut compares = Vec::new();
        let mut compared: Vec<&Write> = Vec::new();
        let mut reads = Vec::new();
        let mut read_keys = HashSet::new();
        let mut ops = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            let full = self.full(&w.key);
            match w.precondition {
                Precondition::Absent => {
                    compares.push(Compare::create_revision(full.clone(), CompareOp::Equal, 0))
                }
                Precondition::Revision(r) => compares.push(Compare::mod_revision(
                    full.clone(),
                    CompareOp::Equal,
                    r as i64,
                )),
                Precondition::Any => {}
            }
            if !matches!(w.precondition, Precondition::Any) {
                compared.push(w);
                if read_keys.insert(w.key.as_str()) {
                    reads.push(TxnOp::get(
                        full.clone(),
                        Some(GetOptions::new().with_keys_only()),
                    ));
                }
            }
            if last_op.get(w.key.as_str()) != Some(&i) {
                continue;
            }
            match &w.op {
                WriteOp::Put(v) => ops.push(TxnOp::put(
                    full,
                    v.clone(),
                    w.lease.map(|l| PutOptions::new().with_lease(l.0)),
                )),
                WriteOp::Delete => ops.push(TxnOp::delete(full, None)),
                WriteOp::Check => {}
            }
        }
        if compares.len() > Self::MAX_TXN_OPS || ops.len() > Self::MAX_TXN_OPS {
            return Err(StoreError::Backend(format!(
                "a batch of {} compares and {} writes exceeds etcd's {} operations per transaction",
                compares.len(),
                ops.len(),
                Self::MAX_TXN_OPS
            )));
        }
        let txn = Txn::new().when(compares).and_then(ops).or_else(reads);
        let resp = match self
            .call("commit", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?
        {
            Ok(resp) => resp,
            Err(e) if is_lease_not_found(&e) => {
                return Err(StoreError::LeaseNotFound(self.missing_lease(&writes).await))
            }
            Err(e) => return Err(etcd_err("commit", e)),
        };
        let revision = self.observe(resp.header());
        if resp.succeeded() {
            return Ok(revision);
        }
        // Which precondition failed, from the keys as the transaction saw them.
        let mut current: HashMap<String, (i64, i64)> = HashMap::new();
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                for kv in get.kvs() {
                    if let Ok(k) = self.strip(kv.key()) {
                        current.insert(k, (kv.create_revision(), kv.mod_revision()));
                    }
                }
            }
        }
        let failed = compared.iter().find(|w| {
            let now = current.get(&w.key);
            match w.precondition {
                Precondition::Absent => now.is_some(),
                Precondition::Revision(r) => now.is_none_or(|(_, m)| *m != r as i64),
                Precondition::Any => false,
            }
        });
        let key = failed
            .or(compared.first())
            .map(|w| w.key.clone())
            .unwrap_or_default();
        Err(StoreError::Conflict { key })
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        let key = self.full("");
        let resp = self
            .read("revision", |mut c| {
                let key = key.clone();
                async move {
                    c.get(key, Some(GetOptions::new().with_keys_only().with_limit(1)))
                        .await
                }
            })
            .await?
            .map_err(|e| etcd_err("revision", e))?;
        Ok(self.observe(resp.header()))
    }

    fn watch(&self, prefix: &str) -> Watcher {
        let start = self.seen.load(Ordering::SeqCst) + 1;
        self.spawn_watch(prefix, start, false)
    }

    async fn watch_from(&self, prefix: &str, after: u64) -> Result<Watcher, StoreError> {
        let start = after + 1;
        let current = self.revision().await?;
        if start <= current {
            // A read at the first revision the watch needs fails if it was compacted.
            let key = self.full(prefix);
            let options = GetOptions::new()
                .with_keys_only()
                .with_limit(1)
                .with_revision(start as i64);
            match self
                .read("watch_from", |mut c| {
                    let (key, options) = (key.clone(), options.clone());
                    async move { c.get(key, Some(options)).await }
                })
                .await?
            {
                Ok(_) => {}
                Err(e) if is_compacted(&e) => {
                    return Err(StoreError::Compacted {
                        requested: after,
                        compacted: self.compaction_revision(current).await,
                    })
                }
                Err(e) => return Err(etcd_err("watch_from", e)),
            }
        }
        Ok(self.spawn_watch(prefix, start, true))
    }

    async fn compact_history(&self, revision: u64) -> Result<(), StoreError> {
        let options = CompactionOptions::new().with_physical();
        match self
            .call("compact", |mut c| {
                let options = options.clone();
                async move { c.compact(revision as i64, Some(options)).await }
            })
            .await?
        {
            Ok(resp) => {
                self.observe(resp.header());
                Ok(())
            }
            Err(e) if is_compacted(&e) => Ok(()),
            Err(e) => Err(etcd_err("compact", e)),
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = (ttl.as_millis().div_ceil(1000) as i64).max(1);
        let resp = self
            .call("lease grant", |mut c| async move {
                c.lease_grant(secs, None).await
            })
            .await?
            .map_err(|e| etcd_err("lease grant", e))?;
        if !resp.error().is_empty() {
            return Err(StoreError::Backend(format!(
                "etcd lease grant: {}",
                resp.error()
            )));
        }
        Ok(LeaseId(resp.id()))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        // One renewal: etcd-client sends a keep-alive and reads its answer.
        match self
            .call("lease keep-alive", |mut c| async move {
                c.lease_keep_alive(lease.0).await
            })
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) if is_lease_not_found(&e) => Err(StoreError::LeaseNotFound(lease)),
            Err(e) => Err(etcd_err("lease keep-alive", e)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        match self
            .call("lease revoke", |mut c| async move {
                c.lease_revoke(lease.0).await
            })
            .await?
        {
            Ok(resp) => {
                self.observe(resp.header());
                Ok(())
            }
            Err(e) if is_lease_not_found(&e) => Err(StoreError::LeaseNotFound(lease)),
            Err(e) => Err(etcd_err("lease revoke", e)),
        }
    }

    /// Every member etcd lists, each asked for its status on its own client URL (bounded
    /// by 3 s): a member that does not answer is listed unhealthy with the reason.
    async fn members(&self) -> Result<Vec<crate::StoreMember>, StoreError> {
        let list = self
            .read("member list", |mut c| async move { c.member_list().await })
            .await?
            .map_err(|e| etcd_err("member list", e))?;
        let mut out = Vec::new();
        for m in list.members() {
            let endpoint = m.client_urls().first().cloned().unwrap_or_default();
            let status = async {
                let options = ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(1))
                    .with_timeout(Duration::from_secs(2));
                let mut c = Client::connect([endpoint.clone()], Some(options)).await?;
                c.status().await
            };
            let (healthy, leader, error) =
                match tokio::time::timeout(Duration::from_secs(3), status).await {
                    Ok(Ok(st)) => (true, st.leader() == m.id(), None),
                    Ok(Err(e)) => (false, false, Some(e.to_string())),
                    Err(_) => (false, false, Some("no answer within 3 s".to_string())),
                };
            out.push(crate::StoreMember {
                name: m.name().to_string(),
                endpoint,
                healthy,
                leader,
                error,
            });
        }
        Ok(out)
    }
}

impl EtcdStore {
    /// Which of the leases a refused batch named is gone (etcd does not say).
    async fn missing_lease(&self, writes: &[Write]) -> LeaseId {
        let leases: Vec<LeaseId> = writes.iter().filter_map(|w| w.lease).collect();
        for &lease in &leases {
            let gone = self
                .read("lease ttl", |mut c| async move {
                    c.lease_time_to_live(lease.0, None).await
                })
                .await
                .ok()
                .and_then(Result::ok)
                .is_none_or(|r| r.ttl() < 0);
            if gone {
                return lease;
            }
        }
        leases.first().copied().unwrap_or(LeaseId(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(
            EtcdStore::parse_url("etcd://127.0.0.1:2379,10.0.0.2:2379").expect("ok"),
            vec!["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert!(EtcdStore::parse_url("etcd://").is_err());
        assert!(EtcdStore::parse_url("etcd://host").is_err());
        assert!(EtcdStore::parse_url("http://host:1").is_err());
    }

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"/fogd/"), b"/fogd0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
