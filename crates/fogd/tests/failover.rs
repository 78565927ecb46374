//! Planned failover (no data loss), its timeout (group unchanged), the update-policy rule,
//! and forced failover (data loss reported, old primary rewound and re-attached).

mod common;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

async fn via(g: &Value, which: &str) -> tokio_postgres::Client {
    for _ in 0..100 {
        if let Ok(c) = admin_at(g, &["properties", "listeners", which], "app").await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{which} listener unreachable");
}

async fn direct(mi: &Value) -> tokio_postgres::Client {
    admin_at(mi, &["properties", "postgresEndpoint"], "app")
        .await
        .expect("direct")
}

async fn scalar(c: &tokio_postgres::Client, q: &str) -> i64 {
    c.query_one(q, &[])
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(-1)
}

/// The port of the server a listener leads to, and whether it is a standby.
async fn reached(g: &Value, which: &str) -> (String, bool) {
    let c = via(g, which).await;
    let r = c
        .query_one("SELECT current_setting('port'), pg_is_in_recovery()", &[])
        .await
        .expect("q");
    (r.get(0), r.get(1))
}

fn port_of(mi: &Value) -> String {
    mi["properties"]["postgresEndpoint"]["port"].to_string()
}

async fn failover(f: &Fogd, rg: &str, loc: &str, action: &str) -> (Reply, Value) {
    let url = format!(
        "{}/locations/{loc}/instanceFailoverGroups/fog-fo/{action}?{API}",
        f.rg_path(rg)
    );
    let r = f.send(Method::POST, &url, None).await;
    if r.status != StatusCode::ACCEPTED {
        return (r, Value::Null);
    }
    let done = f.wait_operation(&r).await;
    (r, done)
}

fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').unwrap_or(("0", "0"));
    (u64::from_str_radix(hi, 16).unwrap_or(0) << 32) | u64::from_str_radix(lo, 16).unwrap_or(0)
}

async fn lsn_of(c: &tokio_postgres::Client, q: &str) -> u64 {
    let text: String = c.query_one(q, &[]).await.expect("lsn").get(0);
    lsn(&text)
}

async fn detach(standby: &Value) -> String {
    let c = direct(standby).await;
    let original: String = c
        .query_one("SHOW primary_conninfo", &[])
        .await
        .expect("show")
        .get(0);
    c.batch_execute("ALTER SYSTEM SET primary_conninfo = ''")
        .await
        .expect("detach");
    c.batch_execute("SELECT pg_reload_conf()")
        .await
        .expect("reload");
    for _ in 0..200 {
        let n = scalar(&c, "SELECT count(*) FROM pg_stat_wal_receiver").await;
        if n == 0 {
            return original;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("standby did not detach");
}

async fn patch(f: &Fogd, rg: &str, mi: &str) {
    let url = format!("{}?{API}", f.mi_path(rg, mi));
    let r = f
        .send(
            Method::PATCH,
            &url,
            Some(r#"{"properties":{"databaseFormat":"AlwaysUpToDate"}}"#),
        )
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
}

#[tokio::test]
async fn planned_and_forced_failover() {
    let f = Fogd::start_with(&[("FOGD_PLANNED_FAILOVER_TIMEOUT_MS", "3000")]).await;
    let a = f.create_instance("rg-east", "fo-a", "eastus").await;
    let b = f.create_partner("rg-west", "fo-b", "westus", &a).await;
    let r = f
        .send(
            Method::PUT,
            &format!("{}/databases/app?{API}", f.mi_path("rg-east", "fo-a")),
            Some("{}"),
        )
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    direct(&a)
        .await
        .batch_execute(
            "CREATE TABLE t(id int primary key); INSERT INTO t SELECT generate_series(1, 100)",
        )
        .await
        .expect("load");
    let group = Fogd::group_body(&a, &b, "westus", json!({}));
    let at_a = format!(
        "{}/locations/eastus/instanceFailoverGroups/fog-fo?{API}",
        f.rg_path("rg-east")
    );
    let at_b = format!(
        "{}/locations/westus/instanceFailoverGroups/fog-fo?{API}",
        f.rg_path("rg-west")
    );
    let r = f.send(Method::PUT, &at_a, Some(&group)).await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    let g = f.send(Method::GET, &at_a, None).await.body;

    // Failover must be requested at the secondary.
    for action in ["failover", "forceFailoverAllowDataLoss"] {
        let (r, _) = failover(&f, "rg-east", "eastus", action).await;
        assert_eq!(
            (r.status, r.code()),
            (
                StatusCode::BAD_REQUEST,
                "InstanceFailoverGroupFailoverRequestOnPrimary"
            )
        );
    }
    let missing = f
        .send(
            Method::POST,
            &format!(
                "{}/locations/westus/instanceFailoverGroups/nope/failover?{API}",
                f.rg_path("rg-west")
            ),
            None,
        )
        .await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "ResourceNotFound")
    );

    // Planned failover to b: roles swap, nothing lost, listeners follow.
    let (r, done) = failover(&f, "rg-west", "westus", "failover").await;
    assert_eq!(done["status"], "Succeeded", "{done}\n{}", f.log());
    let result = f
        .send(Method::GET, &r.header("location").expect("Location"), None)
        .await;
    assert_eq!(result.status, StatusCode::OK);
    assert_eq!(result.body["properties"]["replicationRole"], "Primary");
    assert_eq!(
        result.body["properties"]["managedInstancePairs"][0]["primaryManagedInstanceId"],
        b["id"]
    );
    assert_eq!(
        result.body["properties"]["partnerRegions"][0],
        json!({"location": "eastus", "replicationRole": "Secondary"})
    );
    assert_eq!(result.body["properties"]["lastFailover"]["type"], "Planned");
    assert_eq!(
        result.body["properties"]["lastFailover"]["oldPrimary"],
        "followed"
    );
    assert!(result.body["properties"]["lastFailover"]
        .get("dataLoss")
        .is_none());
    assert_eq!(
        f.send(Method::GET, &at_a, None).await.body["properties"]["replicationRole"],
        "Secondary"
    );
    assert_eq!(reached(&g, "readWrite").await, (port_of(&b), false));
    let rw = via(&g, "readWrite").await;
    assert_eq!(
        scalar(&rw, "SELECT count(*) FROM t").await,
        100,
        "nothing lost"
    );
    rw.batch_execute("INSERT INTO t VALUES (101)")
        .await
        .expect("write on the new primary");
    let mut ro_ok = false;
    for _ in 0..100 {
        if reached(&g, "readOnly").await == (port_of(&a), true)
            && scalar(&via(&g, "readOnly").await, "SELECT count(*) FROM t").await == 101
        {
            ro_ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ro_ok,
        "the old primary streams from the new one behind the read-only listener"
    );
    // Databases follow the primary.
    let dbs = f
        .send(
            Method::GET,
            &format!("{}/databases?{API}", f.mi_path("rg-west", "fo-b")),
            None,
        )
        .await
        .body;
    assert_eq!(dbs["value"][0]["name"], "app");
    let r = f
        .send(
            Method::PUT,
            &format!("{}/databases/x?{API}", f.mi_path("rg-east", "fo-a")),
            Some("{}"),
        )
        .await;
    assert_eq!(r.code(), "DatabaseOperationOnGeoSecondaryNotAllowed");

    // Failback, planned.
    let (_, done) = failover(&f, "rg-east", "eastus", "failover").await;
    assert_eq!(done["status"], "Succeeded", "{done}");
    assert_eq!(reached(&g, "readWrite").await, (port_of(&a), false));

    // Planned failover whose secondary cannot catch up: times out, group unchanged and
    // still writable on the old primary.
    let original = detach(&b).await;
    let (_, done) = failover(&f, "rg-west", "westus", "failover").await;
    assert_eq!(done["status"], "Failed", "{done}");
    assert_eq!(done["error"]["code"], "PlannedFailoverTimedOut");
    assert_eq!(
        f.send(Method::GET, &at_a, None).await.body["properties"]["replicationRole"],
        "Primary"
    );
    let rw = via(&g, "readWrite").await;
    rw.batch_execute("INSERT INTO t VALUES (102)")
        .await
        .expect("old primary writable again");
    assert_eq!(reached(&g, "readWrite").await, (port_of(&a), false));
    let c = direct(&b).await;
    c.batch_execute(&format!(
        "ALTER SYSTEM SET primary_conninfo = '{}'",
        original.replace('\'', "''")
    ))
    .await
    .expect("restore");
    c.batch_execute("SELECT pg_reload_conf()")
        .await
        .expect("reload");

    // Different update policies block failover; the guide's order (secondary first, then
    // primary) makes it possible again.
    patch(&f, "rg-west", "fo-b").await;
    let (r, _) = failover(&f, "rg-west", "westus", "failover").await;
    assert_eq!(
        (r.status, r.code()),
        (
            StatusCode::BAD_REQUEST,
            "ManagedInstanceFailoverInFailoverGroupInstancesWithDifferentVersionEditions"
        )
    );
    patch(&f, "rg-east", "fo-a").await;

    // Forced failover with data loss: the secondary is cut off, writes go on, then b is
    // promoted at once. Rows written after the cut are lost, and reported.
    assert_eq!(
        scalar(&direct(&b).await, "SELECT count(*) FROM t").await,
        102,
        "b caught up after re-attaching"
    );
    detach(&b).await;
    let b_has = lsn_of(&direct(&b).await, "SELECT pg_last_wal_replay_lsn()::text").await;
    let rw = via(&g, "readWrite").await;
    rw.batch_execute("INSERT INTO t SELECT generate_series(1000, 1999)")
        .await
        .expect("writes b never sees");
    let a_had = lsn_of(&rw, "SELECT pg_current_wal_lsn()::text").await;
    let (r, done) = failover(&f, "rg-west", "westus", "forceFailoverAllowDataLoss").await;
    assert_eq!(done["status"], "Succeeded", "{done}\n{}", f.log());
    let result = f
        .send(Method::GET, &r.header("location").expect("Location"), None)
        .await
        .body;
    let report = &result["properties"]["lastFailover"];
    assert_eq!(report["type"], "ForcedAllowDataLoss");
    assert_eq!(report["oldPrimary"], "rewound");
    assert!(
        report["dataLoss"]["bytes"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    // The reported range starts where the secondary's history ends and covers all the WAL
    // the old primary wrote after it.
    let from = lsn(report["dataLoss"]["fromLsn"].as_str().unwrap_or(""));
    let to = lsn(report["dataLoss"]["toLsn"].as_str().unwrap_or(""));
    assert_eq!(
        from, b_has,
        "loss starts at the secondary's last replayed LSN: {report}"
    );
    assert!(
        to >= a_had,
        "loss covers the old primary's writes: {report}"
    );
    assert_eq!(report["dataLoss"]["bytes"].as_u64(), Some(to - from));
    assert_eq!(reached(&g, "readWrite").await, (port_of(&b), false));
    let rw = via(&g, "readWrite").await;
    assert_eq!(
        scalar(&rw, "SELECT count(*) FROM t").await,
        102,
        "exactly the rows after the cut are gone"
    );
    rw.batch_execute("INSERT INTO t VALUES (103)")
        .await
        .expect("writable");
    let mut rejoined = false;
    for _ in 0..100 {
        if reached(&g, "readOnly").await == (port_of(&a), true)
            && scalar(&via(&g, "readOnly").await, "SELECT count(*) FROM t").await == 103
        {
            rejoined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        rejoined,
        "the old primary streams from the new one, without the lost rows"
    );
    assert_eq!(
        f.send(Method::GET, &at_b, None).await.body["properties"]["replicationRole"],
        "Primary"
    );
}
