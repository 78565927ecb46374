//! What the health monitor observes, and the events a group's history is made of.
//!
//! [`ObservedGroup`] is the monitor's latest word on a group (replication state, lag, the
//! health of each side, a running automatic-failover countdown); [`InstanceHealth`] is the
//! per-instance record behind it. [`GroupEvent`]s are appended whenever something a DBA
//! would want to read about happens: role changes, fencing, data-loss reports, automatic
//! failover decisions, health changes.

use crate::failover_group::ReplicationState;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Health of one member as the monitor's probes see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// Probes succeed and the server plays its recorded role (a writable primary, a
    /// standby secondary).
    Healthy,
    /// Probes fail, or the server does not play its recorded role.
    Unavailable,
    /// Not probed yet (or not probed while an operation changes the group).
    #[default]
    Unknown,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "Healthy",
            Self::Unavailable => "Unavailable",
            Self::Unknown => "Unknown",
        }
    }
}

/// The observed state of one instance (format [`InstanceHealth::FORMAT`]), stored under
/// `observed/instances/{uid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceHealth {
    pub instance: String,
    pub status: Health,
    /// When `status` last changed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// The last probe that succeeded.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_ok: Option<OffsetDateTime>,
    /// Why the last probe failed.
    pub last_error: Option<String>,
    /// The server answered as a standby.
    pub in_recovery: Option<bool>,
    /// The write probe succeeded (probed on primaries only).
    pub writable: Option<bool>,
}

impl InstanceHealth {
    pub const FORMAT: u32 = 1;
}

/// One member's health in the group observation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHealth {
    pub status: Health,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub since: Option<OffsetDateTime>,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A running automatic-failover countdown: the primary has been unavailable since
/// `since`; unless it recovers, fogd fails over at `due`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Countdown {
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub due: OffsetDateTime,
}

/// What the health monitor last saw of a group (format [`ObservedGroup::FORMAT`]), stored
/// under `observed/failover-groups/{uid}` (the group's [`crate::FailoverGroupRecord::uid`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedGroup {
    pub replication_state: ReplicationState,
    pub primary_available: bool,
    /// The secondary is a streaming-capable standby that may serve read-only traffic.
    pub secondary_available: bool,
    /// The group generation the observation was made under.
    pub generation: u64,
    #[serde(default)]
    pub primary: MemberHealth,
    #[serde(default)]
    pub secondary: MemberHealth,
    /// WAL the primary has written that the secondary has not replayed.
    #[serde(default)]
    pub lag_bytes: Option<u64>,
    /// How far behind the secondary's replay is, in milliseconds (0 when in sync).
    #[serde(default)]
    pub lag_ms: Option<u64>,
    /// The last observation at which the secondary had replayed everything the primary had
    /// written.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_in_sync: Option<OffsetDateTime>,
    /// Since when the primary has been unavailable without interruption.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub primary_unavailable_since: Option<OffsetDateTime>,
    /// The automatic-failover countdown, when one runs.
    #[serde(default)]
    pub countdown: Option<Countdown>,
    /// When this observation was made.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub at: Option<OffsetDateTime>,
    /// The last time the secondary was seen streaming from the current primary.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub secondary_streaming_at: Option<OffsetDateTime>,
    /// Since when the secondary, reachable and in recovery, has not streamed from a
    /// primary that is up: it falls behind, and fogd repairs it once this lasts too long.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub secondary_stalled_since: Option<OffsetDateTime>,
    /// Since when the read-write failover policy has been `Automatic` (as observed): the
    /// grace period never counts time before it.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub automatic_since: Option<OffsetDateTime>,
}

impl ObservedGroup {
    pub const FORMAT: u32 = 1;
}

/// What kind of thing happened to a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    GroupCreated,
    FailoverStarted,
    Fenced,
    RoleChanged,
    DataLoss,
    FailoverFinished,
    FailoverAborted,
    OldPrimaryRejoined,
    RejoinFailed,
    StalePrimaryDetected,
    PrimaryUnavailable,
    PrimaryRecovered,
    SecondaryUnavailable,
    SecondaryRecovered,
    AutomaticFailoverCountdownStarted,
    AutomaticFailoverCountdownCancelled,
    AutomaticFailoverTriggered,
    AutomaticFailoverBlocked,
    SecondaryRepairStarted,
    ServerRestarted,
}

/// One entry of a group's history (format [`GroupEvent::FORMAT`]), stored under
/// `events/{group}/{time}-{nonce}` so that a range read returns them in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEvent {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub kind: EventKind,
    pub message: String,
    pub generation: u64,
}

impl GroupEvent {
    pub const FORMAT: u32 = 1;

    pub fn new(kind: EventKind, generation: u64, message: impl Into<String>) -> Self {
        Self {
            time: OffsetDateTime::now_utc(),
            kind,
            message: message.into(),
            generation,
        }
    }

    /// The event as the events resource shows it.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "time": rfc3339(self.time),
            "type": serde_json::to_value(self.kind).unwrap_or_default(),
            "message": self.message,
            "generation": self.generation,
        })
    }
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl ObservedGroup {
    /// Read-only extension properties of the group view: health of each side, replication
    /// lag, the last time the secondary was in sync, a running countdown.
    pub fn view_properties(&self, props: &mut serde_json::Value) {
        let member = |m: &MemberHealth| {
            let mut v = serde_json::json!({ "status": m.status.as_str() });
            if let Some(s) = m.since {
                v["since"] = rfc3339(s).into();
            }
            if let Some(e) = &m.last_error {
                v["lastError"] = e.clone().into();
            }
            v
        };
        props["health"] = serde_json::json!({
            "primary": member(&self.primary),
            "secondary": member(&self.secondary),
        });
        let mut lag = serde_json::json!({});
        if let Some(b) = self.lag_bytes {
            lag["bytes"] = b.into();
        }
        if let Some(ms) = self.lag_ms {
            lag["seconds"] = (ms as f64 / 1000.0).into();
        }
        props["replicationLag"] = lag;
        if let Some(t) = self.last_in_sync {
            props["lastInSyncTime"] = rfc3339(t).into();
        }
        if let Some(c) = &self.countdown {
            props["automaticFailover"] = serde_json::json!({
                "primaryUnavailableSince": rfc3339(c.since),
                "failoverAt": rfc3339(c.due),
            });
        }
        if let Some(t) = self.at {
            props["observedAt"] = rfc3339(t).into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_observations_still_decode() {
        let old = r#"{"replication_state":"CATCH_UP","primary_available":true,"secondary_available":false,"generation":3}"#;
        let o: ObservedGroup = serde_json::from_str(old).unwrap();
        assert_eq!(o.primary.status, Health::Unknown);
        assert_eq!(o.lag_bytes, None);
        assert!(o.countdown.is_none());
    }

    #[test]
    fn view_shows_health_lag_and_countdown() {
        let t = OffsetDateTime::UNIX_EPOCH;
        let o = ObservedGroup {
            replication_state: ReplicationState::Suspended,
            primary_available: false,
            secondary_available: true,
            generation: 2,
            primary: MemberHealth {
                status: Health::Unavailable,
                since: Some(t),
                last_error: Some("connection refused".into()),
            },
            secondary: MemberHealth {
                status: Health::Healthy,
                since: None,
                last_error: None,
            },
            lag_bytes: None,
            lag_ms: Some(1500),
            last_in_sync: Some(t),
            primary_unavailable_since: Some(t),
            countdown: Some(Countdown { since: t, due: t }),
            at: Some(t),
            secondary_streaming_at: None,
            secondary_stalled_since: None,
            automatic_since: None,
        };
        let mut p = serde_json::json!({});
        o.view_properties(&mut p);
        assert_eq!(p["health"]["primary"]["status"], "Unavailable");
        assert_eq!(p["health"]["primary"]["lastError"], "connection refused");
        assert_eq!(p["health"]["secondary"]["status"], "Healthy");
        assert_eq!(p["replicationLag"]["seconds"], 1.5);
        assert!(p["replicationLag"].get("bytes").is_none());
        assert_eq!(p["automaticFailover"]["failoverAt"], "1970-01-01T00:00:00Z");
        let e = GroupEvent::new(EventKind::AutomaticFailoverTriggered, 4, "why");
        assert_eq!(e.view()["type"], "AutomaticFailoverTriggered");
    }
}
