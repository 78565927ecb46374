//! Planned and forced failover of a group, as persisted steps.
//!
//! | step | planned | forced |
//! | --- | --- | --- |
//! | `fence` | generation + 1 on the group and both instances; the read-write listener holds new connections and closes existing ones | same |
//! | `stop_old` | fast shutdown of the old primary (its shutdown checkpoint streams to the secondary); record the checkpoint LSN | stop it at once; if that fails it is marked stale |
//! | `catch_up` | wait until the secondary replayed strictly past the checkpoint | — |
//! | `promote` | promote the secondary, checkpoint | same |
//! | `route` | swap roles in the record: the listener now forwards to the new primary | same |
//! | `rejoin` | the old primary follows the new one (no rewind after a clean stop) | pg_rewind (re-seed if impossible) and follow; the lost WAL range is reported |
//! | `finish` | report, clear the switch | same |
//!
//! Up to `promote` a failure undoes the switch (the old primary runs again, the group is
//! unchanged, a planned failover reports `PlannedFailoverTimedOut`); from `promote` on the
//! operation only rolls forward.

use super::group::Members;
use super::prelude::*;
use super::rejoin::{reattach, rejoin_events};
use fog_model::failover_group::{FailoverReport, ReplicationState, Switch};
use fog_model::health::{EventKind, GroupEvent};
use fog_model::{FailoverGroupRecord, InstanceRecord};
use fog_store::typed::Versioned;
use std::time::Duration;
use time::OffsetDateTime;

step_enum! {
    pub(crate) enum FailoverStep in "failover" {
        Fence = "fence",
        StopOld = "stop_old",
        CatchUp = "catch_up",
        Promote = "promote",
        Route = "route",
        Rejoin = "rejoin",
        Link = "link",
        Finish = "finish",
    }
}

/// Writes (a delete and a put per database record) moved in one transaction, well under
/// etcd's 128 operations with the group, its event and the ownership compare beside them.
const MOVE_CHUNK: usize = 100;

/// A planned failover runs every step.
const PLANNED: &[&str] = FailoverStep::NAMES;
/// A forced failover does not wait for the secondary to catch up.
const FORCED: &[&str] = &[
    "failover.fence",
    "failover.stop_old",
    "failover.promote",
    "failover.route",
    "failover.rejoin",
    "failover.link",
    "failover.finish",
];

/// Planned (`planned: true`) and forced failover.
pub(crate) struct Failover;

#[async_trait]
impl OperationType for Failover {
    fn steps(&self, action: &Action) -> &'static [&'static str] {
        match action {
            Action::FailoverGroup { planned: false, .. } => FORCED,
            _ => PLANNED,
        }
    }

    /// Before `promote` a failure is undone; from it on the operation rolls forward.
    fn point_of_no_return(&self, _: &Action) -> Option<&'static str> {
        Some(FailoverStep::Promote.name())
    }

    async fn execute(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Outcome, StepError> {
        let Action::FailoverGroup { planned, .. } = &op.action else {
            return Err(unknown_step(&op.step));
        };
        let m = o.members(&super::group::group_uid(&op.action)).await?;
        execute_step(o, op, &m.group, &m.primary, &m.secondary, *planned).await
    }

    async fn undo(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Vec<Write>, StepError> {
        let Action::FailoverGroup { .. } = &op.action else {
            return Ok(vec![]);
        };
        let m: Members = match o.members(&super::group::group_uid(&op.action)).await {
            Ok(m) => m,
            Err(e) => return Err(e.into()),
        };
        if m.group.value.active_operation.as_deref() != Some(op.id.as_str()) {
            return Ok(vec![]);
        }
        let point = self
            .point_of_no_return(&op.action)
            .unwrap_or(FailoverStep::Promote.name());
        Ok(undo_step(o, op, &m.group, &m.primary, &m.secondary, point).await)
    }
}

/// Writes the group (CAS) and, optionally, both instance records.
pub(super) async fn save(
    o: &Orchestrator,
    group: &Versioned<FailoverGroupRecord>,
    g: &FailoverGroupRecord,
    extra: Vec<Write>,
) -> Result<(), ArmError> {
    let mut writes = vec![put(
        catalog::group_key(&g.uid),
        g,
        Precondition::Revision(group.revision),
    )];
    writes.extend(extra);
    o.commit(writes).await.map(|_| ()).map_err(store_err)
}

/// Both instance records with their generation set to `gen`.
fn with_generation(members: [&Versioned<InstanceRecord>; 2], gen: u64) -> Vec<Write> {
    members
        .iter()
        .map(|m| {
            let mut rec = m.value.clone();
            rec.generation = rec.generation.max(gen);
            put(
                catalog::instance_key(&rec.id),
                &rec,
                Precondition::Revision(m.revision),
            )
        })
        .collect()
}

async fn execute_step(
    o: &Orchestrator,
    op: &OperationRecord,
    group: &Versioned<FailoverGroupRecord>,
    primary: &Versioned<InstanceRecord>,
    secondary: &Versioned<InstanceRecord>,
    planned: bool,
) -> Result<Outcome, StepError> {
    let step = op.step.as_str();
    let which = FailoverStep::parse(step).ok_or_else(|| unknown_step(step))?;
    let agent = o.agent.as_ref();
    let g = &group.value;
    let routed = g.switch.as_ref().is_some_and(|s| s.routed);
    // Before `route` the record still names the old primary as primary.
    let (old, new) = if routed {
        (secondary, primary)
    } else {
        (primary, secondary)
    };
    let gen = g.generation;
    let timeout = o.config.planned_failover_timeout;
    match which {
        FailoverStep::Fence => {
            if g.switch.is_none() && planned {
                // Only stop the old primary once the secondary is connected and
                // streaming: the shutdown checkpoint must reach it. Nothing has
                // changed yet if it never connects.
                let new_spec = o.server_spec(&new.value).await?;
                let deadline = tokio::time::Instant::now() + timeout;
                loop {
                    let st = agent.replication_status(&new_spec).await;
                    if st.is_ok_and(|s| {
                        s.in_recovery && s.receiver_status.as_deref() == Some("streaming")
                    }) {
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        tracing::warn!(group = %g.name, "secondary is not streaming; planned failover cannot be lossless");
                        return Err(ArmError::planned_failover_timed_out().into());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            if g.switch.is_none() {
                let mut next = g.clone();
                // Past the group's and both servers' generations (a group created by an
                // older fogd may start below what its servers accepted before).
                next.generation = g
                    .generation
                    .max(primary.value.generation)
                    .max(secondary.value.generation)
                    + 1;
                next.switch = Some(Switch {
                    planned,
                    checkpoint_lsn: None,
                    old_primary_stale: false,
                    routed: false,
                    started: OffsetDateTime::now_utc(),
                });
                let mut writes = with_generation([primary, secondary], next.generation);
                writes.push(event(
                    g,
                    EventKind::Fenced,
                    next.generation,
                    format!(
                        "generation {} → {}: the read-write listener closed every session to {} and holds new ones; commands under older generations are refused",
                        g.generation, next.generation, old.value.id.name
                    ),
                ));
                save(o, group, &next, writes).await?;
                tracing::info!(group = %g.name, generation = next.generation, planned, "failover: fenced");
            }
        }
        FailoverStep::StopOld => {
            let spec = o.server_spec(&old.value).await?;
            let mut next = g.clone();
            let Some(switch) = next.switch.as_mut() else {
                return Err(ArmError::operation_interrupted().into());
            };
            if planned {
                if switch.checkpoint_lsn.is_none() {
                    let stopped =
                        tokio::time::timeout(timeout, agent.stop_and_inspect(&spec, gen)).await;
                    match stopped {
                        Ok(Ok(st)) if st.clean => switch.checkpoint_lsn = Some(st.checkpoint_lsn),
                        other => {
                            tracing::warn!(group = %g.name, result = ?other.map(|r| r.map(|s| s.clean)), "old primary did not stop cleanly in time");
                            return Err(ArmError::planned_failover_timed_out().into());
                        }
                    }
                    save(o, group, &next, vec![]).await?;
                }
            } else {
                let killed =
                    tokio::time::timeout(Duration::from_secs(10), agent.kill(&spec, gen)).await;
                if !matches!(killed, Ok(Ok(()))) {
                    tracing::warn!(group = %g.name, "old primary unreachable: marked stale");
                    switch.old_primary_stale = true;
                    save(o, group, &next, vec![]).await?;
                }
            }
        }
        FailoverStep::CatchUp => {
            let lsn = g
                .switch
                .as_ref()
                .and_then(|s| s.checkpoint_lsn.clone())
                .ok_or_else(ArmError::operation_interrupted)?;
            // (A new primary that is not running yet — fogd just started — is started by
            // the supervisor; the loop waits for it within the timeout.)
            let spec = o.server_spec(&new.value).await?;
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                match agent.replayed_past(&spec, &lsn).await {
                    Ok(true) => break,
                    Ok(false) | Err(_) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    _ => return Err(ArmError::planned_failover_timed_out().into()),
                }
            }
        }
        FailoverStep::Promote => {
            let spec = o.server_spec(&new.value).await?;
            if let Err(e) = agent.promote(&spec, gen).await {
                // After a restart of fogd the supervisor may still be starting it: make
                // sure it runs (off the fast path), then promote.
                tracing::info!(group = %g.name, error = %e, "promotion failed; making sure the new primary runs");
                agent
                    .ensure_running(&spec, gen)
                    .await
                    .map_err(engine_error(step))?;
                agent
                    .promote(&spec, gen)
                    .await
                    .map_err(engine_error(step))?;
            }
        }
        FailoverStep::Route => {
            if !routed {
                let mut next = g.clone();
                std::mem::swap(&mut next.primary, &mut next.secondary);
                next.slot = format!("fogd_{}", old.value.uid);
                next.secondary_needs_rejoin = true;
                if let Some(s) = next.switch.as_mut() {
                    s.routed = true;
                }
                // Database records live with the current primary. etcd caps one
                // transaction at 128 operations and each record moves with two: all but
                // the last chunk move ahead (a re-run moves what is left), the last one
                // with the switch.
                let mut extra = move_databases(o, &old.value, &new.value).await?;
                while extra.len() > MOVE_CHUNK {
                    let rest = extra.split_off(MOVE_CHUNK);
                    o.commit(extra).await.map_err(store_err)?;
                    extra = rest;
                }
                extra.push(event(
                    g,
                    EventKind::RoleChanged,
                    gen,
                    format!(
                        "{} is now the primary and {} the secondary; the read-write listener routes to {}",
                        new.value.id.name, old.value.id.name, new.value.id.name
                    ),
                ));
                save(o, group, &next, extra).await?;
                tracing::info!(group = %g.name, primary = %new.value.id.name, generation = gen, "failover: writes routed to the new primary");
            }
        }
        FailoverStep::Rejoin => {
            if !g.secondary_needs_rejoin {
                return Ok(Outcome::Continue);
            }
            let clean = planned && g.switch.as_ref().is_some_and(|s| !s.old_primary_stale);
            let (outcome, loss) = reattach(o, g, &old.value, &new.value, clean).await?;
            let mut next = g.clone();
            next.secondary_needs_rejoin = outcome.starts_with("rejoin failed");
            let started = g
                .switch
                .as_ref()
                .map(|s| s.started)
                .unwrap_or_else(OffsetDateTime::now_utc);
            let reason = match &op.action {
                Action::FailoverGroup {
                    automatic: Some(r), ..
                } => r.clone(),
                _ if planned => "planned failover requested through the API".to_string(),
                _ => "forced failover requested through the API".to_string(),
            };
            let events = rejoin_events(g, &old.value.id.name, &outcome, loss.as_ref());
            next.last_failover = Some(FailoverReport {
                planned,
                at: started,
                from: old.value.id.name.clone(),
                to: new.value.id.name.clone(),
                generation: gen,
                duration_ms: 0,
                data_loss: loss,
                old_primary: outcome,
                reason: Some(reason),
            });
            save(o, group, &next, events).await?;
        }
        FailoverStep::Link => {
            // `primary` is the new primary once routed.
            o.link_group(&new.value, &old.value).await?;
        }
        FailoverStep::Finish => {
            let mut next = g.clone();
            if let (Some(s), Some(r)) = (&next.switch, next.last_failover.as_mut()) {
                r.duration_ms = (OffsetDateTime::now_utc() - s.started)
                    .whole_milliseconds()
                    .max(0) as u64;
            }
            next.switch = None;
            next.active_operation = None;
            next.replication_state = if next.secondary_needs_rejoin {
                ReplicationState::Suspended
            } else {
                ReplicationState::CatchUp
            };
            let kind = match &op.action {
                Action::FailoverGroup {
                    automatic: Some(_), ..
                } => "automatic",
                _ if planned => "planned",
                _ => "forced",
            };
            let ms = next.last_failover.as_ref().map_or(0, |r| r.duration_ms);
            metrics::counter!("fogd_failovers_total", "group" => g.name.clone(), "type" => kind, "dns_zone" => g.dns_zone.clone())
                .increment(1);
            metrics::histogram!("fogd_failover_duration_seconds", "type" => kind)
                .record(ms as f64 / 1000.0);
            tracing::info!(group = %g.name, primary = %next.primary.instance.name, "failover finished");
            return Ok(Outcome::Finished(vec![
                put(
                    catalog::group_key(&g.uid),
                    &next,
                    Precondition::Revision(group.revision),
                ),
                event(
                    g,
                    EventKind::FailoverFinished,
                    gen,
                    format!(
                        "{kind} failover finished in {ms} ms; {} is the primary",
                        next.primary.instance.name
                    ),
                ),
            ]));
        }
    }
    Ok(Outcome::Continue)
}

/// After a failed step: before the point of no return the old primary runs again and the
/// group is as it was (with a new generation, so the listener reopens); after it the roles
/// stay switched and the old primary is left for a rejoin.
async fn undo_step(
    o: &Orchestrator,
    op: &OperationRecord,
    group: &Versioned<FailoverGroupRecord>,
    primary: &Versioned<InstanceRecord>,
    secondary: &Versioned<InstanceRecord>,
    point_of_no_return: &str,
) -> Vec<Write> {
    let g = &group.value;
    let names = Failover.steps(&op.action);
    let reached = |s: &str| reached(names, op, s);
    let routed = g.switch.as_ref().is_some_and(|s| s.routed);
    let mut next = g.clone();
    next.active_operation = None;
    // Promotion may have happened even if its step reported an error: ask the server.
    let new_is_primary = || async {
        match o.server_spec(&secondary.value).await {
            Ok(spec) => o
                .agent
                .replication_status(&spec)
                .await
                .is_ok_and(|s| !s.in_recovery),
            Err(_) => false,
        }
    };
    let promoted = routed || (reached(point_of_no_return) && new_is_primary().await);
    if promoted {
        // Promoted but not routed yet: the roles switch here, and the database records
        // move to the new primary as `route` would have moved them.
        let mut moved = Vec::new();
        if !routed {
            std::mem::swap(&mut next.primary, &mut next.secondary);
            next.slot = format!("fogd_{}", primary.value.uid);
            match move_databases(o, &primary.value, &secondary.value).await {
                Ok(writes) => moved = writes,
                Err(e) => {
                    tracing::error!(group = %g.name, error = %e.message, "database records could not be moved to the new primary")
                }
            }
        }
        next.secondary_needs_rejoin = true;
        next.switch = None;
        next.replication_state = ReplicationState::Suspended;
        tracing::error!(group = %g.name, "failover failed after promotion: roles stay switched; the old primary needs a rejoin");
        moved.extend([
            put(
                catalog::group_key(&g.uid),
                &next,
                Precondition::Revision(group.revision),
            ),
            event(
                g,
                EventKind::RejoinFailed,
                g.generation,
                format!(
                    "failover failed at step '{}' after promotion: {} is the primary; the former primary will be re-attached when reachable",
                    op.step, next.primary.instance.name
                ),
            ),
        ]);
        return moved;
    }
    // Undo: the old primary takes writes again, under a newer generation.
    next.switch = None;
    next.generation = g.generation + 1;
    if let Ok(spec) = o.server_spec(&primary.value).await {
        if let Err(e) = o.agent.ensure_running(&spec, next.generation).await {
            tracing::error!(group = %g.name, error = %e, "restarting the old primary after an aborted failover failed");
        }
    }
    tracing::warn!(group = %g.name, "failover aborted; the primary is unchanged");
    let mut writes = vec![
        put(
            catalog::group_key(&g.uid),
            &next,
            Precondition::Revision(group.revision),
        ),
        event(
            g,
            EventKind::FailoverAborted,
            next.generation,
            format!(
                "failover aborted at step '{}'; {} stays the primary (generation {})",
                op.step, primary.value.id.name, next.generation
            ),
        ),
    ];
    writes.extend(with_generation([primary, secondary], next.generation));
    writes
}

/// Writes that move every database record of `from` to `to`: records live with the
/// primary.
async fn move_databases(
    o: &Orchestrator,
    from: &InstanceRecord,
    to: &InstanceRecord,
) -> Result<Vec<Write>, ArmError> {
    let mut writes = Vec::new();
    for db in catalog::databases(o.store.as_ref(), &from.id)
        .await
        .map_err(store_err)?
    {
        let mut rec = db.value;
        writes.push(Write::delete(
            catalog::database_key(&from.id, &rec.name),
            Precondition::Revision(db.revision),
        ));
        rec.instance = to.id.clone();
        rec.instance_uid = to.uid.clone();
        rec.location = to.location.clone();
        writes.push(put(
            catalog::database_key(&to.id, &rec.name),
            &rec,
            Precondition::Any,
        ));
    }
    Ok(writes)
}

pub(super) fn event(
    g: &FailoverGroupRecord,
    kind: EventKind,
    generation: u64,
    message: String,
) -> Write {
    catalog::event_write(&g.uid, &GroupEvent::new(kind, generation, message))
}
