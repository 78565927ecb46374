//! The kernel data path: established sessions forwarded by an eBPF sockmap.
//!
//! Once a connection's upstream socket is connected, both sockets join a `SOCKHASH` and an
//! `sk_skb` stream verdict program (`bpf/sockmap.bpf.c`) redirects every byte that arrives
//! on one straight to the other's send side, inside the kernel. User space no longer reads
//! or writes a byte of the session; it only watches for the end of the session and for
//! fencing, and it closes both sockets itself.
//!
//! **Joining.** The upstream socket joins first, then the client socket, then TCP is asked
//! to re-check both receive queues (`SO_RCVLOWAT`, see [`sys::kick_receive_queue`]), which
//! makes the program forward bytes that were queued before the sockets joined (the
//! client's first message, usually). No byte is ever read in user space in between, so
//! order is kept. The one gap: bytes the *server* sends in the microseconds between the two
//! sockets joining find no peer yet; the program leaves them on the socket ("spilled") and
//! user space forwards them (PostgreSQL never speaks first, so this does not happen with
//! it; it can with a server that sends a greeting at once).
//!
//! **Watching.** A per-session epoll set asks only for `EPOLLRDHUP` (plus the implicit
//! `EPOLLHUP`/`EPOLLERR`): data arriving does not wake user space at all, only a peer's
//! `FIN` or a reset does. The sockets are taken out of tokio's reactor for that reason.
//!
//! **Closing.** When one side finishes sending, the bytes it sent may still be in the
//! kernel's redirect queue; user space waits until the other socket has taken all of them
//! into its send queue (the program's byte count against `tcpi_bytes_acked` + `SIOCOUTQ`),
//! then shuts that socket's write side, so the `FIN` follows the last byte as with the
//! user-space copy. When both directions are done (or one resets) both sockets close.
//!
//! **Fencing** is unchanged: the session task watches the fence epoch and, when it moves,
//! shuts both sockets down and closes them at once; closing removes them from the map.
//!
//! **Counters.** The program counts redirected bytes per socket; `Listener::stats` adds
//! those of open sessions to the listener's counters, and a session that ends moves its
//! bytes into them. (Bytes user space forwards for a spill are counted when it ends.)

use crate::sys;
use crate::Shared;
use crate::State;
use aya::maps::{HashMap as BpfHashMap, MapData, SockHash};
use aya::programs::SkSkb;
use aya::Ebpf;
use rustix::event::epoll;
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream as StdTcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, Instant};

/// Slot values in `fog_peers`: `[peer cookie, bytes redirected, spilled packets]`.
type PeerEntry = [u64; 3];
const BYTES: usize = 1;
const SPILLED: usize = 2;

/// How long after joining user space looks again for spilled bytes (a verdict that ran
/// while the client socket was joining may count its spill just after the first look).
const SPILL_RECHECK: Duration = Duration::from_millis(20);
/// How often, and for how long at most, closing waits for redirected bytes to reach the
/// other socket's send queue before shutting its write side anyway.
const FLUSH_POLL: Duration = Duration::from_millis(1);
const FLUSH_BOUND: Duration = Duration::from_secs(2);
/// Before reading the byte counts at a `FIN`, let the softirq that delivered the `FIN`
/// finish redirecting any bytes that came with it.
const FIN_SETTLE: Duration = Duration::from_millis(1);

/// The loaded program and its maps, shared by every listener of the process.
pub(crate) struct Forwarder {
    maps: Mutex<Maps>,
}

struct Maps {
    socks: SockHash<MapData, u64>,
    peers: BpfHashMap<MapData, u64, PeerEntry>,
    /// Keeps the program loaded and attached to `socks`.
    _ebpf: Ebpf,
}

#[cfg(fog_bpf)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sockmap.bpf.o"));

/// The process's forwarder, loaded on first use. An error says why the kernel data path is
/// unavailable (not built, not permitted, not supported).
pub(crate) fn forwarder() -> Result<Arc<Forwarder>, String> {
    static FORWARDER: OnceLock<Result<Arc<Forwarder>, String>> = OnceLock::new();
    FORWARDER.get_or_init(|| load().map(Arc::new)).clone()
}

#[cfg(not(fog_bpf))]
fn load() -> Result<Forwarder, String> {
    Err("fog-listener was built without its BPF program (no clang at build time)".to_owned())
}

#[cfg(fog_bpf)]
fn load() -> Result<Forwarder, String> {
    let mut ebpf = Ebpf::load(OBJECT).map_err(|e| format!("loading the BPF object: {e}"))?;
    let socks = ebpf
        .take_map("fog_socks")
        .ok_or("BPF object has no fog_socks map")?;
    let socks: SockHash<MapData, u64> =
        SockHash::try_from(socks).map_err(|e| format!("fog_socks: {e}"))?;
    let peers = ebpf
        .take_map("fog_peers")
        .ok_or("BPF object has no fog_peers map")?;
    let peers: BpfHashMap<MapData, u64, PeerEntry> =
        BpfHashMap::try_from(peers).map_err(|e| format!("fog_peers: {e}"))?;
    let program: &mut SkSkb = ebpf
        .program_mut("fog_verdict")
        .ok_or("BPF object has no fog_verdict program")?
        .try_into()
        .map_err(|e| format!("fog_verdict: {e}"))?;
    program
        .load()
        .map_err(|e| format!("loading fog_verdict: {e}"))?;
    let map_fd = socks
        .fd()
        .try_clone()
        .map_err(|e| format!("fog_socks fd: {e}"))?;
    program
        .attach(&map_fd)
        .map_err(|e| format!("attaching fog_verdict: {e}"))?;
    Ok(Forwarder {
        maps: Mutex::new(Maps {
            socks,
            peers,
            _ebpf: ebpf,
        }),
    })
}

impl Forwarder {
    fn maps(&self) -> MutexGuard<'_, Maps> {
        // A panic while holding the lock leaves the maps usable: every update is one call.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry(&self, cookie: u64) -> PeerEntry {
        self.maps().peers.get(&cookie, 0).unwrap_or([0; 3])
    }

    /// Bytes redirected so far by the given live sessions: (to servers, to clients).
    pub(crate) fn live_bytes(&self, sessions: &HashSet<(u64, u64)>) -> (u64, u64) {
        let maps = self.maps();
        let bytes = |cookie: &u64| maps.peers.get(cookie, 0).map(|e| e[BYTES]).unwrap_or(0);
        sessions
            .iter()
            .fold((0, 0), |(to_server, to_client), (c, u)| {
                (to_server + bytes(c), to_client + bytes(u))
            })
    }
}

/// One side of a kernel-forwarded session.
struct Side {
    sock: StdTcpStream,
    cookie: u64,
    /// Bytes user space itself wrote to this socket (forwarded spills).
    written: u64,
    /// Spilled packets already forwarded by user space.
    spills_seen: u64,
    /// This side's peer has finished sending to us (FIN or hang-up seen).
    input_done: bool,
}

/// Why a session could not be handed to the kernel; the sockets come back untouched (no
/// byte was read or redirected), so the caller can copy in user space instead.
pub(crate) struct Refused {
    pub(crate) client: TcpStream,
    pub(crate) upstream: TcpStream,
    pub(crate) reason: String,
}

/// Forward the session in the kernel until it ends or is fenced.
pub(crate) async fn forward(
    shared: &Shared,
    client: TcpStream,
    upstream: TcpStream,
    state: &mut watch::Receiver<State>,
    epoch: u64,
    peer: SocketAddr,
    target: SocketAddr,
) -> Result<(), Refused> {
    let Some(fwd) = shared.kernel.as_deref() else {
        return Err(Refused {
            client,
            upstream,
            reason: "the kernel data path is off".to_owned(),
        });
    };
    let cookies = match (
        rustix::net::sockopt::socket_cookie(&client),
        rustix::net::sockopt::socket_cookie(&upstream),
    ) {
        (Ok(c), Ok(u)) => (c, u),
        (Err(e), _) | (_, Err(e)) => {
            return Err(Refused {
                client,
                upstream,
                reason: format!("SO_COOKIE: {e}"),
            })
        }
    };
    // Out of tokio's reactor: its epoll registration would wake on every byte.
    let (client, upstream) = match (client.into_std(), upstream.into_std()) {
        (Ok(c), Ok(u)) => (c, u),
        (c, u) => {
            // Both sockets are dropped (closed): nothing was forwarded yet, the client sees
            // the connection close.
            tracing::warn!(%peer, %target, client_ok = c.is_ok(), upstream_ok = u.is_ok(), "cannot leave the reactor; closing");
            return Ok(());
        }
    };
    // Fenced while connecting: never hand the session to the kernel (dropping closes both).
    if state.borrow().epoch != epoch {
        tracing::info!(%peer, %target, "closing connection before forwarding: fenced");
        return Ok(());
    }
    let mut session = Session {
        fwd,
        client: Side::new(client, cookies.0),
        upstream: Side::new(upstream, cookies.1),
    };
    if let Err(reason) = session.join() {
        return match session.back_to_tokio() {
            Ok((client, upstream)) => Err(Refused {
                client,
                upstream,
                reason,
            }),
            Err(e) => {
                tracing::warn!(%peer, %target, %reason, error = %e, "kernel forwarding refused and the sockets cannot return to the reactor; closing");
                Ok(())
            }
        };
    }
    let key = (cookies.0, cookies.1);
    lock(&shared.kernel_sessions).insert(key);
    shared
        .stats
        .kernel_sessions_total
        .fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, %target, epoch, "forwarding in the kernel");
    let outcome = session.run(state, epoch).await;
    match outcome {
        Ok(Ended::Fenced) => {
            tracing::info!(%peer, %target, "closing kernel-forwarded connection: fenced")
        }
        Ok(Ended::Finished) => tracing::debug!(%peer, %target, "connection finished"),
        Err(e) => {
            tracing::debug!(%peer, %target, error = %e, "connection ended with an error")
        }
    }
    // Under the sessions lock, so `Listener::stats` counts these bytes exactly once.
    let mut live = lock(&shared.kernel_sessions);
    live.remove(&key);
    let (to_server, to_client) = session.close();
    shared
        .stats
        .bytes_client_to_server
        .fetch_add(to_server, Ordering::Relaxed);
    shared
        .stats
        .bytes_server_to_client
        .fetch_add(to_client, Ordering::Relaxed);
    drop(live);
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

enum Ended {
    Fenced,
    Finished,
}

struct Session<'a> {
    fwd: &'a Forwarder,
    client: Side,
    upstream: Side,
}

impl Side {
    fn new(sock: StdTcpStream, cookie: u64) -> Side {
        Side {
            sock,
            cookie,
            written: 0,
            spills_seen: 0,
            input_done: false,
        }
    }
}

impl Session<'_> {
    /// Put both sockets in the map, upstream first, and have the kernel look at what was
    /// queued before. On error nothing is left in the maps.
    fn join(&mut self) -> Result<(), String> {
        let (c, u) = (self.client.cookie, self.upstream.cookie);
        {
            let mut maps = self.fwd.maps();
            let joined = maps
                .peers
                .insert(c, [u, 0, 0], 0)
                .and_then(|()| maps.peers.insert(u, [c, 0, 0], 0))
                .and_then(|()| maps.socks.insert(u, self.upstream.sock.as_raw_fd(), 0));
            if let Err(e) = joined {
                let _ = maps.peers.remove(&c);
                let _ = maps.peers.remove(&u);
                let _ = maps.socks.remove(&u);
                return Err(format!("joining the sockmap: {e}"));
            }
            if let Err(e) = maps.socks.insert(c, self.client.sock.as_raw_fd(), 0) {
                // The upstream socket was in the map alone: the server may have spoken
                // into the gap, and leaving the map drops what it spilled. PostgreSQL
                // never speaks first; anything else is lost with this session.
                let spilled = maps.peers.get(&u, 0).map(|e| e[SPILLED]).unwrap_or(0);
                let _ = maps.socks.remove(&u);
                let _ = maps.peers.remove(&c);
                let _ = maps.peers.remove(&u);
                if spilled > 0 {
                    let _ = self.upstream.sock.shutdown(Shutdown::Both);
                    let _ = self.client.sock.shutdown(Shutdown::Both);
                }
                return Err(format!("joining the sockmap: {e}"));
            }
        }
        // Bytes queued before joining: have the program forward them now. If this fails the
        // bytes still go with the next arrival on that socket; the session goes on.
        for side in [&self.upstream, &self.client] {
            if let Err(e) = sys::kick_receive_queue(side.sock.as_fd()) {
                tracing::debug!(error = %e, "SO_RCVLOWAT kick failed");
            }
        }
        Ok(())
    }

    /// After a failed [`Session::join`]: hand the sockets back to tokio.
    fn back_to_tokio(self) -> io::Result<(TcpStream, TcpStream)> {
        Ok((
            TcpStream::from_std(self.client.sock)?,
            TcpStream::from_std(self.upstream.sock)?,
        ))
    }

    async fn run(&mut self, state: &mut watch::Receiver<State>, epoch: u64) -> io::Result<Ended> {
        self.forward_spills()?;
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let interest = epoll::EventFlags::RDHUP;
        epoll::add(
            &ep,
            &self.client.sock,
            epoll::EventData::new_u64(0),
            interest,
        )?;
        epoll::add(
            &ep,
            &self.upstream.sock,
            epoll::EventData::new_u64(1),
            interest,
        )?;
        let ep = sys::register_readable(ep)?;
        let recheck = Instant::now() + SPILL_RECHECK;
        let mut rechecked = false;
        loop {
            tokio::select! {
                // Checked first on every wake-up.
                biased;
                _ = crate::conn::fenced(state, epoch) => return Ok(Ended::Fenced),
                ready = ep.readable() => {
                    let ended = {
                        let mut ready = ready?;
                        let ended = hangups(ep.get_ref())?;
                        // Only an empty answer proves the set is drained (edge-triggered
                        // readiness must not be cleared after events it has not seen).
                        if ended.is_empty() {
                            ready.clear_ready();
                        }
                        ended
                    };
                    for (upstream_side, reset) in ended {
                        if reset {
                            return Err(io::Error::other("socket error (reset)"));
                        }
                        let done = if upstream_side { &self.upstream } else { &self.client };
                        epoll::delete(ep.get_ref(), &done.sock)?;
                        // The side's input ended: once everything it sent has reached the
                        // other socket, pass the FIN on.
                        sleep(FIN_SETTLE).await;
                        self.forward_spills()?;
                        if upstream_side {
                            self.upstream.input_done = true;
                        } else {
                            self.client.input_done = true;
                        }
                        let fenced = tokio::select! {
                            biased;
                            _ = crate::conn::fenced(state, epoch) => true,
                            () = self.flush_towards(!upstream_side) => false,
                        };
                        if fenced {
                            return Ok(Ended::Fenced);
                        }
                        let to = if upstream_side { &self.client } else { &self.upstream };
                        let _ = to.sock.shutdown(Shutdown::Write);
                    }
                    if self.client.input_done && self.upstream.input_done {
                        return Ok(Ended::Finished);
                    }
                }
                () = sleep_until(recheck), if !rechecked => {
                    rechecked = true;
                    self.forward_spills()?;
                }
            }
        }
    }

    /// Wait (bounded) until the socket on side `to_upstream` has taken into its send queue
    /// every byte redirected to it plus what user space wrote to it.
    async fn flush_towards(&self, to_upstream: bool) {
        let (to, from) = if to_upstream {
            (&self.upstream, &self.client)
        } else {
            (&self.client, &self.upstream)
        };
        let deadline = Instant::now() + FLUSH_BOUND;
        loop {
            let expected = self.fwd.entry(from.cookie)[BYTES] + to.written;
            match sys::bytes_queued_for_send(to.sock.as_fd()) {
                Ok(queued) if queued >= expected => return,
                Ok(_) => {}
                // The socket is gone: nothing more can be sent on it anyway.
                Err(_) => return,
            }
            if Instant::now() >= deadline {
                tracing::debug!(
                    expected,
                    "redirected bytes did not drain in time; closing anyway"
                );
                return;
            }
            sleep(FLUSH_POLL).await;
        }
    }

    /// Forward, from user space, any bytes the program left on a socket because its peer
    /// was not in the map yet (see the module docs).
    fn forward_spills(&mut self) -> io::Result<()> {
        for from_upstream in [true, false] {
            let (from, to) = if from_upstream {
                (&mut self.upstream, &mut self.client)
            } else {
                (&mut self.client, &mut self.upstream)
            };
            let spilled = self.fwd.entry(from.cookie)[SPILLED];
            if spilled == from.spills_seen {
                continue;
            }
            from.spills_seen = spilled;
            tracing::debug!(from_upstream, spilled, "forwarding spilled bytes");
            let mut buf = [0u8; 16 * 1024];
            loop {
                match from.sock.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        write_all_nonblocking(&mut to.sock, &buf[..n])?;
                        to.written += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Shut both sockets, take them out of the maps and return the bytes forwarded
    /// (client to server, server to client). The sockets close when `self` drops.
    fn close(self) -> (u64, u64) {
        let _ = self.client.sock.shutdown(Shutdown::Both);
        let _ = self.upstream.sock.shutdown(Shutdown::Both);
        let (c, u) = (self.client.cookie, self.upstream.cookie);
        let mut maps = self.fwd.maps();
        let _ = maps.socks.remove(&c);
        let _ = maps.socks.remove(&u);
        let from_client = maps.peers.get(&c, 0).map(|e| e[BYTES]).unwrap_or(0);
        let from_upstream = maps.peers.get(&u, 0).map(|e| e[BYTES]).unwrap_or(0);
        let _ = maps.peers.remove(&c);
        let _ = maps.peers.remove(&u);
        (
            from_client + self.upstream.written,
            from_upstream + self.client.written,
        )
    }
}

/// The sides whose input ended since the last call, without blocking: `(upstream side?,
/// reset?)` for each.
fn hangups(ep: &OwnedFd) -> io::Result<Vec<(bool, bool)>> {
    let mut events = Vec::with_capacity(2);
    epoll::wait(
        ep,
        rustix::buffer::spare_capacity(&mut events),
        Some(&rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        }),
    )?;
    Ok(events
        .iter()
        .map(|e| {
            let flags = e.flags;
            (e.data.u64() == 1, flags.contains(epoll::EventFlags::ERR))
        })
        .collect())
}

/// Write all of `buf` to a non-blocking socket, waiting briefly when it is full (only used
/// for the rare spilled bytes, a few kilobytes at most).
fn write_all_nonblocking(sock: &mut StdTcpStream, mut buf: &[u8]) -> io::Result<()> {
    let deadline = std::time::Instant::now() + FLUSH_BOUND;
    while !buf.is_empty() {
        match sock.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() >= deadline {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                std::thread::sleep(FLUSH_POLL);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
