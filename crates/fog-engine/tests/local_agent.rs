//! End-to-end test of the local agent against real PostgreSQL 15 servers.

use fog_engine::{scram_verifier, EngineError, InstanceAgent, LocalAgent, PgSettings, ServerSpec};
use std::os::unix::fs::PermissionsExt;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test]
async fn server_lifecycle_logins_databases_and_fencing() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let agent = LocalAgent::new(PgSettings::default()).expect("agent");
    let servers = root.path().join("instances");
    agent.prepare_root(&servers).expect("prepare");
    let spec = ServerSpec {
        uid: "t1".into(),
        region: "eastus".into(),
        dir: servers.join("t1"),
        host: "127.0.0.1".into(),
        port: free_port(),
        superuser_password: fog_engine::random_secret(),
    };

    agent.ensure_initialized(&spec, 1).await.expect("init");
    agent
        .ensure_initialized(&spec, 1)
        .await
        .expect("init is idempotent");
    agent.ensure_running(&spec, 1).await.expect("start");
    agent
        .ensure_running(&spec, 1)
        .await
        .expect("start is idempotent");
    assert!(agent.status(&spec).await.expect("status").running);

    // Replication-ready settings are in force.
    let c = connect(
        &spec,
        "fogd_superuser",
        &spec.superuser_password,
        "postgres",
    )
    .await;
    for (name, want) in [
        ("wal_level", "replica"),
        ("wal_log_hints", "on"),
        ("hot_standby", "on"),
    ] {
        let row = c
            .query_one(&format!("SHOW {name}"), &[])
            .await
            .expect("show");
        assert_eq!(row.get::<_, String>(0), want, "{name}");
    }

    // The administrator login works with its password and is a superuser.
    agent
        .ensure_login(&spec, "FogAdmin", &scram_verifier("S0me-Str0ng-Pass!"), 1)
        .await
        .expect("login");
    let admin = connect(&spec, "FogAdmin", "S0me-Str0ng-Pass!", "postgres").await;
    let su: bool = admin
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .expect("q")
        .get(0);
    assert!(su);
    // Changing the password: the old one stops working.
    agent
        .ensure_login(
            &spec,
            "FogAdmin",
            &scram_verifier("An0ther-Str0ng-Pass!"),
            1,
        )
        .await
        .expect("alter login");
    assert!(try_connect(&spec, "FogAdmin", "S0me-Str0ng-Pass!")
        .await
        .is_err());

    // Databases, including names that need quoting.
    agent
        .create_database(&spec, "app db-1", 1)
        .await
        .expect("create");
    agent
        .create_database(&spec, "app db-1", 1)
        .await
        .expect("create is idempotent");
    assert_eq!(
        agent.list_databases(&spec).await.expect("list"),
        vec!["app db-1".to_string()]
    );
    agent
        .drop_database(&spec, "app db-1", 1)
        .await
        .expect("drop");
    agent
        .drop_database(&spec, "app db-1", 1)
        .await
        .expect("drop is idempotent");
    assert!(agent.list_databases(&spec).await.expect("list").is_empty());

    // Fencing: after generation 2 is accepted, generation 1 is refused.
    agent.ensure_running(&spec, 2).await.expect("gen 2");
    match agent.stop(&spec, 1).await {
        Err(EngineError::StaleGeneration {
            got: 1, current: 2, ..
        }) => {}
        other => panic!("expected stale generation, got {other:?}"),
    }
    assert!(
        agent.status(&spec).await.expect("status").running,
        "stale stop did nothing"
    );
    // Every state-changing command is fenced, not only the role changes.
    let stale = |r: Result<(), EngineError>, what: &str| match r {
        Err(EngineError::StaleGeneration { got: 1, .. }) => {}
        other => panic!("{what} under generation 1: expected stale generation, got {other:?}"),
    };
    stale(
        agent.create_database(&spec, "late", 1).await,
        "create_database",
    );
    stale(
        agent.drop_database(&spec, "app db-1", 1).await,
        "drop_database",
    );
    stale(
        agent
            .ensure_login(&spec, "FogAdmin", &scram_verifier("x-Str0ng-Pass!"), 1)
            .await,
        "ensure_login",
    );
    stale(
        agent.ensure_slot(&spec, "fogd_late", 1).await,
        "ensure_slot",
    );
    stale(agent.drop_slot(&spec, "fogd_late", 1).await, "drop_slot");
    stale(
        agent.set_sync_standby(&spec, Some("x"), 1).await,
        "set_sync_standby",
    );
    stale(
        agent
            .install_geo_link(&spec, "postgres", "p", "z", "x", 1)
            .await,
        "install_geo_link",
    );
    stale(
        agent.clear_geo_link(&spec, "postgres", 1).await,
        "clear_geo_link",
    );
    assert!(
        !agent
            .list_databases(&spec)
            .await
            .expect("list")
            .contains(&"late".to_string()),
        "a stale create_database created nothing"
    );

    agent.destroy(&spec, 2).await.expect("destroy");
    assert!(!spec.dir.exists());
    assert!(try_connect(&spec, "FogAdmin", "An0ther-Str0ng-Pass!")
        .await
        .is_err());
}

async fn try_connect(
    spec: &ServerSpec,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (c, conn) = tokio_postgres::Config::new()
        .host(&spec.host)
        .port(spec.port)
        .user(user)
        .password(password)
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(c)
}

async fn connect(
    spec: &ServerSpec,
    user: &str,
    password: &str,
    _db: &str,
) -> tokio_postgres::Client {
    try_connect(spec, user, password).await.expect("connect")
}

fn spec(root: &std::path::Path, uid: &str) -> ServerSpec {
    ServerSpec {
        uid: uid.into(),
        region: "eastus".into(),
        dir: root.join(uid),
        host: "127.0.0.1".into(),
        port: free_port(),
        superuser_password: "same-secret-on-both".into(),
    }
}

#[tokio::test]
async fn seed_stream_observe_and_promote() {
    use fog_engine::ReplicationSource;
    use std::sync::{Arc, Mutex};
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let agent = LocalAgent::new(PgSettings::default()).expect("agent");
    let servers = root.path().join("instances");
    agent.prepare_root(&servers).expect("prepare");
    let (p, s) = (spec(&servers, "p"), spec(&servers, "s"));
    for x in [&p, &s] {
        agent.ensure_initialized(x, 1).await.expect("init");
        agent.ensure_running(x, 1).await.expect("start");
    }
    agent
        .ensure_replication_role(&p, &scram_verifier("repl-Passw0rd"), 1)
        .await
        .expect("role");
    agent.create_database(&p, "app", 1).await.expect("db");
    let c = connect(&p, "fogd_superuser", &p.superuser_password, "app").await;
    c.batch_execute("CREATE TABLE t(x int); INSERT INTO t SELECT generate_series(1, 1000)")
        .await
        .expect("load");

    let source = ReplicationSource {
        host: p.host.clone(),
        port: p.port,
        password: "repl-Passw0rd".into(),
        slot: "fogd_s".into(),
        application_name: "fogd_s".into(),
    };
    let wrong = ReplicationSource {
        password: "nope".into(),
        ..source.clone()
    };
    assert!(
        agent.check_replication_source(&s, &wrong).await.is_err(),
        "bad credentials are caught"
    );
    agent
        .check_replication_source(&s, &source)
        .await
        .expect("reachable");
    agent.ensure_slot(&p, &source.slot, 1).await.expect("slot");
    agent
        .ensure_slot(&p, &source.slot, 1)
        .await
        .expect("slot is idempotent");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    agent
        .seed_standby(
            &s,
            &source,
            &move |pr| sink.lock().expect("lock").push(pr),
            1,
        )
        .await
        .expect("seed");
    let last = *seen
        .lock()
        .expect("lock")
        .last()
        .expect("progress reported");
    assert!(
        last.total > 1_000_000 && last.done == last.total,
        "{last:?}"
    );
    // Seeding again from the same slot only makes sure it runs.
    agent
        .seed_standby(&s, &source, &|_| {}, 1)
        .await
        .expect("idempotent");

    // Streaming: a row written on the primary is readable on the standby.
    c.batch_execute("INSERT INTO t VALUES (-1)")
        .await
        .expect("write");
    let standby = connect(&s, "fogd_superuser", &s.superuser_password, "app").await;
    let mut found = false;
    for _ in 0..100 {
        let n: i64 = standby
            .query_one("SELECT count(*) FROM t WHERE x = -1", &[])
            .await
            .expect("read")
            .get(0);
        if n == 1 {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(found, "row replicated");
    assert!(
        standby
            .batch_execute("INSERT INTO t VALUES (0)")
            .await
            .is_err(),
        "standby is read-only"
    );

    // The replication password is in no configuration a superuser can SHOW and no file
    // the data directory's copies carry: primary_conninfo names a private password file.
    let conninfo: String = standby
        .query_one("SHOW primary_conninfo", &[])
        .await
        .expect("show")
        .get(0);
    assert!(
        conninfo.contains("passfile=") && !conninfo.contains("repl-Passw0rd"),
        "{conninfo}"
    );
    let auto = std::fs::read_to_string(s.pgdata().join("postgresql.auto.conf")).expect("read");
    assert!(!auto.contains("repl-Passw0rd"), "{auto}");
    let passfile = s.dir.join("standby.pgpass");
    let mode = std::fs::metadata(&passfile)
        .expect("passfile")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The password files of finished tool runs are gone.
    for dir in [&p.dir, &s.dir] {
        let left: Vec<_> = std::fs::read_dir(dir)
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".pgpass-"))
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
    let ps = agent.replication_status(&p).await.expect("status");
    assert_eq!(
        (ps.in_recovery, ps.streaming_standbys.clone()),
        (false, vec!["fogd_s".to_string()])
    );
    let ss = agent.replication_status(&s).await.expect("status");
    assert_eq!(
        (ss.in_recovery, ss.receiver_status.as_deref()),
        (true, Some("streaming"))
    );

    // Promotion makes it writable; the slot on the old primary can then be dropped.
    agent.promote(&s, 2).await.expect("promote");
    agent.promote(&s, 2).await.expect("promote is idempotent");
    let standby = connect(&s, "fogd_superuser", &s.superuser_password, "app").await;
    standby
        .batch_execute("INSERT INTO t VALUES (0)")
        .await
        .expect("writable after promote");
    assert!(
        !agent
            .replication_status(&s)
            .await
            .expect("status")
            .in_recovery
    );
    agent.drop_slot(&p, "fogd_s", 1).await.expect("drop slot");
    agent
        .drop_slot(&p, "fogd_s", 1)
        .await
        .expect("drop is idempotent");
    for x in [&p, &s] {
        agent.destroy(x, 2).await.expect("destroy");
    }
}

async fn count(c: &tokio_postgres::Client, q: &str) -> i64 {
    c.query_one(q, &[])
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(-1)
}

async fn wait_streaming(agent: &LocalAgent, s: &ServerSpec) {
    for _ in 0..200 {
        if let Ok(st) = agent.replication_status(s).await {
            if st.in_recovery && st.receiver_status.as_deref() == Some("streaming") {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{} never streamed", s.uid);
}

#[tokio::test]
async fn clean_switchover_then_forced_failover_with_rewind() {
    use fog_engine::ReplicationSource;
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let agent = LocalAgent::new(PgSettings::default()).expect("agent");
    let servers = root.path().join("instances");
    agent.prepare_root(&servers).expect("prepare");
    let (x, y) = (spec(&servers, "x"), spec(&servers, "y"));
    for s in [&x, &y] {
        agent.ensure_initialized(s, 1).await.expect("init");
        agent.ensure_running(s, 1).await.expect("start");
    }
    let source = |from: &ServerSpec, follower: &str| ReplicationSource {
        host: from.host.clone(),
        port: from.port,
        password: "repl-Passw0rd".into(),
        slot: format!("fogd_{follower}"),
        application_name: format!("fogd_{follower}"),
    };
    agent
        .ensure_replication_role(&x, &scram_verifier("repl-Passw0rd"), 1)
        .await
        .expect("role");
    agent.ensure_slot(&x, "fogd_y", 1).await.expect("slot");
    agent
        .seed_standby(&y, &source(&x, "y"), &|_| {}, 1)
        .await
        .expect("seed");
    let cx = connect(&x, "fogd_superuser", &x.superuser_password, "postgres").await;
    cx.batch_execute("CREATE TABLE t(x int); INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .expect("write");

    // Planned: stop x cleanly, y replays strictly past x's shutdown checkpoint, promote y,
    // x follows y without a rewind.
    let st = agent.stop_and_inspect(&x, 2).await.expect("stop");
    assert!(st.clean, "{st:?}");
    assert!(
        fog_engine::parse_lsn(&st.checkpoint_lsn).is_some(),
        "{st:?}"
    );
    let mut past = false;
    for _ in 0..200 {
        if agent
            .replayed_past(&y, &st.checkpoint_lsn)
            .await
            .expect("replay")
        {
            past = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(past, "standby replayed past the shutdown checkpoint");
    agent.promote(&y, 2).await.expect("promote y");
    agent.ensure_slot(&y, "fogd_x", 2).await.expect("slot on y");
    agent
        .follow(&x, &source(&y, "x"), 2)
        .await
        .expect("x follows y");
    wait_streaming(&agent, &x).await;
    let cy = connect(&y, "fogd_superuser", &y.superuser_password, "postgres").await;
    assert_eq!(
        count(&cy, "SELECT count(*) FROM t").await,
        100,
        "nothing lost in the switchover"
    );

    // Forced: cut x off from y, write on y (x never receives it), promote x, rewind y.
    let cx = connect(&x, "fogd_superuser", &x.superuser_password, "postgres").await;
    cx.batch_execute("ALTER SYSTEM SET primary_conninfo = ''")
        .await
        .expect("detach");
    cx.batch_execute("SELECT pg_reload_conf()")
        .await
        .expect("reload");
    for _ in 0..200 {
        if agent
            .replication_status(&x)
            .await
            .expect("st")
            .receiver_status
            .is_none()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    cy.batch_execute("INSERT INTO t SELECT generate_series(101, 5000)")
        .await
        .expect("write lost rows");
    agent.promote(&x, 3).await.expect("promote x");
    agent.ensure_slot(&x, "fogd_y", 3).await.expect("slot on x");
    let report = agent
        .rewind_and_follow(&y, &x, &source(&x, "y"), 3)
        .await
        .expect("rewind y");
    assert!(report.diverged_at.is_some(), "{report:?}");
    assert!(report.lost_bytes > 0, "{report:?}");
    assert!(!report.reseeded, "{report:?}");
    wait_streaming(&agent, &y).await;
    // The reply was lost (fogd died meanwhile): a repeated call of generation 3 finds
    // nothing left to rewind, yet answers with the same report — whether y still runs as a
    // standby or was stopped since — and leaves y following x.
    let again = agent
        .rewind_and_follow(&y, &x, &source(&x, "y"), 3)
        .await
        .expect("rewind y again");
    assert_eq!(again, report);
    wait_streaming(&agent, &y).await;
    agent.kill(&y, 3).await.expect("kill y");
    let again = agent
        .rewind_and_follow(&y, &x, &source(&x, "y"), 3)
        .await
        .expect("rewind a stopped y again");
    assert_eq!(again, report);
    wait_streaming(&agent, &y).await;
    let cy = connect(&y, "fogd_superuser", &y.superuser_password, "postgres").await;
    assert_eq!(
        count(&cy, "SELECT count(*) FROM t").await,
        100,
        "diverged rows are gone from the rewound server"
    );
    for s in [&x, &y] {
        agent.destroy(s, 3).await.expect("destroy");
    }
}
