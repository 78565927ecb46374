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

use crate::catalog;
use crate::steps::Outcome;
use crate::{store_err, Orchestrator};
use fog_model::failover_group::{DataLoss, FailoverReport, ReplicationState, Switch};
use fog_model::health::{EventKind, GroupEvent};
use fog_model::Action;
use fog_model::{ArmError, FailoverGroupRecord, InstanceRecord, OperationRecord};
use fog_store::typed::{put, Versioned};
use fog_store::{Precondition, Write};
use std::time::Duration;
use time::OffsetDateTime;

fn engine(step: &str) -> impl FnOnce(fog_engine::EngineError) -> ArmError + '_ {
    move |e| {
        tracing::warn!(step, error = %e, "failover step failed");
        ArmError::new(500, "OperationFailed", format!("Step '{step}' failed: {e}"))
    }
}

fn conflict(e: fog_store::StoreError) -> ArmError {
    store_err(e)
}

/// Writes the group (CAS) and, optionally, both instance records.
async fn save(
    o: &Orchestrator,
    group: &Versioned<FailoverGroupRecord>,
    g: &FailoverGroupRecord,
    extra: Vec<Write>,
) -> Result<(), ArmError> {
    let mut writes = vec![put(
        catalog::group_key(&g.name),
        g,
        Precondition::Revision(group.revision),
    )];
    writes.extend(extra);
    o.store.commit(writes).await.map(|_| ()).map_err(conflict)
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

pub(crate) async fn execute(
    o: &Orchestrator,
    op: &OperationRecord,
    group: &Versioned<FailoverGroupRecord>,
    primary: &Versioned<InstanceRecord>,
    secondary: &Versioned<InstanceRecord>,
    planned: bool,
) -> Result<Outcome, ArmError> {
    let step = op.step.as_str();
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
    match step {
        "failover.fence" => {
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
                        return Err(ArmError::planned_failover_timed_out());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            if g.switch.is_none() {
                let mut next = g.clone();
                next.generation += 1;
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
        "failover.stop_old" => {
            let spec = o.server_spec(&old.value).await?;
            let mut next = g.clone();
            let Some(switch) = next.switch.as_mut() else {
                return Err(ArmError::operation_interrupted());
            };
            if planned {
                if switch.checkpoint_lsn.is_none() {
                    let stopped =
                        tokio::time::timeout(timeout, agent.stop_and_inspect(&spec, gen)).await;
                    match stopped {
                        Ok(Ok(st)) if st.clean => switch.checkpoint_lsn = Some(st.checkpoint_lsn),
                        other => {
                            tracing::warn!(group = %g.name, result = ?other.map(|r| r.map(|s| s.clean)), "old primary did not stop cleanly in time");
                            return Err(ArmError::planned_failover_timed_out());
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
        "failover.catch_up" => {
            let lsn = g
                .switch
                .as_ref()
                .and_then(|s| s.checkpoint_lsn.clone())
                .ok_or_else(ArmError::operation_interrupted)?;
            let spec = o.server_spec(&new.value).await?;
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                match agent.replayed_past(&spec, &lsn).await {
                    Ok(true) => break,
                    Ok(false) | Err(_) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    _ => return Err(ArmError::planned_failover_timed_out()),
                }
            }
        }
        "failover.promote" => {
            let spec = o.server_spec(&new.value).await?;
            agent.promote(&spec, gen).await.map_err(engine(step))?;
        }
        "failover.route" => {
            if !routed {
                let mut next = g.clone();
                std::mem::swap(&mut next.primary, &mut next.secondary);
                next.slot = format!("fogd_{}", old.value.uid);
                next.secondary_needs_rejoin = true;
                if let Some(s) = next.switch.as_mut() {
                    s.routed = true;
                }
                // Database records live with the current primary.
                let mut extra = move_databases(o, &old.value, &new.value).await?;
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
        "failover.rejoin" => {
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
        "failover.link" => {
            // `primary` is the new primary once routed.
            o.link_group(&new.value, &old.value).await?;
        }
        "failover.finish" => {
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
            metrics::counter!("fogd_failovers_total", "group" => g.name.clone(), "type" => kind)
                .increment(1);
            metrics::histogram!("fogd_failover_duration_seconds", "type" => kind)
                .record(ms as f64 / 1000.0);
            tracing::info!(group = %g.name, primary = %next.primary.instance.name, "failover finished");
            return Ok(Outcome::Finished(vec![
                put(
                    catalog::group_key(&g.name),
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
        other => return Err(ArmError::internal(format!("unknown step '{other}'"))),
    }
    Ok(Outcome::Continue)
}

/// After a failed step: before the point of no return the old primary runs again and the
/// group is as it was (with a new generation, so the listener reopens); after it the roles
/// stay switched and the old primary is left for a rejoin.
pub(crate) async fn compensate(
    o: &Orchestrator,
    op: &OperationRecord,
    group: &Versioned<FailoverGroupRecord>,
    primary: &Versioned<InstanceRecord>,
    secondary: &Versioned<InstanceRecord>,
    point_of_no_return: &str,
) -> Vec<Write> {
    let g = &group.value;
    let names = crate::steps::step_names(&op.action);
    let reached = |s: &str| {
        let at = names.iter().position(|n| *n == op.step.as_str());
        let p = names.iter().position(|n| *n == s);
        matches!((at, p), (Some(a), Some(p)) if a >= p)
    };
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
                catalog::group_key(&g.name),
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
            catalog::group_key(&g.name),
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

fn event(g: &FailoverGroupRecord, kind: EventKind, generation: u64, message: String) -> Write {
    catalog::event_write(&g.name, &GroupEvent::new(kind, generation, message))
}

/// Events that tell how a former primary came back, and what it lost.
fn rejoin_events(
    g: &FailoverGroupRecord,
    old: &str,
    outcome: &str,
    loss: Option<&DataLoss>,
) -> Vec<Write> {
    let mut writes = Vec::new();
    if let Some(l) = loss {
        writes.push(event(
            g,
            EventKind::DataLoss,
            g.generation,
            format!(
                "{old} had {} bytes of WAL the new primary never received ({} to {}); those transactions are lost",
                l.bytes, l.from_lsn, l.to_lsn
            ),
        ));
    }
    if outcome.starts_with("rejoin failed") {
        writes.push(event(
            g,
            EventKind::RejoinFailed,
            g.generation,
            format!(
                "{old} could not be re-attached yet ({outcome}); fogd retries when it is reachable"
            ),
        ));
    } else {
        writes.push(event(
            g,
            EventKind::OldPrimaryRejoined,
            g.generation,
            format!("{old} re-attached as the secondary ({outcome})"),
        ));
    }
    writes
}

/// Re-attaches the former primary `old` as a standby of `new`: a clean follow after a
/// planned switch, otherwise pg_rewind (re-seeding when rewinding is impossible). Returns
/// how it went (`followed`, `rewound`, `reseeded` or `rejoin failed: …`) and the WAL the
/// old primary had that the new one lacks.
async fn reattach(
    o: &Orchestrator,
    g: &FailoverGroupRecord,
    old: &InstanceRecord,
    new: &InstanceRecord,
    clean: bool,
) -> Result<(String, Option<DataLoss>), ArmError> {
    let agent = o.agent.as_ref();
    let gen = g.generation;
    let step = "rejoin";
    let old_spec = o.server_spec(old).await?;
    let new_spec = o.server_spec(new).await?;
    let source = o.replication_source(new, &old.uid, &g.slot).await?;
    agent
        .ensure_slot(&new_spec, &g.slot, new.generation)
        .await
        .map_err(engine(step))?;
    let (outcome, loss) = if clean {
        match agent.follow(&old_spec, &source, gen).await {
            Ok(()) => ("followed".to_string(), None),
            Err(e) => (format!("rejoin failed: {e}"), None),
        }
    } else {
        match agent
            .rewind_and_follow(&old_spec, &new_spec, &source, gen)
            .await
        {
            Ok(r) => {
                let loss = match (&r.diverged_at, &r.old_end) {
                    (Some(from), Some(to)) if r.lost_bytes > 0 => Some(DataLoss {
                        from_lsn: from.clone(),
                        to_lsn: to.clone(),
                        bytes: r.lost_bytes,
                    }),
                    _ => None,
                };
                let how = if r.reseeded { "reseeded" } else { "rewound" };
                (how.to_string(), loss)
            }
            Err(e) => (format!("rejoin failed: {e}"), None),
        }
    };
    // The old slot (for the former secondary) is useless on the new standby.
    let _ = agent
        .drop_slot(
            &old_spec,
            &format!("fogd_{}", new.uid),
            old.generation.max(gen),
        )
        .await;
    Ok((outcome, loss))
}

/// Replaces the secondary's data with a fresh base backup of the primary: the repair of a
/// standby that rewinding did not bring back to streaming.
async fn reseed_secondary(
    o: &Orchestrator,
    g: &FailoverGroupRecord,
    secondary: &InstanceRecord,
    primary: &InstanceRecord,
) -> Result<(String, Option<DataLoss>), ArmError> {
    let spec = o.server_spec(secondary).await?;
    let primary_spec = o.server_spec(primary).await?;
    let source = o
        .replication_source(primary, &secondary.uid, &g.slot)
        .await?;
    o.agent
        .ensure_slot(&primary_spec, &g.slot, primary.generation)
        .await
        .map_err(engine("rejoin"))?;
    let outcome = match o.agent.reseed_standby(&spec, &source, g.generation).await {
        Ok(()) => "reseeded".to_string(),
        Err(e) => format!("rejoin failed: {e}"),
    };
    Ok((outcome, None))
}

/// Steps of [`Action::RejoinGroup`]: the group's `secondary` is a former primary.
///
/// | step | does |
/// | --- | --- |
/// | `rejoin.fence` | stop it at once if it runs (it may have come back writable on its old history) |
/// | `rejoin.rewind` | pg_rewind onto the primary's history (re-seed if impossible) and follow |
/// | `rejoin.link` | point `sp_wait_for_database_copy_sync` on the primary at it |
/// | `rejoin.finish` | clear `secondary_needs_rejoin`, report what it lost |
pub(crate) async fn rejoin(
    o: &Orchestrator,
    op: &OperationRecord,
    group: &Versioned<FailoverGroupRecord>,
    primary: &Versioned<InstanceRecord>,
    secondary: &Versioned<InstanceRecord>,
) -> Result<Outcome, ArmError> {
    let g = &group.value;
    let step = op.step.as_str();
    match step {
        "rejoin.fence" => {
            let spec = o.server_spec(&secondary.value).await?;
            o.agent
                .kill(&spec, g.generation)
                .await
                .map_err(engine(step))?;
        }
        "rejoin.rewind" => {
            if g.secondary_needs_rejoin {
                let reseed = matches!(op.action, Action::RejoinGroup { reseed: true, .. });
                let (outcome, loss) = if reseed {
                    reseed_secondary(o, g, &secondary.value, &primary.value).await?
                } else {
                    reattach(o, g, &secondary.value, &primary.value, false).await?
                };
                if outcome.starts_with("rejoin failed") {
                    return Err(ArmError::new(500, "OperationFailed", outcome));
                }
                let mut next = g.clone();
                next.secondary_needs_rejoin = false;
                // A former primary's late re-attach completes the last failover's report;
                // the repair of a secondary that stalled later is not part of it.
                if let Some(r) = next
                    .last_failover
                    .as_mut()
                    .filter(|r| r.old_primary.starts_with("rejoin failed"))
                {
                    r.old_primary = format!("{outcome} (later)");
                    if r.data_loss.is_none() {
                        r.data_loss = loss.clone();
                    }
                }
                let events = rejoin_events(g, &secondary.value.id.name, &outcome, loss.as_ref());
                save(o, group, &next, events).await?;
            }
        }
        "rejoin.link" => {
            o.link_group(&primary.value, &secondary.value).await?;
        }
        "rejoin.finish" => {
            let mut next = g.clone();
            next.active_operation = None;
            next.replication_state = ReplicationState::CatchUp;
            return Ok(Outcome::Finished(vec![put(
                catalog::group_key(&g.name),
                &next,
                Precondition::Revision(group.revision),
            )]));
        }
        other => return Err(ArmError::internal(format!("unknown step '{other}'"))),
    }
    Ok(Outcome::Continue)
}
