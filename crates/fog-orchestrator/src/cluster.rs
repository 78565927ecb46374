//! Several fogd nodes on one store: node records, leases and lease-bound ownership.
//!
//! A node ([`Node`]) keeps one store lease alive ([`Node::run_keepalive`]) and registers
//! `nodes/{name}` ([`NodeRecord`]: API URL, listener host, region, start time) bound to it.
//! Whatever a node drives it first **owns**: a key under `owners/` written with an
//! `Absent` precondition and bound to the node's lease ([`Node::claim`]). The key's
//! revision is the proof of ownership: every step commit of an operation compares it in
//! the same store transaction ([`Ownership::check`]), so a node that lost its lease (it
//! died, was paused, or was cut off for longer than the TTL) cannot commit anything for what
//! it owned: its key is gone, or another node's key has taken its place.
//!
//! Keys:
//! - `owners/operations/{id}`: the node whose runner drives operation `id`;
//! - `owners/monitor`: the node that runs the health monitor, the automatic-failover
//!   decisions, the server supervisor and the sweep's undo and release duties.
//!
//! The one-process stores (SQLite, memory) run without a [`Node`]: the orchestrator then
//! owns everything locally and nothing here is used.

use fog_store::typed::put;
use fog_store::{LeaseId, Precondition, Store, StoreError, Write};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Store prefix of node records.
pub const NODES_PREFIX: &str = "nodes/";
/// Store prefix of ownership keys.
pub const OWNERS_PREFIX: &str = "owners/";
/// The key of the health monitor's owner.
pub const MONITOR_KEY: &str = "owners/monitor";

/// The ownership key of operation `id`.
pub fn operation_owner_key(id: &str) -> String {
    format!("owners/operations/{id}")
}

/// `nodes/{name}`: one running node, bound to its lease (gone within a TTL of its death).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub name: String,
    /// The node's HTTPS API base URL.
    pub api_url: String,
    /// The address this node's failover-group listeners bind to.
    pub listener_host: String,
    /// The region whose servers this node's agent runs (empty: every region, as today).
    pub region: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The lease the record is bound to (hex), as of the last registration.
    pub lease: String,
    /// The lease's TTL in milliseconds.
    pub lease_ttl_ms: u64,
}

/// The value of an ownership key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OwnerRecord {
    pub node: String,
    /// The owner's lease (hex): a node that renewed under a new lease owns nothing it
    /// claimed under the old one.
    pub lease: String,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
}

impl fog_store::typed::Persisted for NodeRecord {
    const FORMAT: u32 = 1;
}

impl fog_store::typed::Persisted for OwnerRecord {
    const FORMAT: u32 = 1;
}

/// Proof that this node holds an ownership key: the key and the revision its claim wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    pub key: String,
    pub revision: u64,
}

impl Ownership {
    /// The compare every commit made under this ownership carries.
    pub fn check(&self) -> Write {
        Write::check(self.key.clone(), self.revision)
    }
}

/// This process as one node of a cluster.
pub struct Node {
    store: Arc<dyn Store>,
    name: String,
    ttl: Duration,
    record: Mutex<NodeRecord>,
    lease: Mutex<LeaseId>,
    /// When the lease was last granted or renewed.
    renewed: Mutex<Instant>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .field("lease", &self.lease())
            .finish()
    }
}

impl Node {
    /// Grants a lease of `ttl` and registers `nodes/{record.name}` bound to it (replacing a
    /// record a previous run of this node left).
    pub async fn join(
        store: Arc<dyn Store>,
        mut record: NodeRecord,
        ttl: Duration,
    ) -> Result<Arc<Node>, StoreError> {
        let lease = store.grant_lease(ttl).await?;
        record.lease = lease.to_string();
        record.lease_ttl_ms = ttl.as_millis() as u64;
        let node = Arc::new(Node {
            store,
            name: record.name.clone(),
            ttl,
            record: Mutex::new(record),
            lease: Mutex::new(lease),
            renewed: Mutex::new(Instant::now()),
        });
        node.register().await?;
        tracing::info!(node = %node.name, lease = %lease, ttl_ms = ttl.as_millis() as u64, "joined the cluster");
        Ok(node)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The lease the node holds now.
    pub fn lease(&self) -> LeaseId {
        self.lease.lock().map(|l| *l).unwrap_or(LeaseId(0))
    }

    /// Whether the lease was renewed within its TTL (else the node may already have lost
    /// everything it owned).
    pub fn is_fresh(&self) -> bool {
        self.renewed
            .lock()
            .map(|r| r.elapsed() < self.ttl)
            .unwrap_or(false)
    }

    async fn register(&self) -> Result<(), StoreError> {
        let lease = self.lease();
        let record = {
            let mut r = self
                .record
                .lock()
                .map_err(|_| StoreError::Backend("node record lock poisoned".into()))?;
            r.lease = lease.to_string();
            r.clone()
        };
        let key = format!("{NODES_PREFIX}{}", self.name);
        self.store
            .commit(vec![put(key, &record, Precondition::Any).with_lease(lease)])
            .await
            .map(|_| ())
    }

    /// Renews the lease every third of its TTL, for ever. A lease that ended (the node was
    /// paused or cut off longer than its TTL) is replaced by a new one and the node record
    /// registered again; everything owned under the old lease stays lost.
    pub async fn run_keepalive(self: Arc<Self>) {
        let period = (self.ttl / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(period).await;
            let lease = self.lease();
            match self.store.keep_alive(lease).await {
                Ok(()) => {
                    if let Ok(mut r) = self.renewed.lock() {
                        *r = Instant::now();
                    }
                }
                Err(StoreError::LeaseNotFound(_)) => {
                    tracing::error!(node = %self.name, lease = %lease, "lease lost (expired while this node was paused or cut off): everything it owned is gone; joining again under a new lease");
                    match self.store.grant_lease(self.ttl).await {
                        Ok(new) => {
                            if let Ok(mut l) = self.lease.lock() {
                                *l = new;
                            }
                            if let Ok(mut r) = self.renewed.lock() {
                                *r = Instant::now();
                            }
                            if let Err(e) = self.register().await {
                                tracing::warn!(node = %self.name, error = %e, "registering the node again failed");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(node = %self.name, error = %e, "granting a new lease failed")
                        }
                    }
                }
                Err(e) => tracing::warn!(node = %self.name, error = %e, "lease renewal failed"),
            }
        }
    }

    fn owner_value(&self, lease: LeaseId) -> OwnerRecord {
        OwnerRecord {
            node: self.name.clone(),
            lease: lease.to_string(),
            since: OffsetDateTime::now_utc(),
        }
    }

    /// Claims `key` for this node (only if nobody holds it). `Ok(None)`: another node does.
    pub async fn claim(&self, key: &str) -> Result<Option<Ownership>, StoreError> {
        let lease = self.lease();
        let w = put(
            key.to_string(),
            &self.owner_value(lease),
            Precondition::Absent,
        )
        .with_lease(lease);
        match self.store.commit(vec![w]).await {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
        // The claim's own revision (a read after the write: if it is already gone or
        // someone else's, the claim did not last).
        self.holds(key).await
    }

    /// `Some` if `key` is held by this node under its current lease.
    pub async fn holds(&self, key: &str) -> Result<Option<Ownership>, StoreError> {
        let Some(rec) = fog_store::typed::get::<OwnerRecord>(self.store.as_ref(), key).await?
        else {
            return Ok(None);
        };
        let lease = self.lease().to_string();
        Ok(
            (rec.value.node == self.name && rec.value.lease == lease).then(|| Ownership {
                key: key.to_string(),
                revision: rec.revision,
            }),
        )
    }

    /// Holds `key` if this node already does, else claims it if it is free.
    pub async fn hold_or_claim(&self, key: &str) -> Result<Option<Ownership>, StoreError> {
        match self.holds(key).await? {
            Some(o) => Ok(Some(o)),
            None => self.claim(key).await,
        }
    }

    /// Gives `ownership` up (nothing happens if it was lost already).
    pub async fn release(&self, ownership: &Ownership) {
        let w = Write::delete(
            ownership.key.clone(),
            Precondition::Revision(ownership.revision),
        );
        if let Err(e) = self.store.commit(vec![w]).await {
            tracing::debug!(key = %ownership.key, error = %e, "releasing ownership");
        }
    }
}

/// What `GET /cluster` answers (`fogctl cluster status`): the answering node, every node
/// record with its lease, every ownership key and the store's members with their health.
pub async fn status(
    store: &dyn Store,
    this: Option<&Node>,
) -> Result<serde_json::Value, StoreError> {
    let (nodes, owners) = snapshot(store).await?;
    let members = store.members().await?;
    Ok(serde_json::json!({
        "node": this.map(|n| n.name()),
        "nodes": nodes,
        "owners": owners
            .into_iter()
            .map(|(key, o)| serde_json::json!({"key": key, "node": o.node, "lease": o.lease, "since": o.since.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()}))
            .collect::<Vec<_>>(),
        "members": members,
    }))
}

/// Reads every node record and ownership key (for `fogctl cluster status`).
pub async fn snapshot(
    store: &dyn Store,
) -> Result<(Vec<NodeRecord>, Vec<(String, OwnerRecord)>), StoreError> {
    let nodes = fog_store::typed::list::<NodeRecord>(store, NODES_PREFIX)
        .await?
        .into_iter()
        .map(|(_, v)| v.value)
        .collect();
    let owners = fog_store::typed::list::<OwnerRecord>(store, OWNERS_PREFIX)
        .await?
        .into_iter()
        .map(|(k, v)| (k, v.value))
        .collect();
    Ok((nodes, owners))
}
