//! # fogd — instance failover groups for PostgreSQL, behind Azure's Microsoft.Sql API
//!
//! The daemon wires the boxes together on embedded defaults: the SQLite store
//! (`fog-store`; or etcd with `--store etcd://…`), the local instance agent
//! (`fog-engine`), the orchestrator (`fog-orchestrator`) and the ARM API (`fog-api`)
//! served over HTTPS with fogd's own CA ([`tls`]). Its settings (flags, environment
//! variables, a TOML file) are resolved in [`config`]; its data directory layout is
//! described in [`datadir`].

mod config;
mod datadir;
mod http;
mod identity;
mod parse_errors;
mod routing;
mod telemetry;
mod tls;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use config::{ServeArgs, Settings, StoreSetting};
use fog_engine::{LocalAgent, PgSettings};
use fog_orchestrator::{Orchestrator, OrchestratorConfig};
use fog_store::{EtcdStore, SqliteStore, Store};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// fogd runs Azure SQL Managed Instance-style failover groups over real PostgreSQL 15
/// servers, behind an API compatible with Azure Resource Manager's Microsoft.Sql provider.
#[derive(Parser)]
#[command(
    name = "fogd",
    version,
    about,
    long_about = "\
fogd runs Azure SQL Managed Instance-style instance failover groups over real PostgreSQL 15
servers, behind an HTTPS API compatible with Azure Resource Manager's Microsoft.Sql provider:
the Azure SDKs, `az rest`, Terraform and fogctl talk to it.

`fogd serve` starts the API, the orchestrator and the PostgreSQL servers. In its data
directory (--data-dir, default /var/lib/fogd) it keeps:
  ca.pem           the CA certificate clients trust
  admin-token      the API bearer token (mode 0600)
  subscription-id  a default subscription id
  api-url          the URL the API listens on (written once it listens)
  client.toml      endpoint, CA file, token file and subscription id for clients
  fogd.lock        locked while a fogd serves the directory (a second one is refused)
  store.sqlite, instances/   the metadata store (unless --store etcd://…) and the
                   PostgreSQL servers' data
  keys/secrets.key the key that encrypts the credentials in the store (mode 0600;
                   --secret-key-file puts it elsewhere; back it up apart from the store)
fogctl finds fogd through that directory: give it the same --data-dir (or FOGD_DATA_DIR).

Settings come from flags, FOGD_* environment variables and a TOML file (--config FILE);
`fogd config-example` prints a file documenting every setting.

SIGTERM or Ctrl-C shuts fogd down cleanly: in-flight requests finish, then the PostgreSQL
servers are stopped (unless leave_servers_running). After a crash the servers keep
running and the next start adopts them.",
    after_help = "Run `fogd serve --help` for every setting."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the API, the orchestrator and the managed PostgreSQL servers.
    #[command(long_about = "\
Start the HTTPS API, the orchestrator and the managed PostgreSQL servers; runs until SIGTERM
or Ctrl-C.

On first start fogd creates in the data directory: ca.pem (the CA certificate to trust),
admin-token (the API bearer token), subscription-id (the default subscription); once
listening it writes api-url and client.toml (what fogctl and other clients read). Running
as root is supported: the PostgreSQL servers then run as pg_os_user.

Every setting below is a flag, a FOGD_* environment variable and a key of the --config
TOML file (named like the flag, with underscores). A flag beats its environment variable,
which beats the file, which beats the default. `fogd config-example` prints a commented
file with every key.

SIGTERM or Ctrl-C shuts down cleanly: in-flight requests finish, then the PostgreSQL servers
stop (unless leave_servers_running); exit status 0.")]
    Serve(Box<ServeArgs>),
    /// Print a commented example configuration file with every setting and its default.
    #[command(long_about = "\
Print a commented example configuration file for `fogd serve --config FILE`: every key,
its flag, its environment variable, its default and its meaning. Keys with a default are
set to it; keys without one are commented out with an example value.

  fogd config-example > /etc/fogd/fogd.toml")]
    ConfigExample,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Command::ConfigExample => {
            print!("{}", config::example_toml());
            return ExitCode::SUCCESS;
        }
        Command::Serve(args) => *args,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config_file = args.config.clone();
    // A configuration mistake is a usage error, like a bad flag (status 2).
    let settings = match Settings::load(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(config_file = ?config_file, ?settings, "settings");
    let outcome = tokio::runtime::Runtime::new()
        .context("start the async runtime")
        .and_then(|runtime| runtime.block_on(serve(settings)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The endpoint clients should use: `public_url`, else the bound address (a wildcard
/// address becomes the loopback address of its family, which the certificate covers).
fn client_endpoint(public_url: Option<&str>, bound: SocketAddr) -> String {
    if let Some(u) = public_url {
        return u.trim_end_matches('/').to_string();
    }
    let mut addr = bound;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("https://{addr}")
}

/// Raises the soft limit on open files to the hard limit: idle API clients must not use up
/// the descriptors the PostgreSQL servers, the listeners and the health probes need. The
/// API's own share is bounded by `max_connections`.
fn raise_open_file_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| tracing::warn!(error = %e, "cannot read the open-file limit"))
        .ok()?;
    if soft >= hard {
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Some(hard),
        Err(e) => {
            tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
            Some(soft)
        }
    }
}

async fn serve(settings: Settings) -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = &std::path::absolute(&settings.data_dir)
        .with_context(|| format!("resolve {}", settings.data_dir.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    // Held until fogd exits: a second fogd on this directory is refused here.
    let _lock = datadir::lock(dir)?;
    datadir::restrict(dir, 0o711)?;
    // From here on everything fogd creates is private to its user (the store, its WAL,
    // keys, password files) unless made wider on purpose: ca.pem, client.toml, api-url and
    // the directories the servers' OS user must traverse are given their modes explicitly.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    if let Some(nofile) = raise_open_file_limit() {
        tracing::info!(nofile, "open-file limit");
        if (nofile as usize) < settings.max_connections.saturating_mul(2) {
            tracing::warn!(
                nofile,
                max_connections = settings.max_connections,
                "max_connections is more than half the open-file limit"
            );
        }
    }

    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    names.push(settings.listen.ip().to_string());
    names.extend(settings.tls_san.iter().cloned());
    names.sort();
    names.dedup();
    // What every node of a cluster shares: DATA_DIR itself unless cluster_dir says where.
    let shared = &std::path::absolute(settings.shared_dir())
        .with_context(|| format!("resolve {}", settings.shared_dir().display()))?;
    let shared_lock = if shared != dir {
        std::fs::create_dir_all(shared).with_context(|| format!("create {}", shared.display()))?;
        datadir::restrict(shared, 0o711)?;
        Some(datadir::lock_shared(shared)?)
    } else {
        None
    };
    let tls_files = tls::ensure(shared, &names)?;
    let token =
        datadir::load_or_create(&shared.join("admin-token"), true, fog_engine::random_secret)?;
    let subscription = datadir::load_or_create(&shared.join("subscription-id"), false, || {
        uuid::Uuid::new_v4().to_string()
    })?;

    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("install the metrics recorder")?;
    // Histograms are drained by `render` or `run_upkeep`; without a scraper only upkeep
    // keeps their memory bounded.
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    telemetry::describe();
    let metrics = fog_api::MetricsRender(Arc::new(move || prometheus.render()));

    // SQLite is fogd's own file; an etcd cluster is shared (and compacted by its operator).
    let (store, sqlite): (Arc<dyn Store>, Option<SqliteStore>) = match &settings.store {
        StoreSetting::Sqlite => {
            let sqlite = SqliteStore::open(&dir.join("store.sqlite")).context("open the store")?;
            (Arc::new(sqlite.clone()), Some(sqlite))
        }
        StoreSetting::Etcd(endpoints) => {
            let etcd = EtcdStore::connect(endpoints, EtcdStore::DEFAULT_PREFIX)
                .await
                .with_context(|| format!("connect to the store {}", settings.store))?;
            tracing::info!(store = %settings.store, prefix = etcd.prefix(), "metadata in etcd");
            (Arc::new(etcd), None)
        }
    };
    let key_file =
        std::path::absolute(settings.secret_key_path()).context("resolve the secret key file")?;
    if settings.secret_key_file.is_none() {
        // Repairs a keys directory someone widened (a custom location is the operator's).
        if let Some(keys) = key_file.parent().filter(|p| p.exists()) {
            datadir::restrict(keys, 0o700)?;
        }
    }
    let unlocked = fog_orchestrator::secrets::unlock(store.as_ref(), &key_file)
        .await
        .context("unlock the credentials in the store")?;
    // Records an older fogd wrote move to today's layout before anything reads them.
    let migrated = fog_orchestrator::migrate::run(store.as_ref())
        .await
        .context("migrate the store's records")?;
    if !migrated.groups.is_empty() {
        tracing::info!(
            groups = ?migrated.groups,
            events = migrated.events,
            "failover groups moved to their uids"
        );
    }
    drop(shared_lock);
    // Drops what sealing replaced (and anything deleted) from free pages and the WAL.
    if let Some(sqlite) = &sqlite {
        sqlite.compact().await.context("compact the store")?;
    }
    tracing::info!(
        key_file = %key_file.display(),
        key_id = unlocked.cipher.key_id(),
        created = unlocked.created,
        sealed = unlocked.sealed,
        resealed = unlocked.resealed,
        "credentials are sealed at rest"
    );
    let agent = LocalAgent::new(PgSettings {
        bin_dir: settings.pg_bin_dir.clone(),
        os_user: settings.pg_os_user.clone(),
    })?;
    let servers_dir = shared.join("instances");
    agent.prepare_root(&servers_dir)?;
    let mut orch = Orchestrator::new(
        store,
        Arc::new(agent),
        unlocked.cipher,
        OrchestratorConfig {
            servers_dir,
            server_host: settings.server_host.clone(),
            port_range: settings.server_ports.map(config::PortRange::as_tuple),
            listener_host: settings.listener_host.clone(),
            listener_ports: settings.listener_ports.map(config::PortRange::as_tuple),
            min_grace_minutes: settings.min_grace_period_minutes,
            planned_failover_timeout: settings.planned_failover_timeout,
            probe_interval: settings.probe_interval.max(Duration::from_millis(10)),
            probe_timeout: settings.probe_timeout.max(Duration::from_millis(10)),
            grace_period_unit: settings.grace_period_unit,
            rejoin_retry_interval: settings.rejoin_retry.max(Duration::from_millis(10)),
            ..Default::default()
        },
    );
    // On etcd this process is one node of a cluster: it registers under its lease before
    // it resumes (claims) anything. The API URL is the configured or planned one; the
    // record is written again once the API is bound.
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listen on {}", settings.listen))?;
    let bound = listener
        .local_addr()
        .with_context(|| format!("listen on {}", settings.listen))?;
    // Polling URLs name what client.toml names: never a request's Host header.
    let endpoint = client_endpoint(settings.public_url.as_deref(), bound);
    if matches!(settings.store, StoreSetting::Etcd(_)) {
        let ttl = settings.lease_ttl;
        let record = fog_orchestrator::cluster::NodeRecord {
            name: settings.node_name(),
            api_url: endpoint.clone(),
            listener_host: settings.listener_host.clone(),
            region: String::new(),
            started_at: time::OffsetDateTime::now_utc(),
            lease: String::new(),
            lease_ttl_ms: 0,
        };
        let node = fog_orchestrator::cluster::Node::join(orch.store().clone(), record, ttl)
            .await
            .context("register this node in the cluster")?;
        tokio::spawn(node.clone().run_keepalive());
        orch = orch.with_node(node);
    }
    let resumed = orch.reconcile().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if resumed > 0 {
        tracing::info!(resumed, "resumed unfinished operations");
    }

    tokio::spawn(routing::run(
        orch.store().clone(),
        settings.listener_host.clone(),
        fog_listener::ListenerConfig {
            hold_bound: settings.listener_hold,
            ..Default::default()
        },
        orch.node().map(|n| n.ttl()),
    ));
    tokio::spawn(orch.clone().run_health_monitor());
    tokio::spawn(orch.clone().run_supervisor());
    tokio::spawn(orch.clone().run_sweeper());

    let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(
        &tls_files.server_cert,
        &tls_files.server_key,
    )
    .await
    .context("load the TLS certificate")?;
    let keys_dir = key_file.parent().unwrap_or(dir);
    let (identity, managed_identity) = identity::start(
        shared,
        keys_dir,
        orch.store().clone(),
        &endpoint,
        &subscription,
        &token,
    )
    .await?;
    let app = fog_api::router(
        orch.clone(),
        fog_api::ApiConfig {
            identity: Some(identity),
            managed_identity: Some(managed_identity),
            admin_token: token,
            dns_suffix: settings.dns_suffix.clone(),
            base_url: endpoint.clone(),
            max_body_bytes: settings.max_body_bytes,
            max_header_bytes: settings.max_header_bytes,
            request_timeout: Some(settings.request_timeout),
            metrics: Some(metrics),
        },
    )
    .layer(axum::middleware::from_fn(http::track));

    let gate = http::Gate::new(settings.max_connections, settings.idle_timeout);
    let header_timeout = settings.header_read_timeout;
    let handle = axum_server::Handle::<http::Peer>::new();
    let mut server = axum_server::Server::from_listener(http::GatedListener::new(listener, gate))
        .acceptor(parse_errors::EnvelopeAcceptor::new(
            axum_server::tls_rustls::RustlsAcceptor::new(rustls)
                .handshake_timeout(settings.tls_handshake_timeout),
        ))
        // Covers what hyper's header timeout does not: a connection silent after its
        // handshake, HTTP/2's preface and first request.
        .first_request_timeout(header_timeout)
        .handle(handle.clone());
    // Headers up to max_header_bytes must reach fog-api, which answers larger ones with
    // the error envelope; only beyond these does hyper answer 431 itself (no body).
    let parse_buffer = (8192 + 4096 * 100).max(settings.max_header_bytes + 16 * 1024);
    server
        .http_builder()
        .http1()
        .header_read_timeout(header_timeout)
        .max_headers(256)
        .max_buf_size(parse_buffer);
    server
        .http_builder()
        .http2()
        .max_header_list_size(u32::try_from(parse_buffer).unwrap_or(u32::MAX));
    let server =
        tokio::spawn(server.serve(app.into_make_service_with_connect_info::<http::Peer>()));
    if handle.listening().await.is_none() {
        let outcome = server.await.context("API server task")?;
        return Err(match outcome {
            Ok(()) => anyhow::anyhow!("the API server stopped before listening"),
            Err(e) => anyhow::Error::new(e).context(format!("listen on {}", settings.listen)),
        });
    }
    let url = format!("https://{bound}");
    // Atomically: scripts poll for these files and must never read one half-written.
    // client.toml goes first, so that once api-url appears client.toml is current too.
    datadir::write_client_config(
        &dir.join("client.toml"),
        &datadir::ClientConfig {
            endpoint,
            ca_file: tls_files.ca_cert.clone(),
            token_file: shared.join("admin-token"),
            subscription_id: subscription.clone(),
        },
    )?;
    datadir::write_public(&dir.join("api-url"), &format!("{url}\n"))?;
    tracing::info!(
        api = %url,
        ca = %tls_files.ca_cert.display(),
        token_file = %shared.join("admin-token").display(),
        client_config = %dir.join("client.toml").display(),
        subscription = %subscription,
        "fogd is serving"
    );

    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.graceful_shutdown(Some(Duration::from_secs(10)));
    let _ = server.await;
    if let Some(node) = orch.node() {
        // The other nodes keep using the servers; this node's lease ends now, so they take
        // over what it owned at once rather than a TTL later.
        tracing::info!("one node of a cluster: leaving PostgreSQL servers running");
        if let Err(e) = orch.store().revoke_lease(node.lease()).await {
            tracing::warn!(error = %e, "revoking this node's lease");
        }
    } else if settings.leave_servers_running {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn client_endpoint_prefers_public_url_and_never_names_a_wildcard() {
        let bound: SocketAddr = "0.0.0.0:8443".parse().unwrap();
        assert_eq!(client_endpoint(None, bound), "https://127.0.0.1:8443");
        let bound: SocketAddr = "[::]:9000".parse().unwrap();
        assert_eq!(client_endpoint(None, bound), "https://[::1]:9000");
        let bound: SocketAddr = "10.1.2.3:8443".parse().unwrap();
        assert_eq!(client_endpoint(None, bound), "https://10.1.2.3:8443");
        assert_eq!(
            client_endpoint(Some("https://fogd.example.com/"), bound),
            "https://fogd.example.com"
        );
    }
}
