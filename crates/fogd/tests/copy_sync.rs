//! `sp_wait_for_database_copy_sync` and per-transaction synchronous commit.

mod common;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn client(v: &Value, db: &str) -> tokio_postgres::Client {
    admin_at(v, &["properties", "postgresEndpoint"], db)
        .await
        .expect("connect")
}

fn db_error(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

#[tokio::test]
async fn wait_for_copy_sync_and_synchronous_commit() {
    let f = Fogd::start().await;
    let a = f.create_instance("rg", "cs-a", "eastus").await;
    let b = f.create_partner("rg", "cs-b", "westus", &a).await;
    let r = f
        .send(
            Method::PUT,
            &format!("{}/databases/app?{API}", f.mi_path("rg", "cs-a")),
            Some("{}"),
        )
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    // Not in a group yet: the procedure does not exist.
    assert!(client(&a, "app")
        .await
        .batch_execute("CALL sp_wait_for_database_copy_sync('cs-b', 'app')")
        .await
        .is_err());

    let g = Fogd::group_body(&a, &b, "westus", json!({}));
    let url = format!(
        "{}/locations/eastus/instanceFailoverGroups/fog-cs?{API}",
        f.rg_path("rg")
    );
    let r = f.send(Method::PUT, &url, Some(&g)).await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    // A database added later gets it too.
    let r = f
        .send(
            Method::PUT,
            &format!("{}/databases/later?{API}", f.mi_path("rg", "cs-a")),
            Some("{}"),
        )
        .await;
    assert_eq!(f.wait_operation(&r).await["status"], "Succeeded");
    client(&a, "later")
        .await
        .batch_execute("CALL sp_wait_for_database_copy_sync('cs-b', 'later')")
        .await
        .expect("installed on an added database");

    let pa = client(&a, "app").await;
    pa.batch_execute("CREATE TABLE t(id int)")
        .await
        .expect("table");
    // Wrong names are errors that say what the link is.
    let e = pa
        .batch_execute("CALL sp_wait_for_database_copy_sync('someone-else', 'app')")
        .await
        .expect_err("wrong server");
    assert!(
        db_error(&e).contains("is not the geo-secondary") && db_error(&e).contains("cs-b"),
        "{}",
        db_error(&e)
    );
    let e = pa
        .batch_execute("CALL sp_wait_for_database_copy_sync('cs-b', 'other')")
        .await
        .expect_err("wrong db");
    assert!(
        db_error(&e).contains("is not this database"),
        "{}",
        db_error(&e)
    );
    let zone = b["properties"]["dnsZone"].as_str().expect("zone");
    pa.batch_execute(&format!(
        "CALL sp_wait_for_database_copy_sync('cs-b.{zone}.database.fogd.local', 'app')"
    ))
    .await
    .expect("FQDN accepted");
    // On the secondary it says where to call it.
    let e = client(&b, "app")
        .await
        .batch_execute("CALL sp_wait_for_database_copy_sync('cs-b', 'app')")
        .await
        .expect_err("on secondary");
    assert!(db_error(&e).contains("geo-secondary"), "{}", db_error(&e));

    // A plain user (connect rights only) may call it.
    pa.batch_execute(
        "CREATE ROLE app_user LOGIN PASSWORD 'App-User-Passw0rd!'; GRANT ALL ON t TO app_user",
    )
    .await
    .expect("role");
    let ep = &a["properties"]["postgresEndpoint"];
    let (user, conn) = tokio_postgres::Config::new()
        .host(ep["host"].as_str().unwrap_or(""))
        .port(ep["port"].as_u64().unwrap_or(0) as u16)
        .user("app_user")
        .password("App-User-Passw0rd!")
        .dbname("app")
        .connect(tokio_postgres::NoTls)
        .await
        .expect("app_user connects");
    tokio::spawn(conn);
    user.batch_execute(
        "INSERT INTO t VALUES (0); CALL sp_wait_for_database_copy_sync('cs-b', 'app')",
    )
    .await
    .expect("a plain user may wait");
    let su: bool = user
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .expect("q")
        .get(0);
    assert!(!su);

    // Secondary cut off: plain commits go on, the wait respects statement_timeout, and a
    // per-transaction synchronous commit waits for the secondary.
    let pb = client(&b, "app").await;
    let original: String = pb
        .query_one("SHOW primary_conninfo", &[])
        .await
        .expect("show")
        .get(0);
    pb.batch_execute("ALTER SYSTEM SET primary_conninfo = ''")
        .await
        .expect("detach");
    pb.batch_execute("SELECT pg_reload_conf()")
        .await
        .expect("reload");
    tokio::time::sleep(Duration::from_millis(500)).await;
    pa.batch_execute("INSERT INTO t VALUES (1)")
        .await
        .expect("plain commit is asynchronous");
    pa.batch_execute("SET statement_timeout = '400ms'")
        .await
        .expect("set");
    let started = Instant::now();
    let e = pa
        .batch_execute("CALL sp_wait_for_database_copy_sync('cs-b', 'app')")
        .await
        .expect_err("times out");
    assert!(
        db_error(&e).contains("statement timeout"),
        "{}",
        db_error(&e)
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    pa.batch_execute("SET statement_timeout = 0")
        .await
        .expect("reset");
    let sync = client(&a, "app").await;
    let pending = tokio::spawn(async move {
        sync.batch_execute(
            "BEGIN; SET LOCAL synchronous_commit = on; INSERT INTO t VALUES (2); COMMIT;",
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !pending.is_finished(),
        "a synchronous commit waits for the secondary"
    );
    pb.batch_execute(&format!(
        "ALTER SYSTEM SET primary_conninfo = '{}'",
        original.replace('\'', "''")
    ))
    .await
    .expect("restore");
    pb.batch_execute("SELECT pg_reload_conf()")
        .await
        .expect("reload");
    tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("completes once reattached")
        .expect("task")
        .expect("commit");

    // Waited-for commits survive the primary's immediate death: they are on the secondary.
    for i in 10..20 {
        pa.batch_execute(&format!(
            "INSERT INTO t VALUES ({i}); CALL sp_wait_for_database_copy_sync('cs-b', 'app')"
        ))
        .await
        .expect("write + wait");
    }
    f.pg_ctl(&a, "stop", "immediate");
    let mut present = 0i64;
    for _ in 0..100 {
        present = pb
            .query_one("SELECT count(*) FROM t WHERE id >= 10", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if present == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(present, 10, "every waited-for row is on the secondary");
}
