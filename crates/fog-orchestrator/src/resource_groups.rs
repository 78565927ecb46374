//! Resource groups (`Microsoft.Resources/resourceGroups`).
//!
//! A resource group exists **implicitly** while it holds a managed instance: creating an
//! instance never requires `az group create` first (so every client that worked before
//! resource groups existed still works), and such a group is listed with its first
//! instance's location. `PUT` records one explicitly (`resource-groups/{sub}/{rg}`, with
//! its location and tags); deleting a group that still holds instances is refused
//! (`ResourceGroupNotEmpty`, 409) — fogd does not cascade deletes.

use crate::catalog;
use fog_model::{ArmError, Scope};
use fog_store::typed::{self, Persisted};
use fog_store::{Precondition, Store, StoreError, Write};
use std::collections::BTreeMap;

/// An explicitly created resource group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResourceGroupRecord {
    pub subscription: String,
    pub name: String,
    pub location: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl Persisted for ResourceGroupRecord {
    const FORMAT: u32 = 1;
}

/// A resource group as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceGroup {
    pub record: ResourceGroupRecord,
    /// Not created explicitly: it exists because it holds instances.
    pub implicit: bool,
}

impl ResourceGroup {
    pub fn view(&self) -> serde_json::Value {
        let r = &self.record;
        serde_json::json!({
            "id": format!("/subscriptions/{}/resourceGroups/{}", r.subscription, r.name),
            "name": r.name,
            "type": "Microsoft.Resources/resourceGroups",
            "location": r.location,
            "tags": r.tags,
            "properties": { "provisioningState": "Succeeded" },
        })
    }
}

fn key(scope: &Scope) -> String {
    format!("resource-groups/{}", scope.key())
}

fn prefix(subscription: &str) -> String {
    format!("resource-groups/{subscription}/")
}

fn store_err(e: StoreError) -> ArmError {
    tracing::error!(error = %e, "store failure");
    ArmError::internal("the metadata store failed")
}

/// `ResourceGroupNotFound` (404), ARM's wording.
pub fn not_found(name: &str) -> ArmError {
    ArmError::new(
        404,
        "ResourceGroupNotFound",
        format!("Resource group '{name}' could not be found."),
    )
}

/// The group at `scope`, explicit or implicit.
pub async fn get(store: &dyn Store, scope: &Scope) -> Result<Option<ResourceGroup>, ArmError> {
    if let Some(v) = typed::get::<ResourceGroupRecord>(store, &key(scope))
        .await
        .map_err(store_err)?
    {
        return Ok(Some(ResourceGroup {
            record: v.value,
            implicit: false,
        }));
    }
    let instances = catalog::instances(store, Some(scope), &scope.subscription)
        .await
        .map_err(store_err)?;
    Ok(instances.first().map(|i| ResourceGroup {
        record: ResourceGroupRecord {
            subscription: scope.subscription.clone(),
            name: i.id.scope.resource_group.clone(),
            location: i.location.clone(),
            tags: BTreeMap::new(),
        },
        implicit: true,
    }))
}

/// Every group of a subscription, explicit and implicit, by name.
pub async fn list(store: &dyn Store, subscription: &str) -> Result<Vec<ResourceGroup>, ArmError> {
    let mut groups: BTreeMap<String, ResourceGroup> = BTreeMap::new();
    for (_, v) in typed::list::<ResourceGroupRecord>(store, &prefix(subscription))
        .await
        .map_err(store_err)?
    {
        groups.insert(
            v.value.name.to_lowercase(),
            ResourceGroup {
                record: v.value,
                implicit: false,
            },
        );
    }
    for i in catalog::instances(store, None, subscription)
        .await
        .map_err(store_err)?
    {
        let name = i.id.scope.resource_group.clone();
        groups
            .entry(name.to_lowercase())
            .or_insert_with(|| ResourceGroup {
                record: ResourceGroupRecord {
                    subscription: subscription.to_string(),
                    name,
                    location: i.location.clone(),
                    tags: BTreeMap::new(),
                },
                implicit: true,
            });
    }
    Ok(groups.into_values().collect())
}

/// Creates or updates the group at `scope`; `true` when it was created. Its location
/// cannot change (`InvalidResourceGroupLocation`, 409).
pub async fn put(
    store: &dyn Store,
    scope: &Scope,
    location: &str,
    tags: BTreeMap<String, String>,
) -> Result<(ResourceGroup, bool), ArmError> {
    let existing = typed::get::<ResourceGroupRecord>(store, &key(scope))
        .await
        .map_err(store_err)?;
    let current = get(store, scope).await?;
    if let Some(current) = &current {
        if normalize(&current.record.location) != normalize(location) {
            return Err(ArmError::new(
                409,
                "InvalidResourceGroupLocation",
                format!(
                    "Invalid resource group location '{location}'. The Resource group already exists in location '{}'.",
                    current.record.location
                ),
            ));
        }
    }
    let record = ResourceGroupRecord {
        subscription: scope.subscription.clone(),
        name: current
            .as_ref()
            .map(|c| c.record.name.clone())
            .unwrap_or_else(|| scope.resource_group.clone()),
        location: current
            .as_ref()
            .map(|c| c.record.location.clone())
            .unwrap_or_else(|| location.to_string()),
        tags,
    };
    let precondition = match &existing {
        Some(v) => Precondition::Revision(v.revision),
        None => Precondition::Absent,
    };
    store
        .commit(vec![typed::put(key(scope), &record, precondition)])
        .await
        .map_err(|e| match e {
            StoreError::Conflict { .. } => ArmError::new(
                409,
                "Conflict",
                "The resource group changed while it was written; try again.",
            ),
            e => store_err(e),
        })?;
    Ok((
        ResourceGroup {
            record,
            implicit: false,
        },
        current.is_none(),
    ))
}

/// Deletes the group at `scope`, refused while it holds instances.
pub async fn delete(store: &dyn Store, scope: &Scope) -> Result<(), ArmError> {
    let Some(current) = get(store, scope).await? else {
        return Err(not_found(&scope.resource_group));
    };
    let instances = catalog::instances(store, Some(scope), &scope.subscription)
        .await
        .map_err(store_err)?;
    if !instances.is_empty() {
        let names: Vec<_> = instances.iter().map(|i| i.id.name.as_str()).collect();
        return Err(ArmError::new(
            409,
            "ResourceGroupNotEmpty",
            format!(
                "Resource group '{}' still holds the managed instances {}; fogd does not delete them with their group: delete them first.",
                current.record.name,
                names.join(", ")
            ),
        ));
    }
    store
        .commit(vec![Write::delete(key(scope), Precondition::Any)])
        .await
        .map_err(store_err)?;
    Ok(())
}

/// `East US` ≡ `eastus`.
fn normalize(location: &str) -> String {
    location.replace(' ', "").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fog_store::MemoryStore;

    #[tokio::test]
    async fn explicit_groups_round_trip_and_keep_their_location() {
        let store = MemoryStore::new();
        let sub = "00000000-0000-0000-0000-000000000001";
        let scope = Scope::parse(sub, "Rg1").expect("scope");
        assert!(get(&store, &scope).await.expect("get").is_none());
        let (g, created) = put(&store, &scope, "eastus", BTreeMap::new())
            .await
            .expect("put");
        assert!(created && !g.implicit);
        let tags = BTreeMap::from([("env".to_string(), "ci".to_string())]);
        let (g, created) = put(&store, &scope, "East US", tags).await.expect("update");
        assert!(!created);
        assert_eq!(g.view()["tags"]["env"], "ci");
        let e = put(&store, &scope, "westus", BTreeMap::new())
            .await
            .expect_err("moved");
        assert_eq!(
            (e.status, e.code.as_str()),
            (409, "InvalidResourceGroupLocation")
        );
        let other = Scope::parse(sub, "rg1").expect("scope");
        assert_eq!(
            get(&store, &other)
                .await
                .expect("get")
                .expect("same")
                .record
                .name,
            "Rg1"
        );
        assert_eq!(list(&store, sub).await.expect("list").len(), 1);
        delete(&store, &scope).await.expect("delete");
        let e = delete(&store, &scope).await.expect_err("gone");
        assert_eq!((e.status, e.code.as_str()), (404, "ResourceGroupNotFound"));
    }
}
