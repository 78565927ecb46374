//! Automatic failover after the grace period, end to end: a real primary is killed -9 under
//! a write load through the read-write listener; fogd fails over on its own, writes resume
//! through the same listener, the old primary comes back writable on its old history and is
//! fenced, rewound and re-attached without a human; the events and metrics tell the story.
//! Also: Manual never fails over by itself, and a primary back within the grace period
//! cancels the countdown.
//!
//! The grace period's unit is shortened with `FOGD_GRACE_PERIOD_UNIT_MS=1000` (one "minute"
//! lasts a second) and the minimum with `FOGD_MIN_GRACE_PERIOD_MINUTES=1`.

mod common;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GRACE: u64 = 2;
/// How long past the grace period a failover may take to make the group writable again:
/// detection (one probe interval, 0.2 s), the forced failover itself, and the writer's
/// reconnect. Stated here, asserted below.
const BOUND: Duration = Duration::from_secs(5);

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("FOGD_MIN_GRACE_PERIOD_MINUTES", "1"),
        ("FOGD_GRACE_PERIOD_UNIT_MS", "1000"),
        ("FOGD_PROBE_INTERVAL_MS", "200"),
        ("FOGD_PROBE_TIMEOUT_MS", "1000"),
        ("FOGD_REJOIN_RETRY_MS", "300"),
    ]
}

struct Setup {
    f: Fogd,
    a: Value,
    b: Value,
    at_a: String,
    at_b: String,
    group: Value,
}

async fn setup(name: &str, rw: Value) -> Setup {
    let e = env();
    let f = Fogd::start_with(&e).await;
    let common::group::GroupParts {
        a,
        b,
        at_a,
        at_b,
        view: group,
    } = common::group::create_group(&f, name, rw).await;
    let s = Setup {
        f,
        a,
        b,
        at_a,
        at_b,
        group,
    };
    s.until("both sides healthy and streaming", |g| {
        g["properties"]["replicationState"] == "CATCH_UP"
            && g["properties"]["health"]["primary"]["status"] == "Healthy"
            && g["properties"]["health"]["secondary"]["status"] == "Healthy"
    })
    .await;
    s
}

impl Setup {
    async fn get(&self, at: &str) -> Value {
        let r = self.f.send(Method::GET, at, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }

    /// Polls the group at the primary's original address until `check` holds.
    async fn until(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let g = self.get(&self.at_a).await;
            if check(&g) {
                return g;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}\nlast view: {g:#}\nlog:\n{}",
                self.f.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn events(&self) -> Vec<String> {
        let url = self
            .at_b
            .replace(&format!("?{API}"), &format!("/events?{API}"));
        let r = self.f.send(Method::GET, &url, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["value"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("").to_string())
            .collect()
    }

    async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.f.url);
        self.f
            .client
            .get(url)
            .bearer_auth(&self.f.token)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }
}

/// `needle` appear in `hay` in this order (other entries may sit between them).
fn in_order(hay: &[String], needles: &[&str]) -> bool {
    let mut it = hay.iter();
    needles.iter().all(|n| it.any(|h| h == n))
}

/// A client writing one row at a time through the read-write listener, reconnecting on
/// every error; remembers when each row was acknowledged.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(i64, Instant)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(group: &Value) -> Writer {
        let (host, port) = endpoint(group, &["properties", "listeners", "readWrite"]);
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        let task = tokio::spawn(async move {
            let mut next = 1i64;
            while !s.load(Ordering::Relaxed) {
                let Ok(c) = pg(
                    &host,
                    port,
                    "fogadmin",
                    PASSWORD,
                    "app",
                    Duration::from_secs(2),
                )
                .await
                else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                while !s.load(Ordering::Relaxed) {
                    match c.execute("INSERT INTO t VALUES ($1)", &[&next]).await {
                        Ok(_) => {
                            a.lock().expect("lock").push((next, Instant::now()));
                            next += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(_) => {
                            next += 1;
                            break;
                        }
                    }
                }
            }
        });
        Writer { stop, acked, task }
    }

    fn acked(&self) -> Vec<(i64, Instant)> {
        self.acked.lock().expect("lock").clone()
    }

    async fn stop(self) -> Vec<(i64, Instant)> {
        self.stop.store(true, Ordering::Relaxed);
        let acked = self.acked.clone();
        let _ = self.task.await;
        let all = acked.lock().expect("lock").clone();
        all
    }
}

async fn ids(c: &tokio_postgres::Client) -> std::collections::BTreeSet<i64> {
    c.query("SELECT id FROM t", &[])
        .await
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn primary_killed_under_load_fails_over_after_grace_and_rejoins() {
    let s = setup(
        "fog-auto",
        json!({"failoverPolicy": "Automatic", "failoverWithDataLossGracePeriodMinutes": GRACE}),
    )
    .await;
    let g = &s.group;
    // Lag and the last time in sync are visible while healthy.
    let healthy = s
        .until("lag reported", |g| {
            g["properties"]["replicationLag"]["bytes"].is_u64()
                && g["properties"]["lastInSyncTime"].is_string()
        })
        .await;
    assert!(
        healthy["properties"]["replicationLag"]["seconds"].is_number(),
        "{healthy:#}"
    );

    let writer = Writer::start(g);
    let start = Instant::now();
    while writer.acked().len() < 50 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "writer never wrote"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The primary's host dies: the postmaster is killed -9 and the machine is gone with
    // it (its directory is replaced by a file, so fogd can neither rewind nor re-seed it).
    let pgdata_a = s.f.pgdata_of(&s.a);
    let host_a = pgdata_a.parent().expect("instance dir").to_path_buf();
    let lost = host_a.with_extension("lost");
    kill9_postmaster(&pgdata_a);
    let killed = Instant::now();
    std::fs::rename(&host_a, &lost).expect("take the host away");
    std::fs::write(&host_a, "unreachable").expect("placeholder");

    // The failover happens on its own.
    let mut failed_over = None;
    let view_b = loop {
        let v = s.get(&s.at_b).await;
        if v["properties"]["replicationRole"] == "Primary" && failed_over.is_none() {
            failed_over = Some(killed.elapsed());
        }
        if v["properties"]["lastFailover"]["type"].is_string() {
            break v;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(GRACE) + BOUND + Duration::from_secs(10),
            "no automatic failover: {v:#}\n{}",
            s.f.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let failed_over = failed_over.unwrap_or_else(|| killed.elapsed());
    assert!(
        failed_over >= Duration::from_secs(GRACE),
        "failed over before the grace period ended ({failed_over:?})"
    );
    let last = &view_b["properties"]["lastFailover"];
    assert_eq!(last["type"], "ForcedAllowDataLoss", "{view_b:#}");
    assert!(
        last["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("automatic"),
        "{last}"
    );

    // Writes resume through the same listener, on b. (A backend of the killed postmaster
    // can still acknowledge the write it was running just after the kill — on a, inside
    // the forced failover's loss range — so "resumed" counts from the moment b was seen
    // as primary, not from the kill.)
    let seen_primary = killed + failed_over;
    let resumed = loop {
        if let Some((_, t)) = writer.acked().iter().find(|(_, t)| *t > seen_primary) {
            break *t;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(GRACE) + BOUND,
            "writes did not resume within grace + {BOUND:?}\n{}",
            s.f.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let writable_after = resumed.duration_since(killed);
    eprintln!("kill -9 → failover seen {failed_over:?}, → first write {writable_after:?}");
    assert!(writable_after < Duration::from_secs(GRACE) + BOUND);
    let via_rw = admin_at(g, &["properties", "listeners", "readWrite"], "app")
        .await
        .expect("rw");
    let port: String = via_rw
        .query_one("SELECT current_setting('port')", &[])
        .await
        .expect("port")
        .get(0);
    assert_eq!(
        port,
        s.b["properties"]["postgresEndpoint"]["port"].to_string()
    );

    // The old primary could not be re-attached (its disk is gone): SUSPENDED, and the
    // secondary side reported unavailable.
    let suspended = s
        .until("suspended with the old primary missing", |g| {
            g["properties"]["replicationState"] == "SUSPENDED"
                && g["properties"]["health"]["secondary"]["status"] == "Unavailable"
                && g["properties"]["replicationRole"] == "Secondary"
        })
        .await;
    assert!(
        suspended["properties"]["lastFailover"]["oldPrimary"]
            .as_str()
            .unwrap_or("")
            .starts_with("rejoin failed"),
        "{suspended:#}"
    );

    // Failing back to a former primary that was never rewound would throw away every write
    // since the failover: refused, forced or not.
    for action in ["failover", "forceFailoverAllowDataLoss"] {
        let url = s
            .at_a
            .replace(&format!("?{API}"), &format!("/{action}?{API}"));
        let r = s.f.send(Method::POST, &url, None).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "IncorrectReplicationLinkState"),
            "{action}: {}",
            r.body
        );
    }

    // The host comes back and its PostgreSQL starts by itself — writable, on its old
    // history. It is never routed to; fogd stops, rewinds and re-attaches it.
    std::fs::remove_file(&host_a).expect("placeholder");
    std::fs::rename(&lost, &host_a).expect("host back");
    let _ = std::fs::remove_file(pgdata_a.join("postmaster.pid"));
    // fogd may fence it while it is still starting: then this start fails, which is fine.
    let _ = start_server_at(&pgdata_a, &s.a);
    let back = s
        .until("old primary re-attached", |g| {
            g["properties"]["replicationState"] == "CATCH_UP"
                && g["properties"]["health"]["secondary"]["status"] == "Healthy"
        })
        .await;
    assert_eq!(back["properties"]["replicationRole"], "Secondary");
    let port: String = admin_at(g, &["properties", "listeners", "readWrite"], "app")
        .await
        .expect("rw")
        .query_one("SELECT current_setting('port')", &[])
        .await
        .expect("port")
        .get(0);
    assert_eq!(
        port,
        s.b["properties"]["postgresEndpoint"]["port"].to_string(),
        "the read-write listener never moved back"
    );
    let a_direct = admin_at(&s.a, &["properties", "postgresEndpoint"], "app")
        .await
        .expect("a");
    let standby: bool = a_direct
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("q")
        .get(0);
    assert!(standby, "the old primary runs as a standby");

    // Every write acknowledged after the failover is on both servers.
    let acked = writer.stop().await;
    let b_direct = admin_at(&s.b, &["properties", "postgresEndpoint"], "app")
        .await
        .expect("b");
    let on_b = ids(&b_direct).await;
    let after: Vec<i64> = acked
        .iter()
        .filter(|(_, t)| *t >= resumed)
        .map(|(id, _)| *id)
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|id| on_b.contains(id)),
        "acknowledged rows lost on b"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while ids(&a_direct).await != on_b {
        assert!(Instant::now() < deadline, "a did not catch up with b");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The events tell the story, in order. (Whether fogd saw the old primary running
    // writable before fencing it depends on who is faster, it or `pg_ctl start`.)
    let events = s.events().await;
    assert!(
        in_order(
            &events,
            &[
                "GroupCreated",
                "PrimaryUnavailable",
                "AutomaticFailoverCountdownStarted",
                "AutomaticFailoverTriggered",
                "Fenced",
                "RoleChanged",
                "RejoinFailed",
                "FailoverFinished",
                "OldPrimaryRejoined",
            ]
        ),
        "{events:?}"
    );
    if events.iter().any(|e| e == "StalePrimaryDetected") {
        assert!(
            in_order(&events, &["StalePrimaryDetected", "OldPrimaryRejoined"]),
            "{events:?}"
        );
    }

    // Groups are labelled by name and DNS zone: two groups may share a name, not both.
    let m = s.metrics().await;
    let zone = s.a["properties"]["dnsZone"].as_str().expect("zone");
    for needle in [
        format!("fogd_failovers_total{{group=\"fog-auto\",type=\"automatic\",dns_zone=\"{zone}\"}} 1"),
        format!("fogd_automatic_failovers_total{{group=\"fog-auto\",dns_zone=\"{zone}\"}} 1"),
        format!("fogd_group_replication_lag_bytes{{group=\"fog-auto\",dns_zone=\"{zone}\"}}"),
        format!("fogd_group_member_healthy{{group=\"fog-auto\",instance=\"fog-auto-a\",dns_zone=\"{zone}\"}} 1"),
        format!("fogd_listener_connections_total{{group=\"fog-auto\",endpoint=\"read_write\",dns_zone=\"{zone}\"}}"),
        format!("fogd_listener_bytes_total{{group=\"fog-auto\",endpoint=\"read_write\",direction=\"client_to_server\",dns_zone=\"{zone}\"}}"),
        "fogd_api_requests_total{method=\"GET\",status=\"200\"}".to_string(),
        "fogd_failover_duration_seconds".to_string(),
    ] {
        assert!(m.contains(&needle), "metrics lack {needle}:\n{m}");
    }
}

#[tokio::test]
async fn recovery_within_grace_cancels_and_manual_never_fails_over() {
    // Long enough for a crashed server to restart on a busy machine (crash recovery syncs
    // the file system), short enough for a test.
    let grace = 5;
    let s = setup(
        "fog-grace",
        json!({"failoverPolicy": "Automatic", "failoverWithDataLossGracePeriodMinutes": grace}),
    )
    .await;
    let pgdata_a = s.f.pgdata_of(&s.a);
    let generation = s.get(&s.at_a).await["properties"]["lastFailover"].clone();
    assert!(generation.is_null());

    // Down for less than the grace period: a countdown starts, then is cancelled.
    stop_server_at(&pgdata_a);
    let down = Instant::now();
    let counting = s
        .until("countdown visible", |g| {
            g["properties"]["automaticFailover"]["failoverAt"].is_string()
        })
        .await;
    assert_eq!(
        counting["properties"]["health"]["primary"]["status"],
        "Unavailable"
    );
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(down.elapsed())).await;
    // fogd restarts a server that stopped by itself; if it has not yet, its host does.
    let _ = start_server_at(&pgdata_a, &s.a);
    let back = s
        .until("primary healthy again", |g| {
            g["properties"]["health"]["primary"]["status"] == "Healthy"
                && g["properties"].get("automaticFailover").is_none()
        })
        .await;
    if back["properties"]["replicationRole"] != "Primary" {
        let url = s
            .at_a
            .replace(&format!("?{API}"), &format!("/events?{API}"));
        panic!(
            "the primary must be back before the grace period ends for this test to mean anything: {back:#}\nevents: {:#}\nlog:\n{}",
            s.f.send(Method::GET, &url, None).await.body,
            s.f.log()
        );
    }
    // Well past the original due time: still no failover.
    tokio::time::sleep(Duration::from_secs(grace + 1).saturating_sub(down.elapsed())).await;
    let g = s.get(&s.at_a).await;
    assert_eq!(g["properties"]["replicationRole"], "Primary", "{g:#}");
    assert!(g["properties"]["lastFailover"].is_null(), "{g:#}");
    let events = s.events().await;
    assert!(
        in_order(
            &events,
            &[
                "PrimaryUnavailable",
                "AutomaticFailoverCountdownStarted",
                "PrimaryRecovered",
                "AutomaticFailoverCountdownCancelled",
            ]
        ) || in_order(
            &events,
            &[
                "PrimaryUnavailable",
                "AutomaticFailoverCountdownStarted",
                "AutomaticFailoverCountdownCancelled",
            ]
        ),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e == "AutomaticFailoverTriggered"));

    // Manual: the primary stays down for well over twice the grace period (its host is
    // gone, so nobody can restart it), and nothing fails over by itself.
    let manual = Fogd::group_body(
        &s.a,
        &s.b,
        "westus",
        json!({"readWriteEndpoint": {"failoverPolicy": "Manual"}}),
    );
    let r = s.f.send(Method::PUT, &s.at_a, Some(&manual)).await;
    assert_eq!(s.f.wait_operation(&r).await["status"], "Succeeded");
    let pgdata_a = s.f.pgdata_of(&s.a);
    let host_a = pgdata_a.parent().expect("instance dir").to_path_buf();
    let lost = host_a.with_extension("lost");
    stop_server_at(&pgdata_a);
    std::fs::rename(&host_a, &lost).expect("take the host away");
    std::fs::write(&host_a, "unreachable").expect("placeholder");
    let down = Instant::now();
    s.until("primary seen down", |g| {
        g["properties"]["health"]["primary"]["status"] == "Unavailable"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(grace + 3).saturating_sub(down.elapsed())).await;
    let g = s.get(&s.at_a).await;
    assert_eq!(g["properties"]["replicationRole"], "Primary", "{g:#}");
    assert_eq!(g["properties"]["replicationState"], "SUSPENDED");
    assert!(g["properties"].get("automaticFailover").is_none(), "{g:#}");
    assert!(g["properties"]["lastFailover"].is_null());
    let events = s.events().await;
    assert!(
        !events.iter().any(|e| e == "AutomaticFailoverTriggered"),
        "{events:?}"
    );
    std::fs::remove_file(&host_a).expect("placeholder");
    std::fs::rename(&lost, &host_a).expect("host back");
    // fogd starts it again by itself.
    s.until("healthy again", |g| {
        g["properties"]["replicationState"] == "CATCH_UP"
            && g["properties"]["health"]["primary"]["status"] == "Healthy"
    })
    .await;
}

/// The rejoin of a former primary is a persisted operation: fogd crashing at any of its
/// steps still ends with the old primary re-attached (CATCH_UP, both healthy).
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn rejoin_survives_a_crash_at_every_step() {
    let mut s = setup("fog-rejoin", json!({"failoverPolicy": "Manual"})).await;
    let sub_path = s.f.rg_path("RG");
    let at = |loc: &str, rg: &str, action: &str| {
        format!(
            "{}/locations/{loc}/instanceFailoverGroups/fog-rejoin/{action}?{API}",
            sub_path.replace("/resourceGroups/RG", &format!("/resourceGroups/{rg}"))
        )
    };
    let mut members = [
        (s.a.clone(), "eastus", "rg-east"),
        (s.b.clone(), "westus", "rg-west"),
    ];
    for step in [
        "rejoin.fence",
        "rejoin.rewind",
        "rejoin.link",
        "rejoin.finish",
    ] {
        let [(primary, _, _), (_, sec_loc, sec_rg)] = &members;
        // The primary's host disappears; a forced failover cannot re-attach it.
        let pgdata = s.f.pgdata_of(primary);
        let host = pgdata.parent().expect("dir").to_path_buf();
        let lost = host.with_extension("lost");
        kill9_postmaster(&pgdata);
        std::fs::rename(&host, &lost).expect("host away");
        std::fs::write(&host, "unreachable").expect("placeholder");
        let r =
            s.f.send(
                Method::POST,
                &at(sec_loc, sec_rg, "forceFailoverAllowDataLoss"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        assert_eq!(s.f.wait_operation(&r).await["status"], "Succeeded");
        // fogd dies (servers keep running); the host comes back; fogd restarts and crashes
        // at `step` of the rejoin it starts.
        s.f.kill9();
        std::fs::remove_file(&host).expect("placeholder");
        std::fs::rename(&lost, &host).expect("host back");
        let mut crashing = env();
        let fp = format!("{step}=crash");
        crashing.push(("FOGD_FAILPOINTS", &fp));
        s.f.launch(&crashing).await;
        let exit = s.f.wait_exit(Duration::from_secs(60)).await;
        assert!(!exit.success(), "fogd crashed at {step}");
        s.f.launch(&env()).await;
        s.until(&format!("re-attached after a crash at {step}"), |g| {
            g["properties"]["replicationState"] == "CATCH_UP"
                && g["properties"]["health"]["primary"]["status"] == "Healthy"
                && g["properties"]["health"]["secondary"]["status"] == "Healthy"
        })
        .await;
        members.swap(0, 1);
    }
    let events = s.events().await;
    assert!(
        events.iter().filter(|e| *e == "OldPrimaryRejoined").count() >= 4,
        "{events:?}"
    );
}
