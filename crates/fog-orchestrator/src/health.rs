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
//! Every decision is committed with a check on the group record's revision, so a monitor
//! working from a stale read changes nothing.

use crate::submit_group::GroupAddress;
use crate::{catalog, Orchestrator};
use fog_engine::{parse_lsn, HealthProbe};
use fog_model::failover_group::{Policies, ReplicationState};
use fog_model::health::{
    Countdown, EventKind, GroupEvent, Health, InstanceHealth, MemberHealth, ObservedGroup,
};
use fog_model::{Action, FailoverGroupRecord, ManagedInstanceId};
use fog_store::typed::{put, Versioned};
use fog_store::{Precondition, Write};
use std::time::Duration;
use time::OffsetDateTime;

/// What the automatic failover policy says to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoDecision {
    /// Nothing: the policy is Manual, or the primary is available.
    Idle,
    /// The primary is unavailable; failover is due at `Countdown::due` unless it recovers.
    Countdown(Countdown),
    /// The grace period has passed: fail over now.
    Failover(Countdown),
    /// The grace period has passed but the secondary cannot take over.
    Blocked(Countdown),
}

/// The automatic failover policy as a pure function: `unavailable_since` is when the
/// primary was first seen unavailable in the current uninterrupted outage; one grace-period
/// minute lasts `unit`.
pub fn automatic_decision(
    policies: &Policies,
    unit: Duration,
    now: OffsetDateTime,
    unavailable_since: Option<OffsetDateTime>,
    secondary_ready: bool,
) -> AutoDecision {
    if policies.read_write != "Automatic" {
        return AutoDecision::Idle;
    }
    let (Some(grace), Some(since)) = (policies.grace_period_minutes, unavailable_since) else {
        return AutoDecision::Idle;
    };
    let grace = unit.saturating_mul(u32::try_from(grace.max(0)).unwrap_or(u32::MAX));
    // A grace period beyond the calendar never ends.
    let Some(due) = time::Duration::try_from(grace)
        .ok()
        .and_then(|g| since.checked_add(g))
    else {
        return AutoDecision::Idle;
    };
    let countdown = Countdown { since, due };
    if now < due {
        AutoDecision::Countdown(countdown)
    } else if secondary_ready {
        AutoDecision::Failover(countdown)
    } else {
        AutoDecision::Blocked(countdown)
    }
}

/// One member's probe outcome.
struct Probed {
    probe: Option<HealthProbe>,
    error: Option<String>,
    /// The port the member's server listens on (from its record).
    port: Option<u16>,
    /// The probe did not answer within `probe_timeout` (as opposed to failing).
    timed_out: bool,
}

fn secs(d: time::Duration) -> f64 {
    d.as_seconds_f64().max(0.0)
}

impl Orchestrator {
    async fn probe_member(&self, id: &ManagedInstanceId, write: bool) -> Probed {
        let store = self.store.as_ref();
        let inst = match catalog::instance(store, id).await {
            Ok(Some(i)) => i.value,
            _ => {
                return Probed {
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
                return Probed {
                    probe: None,
                    error: Some(e.message),
                    port,
                    timed_out: false,
                }
            }
        };
        match tokio::time::timeout(self.config.probe_timeout, self.agent.probe(&spec, write)).await
        {
            Ok(Ok(p)) => Probed {
                probe: Some(p),
                error: None,
                port,
                timed_out: false,
            },
            Ok(Err(e)) => Probed {
                probe: None,
                error: Some(e.to_string()),
                port,
                timed_out: false,
            },
            Err(_) => Probed {
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
        // An observation made under another generation, or so long ago that fogd was not
        // watching in between, says nothing about an *uninterrupted* outage.
        let gap = self.config.probe_interval * 3 + self.config.probe_timeout * 2;
        let previous = catalog::observed(store, &g.name).await.ok().flatten();
        let before = previous.clone().filter(|b| {
            b.generation == g.generation && b.at.is_some_and(|t| secs(now - t) <= gap.as_secs_f64())
        });

        // Both members silent at once, each past its timeout: far more likely fogd itself
        // is starved (CPU, file handles) than two servers in two regions failing in the
        // same second. Such a round says nothing; it is not recorded and moves no countdown.
        if p.timed_out && s.timed_out {
            tracing::warn!(group = %g.name, "both members' probes timed out; treating the round as inconclusive (fogd may be overloaded)");
            return before.and_then(|b| b.countdown.map(|c| c.due));
        }
        // The same generation's previous observation, however old: what was learnt about
        // the secondary's streaming stays true across a gap in watching.
        let same_gen = previous.as_ref().filter(|b| b.generation == g.generation);
        let settle = self.config.probe_interval * 2 + self.config.probe_timeout;
        let settle_t = time::Duration::try_from(settle).unwrap_or(time::Duration::ZERO);

        let primary_ok = p.probe.as_ref().is_some_and(|x| !x.in_recovery && x.wrote);
        let primary_error = match (&p.probe, &p.error) {
            (_, Some(e)) => Some(e.clone()),
            (Some(x), None) if x.in_recovery => Some("the server is a standby".to_string()),
            _ => None,
        };
        let unavailable_since = if primary_ok {
            None
        } else {
            before
                .as_ref()
                .and_then(|b| b.primary_unavailable_since)
                .or(Some(now))
        };
        // A "secondary" that accepts writes is a former primary that came back on its old
        // history: it is never routed to and must be rewound.
        let stale_primary = s.probe.as_ref().is_some_and(|x| !x.in_recovery);
        let standby = s.probe.as_ref().is_some_and(|x| x.in_recovery) && !g.secondary_needs_rejoin;
        // Streaming from *this* group's primary: a receiver connected elsewhere, or one
        // that is starting, waiting or stopping, does not count.
        let streaming = standby
            && s.probe.as_ref().is_some_and(|x| {
                x.receiver_status.as_deref() == Some("streaming")
                    && x.sender_port.is_some()
                    && x.sender_port == p.port
            });
        let streaming_at = if streaming {
            Some(now)
        } else {
            same_gen.and_then(|b| b.secondary_streaming_at)
        };
        // A standby that does not stream while the primary is up falls behind. While the
        // primary is down nobody can stream; a stall that began with the outage is the
        // outage's, one that clearly began before it is the secondary's own.
        let stalled_since = if streaming {
            None
        } else if primary_ok && standby {
            same_gen
                .and_then(|b| b.secondary_stalled_since)
                .or(Some(now))
        } else if let Some(down) = unavailable_since {
            same_gen
                .and_then(|b| b.secondary_stalled_since)
                .filter(|t| *t + settle_t < down)
        } else {
            same_gen.and_then(|b| b.secondary_stalled_since)
        };
        let stalled_for = stalled_since.map(|t| now - t);
        // Healthy: a standby that streams from the primary, or one whose receiver is only
        // restarting (stalled for less than `settle`), or — with the primary down — one
        // that was not known to be behind.
        let secondary_ok = standby && stalled_for.is_none_or(|d| d < settle_t);
        let secondary_error = if stale_primary {
            Some(
                "running writable outside the group (a former primary): fenced, awaiting rewind"
                    .into(),
            )
        } else if g.secondary_needs_rejoin {
            Some(format!(
                "former primary awaiting rejoin{}",
                s.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ))
        } else if standby && !secondary_ok {
            let receiver = s
                .probe
                .as_ref()
                .and_then(|x| x.receiver_status.clone())
                .unwrap_or_else(|| "not running".into());
            Some(format!(
                "not streaming from the primary since {} (WAL receiver: {receiver}); it falls behind and fogd re-attaches it",
                stalled_since.map(fog_model::health::rfc3339).unwrap_or_default()
            ))
        } else {
            s.error.clone()
        };

        let member = |ok: bool, error: Option<String>, prev: Option<&MemberHealth>| {
            let status = if ok {
                Health::Healthy
            } else {
                Health::Unavailable
            };
            let since = match prev {
                Some(m) if m.status == status => m.since,
                _ => Some(now),
            };
            MemberHealth {
                status,
                since,
                last_error: if ok { None } else { error },
            }
        };
        let primary = member(
            primary_ok,
            primary_error,
            before.as_ref().map(|b| &b.primary),
        );
        let secondary = member(
            secondary_ok,
            secondary_error,
            before.as_ref().map(|b| &b.secondary),
        );

        let lsn = |x: &Probed| {
            x.probe
                .as_ref()
                .and_then(|p| p.wal_lsn.as_deref().and_then(parse_lsn))
        };
        let lag_bytes = match (lsn(&p), lsn(&s)) {
            (Some(a), Some(b)) if primary_ok && secondary_ok => Some(a.saturating_sub(b)),
            _ => None,
        };
        let lag_ms = match lag_bytes {
            Some(0) => Some(0),
            _ if secondary_ok => s.probe.as_ref().and_then(|x| x.replay_age_ms),
            _ => None,
        };
        let last_in_sync = if streaming && lag_bytes == Some(0) {
            Some(now)
        } else {
            // The last known value survives role changes and gaps.
            previous.as_ref().and_then(|b| b.last_in_sync)
        };
        // The grace period counts only time under the automatic policy: switching to it
        // while the primary is down starts the countdown at the switch.
        let automatic_since = (g.policies.read_write == "Automatic")
            .then(|| same_gen.and_then(|b| b.automatic_since).unwrap_or(now));
        let counted_since = match (unavailable_since, automatic_since) {
            (Some(u), Some(a)) => Some(u.max(a)),
            (u, _) => u,
        };
        let decision = automatic_decision(
            &g.policies,
            self.config.grace_period_unit,
            now,
            counted_since,
            secondary_ok && !stale_primary,
        );
        let countdown = match &decision {
            AutoDecision::Idle => None,
            AutoDecision::Countdown(c) | AutoDecision::Failover(c) | AutoDecision::Blocked(c) => {
                Some(c.clone())
            }
        };
        let observed = ObservedGroup {
            replication_state: if streaming {
                ReplicationState::CatchUp
            } else {
                ReplicationState::Suspended
            },
            primary_available: primary_ok,
            secondary_available: secondary_ok,
            generation: g.generation,
            primary,
            secondary,
            lag_bytes,
            lag_ms,
            last_in_sync,
            primary_unavailable_since: unavailable_since,
            countdown,
            at: Some(now),
            secondary_streaming_at: streaming_at,
            secondary_stalled_since: stalled_since,
            automatic_since,
        };

        // What changed, as events.
        let gen = g.generation;
        let mut events = Vec::new();
        let was = |f: fn(&ObservedGroup) -> bool| before.as_ref().map(f);
        let (pname, sname) = (&g.primary.instance.name, &g.secondary.instance.name);
        match (was(|b| b.primary.status == Health::Healthy), primary_ok) {
            (Some(true) | None, false) => events.push(GroupEvent::new(
                EventKind::PrimaryUnavailable,
                gen,
                format!(
                    "primary {pname} is unavailable: {}",
                    observed.primary.last_error.as_deref().unwrap_or("unknown")
                ),
            )),
            (Some(false), true) => events.push(GroupEvent::new(
                EventKind::PrimaryRecovered,
                gen,
                format!("primary {pname} is available again"),
            )),
            _ => {}
        }
        match (was(|b| b.secondary.status == Health::Healthy), secondary_ok) {
            (Some(true) | None, false) => events.push(GroupEvent::new(
                EventKind::SecondaryUnavailable,
                gen,
                format!(
                    "secondary {sname} is unavailable: {}",
                    observed
                        .secondary
                        .last_error
                        .as_deref()
                        .unwrap_or("unknown")
                ),
            )),
            (Some(false), true) => events.push(GroupEvent::new(
                EventKind::SecondaryRecovered,
                gen,
                format!("secondary {sname} is available again"),
            )),
            _ => {}
        }
        if stale_primary
            && !was(|b| {
                b.secondary
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("running writable"))
            })
            .unwrap_or(false)
        {
            events.push(GroupEvent::new(
                EventKind::StalePrimaryDetected,
                gen,
                format!("{sname} accepts writes but is not the group's primary; it is never routed to and will be stopped and rewound"),
            ));
        }
        let had_countdown = before.as_ref().is_some_and(|b| b.countdown.is_some());
        match &decision {
            AutoDecision::Countdown(c) if !had_countdown => events.push(GroupEvent::new(
                EventKind::AutomaticFailoverCountdownStarted,
                gen,
                format!(
                    "primary {pname} unavailable since {}; automatic failover to {sname} at {} unless it recovers",
                    fog_model::health::rfc3339(c.since),
                    fog_model::health::rfc3339(c.due)
                ),
            )),
            AutoDecision::Idle if had_countdown && primary_ok => events.push(GroupEvent::new(
                EventKind::AutomaticFailoverCountdownCancelled,
                gen,
                format!("primary {pname} recovered within the grace period; no failover"),
            )),
            AutoDecision::Blocked(_)
                if !matches!(&before, Some(b) if b.countdown.as_ref().is_some_and(|c| b.at.is_some_and(|at| at >= c.due))) =>
            {
                events.push(GroupEvent::new(
                    EventKind::AutomaticFailoverBlocked,
                    gen,
                    format!("grace period over but secondary {sname} cannot take over: {}", observed.secondary.last_error.as_deref().unwrap_or("not a healthy standby")),
                ))
            }
            _ => {}
        }

        self.publish_metrics(g, &observed);
        let mut writes = vec![
            Write::check(catalog::group_key(&g.name), group.revision),
            put(catalog::observed_key(&g.name), &observed, Precondition::Any),
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
            writes.push(catalog::event_write(&g.name, e));
        }
        if let Err(e) = store.commit(writes).await {
            // The group changed while we probed: this observation is stale; the next one
            // will be made against the new record.
            tracing::debug!(group = %g.name, error = %e, "observation not recorded");
            return None;
        }
        if !events.is_empty() {
            if let Err(e) = catalog::prune_events(store, &g.name).await {
                tracing::warn!(group = %g.name, error = %e, "pruning old events failed");
            }
        }

        if let AutoDecision::Failover(c) = decision {
            let reason = format!(
                "automatic: primary {pname} unavailable since {} ({:.1} s, grace period {} min)",
                fog_model::health::rfc3339(c.since),
                secs(now - c.since),
                g.policies.grace_period_minutes.unwrap_or_default()
            );
            self.start_automatic_failover(group.clone(), reason).await;
            return None;
        } else if (g.secondary_needs_rejoin || stale_primary) && primary_ok {
            // Rewinding needs the primary: while it is down there is nothing to rejoin to
            // (and a stale former primary is not routed to meanwhile).
            self.maybe_start_rejoin(group.clone(), stale_primary, false)
                .await;
        } else if primary_ok && standby && stalled_for.is_some_and(|d| d >= self.repair_after()) {
            // A standby that has not streamed for this long will not start by itself:
            // re-attach it (rewind and follow); if a repair already failed to make it
            // stream, re-seed it.
            let reseed = self
                .repairs
                .lock()
                .map(|r| r.get(&g.name).copied().unwrap_or(0) > 0)
                .unwrap_or(false);
            if self.maybe_start_rejoin(group.clone(), false, reseed).await {
                if let Ok(mut r) = self.repairs.lock() {
                    *r.entry(g.name.clone()).or_default() += 1;
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
                        stalled_since
                            .map(fog_model::health::rfc3339)
                            .unwrap_or_default()
                    ),
                );
                tracing::warn!(group = %g.name, "{}", event.message);
                if let Err(e) = store
                    .commit(vec![catalog::event_write(&g.name, &event)])
                    .await
                {
                    tracing::warn!(group = %g.name, error = %e, "recording an event failed");
                }
            }
        }
        if streaming {
            if let Ok(mut r) = self.repairs.lock() {
                r.remove(&g.name);
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
                vec![catalog::event_write(&g.name, &event)],
            )
            .await
        {
            Ok(op) => {
                tracing::warn!(group = %g.name, operation = %op.id, "{reason}");
                metrics::counter!("fogd_automatic_failovers_total", "group" => g.name.clone())
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
                    .get(&g.name)
                    .is_none_or(|t| now.duration_since(*t) >= self.config.rejoin_retry_interval);
            if ready {
                last.insert(g.name.clone(), now);
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

    fn publish_metrics(&self, g: &FailoverGroupRecord, o: &ObservedGroup) {
        let group = g.name.clone();
        metrics::gauge!("fogd_group_replicating", "group" => group.clone()).set(
            if o.replication_state == ReplicationState::CatchUp {
                1.0
            } else {
                0.0
            },
        );
        if let Some(b) = o.lag_bytes {
            metrics::gauge!("fogd_group_replication_lag_bytes", "group" => group.clone())
                .set(b as f64);
        }
        if let Some(ms) = o.lag_ms {
            metrics::gauge!("fogd_group_replication_lag_seconds", "group" => group.clone())
                .set(ms as f64 / 1000.0);
        }
        metrics::gauge!("fogd_group_generation", "group" => group.clone()).set(g.generation as f64);
        for (member, role, health) in [
            (&g.primary, "primary", &o.primary),
            (&g.secondary, "secondary", &o.secondary),
        ] {
            let instance = member.instance.name.clone();
            metrics::gauge!("fogd_group_member_is_primary", "group" => group.clone(), "instance" => instance.clone())
                .set(if role == "primary" { 1.0 } else { 0.0 });
            metrics::gauge!("fogd_group_member_healthy", "group" => group.clone(), "instance" => instance)
                .set(if health.status == Health::Healthy { 1.0 } else { 0.0 });
        }
        let remaining = o
            .countdown
            .as_ref()
            .map(|c| secs(c.due - OffsetDateTime::now_utc()))
            .unwrap_or(0.0);
        metrics::gauge!("fogd_group_automatic_failover_countdown_seconds", "group" => group)
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
            let due = self.observe_groups().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(rw: &str, grace: Option<i64>) -> Policies {
        Policies {
            read_write: rw.into(),
            grace_period_minutes: grace,
            read_only: "Disabled".into(),
            secondary_type: "Geo".into(),
        }
    }

    #[test]
    fn manual_never_fails_over() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let later = t0 + time::Duration::days(365);
        assert_eq!(
            automatic_decision(
                &policies("Manual", None),
                Duration::from_secs(60),
                later,
                Some(t0),
                true
            ),
            AutoDecision::Idle
        );
    }

    #[test]
    fn automatic_counts_down_then_fails_over() {
        let p = policies("Automatic", Some(2));
        let unit = Duration::from_secs(1);
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let at = |s: f64| t0 + time::Duration::seconds_f64(s);
        let due = at(2.0);
        assert_eq!(
            automatic_decision(&p, unit, at(5.0), None, true),
            AutoDecision::Idle
        );
        assert_eq!(
            automatic_decision(&p, unit, at(1.9), Some(t0), true),
            AutoDecision::Countdown(Countdown { since: t0, due })
        );
        assert_eq!(
            automatic_decision(&p, unit, at(2.0), Some(t0), true),
            AutoDecision::Failover(Countdown { since: t0, due })
        );
        assert_eq!(
            automatic_decision(&p, unit, at(3.0), Some(t0), false),
            AutoDecision::Blocked(Countdown { since: t0, due })
        );
        // A grace period longer than the calendar is never due (and does not overflow).
        assert_eq!(
            automatic_decision(
                &policies("Automatic", Some(5_000_000_000)),
                Duration::from_secs(60),
                at(1e6),
                Some(t0),
                true
            ),
            AutoDecision::Idle
        );
        // Production unit: minutes.
        assert!(matches!(
            automatic_decision(&p, Duration::from_secs(60), at(119.0), Some(t0), true),
            AutoDecision::Countdown(_)
        ));
    }
}
