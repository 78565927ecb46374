//! Attacks on the HTTPS API's connection handling: slow clients (one byte a second) and a
//! flood of half-open connections (TCP connected, nothing sent; TLS handshaken, no
//! request), while a sampler checks that the API keeps answering new clients.

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A TLS client configuration trusting fogd's CA.
pub fn tls_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(c.context("parse ca.pem")?)
            .context("trust ca.pem")?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("resolve {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("no address for {addr}"))
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects and completes a TLS handshake (bounded by `timeout`).
fn tls_connect(
    addr: SocketAddr,
    cfg: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Tls> {
    let tcp = TcpStream::connect_timeout(&addr, timeout).context("connect")?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let name = ServerName::try_from("127.0.0.1").context("server name")?;
    let conn = rustls::ClientConnection::new(cfg.clone(), name.to_owned()).context("TLS")?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).context("TLS handshake")?;
    }
    Ok(s)
}

/// Slow clients: `n` connections (half plain TCP sending the start of a TLS hello, half
/// TLS sending an HTTP request), each writing one byte a second for `secs`. Returns, per
/// client, after how many seconds fogd closed it (`None`: still open at the end) and
/// whether it connected at all.
pub struct SlowClients {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<SlowOutcome>>,
}

#[derive(Debug, Clone, Copy)]
pub struct SlowOutcome {
    pub connected: bool,
    pub closed_after: Option<f64>,
}

impl SlowClients {
    pub fn start(api: &str, cfg: &Arc<rustls::ClientConfig>, n: usize) -> Result<Self> {
        let addr = resolve(api)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for i in 0..n {
            let (stop, cfg) = (stop.clone(), cfg.clone());
            threads.push(std::thread::spawn(move || {
                let start = Instant::now();
                let request = b"GET /subscriptions?api-version=2025-01-01 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer x\r\nX-Slow: ".to_vec();
                // A TLS 1.2 ClientHello record header, then filler.
                let hello = [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
                let closed = |e: bool| SlowOutcome {
                    connected: e,
                    closed_after: Some(start.elapsed().as_secs_f64()),
                };
                let mut k = 0usize;
                if i % 2 == 0 {
                    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
                        return SlowOutcome { connected: false, closed_after: None };
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_millis(1000)));
                    while !stop.load(Ordering::Relaxed) {
                        let b = hello.get(k).copied().unwrap_or(0x41);
                        k += 1;
                        if s.write_all(&[b]).is_err() {
                            return closed(true);
                        }
                        // The read doubles as the one-second pause; EOF means fogd closed.
                        let mut buf = [0u8; 256];
                        match s.read(&mut buf) {
                            Ok(0) => return closed(true),
                            Ok(_) => {}
                            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                            Err(_) => return closed(true),
                        }
                    }
                } else {
                    let Ok(mut s) = tls_connect(addr, &cfg, Duration::from_secs(5)) else {
                        return SlowOutcome { connected: false, closed_after: None };
                    };
                    let _ = s.sock.set_read_timeout(Some(Duration::from_millis(1000)));
                    while !stop.load(Ordering::Relaxed) {
                        let b = request.get(k).copied().unwrap_or(b'a');
                        k += 1;
                        if s.write_all(&[b]).and_then(|_| s.flush()).is_err() {
                            return closed(true);
                        }
                        let mut buf = [0u8; 256];
                        match s.read(&mut buf) {
                            Ok(0) => return closed(true),
                            Ok(_) => {}
                            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                            Err(_) => return closed(true),
                        }
                    }
                }
                SlowOutcome { connected: true, closed_after: None }
            }));
        }
        Ok(SlowClients { stop, threads })
    }

    pub fn stop(self) -> Vec<SlowOutcome> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| {
                t.join().unwrap_or(SlowOutcome {
                    connected: false,
                    closed_after: None,
                })
            })
            .collect()
    }
}

/// Half-open connections held open: plain TCP (nothing sent) and TLS (handshake, no
/// request). Opened by a few threads; kept until dropped.
pub struct Flood {
    pub tcp_open: usize,
    pub tls_open: usize,
    pub refused: usize,
    held: Arc<Mutex<Vec<TcpStream>>>,
    held_tls: Arc<Mutex<Vec<Tls>>>,
}

impl Flood {
    pub fn open(
        api: &str,
        cfg: &Arc<rustls::ClientConfig>,
        tcp: usize,
        tls: usize,
    ) -> Result<Self> {
        let addr = resolve(api)?;
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let held_tls: Arc<Mutex<Vec<Tls>>> = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let threads = 8;
        let mut hs = Vec::new();
        for t in 0..threads {
            let (held, held_tls, cfg, refused) =
                (held.clone(), held_tls.clone(), cfg.clone(), refused.clone());
            hs.push(std::thread::spawn(move || {
                for i in (t..tcp + tls).step_by(threads) {
                    if i < tcp {
                        match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                            Ok(s) => {
                                if let Ok(mut h) = held.lock() {
                                    h.push(s);
                                }
                            }
                            Err(_) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    } else {
                        match tls_connect(addr, &cfg, Duration::from_secs(3)) {
                            Ok(s) => {
                                if let Ok(mut h) = held_tls.lock() {
                                    h.push(s);
                                }
                            }
                            Err(_) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }));
        }
        for h in hs {
            let _ = h.join();
        }
        let count = |v: &Arc<Mutex<Vec<TcpStream>>>| v.lock().map(|h| h.len()).unwrap_or(0);
        Ok(Flood {
            tcp_open: count(&held),
            tls_open: held_tls.lock().map(|h| h.len()).unwrap_or(0),
            refused: refused.load(Ordering::Relaxed),
            held,
            held_tls,
        })
    }

    /// How many of the held connections fogd has closed by now (a non-blocking peek sees
    /// end of file or an error): (plain TCP, TLS).
    pub fn closed_by_server(&self) -> (usize, usize) {
        let gone = |s: &TcpStream| {
            if s.set_nonblocking(true).is_err() {
                return true;
            }
            let mut b = [0u8; 1];
            let r = match s.peek(&mut b) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            };
            let _ = s.set_nonblocking(false);
            r
        };
        let tcp = self
            .held
            .lock()
            .map(|h| h.iter().filter(|s| gone(s)).count())
            .unwrap_or(0);
        let tls = self
            .held_tls
            .lock()
            .map(|h| h.iter().filter(|s| gone(&s.sock)).count())
            .unwrap_or(0);
        (tcp, tls)
    }

    pub fn close(self) {
        if let Ok(mut h) = self.held.lock() {
            h.clear();
        }
        if let Ok(mut h) = self.held_tls.lock() {
            h.clear();
        }
    }
}
