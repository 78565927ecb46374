//! # fog-orchestrator — long-running operations as persisted step machines
//!
//! The API hands every mutating request to the [`Orchestrator`]. Accepting a request is one
//! atomic store batch: the resource record (marked busy with the operation's id) and the
//! [`OperationRecord`] are written together, or neither is. A runner task then executes
//! the operation's steps ([`steps`]); after each step it rewrites the operation record with
//! the next step's name (compare-and-swap on its revision, so two runners can never drive
//! one operation). Every step is idempotent, so after a crash [`Orchestrator::reconcile`]
//! simply resumes each unfinished operation at the step it recorded.
//!
//! The orchestrator reaches PostgreSQL only through [`fog_engine::InstanceAgent`], and
//! every server command carries the instance's fencing generation.
//!
//! Layout: [`engine`] (the framework: what an operation is, the runner that drives,
//! persists, retries and undoes it, the sweep that leaves nothing undriven or busy),
//! `ops` (the operations, one type each, registered in `ops::registry`), [`steps`] (step
//! names for callers outside the engine), [`catalog`] (store keys and typed reads),
//! [`secrets`] (the credentials fogd keeps, sealed at rest under a key kept apart from the
//! store), [`migrate`] (records of older fogds, moved at start-up), `submit` (validation
//! against stored state and the accepting batch), [`health`]
//! (the monitor), `supervisor` (servers that should run, run), [`failpoint`] (crash
//! injection for tests).

pub mod catalog;
pub mod cluster;
pub mod engine;
pub mod failpoint;
pub mod health;
pub mod migrate;
mod ops;
pub mod resource_groups;
pub mod secrets;
pub mod steps;
mod submit;
mod submit_group;
mod supervisor;

pub use engine::sweep;

pub use submit::DatabaseCreate;
pub use submit_group::GroupAddress;

use fog_engine::{InstanceAgent, ServerSpec};
use fog_model::{ArmError, InstanceRecord};
use fog_store::{Store, StoreError};
use secrets::SecretCipher;
use std::path::PathBuf;
use std::sync::Arc;

/// Settings of the orchestrator.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// Directory under which each instance's server directory lives.
    pub servers_dir: PathBuf,
    /// Address the PostgreSQL servers listen on and clients connect to.
    pub server_host: String,
    /// Inclusive port range for servers; `None` lets the OS pick free ports.
    pub port_range: Option<(u16, u16)>,
    /// How often a failing step is tried before the operation fails.
    pub step_attempts: u32,
    /// Address failover-group listeners bind to.
    pub listener_host: String,
    /// Inclusive port range for listeners; `None` lets the OS pick free ports.
    pub listener_ports: Option<(u16, u16)>,
    /// Smallest accepted `failoverWithDataLossGracePeriodMinutes` (Azure: 60).
    pub min_grace_minutes: i64,
    /// How long a planned failover waits for the old primary to stop and for the new one
    /// to replay its final WAL before giving up (`PlannedFailoverTimedOut`, group unchanged).
    pub planned_failover_timeout: std::time::Duration,
    /// How often the health monitor probes every group's members.
    pub probe_interval: std::time::Duration,
    /// How long one probe of one server may take before it counts as failed.
    pub probe_timeout: std::time::Duration,
    /// How long one minute of `failoverWithDataLossGracePeriodMinutes` lasts. Sixty seconds
    /// in production; tests and demos shorten it so an automatic failover is seconds away.
    pub grace_period_unit: std::time::Duration,
    /// How often fogd retries re-attaching a former primary that could not rejoin.
    pub rejoin_retry_interval: std::time::Duration,
    /// How long fogd waits before starting a server that stopped by itself; doubled after
    /// each failed start, up to a minute.
    pub restart_backoff: std::time::Duration,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            servers_dir: PathBuf::from("instances"),
            server_host: "127.0.0.1".into(),
            port_range: None,
            step_attempts: 3,
            listener_host: "127.0.0.1".into(),
            listener_ports: None,
            min_grace_minutes: 60,
            planned_failover_timeout: std::time::Duration::from_secs(30),
            probe_interval: std::time::Duration::from_secs(1),
            probe_timeout: std::time::Duration::from_secs(2),
            grace_period_unit: std::time::Duration::from_secs(60),
            rejoin_retry_interval: std::time::Duration::from_secs(5),
            restart_backoff: std::time::Duration::from_secs(1),
        }
    }
}

/// Runs long-running operations against the store and the instance agent.
#[derive(Clone)]
pub struct Orchestrator {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) agent: Arc<dyn InstanceAgent>,
    /// Seals and opens `secrets/{uid}` (see [`secrets`]).
    pub(crate) secrets: Arc<SecretCipher>,
    pub(crate) config: Arc<OrchestratorConfig>,
    /// Serialises port choice with the batch that records it.
    pub(crate) port_lock: Arc<tokio::sync::Mutex<()>>,
    /// When the health monitor last started a rejoin, per group uid.
    pub(crate) rejoin_attempts:
        Arc<std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>>,
    /// Repairs of a stalled secondary started since it last streamed, per group: the
    /// second one re-seeds instead of rewinding (per group uid).
    pub(crate) repairs: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
    /// Restarts of servers that stopped by themselves ([`supervisor`]).
    pub(crate) restarts: Arc<std::sync::Mutex<supervisor::Restarts>>,
    /// Operations a runner task of this process drives now ([`sweep`]).
    pub(crate) runners: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Step boundaries seam for in-process engine tests ([`failpoint::StepHook`]).
    pub(crate) hook: Option<Arc<dyn failpoint::StepHook>>,
    /// Maps a persisted action to its operation type (the engine never names one).
    pub(crate) registry: engine::Registry,
    /// Set once fogd stops its servers: the supervisor starts none any more.
    pub(crate) stopping: Arc<std::sync::atomic::AtomicBool>,
    /// This process as a node of a cluster sharing the store (`None`: the one-process
    /// default, which owns everything locally). See [`cluster`].
    pub(crate) node: Option<Arc<cluster::Node>>,
    /// Whether this node ran the cluster-wide duties at its last look (for logging).
    pub(crate) leading: Arc<std::sync::atomic::AtomicBool>,
}

pub(crate) fn store_err(e: StoreError) -> ArmError {
    tracing::error!(error = %e, "store failure");
    ArmError::internal("the metadata store failed")
}

impl Orchestrator {
    /// `secrets` is the cipher of the store's credential records: the one
    /// [`secrets::unlock`] returned for this store.
    pub fn new(
        store: Arc<dyn Store>,
        agent: Arc<dyn InstanceAgent>,
        secrets: SecretCipher,
        config: OrchestratorConfig,
    ) -> Self {
        Self {
            store,
            agent,
            secrets: Arc::new(secrets),
            config: Arc::new(config),
            port_lock: Arc::new(tokio::sync::Mutex::new(())),
            rejoin_attempts: Arc::default(),
            repairs: Arc::default(),
            restarts: Arc::default(),
            runners: Arc::default(),
            hook: None,
            registry: ops::registry,
            stopping: Arc::default(),
            node: None,
            leading: Arc::default(),
        }
    }

    /// The same orchestrator as one node of a cluster: operations are driven only while
    /// this node owns them, and the health monitor, the supervisor and the sweep's
    /// releases run only on the node that owns [`cluster::MONITOR_KEY`].
    pub fn with_node(mut self, node: Arc<cluster::Node>) -> Self {
        self.node = Some(node);
        self
    }

    /// This process's node, on a cluster.
    pub fn node(&self) -> Option<&Arc<cluster::Node>> {
        self.node.as_ref()
    }

    /// Whether this process runs the cluster-wide duties now (the health monitor, the
    /// supervisor, the sweep's releases): always without a cluster; on a cluster only while
    /// it holds [`cluster::MONITOR_KEY`] (claimed here when it is free).
    pub async fn leads(&self) -> bool {
        let Some(node) = &self.node else {
            return true;
        };
        match node.hold_or_claim(cluster::MONITOR_KEY).await {
            Ok(Some(_)) => {
                if !self.leading.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    tracing::warn!(node = node.name(), "this node now runs the health monitor, the automatic-failover decisions and the supervisor");
                }
                true
            }
            Ok(None) => {
                if self
                    .leading
                    .swap(false, std::sync::atomic::Ordering::SeqCst)
                {
                    tracing::warn!(
                        node = node.name(),
                        "another node runs the health monitor now"
                    );
                }
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell which node runs the health monitor");
                false
            }
        }
    }

    /// The same orchestrator with a step hook (engine tests: crash a runner at a step
    /// boundary; see [`failpoint::StepHook`]).
    pub fn with_step_hook(mut self, hook: Arc<dyn failpoint::StepHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &OrchestratorConfig {
        &self.config
    }

    /// The agent address of an instance's server.
    pub(crate) async fn server_spec(&self, rec: &InstanceRecord) -> Result<ServerSpec, ArmError> {
        let secret = catalog::secret(self.store.as_ref(), &self.secrets, &rec.uid)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ArmError::internal("the instance's credentials are missing"))?;
        Ok(ServerSpec {
            uid: rec.uid.clone(),
            region: rec.location.clone(),
            dir: self.config.servers_dir.join(&rec.uid),
            host: rec.endpoint.host.clone(),
            port: rec.endpoint.port,
            superuser_password: secret.superuser_password,
        })
    }

    /// Start-up reconciliation: resume every unfinished operation from its recorded step,
    /// and start (in the background) every server that should be running. Returns how many
    /// operations resumed.
    pub async fn reconcile(&self) -> Result<usize, ArmError> {
        let ops = fog_store::typed::list::<fog_model::OperationRecord>(
            self.store.as_ref(),
            "operations/",
        )
        .await
        .map_err(store_err)?;
        let mut resumed = 0;
        for (_, op) in ops {
            if !op.value.status.is_terminal() {
                tracing::info!(operation = %op.value.id, step = %op.value.step, "resuming operation");
                self.resume(op.value.id.clone());
                resumed += 1;
            }
        }
        // Servers that should run are started in the background, each on its own: a server
        // that cannot start delays nothing else (the API, the listeners, other groups).
        let o = self.clone();
        tokio::spawn(async move {
            if o.leads().await {
                o.supervise(true).await
            }
        });
        Ok(resumed)
    }

    /// Stops every server fogd runs (clean shutdown of the embedded region).
    pub async fn stop_all_servers(&self) {
        // First, so that no restart races the stops below.
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let Ok(instances) = catalog::all_instances(self.store.as_ref()).await else {
            return;
        };
        let mut tasks = Vec::new();
        for inst in instances {
            let Ok(spec) = self.server_spec(&inst.value).await else {
                continue;
            };
            let agent = self.agent.clone();
            let generation = inst.value.generation;
            tasks.push(tokio::spawn(async move {
                if let Err(e) = agent.stop(&spec, generation).await {
                    tracing::warn!(uid = %spec.uid, error = %e, "stop on shutdown failed");
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}
