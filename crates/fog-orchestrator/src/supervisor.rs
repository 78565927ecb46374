//! The server supervisor: every PostgreSQL server that should run, runs.
//!
//! A server that crashed (or was stopped behind fogd's back) is started again, with an
//! exponential backoff per server (`restart_backoff`, doubling up to
//! [`MAX_BACKOFF`]) so that a server that cannot start costs one failed attempt now and
//! then — and only its own group is affected: every restart runs in its own task, and a
//! pass never waits for one.
//!
//! fogd leaves a server alone while something else decides about it ([`Orchestrator::hands_off`]):
//! an operation on the instance is running, it is a secondary being seeded, a failover is
//! moving away from it, or it is a former primary awaiting its rewind (it must never come
//! back as it was).
//! A restart carries the generation read from the store, so a role change that fenced the
//! server in the meantime refuses it.

use crate::{catalog, Orchestrator};
use fog_model::failover_group::ReplicationState;
use fog_model::health::{EventKind, GroupEvent};
use fog_model::ProvisioningState;
use fog_store::StoreError;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// The longest wait between two restart attempts of one server.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Restart bookkeeping of one server.
#[derive(Debug, Clone)]
pub(crate) struct RestartState {
    /// Consecutive failed or pending attempts.
    failures: u32,
    /// Not before this instant.
    next: Instant,
    /// A restart task runs now.
    running: bool,
}

impl Orchestrator {
    /// Instance keys fogd must not start by itself now: a secondary being seeded, a
    /// primary being failed away from (from the fence on) or, once the roles switched, the
    /// former primary until it is re-attached, and instances with an operation of their
    /// own. (A group operation's other members run as usual: its steps need them.)
    pub(crate) async fn hands_off(&self) -> Result<HashSet<String>, StoreError> {
        let mut keys = HashSet::new();
        for g in catalog::groups(self.store.as_ref()).await? {
            let g = g.value;
            // A secondary being seeded is stopped while its copy runs.
            if matches!(
                g.replication_state,
                ReplicationState::Pending | ReplicationState::Seeding
            ) {
                keys.insert(g.secondary.instance.key());
            }
            match &g.switch {
                Some(s) if s.routed => {
                    keys.insert(g.secondary.instance.key());
                }
                Some(_) => {
                    keys.insert(g.primary.instance.key());
                }
                None => {}
            }
            if g.secondary_needs_rejoin {
                keys.insert(g.secondary.instance.key());
            }
        }
        for inst in catalog::all_instances(self.store.as_ref()).await? {
            if inst.value.active_operation.is_some()
                || inst.value.provisioning_state != ProvisioningState::Succeeded
            {
                keys.insert(inst.value.id.key());
            }
        }
        Ok(keys)
    }

    /// One pass: starts (in the background) every server that should run but does not.
    /// `immediate` skips the first wait (at start-up, servers are expected to be down).
    pub async fn supervise(&self, immediate: bool) {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let (Ok(hands_off), Ok(instances)) = (
            self.hands_off().await,
            catalog::all_instances(self.store.as_ref()).await,
        ) else {
            return;
        };
        let now = Instant::now();
        let mut seen = HashSet::new();
        for inst in instances {
            let rec = inst.value;
            seen.insert(rec.uid.clone());
            if hands_off.contains(&rec.id.key()) {
                continue;
            }
            let Ok(spec) = self.server_spec(&rec).await else {
                continue;
            };
            let status = match self.agent.status(&spec).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(instance = %rec.id, error = %e, "server status unknown");
                    continue;
                }
            };
            if status.running || !status.has_data {
                // Running: forget past failures. No data: nothing to start (a host that is
                // gone); a rejoin or the operator decides.
                if status.running {
                    if let Ok(mut r) = self.restarts.lock() {
                        if r.get(&rec.uid).is_some_and(|s| !s.running) {
                            r.remove(&rec.uid);
                        }
                    }
                }
                continue;
            }
            let attempt = {
                let Ok(mut r) = self.restarts.lock() else {
                    continue;
                };
                let s = r.entry(rec.uid.clone()).or_insert(RestartState {
                    failures: 0,
                    next: if immediate {
                        now
                    } else {
                        now + self.config.restart_backoff
                    },
                    running: false,
                });
                if s.running || now < s.next {
                    None
                } else {
                    s.running = true;
                    Some(s.failures)
                }
            };
            let Some(failures) = attempt else {
                continue;
            };
            let o = self.clone();
            tokio::spawn(async move {
                o.restart_server(rec, spec, failures).await;
            });
        }
        if let Ok(mut r) = self.restarts.lock() {
            r.retain(|uid, _| seen.contains(uid));
        }
    }

    async fn restart_server(
        &self,
        rec: fog_model::InstanceRecord,
        spec: fog_engine::ServerSpec,
        failures: u32,
    ) {
        // Look again just before acting: an operation may have started meanwhile.
        let still_ours = match (
            self.hands_off().await,
            catalog::instance(self.store.as_ref(), &rec.id).await,
        ) {
            (Ok(h), Ok(Some(now))) => {
                !h.contains(&rec.id.key()) && now.value.generation == rec.generation
            }
            _ => false,
        };
        let still_ours = still_ours && !self.stopping.load(std::sync::atomic::Ordering::SeqCst);
        let result = if still_ours {
            Some(self.agent.ensure_running(&spec, rec.generation).await)
        } else {
            None
        };
        let ok = matches!(result, Some(Ok(())) | None);
        if let Ok(mut r) = self.restarts.lock() {
            if let Some(s) = r.get_mut(&rec.uid) {
                s.running = false;
                if ok {
                    s.failures = 0;
                    s.next = Instant::now() + self.config.restart_backoff;
                } else {
                    s.failures = failures + 1;
                    let backoff = self
                        .config
                        .restart_backoff
                        .saturating_mul(1u32 << s.failures.min(16))
                        .min(MAX_BACKOFF);
                    s.next = Instant::now() + backoff;
                }
            }
        }
        let Some(result) = result else {
            return;
        };
        let message = match &result {
            Ok(()) => format!(
                "the server of {} was not running; fogd started it again",
                rec.id.name
            ),
            Err(e) => format!(
                "the server of {} is not running and could not be started (attempt {}): {e}",
                rec.id.name,
                failures + 1
            ),
        };
        match &result {
            Ok(()) => tracing::warn!(instance = %rec.id, "{message}"),
            Err(_) => tracing::error!(instance = %rec.id, "{message}"),
        }
        metrics::counter!("fogd_server_restarts_total", "result" => if result.is_ok() { "ok" } else { "failed" })
            .increment(1);
        // Tell the group's history, once per outage rather than once per failed attempt.
        if let Some(uid) = &rec.failover_group {
            if result.is_ok() || failures == 0 {
                if let Ok(Some(g)) = catalog::group(self.store.as_ref(), uid).await {
                    let event =
                        GroupEvent::new(EventKind::ServerRestarted, g.value.generation, message);
                    if let Err(e) = self
                        .store
                        .commit(vec![catalog::event_write(uid, &event)])
                        .await
                    {
                        tracing::warn!(group = %g.value.name, error = %e, "recording an event failed");
                    }
                }
            }
        }
    }

    /// Runs [`Orchestrator::supervise`] forever, every probe interval.
    pub async fn run_supervisor(self) {
        loop {
            if self.leads().await {
                self.supervise(false).await;
            }
            tokio::time::sleep(self.config.probe_interval).await;
        }
    }
}

/// Restart state per server uid.
pub(crate) type Restarts = HashMap<String, RestartState>;
