//! Keeps each failover group's two listeners bound and pointed where the store says.
//!
//! The read-write listener forwards to the instance the group record names as primary,
//! under the group's generation; nothing else can move it. The read-only listener forwards
//! to the secondary, or — when the observer reports the secondary unavailable — to the
//! primary if `readOnlyEndpoint.failoverPolicy` is `Enabled`, else it refuses with a clear
//! message. A `Standby` secondary is DR-only: its read-only listener always refuses.
//!
//! [`plan`] is the pure decision; [`run`] applies it whenever the store changes. Listeners
//! are kept per group uid: two groups may share a name (in other resource groups and DNS
//! zones), each with its own listeners and its own primary.
//!
//! On a cluster a node whose view of the store is older than its lease TTL (its reads
//! fail or hang: it is cut off from etcd's quorum) cannot know whether another node moved
//! the primary: its read-write listeners refuse new sessions and close the open ones, with
//! a PostgreSQL error naming the reason, until a read succeeds again.

use fog_listener::{Listener, ListenerConfig, Route, Target};
use fog_model::failover_group::{ObservedGroup, ReadOnlyPolicy, ReplicationState, SecondaryType};
use fog_model::FailoverGroupRecord;
use fog_orchestrator::catalog;
use fog_store::Store;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Routes of one group's listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRoutes {
    pub read_write: Route,
    pub read_only: Route,
}

/// Decides both routes from the group record, the latest observation and the members'
/// server addresses.
pub fn plan(
    g: &FailoverGroupRecord,
    observed: Option<&ObservedGroup>,
    primary: SocketAddr,
    secondary: SocketAddr,
) -> GroupRoutes {
    let seeded = !matches!(
        g.replication_state,
        ReplicationState::Pending | ReplicationState::Seeding
    );
    // A former primary awaiting its rewind serves nobody. An observation from before the
    // last role change describes the other server, so it says nothing here.
    let secondary_up = seeded
        && !g.secondary_needs_rejoin
        && observed.is_none_or(|o| o.generation != g.generation || o.secondary_available);
    let read_only = if g.policies.secondary_type == SecondaryType::Standby {
        Target::Refuse(format!(
            "fogd: failover group '{}' has a DR-only standby secondary (secondaryType Standby); its read-only endpoint accepts no connections",
            g.name
        ))
    } else if secondary_up {
        Target::Forward(secondary)
    } else if g.policies.read_only == ReadOnlyPolicy::Enabled {
        Target::Forward(primary)
    } else {
        Target::Refuse(format!(
            "fogd: the secondary of failover group '{}' is unavailable and readOnlyEndpoint.failoverPolicy is Disabled",
            g.name
        ))
    };
    // During a role switch new writers wait (bounded by the listener's hold) and the
    // higher generation has already closed every connection to the old primary.
    let switching = g.switch.as_ref().is_some_and(|s| !s.routed);
    let read_write = if switching {
        Target::Pause
    } else {
        Target::Forward(primary)
    };
    GroupRoutes {
        read_write: Route::new(read_write, g.generation),
        read_only: Route::new(read_only, g.generation),
    }
}

struct Bound {
    read_write: Listener,
    read_only: Listener,
    /// The generation of the read-write route last applied.
    generation: u64,
}

async fn address(store: &dyn Store, id: &fog_model::ManagedInstanceId) -> Option<SocketAddr> {
    let inst = catalog::instance(store, id).await.ok()??;
    let host_port = format!("{}:{}", inst.value.endpoint.host, inst.value.endpoint.port);
    tokio::net::lookup_host(host_port).await.ok()?.next()
}

/// Applies the store's routes; `false` if the store could not be read.
async fn reconcile(
    store: &dyn Store,
    host: &str,
    config: &ListenerConfig,
    bound: &mut HashMap<String, Bound>,
) -> bool {
    let Ok(groups) = catalog::groups(store).await else {
        return false;
    };
    let mut wanted = std::collections::HashSet::new();
    for g in groups {
        let g = g.value;
        wanted.insert(g.uid.clone());
        let (Some(p), Some(s)) = (
            address(store, &g.primary.instance).await,
            address(store, &g.secondary.instance).await,
        ) else {
            continue;
        };
        let observed = catalog::observed(store, &g.uid).await.ok().flatten();
        let routes = plan(&g, observed.as_ref(), p, s);
        if let Some(b) = bound.get_mut(&g.uid) {
            b.generation = routes.read_write.generation;
            b.read_write.set_route(routes.read_write);
            b.read_only.set_route(routes.read_only);
            export_stats(&g, b);
            continue;
        }
        let generation = routes.read_write.generation;
        let bind = |port: u16, route: Route| {
            let config = config.clone();
            async move {
                let addr: SocketAddr = tokio::net::lookup_host((host, port))
                    .await?
                    .next()
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "listener host does not resolve",
                        )
                    })?;
                Listener::bind(addr, route, config).await
            }
        };
        match (
            bind(g.listeners.read_write, routes.read_write).await,
            bind(g.listeners.read_only, routes.read_only).await,
        ) {
            (Ok(read_write), Ok(read_only)) => {
                tracing::info!(group = %g.name, uid = %g.uid, read_write = %read_write.local_addr(),
                    read_only = %read_only.local_addr(), "listeners bound");
                bound.insert(
                    g.uid.clone(),
                    Bound {
                        read_write,
                        read_only,
                        generation,
                    },
                );
            }
            (rw, ro) => {
                tracing::warn!(group = %g.name, read_write = ?rw.err(), read_only = ?ro.err(),
                    "binding listeners failed; retrying");
            }
        }
    }
    let gone: Vec<String> = bound
        .keys()
        .filter(|k| !wanted.contains(*k))
        .cloned()
        .collect();
    for uid in gone {
        if let Some(b) = bound.remove(&uid) {
            tracing::info!(uid = %uid, "removing listeners");
            b.read_write.shutdown().await;
            b.read_only.shutdown().await;
        }
    }
    true
}

/// The refusal of a node whose view of the store is too old to route writes.
fn stale_refusal(limit: Duration) -> String {
    format!(
        "fogd: this node's view of the metadata store is older than its lease TTL ({} ms): \
         it cannot tell which server is the primary, so it forwards no writes until it \
         reaches the store again; connect through another fogd node",
        limit.as_millis()
    )
}

/// Publishes the listeners' counters as Prometheus metrics, labelled by the group's name and
/// DNS zone (two groups may share a name, never a DNS record).
fn export_stats(g: &FailoverGroupRecord, b: &Bound) {
    for (endpoint, l) in [("read_write", &b.read_write), ("read_only", &b.read_only)] {
        let st = l.stats();
        let labels = [
            ("group", g.name.clone()),
            ("endpoint", endpoint.to_string()),
            ("dns_zone", g.dns_zone.clone()),
        ];
        metrics::counter!("fogd_listener_connections_total", &labels)
            .absolute(st.connections_total);
        metrics::gauge!("fogd_listener_connections_active", &labels)
            .set(st.connections_active as f64);
        metrics::counter!("fogd_listener_refused_total", &labels).absolute(st.refused_total);
        for (direction, bytes) in [
            ("client_to_server", st.bytes_client_to_server),
            ("server_to_client", st.bytes_server_to_client),
        ] {
            metrics::counter!(
                "fogd_listener_bytes_total",
                &[
                    ("group", g.name.clone()),
                    ("endpoint", endpoint.to_string()),
                    ("direction", direction.to_string()),
                    ("dns_zone", g.dns_zone.clone()),
                ]
            )
            .absolute(bytes);
        }
    }
}

/// Applies [`plan`] on every relevant store change (and every second, as a backstop).
///
/// `stale_after` (a cluster node's lease TTL): once no read of the store has succeeded for
/// that long, every read-write listener refuses (see the module documentation).
pub async fn run(
    store: Arc<dyn Store>,
    host: String,
    config: ListenerConfig,
    stale_after: Option<Duration>,
) {
    let mut events = store.watch("");
    let mut bound: HashMap<String, Bound> = HashMap::new();
    let mut fresh_at = tokio::time::Instant::now();
    let mut stale = false;
    let tick = stale_after.map_or(Duration::from_secs(1), |l| {
        (l / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
    });
    loop {
        let read = reconcile(store.as_ref(), &host, &config, &mut bound);
        let ok = match stale_after {
            // A read that hangs counts as failed: the staleness check must not wait for it.
            Some(limit) => tokio::time::timeout(limit / 2, read).await.unwrap_or(false),
            None => read.await,
        };
        if ok {
            fresh_at = tokio::time::Instant::now();
            if stale {
                stale = false;
                tracing::warn!("the store is reachable again: read-write listeners forward again");
            }
        } else if let Some(limit) = stale_after.filter(|l| fresh_at.elapsed() > *l) {
            if !stale {
                stale = true;
                tracing::error!(
                    age_ms = fresh_at.elapsed().as_millis() as u64,
                    "this node's view of the store is older than its lease TTL: read-write listeners refuse writes"
                );
                metrics::counter!("fogd_listener_stale_view_total").increment(1);
            }
            for b in bound.values() {
                b.read_write.set_route(Route::new(
                    Target::Refuse(stale_refusal(limit)),
                    b.generation,
                ));
            }
        }
        tokio::select! {
            _ = events.recv() => {
                // Coalesce a burst of changes into one reconcile.
                while events.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fog_model::failover_group::{ListenerPorts, Member, Policies, ReadWritePolicy};
    use fog_model::ManagedInstanceId;

    fn group(
        read_only: &str,
        secondary_type: &str,
        state: ReplicationState,
    ) -> FailoverGroupRecord {
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
                read_write: ReadWritePolicy::Manual,
                grace_period_minutes: None,
                read_only: ReadOnlyPolicy::parse(read_only).expect("policy"),
                secondary_type: SecondaryType::parse(secondary_type).expect("type"),
            },
            replication_state: state,
            generation: 7,
            active_operation: None,
            listeners: ListenerPorts {
                read_write: 1,
                read_only: 2,
            },
            dns_zone: "z".into(),
            slot: "s".into(),
            seeding: None,
            created: time::OffsetDateTime::UNIX_EPOCH,
            switch: None,
            secondary_needs_rejoin: false,
            last_failover: None,
        }
    }

    fn observed(secondary_available: bool) -> ObservedGroup {
        ObservedGroup {
            replication_state: ReplicationState::CatchUp,
            primary_available: true,
            secondary_available,
            generation: 7,
            primary: Default::default(),
            secondary: Default::default(),
            lag_bytes: None,
            lag_ms: None,
            last_in_sync: None,
            primary_unavailable_since: None,
            countdown: None,
            at: None,
            secondary_streaming_at: None,
            secondary_stalled_since: None,
            automatic_since: None,
        }
    }

    #[test]
    fn routing_table() {
        let p: SocketAddr = "127.0.0.1:1000".parse().expect("addr");
        let s: SocketAddr = "127.0.0.1:2000".parse().expect("addr");
        let up = observed(true);
        let down = observed(false);
        let refuse = |t: &Target| matches!(t, Target::Refuse(_));
        // (read-only policy, secondary type, state, observation) → read-only target
        let r = plan(
            &group("Disabled", "Geo", ReplicationState::CatchUp),
            Some(&up),
            p,
            s,
        );
        assert_eq!(r.read_write, Route::new(Target::Forward(p), 7));
        assert_eq!(r.read_only, Route::new(Target::Forward(s), 7));
        let r = plan(
            &group("Disabled", "Geo", ReplicationState::CatchUp),
            Some(&down),
            p,
            s,
        );
        assert!(refuse(&r.read_only.target));
        let r = plan(
            &group("Enabled", "Geo", ReplicationState::CatchUp),
            Some(&down),
            p,
            s,
        );
        assert_eq!(r.read_only.target, Target::Forward(p));
        let r = plan(
            &group("Enabled", "Geo", ReplicationState::Seeding),
            None,
            p,
            s,
        );
        assert_eq!(r.read_only.target, Target::Forward(p));
        let r = plan(
            &group("Disabled", "Geo", ReplicationState::Seeding),
            None,
            p,
            s,
        );
        assert!(refuse(&r.read_only.target));
        let r = plan(
            &group("Enabled", "Standby", ReplicationState::CatchUp),
            Some(&up),
            p,
            s,
        );
        assert!(matches!(&r.read_only.target, Target::Refuse(m) if m.contains("Standby")));
        assert_eq!(
            r.read_write.target,
            Target::Forward(p),
            "writes always go to the primary"
        );
        let mut switching = group("Disabled", "Geo", ReplicationState::CatchUp);
        switching.switch = Some(fog_model::failover_group::Switch {
            planned: true,
            checkpoint_lsn: None,
            old_primary_stale: false,
            routed: false,
            started: time::OffsetDateTime::UNIX_EPOCH,
        });
        assert_eq!(
            plan(&switching, Some(&up), p, s).read_write.target,
            Target::Pause
        );
        switching.switch.as_mut().expect("switch").routed = true;
        assert_eq!(
            plan(&switching, Some(&up), p, s).read_write.target,
            Target::Forward(p)
        );
        // A former primary awaiting its rewind never serves reads, whatever was observed.
        let mut rejoining = group("Enabled", "Geo", ReplicationState::Suspended);
        rejoining.secondary_needs_rejoin = true;
        assert_eq!(
            plan(&rejoining, Some(&up), p, s).read_only.target,
            Target::Forward(p)
        );
        // An observation from an older generation describes other roles: not used.
        let mut stale = observed(false);
        stale.generation = 6;
        assert_eq!(
            plan(
                &group("Disabled", "Geo", ReplicationState::CatchUp),
                Some(&stale),
                p,
                s
            )
            .read_only
            .target,
            Target::Forward(s)
        );
    }
}
