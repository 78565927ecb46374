//! Just enough of the PostgreSQL wire protocol to refuse a connection politely.
//!
//! A PostgreSQL client opens with an untyped message (`Int32 length`, `Int32 code`, body).
//! It may first ask for SSL or GSS encryption, which we decline with `'N'`; then it sends its
//! startup message, which we answer with a FATAL `ErrorResponse` and close. Everything the
//! client sends is bounded in size and in time: this code faces arbitrary sockets.

use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

/// `SSLRequest` code (1234 << 16 | 5679).
const SSL_REQUEST: i32 = 80_877_103;
/// `GSSENCRequest` code (1234 << 16 | 5680).
const GSSENC_REQUEST: i32 = 80_877_104;
/// `CancelRequest` code (1234 << 16 | 5678).
const CANCEL_REQUEST: i32 = 80_877_102;

/// Largest opening message we accept (PostgreSQL itself allows 10 000 bytes).
const MAX_STARTUP_LEN: usize = 10 * 1024;
/// How many encryption requests (`SSLRequest`, `GSSENCRequest`) we decline before giving up;
/// libpq sends at most one of each.
const MAX_NEGOTIATIONS: usize = 2;
/// Longest message text we put in an `ErrorResponse`.
const MAX_MESSAGE_LEN: usize = 2048;
/// After answering, how long we wait for the client to close first, so that unread input on
/// our side cannot turn our close into a reset that destroys the error before it is read.
const LINGER: Duration = Duration::from_secs(1);

/// SQLSTATE `08004`: `sqlserver_rejected_establishment_of_sqlconnection`.
pub(crate) const SQLSTATE_REJECTED: &str = "08004";
/// SQLSTATE `08006`: `connection_failure` (the listener could not reach its target).
pub(crate) const SQLSTATE_CONNECTION_FAILURE: &str = "08006";

/// What the client's opening exchange turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// A startup message (any protocol version): the client waits for an answer.
    Startup,
    /// A cancel request: the protocol has no answer for it; just close.
    Cancel,
}

/// Why the opening exchange failed.
#[derive(Debug)]
pub(crate) enum OpeningError {
    /// The client was too slow.
    TimedOut,
    /// The client sent something that is not a PostgreSQL opening message.
    Invalid(&'static str),
    /// The socket failed or closed.
    Io(io::Error),
}

impl std::fmt::Display for OpeningError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpeningError::TimedOut => f.write_str("client too slow"),
            OpeningError::Invalid(why) => write!(f, "invalid opening message: {why}"),
            OpeningError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Read the client's opening messages until its startup (or cancel) message, declining
/// any encryption request with `'N'`. The whole exchange must finish by `deadline`.
pub(crate) async fn read_opening<S>(
    stream: &mut S,
    deadline: Instant,
) -> Result<Opening, OpeningError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut negotiations = 0;
    loop {
        let mut header = [0u8; 8];
        read_exact_by(stream, &mut header, deadline).await?;
        let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
        let len = i32::from_be_bytes([l0, l1, l2, l3]);
        let code = i32::from_be_bytes([c0, c1, c2, c3]);
        let len = usize::try_from(len).map_err(|_| OpeningError::Invalid("negative length"))?;
        if !(8..=MAX_STARTUP_LEN).contains(&len) {
            return Err(OpeningError::Invalid("length out of range"));
        }
        // Discard the body (startup parameters, cancel key); we have no use for it.
        let mut body = vec![0u8; len - 8];
        read_exact_by(stream, &mut body, deadline).await?;
        match code {
            SSL_REQUEST | GSSENC_REQUEST => {
                if len != 8 {
                    return Err(OpeningError::Invalid("encryption request with a body"));
                }
                negotiations += 1;
                if negotiations > MAX_NEGOTIATIONS {
                    return Err(OpeningError::Invalid("too many encryption requests"));
                }
                write_all_by(stream, b"N", deadline).await?;
            }
            CANCEL_REQUEST => return Ok(Opening::Cancel),
            _ => return Ok(Opening::Startup),
        }
    }
}

/// Encode a FATAL `ErrorResponse` with the given SQLSTATE and message.
pub(crate) fn error_response(sqlstate: &str, message: &str) -> Vec<u8> {
    let message = truncate(message, MAX_MESSAGE_LEN);
    let mut body = Vec::with_capacity(message.len() + 32);
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', sqlstate),
        (b'M', message),
    ] {
        body.push(tag);
        // Fields are NUL-terminated C strings: an interior NUL would end the field early.
        body.extend(value.bytes().filter(|b| *b != 0));
        body.push(0);
    }
    body.push(0);
    // The message is truncated above, so the length always fits.
    let len = u32::try_from(body.len() + 4).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(b'E');
    out.extend(len.to_be_bytes());
    out.extend(body);
    out
}

/// Refuse a PostgreSQL client: complete its opening exchange, send a FATAL `ErrorResponse`
/// and close. Best effort and bounded by `deadline` (plus a short linger); never fails.
pub(crate) async fn refuse<S>(mut stream: S, sqlstate: &str, message: &str, deadline: Instant)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match read_opening(&mut stream, deadline).await {
        Ok(Opening::Startup) => {}
        Ok(Opening::Cancel) => return,
        Err(OpeningError::Invalid(why)) => {
            // Not a PostgreSQL client, or a broken one; telling it why costs nothing.
            tracing::debug!(why, "refusing a connection with an invalid opening message");
        }
        Err(e) => {
            tracing::debug!(error = %e, "client went away before it could be refused");
            return;
        }
    }
    let response = error_response(sqlstate, message);
    if write_all_by(&mut stream, &response, deadline)
        .await
        .is_err()
    {
        return;
    }
    // Half-close, then let the client close first (bounded) so it reads the error.
    let linger_until = Instant::now() + LINGER;
    if timeout_at(linger_until, stream.shutdown()).await.is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    let mut drained = 0usize;
    while drained < 64 * 1024 {
        match timeout_at(linger_until, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

async fn read_exact_by<S>(
    stream: &mut S,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<(), OpeningError>
where
    S: AsyncRead + Unpin,
{
    match timeout_at(deadline, stream.read_exact(buf)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(OpeningError::Io(e)),
        Err(_) => Err(OpeningError::TimedOut),
    }
}

async fn write_all_by<S>(stream: &mut S, buf: &[u8], deadline: Instant) -> Result<(), OpeningError>
where
    S: AsyncWrite + Unpin,
{
    match timeout_at(deadline, stream.write_all(buf)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(OpeningError::Io(e)),
        Err(_) => Err(OpeningError::TimedOut),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn startup_message() -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(196_608i32.to_be_bytes()); // protocol 3.0
        body.extend(b"user\0x\0database\0y\0\0");
        let mut out = Vec::new();
        out.extend((i32::try_from(body.len() + 4).expect("length fits")).to_be_bytes());
        out.extend(body);
        out
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn error_response_layout() {
        let bytes = error_response("08004", "no\0pe");
        assert_eq!(bytes[0], b'E');
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(len, bytes.len() - 1);
        assert_eq!(&bytes[5..], b"SFATAL\0VFATAL\0C08004\0Mnope\0\0");
    }

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(MAX_MESSAGE_LEN);
        let bytes = error_response("08004", &long);
        assert!(bytes.len() < MAX_MESSAGE_LEN + 64);
        let text = String::from_utf8(bytes[5..].to_vec());
        assert!(text.is_ok());
    }

    #[tokio::test]
    async fn declines_ssl_then_reads_startup() {
        let (mut client, mut server) = duplex(64 * 1024);
        let mut ssl = Vec::new();
        ssl.extend(8i32.to_be_bytes());
        ssl.extend(SSL_REQUEST.to_be_bytes());
        client.write_all(&ssl).await.expect("write");
        client.write_all(&startup_message()).await.expect("write");
        let opening = read_opening(&mut server, deadline())
            .await
            .expect("opening");
        assert_eq!(opening, Opening::Startup);
        let mut answer = [0u8; 1];
        client.read_exact(&mut answer).await.expect("read");
        assert_eq!(&answer, b"N");
    }

    #[tokio::test]
    async fn rejects_oversized_and_undersized_lengths() {
        for len in [0i32, 7, -1, 1_000_000] {
            let (mut client, mut server) = duplex(1024);
            let mut msg = Vec::new();
            msg.extend(len.to_be_bytes());
            msg.extend(196_608i32.to_be_bytes());
            client.write_all(&msg).await.expect("write");
            let r = read_opening(&mut server, deadline()).await;
            assert!(
                matches!(r, Err(OpeningError::Invalid(_))),
                "len {len}: {r:?}"
            );
        }
    }

    #[tokio::test]
    async fn endless_ssl_requests_are_cut_off() {
        let (mut client, mut server) = duplex(1024);
        let mut ssl = Vec::new();
        for _ in 0..5 {
            ssl.extend(8i32.to_be_bytes());
            ssl.extend(SSL_REQUEST.to_be_bytes());
        }
        client.write_all(&ssl).await.expect("write");
        let r = read_opening(&mut server, deadline()).await;
        assert!(matches!(r, Err(OpeningError::Invalid(_))), "{r:?}");
    }

    #[tokio::test]
    async fn silent_client_times_out() {
        let (_client, mut server) = duplex(1024);
        let r = read_opening(&mut server, Instant::now() + Duration::from_millis(50)).await;
        assert!(matches!(r, Err(OpeningError::TimedOut)), "{r:?}");
    }

    #[tokio::test]
    async fn cancel_request_is_recognised() {
        let (mut client, mut server) = duplex(1024);
        let mut msg = Vec::new();
        msg.extend(16i32.to_be_bytes());
        msg.extend(CANCEL_REQUEST.to_be_bytes());
        msg.extend([0u8; 8]);
        client.write_all(&msg).await.expect("write");
        assert_eq!(
            read_opening(&mut server, deadline())
                .await
                .expect("opening"),
            Opening::Cancel
        );
    }
}
