//! Start-up migration of records an older fogd wrote, run before anything else reads the
//! store (`fogd serve` calls [`run`] before the orchestrator starts).
//!
//! **Failover groups by uid** (group format 1 → 2). An older fogd keyed a group by its name
//! (`failover-groups/{name}`, names global) and referred to it by name everywhere. Now a
//! group lives under a stable uid with index keys for its two addresses and its DNS record
//! (see [`crate::catalog`]). For each group of format 1, with uid
//! [`legacy_uid`]`(name)`:
//! 1. its events move from `events/{name}/…` to `events/{uid}/…` (in small batches, each
//!    event put under the new key and deleted under the old one: a crash leaves events in
//!    both places at worst, and a re-run moves the rest);
//! 2. one batch then replaces `failover-groups/{name}` with `failover-groups/{uid}`, creates
//!    the index keys, points both members' `failover_group` at the uid, and moves the
//!    observation (`observed/failover-groups/{name}`) and the listener reservation
//!    (`listener-ports/{name}` → `listener-ports/{zone}/{name}`).
//!
//! Operation records are not rewritten: one that names its group only by name finds it
//! through the same [`legacy_uid`] ([`fog_model::Action::group`]), so an operation an older
//! fogd left unfinished resumes on the migrated group.
//!
//! Credentials (`secrets/{instance uid}`) and databases are keyed by instance and need
//! nothing. Running it again changes nothing: a group of format 2 is left alone.

use crate::catalog::{self, ListenerReservation};
use fog_model::failover_group::legacy_uid;
use fog_model::FailoverGroupRecord;
use fog_store::typed::{self, put};
use fog_store::{Precondition, Record, Store, StoreError, Write};

/// How many writes one batch of moved events carries (etcd refuses transactions of more
/// than 128 operations by default).
const EVENT_BATCH: usize = 100;

/// What [`run`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Groups moved from `failover-groups/{name}` to `failover-groups/{uid}`.
    pub groups: Vec<String>,
    /// Events moved to their group's uid.
    pub events: usize,
}

fn format_of(record: &Record) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(&record.value)
        .ok()?
        .get("format")?
        .as_u64()
}

/// Migrates every record of an older layout (see the module documentation).
pub async fn run(store: &dyn Store) -> Result<MigrationReport, StoreError> {
    let mut report = MigrationReport::default();
    for record in store.range(catalog::GROUPS_PREFIX).await? {
        if format_of(&record).is_none_or(|f| f >= u64::from(FailoverGroupRecord::FORMAT)) {
            continue;
        }
        let old = typed::decode::<FailoverGroupRecord>(&record)?;
        let name = old.value.name.clone();
        let uid = legacy_uid(&name);
        report.events += move_events(store, &name, &uid).await?;
        migrate_group(store, &record.key, old, &uid).await?;
        tracing::info!(group = %name, uid = %uid, "migrated a failover group to its uid");
        report.groups.push(name);
    }
    Ok(report)
}

/// Moves `events/{name}/…` to `events/{uid}/…`; returns how many moved.
async fn move_events(store: &dyn Store, name: &str, uid: &str) -> Result<usize, StoreError> {
    let old_prefix = format!("events/{}/", name.to_lowercase());
    let new_prefix = catalog::events_prefix(uid);
    if old_prefix == new_prefix {
        return Ok(0);
    }
    let events = store.range(&old_prefix).await?;
    let mut moved = 0;
    for chunk in events.chunks(EVENT_BATCH / 2) {
        let mut writes = Vec::with_capacity(chunk.len() * 2);
        for e in chunk {
            let suffix = &e.key[old_prefix.len()..];
            writes.push(Write::put(
                format!("{new_prefix}{suffix}"),
                e.value.clone(),
                Precondition::Any,
            ));
            writes.push(Write::delete(e.key.clone(), Precondition::Any));
        }
        store.commit(writes).await?;
        moved += chunk.len();
    }
    Ok(moved)
}

/// The one batch that moves a group (read at `old`) under `uid` with everything that refers
/// to it by name.
async fn migrate_group(
    store: &dyn Store,
    old_key: &str,
    old: typed::Versioned<FailoverGroupRecord>,
    uid: &str,
) -> Result<(), StoreError> {
    let mut g = old.value;
    let name = g.name.clone();
    g.uid = uid.to_string();
    let mut writes = vec![
        Write::delete(old_key.to_string(), Precondition::Revision(old.revision)),
        put(catalog::group_key(uid), &g, Precondition::Absent),
    ];
    writes.extend(catalog::group_index_puts(&g));
    for member in [&g.primary, &g.secondary] {
        if let Some(inst) = catalog::instance(store, &member.instance).await? {
            let named = inst
                .value
                .failover_group
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(&name));
            if named {
                let mut rec = inst.value;
                rec.failover_group = Some(uid.to_string());
                writes.push(put(
                    catalog::instance_key(&rec.id),
                    &rec,
                    Precondition::Revision(inst.revision),
                ));
            }
        }
    }
    let old_observed = format!("observed/failover-groups/{}", name.to_lowercase());
    if let Some(obs) = store.get(&old_observed).await? {
        writes.push(Write::put(
            catalog::observed_key(uid),
            obs.value,
            Precondition::Any,
        ));
        writes.push(Write::delete(old_observed, Precondition::Any));
    }
    let old_ports = catalog::legacy_listener_ports_key(&name);
    if let Some(r) = typed::get::<ListenerReservation>(store, &old_ports).await? {
        writes.push(put(
            catalog::listener_ports_key(&g.dns_zone, &name),
            &r.value,
            Precondition::Any,
        ));
        writes.push(Write::delete(old_ports, Precondition::Any));
    }
    store.commit(writes).await.map(|_| ())
}
