//! Where each persisted type lives in the store, and typed reads of it.
//!
//! Key layout (all keys lower-case in their name parts, so ARM's case-insensitive names map
//! to one key):
//!
//! | key | value |
//! | --- | --- |
//! | `instances/{sub}/{rg}/{name}` | [`InstanceRecord`] |
//! | `secrets/{uid}` | [`InstanceSecret`], sealed ([`StoredSecret`], [`crate::secrets`]); never rendered to clients |
//! | `databases/{sub}/{rg}/{mi}/{db}` | [`DatabaseRecord`] |
//! | `operations/{id}` | [`OperationRecord`] |
//! | `failover-groups/{uid}` | [`FailoverGroupRecord`] under its stable uid |
//! | `failover-group-at/{sub}/{rg}/{location}/{name}` | [`GroupIndex`]: the group a member's address and a name identify (one key per member) |
//! | `failover-group-dns/{zone}/{name}` | [`GroupIndex`]: the group that owns the DNS record `{name}.{zone}` |
//! | `observed/failover-groups/{uid}` | [`ObservedGroup`] written by the health observer |
//! | `listener-ports/{zone}/{name}` | [`ListenerPorts`] last used by a group's DNS record (reused on re-create) |
//! | `observed/instances/{uid}` | [`InstanceHealth`] written by the health monitor |
//! | `events/{group uid}/{unix-nanos}-{nonce}` | [`GroupEvent`]s of a group, in time order |
//!
//! A group is created with its three index keys in one batch, each with an `Absent`
//! precondition: of two concurrent creates of one address or one DNS record, one commits
//! and the other conflicts. Delete removes the group and its index keys together.

use crate::secrets::{Sealed, SecretCipher};
use fog_model::failover_group::{ListenerPorts, Member, ObservedGroup};
use fog_model::health::{GroupEvent, InstanceHealth};
use fog_model::{
    DatabaseRecord, FailoverGroupRecord, InstanceRecord, ManagedInstanceId, OperationRecord, Scope,
    Side,
};
use fog_store::typed::{self, Persisted, Versioned};
use fog_store::{Precondition, Store, StoreError};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Credentials fogd keeps for managing a server. Members of a failover group end up with
/// the primary's credentials (roles are part of the replicated data).
///
/// Never stored as it is: [`secret_put`] seals it, [`secret`] opens it. `Debug` hides the
/// passwords.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSecret {
    pub superuser_password: String,
    /// Password of the replication role on this server.
    #[serde(default)]
    pub replication_password: String,
    /// The superuser password before it was aligned with a group primary's (used only to
    /// finish an interrupted alignment).
    #[serde(default)]
    pub previous_superuser_password: Option<String>,
}

impl std::fmt::Debug for InstanceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceSecret")
            .field("superuser_password", &"<redacted>")
            .field("replication_password", &"<redacted>")
            .field(
                "previous_superuser_password",
                &self
                    .previous_superuser_password
                    .as_ref()
                    .map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The value under `secrets/{uid}`. Format 2 is [`StoredSecret::Sealed`], the only one
/// written; format 1 (fogd before encryption at rest) was the [`InstanceSecret`] in clear
/// text, still read ([`StoredSecret::Plain`]) until start-up re-seals it
/// ([`crate::secrets::unlock`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoredSecret {
    /// `{"sealed": {"cipher", "key_id", "nonce", "ciphertext"}}`: the JSON of an
    /// [`InstanceSecret`] sealed with the record's store key as associated data.
    Sealed { sealed: Sealed },
    /// A clear-text record of format 1.
    Plain(InstanceSecret),
}

impl Persisted for StoredSecret {
    const FORMAT: u32 = 2;
}

/// Persisted listener port reservations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerReservation {
    pub ports: ListenerPorts,
}

impl Persisted for ListenerReservation {
    const FORMAT: u32 = 1;
}

pub fn instance_key(id: &ManagedInstanceId) -> String {
    format!("instances/{}", id.key())
}

pub fn instances_prefix(scope: Option<&Scope>, subscription: &str) -> String {
    match scope {
        Some(s) => format!("instances/{}/", s.key()),
        None => format!("instances/{}/", subscription),
    }
}

/// Where the [`StoredSecret`]s are.
pub const SECRETS_PREFIX: &str = "secrets/";

pub fn secret_key(uid: &str) -> String {
    format!("{SECRETS_PREFIX}{uid}")
}

pub fn database_key(id: &ManagedInstanceId, db: &str) -> String {
    format!("databases/{}/{}", id.key(), db.to_lowercase())
}

pub fn databases_prefix(id: &ManagedInstanceId) -> String {
    format!("databases/{}/", id.key())
}

pub fn operation_key(id: &str) -> String {
    format!("operations/{}", id.to_lowercase())
}

pub async fn instance(
    store: &dyn Store,
    id: &ManagedInstanceId,
) -> Result<Option<Versioned<InstanceRecord>>, StoreError> {
    typed::get(store, &instance_key(id)).await
}

/// Instances in one resource group, or (with `scope: None`) in the whole subscription.
pub async fn instances(
    store: &dyn Store,
    scope: Option<&Scope>,
    subscription: &str,
) -> Result<Vec<InstanceRecord>, StoreError> {
    Ok(typed::list(store, &instances_prefix(scope, subscription))
        .await?
        .into_iter()
        .map(|(_, v)| v.value)
        .collect())
}

pub async fn all_instances(
    store: &dyn Store,
) -> Result<Vec<Versioned<InstanceRecord>>, StoreError> {
    Ok(typed::list(store, "instances/")
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

pub async fn database(
    store: &dyn Store,
    id: &ManagedInstanceId,
    db: &str,
) -> Result<Option<Versioned<DatabaseRecord>>, StoreError> {
    typed::get(store, &database_key(id, db)).await
}

pub async fn databases(
    store: &dyn Store,
    id: &ManagedInstanceId,
) -> Result<Vec<Versioned<DatabaseRecord>>, StoreError> {
    Ok(typed::list(store, &databases_prefix(id))
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

pub async fn operation(
    store: &dyn Store,
    id: &str,
) -> Result<Option<Versioned<OperationRecord>>, StoreError> {
    typed::get(store, &operation_key(id)).await
}

/// Reads and opens an instance's credentials. A record that does not open with `cipher` is
/// a [`StoreError::Decode`] saying why (wrong key, damage).
pub async fn secret(
    store: &dyn Store,
    cipher: &SecretCipher,
    uid: &str,
) -> Result<Option<InstanceSecret>, StoreError> {
    let key = secret_key(uid);
    let Some(stored) = typed::get::<StoredSecret>(store, &key).await? else {
        return Ok(None);
    };
    match stored.value {
        StoredSecret::Plain(secret) => Ok(Some(secret)),
        StoredSecret::Sealed { sealed } => {
            let decode = |reason: String| StoreError::Decode {
                key: key.clone(),
                reason,
            };
            let json = cipher
                .open(key.as_bytes(), &sealed)
                .map_err(|e| decode(e.to_string()))?;
            serde_json::from_slice(&json)
                .map(Some)
                .map_err(|e| decode(format!("sealed value: {e}")))
        }
    }
}

/// The batch write that stores `secret` as `uid`'s credentials, sealed with `cipher`.
pub fn secret_put(
    cipher: &SecretCipher,
    uid: &str,
    secret: &InstanceSecret,
    precondition: Precondition,
) -> fog_store::Write {
    let key = secret_key(uid);
    let json = Zeroizing::new(serde_json::to_vec(secret).unwrap_or_default());
    let sealed = cipher.seal(key.as_bytes(), &json);
    typed::put(key, &StoredSecret::Sealed { sealed }, precondition)
}

/// Where a group lives: under its uid.
pub fn group_key(uid: &str) -> String {
    format!("{GROUPS_PREFIX}{uid}")
}

/// Where the [`FailoverGroupRecord`]s are.
pub const GROUPS_PREFIX: &str = "failover-groups/";

/// The index key of a group addressed at `(subscription, resource group, location)` by
/// `name`: every part canonical (lower case, the location without spaces).
pub fn group_at_key(
    subscription: &str,
    resource_group: &str,
    location: &str,
    name: &str,
) -> String {
    format!(
        "failover-group-at/{}/{}/{}/{}",
        subscription.to_ascii_lowercase(),
        fog_model::names::key(resource_group),
        fog_model::names::location_key(location),
        name.to_ascii_lowercase()
    )
}

/// The index key of a group's address at one member.
pub fn member_at_key(member: &Member, name: &str) -> String {
    group_at_key(
        &member.instance.scope.subscription,
        &member.instance.scope.resource_group,
        &member.location,
        name,
    )
}

/// The index key of the DNS record `{name}.{zone}`.
pub fn group_dns_key(zone: &str, name: &str) -> String {
    format!(
        "failover-group-dns/{}/{}",
        zone.to_ascii_lowercase(),
        name.to_ascii_lowercase()
    )
}

/// The value of a group's index keys: the uid they point at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupIndex {
    pub uid: String,
}

impl Persisted for GroupIndex {
    const FORMAT: u32 = 1;
}

/// A group's index keys: its address at each member, and its DNS record.
pub fn group_index_keys(g: &FailoverGroupRecord) -> [String; 3] {
    [
        member_at_key(&g.primary, &g.name),
        member_at_key(&g.secondary, &g.name),
        group_dns_key(&g.dns_zone, &g.name),
    ]
}

/// The writes that create a group's index keys, each only if absent.
pub fn group_index_puts(g: &FailoverGroupRecord) -> Vec<fog_store::Write> {
    let index = GroupIndex { uid: g.uid.clone() };
    group_index_keys(g)
        .into_iter()
        .map(|k| typed::put(k, &index, Precondition::Absent))
        .collect()
}

/// The writes that remove a group's index keys.
pub fn group_index_deletes(g: &FailoverGroupRecord) -> Vec<fog_store::Write> {
    group_index_keys(g)
        .into_iter()
        .map(|k| fog_store::Write::delete(k, Precondition::Any))
        .collect()
}

pub fn observed_key(uid: &str) -> String {
    format!("observed/failover-groups/{uid}")
}

pub fn instance_health_key(uid: &str) -> String {
    format!("observed/instances/{uid}")
}

/// Where a group's events are (by its uid).
pub fn events_prefix(group_uid: &str) -> String {
    format!("events/{group_uid}/")
}

/// Appends `event` to the history of the group with uid `group_uid` (a key of its own,
/// ordered by time).
pub fn event_write(group_uid: &str, event: &GroupEvent) -> fog_store::Write {
    let nanos = event.time.unix_timestamp_nanos().max(0);
    let nonce: u32 = rand::random();
    typed::put(
        format!("{}{nanos:020}-{nonce:08x}", events_prefix(group_uid)),
        event,
        fog_store::Precondition::Absent,
    )
}

/// A group's history, oldest first.
pub async fn events(store: &dyn Store, group_uid: &str) -> Result<Vec<GroupEvent>, StoreError> {
    let mut all: Vec<GroupEvent> = typed::list(store, &events_prefix(group_uid))
        .await?
        .into_iter()
        .map(|(_, v)| v.value)
        .collect();
    all.sort_by_key(|e| e.time);
    Ok(all)
}

/// Removes every event of the group with uid `group_uid` (a deleted group: a group created
/// again gets a new uid and a history of its own), in batches small enough for etcd.
pub async fn delete_events(store: &dyn Store, group_uid: &str) -> Result<(), StoreError> {
    let keys: Vec<String> = store
        .range(&events_prefix(group_uid))
        .await?
        .into_iter()
        .map(|r| r.key)
        .collect();
    for chunk in keys.chunks(100) {
        let deletes = chunk
            .iter()
            .map(|k| fog_store::Write::delete(k.clone(), fog_store::Precondition::Any))
            .collect();
        store.commit(deletes).await?;
    }
    Ok(())
}

/// How many events a group keeps; older ones are dropped.
pub const EVENTS_KEPT: usize = 1000;

/// Drops a group's oldest events beyond [`EVENTS_KEPT`].
pub async fn prune_events(store: &dyn Store, group_uid: &str) -> Result<(), StoreError> {
    let keys: Vec<String> = store
        .range(&events_prefix(group_uid))
        .await?
        .into_iter()
        .map(|r| r.key)
        .collect();
    if keys.len() <= EVENTS_KEPT {
        return Ok(());
    }
    let excess = keys.len() - EVENTS_KEPT;
    let mut sorted = keys;
    sorted.sort();
    let deletes = sorted
        .into_iter()
        .take(excess)
        .map(|k| fog_store::Write::delete(k, fog_store::Precondition::Any))
        .collect();
    store.commit(deletes).await.map(|_| ())
}

pub async fn instance_health(
    store: &dyn Store,
    uid: &str,
) -> Result<Option<InstanceHealth>, StoreError> {
    Ok(typed::get(store, &instance_health_key(uid))
        .await?
        .map(|v| v.value))
}

/// The listener ports last used by the DNS record `{name}.{zone}`.
pub fn listener_ports_key(zone: &str, name: &str) -> String {
    format!(
        "listener-ports/{}/{}",
        zone.to_ascii_lowercase(),
        name.to_ascii_lowercase()
    )
}

/// Where a fogd before group uids kept the listener ports of a group name (read when a
/// group of that name is created and its DNS record has no reservation of its own).
pub fn legacy_listener_ports_key(name: &str) -> String {
    format!("listener-ports/{}", name.to_ascii_lowercase())
}

/// The group with uid `uid`.
pub async fn group(
    store: &dyn Store,
    uid: &str,
) -> Result<Option<Versioned<FailoverGroupRecord>>, StoreError> {
    typed::get(store, &group_key(uid)).await
}

/// The group that an address `(subscription, resource group, location)` and a name
/// identify, if one has a member there; with which member that is.
pub async fn group_at(
    store: &dyn Store,
    subscription: &str,
    resource_group: &str,
    location: &str,
    name: &str,
) -> Result<Option<(Versioned<FailoverGroupRecord>, Side)>, StoreError> {
    let key = group_at_key(subscription, resource_group, location, name);
    let Some(index) = typed::get::<GroupIndex>(store, &key).await? else {
        return Ok(None);
    };
    let Some(g) = group(store, &index.value.uid).await? else {
        return Ok(None);
    };
    // The index is written and removed with the group; the record decides.
    let side = g
        .value
        .side(subscription, resource_group, location)
        .filter(|_| g.value.name.eq_ignore_ascii_case(name));
    Ok(side.map(|s| (g, s)))
}

/// The uid of the group that owns the DNS record `{name}.{zone}`, if any.
pub async fn group_with_dns_record(
    store: &dyn Store,
    zone: &str,
    name: &str,
) -> Result<Option<String>, StoreError> {
    Ok(typed::get::<GroupIndex>(store, &group_dns_key(zone, name))
        .await?
        .map(|v| v.value.uid))
}

pub async fn groups(store: &dyn Store) -> Result<Vec<Versioned<FailoverGroupRecord>>, StoreError> {
    Ok(typed::list(store, GROUPS_PREFIX)
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

pub async fn observed(store: &dyn Store, uid: &str) -> Result<Option<ObservedGroup>, StoreError> {
    Ok(typed::get(store, &observed_key(uid))
        .await?
        .map(|v| v.value))
}

pub async fn listener_reservation(
    store: &dyn Store,
    zone: &str,
    name: &str,
) -> Result<Option<ListenerReservation>, StoreError> {
    Ok(typed::get(store, &listener_ports_key(zone, name))
        .await?
        .map(|v| v.value))
}

/// Databases visible through an instance: its own, and — when it is in a group — those of
/// the other member too (they are the same physical databases, replicated).
pub async fn databases_of_group_member(
    store: &dyn Store,
    instance: &InstanceRecord,
) -> Result<Vec<Versioned<DatabaseRecord>>, StoreError> {
    let mut all = databases(store, &instance.id).await?;
    if let Some(uid) = &instance.failover_group {
        if let Some(g) = group(store, uid).await? {
            let other = if g.value.primary.instance.key() == instance.id.key() {
                &g.value.secondary.instance
            } else {
                &g.value.primary.instance
            };
            all.extend(databases(store, other).await?);
        }
    }
    all.sort_by(|a, b| {
        a.value
            .name
            .to_lowercase()
            .cmp(&b.value.name.to_lowercase())
    });
    all.dedup_by(|a, b| a.value.name.eq_ignore_ascii_case(&b.value.name));
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fog_model::health::EventKind;

    #[tokio::test]
    async fn events_come_back_in_order_and_only_the_newest_are_kept() {
        let store = fog_store::SqliteStore::in_memory().expect("store");
        let t0 = time::OffsetDateTime::UNIX_EPOCH;
        let writes: Vec<_> = (0..EVENTS_KEPT + 5)
            .map(|i| {
                let mut e = GroupEvent::new(EventKind::PrimaryUnavailable, 1, format!("e{i}"));
                e.time = t0 + time::Duration::seconds(i as i64);
                event_write("u1", &e)
            })
            .collect();
        store.commit(writes).await.expect("commit");
        prune_events(&store, "u1").await.expect("prune");
        let all = events(&store, "u1").await.expect("events");
        assert_eq!(all.len(), EVENTS_KEPT);
        assert_eq!(all[0].message, "e5", "the oldest five were dropped");
        assert!(all.windows(2).all(|w| w[0].time <= w[1].time));
        assert!(events(&store, "u2").await.expect("events").is_empty());
    }
}
