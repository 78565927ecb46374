//! `Microsoft.Sql/managedInstances/databases`: body, record and view.

use crate::body::enum_value;
use crate::{names, ArmError, ManagedInstanceId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

pub const RESOURCE_TYPE: &str = "Microsoft.Sql/managedInstances/databases";
/// `createMode` values fogd can honour (restores are not offered).
pub const CREATE_MODES: &[&str] = &["Default"];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseBody {
    pub location: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub properties: Option<DatabasePropertiesBody>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabasePropertiesBody {
    pub collation: Option<String>,
    pub create_mode: Option<String>,
}

/// A validated create request.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSpec {
    pub tags: BTreeMap<String, String>,
    pub collation: String,
}

impl DatabaseBody {
    /// Validates a create on `instance_location`; `location` defaults to the instance's and
    /// must match it when given.
    pub fn into_create_spec(self, instance_location: &str) -> Result<DatabaseSpec, ArmError> {
        if let Some(loc) = &self.location {
            names::validate_location(loc)?;
            if names::location_key(loc) != instance_location {
                return Err(
                    ArmError::invalid_parameter_value("location", loc).with_target("location")
                );
            }
        }
        let props = self.properties.unwrap_or_default();
        if let Some(mode) = &props.create_mode {
            enum_value(mode, CREATE_MODES, "properties.createMode")?;
        }
        let collation = props
            .collation
            .unwrap_or_else(|| crate::instance::DEFAULT_COLLATION.to_string());
        if collation.is_empty() || collation.len() > 128 {
            return Err(
                ArmError::invalid_parameter_value("properties.collation", &collation)
                    .with_target("properties.collation"),
            );
        }
        Ok(DatabaseSpec {
            tags: self.tags.unwrap_or_default(),
            collation,
        })
    }
}

/// `status` of a managed database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DatabaseStatus {
    Creating,
    Online,
    Stopping,
}

impl DatabaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "Creating",
            Self::Online => "Online",
            Self::Stopping => "Stopping",
        }
    }
}

/// The persisted managed database (format [`DatabaseRecord::FORMAT`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseRecord {
    pub instance: ManagedInstanceId,
    pub instance_uid: String,
    pub name: String,
    pub location: String,
    pub tags: BTreeMap<String, String>,
    pub collation: String,
    pub status: DatabaseStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub creation_date: OffsetDateTime,
    pub active_operation: Option<String>,
}

impl DatabaseRecord {
    pub const FORMAT: u32 = 1;

    pub fn id(&self) -> String {
        format!("{}/databases/{}", self.instance, self.name)
    }

    /// The JSON clients see.
    pub fn view(&self) -> serde_json::Value {
        self.view_as(&self.instance, &self.location, None)
    }

    /// The view through `instance` (either member of a group), with `failoverGroupId`.
    pub fn view_as(
        &self,
        instance: &ManagedInstanceId,
        location: &str,
        failover_group_id: Option<&str>,
    ) -> serde_json::Value {
        let created = self
            .creation_date
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut v = serde_json::json!({
            "id": format!("{}/databases/{}", instance, self.name),
            "name": self.name,
            "type": RESOURCE_TYPE,
            "location": location,
            "tags": self.tags,
            "properties": {
                "collation": self.collation,
                "status": self.status.as_str(),
                "creationDate": created,
                "earliestRestorePoint": created,
                "isLedgerOn": false,
            }
        });
        if let Some(id) = failover_group_id {
            v["properties"]["failoverGroupId"] = id.into();
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::parse;

    #[test]
    fn create_defaults_and_checks_location() {
        let s = parse::<DatabaseBody>(br#"{"properties":{"createMode":"default"}}"#)
            .unwrap()
            .into_create_spec("eastus")
            .unwrap();
        assert_eq!(s.collation, crate::instance::DEFAULT_COLLATION);
        let e = parse::<DatabaseBody>(br#"{"location":"westus"}"#)
            .unwrap()
            .into_create_spec("eastus")
            .unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.target.as_deref()),
            ("InvalidParameterValue", Some("location"))
        );
        let e = parse::<DatabaseBody>(br#"{"properties":{"createMode":"PointInTimeRestore"}}"#)
            .unwrap()
            .into_create_spec("eastus")
            .unwrap_err();
        assert_eq!(e.target.as_deref(), Some("properties.createMode"));
    }
}
