//! Connection limits of the HTTPS API.
//!
//! The API listener is a [`GatedListener`]: it holds at most `max_connections` connections
//! open at once (a TCP connection counts from its acceptance, through its TLS handshake,
//! until it is closed). When a connection arrives and every place is taken, the connection
//! that has been *idle* longest — no request in flight: still in its TLS handshake, still
//! sending its first request's headers, or waiting between keep-alive requests — is closed
//! to make room; if every connection has a request in flight, new ones wait in the kernel's
//! accept backlog. So idle or half-open connections cannot lock out a fresh client, nor use
//! up the process's file descriptors that the PostgreSQL servers, the listeners and the
//! health probes need. A connection idle for longer than `idle_timeout` is closed as well.
//!
//! The other limits are hyper's and axum-server's, set in `main.rs`: the TLS handshake
//! timeout, the header read timeout (HTTP/1.1 headers, also the wait for the next request on
//! a kept-alive connection) and the first-request timeout (the same value, covering
//! HTTP/2's preface and first request). The request timeout and the header size limit are
//! fog-api's ([`fog_api::ApiConfig`]), so they answer with the ARM error envelope; what
//! hyper itself refuses to parse gets the envelope from [`crate::parse_errors`].

use axum::body::{Body, Bytes};
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Set in [`Conn::state`] once the connection is being closed; the low bits count the
/// requests in flight.
const CLOSING: u64 = 1 << 63;

/// The connections of one listener.
pub struct Gate {
    places: Arc<Semaphore>,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    epoch: Instant,
    idle_timeout: Duration,
}

/// One accepted connection.
pub struct Conn {
    id: u64,
    /// Requests in flight, plus [`CLOSING`].
    state: AtomicU64,
    /// When the connection last became idle, in milliseconds since `epoch`.
    idle_since_ms: AtomicU64,
    /// The gate's [`Gate::epoch`].
    epoch: Instant,
    /// The task driving the connection, woken to notice [`CLOSING`].
    waker: Mutex<Option<Waker>>,
}

impl Conn {
    fn closing(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSING != 0
    }

    /// Closes the connection if no request is in flight; true if it did.
    fn close_if_idle(&self) -> bool {
        if self
            .state
            .compare_exchange(0, CLOSING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        if let Some(w) = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            w.wake();
        }
        true
    }

    fn register(&self, cx: &Context<'_>) {
        let mut w = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
        if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *w = Some(cx.waker().clone());
        }
    }
}

impl Gate {
    pub fn new(max_connections: usize, idle_timeout: Duration) -> Arc<Self> {
        let gate = Arc::new(Gate {
            places: Arc::new(Semaphore::new(max_connections.max(1))),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            idle_timeout,
        });
        // Closes connections idle for longer than idle_timeout.
        let weak = Arc::downgrade(&gate);
        let tick = (idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(gate) = weak.upgrade() else { return };
                gate.close_idle();
            }
        });
        gate
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close_idle(&self) {
        let limit = self.idle_timeout.as_millis() as u64;
        let now = self.now_ms();
        let idle: Vec<_> = self
            .conns()
            .values()
            .filter(|c| now.saturating_sub(c.idle_since_ms.load(Ordering::Acquire)) > limit)
            .cloned()
            .collect();
        for c in idle {
            if c.close_if_idle() {
                metrics::counter!("fogd_api_connections_closed_total", "reason" => "idle")
                    .increment(1);
            }
        }
    }

    /// Closes the connection idle for longest; false if every connection is busy.
    fn evict_longest_idle(&self) -> bool {
        let mut idle: Vec<_> = self
            .conns()
            .values()
            .filter(|c| c.state.load(Ordering::Acquire) == 0)
            .cloned()
            .collect();
        idle.sort_by_key(|c| c.idle_since_ms.load(Ordering::Acquire));
        for c in idle {
            if c.close_if_idle() {
                tracing::debug!(
                    conn = c.id,
                    "connection limit reached: closed the longest-idle connection"
                );
                metrics::counter!("fogd_api_connections_closed_total", "reason" => "limit")
                    .increment(1);
                return true;
            }
        }
        false
    }

    /// A place for one more connection: a free one, else the place of the longest-idle
    /// connection, else the first one freed.
    async fn admit(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(p) = self.places.clone().try_acquire_owned() {
                return p;
            }
            // A closed connection gives its place back once its task has noticed; a busy
            // one may turn idle meanwhile, so look again now and then.
            let wait = if self.evict_longest_idle() {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(100)
            };
            if let Ok(Ok(p)) = tokio::time::timeout(wait, self.places.clone().acquire_owned()).await
            {
                return p;
            }
        }
    }

    fn register(&self) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            state: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(self.now_ms()),
            epoch: self.epoch,
            waker: Mutex::new(None),
        });
        let mut conns = self.conns();
        conns.insert(conn.id, conn.clone());
        metrics::gauge!("fogd_api_connections").set(conns.len() as f64);
        conn
    }
}

/// The API's TCP listener, limited by a [`Gate`].
pub struct GatedListener {
    inner: TcpListener,
    gate: Arc<Gate>,
}

impl GatedListener {
    pub fn new(inner: TcpListener, gate: Arc<Gate>) -> Self {
        GatedListener { inner, gate }
    }
}

/// A peer of the API: its address and, for an accepted connection, its [`Conn`].
#[derive(Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    conn: Option<Arc<Conn>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

impl axum_server::Address for Peer {
    type Stream = GatedStream;
    type Listener = GatedListener;
}

impl axum_server::AddrListener<GatedStream, Peer> for GatedListener {
    async fn bind_to(_addr: Peer) -> io::Result<Self> {
        Err(io::Error::other(
            "a GatedListener is made from a bound listener",
        ))
    }

    async fn accept_stream(&self) -> io::Result<(GatedStream, Peer)> {
        let (tcp, addr) = self.inner.accept().await?;
        let place = self.gate.admit().await;
        let conn = self.gate.register();
        let stream = GatedStream {
            inner: tcp,
            conn: conn.clone(),
            gate: self.gate.clone(),
            _place: place,
        };
        Ok((
            stream,
            Peer {
                addr,
                conn: Some(conn),
            },
        ))
    }

    fn get_local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            addr: self.inner.local_addr()?,
            conn: None,
        })
    }
}

impl Connected<Peer> for Peer {
    fn connect_info(peer: Peer) -> Self {
        peer
    }
}

/// An accepted connection; once closed by the [`Gate`], reads and writes fail.
pub struct GatedStream {
    inner: TcpStream,
    conn: Arc<Conn>,
    gate: Arc<Gate>,
    _place: OwnedSemaphorePermit,
}

impl Drop for GatedStream {
    fn drop(&mut self) {
        let mut conns = self.gate.conns();
        conns.remove(&self.conn.id);
        metrics::gauge!("fogd_api_connections").set(conns.len() as f64);
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "closed by fogd's connection limits",
    )
}

impl AsyncRead for GatedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.conn.register(cx);
        if this.conn.closing() {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.conn.closing() {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.conn.closing() {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Middleware: marks the request's connection busy from the request's arrival until its
/// response body has been sent (or dropped), so that it is not closed as idle meanwhile.
pub async fn track(req: Request, next: Next) -> Response {
    let Some(conn) = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .and_then(|c| c.0.conn.clone())
    else {
        return next.run(req).await;
    };
    conn.state.fetch_add(1, Ordering::AcqRel);
    let busy = Busy { conn };
    let response = next.run(req).await;
    response.map(|body| {
        Body::new(Tracked {
            inner: body,
            _busy: busy,
        })
    })
}

/// One request in flight on a connection.
struct Busy {
    conn: Arc<Conn>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let now = self.conn.epoch.elapsed().as_millis() as u64;
        self.conn.idle_since_ms.store(now, Ordering::Release);
        self.conn.state.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection marked busy until it is done.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
