//! The replication observer: what PostgreSQL says about each group, written to the store.
//!
//! Every interval it asks both members of every established group for their replication
//! status (bounded by a timeout, so a hung server cannot stall it) and records an
//! [`ObservedGroup`] under `observed/failover-groups/{name}` when something changed. The
//! API reports `replicationState` from it and the listeners route read-only traffic by it;
//! neither ever queries PostgreSQL itself.

use crate::{catalog, Orchestrator};
use fog_model::failover_group::{ObservedGroup, ReplicationState};
use fog_store::typed::put;
use fog_store::Precondition;
use std::time::Duration;

impl Orchestrator {
    /// Observes every group once.
    pub async fn observe_groups(&self, probe_timeout: Duration) {
        let store = self.store.as_ref();
        let Ok(groups) = catalog::groups(store).await else {
            return;
        };
        for g in groups {
            let g = g.value;
            if g.active_operation.is_some()
                || matches!(
                    g.replication_state,
                    ReplicationState::Pending | ReplicationState::Seeding
                )
            {
                continue;
            }
            let status = |id: fog_model::ManagedInstanceId| async move {
                let inst = catalog::instance(store, &id).await.ok().flatten()?;
                let spec = self.server_spec(&inst.value).await.ok()?;
                tokio::time::timeout(probe_timeout, self.agent.replication_status(&spec))
                    .await
                    .ok()?
                    .ok()
            };
            let primary = status(g.primary.instance.clone()).await;
            let secondary = status(g.secondary.instance.clone()).await;
            let streaming = secondary.as_ref().is_some_and(|s| {
                s.in_recovery && s.receiver_status.as_deref() == Some("streaming")
            });
            let observed = ObservedGroup {
                replication_state: if streaming {
                    ReplicationState::CatchUp
                } else {
                    ReplicationState::Suspended
                },
                primary_available: primary.is_some_and(|p| !p.in_recovery),
                secondary_available: secondary.is_some(),
                generation: g.generation,
            };
            let before = catalog::observed(store, &g.name).await.ok().flatten();
            if before.as_ref() != Some(&observed) {
                tracing::info!(group = %g.name, state = observed.replication_state.as_str(),
                    primary_available = observed.primary_available,
                    secondary_available = observed.secondary_available, "group observation changed");
                let w = put(catalog::observed_key(&g.name), &observed, Precondition::Any);
                if let Err(e) = store.commit(vec![w]).await {
                    tracing::warn!(error = %e, "recording an observation failed");
                }
            }
        }
    }

    /// Runs [`Orchestrator::observe_groups`] forever at `interval`.
    pub async fn run_observer(self, interval: Duration, probe_timeout: Duration) {
        loop {
            self.observe_groups(probe_timeout).await;
            tokio::time::sleep(interval).await;
        }
    }
}
