//! The operation sweep ends the wedges a runner can leave behind: a resource marked busy by
//! an operation that finished (a compensation whose writes conflicted and fell back to
//! recording only the operation) or by one that does not exist, and an unfinished
//! operation that no runner drives (a runner that gave up after repeated finish conflicts).
//! Store: SQLite in memory; no PostgreSQL server is involved (the records name none).

use fog_engine::{LocalAgent, PgSettings};
use fog_model::{
    Action, DatabaseRecord, DatabaseStatus, ManagedInstanceId, OperationKind, OperationRecord,
    OperationStatus,
};
use fog_orchestrator::catalog;
use fog_orchestrator::secrets::SecretCipher;
use fog_orchestrator::{Orchestrator, OrchestratorConfig};
use fog_store::typed::put;
use fog_store::{Precondition, SqliteStore, Store};
use std::sync::Arc;
use time::OffsetDateTime;

fn instance() -> ManagedInstanceId {
    ManagedInstanceId::parse(
        "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/mi",
    )
    .expect("id")
}

fn database(name: &str, status: DatabaseStatus, op: &str) -> DatabaseRecord {
    DatabaseRecord {
        instance: instance(),
        instance_uid: "uid-mi".into(),
        name: name.into(),
        location: "eastus".into(),
        tags: Default::default(),
        collation: "SQL_Latin1_General_CP1_CI_AS".into(),
        status,
        creation_date: OffsetDateTime::now_utc(),
        active_operation: Some(op.into()),
    }
}

fn operation(id: &str, database: &str, status: OperationStatus) -> OperationRecord {
    OperationRecord {
        id: id.into(),
        kind: OperationKind::ManagedDatabase,
        scope: instance().scope,
        location: "eastus".into(),
        api_version: "2025-01-01".into(),
        action: Action::CreateDatabase {
            instance: instance(),
            database: database.into(),
        },
        status,
        step: "create_database.create".into(),
        percent_complete: Some(0),
        start_time: OffsetDateTime::now_utc(),
        end_time: None,
        error: None,
        attempts: 0,
    }
}

#[tokio::test]
async fn sweep_releases_stale_markers_and_resumes_undriven_operations() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().expect("store"));
    let agent = Arc::new(LocalAgent::new(PgSettings::default()).expect("agent"));
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Orchestrator::new(
        store.clone(),
        agent,
        SecretCipher::generate(),
        OrchestratorConfig {
            servers_dir: dir.path().to_path_buf(),
            ..Default::default()
        },
    );
    let id = instance();
    store
        .commit(vec![
            // A creation that failed, whose compensation never removed the record.
            put(
                catalog::database_key(&id, "ghost"),
                &database("ghost", DatabaseStatus::Creating, "op-failed"),
                Precondition::Absent,
            ),
            put(
                catalog::operation_key("op-failed"),
                &operation("op-failed", "ghost", OperationStatus::Failed),
                Precondition::Absent,
            ),
            // A database busy with an operation that does not exist.
            put(
                catalog::database_key(&id, "busy"),
                &database("busy", DatabaseStatus::Online, "op-missing"),
                Precondition::Absent,
            ),
            // An unfinished operation nobody drives.
            put(
                catalog::operation_key("op-undriven"),
                &operation("op-undriven", "other", OperationStatus::InProgress),
                Precondition::Absent,
            ),
        ])
        .await
        .expect("seed");

    let report = o.sweep_operations().await.expect("sweep");
    assert_eq!(report.resumed, vec!["op-undriven".to_string()]);
    // The failed creation's undo runs again (it removes the record); the marker of a
    // missing operation is cleared.
    assert_eq!(report.undone, vec!["op-failed".to_string()]);
    assert_eq!(report.released, vec![catalog::database_key(&id, "busy")]);
    assert!(catalog::database(store.as_ref(), &id, "ghost")
        .await
        .expect("read")
        .is_none());
    let busy = catalog::database(store.as_ref(), &id, "busy")
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(busy.value.active_operation, None);
    assert_eq!(busy.value.status, DatabaseStatus::Online);

    // The resumed runner finishes the undriven operation (here: as Failed, since its
    // instance does not exist), and a second sweep finds nothing to do.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let op = catalog::operation(store.as_ref(), "op-undriven")
            .await
            .expect("read")
            .expect("op");
        if op.value.status.is_terminal() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never finished");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let again = o.sweep_operations().await.expect("sweep");
    assert!(
        again.resumed.is_empty() && again.released.is_empty() && again.undone.is_empty(),
        "{again:?}"
    );
}
