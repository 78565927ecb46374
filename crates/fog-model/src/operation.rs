//! Long-running operations as persisted records.
//!
//! An [`OperationRecord`] is written when a request is accepted and rewritten after every
//! step, so its status URL keeps answering across restarts and the orchestrator can resume
//! it from the last step it finished.

use crate::{ArmError, ManagedInstanceId, Scope};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Which family of status URLs an operation is served under
/// (`…/{kind}AzureAsyncOperation/{id}` and `…/{kind}OperationResults/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationKind {
    ManagedInstance,
    ManagedDatabase,
    InstanceFailoverGroup,
}

impl OperationKind {
    /// The URL prefix of the kind, e.g. `managedInstance`.
    pub fn url_prefix(self) -> &'static str {
        match self {
            Self::ManagedInstance => "managedInstance",
            Self::ManagedDatabase => "managedDatabase",
            Self::InstanceFailoverGroup => "instanceFailoverGroup",
        }
    }

    pub fn from_url_prefix(prefix: &str) -> Option<Self> {
        [
            Self::ManagedInstance,
            Self::ManagedDatabase,
            Self::InstanceFailoverGroup,
        ]
        .into_iter()
        .find(|k| k.url_prefix().eq_ignore_ascii_case(prefix))
    }
}

/// What the operation does. The payload carries everything a resumed run needs; secrets are
/// carried only as PostgreSQL SCRAM verifiers, never in clear text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Action {
    CreateInstance {
        instance: ManagedInstanceId,
        admin_password_verifier: String,
    },
    UpdateInstance {
        instance: ManagedInstanceId,
        /// The record as it should be once the update is done.
        target: Box<crate::InstanceRecord>,
        admin_password_verifier: Option<String>,
    },
    DeleteInstance {
        instance: ManagedInstanceId,
    },
    CreateDatabase {
        instance: ManagedInstanceId,
        database: String,
    },
    /// A change to a database's changeable properties (its tags: metadata only). Before
    /// this action existed an update was recorded, already `Succeeded`, as a
    /// `CreateDatabase`; such records still read (and render the database as their result).
    UpdateDatabase {
        instance: ManagedInstanceId,
        database: String,
        /// The tags once the update is done.
        tags: std::collections::BTreeMap<String, String>,
    },
    DeleteDatabase {
        instance: ManagedInstanceId,
        database: String,
    },
    CreateFailoverGroup {
        name: String,
        /// The group's uid ([`crate::FailoverGroupRecord::uid`]). Empty in records written
        /// before uids: see [`Action::group`].
        #[serde(default)]
        uid: String,
    },
    UpdateFailoverGroup {
        name: String,
        #[serde(default)]
        uid: String,
        policies: crate::failover_group::Policies,
    },
    DeleteFailoverGroup {
        name: String,
        #[serde(default)]
        uid: String,
    },
    /// Planned failover (no data loss) or forced failover (`planned: false`).
    FailoverGroup {
        name: String,
        #[serde(default)]
        uid: String,
        planned: bool,
        /// Why fogd started it by itself (automatic failover); `None` for API requests.
        #[serde(default)]
        automatic: Option<String>,
    },
    /// Re-attaches a former primary as the group's secondary (fence, rewind, follow,
    /// link): started by the health monitor once the old primary is reachable again, or
    /// to repair a secondary that stopped streaming.
    RejoinGroup {
        name: String,
        #[serde(default)]
        uid: String,
        /// Re-seed with a base backup instead of rewinding (a repair that rewinding did
        /// not fix).
        #[serde(default)]
        reseed: bool,
    },
}

impl Action {
    /// The failover group a group operation works on: its uid and name. An operation
    /// written before groups had uids names its group only; that group's uid is then
    /// [`crate::failover_group::legacy_uid`] of the name, the one the start-up migration
    /// gives it.
    pub fn group(&self) -> Option<(String, &str)> {
        match self {
            Action::CreateFailoverGroup { name, uid }
            | Action::UpdateFailoverGroup { name, uid, .. }
            | Action::DeleteFailoverGroup { name, uid }
            | Action::FailoverGroup { name, uid, .. }
            | Action::RejoinGroup { name, uid, .. } => {
                let uid = if uid.is_empty() {
                    crate::failover_group::legacy_uid(name)
                } else {
                    uid.clone()
                };
                Some((uid, name.as_str()))
            }
            _ => None,
        }
    }

    /// Whether the final result is "gone" (DELETE: the result URL answers 204).
    pub fn is_delete(&self) -> bool {
        matches!(
            self,
            Action::DeleteInstance { .. }
                | Action::DeleteDatabase { .. }
                | Action::DeleteFailoverGroup { .. }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationStatus {
    InProgress,
    Succeeded,
    Failed,
    Canceled,
}

impl OperationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Canceled => "Canceled",
        }
    }

    pub fn is_terminal(self) -> bool {
        self != Self::InProgress
    }
}

/// The persisted operation (format [`OperationRecord::FORMAT`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationRecord {
    pub id: String,
    pub kind: OperationKind,
    /// Scope and location segment the request addressed; the status URLs reuse them.
    pub scope: Scope,
    pub location: String,
    pub api_version: String,
    pub action: Action,
    pub status: OperationStatus,
    /// Name of the next step to run; each step is idempotent, so a resumed run repeats at
    /// most the step it was in.
    pub step: String,
    pub percent_complete: Option<u8>,
    #[serde(with = "time::serde::rfc3339")]
    pub start_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub end_time: Option<OffsetDateTime>,
    pub error: Option<ArmError>,
    /// How many times a run of this operation was started (more than one after restarts).
    pub attempts: u32,
}

impl OperationRecord {
    pub const FORMAT: u32 = 1;

    /// The operation-status resource body (`…AzureAsyncOperation/{id}`).
    pub fn status_view(&self) -> serde_json::Value {
        let fmt = |t: &OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        let mut v = serde_json::json!({
            "id": format!("/subscriptions/{}/providers/Microsoft.Sql/locations/{}/{}AzureAsyncOperation/{}",
                self.scope.subscription, self.location, self.kind.url_prefix(), self.id),
            "name": self.id,
            "status": self.status.as_str(),
            "startTime": fmt(&self.start_time),
        });
        if let Some(end) = &self.end_time {
            v["endTime"] = fmt(end).into();
        }
        if let Some(p) = self.percent_complete {
            v["percentComplete"] = p.into();
        }
        if let Some(e) = &self.error {
            v["error"] = e.envelope()["error"].clone();
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_view_has_what_pollers_read() {
        let mut op = OperationRecord {
            id: "op1".into(),
            kind: OperationKind::ManagedInstance,
            scope: Scope::parse("00000000-1111-2222-3333-444444444444", "rg").unwrap(),
            location: "eastus".into(),
            api_version: "2025-01-01".into(),
            action: Action::DeleteInstance {
                instance: ManagedInstanceId::parse("/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/mi").unwrap(),
            },
            status: OperationStatus::InProgress,
            step: "stop".into(),
            percent_complete: None,
            start_time: OffsetDateTime::UNIX_EPOCH,
            end_time: None,
            error: None,
            attempts: 1,
        };
        let v = op.status_view();
        assert_eq!(v["status"], "InProgress");
        assert!(v.get("error").is_none() && v.get("resourceLocation").is_none());
        op.status = OperationStatus::Failed;
        op.error = Some(ArmError::operation_timed_out());
        op.end_time = Some(OffsetDateTime::UNIX_EPOCH);
        let v = op.status_view();
        assert_eq!(v["error"]["code"], "OperationTimedOut");
        assert_eq!(v["endTime"], "1970-01-01T00:00:00Z");
        assert_eq!(
            OperationKind::from_url_prefix("MANAGEDINSTANCE"),
            Some(OperationKind::ManagedInstance)
        );
    }

    #[test]
    fn a_group_action_of_an_older_fogd_finds_its_group_by_legacy_uid() {
        let old: Action = serde_json::from_str(
            r#"{"type":"FailoverGroup","name":"Fog-1","planned":true,"automatic":null}"#,
        )
        .unwrap();
        assert_eq!(old.group(), Some(("legacy.fog-1".to_string(), "Fog-1")));
        let new = Action::DeleteFailoverGroup {
            name: "fog-1".into(),
            uid: "u-1".into(),
        };
        let back: Action = serde_json::from_value(serde_json::to_value(&new).unwrap()).unwrap();
        assert_eq!(back.group(), Some(("u-1".to_string(), "fog-1")));
        assert_eq!(
            Action::DeleteInstance {
                instance: ManagedInstanceId::parse("/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/mi").unwrap(),
            }
            .group(),
            None
        );
    }
}
