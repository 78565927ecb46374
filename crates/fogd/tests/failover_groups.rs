//! Instance failover groups end to end: real seeding with pg_basebackup, streaming
//! replication, listener endpoints, two-sided views, update, delete, and the guide's
//! "change the secondary region" procedure.

mod common;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

fn group_path(f: &Fogd, rg: &str, location: &str, name: &str) -> String {
    format!(
        "{}/locations/{location}/instanceFailoverGroups/{name}?{API}",
        f.rg_path(rg)
    )
}

async fn listener(
    view: &Value,
    which: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    admin_at(view, &["properties", "listeners", which], db).await
}

/// Polls `query` (returning one bigint) until it equals `want`.
async fn eventually(c: &tokio_postgres::Client, query: &str, want: i64) -> bool {
    for _ in 0..200 {
        if let Ok(r) = c.query_one(query, &[]).await {
            if r.get::<_, i64>(0) == want {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test]
async fn failover_group_end_to_end_and_change_of_secondary_region() {
    let f = Fogd::start().await;
    let a = f.create_instance("rg-east", "mi-a", "eastus").await;
    let b = f.create_partner("rg-west", "mi-b", "westus", &a).await;

    // A non-trivial database on the primary: tens of MB to seed.
    let r = f
        .send(
            Method::PUT,
            &format!("{}/databases/sales?{API}", f.mi_path("rg-east", "mi-a")),
            Some("{}"),
        )
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    let sales = pg_connect(&a, "fogadmin", PASSWORD, "sales")
        .await
        .expect("connect");
    sales
        .batch_execute("CREATE TABLE orders(id bigint primary key, pad text); INSERT INTO orders SELECT g, repeat('x', 200) FROM generate_series(1, 150000) g")
        .await
        .expect("load");

    // Create the group at the primary's location, and watch seeding progress.
    let path_a = group_path(&f, "rg-east", "eastus", "fog-e2e");
    let path_b = group_path(&f, "rg-west", "westus", "fog-e2e");
    let r = f
        .send(
            Method::PUT,
            &path_a,
            Some(&Fogd::group_body(&a, &b, "westus", json!({}))),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let status_url = r.header("azure-asyncoperation").expect("status url");
    assert!(
        status_url.contains("/locations/eastus/instanceFailoverGroupAzureAsyncOperation/"),
        "{status_url}"
    );
    let mut percents = Vec::new();
    let mut saw_seeding_state = false;
    let done = loop {
        let s = f.send(Method::GET, &status_url, None).await.body;
        if let Some(p) = s["percentComplete"].as_u64() {
            percents.push(p);
        }
        let g = f.send(Method::GET, &path_a, None).await.body;
        saw_seeding_state |= matches!(
            g["properties"]["replicationState"].as_str(),
            Some("SEEDING" | "PENDING")
        );
        if s["status"] != "InProgress" {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["status"], "Succeeded", "{done}; log:\n{}", f.log());
    assert!(
        saw_seeding_state,
        "GET showed PENDING/SEEDING while the operation ran"
    );
    assert!(
        percents.windows(2).all(|w| w[0] <= w[1]),
        "progress never goes back: {percents:?}"
    );

    // Both views, mirrored; the pair lists the current primary first.
    let ga = f.send(Method::GET, &path_a, None).await.body;
    let gb = f.send(Method::GET, &path_b, None).await.body;
    assert_eq!(ga["properties"]["replicationRole"], "Primary");
    assert_eq!(gb["properties"]["replicationRole"], "Secondary");
    assert_eq!(
        ga["properties"]["partnerRegions"][0],
        json!({"location": "westus", "replicationRole": "Secondary"})
    );
    assert_eq!(
        gb["properties"]["partnerRegions"][0],
        json!({"location": "eastus", "replicationRole": "Primary"})
    );
    assert_eq!(
        ga["properties"]["managedInstancePairs"][0]["primaryManagedInstanceId"],
        a["id"]
    );
    assert_eq!(
        gb["properties"]["managedInstancePairs"],
        ga["properties"]["managedInstancePairs"]
    );
    assert!(gb["id"].as_str().is_some_and(
        |i| i.contains("/resourceGroups/rg-west/providers/Microsoft.Sql/locations/westus/")
    ));
    let seeded = &ga["properties"]["seedingProgress"];
    assert!(
        seeded["bytesTotal"].as_u64().unwrap_or(0) > 20_000_000,
        "tens of MB seeded: {seeded}"
    );
    assert_eq!(seeded["bytesDone"], seeded["bytesTotal"]);
    let zone = a["properties"]["dnsZone"].as_str().expect("zone");
    assert_eq!(
        ga["properties"]["listeners"]["readWrite"]["hostName"],
        format!("fog-e2e.{zone}.database.fogd.local")
    );
    assert_eq!(
        ga["properties"]["listeners"]["readOnly"]["hostName"],
        format!("fog-e2e.secondary.{zone}.database.fogd.local")
    );
    let list = f
        .send(
            Method::GET,
            &format!(
                "{}/locations/westus/instanceFailoverGroups?{API}",
                f.rg_path("rg-west")
            ),
            None,
        )
        .await;
    assert_eq!(list.body["value"][0]["name"], "fog-e2e");

    // Write through the read-write listener, read through the read-only listener.
    let rw = listener(&ga, "readWrite", "sales")
        .await
        .expect("rw listener");
    rw.batch_execute("INSERT INTO orders VALUES (-1, 'through the listener')")
        .await
        .expect("write");
    let ro = listener(&ga, "readOnly", "sales")
        .await
        .expect("ro listener");
    assert!(
        eventually(&ro, "SELECT count(*) FROM orders WHERE id = -1", 1).await,
        "row replicated"
    );
    assert!(
        eventually(&ro, "SELECT count(*) FROM orders", 150_001).await,
        "seeded data present"
    );
    assert!(
        ro.batch_execute("INSERT INTO orders VALUES (-2, 'no')")
            .await
            .is_err(),
        "read-only endpoint is read-only"
    );
    let state =
        f.send(Method::GET, &path_b, None).await.body["properties"]["replicationState"].clone();
    assert_eq!(state, "CATCH_UP");

    // Databases: the secondary lists the replicas with failoverGroupId; it refuses changes.
    let dbs_b = f
        .send(
            Method::GET,
            &format!("{}/databases?{API}", f.mi_path("rg-west", "mi-b")),
            None,
        )
        .await
        .body;
    assert_eq!(dbs_b["value"][0]["name"], "sales");
    assert_eq!(dbs_b["value"][0]["properties"]["failoverGroupId"], gb["id"]);
    assert_eq!(
        dbs_b["value"][0]["location"], "westus",
        "a replica is where the instance it is seen through is"
    );
    assert!(dbs_b["value"][0]["id"]
        .as_str()
        .is_some_and(|i| i.contains("/managedInstances/mi-b/databases/sales")));
    let refused = f
        .send(
            Method::PUT,
            &format!("{}/databases/other?{API}", f.mi_path("rg-west", "mi-b")),
            Some("{}"),
        )
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (
            StatusCode::BAD_REQUEST,
            "DatabaseOperationOnGeoSecondaryNotAllowed"
        )
    );
    let refused = f
        .send(
            Method::DELETE,
            &format!("{}/databases/sales?{API}", f.mi_path("rg-west", "mi-b")),
            None,
        )
        .await;
    assert_eq!(refused.code(), "DatabaseOperationOnGeoSecondaryNotAllowed");
    // A database created on the primary appears on the secondary.
    let r = f
        .send(
            Method::PUT,
            &format!("{}/databases/later?{API}", f.mi_path("rg-east", "mi-a")),
            Some("{}"),
        )
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    let mut later = None;
    for _ in 0..100 {
        if let Ok(c) = listener(&ga, "readOnly", "later").await {
            later = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(later.is_some(), "new database reachable on the secondary");
    let dbs_b = f
        .send(
            Method::GET,
            &format!("{}/databases?{API}", f.mi_path("rg-west", "mi-b")),
            None,
        )
        .await
        .body;
    assert_eq!(dbs_b["value"].as_array().map(Vec::len), Some(2));
    // An instance in a group cannot be deleted.
    let r = f
        .send(
            Method::DELETE,
            &format!("{}?{API}", f.mi_path("rg-west", "mi-b")),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "ManagedInstanceInFailoverGroup")
    );

    // Update policies in place (at the primary); not at the secondary.
    let update = Fogd::group_body(
        &a,
        &b,
        "westus",
        json!({
        "readWriteEndpoint": {"failoverPolicy": "Automatic", "failoverWithDataLossGracePeriodMinutes": 120},
        "readOnlyEndpoint": {"failoverPolicy": "Enabled"}}),
    );
    let r = f.send(Method::PUT, &path_b, Some(&update)).await;
    assert_eq!(
        (r.status, r.code()),
        (
            StatusCode::BAD_REQUEST,
            "InstanceFailoverGroupUpdateOrDeleteRequestOnSecondary"
        )
    );
    let r = f.send(Method::PUT, &path_a, Some(&update)).await;
    let result_url = r.header("location").expect("Location");
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    let updated = f.send(Method::GET, &result_url, None).await;
    assert_eq!(updated.status, StatusCode::OK);
    assert_eq!(
        updated.body["properties"]["readWriteEndpoint"]["failoverWithDataLossGracePeriodMinutes"],
        120
    );
    assert_eq!(
        updated.body["properties"]["readOnlyEndpoint"]["failoverPolicy"],
        "Enabled"
    );
    rw.batch_execute("INSERT INTO orders VALUES (-3, 'after update')")
        .await
        .expect("replication untouched by update");
    let r = f
        .send(
            Method::PUT,
            &path_a,
            Some(&Fogd::group_body(&a, &b, "centralus", json!({}))),
        )
        .await;
    assert_eq!(
        r.code(),
        "InstanceFailoverGroupCreateOrUpdateRequestReadOnlyPropertyModified"
    );
    assert!(r.body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("'partnerRegions'")));

    // Delete: not at the secondary; at the primary it promotes the secondary.
    let r = f.send(Method::DELETE, &path_b, None).await;
    assert_eq!(
        r.code(),
        "InstanceFailoverGroupUpdateOrDeleteRequestOnSecondary"
    );
    let ro_port = ga["properties"]["listeners"]["readOnly"]["port"].clone();
    let rw_port = ga["properties"]["listeners"]["readWrite"]["port"].clone();
    drop((rw, ro, later));
    let r = f.send(Method::DELETE, &path_a, None).await;
    assert_eq!(
        f.wait_operation(&r).await["status"],
        "Succeeded",
        "{}",
        f.log()
    );
    for p in [&path_a, &path_b] {
        let g = f.send(Method::GET, p, None).await;
        assert_eq!(
            (g.status, g.code()),
            (StatusCode::NOT_FOUND, "ResourceNotFound")
        );
    }
    assert_eq!(
        f.send(Method::DELETE, &path_a, None).await.status,
        StatusCode::NO_CONTENT
    );
    let mut closed = false;
    for _ in 0..100 {
        if listener(&ga, "readWrite", "sales").await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "listeners are gone");
    let former = pg_connect(&b, "fogadmin", PASSWORD, "sales")
        .await
        .expect("former secondary");
    former
        .batch_execute("INSERT INTO orders VALUES (-4, 'stand-alone now')")
        .await
        .expect("former secondary is read-write");
    let dbs_b = f
        .send(
            Method::GET,
            &format!("{}/databases?{API}", f.mi_path("rg-west", "mi-b")),
            None,
        )
        .await
        .body;
    assert!(dbs_b["value"][0]["properties"]
        .get("failoverGroupId")
        .is_none());
    let r = f
        .send(
            Method::PUT,
            &format!("{}/databases/mine?{API}", f.mi_path("rg-west", "mi-b")),
            Some("{}"),
        )
        .await;
    assert_eq!(
        f.wait_operation(&r).await["status"],
        "Succeeded",
        "former secondary accepts database changes"
    );

    // The guide's "change the secondary region": same name, A–C; same listener names.
    let c = f
        .create_partner("rg-central", "mi-c", "centralus", &a)
        .await;
    let r = f
        .send(
            Method::PUT,
            &path_a,
            Some(&Fogd::group_body(&a, &c, "centralus", json!({}))),
        )
        .await;
    assert_eq!(
        f.wait_operation(&r).await["status"],
        "Succeeded",
        "{}",
        f.log()
    );
    let g2 = f.send(Method::GET, &path_a, None).await.body;
    assert_eq!(
        g2["properties"]["listeners"]["readWrite"]["hostName"],
        ga["properties"]["listeners"]["readWrite"]["hostName"]
    );
    assert_eq!(
        g2["properties"]["listeners"]["readWrite"]["port"], rw_port,
        "listener port reused"
    );
    assert_eq!(
        g2["properties"]["listeners"]["readOnly"]["port"], ro_port,
        "listener port reused"
    );
    assert_eq!(
        g2["properties"]["partnerRegions"][0]["location"],
        "centralus"
    );
    let ro = listener(&g2, "readOnly", "sales")
        .await
        .expect("ro listener on C");
    assert!(
        eventually(&ro, "SELECT count(*) FROM orders WHERE id IN (-1, -3)", 2).await,
        "C seeded from A"
    );
    let gc = f
        .send(
            Method::GET,
            &group_path(&f, "rg-central", "centralus", "fog-e2e"),
            None,
        )
        .await
        .body;
    assert_eq!(gc["properties"]["replicationRole"], "Secondary");
}
