//! fogd survives being killed: operations resume from their last persisted step, servers
//! that should run are running again, and clean shutdown stops them.

mod common;
use common::*;
use reqwest::{Method, StatusCode};
use std::time::Duration;

#[tokio::test]
async fn sigkill_during_create_then_restart_finishes_the_operation() {
    let mut f = Fogd::start().await;
    let path = format!("{}?{API}", f.mi_path("rg", "mi-kill"));
    let r = f
        .send(Method::PUT, &path, Some(&Fogd::instance_body("eastus")))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let status_url = r.header("azure-asyncoperation").expect("status url");
    f.kill9();
    f.launch(&[]).await;
    // The operation is still known after the restart and converges.
    let done = f.poll(&status_url, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "Succeeded", "{done}");
    let view = f.send(Method::GET, &path, None).await.body;
    assert_eq!(view["properties"]["provisioningState"], "Succeeded");
    pg_connect(&view, "fogadmin", PASSWORD, "postgres")
        .await
        .expect("usable after restart");
}

#[tokio::test]
async fn servers_come_back_after_a_crash_and_stop_on_clean_shutdown() {
    let mut f = Fogd::start().await;
    let view = f.create_instance("rg", "mi-adopt", "eastus").await;
    f.kill9();
    // The data plane outlives the control plane.
    pg_connect(&view, "fogadmin", PASSWORD, "postgres")
        .await
        .expect("server survives fogd crash");
    // Stop the server behind fogd's back; a restart brings it back.
    let dir = std::fs::read_dir(f.data.join("instances"))
        .expect("dir")
        .flatten()
        .next()
        .expect("server")
        .path();
    let out = std::process::Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            "/usr/lib/postgresql/15/bin/pg_ctl",
            "stop",
            "-m",
            "fast",
            "-D",
        ])
        .arg(dir.join("pgdata"))
        .output()
        .expect("pg_ctl");
    assert!(out.status.success());
    assert!(pg_connect(&view, "fogadmin", PASSWORD, "postgres")
        .await
        .is_err());
    f.launch(&[]).await;
    let mut up = false;
    for _ in 0..100 {
        if pg_connect(&view, "fogadmin", PASSWORD, "postgres")
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "reconcile restarted the server; log:\n{}", f.log());
    // Clean shutdown stops the servers fogd runs.
    let status = f.terminate().expect("exit status");
    assert!(status.success(), "{status}");
    assert!(pg_connect(&view, "fogadmin", PASSWORD, "postgres")
        .await
        .is_err());
}

/// Crash (abort, like SIGKILL) at every step boundary of create, database create, and
/// delete; after a restart each operation converges and leaves a consistent result.
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn crash_at_every_step_boundary_converges() {
    let mut f = Fogd::start().await;
    let steps = [
        "create_instance.initialize",
        "create_instance.start",
        "create_instance.login",
        "create_instance.finish",
    ];
    for (i, step) in steps.iter().enumerate() {
        let name = format!("mi-crash-{i}");
        let path = format!("{}?{API}", f.mi_path("rg", &name));
        f.terminate();
        f.launch(&[("FOGD_FAILPOINTS", &format!("{step}=crash"))])
            .await;
        let r = f
            .send(Method::PUT, &path, Some(&Fogd::instance_body("eastus")))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        let status_url = r.header("azure-asyncoperation").expect("status url");
        let exit = f.wait_exit(Duration::from_secs(60)).await;
        assert!(!exit.success(), "crashed at {step}");
        f.launch(&[]).await;
        let done = f.poll(&status_url, Duration::from_secs(60)).await;
        assert_eq!(done["status"], "Succeeded", "after crash at {step}: {done}");
        let view = f.send(Method::GET, &path, None).await.body;
        assert_eq!(
            view["properties"]["provisioningState"], "Succeeded",
            "{step}"
        );
        let c = pg_connect(&view, "fogadmin", PASSWORD, "postgres")
            .await
            .expect("usable");
        c.simple_query("SELECT 1").await.expect("query");
    }

    // Database create and delete, crashing before their last step.
    let mi = f.mi_path("rg", "mi-crash-0");
    let view = f.send(Method::GET, &format!("{mi}?{API}"), None).await.body;
    for (step, method) in [
        ("create_database.finish", Method::PUT),
        ("delete_database.finish", Method::DELETE),
    ] {
        f.terminate();
        f.launch(&[("FOGD_FAILPOINTS", &format!("{step}=crash"))])
            .await;
        let r = f
            .send(
                method.clone(),
                &format!("{mi}/databases/crashdb?{API}"),
                Some("{}"),
            )
            .await;
        let status_url = r.header("azure-asyncoperation").expect("status url");
        f.wait_exit(Duration::from_secs(60)).await;
        f.launch(&[]).await;
        assert_eq!(
            f.poll(&status_url, Duration::from_secs(60)).await["status"],
            "Succeeded",
            "{step}"
        );
        let exists = pg_connect(&view, "fogadmin", PASSWORD, "crashdb")
            .await
            .is_ok();
        assert_eq!(exists, method == Method::PUT, "{step}");
    }

    // Instance delete, crashing before the server is destroyed and before the records go.
    for (i, step) in ["delete_instance.destroy", "delete_instance.finish"]
        .iter()
        .enumerate()
    {
        let path = format!("{}?{API}", f.mi_path("rg", &format!("mi-crash-{i}")));
        let view = f.send(Method::GET, &path, None).await.body;
        f.terminate();
        f.launch(&[("FOGD_FAILPOINTS", &format!("{step}=crash"))])
            .await;
        let r = f.send(Method::DELETE, &path, None).await;
        let status_url = r.header("azure-asyncoperation").expect("status url");
        f.wait_exit(Duration::from_secs(60)).await;
        f.launch(&[]).await;
        assert_eq!(
            f.poll(&status_url, Duration::from_secs(60)).await["status"],
            "Succeeded",
            "{step}"
        );
        assert_eq!(
            f.send(Method::GET, &path, None).await.status,
            StatusCode::NOT_FOUND
        );
        assert!(
            pg_connect(&view, "fogadmin", PASSWORD, "postgres")
                .await
                .is_err(),
            "{step}"
        );
    }
    let left = std::fs::read_dir(f.data.join("instances"))
        .expect("dir")
        .count();
    assert_eq!(
        left, 2,
        "exactly the two surviving instances keep a server directory"
    );
}
