//! The frontend's listener. A viewer stream (`GET /v1/videos/{id}/events`) is served straight
//! on its socket; every other request goes to the axum router over hyper.
//!
//! Why not everything through hyper: a viewer connection lives for hours and carries nothing
//! but writes. Under hyper each one keeps a connection task with its read and write buffers
//! and a streaming body (about 24 KiB of memory per idle viewer, measured with
//! `scripts/bench/idle-10k.sh`), and every write of a chunk goes through the body and the
//! connection's buffers. Here a viewer costs its socket, its `ViewerStream` and one task, and
//! each wake-up writes everything queued for it in one vectored write.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::{Buf, Bytes};
use fanfare_telemetry::Limit;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits::{
    ApiActivity, ClientAddr, ConnectionLimiter, ConnectionRefused, ConnectionSlot, Watch,
    MIN_HEAD_BYTES,
};
use crate::problem::ApiError;
use crate::stream::{StreamParts, StreamRoute};
use crate::Shared;

/// How long shutdown waits for API connections to finish their request.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEADERS: usize = 64;
/// Longest problem body written on a raw socket.
const MAX_PROBLEM_BODY: usize = 4 * 1024;
/// Refused connections being answered at once; beyond it a refused connection is closed
/// without an answer, so a flood of refusals holds few sockets.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refused connection is answered and drained before it is closed.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Most bytes read (and dropped) from a refused connection before closing it: closing with
/// unread bytes resets the connection, and the client may lose the answer.
const MAX_LINGER_BYTES: usize = 64 * 1024;

/// Accepts until `shutdown`, then waits (bounded) for open API requests to finish. Viewer
/// streams end on `shutdown` by themselves.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let connections = TaskTracker::new();
    let limiter = Arc::new(ConnectionLimiter::new(&shared.settings.limits));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors or a connection reset before accept: not fatal.
                tracing::debug!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let slot = match limiter.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                let error = match refused {
                    ConnectionRefused::Frontend => ApiError::FrontendFull,
                    ConnectionRefused::Address => ApiError::TooManyConnections,
                };
                if let Some(limit) = error.limit() {
                    shared.metrics.limited(limit);
                }
                // No permit: the socket just closes.
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    connections.spawn(async move {
                        let _permit = permit;
                        refuse(stream, error).await;
                    });
                }
                continue;
            }
        };
        connections.spawn(connection(
            stream,
            peer,
            slot,
            router.clone(),
            shared.clone(),
            shutdown.clone(),
        ));
    }
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
        .await
        .is_err()
    {
        tracing::debug!("connections still open after {DRAIN_TIMEOUT:?}; dropping them");
    }
    Ok(())
}

/// A viewer stream request as read off the socket. Holds a token (header, query or cookie)
/// for a private video: not `Debug`, and never logged.
struct RawStream {
    /// The percent-decoded video id of `/v1/videos/{id}/events`; `None` for `/v1/events`.
    video: Option<String>,
    query: Option<String>,
    last_event_id: Option<Vec<u8>>,
    accept: Option<Vec<u8>>,
    authorization: Option<Vec<u8>>,
    cookie: Option<Vec<u8>>,
}

impl RawStream {
    fn parts(&self) -> StreamParts<'_> {
        StreamParts {
            route: match &self.video {
                Some(video) => StreamRoute::Video(video),
                None => StreamRoute::Videos,
            },
            query: self.query.as_deref(),
            accept: self.accept.as_deref(),
            last_event_id: self.last_event_id.as_deref(),
            authorization: self.authorization.as_deref(),
            cookie: self.cookie.as_deref(),
        }
    }
}

/// Serves one connection, holding its `slot` until it closes.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
    router: Router,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let _slot = slot;
    let limits = &shared.settings.limits;
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(
        limits.header_read_timeout,
        read_head(&mut stream, &mut head, limits.max_head_bytes),
    )
    .await;
    let head_len = match read {
        Ok(Ok(Head::Complete(head_len))) => head_len,
        Ok(Ok(Head::TooLarge)) => {
            let error = ApiError::HeaderTooLarge {
                limit: limits.max_head_bytes,
            };
            shared.metrics.limited(Limit::HeaderSize);
            drop(head);
            // Boxed like the branches below: inline, the refusal's future would size every
            // connection's task for a viewer's whole life (4.6 KiB instead of a few hundred
            // bytes).
            Box::pin(refuse(stream, error)).await;
            return;
        }
        Ok(Err(_)) => return,
        Err(_) => {
            shared.metrics.limited(Limit::HeaderTimeout);
            return;
        }
    };
    // Each branch is boxed, so that a viewer's task holds only what a viewer needs (an
    // unboxed hyper connection would size every connection's task).
    if let Some(request) = stream_request(&head[..head_len]) {
        drop(head);
        Box::pin(serve_viewer(stream, request, shared)).await;
        return;
    }
    Box::pin(serve_api(stream, peer, head, router, shared, shutdown)).await;
}

/// Answers a refused connection with `error`'s problem and closes it, after reading what the
/// client sent meanwhile (bounded in time and bytes).
async fn refuse(mut stream: TcpStream, error: ApiError) {
    let answered = async {
        write_problem(&mut stream, error).await;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < MAX_LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(read) => drained += read,
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, answered).await;
}

/// Everything that is not a viewer stream, this request and any that follow on the
/// connection, is hyper's.
///
/// The connection is closed once it has been without a request for `limits.idle_timeout`, or
/// when a request head, once started, takes longer than `limits.header_read_timeout`. Both are
/// watched here rather than with hyper's `header_read_timeout`: hyper starts that timer as soon
/// as a keep-alive connection goes idle, so it would close idle connections after the
/// header-read timeout and leave no room for a longer idle timeout.
async fn serve_api(
    stream: TcpStream,
    peer: SocketAddr,
    head: Vec<u8>,
    router: Router,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let limits = &shared.settings.limits;
    let activity = Arc::new(ApiActivity::new());
    let io = TokioIo::new(Prefixed {
        prefix: Bytes::from(head),
        stream,
        activity: activity.clone(),
    });
    let client = ClientAddr(peer.ip());
    let service_activity = activity.clone();
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            use tower::Service;
            request.extensions_mut().insert(client);
            service_activity.request_started();
            let activity = service_activity.clone();
            // A router is always ready; each request gets its own clone.
            let answer = router.clone().call(request);
            async move {
                let response = answer.await;
                activity.request_finished();
                response
            }
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(limits.max_head_bytes.max(MIN_HEAD_BYTES))
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let idle_timeout = limits.idle_timeout;
    let header_timeout = limits.header_read_timeout;
    let mut deadline = Instant::now() + idle_timeout.min(header_timeout);
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if served.is_err_and(|error| error.is_parse_too_large()) {
                    // hyper answered 431 (without a problem body) to a keep-alive request.
                    shared.metrics.limited(Limit::HeaderSize);
                }
                return;
            }
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
                return;
            }
            _ = tokio::time::sleep_until(deadline) => {
                match activity.watch(Instant::now(), idle_timeout, header_timeout) {
                    Watch::Until(next) => deadline = next,
                    Watch::Idle => {
                        shared.metrics.limited(Limit::IdleTimeout);
                        return;
                    }
                    Watch::HeaderTimeout => {
                        shared.metrics.limited(Limit::HeaderTimeout);
                        return;
                    }
                }
            }
        }
    }
}

/// How a request head read ended.
enum Head {
    /// The head is this many bytes long (bytes after it, if any, stay in the buffer).
    Complete(usize),
    /// No end within the limit.
    TooLarge,
}

/// Reads until the end of the request head, at most `max` bytes of it.
async fn read_head(stream: &mut TcpStream, head: &mut Vec<u8>, max: usize) -> io::Result<Head> {
    let mut scanned = 0;
    loop {
        if let Some(end) = find_head_end(head, scanned) {
            if end > max {
                return Ok(Head::TooLarge);
            }
            return Ok(Head::Complete(end));
        }
        scanned = head.len().saturating_sub(3);
        if head.len() >= max {
            return Ok(Head::TooLarge);
        }
        if head.capacity() == head.len() {
            head.reserve(head.len().max(1024));
        }
        let read = stream.read_buf(head).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

fn find_head_end(head: &[u8], from: usize) -> Option<usize> {
    head.get(from..)?
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| from + at + 4)
}

/// The request, if it is a viewer stream: `GET /v1/videos/{id}/events[?query]` or
/// `GET /v1/events[?query]`, with no body. Anything unusual (another method or path, a body, a
/// malformed head) goes to hyper.
fn stream_request(head: &[u8]) -> Option<RawStream> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(_) = request.parse(head).ok()? else {
        return None;
    };
    if request.method? != "GET" || request.version? != 1 {
        return None;
    }
    let (path, query) = match request.path?.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (request.path?, None),
    };
    let video = if path == "/v1/events" {
        None
    } else {
        let video = path.strip_prefix("/v1/videos/")?.strip_suffix("/events")?;
        if video.contains('/') {
            return None;
        }
        Some(percent_decode(video)?)
    };
    let mut raw = RawStream {
        video,
        query: query.map(str::to_owned),
        last_event_id: None,
        accept: None,
        authorization: None,
        cookie: None,
    };
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            return None;
        }
        if name.eq_ignore_ascii_case("last-event-id") {
            raw.last_event_id = Some(header.value.to_vec());
        } else if name.eq_ignore_ascii_case("accept") {
            raw.accept = Some(header.value.to_vec());
        } else if name.eq_ignore_ascii_case("authorization") {
            raw.authorization = Some(header.value.to_vec());
        } else if name.eq_ignore_ascii_case("cookie") {
            raw.cookie = Some(header.value.to_vec());
        }
    }
    Some(raw)
}

fn percent_decode(raw: &str) -> Option<String> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

/// Opens the viewer's stream and writes it until the viewer leaves or the stream ends.
async fn serve_viewer(mut stream: TcpStream, request: RawStream, shared: Arc<Shared>) {
    let checked = crate::stream::check(
        &request.parts(),
        &shared.auth,
        shared.settings.limits.max_videos_per_connection,
    );
    // The token is checked; drop it (and the rest of the request) before streaming for hours.
    drop(request);
    // Boxed: opening (history reads, replay) is a large future the write loop does not need.
    let opened = match checked {
        Ok(checked) => Box::pin(crate::viewer::open(&shared, checked)).await,
        Err(error) => Err(error),
    };
    let viewer = match opened {
        Ok(viewer) => viewer,
        Err(error) => {
            if let Some(limit) = error.limit() {
                shared.metrics.limited(limit);
            }
            // Boxed: a refusal's future must not size every viewer's task.
            Box::pin(write_problem(&mut stream, error)).await;
            return;
        }
    };
    let bytes = shared.settings.viewer_send_buffer;
    if bytes > 0 {
        // A fixed socket send buffer bounds the kernel memory a viewer that stops reading can
        // hold (autotuning lets it grow to megabytes).
        if let Err(error) = socket2::SockRef::from(&stream).set_send_buffer_size(bytes) {
            tracing::debug!(%error, "cannot set a viewer's send buffer");
        }
    }
    let crate::viewer::Viewer {
        mut connection,
        guard: _guard,
    } = viewer;
    let mut head = Some(Bytes::from_static(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
          x-accel-buffering: no\r\ntransfer-encoding: chunked\r\n\r\n",
    ));
    let mut probe = [0u8; 64];
    loop {
        let chunk = tokio::select! {
            biased;
            chunk = connection.next_chunk() => chunk,
            read = stream.read(&mut probe) => match read {
                // The viewer went away (or sent something it should not have).
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            },
        };
        let Some(mut chunk) = chunk else {
            // The stream ended (shutdown, or the viewer fell too far behind): close cleanly.
            let _ = stream.write_all(b"0\r\n\r\n").await;
            break;
        };
        if chunk.is_empty() {
            continue;
        }
        let mut size = Vec::with_capacity(20);
        chunk_size_line(&mut size, chunk.len());
        chunk.push_front(Bytes::from(size));
        if let Some(head) = head.take() {
            chunk.push_front(head);
        }
        chunk.push(Bytes::from_static(b"\r\n"));
        if write_watching_lag(&mut stream, &mut chunk, &mut connection)
            .await
            .is_err()
        {
            break;
        }
    }
    let lagged = connection.lagged();
    if lagged > 0 {
        shared.metrics.viewer_lagged(lagged);
    }
    let _ = stream.shutdown().await;
}

/// How often a viewer whose write is stuck (it stopped reading, its socket buffer is full) is
/// checked for having fallen more than its buffer behind.
const STUCK_CHECK: Duration = Duration::from_millis(250);

/// Writes `buf`; if the write is stuck, cuts the viewer off once more comments are queued for
/// it than its buffer holds. A viewer that stops reading is never waited for by anyone else
/// (each writes on its own), and this bounds how long it holds its connection.
async fn write_watching_lag<B: Buf>(
    stream: &mut TcpStream,
    buf: &mut B,
    writer: &mut fanfare_engine::Connection,
) -> io::Result<()> {
    // Most writes go straight into the socket buffer: no timer, no future for those.
    while buf.has_remaining() {
        let mut slices = [io::IoSlice::new(&[]); MAX_IO_SLICES];
        let count = buf.chunks_vectored(&mut slices);
        match stream.try_write_vectored(&slices[..count]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => buf.advance(written),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) => return Err(error),
        }
    }
    while buf.has_remaining() {
        // `write_buf` keeps its progress in `buf`, so a timed-out attempt loses nothing. Boxed:
        // a write that waits is rare, and its slices must not size every viewer's task.
        match tokio::time::timeout(STUCK_CHECK, Box::pin(write_buf(stream, buf))).await {
            Ok(written) => return written,
            Err(_) if writer.is_lagging() => {
                writer.cut_off_stuck();
                return Err(io::ErrorKind::TimedOut.into());
            }
            Err(_) => continue,
        }
    }
    Ok(())
}

/// Appends the chunk-size line of a `len`-byte chunk to `out`.
fn chunk_size_line(out: &mut Vec<u8>, len: usize) {
    use std::io::Write;
    let _ = write!(out, "{len:x}\r\n");
}

/// Slices handed to one vectored write (the kernel takes up to 1024).
const MAX_IO_SLICES: usize = 64;

/// Writes all of `buf`, vectored where the socket takes it.
async fn write_buf<B: Buf>(stream: &mut TcpStream, buf: &mut B) -> io::Result<()> {
    while buf.has_remaining() {
        let mut slices = [io::IoSlice::new(&[]); MAX_IO_SLICES];
        let count = buf.chunks_vectored(&mut slices);
        let written = stream.write_vectored(&slices[..count]).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf.advance(written);
    }
    Ok(())
}

/// Answers a refused viewer request with its problem body and closes.
async fn write_problem(stream: &mut TcpStream, error: ApiError) {
    use axum::http::header::{CONNECTION, CONTENT_LENGTH};
    use axum::response::IntoResponse;
    let response = error.into_response();
    let status = response.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    // The problem's own headers (content type, Retry-After, WWW-Authenticate) as the router
    // would send them.
    for (name, value) in response.headers() {
        if name == CONTENT_LENGTH || name == CONNECTION {
            continue;
        }
        if let Ok(value) = value.to_str() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    let body = axum::body::to_bytes(response.into_body(), MAX_PROBLEM_BODY)
        .await
        .unwrap_or_default();
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

/// A socket whose first reads return bytes already read from it; every read that brings
/// bytes is reported to `activity`.
struct Prefixed {
    prefix: Bytes,
    stream: TcpStream,
    activity: Arc<ApiActivity>,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let take = self.prefix.len().min(buf.remaining());
            let taken = self.prefix.split_to(take);
            buf.put_slice(&taken);
            self.activity.bytes_read();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        read
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_requests_are_recognised_and_everything_else_is_not() {
        let head = b"GET /v1/videos/talk-1/events?last_event_id=dc1%3A3&access_token=t.o.k HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nLast-Event-ID: dc1:4\r\nAuthorization: Bearer a.b.c\r\nCookie: fanfare_token=c.o.k\r\n\r\n";
        let request = stream_request(head).expect("a viewer request");
        assert_eq!(request.video.as_deref(), Some("talk-1"));
        assert_eq!(
            request.query.as_deref(),
            Some("last_event_id=dc1%3A3&access_token=t.o.k")
        );
        assert_eq!(request.authorization.as_deref(), Some(&b"Bearer a.b.c"[..]));
        assert_eq!(request.cookie.as_deref(), Some(&b"fanfare_token=c.o.k"[..]));
        assert_eq!(request.last_event_id.as_deref(), Some(&b"dc1:4"[..]));
        assert_eq!(request.accept.as_deref(), Some(&b"text/event-stream"[..]));
        let multi = stream_request(b"GET /v1/events?videos=a,b HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(multi.video, None);
        assert_eq!(multi.query.as_deref(), Some("videos=a,b"));

        for other in [
            &b"POST /v1/videos/v/events HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /v1/videos/v/likes HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /v1/videos/a/b/events HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /v1/videos/v/events HTTP/1.0\r\n\r\n",
            b"GET /v1/videos/v/events HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /healthz HTTP/1.1\r\n\r\n",
            b"GET /v1/events/x HTTP/1.1\r\n\r\n",
            b"POST /v1/events HTTP/1.1\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(
                stream_request(other).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn chunk_size_lines_are_hex_with_crlf() {
        let mut line = Vec::new();
        chunk_size_line(&mut line, 0x1a2);
        assert_eq!(line, b"1a2\r\n");
        line.clear();
        chunk_size_line(&mut line, usize::MAX);
        assert_eq!(line.len(), 18);
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest", 0), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n", 0), None);
        assert_eq!(find_head_end(b"ab\r\n\r\n", 2), Some(6));
    }
}

/// A connection's task lives as long as its viewer, so its size is paid once per idle viewer
/// (the target is at most 4 KiB per connection, everything included). An inline refusal
/// future once made it 4.6 KiB; these bounds catch that kind of growth at compile size, not
/// in a benchmark.
#[cfg(test)]
mod task_size {
    use super::*;

    fn future_size3<A, B, C, F>(_f: impl FnOnce(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn future_size6<A, B, C, D, E, G, F>(_f: impl FnOnce(A, B, C, D, E, G) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_viewer_connection_task_stays_small() {
        let connection = future_size6(connection);
        let viewer = future_size3(serve_viewer);
        let writer = std::mem::size_of::<fanfare_engine::Connection>();
        eprintln!("connection {connection} B, serve_viewer {viewer} B, writer {writer} B");
        assert!(
            connection <= 1024,
            "connection future is {connection} bytes"
        );
        assert!(viewer <= 2048, "serve_viewer future is {viewer} bytes");
        assert!(writer <= 512, "Writer is {writer} bytes");
    }
}
