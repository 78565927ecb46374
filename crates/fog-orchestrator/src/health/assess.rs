//! The health monitor's judgement as a pure function: from the group record, the previous
//! observation and this round's probes of both members, [`assess`] derives the new
//! observation, the events a DBA should read, the automatic-failover decision and what
//! fogd should do next. No I/O and no clock: `now` is an argument, so every rule is
//! table-tested below.
//!
//! The rules, in short:
//! - the primary is healthy when it is writable (the heartbeat committed);
//! - the secondary is healthy while its WAL receiver streams from the primary's port, or
//!   has stalled for less than `2 × probe_interval + probe_timeout` (a receiver restarts),
//!   or — with the primary down, when nobody can stream — if it was not already known to be
//!   behind (a stall that began clearly before the outage);
//! - a standby stalled for `repair_after` while the primary is up is repaired
//!   ([`Next::Repair`]);
//! - the grace period counts from the later of the outage's start and the switch to the
//!   automatic policy, and needs a healthy secondary at its end;
//! - a round in which both members' probes timed out says nothing (`None`): fogd itself is
//!   the likelier culprit than two servers in two regions failing at once.

use fog_engine::{parse_lsn, HealthProbe};
use fog_model::failover_group::{Policies, ReadWritePolicy, ReplicationState};
use fog_model::health::{Countdown, EventKind, GroupEvent, Health, MemberHealth, ObservedGroup};
use fog_model::FailoverGroupRecord;
use std::time::Duration;
use time::OffsetDateTime;

fn secs(d: time::Duration) -> f64 {
    d.as_seconds_f64().max(0.0)
}

/// The monitor's clock settings.
#[derive(Debug, Clone)]
pub struct Timing {
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    /// How long one grace-period minute lasts.
    pub grace_period_unit: Duration,
    /// How long a standby may stall under an available primary before it is repaired.
    pub repair_after: time::Duration,
}

/// What fogd should do after an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Nothing,
    /// The grace period is over and the secondary can take over: forced failover.
    Failover {
        reason: String,
    },
    /// Re-attach a former primary (`stale_primary`: it runs writable on its old history).
    Rejoin {
        stale_primary: bool,
    },
    /// Re-attach (or re-seed) a secondary that has not streamed since `stalled_since`.
    Repair {
        stalled_since: OffsetDateTime,
    },
}

/// The result of one conclusive round.
#[derive(Debug, Clone)]
pub struct Assessment {
    pub observed: ObservedGroup,
    pub events: Vec<GroupEvent>,
    pub decision: AutoDecision,
    pub next: Next,
}

/// What the automatic failover policy says to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoDecision {
    /// Nothing: the policy is Manual, or the primary is available.
    Idle,
    /// The primary is unavailable; failover is due at `Countdown::due` unless it recovers.
    Countdown(Countdown),
    /// The grace period has passed: fail over now.
    Failover(Countdown),
    /// The grace period has passed but the secondary cannot take over.
    Blocked(Countdown),
}

/// The automatic failover policy as a pure function: `unavailable_since` is when the
/// primary was first seen unavailable in the current uninterrupted outage; one grace-period
/// minute lasts `unit`.
pub fn automatic_decision(
    policies: &Policies,
    unit: Duration,
    now: OffsetDateTime,
    unavailable_since: Option<OffsetDateTime>,
    secondary_ready: bool,
) -> AutoDecision {
    if policies.read_write != ReadWritePolicy::Automatic {
        return AutoDecision::Idle;
    }
    let (Some(grace), Some(since)) = (policies.grace_period_minutes, unavailable_since) else {
        return AutoDecision::Idle;
    };
    let grace = unit.saturating_mul(u32::try_from(grace.max(0)).unwrap_or(u32::MAX));
    // A grace period beyond the calendar never ends.
    let Some(due) = time::Duration::try_from(grace)
        .ok()
        .and_then(|g| since.checked_add(g))
    else {
        return AutoDecision::Idle;
    };
    let countdown = Countdown { since, due };
    if now < due {
        AutoDecision::Countdown(countdown)
    } else if secondary_ready {
        AutoDecision::Failover(countdown)
    } else {
        AutoDecision::Blocked(countdown)
    }
}

/// One member's probe outcome.
#[derive(Debug, Clone, Default)]
pub struct MemberProbe {
    pub probe: Option<HealthProbe>,
    pub error: Option<String>,
    /// The port the member's server listens on (from its record).
    pub port: Option<u16>,
    /// The probe did not answer within `probe_timeout` (as opposed to failing).
    pub timed_out: bool,
}

/// Judges one round of probes (see the module documentation); `None` when the round is
/// inconclusive.
pub fn assess(
    g: &FailoverGroupRecord,
    previous: Option<&ObservedGroup>,
    p: &MemberProbe,
    s: &MemberProbe,
    now: OffsetDateTime,
    t: &Timing,
) -> Option<Assessment> {
    // An observation made under another generation, or so long ago that fogd was not
    // watching in between, says nothing about an *uninterrupted* outage.
    let gap = t.probe_interval * 3 + t.probe_timeout * 2;
    let before = previous.cloned().filter(|b| {
        b.generation == g.generation && b.at.is_some_and(|t| secs(now - t) <= gap.as_secs_f64())
    });

    // Both members silent at once, each past its timeout: far more likely fogd itself
    // is starved (CPU, file handles) than two servers in two regions failing in the
    // same second. Such a round says nothing; it is not recorded and moves no countdown.
    if p.timed_out && s.timed_out {
        return None;
    }
    // The same generation's previous observation, however old: what was learnt about
    // the secondary's streaming stays true across a gap in watching.
    let same_gen = previous.filter(|b| b.generation == g.generation);
    let settle = t.probe_interval * 2 + t.probe_timeout;
    let settle_t = time::Duration::try_from(settle).unwrap_or(time::Duration::ZERO);

    let primary_ok = p.probe.as_ref().is_some_and(|x| !x.in_recovery && x.wrote);
    let primary_error = match (&p.probe, &p.error) {
        (_, Some(e)) => Some(e.clone()),
        (Some(x), None) if x.in_recovery => Some("the server is a standby".to_string()),
        _ => None,
    };
    let unavailable_since = if primary_ok {
        None
    } else {
        before
            .as_ref()
            .and_then(|b| b.primary_unavailable_since)
            .or(Some(now))
    };
    // A "secondary" that accepts writes is a former primary that came back on its old
    // history: it is never routed to and must be rewound.
    let stale_primary = s.probe.as_ref().is_some_and(|x| !x.in_recovery);
    let standby = s.probe.as_ref().is_some_and(|x| x.in_recovery) && !g.secondary_needs_rejoin;
    // Streaming from *this* group's primary: a receiver connected elsewhere, or one
    // that is starting, waiting or stopping, does not count.
    let streaming = standby
        && s.probe.as_ref().is_some_and(|x| {
            x.receiver_status.as_deref() == Some("streaming")
                && x.sender_port.is_some()
                && x.sender_port == p.port
        });
    let streaming_at = if streaming {
        Some(now)
    } else {
        same_gen.and_then(|b| b.secondary_streaming_at)
    };
    // A standby that does not stream while the primary is up falls behind. While the
    // primary is down nobody can stream; a stall that began with the outage is the
    // outage's, one that clearly began before it is the secondary's own.
    let stalled_since = if streaming {
        None
    } else if primary_ok && standby {
        same_gen
            .and_then(|b| b.secondary_stalled_since)
            .or(Some(now))
    } else if let Some(down) = unavailable_since {
        same_gen
            .and_then(|b| b.secondary_stalled_since)
            .filter(|t| *t + settle_t < down)
    } else {
        same_gen.and_then(|b| b.secondary_stalled_since)
    };
    let stalled_for = stalled_since.map(|t| now - t);
    // Healthy: a standby that streams from the primary, or one whose receiver is only
    // restarting (stalled for less than `settle`), or — with the primary down — one
    // that was not known to be behind.
    let secondary_ok = standby && stalled_for.is_none_or(|d| d < settle_t);
    let secondary_error = if stale_primary {
        Some(
            "running writable outside the group (a former primary): fenced, awaiting rewind".into(),
        )
    } else if g.secondary_needs_rejoin {
        Some(format!(
            "former primary awaiting rejoin{}",
            s.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ))
    } else if standby && !secondary_ok {
        let receiver = s
            .probe
            .as_ref()
            .and_then(|x| x.receiver_status.clone())
            .unwrap_or_else(|| "not running".into());
        Some(format!(
                "not streaming from the primary since {} (WAL receiver: {receiver}); it falls behind and fogd re-attaches it",
                stalled_since.map(fog_model::health::rfc3339).unwrap_or_default()
            ))
    } else {
        s.error.clone()
    };

    let member = |ok: bool, error: Option<String>, prev: Option<&MemberHealth>| {
        let status = if ok {
            Health::Healthy
        } else {
            Health::Unavailable
        };
        let since = match prev {
            Some(m) if m.status == status => m.since,
            _ => Some(now),
        };
        MemberHealth {
            status,
            since,
            last_error: if ok { None } else { error },
        }
    };
    let primary = member(
        primary_ok,
        primary_error,
        before.as_ref().map(|b| &b.primary),
    );
    let secondary = member(
        secondary_ok,
        secondary_error,
        before.as_ref().map(|b| &b.secondary),
    );

    let lsn = |x: &MemberProbe| {
        x.probe
            .as_ref()
            .and_then(|p| p.wal_lsn.as_deref().and_then(parse_lsn))
    };
    let lag_bytes = match (lsn(p), lsn(s)) {
        (Some(a), Some(b)) if primary_ok && secondary_ok => Some(a.saturating_sub(b)),
        _ => None,
    };
    let lag_ms = match lag_bytes {
        Some(0) => Some(0),
        _ if secondary_ok => s.probe.as_ref().and_then(|x| x.replay_age_ms),
        _ => None,
    };
    let last_in_sync = if streaming && lag_bytes == Some(0) {
        Some(now)
    } else {
        // The last known value survives role changes and gaps.
        previous.and_then(|b| b.last_in_sync)
    };
    // The grace period counts only time under the automatic policy: switching to it
    // while the primary is down starts the countdown at the switch.
    let automatic_since = (g.policies.read_write == ReadWritePolicy::Automatic)
        .then(|| same_gen.and_then(|b| b.automatic_since).unwrap_or(now));
    let counted_since = match (unavailable_since, automatic_since) {
        (Some(u), Some(a)) => Some(u.max(a)),
        (u, _) => u,
    };
    let decision = automatic_decision(
        &g.policies,
        t.grace_period_unit,
        now,
        counted_since,
        secondary_ok && !stale_primary,
    );
    let countdown = match &decision {
        AutoDecision::Idle => None,
        AutoDecision::Countdown(c) | AutoDecision::Failover(c) | AutoDecision::Blocked(c) => {
            Some(c.clone())
        }
    };
    let observed = ObservedGroup {
        replication_state: if streaming {
            ReplicationState::CatchUp
        } else {
            ReplicationState::Suspended
        },
        primary_available: primary_ok,
        secondary_available: secondary_ok,
        generation: g.generation,
        primary,
        secondary,
        lag_bytes,
        lag_ms,
        last_in_sync,
        primary_unavailable_since: unavailable_since,
        countdown,
        at: Some(now),
        secondary_streaming_at: streaming_at,
        secondary_stalled_since: stalled_since,
        automatic_since,
    };

    // What changed, as events.
    let gen = g.generation;
    let mut events = Vec::new();
    let was = |f: fn(&ObservedGroup) -> bool| before.as_ref().map(f);
    let (pname, sname) = (&g.primary.instance.name, &g.secondary.instance.name);
    match (was(|b| b.primary.status == Health::Healthy), primary_ok) {
        (Some(true) | None, false) => events.push(GroupEvent::new(
            EventKind::PrimaryUnavailable,
            gen,
            format!(
                "primary {pname} is unavailable: {}",
                observed.primary.last_error.as_deref().unwrap_or("unknown")
            ),
        )),
        (Some(false), true) => events.push(GroupEvent::new(
            EventKind::PrimaryRecovered,
            gen,
            format!("primary {pname} is available again"),
        )),
        _ => {}
    }
    match (was(|b| b.secondary.status == Health::Healthy), secondary_ok) {
        (Some(true) | None, false) => events.push(GroupEvent::new(
            EventKind::SecondaryUnavailable,
            gen,
            format!(
                "secondary {sname} is unavailable: {}",
                observed
                    .secondary
                    .last_error
                    .as_deref()
                    .unwrap_or("unknown")
            ),
        )),
        (Some(false), true) => events.push(GroupEvent::new(
            EventKind::SecondaryRecovered,
            gen,
            format!("secondary {sname} is available again"),
        )),
        _ => {}
    }
    if stale_primary
        && !was(|b| {
            b.secondary
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("running writable"))
        })
        .unwrap_or(false)
    {
        events.push(GroupEvent::new(
                EventKind::StalePrimaryDetected,
                gen,
                format!("{sname} accepts writes but is not the group's primary; it is never routed to and will be stopped and rewound"),
            ));
    }
    let had_countdown = before.as_ref().is_some_and(|b| b.countdown.is_some());
    match &decision {
            AutoDecision::Countdown(c) if !had_countdown => events.push(GroupEvent::new(
                EventKind::AutomaticFailoverCountdownStarted,
                gen,
                format!(
                    "primary {pname} unavailable since {}; automatic failover to {sname} at {} unless it recovers",
                    fog_model::health::rfc3339(c.since),
                    fog_model::health::rfc3339(c.due)
                ),
            )),
            AutoDecision::Idle if had_countdown && primary_ok => events.push(GroupEvent::new(
                EventKind::AutomaticFailoverCountdownCancelled,
                gen,
                format!("primary {pname} recovered within the grace period; no failover"),
            )),
            AutoDecision::Blocked(_)
                if !matches!(&before, Some(b) if b.countdown.as_ref().is_some_and(|c| b.at.is_some_and(|at| at >= c.due))) =>
            {
                events.push(GroupEvent::new(
                    EventKind::AutomaticFailoverBlocked,
                    gen,
                    format!("grace period over but secondary {sname} cannot take over: {}", observed.secondary.last_error.as_deref().unwrap_or("not a healthy standby")),
                ))
            }
            _ => {}
        }

    let next = if let AutoDecision::Failover(c) = &decision {
        Next::Failover {
            reason: format!(
                "automatic: primary {pname} unavailable since {} ({:.1} s, grace period {} min)",
                fog_model::health::rfc3339(c.since),
                secs(now - c.since),
                g.policies.grace_period_minutes.unwrap_or_default()
            ),
        }
    } else if (g.secondary_needs_rejoin || stale_primary) && primary_ok {
        // Rewinding needs the primary: while it is down there is nothing to rejoin to
        // (and a stale former primary is not routed to meanwhile).
        Next::Rejoin { stale_primary }
    } else if let (true, true, Some(since)) = (primary_ok, standby, stalled_since) {
        if now - since >= t.repair_after {
            Next::Repair {
                stalled_since: since,
            }
        } else {
            Next::Nothing
        }
    } else {
        Next::Nothing
    };
    Some(Assessment {
        observed,
        events,
        decision,
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fog_model::failover_group::{ReadOnlyPolicy, SecondaryType};

    fn policies(rw: &str, grace: Option<i64>) -> Policies {
        Policies {
            read_write: ReadWritePolicy::parse(rw).expect("policy"),
            grace_period_minutes: grace,
            read_only: ReadOnlyPolicy::Disabled,
            secondary_type: SecondaryType::Geo,
        }
    }

    #[test]
    fn manual_never_fails_over() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let later = t0 + time::Duration::days(365);
        assert_eq!(
            automatic_decision(
                &policies("Manual", None),
                Duration::from_secs(60),
                later,
                Some(t0),
                true
            ),
            AutoDecision::Idle
        );
    }

    #[test]
    fn automatic_counts_down_then_fails_over() {
        let p = policies("Automatic", Some(2));
        let unit = Duration::from_secs(1);
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let at = |s: f64| t0 + time::Duration::seconds_f64(s);
        let due = at(2.0);
        assert_eq!(
            automatic_decision(&p, unit, at(5.0), None, true),
            AutoDecision::Idle
        );
        assert_eq!(
            automatic_decision(&p, unit, at(1.9), Some(t0), true),
            AutoDecision::Countdown(Countdown { since: t0, due })
        );
        assert_eq!(
            automatic_decision(&p, unit, at(2.0), Some(t0), true),
            AutoDecision::Failover(Countdown { since: t0, due })
        );
        assert_eq!(
            automatic_decision(&p, unit, at(3.0), Some(t0), false),
            AutoDecision::Blocked(Countdown { since: t0, due })
        );
        // A grace period longer than the calendar is never due (and does not overflow).
        assert_eq!(
            automatic_decision(
                &policies("Automatic", Some(5_000_000_000)),
                Duration::from_secs(60),
                at(1e6),
                Some(t0),
                true
            ),
            AutoDecision::Idle
        );
        // Production unit: minutes.
        assert!(matches!(
            automatic_decision(&p, Duration::from_secs(60), at(119.0), Some(t0), true),
            AutoDecision::Countdown(_)
        ));
    }

    mod rounds {
        //! `assess` round by round: each case feeds probes and the previous observation
        //! and checks the judgement.
        use super::super::*;
        use fog_model::failover_group::{ListenerPorts, Member, ReadOnlyPolicy, SecondaryType};
        use fog_model::ManagedInstanceId;

        const PRIMARY_PORT: u16 = 5433;

        fn group(rw: &str, grace: Option<i64>) -> FailoverGroupRecord {
            let m = |n: &str| {
                Member {
                instance: ManagedInstanceId::parse(&format!(
                    "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/{n}"
                ))
                .expect("id"),
                uid: n.into(),
                location: n.into(),
                location_label: n.into(),
            }
            };
            FailoverGroupRecord {
                name: "fg".into(),
                uid: "u-fg".into(),
                primary: m("a"),
                secondary: m("b"),
                policies: Policies {
                    read_write: ReadWritePolicy::parse(rw).expect("policy"),
                    grace_period_minutes: grace,
                    read_only: ReadOnlyPolicy::Disabled,
                    secondary_type: SecondaryType::Geo,
                },
                replication_state: ReplicationState::CatchUp,
                generation: 3,
                active_operation: None,
                listeners: ListenerPorts {
                    read_write: 1,
                    read_only: 2,
                },
                dns_zone: "z".into(),
                slot: "s".into(),
                seeding: None,
                created: OffsetDateTime::UNIX_EPOCH,
                switch: None,
                secondary_needs_rejoin: false,
                last_failover: None,
            }
        }

        fn timing() -> Timing {
            Timing {
                probe_interval: Duration::from_secs(1),
                probe_timeout: Duration::from_secs(2),
                grace_period_unit: Duration::from_secs(1),
                repair_after: time::Duration::seconds(9),
            }
        }

        fn primary_up() -> MemberProbe {
            MemberProbe {
                probe: Some(HealthProbe {
                    in_recovery: false,
                    wal_lsn: Some("0/3000000".into()),
                    wrote: true,
                    ..Default::default()
                }),
                port: Some(PRIMARY_PORT),
                ..Default::default()
            }
        }

        fn down(timed_out: bool) -> MemberProbe {
            MemberProbe {
                probe: None,
                error: Some(if timed_out { "timed out" } else { "refused" }.into()),
                port: Some(PRIMARY_PORT),
                timed_out,
            }
        }

        /// A standby whose receiver is in `status` (connected to `sender`).
        fn standby(status: Option<&str>, sender: Option<u16>) -> MemberProbe {
            MemberProbe {
                probe: Some(HealthProbe {
                    in_recovery: true,
                    receiver_status: status.map(str::to_string),
                    sender_port: sender,
                    wal_lsn: Some("0/3000000".into()),
                    replay_age_ms: Some(0),
                    ..Default::default()
                }),
                port: Some(5434),
                ..Default::default()
            }
        }

        fn at(s: i64) -> OffsetDateTime {
            OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000) + time::Duration::seconds(s)
        }

        /// Runs rounds one second apart from t = 0, threading the observation.
        fn run(
            g: &FailoverGroupRecord,
            rounds: &[(MemberProbe, MemberProbe)],
        ) -> Vec<Option<Assessment>> {
            let mut previous: Option<ObservedGroup> = None;
            let mut out = Vec::new();
            for (i, (p, s)) in rounds.iter().enumerate() {
                let a = assess(g, previous.as_ref(), p, s, at(i as i64), &timing());
                if let Some(a) = &a {
                    previous = Some(a.observed.clone());
                }
                out.push(a);
            }
            out
        }

        fn kinds(a: &Assessment) -> Vec<EventKind> {
            a.events.iter().map(|e| e.kind).collect()
        }

        #[test]
        fn a_streaming_secondary_is_healthy_and_in_sync() {
            let g = group("Manual", None);
            let r = run(
                &g,
                &[(primary_up(), standby(Some("streaming"), Some(PRIMARY_PORT)))],
            );
            let a = r[0].as_ref().expect("conclusive");
            assert_eq!(a.observed.replication_state, ReplicationState::CatchUp);
            assert_eq!(a.observed.secondary.status, Health::Healthy);
            assert_eq!(a.observed.lag_bytes, Some(0));
            assert_eq!(a.observed.last_in_sync, Some(at(0)));
            assert_eq!(a.next, Next::Nothing);
        }

        #[test]
        fn a_standby_that_does_not_stream_is_unavailable_then_repaired() {
            let g = group("Manual", None);
            let mut rounds = vec![(primary_up(), standby(Some("streaming"), Some(PRIMARY_PORT)))];
            rounds.extend((0..12).map(|_| (primary_up(), standby(None, None))));
            let r = run(&g, &rounds);
            // t=1: just stalled — a receiver may be restarting.
            let a1 = r[1].as_ref().expect("round");
            assert_eq!(a1.observed.secondary.status, Health::Healthy);
            assert_eq!(a1.observed.replication_state, ReplicationState::Suspended);
            // t=5: stalled for 4 s > 2×1 s + 2 s: unavailable, with the reason.
            let a5 = r[5].as_ref().expect("round");
            assert_eq!(a5.observed.secondary.status, Health::Unavailable);
            assert!(a5
                .observed
                .secondary
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("not streaming"));
            assert!(
                r[4].as_ref()
                    .is_some_and(|a| kinds(a).contains(&EventKind::SecondaryUnavailable))
                    || kinds(a5).contains(&EventKind::SecondaryUnavailable)
            );
            // t=10: stalled for repair_after (9 s): repair.
            assert_eq!(r[9].as_ref().expect("round").next, Next::Nothing);
            assert_eq!(
                r[10].as_ref().expect("round").next,
                Next::Repair {
                    stalled_since: at(1)
                }
            );
        }

        #[test]
        fn a_receiver_streaming_from_elsewhere_does_not_count() {
            let g = group("Manual", None);
            let rounds: Vec<_> = (0..6)
                .map(|_| (primary_up(), standby(Some("streaming"), Some(9999))))
                .collect();
            let r = run(&g, &rounds);
            let a = r[5].as_ref().expect("round");
            assert_eq!(a.observed.replication_state, ReplicationState::Suspended);
            assert_eq!(a.observed.secondary.status, Health::Unavailable);
        }

        #[test]
        fn automatic_failover_after_the_grace_period_to_a_secondary_in_sync() {
            let g = group("Automatic", Some(3));
            let mut rounds = vec![(primary_up(), standby(Some("streaming"), Some(PRIMARY_PORT)))];
            rounds.extend((0..5).map(|_| (down(false), standby(Some("waiting"), None))));
            let r = run(&g, &rounds);
            let a1 = r[1].as_ref().expect("round");
            assert!(kinds(a1).contains(&EventKind::PrimaryUnavailable));
            assert!(kinds(a1).contains(&EventKind::AutomaticFailoverCountdownStarted));
            // The secondary cannot stream from a dead primary; that is not its fault.
            assert_eq!(a1.observed.secondary.status, Health::Healthy);
            assert!(matches!(
                r[3].as_ref().expect("round").decision,
                AutoDecision::Countdown(_)
            ));
            assert!(matches!(
                r[4].as_ref().expect("round").next,
                Next::Failover { .. }
            ));
        }

        #[test]
        fn a_secondary_known_to_be_behind_is_never_promoted_automatically() {
            let g = group("Automatic", Some(3));
            let mut rounds = vec![(primary_up(), standby(Some("streaming"), Some(PRIMARY_PORT)))];
            // Stalls at t=1 under a healthy primary; the primary dies at t=6.
            rounds.extend((0..5).map(|_| (primary_up(), standby(None, None))));
            rounds.extend((0..6).map(|_| (down(false), standby(None, None))));
            let r = run(&g, &rounds);
            let last = r[11].as_ref().expect("round");
            assert!(
                matches!(last.decision, AutoDecision::Blocked(_)),
                "{:?}",
                last.decision
            );
            assert!(!r
                .iter()
                .flatten()
                .any(|a| matches!(a.next, Next::Failover { .. })));
            let blocked = r
                .iter()
                .flatten()
                .filter(|a| kinds(a).contains(&EventKind::AutomaticFailoverBlocked))
                .count();
            assert_eq!(blocked, 1, "blocked is reported once");
        }

        #[test]
        fn a_stall_that_begins_with_the_outage_is_the_outages() {
            let g = group("Automatic", Some(2));
            // The secondary's probe sees its receiver gone a moment before the primary's
            // probe fails.
            let rounds = vec![
                (primary_up(), standby(Some("streaming"), Some(PRIMARY_PORT))),
                (primary_up(), standby(None, None)),
                (down(false), standby(None, None)),
                (down(false), standby(None, None)),
                (down(false), standby(None, None)),
                (down(false), standby(None, None)),
            ];
            let r = run(&g, &rounds);
            assert!(r
                .iter()
                .flatten()
                .any(|a| matches!(a.next, Next::Failover { .. })));
        }

        #[test]
        fn both_members_timing_out_is_inconclusive() {
            let g = group("Automatic", Some(1));
            let r = run(
                &g,
                &[
                    (primary_up(), standby(Some("streaming"), Some(PRIMARY_PORT))),
                    (down(true), down(true)),
                ],
            );
            assert!(r[1].is_none());
            // One member timing out is a real observation.
            let one = assess(
                &g,
                None,
                &down(true),
                &standby(Some("streaming"), Some(PRIMARY_PORT)),
                at(0),
                &timing(),
            );
            assert!(one.is_some_and(|a| !a.observed.primary_available));
        }

        #[test]
        fn the_grace_period_counts_from_the_switch_to_automatic() {
            let manual = group("Manual", None);
            let auto = group("Automatic", Some(3));
            let mut previous = None;
            // Down under Manual for 10 s.
            for i in 0..10 {
                let a = assess(
                    &manual,
                    previous.as_ref(),
                    &down(false),
                    &standby(Some("waiting"), None),
                    at(i),
                    &timing(),
                )
                .expect("round");
                assert_eq!(a.decision, AutoDecision::Idle);
                previous = Some(a.observed);
            }
            // Switched at t=10: the countdown ends at 13, not at once.
            let a = assess(
                &auto,
                previous.as_ref(),
                &down(false),
                &standby(Some("waiting"), None),
                at(10),
                &timing(),
            )
            .expect("round");
            match &a.decision {
                AutoDecision::Countdown(c) => assert_eq!((c.since, c.due), (at(10), at(13))),
                other => panic!("{other:?}"),
            }
            let mut previous = Some(a.observed);
            for i in 11..14 {
                let a = assess(
                    &auto,
                    previous.as_ref(),
                    &down(false),
                    &standby(Some("waiting"), None),
                    at(i),
                    &timing(),
                )
                .expect("round");
                assert_eq!(matches!(a.next, Next::Failover { .. }), i >= 13, "t={i}");
                previous = Some(a.observed);
            }
        }

        #[test]
        fn a_former_primary_running_writable_is_rejoined_once_the_primary_is_up() {
            let g = group("Manual", None);
            let writable = MemberProbe {
                probe: Some(HealthProbe {
                    in_recovery: false,
                    ..Default::default()
                }),
                port: Some(5434),
                ..Default::default()
            };
            let a = assess(&g, None, &primary_up(), &writable, at(0), &timing()).expect("round");
            assert_eq!(
                a.next,
                Next::Rejoin {
                    stale_primary: true
                }
            );
            assert!(kinds(&a).contains(&EventKind::StalePrimaryDetected));
            assert_eq!(a.observed.secondary.status, Health::Unavailable);
            let a = assess(&g, None, &down(false), &writable, at(0), &timing()).expect("round");
            assert_eq!(a.next, Next::Nothing, "no rejoin while the primary is down");
        }
    }
}
