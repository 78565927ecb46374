//! The listener over real TCP on 127.0.0.1: forwarding, fencing on re-route, stale routes,
//! refusals that PostgreSQL clients can read, holds during a switch, unreachable targets.

use fog_listener::{Listener, ListenerConfig, Route, Target, PAUSE_TIMEOUT_MESSAGE};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that echoes every byte, prefixed by its tag on connect.
async fn echo(tag: u8) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(&[tag]).await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn listener(target: Target, generation: u64, hold: Duration) -> Listener {
    let config = ListenerConfig {
        hold_bound: hold,
        ..ListenerConfig::default()
    };
    Listener::bind(
        "127.0.0.1:0".parse().expect("addr"),
        Route::new(target, generation),
        config,
    )
    .await
    .expect("listener")
}

async fn tag_of(addr: SocketAddr) -> u8 {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut b = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b))
        .await
        .expect("in time")
        .expect("read");
    b[0]
}

#[tokio::test]
async fn forwards_counts_and_fences_on_a_newer_route() {
    let (a, b) = (echo(b'a').await, echo(b'b').await);
    let l = listener(Target::Forward(a), 1, Duration::from_secs(1)).await;
    let mut s = TcpStream::connect(l.local_addr()).await.expect("connect");
    let mut buf = [0u8; 6];
    s.write_all(b"hello").await.expect("write");
    s.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"ahello");
    let st = l.stats();
    assert_eq!((st.connections_total, st.bytes_client_to_server), (1, 5));

    // A newer generation with a new target closes the old connection at once...
    l.set_route(Route::new(Target::Forward(b), 2));
    let mut rest = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(2), s.read(&mut rest))
        .await
        .expect("closed in time");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    // ...and new connections reach the new target.
    assert_eq!(tag_of(l.local_addr()).await, b'b');
    // A stale route is ignored.
    l.set_route(Route::new(Target::Forward(a), 1));
    assert_eq!(tag_of(l.local_addr()).await, b'b');
    l.shutdown().await;
}

#[tokio::test]
async fn refusals_reach_postgres_clients() {
    let l = listener(
        Target::Refuse("fogd: read-only endpoint refuses: Standby".into()),
        1,
        Duration::from_secs(1),
    )
    .await;
    let conn = format!(
        "host=127.0.0.1 port={} user=x dbname=y connect_timeout=5",
        l.local_addr().port()
    );
    let e = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string());
    assert!(msg.contains("read-only endpoint refuses: Standby"), "{msg}");
    assert!(l.stats().refused_total >= 1);
}

#[tokio::test]
async fn paused_connections_wait_then_proceed_or_are_refused() {
    let a = echo(b'a').await;
    let l = listener(Target::Pause, 1, Duration::from_millis(1500)).await;
    let addr = l.local_addr();
    let waiting = tokio::spawn(async move { tag_of(addr).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "held while paused");
    l.set_route(Route::new(Target::Forward(a), 2));
    assert_eq!(
        waiting.await.expect("task"),
        b'a',
        "released to the new target"
    );

    // Past the hold bound: a clear PostgreSQL error.
    l.set_route(Route::new(Target::Pause, 3));
    let conn = format!(
        "host=127.0.0.1 port={} user=x dbname=y connect_timeout=10",
        addr.port()
    );
    let e = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused after the hold");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string());
    assert_eq!(msg, PAUSE_TIMEOUT_MESSAGE);
}

#[tokio::test]
async fn unreachable_target_is_reported_to_the_client() {
    // A port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let l = listener(Target::Forward(dead), 1, Duration::from_secs(1)).await;
    let conn = format!(
        "host=127.0.0.1 port={} user=x dbname=y connect_timeout=5",
        l.local_addr().port()
    );
    let e = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .err()
        .expect("fails");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string());
    assert!(
        msg.contains(&dead.port().to_string()) || msg.to_lowercase().contains("unreachable"),
        "{msg}"
    );
}
