//! Failover groups across fogd restarts and secondary outages: seeding interrupted at
//! every step converges, a busy group refuses changes, listeners come back on their ports,
//! and the read-only endpoint follows its failover policy.

mod common;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

async fn pair(f: &Fogd, suffix: &str) -> (Value, Value) {
    let a = f
        .create_instance("rg", &format!("a{suffix}"), "eastus")
        .await;
    let b = f
        .create_partner("rg", &format!("b{suffix}"), "westus", &a)
        .await;
    (a, b)
}

fn group_body(a: &Value, b: &Value, extra: Value) -> String {
    Fogd::group_body(a, b, "westus", extra)
}

fn path(f: &Fogd, loc: &str, name: &str) -> String {
    format!(
        "{}/locations/{loc}/instanceFailoverGroups/{name}?{API}",
        f.rg_path("rg")
    )
}

async fn connect_listener(
    g: &Value,
    which: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    admin_at(g, &["properties", "listeners", which], "postgres").await
}

/// Which server a listener reaches: `false` = primary (writable), `true` = standby.
async fn reaches_standby(g: &Value, which: &str) -> Result<bool, String> {
    let c = connect_listener(g, which)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let row = c
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    // Generous: a loaded CI machine restarting fogd and its servers many times is slow.
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn read_only_endpoint_follows_its_failover_policy() {
    let mut f = Fogd::start().await;
    let (a, b) = pair(&f, "").await;
    let p = path(&f, "eastus", "fog-ro");
    let r = f
        .send(
            Method::PUT,
            &p,
            Some(&group_body(
                &a,
                &b,
                json!({"readOnlyEndpoint": {"failoverPolicy": "Enabled"}}),
            )),
        )
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    let g = f.send(Method::GET, &p, None).await.body;
    assert_eq!(reaches_standby(&g, "readOnly").await, Ok(true));
    assert_eq!(reaches_standby(&g, "readWrite").await, Ok(false));

    // Secondary down (its host gone, so fogd cannot restart it): the observer reports
    // SUSPENDED; Enabled sends read-only traffic to the primary.
    let pgdata_b = f.pgdata_of(&b);
    let host_b = pgdata_b.parent().expect("instance dir").to_path_buf();
    let lost_b = host_b.with_extension("lost");
    f.pg_ctl(&b, "stop", "fast");
    std::fs::rename(&host_b, &lost_b).expect("take the host away");
    std::fs::write(&host_b, "unreachable").expect("placeholder");
    until("SUSPENDED", || async {
        f.send(Method::GET, &p, None).await.body["properties"]["replicationState"] == "SUSPENDED"
    })
    .await;
    until("read-only → primary", || async {
        reaches_standby(&g, "readOnly").await == Ok(false)
    })
    .await;

    // Disabled: refused, with a message that says why.
    let r = f
        .send(
            Method::PUT,
            &p,
            Some(&group_body(
                &a,
                &b,
                json!({"readOnlyEndpoint": {"failoverPolicy": "Disabled"}}),
            )),
        )
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    until("read-only refused", || async {
        matches!(reaches_standby(&g, "readOnly").await, Err(e) if e.contains("failoverPolicy is Disabled"))
    }).await;

    // The host returns and fogd restarts: listeners come back on the same ports; the
    // secondary is started again and streams, so read-only reaches it once more.
    std::fs::remove_file(&host_b).expect("placeholder");
    std::fs::rename(&lost_b, &host_b).expect("host back");
    f.kill9();
    f.launch(&[]).await;
    until("secondary back and streaming", || async {
        f.send(Method::GET, &p, None).await.body["properties"]["replicationState"] == "CATCH_UP"
    })
    .await;
    until("read-only → secondary", || async {
        reaches_standby(&g, "readOnly").await == Ok(true)
    })
    .await;
    assert_eq!(
        reaches_standby(&g, "readWrite").await,
        Ok(false),
        "read-write listener back on its port"
    );

    // Standby (DR-only) secondary: the read-only endpoint refuses.
    let r = f
        .send(
            Method::PUT,
            &p,
            Some(&group_body(&a, &b, json!({"secondaryType": "Standby"}))),
        )
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    assert_eq!(
        f.send(Method::GET, &p, None).await.body["properties"]["secondaryType"],
        "Standby"
    );
    until("standby refuses", || async {
        matches!(reaches_standby(&g, "readOnly").await, Err(e) if e.contains("Standby"))
    })
    .await;
}

/// Crash at every step of a group create; after a restart the group converges, is
/// streaming, and its listeners work. While paused mid-seed the group is busy.
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn group_create_survives_a_crash_at_every_step() {
    use reqwest::StatusCode;
    let mut f = Fogd::start().await;
    let steps = [
        "create_group.align",
        "create_group.slot",
        "create_group.link",
        "create_group.seed",
        "create_group.finish",
    ];
    for (i, step) in steps.iter().enumerate() {
        let (a, b) = pair(&f, &format!("-{i}")).await;
        let name = format!("fog-crash-{i}");
        f.terminate();
        f.launch(&[("FOGD_FAILPOINTS", &format!("{step}=crash"))])
            .await;
        let r = f
            .send(
                Method::PUT,
                &path(&f, "eastus", &name),
                Some(&group_body(&a, &b, json!({}))),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let status_url = r.header("azure-asyncoperation").expect("status url");
        assert!(!f.wait_exit(Duration::from_secs(60)).await.success());
        f.launch(&[]).await;
        let done = f.poll(&status_url, Duration::from_secs(90)).await;
        assert_eq!(
            done["status"],
            "Succeeded",
            "after a crash at {step}: {done}\n{}",
            f.log()
        );
        let g = f
            .send(Method::GET, &path(&f, "eastus", &name), None)
            .await
            .body;
        until("streaming", || async {
            reaches_standby(&g, "readOnly").await == Ok(true)
        })
        .await;
        let rw = connect_listener(&g, "readWrite").await.expect("rw");
        rw.batch_execute("CREATE TABLE IF NOT EXISTS t(x int); INSERT INTO t VALUES (1)")
            .await
            .expect("write");
    }

    // Paused in the middle of seeding: every change to the group is refused as busy.
    let (a, b) = pair(&f, "-busy").await;
    f.terminate();
    f.launch(&[("FOGD_FAILPOINTS", "create_group.seed=pause")])
        .await;
    let p = path(&f, "eastus", "fog-busy");
    let r = f
        .send(Method::PUT, &p, Some(&group_body(&a, &b, json!({}))))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let status_url = r.header("azure-asyncoperation").expect("status url");
    let again = f
        .send(Method::PUT, &p, Some(&group_body(&a, &b, json!({}))))
        .await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "InstanceFailoverGroupBusy")
    );
    assert_eq!(
        again.body["error"]["message"],
        "Instance failover group is busy with another operation."
    );
    let del = f.send(Method::DELETE, &p, None).await;
    assert_eq!(del.code(), "InstanceFailoverGroupBusy");
    assert_eq!(
        f.send(Method::GET, &p, None).await.body["properties"]["replicationState"],
        "PENDING"
    );
    // Restart without the pause: the seeding finishes.
    f.terminate();
    f.launch(&[]).await;
    let done = f.poll(&status_url, Duration::from_secs(90)).await;
    assert_eq!(done["status"], "Succeeded", "{done}\n{}", f.log());

    // An instance busy with its own operation cannot join a group.
    let (a, b) = pair(&f, "-inst").await;
    f.terminate();
    f.launch(&[("FOGD_FAILPOINTS", "update_instance.apply=pause")])
        .await;
    let patch = f
        .send(
            Method::PATCH,
            &format!("{}?{API}", f.mi_path("rg", "b-inst")),
            Some(r#"{"tags":{"busy":"yes"}}"#),
        )
        .await;
    assert_eq!(patch.status, StatusCode::ACCEPTED);
    let r = f
        .send(
            Method::PUT,
            &path(&f, "eastus", "fog-inst"),
            Some(&group_body(&a, &b, json!({}))),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "ConflictingServerOperation")
    );
    assert_eq!(
        r.body["error"]["message"],
        "An operation is currently in progress for the server."
    );
}
