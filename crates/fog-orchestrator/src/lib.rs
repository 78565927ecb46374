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
//! Layout: [`catalog`] (store keys and typed reads), [`submit`] (validation against stored
//! state and the accepting batch), [`steps`] (what each operation does per step),
//! [`runner`] (driving, persisting and resuming steps), [`failpoint`] (crash injection for
//! tests, compiled only with the `failpoints` feature).

pub mod catalog;
mod failover;
pub mod failpoint;
mod group_steps;
pub mod health;
mod runner;
pub mod steps;
mod submit;
mod submit_group;

pub use submit::DatabaseCreate;
pub use submit_group::GroupAddress;

use fog_engine::{InstanceAgent, ServerSpec};
use fog_model::{ArmError, InstanceRecord};
use fog_store::{Store, StoreError};
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
        }
    }
}

/// Runs long-running operations against the store and the instance agent.
#[derive(Clone)]
pub struct Orchestrator {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) agent: Arc<dyn InstanceAgent>,
    pub(crate) config: Arc<OrchestratorConfig>,
    /// Serialises port choice with the batch that records it.
    pub(crate) port_lock: Arc<tokio::sync::Mutex<()>>,
    /// When the health monitor last started a rejoin, per group.
    pub(crate) rejoin_attempts:
        Arc<std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>>,
}

pub(crate) fn store_err(e: StoreError) -> ArmError {
    tracing::error!(error = %e, "store failure");
    ArmError::internal("the metadata store failed")
}

impl Orchestrator {
    pub fn new(
        store: Arc<dyn Store>,
        agent: Arc<dyn InstanceAgent>,
        config: OrchestratorConfig,
    ) -> Self {
        Self {
            store,
            agent,
            config: Arc::new(config),
            port_lock: Arc::new(tokio::sync::Mutex::new(())),
            rejoin_attempts: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &OrchestratorConfig {
        &self.config
    }

    /// The agent address of an instance's server.
    pub(crate) async fn server_spec(&self, rec: &InstanceRecord) -> Result<ServerSpec, ArmError> {
        let secret = catalog::secret(self.store.as_ref(), &rec.uid)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ArmError::internal("the instance's credentials are missing"))?;
        Ok(ServerSpec {
            uid: rec.uid.clone(),
            dir: self.config.servers_dir.join(&rec.uid),
            host: rec.endpoint.host.clone(),
            port: rec.endpoint.port,
            superuser_password: secret.superuser_password,
        })
    }

    /// Start-up reconciliation: resume every unfinished operation from its recorded step,
    /// and start every server that should be running. Returns how many operations resumed.
    pub async fn reconcile(&self) -> Result<usize, ArmError> {
        let ops = fog_store::typed::list::<fog_model::OperationRecord>(
            self.store.as_ref(),
            "operations/",
        )
        .await
        .map_err(store_err)?;
        let mut resumed = 0;
        let mut busy = std::collections::HashSet::new();
        for (_, op) in ops {
            if !op.value.status.is_terminal() {
                tracing::info!(operation = %op.value.id, step = %op.value.step, "resuming operation");
                busy.insert(op.value.id.clone());
                self.spawn(op.value.id.clone());
                resumed += 1;
            }
        }
        // Servers that should run are running before the API answers: start them all at
        // once and wait (each start is bounded by pg_ctl's own timeout).
        // A primary being failed away from must not come back by itself (the resumed
        // failover decides), and a former primary awaiting its rewind must never start as
        // it is. Every other server that should run, runs.
        let mut hands_off = std::collections::HashSet::new();
        for g in catalog::groups(self.store.as_ref())
            .await
            .map_err(store_err)?
        {
            let g = g.value;
            match &g.switch {
                Some(s) if s.routed => {
                    hands_off.insert(g.secondary.instance.key());
                }
                Some(_) => {
                    hands_off.insert(g.primary.instance.key());
                }
                None => {}
            }
            if g.secondary_needs_rejoin {
                hands_off.insert(g.secondary.instance.key());
            }
        }
        let mut starts = tokio::task::JoinSet::new();
        for inst in catalog::all_instances(self.store.as_ref())
            .await
            .map_err(store_err)?
        {
            let rec = inst.value;
            if rec
                .active_operation
                .as_ref()
                .is_some_and(|o| busy.contains(o))
                || hands_off.contains(&rec.id.key())
            {
                continue;
            }
            let spec = self.server_spec(&rec).await?;
            let agent = self.agent.clone();
            starts.spawn(async move {
                if let Err(e) = agent.ensure_running(&spec, rec.generation).await {
                    tracing::error!(instance = %rec.id, error = %e, "could not start server during reconcile");
                }
            });
        }
        while starts.join_next().await.is_some() {}
        Ok(resumed)
    }

    /// Stops every server fogd runs (clean shutdown of the embedded region).
    pub async fn stop_all_servers(&self) {
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
