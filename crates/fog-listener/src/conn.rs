//! One accepted client connection: resolve the route, then proxy, hold or refuse.

use crate::wire::{self, SQLSTATE_CONNECTION_FAILURE, SQLSTATE_REJECTED};
use crate::{Shared, State, Target, PAUSE_TIMEOUT_MESSAGE};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};

/// Serve one client until it is proxied to completion, refused, or fenced.
pub(crate) async fn serve(shared: Arc<Shared>, client: TcpStream, peer: SocketAddr) {
    let _active = ActiveGuard::new(&shared);
    if let Err(e) = client.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY on client socket");
    }
    let mut state = shared.state.subscribe();
    // Set when the connection is first held; a connection is held for at most `hold_bound`
    // in total, however often the route flips back to Pause.
    let mut hold_deadline: Option<Instant> = None;
    loop {
        let (target, epoch) = {
            let s = state.borrow_and_update();
            (s.route.target.clone(), s.epoch)
        };
        match target {
            Target::Refuse(message) => {
                tracing::debug!(%peer, %message, "refusing connection");
                refuse(&shared, client, SQLSTATE_REJECTED, &message).await;
                return;
            }
            Target::Pause => {
                let deadline =
                    *hold_deadline.get_or_insert_with(|| Instant::now() + shared.config.hold_bound);
                tracing::debug!(%peer, "route paused; holding connection");
                // Drop the watch guard at once: it must not be held across an await.
                let resumed = timeout_at(
                    deadline,
                    state.wait_for(|s| !matches!(s.route.target, Target::Pause)),
                )
                .await
                .map(|r| r.map(|_| ()));
                match resumed {
                    Ok(Ok(_)) => continue,
                    // The listener is gone.
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::info!(%peer, "route still paused after the hold bound; refusing");
                        refuse(&shared, client, SQLSTATE_REJECTED, PAUSE_TIMEOUT_MESSAGE).await;
                        return;
                    }
                }
            }
            Target::Forward(addr) => {
                // Registered before connecting, so `wait_fenced` also waits for connections
                // that are still being established to the old target.
                let bound = BoundGuard::new(&shared, epoch);
                let connect = timeout(shared.config.connect_timeout, TcpStream::connect(addr));
                let connected = tokio::select! {
                    biased;
                    fenced = fenced(&mut state, epoch) => {
                        drop(bound);
                        if fenced.is_err() {
                            return;
                        }
                        // The target changed while connecting: start over with the new one.
                        continue;
                    }
                    connected = connect => connected,
                };
                let upstream = match connected {
                    Ok(Ok(upstream)) => upstream,
                    Ok(Err(e)) => {
                        // Clients retry fast while a server is down: one line per attempt
                        // would flood the log. The health monitor reports the outage.
                        tracing::debug!(%peer, target = %addr, error = %e, "target unreachable");
                        let message = format!("fogd: target {addr} is unreachable: {e}");
                        refuse(&shared, client, SQLSTATE_CONNECTION_FAILURE, &message).await;
                        return;
                    }
                    Err(_) => {
                        let after = shared.config.connect_timeout;
                        tracing::warn!(%peer, target = %addr, ?after, "connecting to target timed out");
                        let message = format!(
                            "fogd: target {addr} is unreachable: no answer within {after:?}"
                        );
                        refuse(&shared, client, SQLSTATE_CONNECTION_FAILURE, &message).await;
                        return;
                    }
                };
                proxy(&shared, client, upstream, &mut state, epoch, peer, addr).await;
                drop(bound);
                return;
            }
        }
    }
}

/// Copy bytes both ways until either side is done or the fence epoch moves on. Both sockets
/// are closed when this returns.
async fn proxy(
    shared: &Shared,
    client: TcpStream,
    upstream: TcpStream,
    state: &mut watch::Receiver<State>,
    epoch: u64,
    peer: SocketAddr,
    target: SocketAddr,
) {
    if let Err(e) = upstream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY on upstream socket");
    }
    let (client, upstream) = if shared.kernel.is_some() {
        match crate::kernel::forward(shared, client, upstream, state, epoch, peer, target).await {
            Ok(()) => return,
            Err(refused) => {
                tracing::debug!(%peer, %target, reason = %refused.reason, "kernel forwarding refused; copying in user space");
                (refused.client, refused.upstream)
            }
        }
    } else {
        (client, upstream)
    };
    tracing::debug!(%peer, %target, epoch, "proxying");
    let mut client = Counted {
        inner: client,
        written: &shared.stats.bytes_server_to_client,
    };
    let mut upstream = Counted {
        inner: upstream,
        written: &shared.stats.bytes_client_to_server,
    };
    tokio::select! {
        // Checked first on every wake-up: once fenced, not one more byte is copied.
        biased;
        _ = fenced(state, epoch) => {
            tracing::info!(%peer, %target, "closing proxied connection: fenced");
        }
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
            Ok((to_server, to_client)) => {
                tracing::debug!(%peer, %target, to_server, to_client, "connection finished");
            }
            Err(e) => tracing::debug!(%peer, %target, error = %e, "connection ended with an error"),
        },
    }
    // `client` and `upstream` drop here: both sockets close.
}

/// Resolves once the fence epoch is no longer `epoch` (or the listener is gone: an error).
pub(crate) async fn fenced(
    state: &mut watch::Receiver<State>,
    epoch: u64,
) -> Result<(), watch::error::RecvError> {
    state.wait_for(|s| s.epoch != epoch).await.map(|_| ())
}

async fn refuse(shared: &Shared, client: TcpStream, sqlstate: &str, message: &str) {
    shared.stats.refused_total.fetch_add(1, Ordering::Relaxed);
    let deadline = Instant::now() + shared.config.handshake_timeout;
    wire::refuse(client, sqlstate, message, deadline).await;
}

/// Counts a client connection as active for as long as it lives.
struct ActiveGuard<'a>(&'a AtomicU64);

impl<'a> ActiveGuard<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared
            .stats
            .connections_active
            .fetch_add(1, Ordering::Relaxed);
        ActiveGuard(&shared.stats.connections_active)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a connection as bound to a forward target under a fence epoch.
struct BoundGuard<'a> {
    shared: &'a Shared,
    epoch: u64,
}

impl<'a> BoundGuard<'a> {
    fn new(shared: &'a Shared, epoch: u64) -> Self {
        shared
            .bound
            .send_modify(|counts| *counts.entry(epoch).or_default() += 1);
        BoundGuard { shared, epoch }
    }
}

impl Drop for BoundGuard<'_> {
    fn drop(&mut self) {
        let epoch = self.epoch;
        self.shared.bound.send_modify(|counts| {
            if let Some(count) = counts.get_mut(&epoch) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(&epoch);
                }
            }
        });
    }
}

/// A stream that counts the bytes written to it, live (so a fenced connection's traffic is
/// counted too, unlike the totals `copy_bidirectional` returns at the end).
struct Counted<'a, S> {
    inner: S,
    written: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            this.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled {
            this.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
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
