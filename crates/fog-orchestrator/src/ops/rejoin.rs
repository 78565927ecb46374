//! Re-attaching a group's secondary: a former primary after a failover that could not
//! re-attach it (or that came back writable on its old history), or a secondary that
//! stopped streaming (a repair; a second repair re-seeds).
//!
//! | step | does |
//! | --- | --- |
//! | `rejoin.fence` | stop it at once if it runs (it may have come back writable on its old history) |
//! | `rejoin.rewind` | pg_rewind onto the primary's history (re-seed if impossible, or when asked) and follow |
//! | `rejoin.link` | point `sp_wait_for_database_copy_sync` on the primary at it |
//! | `rejoin.finish` | clear `secondary_needs_rejoin`, report what it lost |
//!
//! Undo: the group, no longer busy, still marked as needing a rejoin (the monitor retries).

use super::failover::{event, save};
use super::prelude::*;
use fog_model::failover_group::{DataLoss, ReplicationState};
use fog_model::health::EventKind;
use fog_model::{FailoverGroupRecord, InstanceRecord};
use fog_store::typed::Versioned;

step_enum! {
    pub(crate) enum RejoinStep in "rejoin" {
        Fence = "fence",
        Rewind = "rewind",
        Link = "link",
        Finish = "finish",
    }
}

pub(crate) struct Rejoin;

#[async_trait]
impl OperationType for Rejoin {
    fn steps(&self, _: &Action) -> &'static [&'static str] {
        RejoinStep::NAMES
    }

    async fn execute(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Outcome, StepError> {
        let Action::RejoinGroup { .. } = &op.action else {
            return Err(unknown_step(&op.step));
        };
        let m = o.members(&super::group::group_uid(&op.action)).await?;
        execute_step(o, op, &m.group, &m.primary, &m.secondary).await
    }

    async fn undo(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Vec<Write>, StepError> {
        let Action::RejoinGroup { .. } = &op.action else {
            return Ok(vec![]);
        };
        let uid = super::group::group_uid(&op.action);
        let Some(group) = catalog::group(o.store.as_ref(), &uid)
            .await
            .map_err(store_err)?
            .filter(|g| g.value.active_operation.as_deref() == Some(op.id.as_str()))
        else {
            return Ok(vec![]);
        };
        let mut g = group.value;
        g.active_operation = None;
        Ok(vec![put(
            catalog::group_key(&uid),
            &g,
            Precondition::Revision(group.revision),
        )])
    }
}

/// Events that tell how a former primary came back, and what it lost.
pub(super) fn rejoin_events(
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
pub(super) async fn reattach(
    o: &Orchestrator,
    g: &FailoverGroupRecord,
    old: &InstanceRecord,
    new: &InstanceRecord,
    clean: bool,
) -> Result<(String, Option<DataLoss>), StepError> {
    let agent = o.agent.as_ref();
    let gen = g.generation;
    let step = "rejoin";
    let old_spec = o.server_spec(old).await?;
    let new_spec = o.server_spec(new).await?;
    let source = o.replication_source(new, &old.uid, &g.slot).await?;
    agent
        .ensure_slot(&new_spec, &g.slot, new.generation)
        .await
        .map_err(engine_error(step))?;
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
) -> Result<(String, Option<DataLoss>), StepError> {
    let spec = o.server_spec(secondary).await?;
    let primary_spec = o.server_spec(primary).await?;
    let source = o
        .replication_source(primary, &secondary.uid, &g.slot)
        .await?;
    o.agent
        .ensure_slot(&primary_spec, &g.slot, primary.generation)
        .await
        .map_err(engine_error("rejoin"))?;
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
async fn execute_step(
    o: &Orchestrator,
    op: &OperationRecord,
    group: &Versioned<FailoverGroupRecord>,
    primary: &Versioned<InstanceRecord>,
    secondary: &Versioned<InstanceRecord>,
) -> Result<Outcome, StepError> {
    let g = &group.value;
    let step = op.step.as_str();
    match RejoinStep::parse(step).ok_or_else(|| unknown_step(step))? {
        RejoinStep::Fence => {
            let spec = o.server_spec(&secondary.value).await?;
            o.agent
                .kill(&spec, g.generation)
                .await
                .map_err(engine_error(step))?;
        }
        RejoinStep::Rewind => {
            if g.secondary_needs_rejoin {
                let reseed = matches!(op.action, Action::RejoinGroup { reseed: true, .. });
                let (outcome, loss) = if reseed {
                    reseed_secondary(o, g, &secondary.value, &primary.value).await?
                } else {
                    reattach(o, g, &secondary.value, &primary.value, false).await?
                };
                if outcome.starts_with("rejoin failed") {
                    return Err(StepError::Retry(ArmError::new(
                        500,
                        "OperationFailed",
                        outcome,
                    )));
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
                // A loss the report already holds (the agent answered a repair of the same
                // generation with the rewind it did before) is not announced twice.
                let reported = g.last_failover.as_ref().and_then(|r| r.data_loss.as_ref());
                let news = loss.as_ref().filter(|l| reported != Some(*l));
                let events = rejoin_events(g, &secondary.value.id.name, &outcome, news);
                save(o, group, &next, events).await?;
            }
        }
        RejoinStep::Link => {
            o.link_group(&primary.value, &secondary.value).await?;
        }
        RejoinStep::Finish => {
            let mut next = g.clone();
            next.active_operation = None;
            next.replication_state = ReplicationState::CatchUp;
            return Ok(Outcome::Finished(vec![put(
                catalog::group_key(&g.uid),
                &next,
                Precondition::Revision(group.revision),
            )]));
        }
    }
    Ok(Outcome::Continue)
}
