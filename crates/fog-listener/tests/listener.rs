//! Listener behaviour over real TCP on 127.0.0.1. Every test is bounded in time.

use fog_listener::{Listener, ListenerConfig, Route, Target, PAUSE_TIMEOUT_MESSAGE};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout, Instant};

const TEST_BOUND: Duration = Duration::from_secs(20);
const CLOSE_BOUND: Duration = Duration::from_secs(2);

async fn within<F: Future>(f: F) -> F::Output {
    timeout(TEST_BOUND, f)
        .await
        .expect("test exceeded its time bound")
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

fn route(target: Target, generation: u64) -> Route {
    Route::new(target, generation)
}

/// An upstream that greets each connection with `banner` (so a client can tell which
/// upstream it reached), then echoes. Returns its address and its accepted-connection count.
async fn echo_server(banner: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(localhost()).await.expect("bind upstream");
    let addr = listener.local_addr().expect("local address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if stream.write_all(banner).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// An address nothing listens on.
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind(localhost()).await.expect("bind upstream");
    let addr = l.local_addr().expect("local address");
    drop(l);
    addr
}

async fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    timeout(CLOSE_BOUND, stream.read_exact(&mut buf))
        .await
        .expect("read timed out")
        .expect("read failed");
    buf
}

/// Connect through the listener and read the upstream's banner.
async fn connect_banner(addr: SocketAddr, banner_len: usize) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let banner = read_n(&mut s, banner_len).await;
    (s, banner)
}

async fn assert_echo(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(payload).await.expect("write");
    assert_eq!(read_n(stream, payload.len()).await, payload);
}

/// The peer closes the stream within `CLOSE_BOUND`: a read returns EOF or an error.
async fn assert_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + CLOSE_BOUND;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {CLOSE_BOUND:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
        }
    }
}

/// The peer does not close the stream for a while.
async fn assert_open(stream: &mut TcpStream) {
    let mut buf = [0u8; 1];
    let r = timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
    assert!(
        r.is_err(),
        "expected the connection to stay open, read gave {r:?}"
    );
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + CLOSE_BOUND;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        sleep(Duration::from_millis(10)).await;
    }
}

/// Connect with tokio-postgres and return the error message it reports.
async fn pg_error(addr: SocketAddr) -> String {
    let conn = format!(
        "host={} port={} user=x dbname=y connect_timeout=10",
        addr.ip(),
        addr.port()
    );
    match tokio_postgres::connect(&conn, tokio_postgres::NoTls).await {
        Ok(_) => panic!("connection unexpectedly succeeded"),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("not a server error: {e}"));
            db.message().to_string()
        }
    }
}

/// Speak the protocol by hand, optionally starting with an SSLRequest. Returns the
/// ErrorResponse's fields as (tag, value) pairs.
async fn raw_error(addr: SocketAddr, ssl_first: bool) -> Vec<(u8, String)> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    if ssl_first {
        let mut ssl = Vec::new();
        ssl.extend(8i32.to_be_bytes());
        ssl.extend(80_877_103i32.to_be_bytes());
        s.write_all(&ssl).await.expect("write");
        assert_eq!(read_n(&mut s, 1).await, b"N");
    }
    let mut body = Vec::new();
    body.extend(196_608i32.to_be_bytes());
    body.extend(b"user\0x\0database\0y\0\0");
    let mut startup = Vec::new();
    startup.extend(
        i32::try_from(body.len() + 4)
            .expect("length fits")
            .to_be_bytes(),
    );
    startup.extend(body);
    s.write_all(&startup).await.expect("write");

    let header = read_n(&mut s, 5).await;
    assert_eq!(header[0], b'E', "expected an ErrorResponse");
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let body = read_n(&mut s, len - 4).await;
    assert_closed(&mut s).await;
    let mut fields = Vec::new();
    let mut rest = &body[..];
    while let Some((&tag, tail)) = rest.split_first() {
        if tag == 0 {
            break;
        }
        let end = tail
            .iter()
            .position(|b| *b == 0)
            .expect("NUL-terminated field");
        fields.push((
            tag,
            String::from_utf8(tail[..end].to_vec()).expect("UTF-8 field"),
        ));
        rest = &tail[end + 1..];
    }
    fields
}

fn field(fields: &[(u8, String)], tag: u8) -> &str {
    fields
        .iter()
        .find(|(t, _)| *t == tag)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

#[tokio::test]
async fn forward_round_trips_bytes_and_counts_them() {
    within(async {
        let (upstream, accepted) = echo_server(b"A").await;
        let listener = Listener::bind(
            localhost(),
            route(Target::Forward(upstream), 1),
            ListenerConfig::default(),
        )
        .await
        .expect("bind listener");
        let (mut c, banner) = connect_banner(listener.local_addr(), 1).await;
        assert_eq!(banner, b"A");
        assert_echo(&mut c, b"hello, primary").await;
        let big = vec![7u8; 256 * 1024];
        // A large payload, written and read concurrently so neither side's buffers fill up.
        let (mut r, mut w) = c.into_split();
        let to_write = big.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&to_write).await.expect("write");
            w
        });
        let mut got = vec![0u8; big.len()];
        r.read_exact(&mut got).await.expect("read");
        assert!(got == big, "large payload corrupted");
        let mut c = r
            .reunite(writer.await.expect("writer task"))
            .expect("reunite");

        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        let stats = listener.stats();
        assert_eq!(stats.connections_total, 1);
        assert_eq!(stats.connections_active, 1);
        assert_eq!(stats.refused_total, 0);
        let sent = (b"hello, primary".len() + big.len()) as u64;
        assert_eq!(stats.bytes_client_to_server, sent);
        assert_eq!(stats.bytes_server_to_client, sent + 1); // plus the banner

        // A second connection counts too; closing one makes it inactive.
        let (mut c2, _) = connect_banner(listener.local_addr(), 1).await;
        assert_echo(&mut c2, b"x").await;
        assert_eq!(listener.stats().connections_total, 2);
        c.shutdown().await.expect("shutdown");
        assert_closed(&mut c).await;
        drop(c);
        wait_until("one connection is active", || {
            listener.stats().connections_active == 1
        })
        .await;
        listener.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn higher_generation_reroutes_and_fences_old_connections() {
    within(async {
        let (a, _) = echo_server(b"A").await;
        let (b, accepted_b) = echo_server(b"B").await;
        let listener = Listener::bind(
            localhost(),
            route(Target::Forward(a), 1),
            ListenerConfig::default(),
        )
        .await
        .expect("bind listener");
        let (mut old1, banner) = connect_banner(listener.local_addr(), 1).await;
        assert_eq!(banner, b"A");
        let (mut old2, _) = connect_banner(listener.local_addr(), 1).await;
        assert_echo(&mut old1, b"before").await;

        listener.set_route(route(Target::Forward(b), 2));
        timeout(CLOSE_BOUND, listener.wait_fenced())
            .await
            .expect("fence not complete");
        assert_closed(&mut old1).await;
        assert_closed(&mut old2).await;

        let (mut new, banner) = connect_banner(listener.local_addr(), 1).await;
        assert_eq!(banner, b"B");
        assert_echo(&mut new, b"after").await;

        // Stale: a lower generation is ignored; connections to B survive it.
        listener.set_route(route(Target::Forward(a), 1));
        assert_eq!(listener.route(), route(Target::Forward(b), 2));
        assert_open(&mut new).await;
        assert_echo(&mut new, b"still B").await;
        let (_, banner) = connect_banner(listener.local_addr(), 1).await;
        assert_eq!(banner, b"B");

        // Same target, higher generation: recorded, but nothing is closed.
        listener.set_route(route(Target::Forward(b), 3));
        assert_eq!(listener.route().generation, 3);
        assert_open(&mut new).await;
        assert_echo(&mut new, b"gen 3").await;
        assert_eq!(accepted_b.load(Ordering::SeqCst), 2);
        listener.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn target_change_at_the_same_generation_also_fences() {
    within(async {
        let (a, _) = echo_server(b"A").await;
        let (b, _) = echo_server(b"B").await;
        let listener = Listener::bind(
            localhost(),
            route(Target::Forward(a), 4),
            ListenerConfig::default(),
        )
        .await
        .expect("bind listener");
        let (mut old, _) = connect_banner(listener.local_addr(), 1).await;
        // Same generation, same target: a no-op.
        listener.set_route(route(Target::Forward(a), 4));
        assert_open(&mut old).await;
        // Pause then forward within one failover (one generation).
        listener.set_route(route(Target::Pause, 4));
        assert_closed(&mut old).await;
        listener.set_route(route(Target::Forward(b), 4));
        let (_, banner) = connect_banner(listener.local_addr(), 1).await;
        assert_eq!(banner, b"B");
        listener.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn refuse_route_closes_proxied_connections_and_refuses_new_ones() {
    within(async {
        let (a, _) = echo_server(b"A").await;
        let listener = Listener::bind(
            localhost(),
            route(Target::Forward(a), 1),
            ListenerConfig::default(),
        )
        .await
        .expect("bind listener");
        let (mut old, _) = connect_banner(listener.local_addr(), 1).await;
        listener.set_route(route(
            Target::Refuse("fogd: mi1 is being deleted".into()),
            2,
        ));
        assert_closed(&mut old).await;
        let message = pg_error(listener.local_addr()).await;
        assert!(message.contains("mi1 is being deleted"), "{message}");
        listener.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn close_connections_keeps_the_route() {
    within(async {
        let (a, _) = echo_server(b"A").await;
        let listener = Listener::bind(
            localhost(),
            route(Target::Forward(a), 1),
            ListenerConfig::default(),
        )
        .await
        .expect("bind listener");
        let (mut old, _) = connect_banner(listener.local_addr(), 1).await;
        listener.close_connections();
        timeout(CLOSE_BOUND, listener.wait_fenced())
            .await
            .expect("fence not complete");
        assert_closed(&mut old).await;
        let (mut new, banner) = connect_banner(listener.local_addr(), 1).await;
        assert_eq!(banner, b"A");
        assert_echo(&mut new, b"ok").await;
        assert_eq!(listener.route(), route(Target::Forward(a), 1));
        listener.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn refusal_reaches_tokio_postgres_and_raw_clients() {
    within(async {
        let text = "fogd: this listener is disabled";
        let listener = Listener::bind(
            localhost(),
            route(Target::Refuse(text.into()), 1),
            ListenerConfig::default(),
        )
        .await
        .expect("bind listener");
        let message = pg_error(listener.local_addr()).await;
        assert!(message.contains(text), "{message}");

        for ssl_first in [false, true] {
            let fields = raw_error(listener.local_addr(), ssl_first).await;
            assert_eq!(field(&fields, b'S'), "FATAL");
            assert_eq!(field(&fields, b'V'), "FATAL");
            assert_eq!(field(&fields, b'C'), "08004");
            assert_eq!(field(&fields, b'M'), text);
        }
        assert_eq!(listener.stats().refused_total, 3);
        listener.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn bogus_clients_are_dropped_without_harm() {
    within(async {
        let config = ListenerConfig {
            handshake_timeout: Duration::from_millis(300),
            ..ListenerConfig::default()
        };
        let listener = Listener::bind(localhost(), route(Target::Refuse("no".into()), 1), config)
            .await
            .expect("bind listener");
        let addr = listener.local_addr();
        // Oversized length, garbage, a silent client, one that hangs up at once.
        let mut huge = TcpStream::connect(addr).await.expect("connect");
        huge.write_all(&1_000_000i32.to_be_bytes())
            .await
            .expect("write");
        huge.write_all(&196_608i32.to_be_bytes())
            .await
            .expect("write");
        let mut garbage = TcpStream::connect(addr).await.expect("connect");
        garbage
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        drop(TcpStream::connect(addr).await.expect("connect"));
        let many: Vec<TcpStream> = {
            let mut v = Vec::new();
            for _ in 0..50 {
                v.push(TcpStream::connect(addr).await.expect("connect"));
            }
            v
        };
        assert_closed(&mut huge).await;
        assert_closed(&mut garbage).await;
        assert_closed(&mut silent).await;
        drop(many);
        wait_until("all bogus connections are gone", || {
            listener.stats().connections_active == 0
        })
        .await;
        // The listener still works.
        let message = pg_error(addr).await;
        assert_eq!(message, "no");
        listener.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn paused_connection_proceeds_when_route_resumes() {
    within(async {
        let (a, accepted) = echo_server(b"A").await;
        let (b, _) = echo_server(b"B").await;
        let listener = Listener::bind(
            localhost(),
            route(Target::Forward(a), 1),
            ListenerConfig::default(),
        )
        .await
        .expect("bind listener");
        listener.set_route(route(Target::Pause, 2));
        let mut held = TcpStream::connect(listener.local_addr())
            .await
            .expect("connect");
        held.write_all(b"queued").await.expect("write");
        wait_until("the held connection is accepted", || {
            listener.stats().connections_active == 1
        })
        .await;
        sleep(Duration::from_millis(200)).await;
        // Held: nothing reached any upstream, and nothing came back.
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
        assert_open(&mut held).await;

        listener.set_route(route(Target::Forward(b), 3));
        assert_eq!(read_n(&mut held, 1).await, b"B");
        // The bytes sent while held were kept and delivered.
        assert_eq!(read_n(&mut held, 6).await, b"queued");
        assert_echo(&mut held, b"go").await;
        listener.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn paused_connection_is_refused_after_the_hold_bound() {
    within(async {
        let (a, accepted) = echo_server(b"A").await;
        let config = ListenerConfig {
            hold_bound: Duration::from_millis(500),
            ..ListenerConfig::default()
        };
        let listener = Listener::bind(localhost(), route(Target::Pause, 1), config)
            .await
            .expect("bind listener");
        let started = Instant::now();
        let message = pg_error(listener.local_addr()).await;
        let waited = started.elapsed();
        assert_eq!(message, PAUSE_TIMEOUT_MESSAGE);
        assert!(message.contains("failover in progress"));
        assert!(
            waited >= Duration::from_millis(450),
            "refused too early: {waited:?}"
        );
        assert!(waited < Duration::from_secs(3), "held too long: {waited:?}");

        let fields = raw_error(listener.local_addr(), true).await;
        assert_eq!(field(&fields, b'M'), PAUSE_TIMEOUT_MESSAGE);
        assert_eq!(listener.stats().refused_total, 2);
        // The route can still resume afterwards.
        listener.set_route(route(Target::Forward(a), 2));
        let (_, banner) = connect_banner(listener.local_addr(), 1).await;
        assert_eq!(banner, b"A");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        listener.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn paused_connection_is_refused_when_route_turns_to_refuse() {
    within(async {
        let listener = Listener::bind(
            localhost(),
            route(Target::Pause, 1),
            ListenerConfig::default(),
        )
        .await
        .expect("bind listener");
        let l2 = listener.clone();
        let flip = tokio::spawn(async move {
            sleep(Duration::from_millis(200)).await;
            l2.set_route(route(Target::Refuse("fogd: group deleted".into()), 2));
        });
        let started = Instant::now();
        let message = pg_error(listener.local_addr()).await;
        assert_eq!(message, "fogd: group deleted");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "waited for the hold bound instead"
        );
        flip.await.expect("flip task");
        listener.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn unreachable_target_is_reported_to_the_client() {
    within(async {
        let dead = dead_addr().await;
        let listener = Listener::bind(
            localhost(),
            route(Target::Forward(dead), 1),
            ListenerConfig::default(),
        )
        .await
        .expect("bind listener");
        let message = pg_error(listener.local_addr()).await;
        assert!(message.contains(&dead.to_string()), "{message}");
        assert!(message.contains("unreachable"), "{message}");
        let fields = raw_error(listener.local_addr(), true).await;
        assert_eq!(field(&fields, b'C'), "08006");
        assert!(field(&fields, b'M').contains(&dead.to_string()));
        assert_eq!(listener.stats().refused_total, 2);
        listener.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_everything_and_stops_accepting() {
    within(async {
        let (a, _) = echo_server(b"A").await;
        let listener = Listener::bind(
            localhost(),
            route(Target::Forward(a), 1),
            ListenerConfig::default(),
        )
        .await
        .expect("bind listener");
        let addr = listener.local_addr();
        let (mut proxied, _) = connect_banner(addr, 1).await;
        listener.set_route(route(Target::Pause, 2));
        assert_closed(&mut proxied).await;
        let mut held = TcpStream::connect(addr).await.expect("connect");
        wait_until("the held connection is accepted", || {
            listener.stats().connections_active == 1
        })
        .await;
        let other = listener.clone();
        timeout(CLOSE_BOUND, listener.shutdown())
            .await
            .expect("shutdown hung");
        assert_closed(&mut held).await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "still accepting after shutdown"
        );
        assert_eq!(other.stats().connections_active, 0);
    })
    .await;
}

#[tokio::test]
async fn dropping_every_handle_stops_the_listener() {
    within(async {
        let (a, _) = echo_server(b"A").await;
        let listener = Listener::bind(
            localhost(),
            route(Target::Forward(a), 1),
            ListenerConfig::default(),
        )
        .await
        .expect("bind listener");
        let addr = listener.local_addr();
        let (mut proxied, _) = connect_banner(addr, 1).await;
        drop(listener);
        assert_closed(&mut proxied).await;
        let deadline = Instant::now() + CLOSE_BOUND;
        while TcpStream::connect(addr).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "still accepting after the last handle was dropped"
            );
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
