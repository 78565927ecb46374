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
        .ensure_login(&spec, "FogAdmin", &scram_verifier("S0me-Str0ng-Pass!"))
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
        .ensure_login(&spec, "FogAdmin", &scram_verifier("An0ther-Str0ng-Pass!"))
        .await
        .expect("alter login");
    assert!(try_connect(&spec, "FogAdmin", "S0me-Str0ng-Pass!")
        .await
        .is_err());

    // Databases, including names that need quoting.
    agent
        .create_database(&spec, "app db-1")
        .await
        .expect("create");
    agent
        .create_database(&spec, "app db-1")
        .await
        .expect("create is idempotent");
    assert_eq!(
        agent.list_databases(&spec).await.expect("list"),
        vec!["app db-1".to_string()]
    );
    agent.drop_database(&spec, "app db-1").await.expect("drop");
    agent
        .drop_database(&spec, "app db-1")
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
