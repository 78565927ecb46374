//! Typed ARM resource ids.

use crate::{names, ArmError};
use serde::{Deserialize, Serialize};

/// Where a resource lives: subscription and resource group, as the client spelled them
/// (subscription canonicalised to lower case).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scope {
    pub subscription: String,
    pub resource_group: String,
}

impl Scope {
    /// Validates both segments; the subscription comes back lower-cased.
    pub fn parse(subscription: &str, resource_group: &str) -> Result<Self, ArmError> {
        let subscription = names::validate_subscription(subscription)?;
        names::validate_resource_group(resource_group)?;
        Ok(Self {
            subscription,
            resource_group: resource_group.to_string(),
        })
    }

    /// Canonical key fragment `{sub}/{rg}` for lookups.
    pub fn key(&self) -> String {
        format!("{}/{}", self.subscription, names::key(&self.resource_group))
    }

    /// `/subscriptions/{sub}/resourceGroups/{rg}`.
    pub fn path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            self.subscription, self.resource_group
        )
    }
}

/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Sql/managedInstances/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ManagedInstanceId {
    pub scope: Scope,
    pub name: String,
}

impl ManagedInstanceId {
    /// Names are matched case-insensitively, so an existing `mi-1` may be addressed as
    /// `MI-1`; creating an instance checks the exact spelling separately.
    pub fn new(scope: Scope, name: &str) -> Result<Self, ArmError> {
        names::validate_instance_name(&name.to_ascii_lowercase())?;
        Ok(Self {
            scope,
            name: name.to_string(),
        })
    }

    /// Parses a full ARM id, case-insensitively in its fixed segments.
    pub fn parse(id: &str) -> Result<Self, ArmError> {
        let parts: Vec<&str> = id.trim_end_matches('/').split('/').collect();
        let fixed = [
            (1, "subscriptions"),
            (3, "resourcegroups"),
            (5, "providers"),
            (6, "microsoft.sql"),
            (7, "managedinstances"),
        ];
        let shape_ok = parts.len() == 9
            && parts[0].is_empty()
            && fixed.iter().all(|(i, s)| parts[*i].eq_ignore_ascii_case(s));
        if !shape_ok {
            return Err(ArmError::invalid_server_name());
        }
        let scope = Scope::parse(parts[2], parts[4])?;
        Self::new(scope, parts[8])
    }

    /// Canonical store key fragment `{sub}/{rg}/{name}`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.scope.key(), names::key(&self.name))
    }
}

impl std::fmt::Display for ManagedInstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/providers/Microsoft.Sql/managedInstances/{}",
            self.scope.path(),
            self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_insensitively_and_round_trips() {
        let raw = "/SUBSCRIPTIONS/00000000-1111-2222-3333-44444444444A/resourcegroups/Rg1/Providers/microsoft.sql/MANAGEDINSTANCES/mi-1";
        let id = ManagedInstanceId::parse(raw).unwrap();
        assert_eq!(
            id.scope.subscription,
            "00000000-1111-2222-3333-44444444444a"
        );
        assert_eq!(id.scope.resource_group, "Rg1");
        assert_eq!(
            id.to_string(),
            "/subscriptions/00000000-1111-2222-3333-44444444444a/resourceGroups/Rg1/providers/Microsoft.Sql/managedInstances/mi-1"
        );
        assert_eq!(id.key(), "00000000-1111-2222-3333-44444444444a/rg1/mi-1");
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "/subscriptions/x",
            "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.Sql/servers/a",
            "subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/a",
        ] {
            assert!(ManagedInstanceId::parse(bad).is_err(), "{bad}");
        }
        let bad_name = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/BAD_";
        assert_eq!(
            ManagedInstanceId::parse(bad_name).unwrap_err().code,
            "InvalidServerName"
        );
    }
}
