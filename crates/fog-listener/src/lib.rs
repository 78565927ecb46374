//! # fog-listener — failover-group listener endpoints
//!
//! An Azure SQL Managed Instance failover group gives clients two stable endpoints: a
//! read-write listener that always reaches the current primary and a read-only listener that
//! reaches the secondary. After a failover the names stay the same; only where they lead
//! changes. This crate is that box for fogd: a TCP listener that forwards every accepted
//! connection, byte for byte, to whatever PostgreSQL server its [`Route`] names. It knows
//! nothing of resources or the store; whoever owns the failover group calls
//! [`Listener::set_route`] when the primary moves.
//!
//! **Routes.** A route is a [`Target`] plus a fencing generation. [`Target::Forward`] proxies
//! new connections to a server; [`Target::Refuse`] answers them with a PostgreSQL
//! `ErrorResponse` (so `psql` and drivers show the reason); [`Target::Pause`] holds them,
//! without reading, while a failover is in flight, for at most
//! [`ListenerConfig::hold_bound`].
//!
//! **Fencing.** A client must never keep writing to a demoted primary. A route with a lower
//! generation than the current one is ignored (a controller that lost its role cannot move
//! the listener back), and whenever the target changes every connection bound to the old
//! target is closed at once. [`Listener::wait_fenced`] tells the caller when those
//! connections are really gone, so a failover can be sequenced as: `set_route(Pause)`,
//! `wait_fenced()`, demote and promote, `set_route(Forward(new primary))`.
//!
//! **Data path.** Once a connection's upstream socket is connected, its bytes are moved
//! either by the kernel (an eBPF sockmap redirects each socket's input to its peer; see
//! `kernel.rs`) or by a user-space copy loop. [`ListenerConfig::data_path`] chooses
//! ([`DataPath`]; default from `FOGD_LISTENER_DATA_PATH`, else the copy loop, which measured
//! faster under CPU contention; `auto` takes the kernel when the BPF program loads, the copy
//! loop otherwise). Fencing, holding, refusing and the counters are the same on both.
//!
//! **Hostile input.** The listener faces arbitrary sockets: every read it makes itself is
//! bounded in time and size, and a bad client can only end its own connection.

mod conn;
mod kernel;
mod sys;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Where a listener sends new connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Forward each new connection to this address.
    Forward(SocketAddr),
    /// Refuse new connections with this message, sent as a PostgreSQL `ErrorResponse`.
    Refuse(String),
    /// Hold new connections (don't connect upstream yet) until the route changes, up to the
    /// listener's hold bound; then apply the new route, or refuse with a clear message if
    /// still paused.
    Pause,
}

/// A [`Target`] with the fencing generation it was decided under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub target: Target,
    pub generation: u64,
}

impl Route {
    pub fn new(target: Target, generation: u64) -> Route {
        Route { target, generation }
    }
}

/// Tunables of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// How long a connection that arrives while paused is held before it is refused with
    /// "fogd: failover in progress; try again". Default 5 s.
    pub hold_bound: Duration,
    /// How long connecting to the target may take before the client is told it is
    /// unreachable. Default 3 s.
    pub connect_timeout: Duration,
    /// How long a client being refused has to send its opening messages. Default 5 s.
    pub handshake_timeout: Duration,
    /// How established sessions are forwarded. Default: [`DataPath::from_env`].
    pub data_path: DataPath,
}

/// How a listener moves the bytes of an established session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPath {
    /// The kernel if its BPF program can be loaded (root or `CAP_BPF` + `CAP_NET_ADMIN`,
    /// a kernel with sockmap, a build with clang), the user-space copy otherwise.
    Auto,
    /// The kernel only: [`Listener::bind`] fails if the BPF program cannot be loaded.
    Kernel,
    /// The user-space copy loop (tokio `copy_bidirectional`).
    Userspace,
}

impl DataPath {
    /// The environment variable [`DataPath::from_env`] reads.
    pub const ENV: &'static str = "FOGD_LISTENER_DATA_PATH";

    /// `auto`, `kernel` or `userspace` (case-insensitive).
    pub fn parse(s: &str) -> Option<DataPath> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(DataPath::Auto),
            "kernel" => Some(DataPath::Kernel),
            "userspace" | "user-space" | "user" => Some(DataPath::Userspace),
            _ => None,
        }
    }

    /// The choice in `FOGD_LISTENER_DATA_PATH`; when unset, [`DataPath::Userspace`], the
    /// path that measured faster on a busy 2-core machine (`BENCHMARKS.md`, "Listener data
    /// path"), also (with a warning) when it is not one of the three names.
    pub fn from_env() -> DataPath {
        match std::env::var(Self::ENV) {
            Err(_) => DataPath::Userspace,
            Ok(value) => DataPath::parse(&value).unwrap_or_else(|| {
                tracing::warn!(
                    env = Self::ENV, %value,
                    "unknown listener data path (expected auto, kernel or userspace); using userspace"
                );
                DataPath::Userspace
            }),
        }
    }
}

/// Whether kernel forwarding can be used in this process: `Err` says why not. The BPF
/// program is loaded on the first call and shared by every listener afterwards.
pub fn kernel_data_path_available() -> Result<(), String> {
    kernel::forwarder().map(|_| ())
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            hold_bound: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(5),
            data_path: DataPath::from_env(),
        }
    }
}

/// Counters since the listener was bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Client connections accepted.
    pub connections_total: u64,
    /// Client connections open now, whatever their state (held, proxied, being refused).
    pub connections_active: u64,
    /// Bytes delivered from clients to targets.
    pub bytes_client_to_server: u64,
    /// Bytes delivered from targets to clients.
    pub bytes_server_to_client: u64,
    /// Connections answered with an `ErrorResponse` instead of being forwarded: refused by
    /// the route, held past the hold bound, or target unreachable.
    pub refused_total: u64,
    /// Sessions forwarded by the kernel data path (the others were copied in user space).
    pub kernel_sessions_total: u64,
}

/// The message a connection held past [`ListenerConfig::hold_bound`] is refused with.
pub const PAUSE_TIMEOUT_MESSAGE: &str = "fogd: failover in progress; try again";

/// A listener endpoint. Cloning gives another handle to the same listener; it stops when
/// [`Listener::shutdown`] is called on any handle or when the last handle is dropped.
#[derive(Clone)]
pub struct Listener {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    /// `true` (or dropped) stops the accept loop.
    stop: watch::Sender<bool>,
    /// Closed (sender dropped) when the accept loop and all its connections are gone.
    done: watch::Receiver<()>,
}

/// What the accept loop and every connection task share.
pub(crate) struct Shared {
    pub(crate) config: ListenerConfig,
    pub(crate) state: watch::Sender<State>,
    /// Connections bound to a forward target (connecting or proxying), counted by the
    /// fence epoch they were bound under.
    pub(crate) bound: watch::Sender<BTreeMap<u64, usize>>,
    pub(crate) stats: Counters,
    /// The kernel data path, when in use.
    pub(crate) kernel: Option<Arc<kernel::Forwarder>>,
    /// Kernel-forwarded sessions open now, as (client, upstream) socket cookies: their
    /// bytes are in the BPF map until they end, and [`Listener::stats`] adds them in.
    pub(crate) kernel_sessions: std::sync::Mutex<std::collections::HashSet<(u64, u64)>>,
}

/// The route plus the fence epoch: connections bound to a forward target under epoch `e`
/// close as soon as the epoch is no longer `e`. Kept in one watch value so that a
/// connection reads its target and its epoch atomically.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub(crate) route: Route,
    pub(crate) epoch: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) connections_total: AtomicU64,
    pub(crate) connections_active: AtomicU64,
    pub(crate) bytes_client_to_server: AtomicU64,
    pub(crate) bytes_server_to_client: AtomicU64,
    pub(crate) refused_total: AtomicU64,
    pub(crate) kernel_sessions_total: AtomicU64,
}

/// What [`Listener::set_route`] did with a route.
enum RouteChange {
    Stale { current: u64 },
    Unchanged,
    GenerationOnly { old: u64 },
    Fenced { old: Route, epoch: u64 },
}

impl Listener {
    /// Bind `addr` and start accepting, routing by `route`. Must be called inside a tokio
    /// runtime; the accept loop runs as a task on it.
    pub async fn bind(
        addr: SocketAddr,
        route: Route,
        config: ListenerConfig,
    ) -> std::io::Result<Listener> {
        let kernel = match config.data_path {
            DataPath::Userspace => None,
            DataPath::Auto => kernel::forwarder()
                .map_err(|reason| {
                    tracing::info!(%addr, %reason, "kernel data path unavailable; copying in user space");
                })
                .ok(),
            DataPath::Kernel => Some(kernel::forwarder().map_err(|reason| {
                std::io::Error::other(format!(
                    "listener data path `kernel` requested but unavailable: {reason}"
                ))
            })?),
        };
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (state, _) = watch::channel(State { route, epoch: 0 });
        let (bound, _) = watch::channel(BTreeMap::new());
        let shared = Arc::new(Shared {
            config,
            state,
            bound,
            stats: Counters::default(),
            kernel,
            kernel_sessions: Default::default(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = watch::channel(());
        let data_path = if shared.kernel.is_some() {
            "kernel"
        } else {
            "userspace"
        };
        tracing::info!(%local_addr, route = ?shared.state.borrow().route, data_path, "listener bound");
        tokio::spawn(accept_loop(shared.clone(), listener, stop_rx, done_tx));
        Ok(Listener {
            inner: Arc::new(Inner {
                shared,
                local_addr,
                stop,
                done,
            }),
        })
    }

    /// The address the listener is bound to (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The data path this listener's sessions use: [`DataPath::Kernel`] or
    /// [`DataPath::Userspace`] (a session the kernel refuses is still copied in user space).
    pub fn data_path(&self) -> DataPath {
        if self.inner.shared.kernel.is_some() {
            DataPath::Kernel
        } else {
            DataPath::Userspace
        }
    }

    /// The current route.
    pub fn route(&self) -> Route {
        self.inner.shared.state.borrow().route.clone()
    }

    /// Replace the route.
    ///
    /// - A lower generation than the current one is stale and ignored.
    /// - The same target is a no-op (a higher generation is recorded, nothing else happens).
    /// - A different target (same or higher generation) takes effect for new connections,
    ///   and every existing connection bound to the old forward target (proxying, or still
    ///   connecting) is closed at once. Connections held by a pause pick up the new target.
    ///
    /// The closing is done by the connection tasks as soon as they are next polled; await
    /// [`Listener::wait_fenced`] to know it has happened.
    pub fn set_route(&self, route: Route) {
        let mut change = RouteChange::Unchanged;
        self.inner.shared.state.send_if_modified(|state| {
            let current = &mut state.route;
            if route.generation < current.generation {
                change = RouteChange::Stale {
                    current: current.generation,
                };
                false
            } else if route.target == current.target {
                if route.generation > current.generation {
                    change = RouteChange::GenerationOnly {
                        old: current.generation,
                    };
                    current.generation = route.generation;
                }
                // Nobody waits on the generation alone: no need to wake the connections.
                false
            } else {
                state.epoch += 1;
                let old = std::mem::replace(current, route.clone());
                change = RouteChange::Fenced {
                    old,
                    epoch: state.epoch,
                };
                true
            }
        });
        let addr = self.inner.local_addr;
        match change {
            RouteChange::Stale { current } => tracing::warn!(
                %addr, generation = route.generation, current, target = ?route.target,
                "ignoring stale route"
            ),
            RouteChange::Unchanged => {}
            RouteChange::GenerationOnly { old } => tracing::debug!(
                %addr, old, generation = route.generation, "route generation advanced"
            ),
            RouteChange::Fenced { old, epoch } => tracing::info!(
                %addr, old = ?old, new = ?route, epoch,
                "route changed; closing connections to the old target"
            ),
        }
    }

    /// Close all existing proxied connections now (without changing the route).
    pub fn close_connections(&self) {
        let mut epoch = 0;
        self.inner.shared.state.send_modify(|state| {
            state.epoch += 1;
            epoch = state.epoch;
        });
        tracing::info!(addr = %self.inner.local_addr, epoch, "closing all proxied connections");
    }

    /// Wait until every connection bound to a forward target before the latest fence (a
    /// target change or [`Listener::close_connections`]) is closed: both its sockets are shut
    /// and no byte can pass through it any more. Returns at once if there are none.
    pub async fn wait_fenced(&self) {
        let shared = &self.inner.shared;
        let epoch = shared.state.borrow().epoch;
        let mut bound = shared.bound.subscribe();
        // The sender lives in `shared`, which we hold: the wait cannot fail.
        let _ = bound
            .wait_for(|counts| counts.range(..epoch).next().is_none())
            .await;
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ListenerStats {
        let shared = &self.inner.shared;
        // Held while reading the counters: a kernel session that ends moves its bytes from
        // the map to the counters under this lock, so it is counted exactly once.
        let live = shared
            .kernel_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (live_to_server, live_to_client) = match &shared.kernel {
            Some(fwd) => fwd.live_bytes(&live),
            None => (0, 0),
        };
        let s = &shared.stats;
        ListenerStats {
            connections_total: s.connections_total.load(Ordering::Relaxed),
            connections_active: s.connections_active.load(Ordering::Relaxed),
            bytes_client_to_server: s.bytes_client_to_server.load(Ordering::Relaxed)
                + live_to_server,
            bytes_server_to_client: s.bytes_server_to_client.load(Ordering::Relaxed)
                + live_to_client,
            refused_total: s.refused_total.load(Ordering::Relaxed),
            kernel_sessions_total: s.kernel_sessions_total.load(Ordering::Relaxed),
        }
    }

    /// Stop accepting and close every connection (held, proxied or being refused). Returns
    /// when the listening socket and all connections are closed. Other handles to this
    /// listener stay valid but inert.
    pub async fn shutdown(self) {
        self.inner.stop.send_replace(true);
        let mut done = self.inner.done.clone();
        // Resolves with an error once the accept loop has dropped its sender, i.e. finished.
        while done.changed().await.is_ok() {}
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.inner.local_addr)
            .field("route", &self.inner.shared.state.borrow().route)
            .finish_non_exhaustive()
    }
}

/// Resolves once a stop is requested (or every handle is gone). The watch guard is dropped
/// inside, so the accept loop's future stays `Send`.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
}

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    done: watch::Sender<()>,
) {
    let local_addr = listener.local_addr().ok();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // `true`, or every handle dropped (an error): stop either way.
            _ = stopped(&mut stop) => break,
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = joined {
                    if e.is_panic() {
                        tracing::error!(?local_addr, error = %e, "connection task panicked");
                    }
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.stats.connections_total.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(conn::serve(shared.clone(), stream, peer));
                }
                Err(e) => {
                    tracing::warn!(?local_addr, error = %e, "accept failed; retrying");
                    // The outer select sees a stop request on the next turn.
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    // Aborting a connection task drops its sockets, which closes them.
    connections.shutdown().await;
    tracing::info!(?local_addr, "listener stopped");
    drop(done);
}
