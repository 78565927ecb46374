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

/// A validated change to an existing database (PATCH, or PUT on an existing name). Tags
/// are the only property a managed database lets one change; the rest is fixed at creation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatabaseChanges {
    /// The new tags (a PUT replaces them, absent meaning none; a PATCH only when given).
    pub tags: Option<BTreeMap<String, String>>,
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

impl DatabaseBody {
    /// Validates a change to `existing`. `replace` is PUT's semantics (the body is the whole
    /// resource: absent tags mean no tags); PATCH changes only what it names. A different
    /// value for a create-only property (`location`, `collation`) is refused.
    pub fn into_changes(
        self,
        existing: &DatabaseRecord,
        replace: bool,
    ) -> Result<DatabaseChanges, ArmError> {
        if let Some(loc) = &self.location {
            names::validate_location(loc)?;
            if names::location_key(loc) != existing.location {
                return Err(
                    ArmError::invalid_parameter_value("location", loc).with_target("location")
                );
            }
        }
        let props = self.properties.unwrap_or_default();
        if let Some(mode) = &props.create_mode {
            enum_value(mode, CREATE_MODES, "properties.createMode")?;
        }
        if let Some(c) = &props.collation {
            if !c.eq_ignore_ascii_case(&existing.collation) {
                return Err(ArmError::property_change_not_allowed("collation")
                    .with_target("properties.collation"));
            }
        }
        let tags = match (self.tags, replace) {
            (Some(t), _) => Some(t),
            (None, true) => Some(BTreeMap::new()),
            (None, false) => None,
        };
        Ok(DatabaseChanges { tags })
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

    #[test]
    fn changes_replace_or_patch_tags_and_keep_create_only_properties() {
        let rec = DatabaseRecord {
            instance: ManagedInstanceId::parse("/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/mi").unwrap(),
            instance_uid: "u".into(),
            name: "db".into(),
            location: "eastus".into(),
            tags: BTreeMap::from([("a".to_string(), "1".to_string())]),
            collation: crate::instance::DEFAULT_COLLATION.into(),
            status: DatabaseStatus::Online,
            creation_date: OffsetDateTime::UNIX_EPOCH,
            active_operation: None,
        };
        let change = |json: &str, replace: bool| {
            parse::<DatabaseBody>(json.as_bytes()).and_then(|b| b.into_changes(&rec, replace))
        };
        let c = change(r#"{"tags":{"env":"prod"}}"#, false).unwrap();
        assert_eq!(c.tags.unwrap().get("env").map(String::as_str), Some("prod"));
        assert_eq!(change("{}", false).unwrap().tags, None);
        assert_eq!(change("{}", true).unwrap().tags, Some(BTreeMap::new()));
        let c = change(
            r#"{"location":"East US","properties":{"collation":"sql_latin1_general_cp1_ci_as"},"tags":{}}"#,
            true,
        )
        .unwrap();
        assert_eq!(c.tags, Some(BTreeMap::new()));
        let e = change(
            r#"{"properties":{"collation":"Latin1_General_100_CI_AS"}}"#,
            false,
        )
        .unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str(), e.target.as_deref()),
            (
                409,
                "PropertyChangeNotAllowed",
                Some("properties.collation")
            )
        );
        let e = change(r#"{"location":"westus"}"#, true).unwrap_err();
        assert_eq!(e.target.as_deref(), Some("location"));
    }
}
