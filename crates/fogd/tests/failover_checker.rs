//! The failover checker: a client writes uniquely numbered rows through the read-write
//! listener while fogd runs 20 planned failovers back and forth; a monitor watches both
//! servers the whole time. Afterwards every acknowledged row is on both servers, and there
//! was never a moment with two writable primaries. Also: crash fogd at every failover step.

mod common;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn client(
    host: &str,
    port: u64,
    db: &str,
    timeout: Duration,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    pg(host, port, "fogadmin", PASSWORD, db, timeout).await
}

struct Setup {
    a: Value,
    b: Value,
    group: Value,
}

async fn setup(f: &Fogd) -> Setup {
    let a = f.create_instance("rg-east", "ck-a", "eastus").await;
    let b = f.create_partner("rg-west", "ck-b", "westus", &a).await;
    let r = f
        .send(
            Method::PUT,
            &format!("{}/databases/app?{API}", f.mi_path("rg-east", "ck-a")),
            Some("{}"),
        )
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    let (h, p) = endpoint(&a, &["properties", "postgresEndpoint"]);
    client(&h, p, "app", Duration::from_secs(5))
        .await
        .expect("a")
        .batch_execute("CREATE TABLE acked(id bigint primary key)")
        .await
        .expect("table");
    let g = Fogd::group_body(&a, &b, "westus", json!({}));
    let url = format!(
        "{}/locations/eastus/instanceFailoverGroups/fog-ck?{API}",
        f.rg_path("rg-east")
    );
    let r = f.send(Method::PUT, &url, Some(&g)).await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    let group = f.send(Method::GET, &url, None).await.body;
    Setup { a, b, group }
}

async fn planned_failover_to(f: &Fogd, rg: &str, loc: &str) -> Value {
    let url = format!(
        "{}/locations/{loc}/instanceFailoverGroups/fog-ck/failover?{API}",
        f.rg_path(rg)
    );
    let r = f.send(Method::POST, &url, None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    f.wait_operation(&r).await
}

/// Ids present on a server.
async fn ids(v: &Value) -> BTreeSet<i64> {
    let (h, p) = endpoint(v, &["properties", "postgresEndpoint"]);
    let c = client(&h, p, "app", Duration::from_secs(5))
        .await
        .expect("connect");
    c.query("SELECT id FROM acked", &[])
        .await
        .expect("read")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn no_acknowledged_write_lost_over_20_planned_failovers() {
    let f = Fogd::start().await;
    let s = setup(&f).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));

    // Writer: one row per transaction through the read-write listener; reconnects when the
    // listener closes its connection during a switch.
    let (rw_host, rw_port) = endpoint(&s.group, &["properties", "listeners", "readWrite"]);
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut next = 1i64;
            let mut conn: Option<tokio_postgres::Client> = None;
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if conn.as_ref().is_none_or(|c| c.is_closed()) {
                    conn = client(&rw_host, rw_port, "app", Duration::from_secs(2))
                        .await
                        .ok();
                    if conn.is_none() {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                }
                let Some(c) = conn.as_ref() else { continue };
                match c.execute("INSERT INTO acked VALUES ($1)", &[&next]).await {
                    Ok(_) => acked.lock().expect("lock").push(next),
                    Err(_) => {
                        errors += 1;
                        conn = None;
                    }
                }
                next += 1; // an unacknowledged id is never reused
            }
            errors
        })
    };

    // Monitor: both servers, every few milliseconds; two writable primaries at once is a
    // violation.
    let monitor = {
        let stop = stop.clone();
        let servers = [
            endpoint(&s.a, &["properties", "postgresEndpoint"]),
            endpoint(&s.b, &["properties", "postgresEndpoint"]),
        ];
        tokio::spawn(async move {
            let mut conns: [Option<tokio_postgres::Client>; 2] = [None, None];
            let (mut samples, mut violations) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let mut writable = [false, false];
                for (i, (h, p)) in servers.iter().enumerate() {
                    if conns[i].as_ref().is_none_or(|c| c.is_closed()) {
                        conns[i] = client(h, *p, "postgres", Duration::from_millis(200))
                            .await
                            .ok();
                    }
                    if let Some(c) = &conns[i] {
                        match c.query_one("SELECT NOT pg_is_in_recovery()", &[]).await {
                            Ok(r) => writable[i] = r.get(0),
                            Err(_) => conns[i] = None,
                        }
                    }
                }
                samples += 1;
                if writable[0] && writable[1] {
                    violations += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (samples, violations)
        })
    };

    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..20 {
        let (rg, loc) = if i % 2 == 0 {
            ("rg-west", "westus")
        } else {
            ("rg-east", "eastus")
        };
        let done = planned_failover_to(&f, rg, loc).await;
        assert_eq!(
            done["status"],
            "Succeeded",
            "failover {i}: {done}\n{}",
            f.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let errors = writer.await.expect("writer");
    let (samples, violations) = monitor.await.expect("monitor");
    let acked: BTreeSet<i64> = acked.lock().expect("lock").iter().copied().collect();

    assert!(
        acked.len() > 100,
        "the writer made progress: {} rows, {errors} errors",
        acked.len()
    );
    assert!(samples > 100, "the monitor sampled: {samples}");
    assert_eq!(
        violations, 0,
        "never two writable primaries ({samples} samples)"
    );
    // Every acknowledged row is on the primary and, once caught up, on the secondary.
    let primary = ids(&s.a).await;
    assert!(
        acked.is_subset(&primary),
        "lost on the primary: {:?}",
        acked.difference(&primary).take(10).collect::<Vec<_>>()
    );
    let mut on_secondary = BTreeSet::new();
    for _ in 0..100 {
        on_secondary = ids(&s.b).await;
        if acked.is_subset(&on_secondary) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(acked.is_subset(&on_secondary), "missing on the secondary");
    eprintln!(
        "checker: {} acknowledged rows, {errors} client errors, {samples} monitor samples",
        acked.len()
    );
}

/// Crash at every step boundary of a planned failover (and of a forced one); after a
/// restart exactly one primary and one streaming secondary remain, the read-write listener
/// reaches the primary, and (planned) no acknowledged write is lost.
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn crash_at_every_failover_step_converges() {
    let mut f = Fogd::start().await;
    let s = setup(&f).await;
    let (rw_host, rw_port) = endpoint(&s.group, &["properties", "listeners", "readWrite"]);
    let (ro_host, ro_port) = endpoint(&s.group, &["properties", "listeners", "readOnly"]);
    let planned = [
        "failover.fence",
        "failover.stop_old",
        "failover.catch_up",
        "failover.promote",
        "failover.route",
        "failover.rejoin",
        "failover.finish",
    ];
    let forced = ["failover.stop_old", "failover.route", "failover.rejoin"];
    let cases = planned
        .iter()
        .map(|s| ("failover", *s))
        .chain(forced.iter().map(|s| ("forceFailoverAllowDataLoss", *s)));
    let mut expected = BTreeSet::new();
    for (i, (action, step)) in cases.enumerate() {
        // A committed row before each crash.
        let rw = client(&rw_host, rw_port, "app", Duration::from_secs(5))
            .await
            .expect("rw");
        rw.execute("INSERT INTO acked VALUES ($1)", &[&(i as i64)])
            .await
            .expect("write");
        expected.insert(i as i64);
        drop(rw);
        // Whoever is secondary now is the target.
        let view = f
            .send(
                Method::GET,
                &format!(
                    "{}/locations/eastus/instanceFailoverGroups/fog-ck?{API}",
                    f.rg_path("rg-east")
                ),
                None,
            )
            .await
            .body;
        let (rg, loc) = if view["properties"]["replicationRole"] == "Secondary" {
            ("rg-east", "eastus")
        } else {
            ("rg-west", "westus")
        };
        // Let the secondary catch up, so even a forced failover loses nothing here.
        tokio::time::sleep(Duration::from_millis(300)).await;
        f.terminate();
        f.launch(&[("FOGD_FAILPOINTS", &format!("{step}=crash"))])
            .await;
        let url = format!(
            "{}/locations/{loc}/instanceFailoverGroups/fog-ck/{action}?{API}",
            f.rg_path(rg)
        );
        let r = f.send(Method::POST, &url, None).await;
        assert_eq!(
            r.status,
            StatusCode::ACCEPTED,
            "{action} {step}: {}",
            r.body
        );
        let status_url = r.header("azure-asyncoperation").expect("status url");
        assert!(
            !f.wait_exit(Duration::from_secs(60)).await.success(),
            "crashed at {step}"
        );
        f.launch(&[]).await;
        let done = f.poll(&status_url, Duration::from_secs(90)).await;
        assert_eq!(
            done["status"],
            "Succeeded",
            "{action} crashed at {step}: {done}\n{}",
            f.log()
        );

        // Exactly one primary, the listener on it, the other streaming.
        let mut ok = false;
        for _ in 0..100 {
            let rw = client(&rw_host, rw_port, "app", Duration::from_secs(2)).await;
            let ro = client(&ro_host, ro_port, "app", Duration::from_secs(2)).await;
            if let (Ok(rw), Ok(ro)) = (rw, ro) {
                let w: bool = rw
                    .query_one("SELECT NOT pg_is_in_recovery()", &[])
                    .await
                    .map(|r| r.get(0))
                    .unwrap_or(false);
                let r: bool = ro
                    .query_one("SELECT pg_is_in_recovery()", &[])
                    .await
                    .map(|r| r.get(0))
                    .unwrap_or(false);
                if w && r {
                    let got: BTreeSet<i64> = rw
                        .query("SELECT id FROM acked", &[])
                        .await
                        .expect("read")
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                    assert!(
                        expected.is_subset(&got),
                        "{action} {step}: acknowledged rows lost"
                    );
                    ok = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "{action} crashed at {step}: one primary behind the rw listener, one standby behind the ro listener\n{}", f.log());
        let writable = [&s.a, &s.b]
            .iter()
            .filter(|v| {
                let (h, p) = endpoint(v, &["properties", "postgresEndpoint"]);
                futures_lite_block(async move {
                    match client(&h, p, "postgres", Duration::from_secs(2)).await {
                        Ok(c) => c
                            .query_one("SELECT NOT pg_is_in_recovery()", &[])
                            .await
                            .map(|r| r.get::<_, bool>(0))
                            .unwrap_or(false),
                        Err(_) => false,
                    }
                })
            })
            .count();
        assert_eq!(
            writable, 1,
            "{action} crashed at {step}: exactly one writable server"
        );
    }
}

#[cfg(feature = "failpoints")]
fn futures_lite_block<F: std::future::Future<Output = bool> + Send + 'static>(fut: F) -> bool {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fut)
    })
    .join()
    .unwrap_or(false)
}
