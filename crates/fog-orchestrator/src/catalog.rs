//! Where each persisted type lives in the store, and typed reads of it.
//!
//! Key layout (all keys lower-case in their name parts, so ARM's case-insensitive names map
//! to one key):
//!
//! | key | value |
//! | --- | --- |
//! | `instances/{sub}/{rg}/{name}` | [`InstanceRecord`] |
//! | `secrets/{uid}` | [`InstanceSecret`] (never rendered to clients) |
//! | `databases/{sub}/{rg}/{mi}/{db}` | [`DatabaseRecord`] |
//! | `operations/{id}` | [`OperationRecord`] |

use fog_model::{DatabaseRecord, InstanceRecord, ManagedInstanceId, OperationRecord, Scope};
use fog_store::typed::{self, Persisted, Versioned};
use fog_store::{Store, StoreError};
use serde::{Deserialize, Serialize};

/// Credentials fogd keeps for managing a server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSecret {
    pub superuser_password: String,
}

impl Persisted for InstanceSecret {
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

pub fn secret_key(uid: &str) -> String {
    format!("secrets/{uid}")
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

pub async fn secret(store: &dyn Store, uid: &str) -> Result<Option<InstanceSecret>, StoreError> {
    Ok(typed::get(store, &secret_key(uid)).await?.map(|v| v.value))
}
