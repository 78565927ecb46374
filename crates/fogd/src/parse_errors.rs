//! The ARM error envelope for requests hyper cannot parse.
//!
//! When an HTTP/1.1 request line or header cannot be parsed (a malformed method, target or
//! version, a header block larger than the parse buffer, a target longer than hyper
//! accepts), hyper answers by itself, before any router or middleware sees a request: a
//! bare `400`, `414` or `431` with `content-length: 0`, then closes the connection. Clients
//! of an ARM endpoint expect `{"error":{"code","message"}}` on every error, so
//! [`EnvelopeAcceptor`] wraps each accepted (decrypted) stream in an [`EnvelopeStream`]
//! that recognises exactly that automatic response as hyper writes it and sends the same
//! status with the envelope instead.
//!
//! fog-api never answers these statuses with an empty body (every error it makes carries
//! the envelope), so an empty-bodied 400/414/431 head can only be hyper's. HTTP/2 is not
//! concerned: its parse errors are stream or connection resets, never an HTTP/1.1 head.

use fog_model::ArmError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An acceptor that wraps the streams of an inner acceptor (fogd's TLS acceptor) in
/// [`EnvelopeStream`]s.
#[derive(Clone)]
pub struct EnvelopeAcceptor<A> {
    inner: A,
}

impl<A> EnvelopeAcceptor<A> {
    pub fn new(inner: A) -> Self {
        EnvelopeAcceptor { inner }
    }
}

impl<A, I, S> axum_server::accept::Accept<I, S> for EnvelopeAcceptor<A>
where
    A: axum_server::accept::Accept<I, S>,
    A::Future: Send + 'static,
{
    type Stream = EnvelopeStream<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepted = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            Ok((EnvelopeStream::new(stream), service))
        })
    }
}

/// A stream that replaces hyper's automatic, empty-bodied error responses with the ARM
/// error envelope. Everything else passes through unchanged.
pub struct EnvelopeStream<S> {
    inner: S,
    /// A replacement being written: its bytes, how many are written, and how many bytes of
    /// hyper's buffer to report as written once it is done.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<S> EnvelopeStream<S> {
    pub fn new(inner: S) -> Self {
        EnvelopeStream {
            inner,
            pending: None,
        }
    }
}

/// The envelope response standing for `head`, if `head` is exactly one of hyper's automatic
/// parse-error responses: a whole `HTTP/1.1 400|414|431` head with `content-length: 0`.
pub fn replacement_for(head: &[u8]) -> Option<Vec<u8>> {
    // Every write of every response passes here: reject anything else on its first bytes,
    // before looking at the whole buffer.
    const CANDIDATES: [&[u8]; 3] = [b"HTTP/1.1 400 ", b"HTTP/1.1 414 ", b"HTTP/1.1 431 "];
    if head.len() > 512 || !CANDIDATES.iter().any(|c| head.starts_with(c)) {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ")?;
    let header_block = rest.strip_suffix("\r\n\r\n")?;
    // One head, nothing after it.
    if header_block.contains("\r\n\r\n") {
        return None;
    }
    let mut lines = header_block.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.get(..3)?.parse().ok()?;
    let mut empty_body = false;
    let mut date = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            empty_body = value == "0";
        } else if name.eq_ignore_ascii_case("date") {
            date = Some(value);
        }
    }
    if !empty_body {
        return None;
    }
    let error = match status {
        400 => ArmError::malformed_request("the request line or a header is malformed"),
        414 => ArmError::request_uri_too_long(),
        431 => ArmError::new(
            431,
            "RequestHeaderFieldsTooLarge",
            "The request line and headers are larger than the server accepts.",
        ),
        _ => return None,
    };
    let body = error.envelope().to_string();
    let mut out = format!(
        "HTTP/1.1 {status_line}\r\ncontent-type: application/json; charset=utf-8\r\n\
         content-length: {}\r\nx-ms-failure-cause: gateway\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(date) = date {
        out.push_str(&format!("date: {date}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<S: AsyncRead + Unpin> AsyncRead for EnvelopeStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for EnvelopeStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            match replacement_for(buf) {
                Some(replacement) => this.pending = Some((replacement, 0, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        // Writing a replacement: hyper repeats the same buffer until it is reported written.
        while let Some((bytes, written, report)) = this.pending.as_mut() {
            if *written == bytes.len() {
                let report = *report;
                this.pending = None;
                return Poll::Ready(Ok(report));
            }
            match Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => {
                    this.pending = None;
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => {
                    this.pending = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(0))
    }

    /// Not vectored, so that hyper writes each head as one buffer ([`replacement_for`]
    /// must see it whole).
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::replacement_for;

    #[test]
    fn only_hypers_empty_error_heads_are_replaced() {
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(replacement_for(hyper_400).expect("replaced")).expect("utf8");
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(
            out.contains("date: Mon, 30 Nov 2026 00:00:00 GMT\r\n"),
            "{out}"
        );
        let (head, body) = out.split_once("\r\n\r\n").expect("head");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{out}"
        );
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["error"]["code"], "BadRequest");

        let hyper_431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(
            String::from_utf8(replacement_for(hyper_431).expect("replaced"))
                .expect("utf8")
                .contains("RequestHeaderFieldsTooLarge")
        );

        // fog-api's own responses, other statuses and partial heads pass through.
        for passes in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 90\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{\"x\":1}",
            b"{\"error\":{}}",
        ] {
            assert!(replacement_for(passes).is_none(), "{passes:?}");
        }
    }
}
