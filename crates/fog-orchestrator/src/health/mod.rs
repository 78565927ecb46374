//! The health monitor: probes both members of every group, keeps what it saw in the store,
//! and acts on it.
//!
//! Every `probe_interval` it probes each established group's primary (a real connection
//! and a heartbeat write) and secondary (a connection and its replication status), each
//! bounded by `probe_timeout`, so a hung server cannot stall it and the API never waits for
//! it. It records an [`InstanceHealth`] per instance and an [`ObservedGroup`] per group
//! (replication state, lag in bytes and time, last time in sync, health of each side, a
//! running countdown), appends [`GroupEvent`]s when something changes, and publishes
//! metrics. The API and the listeners read only these records; neither queries PostgreSQL.
//!
//! It acts in two ways, both through ordinary persisted operations:
//! - **Automatic failover**: with `failoverPolicy: Automatic`, once the primary has been
//!   unavailable without interruption for the grace period ([`automatic_decision`]), it
//!   starts a forced failover — the API's code path, with its fencing and loss report.
//! - **Rejoin**: a former primary that could not be re-attached (or that came back by
//!   itself, writable, on its old timeline) is fenced, rewound and re-attached.
//!
//! What a round of probes *means* is decided by a pure function, [`assess`] (in
//! `assess.rs`, table-tested round by round); this module does the I/O around it: probing,
//! recording, publishing metrics and starting operations.
//!
//! Every decision is committed with a check on the group record's revision, so a monitor
//! working from a stale read changes nothing.

mod assess;

use crate::submit_group::GroupAddress;
use crate::{catalog, Orchestrator};
use fog_model::failover_group::ReplicationState;
use fog_model::health::{EventKind, GroupEvent, Health, InstanceHealth, ObservedGroup};
use fog_model::{Action, FailoverGroupRecord, ManagedInstanceId};
use fog_store::typed::{put, Versioned};
use fog_store::{Precondition, Write};
use std::time::Duration;
use time::OffsetDateTime;

pub use assess::{assess, automatic_decision, Assessment, AutoDecision, MemberProbe, Next, Timing};

fn secs(d: time::Duration) -> f64 {
    d.as_seconds_f64().max(0.0)
}

impl Orchestrator {
    async fn probe_member(&self, id: &ManagedInstanceId, write: bool) -> MemberProbe {
        let store = self.store.as_ref();
        let inst = match catalog::instance(store, id).await {
            Ok(Some(i)) => i.value,
            _ => {
                return MemberProbe {
                    probe: None,
                    error: Some("instance record missing".into()),
                    port: None,
                    timed_out: false,
                }
            }
        };
        let port = Some(inst.endpoint.port);
        let spec = match self.server_spec(&inst).await {
            Ok(s) => s,
            Err(e) => {
                return MemberProbe {
                    probe: None,
                    error: Some(e.message),
                    port,
                    timed_out: false,
                }
            }
        };
        match tokio::time::timeout(self.config.probe_timeout, self.agent.probe(&spec, write)).await
        {
            Ok(Ok(p)) => MemberProbe {
                probe: Some(p),
                error: None,
                port,
                timed_out: false,
            },
            Ok(Err(e)) => MemberProbe {
                probe: None,
                error: Some(e.to_string()),
                port,
                timed_out: false,
            },
            Err(_) => MemberProbe {
                probe: None,
                error: Some(format!(
                    "probe timed out after {} ms",
                    self.config.probe_timeout.as_millis()
                )),
                port,
                timed_out: true,
            },
        }
    }

    /// Observes every group once and acts on what it saw. Returns the earliest time at
    /// which a running countdown ends, so the monitor can look again exactly then.
    pub async fn observe_groups(&self) -> Option<OffsetDateTime> {
        let Ok(groups) = catalog::groups(self.store.as_ref()).await else {
            return None;
        };
        let mut all = tokio::task::JoinSet::new();
        for g in groups {
            let o = self.clone();
            all.spawn(async move { o.observe_group(g).await });
        }
        let mut earliest: Option<OffsetDateTime> = None;
        while let Some(due) = all.join_next().await {
            if let Ok(Some(d)) = due {
                earliest = Some(earliest.map_or(d, |e| e.min(d)));
            }
        }
        earliest
    }

    /// Observes one group; returns when its automatic-failover countdown ends, if one runs.
    async fn observe_group(&self, group: Versioned<FailoverGroupRecord>) -> Option<OffsetDateTime> {
        let g = &group.value;
        let store = self.store.as_ref();
        if g.active_operation.is_some()
            || matches!(
                g.replication_state,
                ReplicationState::Pending | ReplicationState::Seeding
            )
        {
            return None;
        }
        let (p, s) = tokio::join!(
            self.probe_member(&g.primary.instance, true),
            self.probe_member(&g.secondary.instance, false)
        );
        let now = OffsetDateTime::now_utc();
        let previous = catalog::observed(store, &g.uid).await.ok().flatten();
        let timing = Timing {
            probe_interval: self.config.probe_interval,
            probe_timeout: self.config.probe_timeout,
            grace_period_unit: self.config.grace_period_unit,
            repair_after: self.repair_after(),
        };
        let Some(Assessment {
            observed,
            events,
            decision,
            next,
        }) = assess(g, previous.as_ref(), &p, &s, now, &timing)
        else {
            tracing::warn!(group = %g.name, "both members' probes timed out; treating the round as inconclusive (fogd may be overloaded)");
            return previous
                .filter(|b| b.generation == g.generation)
                .and_then(|b| b.countdown.map(|c| c.due));
        };
        let gen = g.generation;
        let sname = &g.secondary.instance.name;
        self.publish_metrics(g, &observed);
        let mut writes = vec![
            Write::check(catalog::group_key(&g.uid), group.revision),
            put(catalog::observed_key(&g.uid), &observed, Precondition::Any),
        ];
        for (member, m, probed) in [
            (&g.primary, &observed.primary, &p),
            (&g.secondary, &observed.secondary, &s),
        ] {
            let uid = &member.uid;
            let rec = InstanceHealth {
                instance: member.instance.name.clone(),
                status: m.status,
                since: m.since,
                last_ok: if probed.probe.is_some() {
                    Some(now)
                } else {
                    catalog::instance_health(store, uid)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|h| h.last_ok)
                },
                last_error: probed.error.clone(),
                in_recovery: probed.probe.as_ref().map(|x| x.in_recovery),
                writable: probed.probe.as_ref().map(|x| !x.in_recovery && x.wrote),
            };
            writes.push(put(
                catalog::instance_health_key(uid),
                &rec,
                Precondition::Any,
            ));
        }
        for e in &events {
            tracing::info!(group = %g.name, kind = ?e.kind, "{}", e.message);
            writes.push(catalog::event_write(&g.uid, e));
        }
        if let Err(e) = store.commit(writes).await {
            // The group changed while we probed: this observation is stale; the next one
            // will be made against the new record.
            tracing::debug!(group = %g.name, error = %e, "observation not recorded");
            return None;
        }
        if !events.is_empty() {
            if let Err(e) = catalog::prune_events(store, &g.uid).await {
                tracing::warn!(group = %g.name, error = %e, "pruning old events failed");
            }
        }

        let streaming = observed.replication_state == ReplicationState::CatchUp;
        match next {
            Next::Nothing => {}
            Next::Failover { reason } => {
                self.start_automatic_failover(group.clone(), reason).await;
                return None;
            }
            Next::Rejoin { stale_primary } => {
                self.maybe_start_rejoin(group.clone(), stale_primary, false)
                    .await;
            }
            Next::Repair { stalled_since } => {
                // A repair that already failed to make it stream: re-seed this time.
                let reseed = self
                    .repairs
                    .lock()
                    .map(|r| r.get(&g.uid).copied().unwrap_or(0) > 0)
                    .unwrap_or(false);
                if self.maybe_start_rejoin(group.clone(), false, reseed).await {
                    if let Ok(mut r) = self.repairs.lock() {
                        *r.entry(g.uid.clone()).or_default() += 1;
                    }
                    let how = if reseed {
                        "re-seeding"
                    } else {
                        "rewinding and re-attaching"
                    };
                    let event = GroupEvent::new(
                        EventKind::SecondaryRepairStarted,
                        gen,
                        format!(
                            "secondary {sname} has not streamed from the primary since {}: {how} it",
                            fog_model::health::rfc3339(stalled_since)
                        ),
                    );
                    tracing::warn!(group = %g.name, "{}", event.message);
                    if let Err(e) = store
                        .commit(vec![catalog::event_write(&g.uid, &event)])
                        .await
                    {
                        tracing::warn!(group = %g.name, error = %e, "recording an event failed");
                    }
                }
            }
        }
        if streaming {
            if let Ok(mut r) = self.repairs.lock() {
                r.remove(&g.uid);
            }
        }
        match decision {
            AutoDecision::Countdown(c) => Some(c.due),
            _ => None,
        }
    }

    async fn start_automatic_failover(
        &self,
        group: Versioned<FailoverGroupRecord>,
        reason: String,
    ) {
        let g = group.value.clone();
        let addr = GroupAddress {
            scope: g.secondary.instance.scope.clone(),
            location: g.secondary.location_label.clone(),
        };
        let event = GroupEvent::new(
            EventKind::AutomaticFailoverTriggered,
            g.generation,
            reason.clone(),
        );
        let action = Action::FailoverGroup {
            name: g.name.clone(),
            uid: g.uid.clone(),
            planned: false,
            automatic: Some(reason.clone()),
        };
        match self
            .start_group_operation(
                g.clone(),
                group.revision,
                &addr,
                fog_model::api_version::LATEST_STABLE,
                action,
                vec![catalog::event_write(&g.uid, &event)],
            )
            .await
        {
            Ok(op) => {
                tracing::warn!(group = %g.name, operation = %op.id, "{reason}");
                metrics::counter!("fogd_automatic_failovers_total", "group" => g.name.clone(), "dns_zone" => g.dns_zone.clone())
                    .increment(1);
            }
            Err(e) => {
                tracing::warn!(group = %g.name, error = %e.message, "automatic failover not started")
            }
        }
    }

    /// Starts re-attaching a former primary when it can succeed: at once if it runs writable
    /// (it must be stopped), otherwise when its data is there, at most every
    /// `rejoin_retry_interval`.
    ///
    /// Returns whether a rejoin operation started.
    async fn maybe_start_rejoin(
        &self,
        group: Versioned<FailoverGroupRecord>,
        stale_primary: bool,
        reseed: bool,
    ) -> bool {
        let g = group.value.clone();
        let due = {
            let Ok(mut last) = self.rejoin_attempts.lock() else {
                return false;
            };
            let now = tokio::time::Instant::now();
            let ready = stale_primary
                || last
                    .get(&g.uid)
                    .is_none_or(|t| now.duration_since(*t) >= self.config.rejoin_retry_interval);
            if ready {
                last.insert(g.uid.clone(), now);
            }
            ready
        };
        if !due {
            return false;
        }
        if !stale_primary {
            let Ok(Some(inst)) =
                catalog::instance(self.store.as_ref(), &g.secondary.instance).await
            else {
                return false;
            };
            let Ok(spec) = self.server_spec(&inst.value).await else {
                return false;
            };
            match self.agent.status(&spec).await {
                Ok(st) if st.has_data => {}
                _ => return false,
            }
        }
        let mut g2 = g.clone();
        g2.secondary_needs_rejoin = true;
        let addr = GroupAddress {
            scope: g.secondary.instance.scope.clone(),
            location: g.secondary.location_label.clone(),
        };
        match self
            .start_group_operation(
                g2,
                group.revision,
                &addr,
                fog_model::api_version::LATEST_STABLE,
                Action::RejoinGroup {
                    name: g.name.clone(),
                    uid: g.uid.clone(),
                    reseed,
                },
                vec![],
            )
            .await
        {
            Ok(op) => {
                tracing::info!(group = %g.name, operation = %op.id, reseed, "re-attaching the secondary");
                true
            }
            Err(e) => {
                tracing::debug!(group = %g.name, error = %e.message, "rejoin not started");
                false
            }
        }
    }

    /// How long a standby may go without streaming from an available primary before fogd
    /// repairs it: long enough for a restarting WAL receiver, a few probes, and the retry
    /// interval of rejoins.
    fn repair_after(&self) -> time::Duration {
        let d = (self.config.probe_interval * 5 + self.config.probe_timeout * 2)
            .max(self.config.rejoin_retry_interval);
        time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
    }

    /// Publishes a group's gauges, labelled by its name and DNS zone (`{name}.{zone}` is
    /// the group's DNS record: two groups may share a name, never both).
    fn publish_metrics(&self, g: &FailoverGroupRecord, o: &ObservedGroup) {
        let group = g.name.clone();
        let zone = g.dns_zone.clone();
        metrics::gauge!("fogd_group_replicating", "group" => group.clone(), "dns_zone" => zone.clone()).set(
            if o.replication_state == ReplicationState::CatchUp {
                1.0
            } else {
                0.0
            },
        );
        if let Some(b) = o.lag_bytes {
            metrics::gauge!("fogd_group_replication_lag_bytes", "group" => group.clone(), "dns_zone" => zone.clone())
                .set(b as f64);
        }
        if let Some(ms) = o.lag_ms {
            metrics::gauge!("fogd_group_replication_lag_seconds", "group" => group.clone(), "dns_zone" => zone.clone())
                .set(ms as f64 / 1000.0);
        }
        metrics::gauge!("fogd_group_generation", "group" => group.clone(), "dns_zone" => zone.clone())
            .set(g.generation as f64);
        for (member, role, health) in [
            (&g.primary, "primary", &o.primary),
            (&g.secondary, "secondary", &o.secondary),
        ] {
            let instance = member.instance.name.clone();
            metrics::gauge!("fogd_group_member_is_primary", "group" => group.clone(), "instance" => instance.clone(), "dns_zone" => zone.clone())
                .set(if role == "primary" { 1.0 } else { 0.0 });
            metrics::gauge!("fogd_group_member_healthy", "group" => group.clone(), "instance" => instance, "dns_zone" => zone.clone())
                .set(if health.status == Health::Healthy { 1.0 } else { 0.0 });
        }
        let remaining = o
            .countdown
            .as_ref()
            .map(|c| secs(c.due - OffsetDateTime::now_utc()))
            .unwrap_or(0.0);
        metrics::gauge!("fogd_group_automatic_failover_countdown_seconds", "group" => group, "dns_zone" => zone)
            .set(remaining);
    }

    /// Runs [`Orchestrator::observe_groups`] forever at the configured interval.
    ///
    /// Sweeps start at a fixed rate (a slow sweep delays the next one, never stacks them),
    /// and one more sweep runs the moment a countdown ends, so an automatic failover starts
    /// when the grace period expires rather than up to an interval later.
    pub async fn run_health_monitor(self) {
        let mut tick = tokio::time::Instant::now();
        loop {
            // On a cluster only the node that owns the monitor observes and decides.
            let due = if self.leads().await {
                self.observe_groups().await
            } else {
                None
            };
            let now = tokio::time::Instant::now();
            tick = (tick + self.config.probe_interval).max(now);
            let wake = match due.map(|d| d - OffsetDateTime::now_utc()) {
                Some(left) => {
                    let left = Duration::try_from(left).unwrap_or_default();
                    tick.min(now + left + Duration::from_millis(1))
                }
                None => tick,
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}
