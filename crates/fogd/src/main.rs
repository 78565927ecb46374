//! # fogd — instance failover groups for PostgreSQL, behind Azure's Microsoft.Sql API
//!
//! The daemon wires the boxes together on embedded defaults: the SQLite store
//! (`fog-store`), the local instance agent (`fog-engine`), the orchestrator
//! (`fog-orchestrator`) and the ARM API (`fog-api`) served over HTTPS with fogd's own CA
//! ([`tls`]). Its data directory layout is described in [`datadir`].

mod datadir;
mod routing;
mod tls;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fog_engine::{LocalAgent, PgSettings};
use fog_orchestrator::{Orchestrator, OrchestratorConfig};
use fog_store::SqliteStore;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// fogd runs Azure SQL Managed Instance-style failover groups over real PostgreSQL servers,
/// behind an API compatible with Azure Resource Manager's Microsoft.Sql provider.
#[derive(Parser)]
#[command(name = "fogd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the API, the orchestrator and the managed PostgreSQL servers.
    ///
    /// On first start fogd creates in DIR: ca.pem (the CA certificate to trust),
    /// admin-token (the API bearer token), subscription-id (the default subscription) and,
    /// once listening, api-url. Running as root is supported: PostgreSQL servers then run
    /// as --pg-os-user.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Data directory: certificates, token, metadata store and all PostgreSQL data.
    #[arg(long, env = "FOGD_DATA_DIR", default_value = "/var/lib/fogd")]
    data_dir: PathBuf,
    /// Address the HTTPS API listens on (port 0 picks a free port; see DIR/api-url).
    #[arg(long, env = "FOGD_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// External base URL used in polling URLs, when clients reach fogd through another
    /// name than the Host header they send (e.g. behind a proxy).
    #[arg(long, env = "FOGD_PUBLIC_URL")]
    public_url: Option<String>,
    /// Extra host names or IP addresses for the server certificate (repeatable); localhost,
    /// 127.0.0.1, ::1 and the listen address are always included.
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// Directory with the PostgreSQL 15 server binaries.
    #[arg(
        long,
        env = "FOGD_PG_BIN_DIR",
        default_value = "/usr/lib/postgresql/15/bin"
    )]
    pg_bin_dir: PathBuf,
    /// OS user that runs PostgreSQL servers when fogd runs as root.
    #[arg(long, env = "FOGD_PG_OS_USER", default_value = "postgres")]
    pg_os_user: String,
    /// Address managed PostgreSQL servers listen on (and clients connect to).
    #[arg(long, env = "FOGD_SERVER_HOST", default_value = "127.0.0.1")]
    server_host: String,
    /// Port range for managed PostgreSQL servers, e.g. 15000-15999 (default: free ports
    /// chosen by the OS).
    #[arg(long, env = "FOGD_SERVER_PORTS", value_parser = parse_range)]
    server_ports: Option<(u16, u16)>,
    /// DNS suffix of fully qualified domain names ({name}.{dnsZone}.{suffix}).
    #[arg(long, env = "FOGD_DNS_SUFFIX", default_value = "database.fogd.local")]
    dns_suffix: String,
    /// Keep the PostgreSQL servers running when fogd shuts down cleanly (by default fogd
    /// stops them; after a crash they keep running and fogd adopts them on restart).
    #[arg(long)]
    leave_servers_running: bool,
    /// Largest accepted request body in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// Address failover-group listeners (read-write and read-only endpoints) bind to.
    #[arg(long, env = "FOGD_LISTENER_HOST", default_value = "127.0.0.1")]
    listener_host: String,
    /// Port range for failover-group listeners, e.g. 16000-16999 (default: free ports
    /// chosen by the OS; a re-created group gets its old ports back when free).
    #[arg(long, env = "FOGD_LISTENER_PORTS", value_parser = parse_range)]
    listener_ports: Option<(u16, u16)>,
    /// Smallest failoverWithDataLossGracePeriodMinutes accepted (Azure: 60).
    #[arg(long, env = "FOGD_MIN_GRACE_PERIOD_MINUTES", default_value_t = 60)]
    min_grace_period_minutes: i64,
    /// How long a connection that reaches a read-write listener during a role switch
    /// waits for the new primary before it is refused, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    listener_hold_ms: u64,
    /// How long a planned failover waits for the old primary to stop and the new one to
    /// catch up before it gives up with PlannedFailoverTimedOut (group unchanged), in ms.
    #[arg(
        long,
        env = "FOGD_PLANNED_FAILOVER_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    planned_failover_timeout_ms: u64,
    /// How often the replication observer probes every group, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    observe_interval_ms: u64,
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| "expected START-END".to_string())?;
    let a: u16 = a.trim().parse().map_err(|e| format!("{e}"))?;
    let b: u16 = b.trim().parse().map_err(|e| format!("{e}"))?;
    if a == 0 || a > b {
        return Err("expected 0 < START <= END".into());
    }
    Ok((a, b))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    datadir::restrict(dir, 0o711)?;

    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    names.push(args.listen.ip().to_string());
    names.extend(args.tls_san.iter().cloned());
    names.sort();
    names.dedup();
    let tls_files = tls::ensure(dir, &names)?;
    let token = datadir::load_or_create(&dir.join("admin-token"), true, fog_engine::random_secret)?;
    let subscription = datadir::load_or_create(&dir.join("subscription-id"), false, || {
        uuid::Uuid::new_v4().to_string()
    })?;

    let store = Arc::new(SqliteStore::open(&dir.join("store.sqlite")).context("open the store")?);
    let agent = LocalAgent::new(PgSettings {
        bin_dir: args.pg_bin_dir.clone(),
        os_user: args.pg_os_user.clone(),
    })?;
    let servers_dir = dir.join("instances");
    agent.prepare_root(&servers_dir)?;
    let orch = Orchestrator::new(
        store,
        Arc::new(agent),
        OrchestratorConfig {
            servers_dir,
            server_host: args.server_host.clone(),
            port_range: args.server_ports,
            listener_host: args.listener_host.clone(),
            listener_ports: args.listener_ports,
            min_grace_minutes: args.min_grace_period_minutes,
            planned_failover_timeout: Duration::from_millis(args.planned_failover_timeout_ms),
            ..Default::default()
        },
    );
    let resumed = orch.reconcile().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if resumed > 0 {
        tracing::info!(resumed, "resumed unfinished operations");
    }

    tokio::spawn(routing::run(
        orch.store().clone(),
        args.listener_host.clone(),
        fog_listener::ListenerConfig {
            hold_bound: Duration::from_millis(args.listener_hold_ms),
            ..Default::default()
        },
    ));
    let interval = Duration::from_millis(args.observe_interval_ms);
    tokio::spawn(orch.clone().run_observer(interval, Duration::from_secs(2)));

    let app = fog_api::router(
        orch.clone(),
        fog_api::ApiConfig {
            admin_token: token,
            dns_suffix: args.dns_suffix.clone(),
            public_url: args.public_url.clone(),
            max_body_bytes: args.max_body_bytes,
        },
    );
    let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(
        &tls_files.server_cert,
        &tls_files.server_key,
    )
    .await
    .context("load the TLS certificate")?;
    let handle = axum_server::Handle::new();
    let server = tokio::spawn(
        axum_server::bind_rustls(args.listen, rustls)
            .handle(handle.clone())
            .serve(app.into_make_service()),
    );
    let Some(bound) = handle.listening().await else {
        let outcome = server.await.context("API server task")?;
        return Err(match outcome {
            Ok(()) => anyhow::anyhow!("the API server stopped before listening"),
            Err(e) => anyhow::Error::new(e).context(format!("listen on {}", args.listen)),
        });
    };
    let url = format!("https://{bound}");
    // Atomically: scripts poll for this file and must never read it half-written.
    let tmp = dir.join("api-url.tmp");
    std::fs::write(&tmp, format!("{url}\n")).context("write api-url")?;
    std::fs::rename(&tmp, dir.join("api-url")).context("write api-url")?;
    tracing::info!(
        api = %url,
        ca = %tls_files.ca_cert.display(),
        token_file = %dir.join("admin-token").display(),
        subscription = %subscription,
        "fogd is serving"
    );

    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.graceful_shutdown(Some(Duration::from_secs(10)));
    let _ = server.await;
    if args.leave_servers_running {
        tracing::info!("leaving PostgreSQL servers running");
    } else {
        orch.stop_all_servers().await;
        tracing::info!("stopped PostgreSQL servers");
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
