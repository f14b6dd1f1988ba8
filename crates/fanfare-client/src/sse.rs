//! Server-Sent Events client: a viewer, as a browser's `EventSource` would be.
//!
//! [`SseParser`] is a pure, incremental parser following the WHATWG HTML
//! "server-sent events" interpretation rules (the ones `EventSource` uses):
//!
//! * the stream is UTF-8 (invalid sequences become U+FFFD) and one leading
//!   byte order mark is skipped;
//! * lines end with CRLF, LF or CR, and the bytes may be split anywhere
//!   between [`SseParser::feed`] calls, even inside a CRLF pair or a UTF-8
//!   sequence;
//! * a line starting with `:` is a comment; comments are reported as
//!   [`SseItem::Comment`] (text after the colon, one leading space removed) so
//!   tests can observe keep-alives;
//! * `field:value` (one space after the colon removed) or a bare `field` line
//!   sets a field: `event` sets the type, each `data` line appends a line to
//!   the data, `id` sets the last event id unless the value contains NUL,
//!   `retry` is taken only when it is all ASCII digits, others are ignored;
//! * a blank line dispatches: the last event id takes the value of the id
//!   buffer (which persists across events), and if there is data an
//!   [`SseEvent`] is produced with the trailing newline of the data removed;
//! * an event that is not terminated by a blank line when the stream ends is
//!   discarded (nothing is emitted until its blank line arrives).
//!
//! `tests/sse_conformance.rs` checks it, on arbitrary byte streams cut anywhere, against a
//! literal transcription of those rules, and checks fanfare's encoder against it.
//!
//! [`SseStream`] is one real `EventSource`-like connection: a hyper HTTP/1.1
//! client connection on its own tokio `TcpStream`, with the connection driver
//! on a spawned task. Dropping the stream aborts that task and so closes the
//! socket, letting the server see the viewer leave. A stream costs one socket
//! and one small task, so tests can hold hundreds of them.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, ACCEPT, CACHE_CONTROL, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::http::{content_type_is, find_header, header_pairs, parse_http_url};

/// Upper bound on [`SseStream::connect`]: TCP connect, request and response head.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a non-200 answer's body is read for the error message.
const ERROR_BODY_WAIT: Duration = Duration::from_secs(1);
/// How much of a non-200 answer's body is kept for the error message.
const ERROR_BODY_BYTES: usize = 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type; `"message"` when the event had no (or an empty) `event` field.
    pub event: String,
    /// The `data` lines joined with `"\n"`.
    pub data: String,
    /// The last event id in effect when the event was dispatched (it persists
    /// across events until an `id` field changes it); `None` when empty.
    pub id: Option<String>,
    /// The reconnection time in milliseconds set by a valid `retry` field
    /// within this event's block, if any.
    pub retry: Option<u64>,
}

/// What the parser reports: events and comment lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A dispatched event.
    Event(SseEvent),
    /// A comment line (`:text`), text after the colon with one leading space removed.
    Comment(String),
}

/// What the parser produces internally: items, plus the last-event-id updates
/// that happen at every blank line (even ones that dispatch no event).
#[derive(Debug)]
enum Parsed {
    Item(SseItem),
    LastEventId(String),
}

/// Incremental, allocation-light SSE parser; see the module docs for the rules.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, unterminated line.
    line: Vec<u8>,
    /// The previous byte was a CR ending a line: a following LF belongs to it.
    after_cr: bool,
    /// No line has been completed yet (the BOM check applies to the first line).
    first_line_pending: bool,
    data: String,
    event_type: String,
    retry: Option<u64>,
    /// The id buffer: persists across events.
    last_event_id_buffer: String,
    /// The last event id string as of the last blank line.
    last_event_id: String,
    /// The last valid `retry` seen in the whole stream.
    reconnection_time: Option<u64>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self {
            first_line_pending: true,
            ..Self::default()
        }
    }

    /// Consumes the next bytes of the stream, returning every event and
    /// comment they complete, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseItem> {
        let mut items = Vec::new();
        self.feed_with(chunk, |p| {
            if let Parsed::Item(item) = p {
                items.push(item);
            }
        });
        items
    }

    /// The last event id string as of the last blank line; `None` when empty.
    pub fn last_event_id(&self) -> Option<&str> {
        non_empty(&self.last_event_id)
    }

    /// The last valid `retry` value seen anywhere in the stream, in milliseconds.
    pub fn reconnection_time(&self) -> Option<u64> {
        self.reconnection_time
    }

    fn feed_with(&mut self, mut chunk: &[u8], mut sink: impl FnMut(Parsed)) {
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&chunk[..pos]);
            let ended_by_cr = chunk[pos] == b'\r';
            chunk = &chunk[pos + 1..];
            self.end_line(&mut sink);
            if ended_by_cr {
                if chunk.is_empty() {
                    // The LF of a CRLF may arrive with the next chunk.
                    self.after_cr = true;
                } else if let Some(rest) = chunk.strip_prefix(b"\n") {
                    chunk = rest;
                }
            }
        }
        self.line.extend_from_slice(chunk);
    }

    fn end_line(&mut self, sink: &mut impl FnMut(Parsed)) {
        let mut line = std::mem::take(&mut self.line);
        let mut bytes = line.as_slice();
        if self.first_line_pending {
            self.first_line_pending = false;
            bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
        }
        self.process_line(bytes, sink);
        // Keep the allocation for the next line.
        line.clear();
        self.line = line;
    }

    fn process_line(&mut self, line: &[u8], sink: &mut impl FnMut(Parsed)) {
        if line.is_empty() {
            self.dispatch(sink);
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some(("", comment)) => {
                let comment = comment.strip_prefix(' ').unwrap_or(comment);
                sink(Parsed::Item(SseItem::Comment(comment.to_owned())));
                return;
            }
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event_type),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            // An id containing NUL is ignored, as is a non-numeric retry.
            "id" if !value.contains('\0') => value.clone_into(&mut self.last_event_id_buffer),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // All digits; only an overflowing value fails to parse.
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(ms);
                    self.reconnection_time = Some(ms);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, sink: &mut impl FnMut(Parsed)) {
        self.last_event_id.clone_from(&self.last_event_id_buffer);
        sink(Parsed::LastEventId(self.last_event_id.clone()));
        let retry = self.retry.take();
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        let event = match std::mem::take(&mut self.event_type) {
            t if t.is_empty() => "message".to_owned(),
            t => t,
        };
        sink(Parsed::Item(SseItem::Event(SseEvent {
            event,
            data,
            id: non_empty(&self.last_event_id).map(str::to_owned),
            retry,
        })));
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// What can go wrong with an SSE connection.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// The url does not parse as an absolute `http://` URI.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl {
        /// The url as given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A request header name or value is not valid HTTP.
    #[error("invalid request header {name:?}")]
    InvalidHeader {
        /// The offending header name.
        name: String,
    },
    /// The TCP connection could not be established.
    #[error("connecting to {addr} failed: {source}")]
    Connect {
        /// `host:port` that was dialed.
        addr: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed before the response head arrived.
    #[error("http request failed: {0}")]
    Http(#[source] hyper::Error),
    /// The request could not be assembled.
    #[error("invalid request: {0}")]
    Request(#[source] hyper::http::Error),
    /// Connecting and receiving the response head took longer than [`CONNECT_TIMEOUT`].
    #[error("connecting timed out")]
    ConnectTimeout,
    /// The server answered with a status other than 200.
    #[error("unexpected status {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the response body, lossily decoded.
        body: String,
    },
    /// The server answered 200 without a `text/event-stream` content type.
    #[error("unexpected content type {content_type:?}, expected text/event-stream")]
    ContentType {
        /// The content type received (`None` when absent).
        content_type: Option<String>,
    },
    /// Reading the event stream failed.
    #[error("reading the event stream failed: {0}")]
    Body(#[source] hyper::Error),
    /// No event arrived in time.
    #[error("timed out waiting for an event")]
    Timeout,
}

/// One open event stream.
#[derive(Debug)]
pub struct SseStream {
    status: u16,
    headers: Vec<(String, String)>,
    body: Incoming,
    /// Drives the connection; aborted on drop so the socket closes at once.
    /// Declared after `body` so the body is dropped first.
    _conn_task: ConnTask,
    parser: SseParser,
    /// Parsed but not yet returned, in order.
    queue: VecDeque<Parsed>,
    /// How many entries of `queue` are items.
    queued_items: usize,
    last_event_id: String,
    comments_seen: u64,
    eof: bool,
}

impl SseStream {
    /// `GET url` with `Accept: text/event-stream`, `Cache-Control: no-cache`
    /// and the extra `headers` (e.g. `Last-Event-ID`; a header given here
    /// replaces a default of the same name). Errors unless the answer is 200
    /// with a `text/event-stream` content type. Bounded by [`CONNECT_TIMEOUT`].
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<SseStream, SseError> {
        Self::connect_within(CONNECT_TIMEOUT, url, headers).await
    }

    async fn connect_within(
        limit: Duration,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<SseStream, SseError> {
        let (target, request) = build_request(url, headers)?;
        let deadline = Instant::now() + limit;
        let (status, response_headers, body, conn_task) =
            tokio::time::timeout_at(deadline, open(&target, request))
                .await
                .map_err(|_| SseError::ConnectTimeout)??;
        let stream = SseStream {
            status,
            headers: response_headers,
            body,
            _conn_task: conn_task,
            parser: SseParser::new(),
            queue: VecDeque::new(),
            queued_items: 0,
            last_event_id: String::new(),
            comments_seen: 0,
            eof: false,
        };
        if status != 200 {
            let body = stream.read_error_body(deadline).await;
            return Err(SseError::Status { status, body });
        }
        if !content_type_is(&stream.headers, "text/event-stream") {
            let content_type = find_header(&stream.headers, "content-type").map(str::to_owned);
            return Err(SseError::ContentType { content_type });
        }
        Ok(stream)
    }

    /// Reads the start of a non-200 body for an error message, briefly.
    async fn read_error_body(mut self, deadline: Instant) -> String {
        let wait = deadline.min(Instant::now() + ERROR_BODY_WAIT);
        let mut bytes = Vec::new();
        let _ = tokio::time::timeout_at(wait, async {
            while bytes.len() < ERROR_BODY_BYTES {
                match self.body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            bytes.extend_from_slice(&data);
                        }
                    }
                    _ => break,
                }
            }
        })
        .await;
        bytes.truncate(ERROR_BODY_BYTES);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The response status (always 200 for a connected stream).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The response headers: lowercase names, lossily decoded values, in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The next event or comment; `Ok(None)` once the server ended the stream
    /// (a trailing unterminated event is discarded). Cancel-safe: dropping the
    /// future (e.g. on a timeout) loses nothing.
    pub async fn next_item(&mut self) -> Result<Option<SseItem>, SseError> {
        loop {
            if let Some(item) = self.pop_item() {
                return Ok(Some(item));
            }
            if self.eof {
                return Ok(None);
            }
            match self.body.frame().await {
                None => self.eof = true,
                Some(Err(e)) => {
                    self.eof = true;
                    return Err(SseError::Body(e));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let (queue, items) = (&mut self.queue, &mut self.queued_items);
                        self.parser.feed_with(&data, |p| {
                            if matches!(p, Parsed::Item(_)) {
                                *items += 1;
                            }
                            queue.push_back(p);
                        });
                    }
                }
            }
        }
    }

    /// Pops the next queued item, applying the last-event-id updates queued
    /// before it, and also those after it when no other item follows (so an
    /// id-only block is reflected as soon as nothing else is pending).
    fn pop_item(&mut self) -> Option<SseItem> {
        while let Some(parsed) = self.queue.pop_front() {
            match parsed {
                Parsed::LastEventId(id) => self.last_event_id = id,
                Parsed::Item(item) => {
                    self.queued_items = self.queued_items.saturating_sub(1);
                    if self.queued_items == 0 {
                        for parsed in self.queue.drain(..) {
                            if let Parsed::LastEventId(id) = parsed {
                                self.last_event_id = id;
                            }
                        }
                    }
                    if matches!(item, SseItem::Comment(_)) {
                        self.comments_seen += 1;
                    }
                    return Some(item);
                }
            }
        }
        None
    }

    /// The next event, skipping comments, waiting at most `timeout` in all;
    /// `Ok(None)` at end of stream, `Err(SseError::Timeout)` when no event came.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<Option<SseEvent>, SseError> {
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.next_item()).await {
                Err(_) => return Err(SseError::Timeout),
                Ok(Ok(Some(SseItem::Event(event)))) => return Ok(Some(event)),
                Ok(Ok(Some(SseItem::Comment(_)))) => {}
                Ok(Ok(None)) => return Ok(None),
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// Collects events until `done(&events_so_far)` is true (checked before
    /// the first read too) or `deadline` has passed. Returns the events and
    /// whether `done` was reached; the end of the stream or a read error also
    /// stop collection (with `false`). Never errors: the caller asserts.
    pub async fn collect_until(
        &mut self,
        deadline: Duration,
        mut done: impl FnMut(&[SseEvent]) -> bool,
    ) -> (Vec<SseEvent>, bool) {
        let until = Instant::now() + deadline;
        let mut events = Vec::new();
        loop {
            if done(&events) {
                return (events, true);
            }
            let left = until.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Ok(Some(event)) => events.push(event),
                Ok(None) | Err(_) => return (events, false),
            }
        }
    }

    /// The last event id string as of the last item returned (what a
    /// reconnecting client sends as `Last-Event-ID`); `None` when empty.
    pub fn last_event_id(&self) -> Option<&str> {
        non_empty(&self.last_event_id)
    }

    /// How many comment lines (keep-alives) have been returned or skipped so far.
    pub fn comments_seen(&self) -> u64 {
        self.comments_seen
    }

    /// The last valid `retry` value received so far, in milliseconds (may be
    /// ahead of the items returned).
    pub fn reconnection_time(&self) -> Option<u64> {
        self.parser.reconnection_time()
    }
}

fn build_request(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(hyper::Uri, Request<Empty<Bytes>>), SseError> {
    let uri = parse_http_url(url).map_err(|(url, reason)| SseError::InvalidUrl { url, reason })?;
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(HOST, authority)
        .header(ACCEPT, "text/event-stream")
        .header(CACHE_CONTROL, "no-cache")
        .body(Empty::new())
        .map_err(SseError::Request)?;
    let map = request.headers_mut();
    let mut given: Vec<HeaderName> = Vec::new();
    for (name, value) in headers {
        let invalid = || SseError::InvalidHeader {
            name: (*name).to_owned(),
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let value = HeaderValue::from_str(value).map_err(|_| invalid())?;
        if given.contains(&name) {
            map.append(name, value);
        } else {
            // The first occurrence replaces a default of the same name.
            map.insert(name.clone(), value);
            given.push(name);
        }
    }
    Ok((uri, request))
}

/// The connection driver task; aborted (closing the socket) when dropped.
#[derive(Debug)]
struct ConnTask(AbortHandle);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Status, headers and body of the answer, and the task driving the connection.
type Opened = (u16, Vec<(String, String)>, Incoming, ConnTask);

/// Connects to `target`, sends `request` and waits for the response head.
async fn open(target: &hyper::Uri, request: Request<Empty<Bytes>>) -> Result<Opened, SseError> {
    let host = target
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = target.port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|source| SseError::Connect {
            addr: format!("{host}:{port}"),
            source,
        })?;
    // Best effort: small events should not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(SseError::Http)?;
    // Owned from here on, so an error below or dropping this future (on
    // timeout) aborts the driver and closes the socket.
    let conn_task = ConnTask(
        tokio::spawn(async move {
            // Errors surface to the reader as body errors; nothing to do here.
            let _ = conn.await;
        })
        .abort_handle(),
    );
    let response = sender.send_request(request).await.map_err(SseError::Http)?;
    let (parts, body) = response.into_parts();
    Ok((
        parts.status.as_u16(),
        header_pairs(&parts.headers),
        body,
        conn_task,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(event: &str, data: &str, id: Option<&str>, retry: Option<u64>) -> SseItem {
        SseItem::Event(SseEvent {
            event: event.to_owned(),
            data: data.to_owned(),
            id: id.map(str::to_owned),
            retry,
        })
    }

    fn msg(data: &str) -> SseItem {
        ev("message", data, None, None)
    }

    fn comment(text: &str) -> SseItem {
        SseItem::Comment(text.to_owned())
    }

    fn parse(input: &[u8]) -> Vec<SseItem> {
        SseParser::new().feed(input)
    }

    /// Feeds `input` one byte at a time.
    fn parse_bytewise(input: &[u8]) -> Vec<SseItem> {
        let mut p = SseParser::new();
        input.iter().flat_map(|b| p.feed(&[*b])).collect()
    }

    fn parse_both(input: &[u8]) -> Vec<SseItem> {
        let whole = parse(input);
        assert_eq!(
            whole,
            parse_bytewise(input),
            "bytewise differs for {input:?}"
        );
        whole
    }

    // ---- parser rules ----

    #[test]
    fn spec_example_messages() {
        let input = b"data: This is the first message.\n\n\
            data: This is the second message, it\n\
            data: has two lines.\n\n\
            data: This is the third message.\n\n";
        assert_eq!(
            parse_both(input),
            vec![
                msg("This is the first message."),
                msg("This is the second message, it\nhas two lines."),
                msg("This is the third message."),
            ]
        );
    }

    #[test]
    fn event_field_sets_the_type_per_event() {
        let input = b"event: add\ndata: 73857293\n\n\
            event: remove\ndata: 2153\n\n\
            data: plain\n\n\
            event:\ndata: empty type\n\n\
            event\ndata: bare field\n\n";
        assert_eq!(
            parse_both(input),
            vec![
                ev("add", "73857293", None, None),
                ev("remove", "2153", None, None),
                msg("plain"),
                msg("empty type"),
                msg("bare field"),
            ]
        );
    }

    #[test]
    fn one_space_after_the_colon_is_removed() {
        assert_eq!(
            parse_both(b"data:test\n\ndata: test\n\ndata:  two\n\nevent:  x\ndata:y\n\n"),
            vec![
                msg("test"),
                msg("test"),
                msg(" two"),
                ev(" x", "y", None, None)
            ]
        );
    }

    #[test]
    fn data_lines_join_and_empty_data_lines_count() {
        // Spec example: `data` alone appends an empty line.
        let input = b"data\n\ndata\ndata\n\ndata:\n";
        assert_eq!(parse_both(input), vec![msg(""), msg("\n")]);
        assert_eq!(
            parse_both(b"data: a\ndata:\ndata: b\ndata: \n\n"),
            vec![msg("a\n\nb\n")]
        );
        // Colons after the first belong to the value.
        assert_eq!(parse_both(b"data: a:b: c\n\n"), vec![msg("a:b: c")]);
    }

    #[test]
    fn blocks_without_data_dispatch_nothing() {
        assert_eq!(
            parse_both(b"event: x\n\n\n\nretry: 5\n\nfoo: bar\n\n"),
            vec![]
        );
        // The event type does not leak into the next event.
        assert_eq!(parse_both(b"event: x\n\ndata: d\n\n"), vec![msg("d")]);
    }

    #[test]
    fn id_persists_across_events_until_changed() {
        let input = b"id: 1\ndata: a\n\n\
            data: b\n\n\
            id: 2\ndata: c\n\n\
            id\ndata: d\n\n\
            id: 3\n\n\
            data: e\n\n";
        assert_eq!(
            parse_both(input),
            vec![
                ev("message", "a", Some("1"), None),
                ev("message", "b", Some("1"), None),
                ev("message", "c", Some("2"), None),
                // A bare (empty) id resets the last event id.
                ev("message", "d", None, None),
                // An id-only block sets the id for later events.
                ev("message", "e", Some("3"), None),
            ]
        );
    }

    #[test]
    fn ids_containing_nul_are_ignored() {
        let mut p = SseParser::new();
        let items = p.feed(b"id: 7\ndata: a\n\nid: 8\0x\ndata: b\n\n");
        assert_eq!(
            items,
            vec![
                ev("message", "a", Some("7"), None),
                ev("message", "b", Some("7"), None)
            ]
        );
        assert_eq!(p.last_event_id(), Some("7"));
    }

    #[test]
    fn last_event_id_updates_at_the_blank_line() {
        let mut p = SseParser::new();
        assert_eq!(p.last_event_id(), None);
        p.feed(b"id: 5\n");
        // Not yet dispatched.
        assert_eq!(p.last_event_id(), None);
        p.feed(b"\n");
        assert_eq!(p.last_event_id(), Some("5"));
        p.feed(b"id: 6\ndata: x\n");
        assert_eq!(p.last_event_id(), Some("5"));
    }

    #[test]
    fn retry_takes_only_ascii_digits() {
        let mut p = SseParser::new();
        let input = b"retry: 1500\ndata: a\n\n\
            data: b\n\n\
            retry: 12a\ndata: c\n\n\
            retry: \ndata: d\n\n\
            retry: -1\ndata: e\n\n\
            retry:  7\ndata: f\n\n\
            retry: 99999999999999999999999\ndata: g\n\n\
            retry:0\ndata: h\n\n";
        assert_eq!(
            p.feed(input),
            vec![
                ev("message", "a", None, Some(1500)),
                msg("b"),
                msg("c"),
                msg("d"),
                msg("e"),
                msg("f"),
                msg("g"),
                ev("message", "h", None, Some(0)),
            ]
        );
        assert_eq!(p.reconnection_time(), Some(0));
        // A retry-only block still sets the reconnection time.
        p.feed(b"retry: 42\n\n");
        assert_eq!(p.reconnection_time(), Some(42));
        assert_eq!(parse_bytewise(input).len(), 8);
    }

    #[test]
    fn comments_are_reported_and_do_not_disturb_events() {
        assert_eq!(
            parse_both(b":\n\n: keep-alive\n:raw\n:  two\ndata: a\n: inside\ndata: b\n\n"),
            vec![
                comment(""),
                comment("keep-alive"),
                comment("raw"),
                comment(" two"),
                comment("inside"),
                msg("a\nb"),
            ]
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(
            parse_both(b"foo: bar\nData: no\nDATA\n data: x\ndata: y\n\n"),
            vec![msg("y")]
        );
    }

    #[test]
    fn all_line_endings_are_accepted() {
        let expected = vec![
            ev("e", "a\nb", Some("1"), None),
            ev("message", "c", Some("1"), None),
        ];
        for input in [
            &b"event: e\nid: 1\ndata: a\ndata: b\n\ndata: c\n\n"[..],
            b"event: e\r\nid: 1\r\ndata: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n",
            b"event: e\rid: 1\rdata: a\rdata: b\r\rdata: c\r\r",
            b"event: e\r\nid: 1\rdata: a\ndata: b\r\n\rdata: c\n\r\n",
        ] {
            assert_eq!(parse_both(input), expected, "{input:?}");
        }
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_ending() {
        let mut p = SseParser::new();
        assert_eq!(p.feed(b"data: a\r"), vec![]);
        assert_eq!(p.feed(b"\n"), vec![]);
        assert_eq!(p.feed(b"\r"), vec![msg("a")]);
        assert_eq!(p.feed(b""), vec![]);
        assert_eq!(p.feed(b"\ndata: b\r"), vec![]);
        // A CR followed by something else is a line ending on its own.
        assert_eq!(p.feed(b"\rdata: c\r"), vec![msg("b")]);
        assert_eq!(p.feed(b"\r"), vec![msg("c")]);
        // CR | LF | LF: the first LF completes the CRLF, the second is a blank line.
        let mut p = SseParser::new();
        assert_eq!(p.feed(b"data: d\r"), vec![]);
        assert_eq!(p.feed(b"\n"), vec![]);
        assert_eq!(p.feed(b""), vec![]);
        assert_eq!(p.feed(b"\n"), vec![msg("d")]);
    }

    #[test]
    fn trailing_partial_event_is_not_emitted() {
        assert_eq!(parse_both(b"data: a\n\ndata: unfinished\n"), vec![msg("a")]);
        assert_eq!(parse_both(b"data: a\n\ndata: no newline"), vec![msg("a")]);
        assert_eq!(
            parse_both(b"data: a\n\n: comment without newline"),
            vec![msg("a")]
        );
    }

    #[test]
    fn leading_bom_is_skipped_once() {
        assert_eq!(parse_both(b"\xEF\xBB\xBFdata: a\n\n"), vec![msg("a")]);
        let mut p = SseParser::new();
        assert_eq!(p.feed(b"\xEF"), vec![]);
        assert_eq!(p.feed(b"\xBB"), vec![]);
        assert_eq!(p.feed(b"\xBFdata: a\n\n"), vec![msg("a")]);
        // A second BOM is part of the field name, which is then unknown.
        assert_eq!(
            parse_both(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n"),
            vec![msg("b")]
        );
        // A BOM after the first line is not skipped.
        assert_eq!(
            parse_both(b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"),
            vec![msg("a")]
        );
        // A BOM on its own line is an empty first line.
        assert_eq!(parse_both(b"\xEF\xBB\xBF\ndata: a\n\n"), vec![msg("a")]);
    }

    #[test]
    fn utf8_is_decoded_across_chunk_boundaries_and_invalid_bytes_replaced() {
        let text = "data: héllo → 🎉\n\n".as_bytes();
        assert_eq!(parse_both(text), vec![msg("héllo → 🎉")]);
        for split in 0..text.len() {
            let mut p = SseParser::new();
            let mut items = p.feed(&text[..split]);
            items.extend(p.feed(&text[split..]));
            assert_eq!(items, vec![msg("héllo → 🎉")], "split at {split}");
        }
        assert_eq!(parse_both(b"data: a\xFFb\n\n"), vec![msg("a\u{FFFD}b")]);
    }

    // ---- round trip property ----

    #[derive(Debug, Clone)]
    enum Block {
        Event {
            name: Option<String>,
            data: String,
            id: Option<String>,
            retry: Option<u64>,
        },
        Comment(String),
    }

    fn block() -> impl Strategy<Value = Block> {
        prop_oneof![
            4 => (
                proptest::option::of("[^\r\n]*"),
                any::<String>(),
                proptest::option::of("[^\r\n\u{0}]*"),
                proptest::option::of(any::<u64>()),
            )
                .prop_map(|(name, data, id, retry)| Block::Event { name, data, id, retry }),
            1 => "[^\r\n]*".prop_map(Block::Comment),
        ]
    }

    /// Encodes `blocks` as an event stream using line ending `eol`, and
    /// returns the items a conforming parser must produce.
    fn encode(blocks: &[Block], eol: &str, bom: bool) -> (Vec<u8>, Vec<SseItem>) {
        let mut out = String::new();
        if bom {
            out.push('\u{FEFF}');
        }
        let mut expected = Vec::new();
        let mut last_id = String::new();
        for block in blocks {
            match block {
                Block::Comment(text) => {
                    out.push_str(&format!(": {text}{eol}"));
                    expected.push(comment(text));
                }
                Block::Event {
                    name,
                    data,
                    id,
                    retry,
                } => {
                    if let Some(name) = name {
                        out.push_str(&format!("event: {name}{eol}"));
                    }
                    if let Some(id) = id {
                        out.push_str(&format!("id: {id}{eol}"));
                        last_id.clone_from(id);
                    }
                    if let Some(retry) = retry {
                        out.push_str(&format!("retry: {retry}{eol}"));
                    }
                    let normalized = data.replace("\r\n", "\n").replace('\r', "\n");
                    for line in normalized.split('\n') {
                        out.push_str(&format!("data: {line}{eol}"));
                    }
                    out.push_str(eol);
                    expected.push(SseItem::Event(SseEvent {
                        event: match name.as_deref() {
                            None | Some("") => "message".to_owned(),
                            Some(name) => name.to_owned(),
                        },
                        data: normalized,
                        id: (!last_id.is_empty()).then(|| last_id.clone()),
                        retry: *retry,
                    }));
                }
            }
        }
        (out.into_bytes(), expected)
    }

    proptest! {
        #[test]
        fn encoded_events_parse_back_identically_in_any_chunking(
            blocks in proptest::collection::vec(block(), 0..12),
            eol in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
            bom in any::<bool>(),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..16),
        ) {
            let (bytes, expected) = encode(&blocks, eol, bom);
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut parser = SseParser::new();
            let mut items = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain(std::iter::once(bytes.len())) {
                items.extend(parser.feed(&bytes[start..cut]));
                start = cut;
            }
            prop_assert_eq!(&items, &expected);
            prop_assert_eq!(parse_bytewise(&bytes), expected);
        }
    }

    // ---- SseStream over real sockets ----

    use axum::http::{HeaderMap, StatusCode};
    use axum::response::sse::{Event, KeepAlive, Sse};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use axum::Router;
    use futures::stream::{self, Stream, StreamExt};
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TEST_BOUND: Duration = Duration::from_secs(30);
    const STEP: Duration = Duration::from_secs(5);

    /// Counts live server-side streams: incremented when one starts,
    /// decremented when the server drops it (the viewer left).
    #[derive(Clone, Default)]
    struct Live(Arc<AtomicUsize>);

    struct LiveGuard(Arc<AtomicUsize>);

    impl Drop for LiveGuard {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Live {
        fn enter(&self) -> LiveGuard {
            self.0.fetch_add(1, Ordering::SeqCst);
            LiveGuard(self.0.clone())
        }
        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
        /// Waits (bounded) until the count is `n`.
        async fn wait_for(&self, n: usize) {
            tokio::time::timeout(STEP, async {
                while self.count() != n {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("live streams stayed {} instead of {n}", self.count()));
        }
    }

    fn events(
        headers: &HeaderMap,
        live: &Live,
        forever: bool,
    ) -> impl Stream<Item = Result<Event, Infallible>> {
        let last = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        let guard = live.enter();
        let first = vec![
            Event::default().data(format!("last={last}")),
            Event::default().event("like").id("1").data("a\nb"),
            Event::default()
                .event("comment")
                .retry(Duration::from_millis(1500))
                .data("ünïcode"),
        ];
        let tail = if forever {
            stream::pending().boxed()
        } else {
            stream::empty().boxed()
        };
        stream::iter(first).chain(tail).map(move |e| {
            let _held = &guard;
            Ok(e)
        })
    }

    async fn serve(live: Live) -> String {
        let app = Router::new()
            .route(
                "/events",
                get({
                    let live = live.clone();
                    move |headers: HeaderMap| async move {
                        Sse::new(events(&headers, &live, true)).keep_alive(
                            KeepAlive::new()
                                .interval(Duration::from_millis(30))
                                .text("ka"),
                        )
                    }
                }),
            )
            .route(
                "/finite",
                get({
                    let live = live.clone();
                    move |headers: HeaderMap| async move { Sse::new(events(&headers, &live, false)) }
                }),
            )
            .route(
                "/quiet",
                get(|| async {
                    Sse::new(stream::pending::<Result<Event, Infallible>>())
                }),
            )
            .route(
                "/missing",
                get(|| async { (StatusCode::NOT_FOUND, "no such stream").into_response() }),
            )
            .route("/plain", get(|| async { "not a stream" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        format!("http://{addr}")
    }

    fn expected_events(last: &str) -> Vec<SseEvent> {
        vec![
            SseEvent {
                event: "message".into(),
                data: format!("last={last}"),
                id: None,
                retry: None,
            },
            SseEvent {
                event: "like".into(),
                data: "a\nb".into(),
                id: Some("1".into()),
                retry: None,
            },
            SseEvent {
                event: "comment".into(),
                data: "ünïcode".into(),
                id: Some("1".into()),
                retry: Some(1500),
            },
        ]
    }

    #[tokio::test]
    async fn reads_events_and_keep_alives_from_axum() {
        tokio::time::timeout(TEST_BOUND, async {
            let live = Live::default();
            let base = serve(live.clone()).await;
            let mut s = SseStream::connect(&format!("{base}/events"), &[("Last-Event-ID", "41")])
                .await
                .unwrap();
            assert_eq!(s.status(), 200);
            assert!(s
                .headers()
                .iter()
                .any(|(n, v)| n == "content-type" && v.starts_with("text/event-stream")));
            assert_eq!(s.last_event_id(), None);

            let mut got = Vec::new();
            let mut keep_alives = 0;
            while got.len() < 3 || keep_alives < 2 {
                match s.next_item().await.unwrap() {
                    Some(SseItem::Event(e)) => got.push(e),
                    Some(SseItem::Comment(c)) => {
                        assert_eq!(c, "ka");
                        keep_alives += 1;
                    }
                    None => panic!("stream ended early"),
                }
            }
            assert_eq!(got, expected_events("41"));
            assert_eq!(s.last_event_id(), Some("1"));
            assert_eq!(s.reconnection_time(), Some(1500));
            assert!(s.comments_seen() >= 2);

            // Only keep-alives follow: next_event skips them and times out.
            let err = s.next_event(Duration::from_millis(150)).await.unwrap_err();
            assert!(matches!(err, SseError::Timeout), "{err}");
            assert!(s.comments_seen() >= 3);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn dropping_the_stream_lets_the_server_see_the_viewer_leave() {
        tokio::time::timeout(TEST_BOUND, async {
            let live = Live::default();
            let base = serve(live.clone()).await;
            let mut a = SseStream::connect(&format!("{base}/events"), &[])
                .await
                .unwrap();
            let mut b = SseStream::connect(&format!("{base}/events"), &[])
                .await
                .unwrap();
            assert!(a.next_event(STEP).await.unwrap().is_some());
            assert!(b.next_event(STEP).await.unwrap().is_some());
            live.wait_for(2).await;
            drop(a);
            live.wait_for(1).await;
            drop(b);
            live.wait_for(0).await;
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn finite_stream_ends_with_none_and_collect_until_reports_done() {
        tokio::time::timeout(TEST_BOUND, async {
            let live = Live::default();
            let base = serve(live.clone()).await;

            let mut s = SseStream::connect(&format!("{base}/finite"), &[])
                .await
                .unwrap();
            let (events, done) = s.collect_until(STEP, |evs| evs.len() == 2).await;
            assert!(done);
            assert_eq!(events, expected_events("none")[..2]);
            assert_eq!(
                s.next_event(STEP).await.unwrap(),
                Some(expected_events("none")[2].clone())
            );
            assert_eq!(s.next_event(STEP).await.unwrap(), None);
            assert_eq!(s.next_item().await.unwrap(), None);

            // The stream ends before `done` holds: collected events, not done.
            let mut s = SseStream::connect(&format!("{base}/finite"), &[])
                .await
                .unwrap();
            let (events, done) = s.collect_until(STEP, |evs| evs.len() == 10).await;
            assert!(!done);
            assert_eq!(events, expected_events("none"));

            // `done` holding on nothing returns at once.
            let mut s = SseStream::connect(&format!("{base}/quiet"), &[])
                .await
                .unwrap();
            let (events, done) = s.collect_until(STEP, |_| true).await;
            assert!(done && events.is_empty());
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn quiet_stream_times_out_without_error_from_collect_until() {
        tokio::time::timeout(TEST_BOUND, async {
            let base = serve(Live::default()).await;
            let mut s = SseStream::connect(&format!("{base}/quiet"), &[])
                .await
                .unwrap();
            let err = s.next_event(Duration::from_millis(100)).await.unwrap_err();
            assert!(matches!(err, SseError::Timeout), "{err}");
            let (events, done) = s
                .collect_until(Duration::from_millis(100), |evs| !evs.is_empty())
                .await;
            assert!(events.is_empty());
            assert!(!done);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn non_200_and_wrong_content_type_are_errors() {
        tokio::time::timeout(TEST_BOUND, async {
            let base = serve(Live::default()).await;
            let err = SseStream::connect(&format!("{base}/missing"), &[])
                .await
                .unwrap_err();
            match &err {
                SseError::Status { status, body } => {
                    assert_eq!(*status, 404);
                    assert_eq!(body, "no such stream");
                }
                other => panic!("unexpected {other}"),
            }
            assert_eq!(err.to_string(), "unexpected status 404: no such stream");

            let err = SseStream::connect(&format!("{base}/plain"), &[])
                .await
                .unwrap_err();
            match &err {
                SseError::ContentType { content_type } => {
                    assert!(content_type
                        .as_deref()
                        .is_some_and(|ct| ct.starts_with("text/plain")));
                }
                other => panic!("unexpected {other}"),
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn connect_errors_are_typed() {
        tokio::time::timeout(TEST_BOUND, async {
            let err = SseStream::connect("ftp://127.0.0.1/", &[])
                .await
                .unwrap_err();
            assert!(matches!(err, SseError::InvalidUrl { .. }), "{err}");
            let err = SseStream::connect("http://127.0.0.1/", &[("bad header", "x")])
                .await
                .unwrap_err();
            assert!(matches!(err, SseError::InvalidHeader { .. }), "{err}");

            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            drop(listener);
            let err = SseStream::connect(&format!("http://{addr}/"), &[])
                .await
                .unwrap_err();
            assert!(matches!(err, SseError::Connect { .. }), "{err}");

            // A server that accepts but never answers.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((sock, _)) = listener.accept().await {
                    held.push(sock);
                }
            });
            let err = SseStream::connect_within(
                Duration::from_millis(200),
                &format!("http://{addr}/"),
                &[],
            )
            .await
            .unwrap_err();
            assert!(matches!(err, SseError::ConnectTimeout), "{err}");
        })
        .await
        .unwrap();
    }

    /// A hand-written server: CR line endings, a BOM, bytes dribbled in tiny
    /// writes, an id-only block, and a trailing partial event at EOF.
    #[tokio::test]
    async fn raw_server_stream_is_parsed_per_spec() {
        tokio::time::timeout(TEST_BOUND, async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = sock.read(&mut buf).await.unwrap();
                    assert!(n > 0, "client closed early");
                    request.extend_from_slice(&buf[..n]);
                }
                let request = String::from_utf8(request).unwrap().to_ascii_lowercase();
                assert!(
                    request.starts_with("get /raw?x=1 http/1.1\r\n"),
                    "{request}"
                );
                assert!(
                    request.contains("\r\naccept: text/event-stream\r\n"),
                    "{request}"
                );
                assert!(
                    request.contains(&format!("\r\nhost: {addr}\r\n")),
                    "{request}"
                );
                assert!(request.contains("\r\nlast-event-id: 9\r\n"), "{request}");
                sock.write_all(
                    b"HTTP/1.1 200 OK\r\n\
                      Content-Type: Text/Event-Stream; charset=utf-8\r\n\
                      Connection: close\r\n\r\n",
                )
                .await
                .unwrap();
                let body: &[u8] = b"\xEF\xBB\xBF: hi\r\rid: 10\r\r\
                    data: first\r\n\r\n\
                    event: e\rdata: \xC3\xA9\r\n\
                    data: x\n\n\
                    data: never dispatched\n";
                for piece in body.chunks(3) {
                    sock.write_all(piece).await.unwrap();
                    sock.flush().await.unwrap();
                }
                sock.shutdown().await.unwrap();
            });

            let mut s =
                SseStream::connect(&format!("http://{addr}/raw?x=1"), &[("last-event-id", "9")])
                    .await
                    .unwrap();
            let mut items = Vec::new();
            while let Some(item) = s.next_item().await.unwrap() {
                items.push(item);
            }
            assert_eq!(
                items,
                vec![
                    comment("hi"),
                    ev("message", "first", Some("10"), None),
                    ev("e", "é\nx", Some("10"), None),
                ]
            );
            assert_eq!(s.last_event_id(), Some("10"));
            assert_eq!(s.next_item().await.unwrap(), None);
        })
        .await
        .unwrap();
    }

    /// `last_event_id` follows the items returned, not the bytes received.
    #[tokio::test]
    async fn last_event_id_follows_returned_items() {
        tokio::time::timeout(TEST_BOUND, async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let mut request = Vec::new();
                while !request.ends_with(b"\r\n\r\n") {
                    let n = sock.read(&mut buf).await.unwrap();
                    assert!(n > 0, "client closed early");
                    request.extend_from_slice(&buf[..n]);
                }
                sock.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                      transfer-encoding: chunked\r\n\r\n\
                      29\r\nid: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\n\n: c\n\r\n",
                )
                .await
                .unwrap();
                // Hold the connection until the client leaves.
                while sock.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            });
            let mut s = SseStream::connect(&format!("http://{addr}/"), &[])
                .await
                .unwrap();
            let first = s.next_event(STEP).await.unwrap().unwrap();
            assert_eq!(first.id.as_deref(), Some("1"));
            assert_eq!(s.last_event_id(), Some("1"));
            let second = s.next_event(STEP).await.unwrap().unwrap();
            assert_eq!(second.id.as_deref(), Some("2"));
            assert_eq!(s.last_event_id(), Some("2"));
            assert_eq!(s.next_item().await.unwrap(), Some(comment("c")));
            // The id-only block before the comment has taken effect.
            assert_eq!(s.last_event_id(), Some("3"));
            let err = s.next_event(Duration::from_millis(100)).await.unwrap_err();
            assert!(matches!(err, SseError::Timeout), "{err}");
            assert_eq!(s.last_event_id(), Some("3"));
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn holds_hundreds_of_streams() {
        const N: usize = 300;
        tokio::time::timeout(TEST_BOUND, async {
            let live = Live::default();
            let base = serve(live.clone()).await;
            let url = format!("{base}/events");
            let mut streams = Vec::with_capacity(N);
            for _ in 0..N {
                streams.push(SseStream::connect(&url, &[]).await.unwrap());
            }
            for s in &mut streams {
                let first = s.next_event(STEP).await.unwrap().unwrap();
                assert_eq!(first.data, "last=none");
            }
            live.wait_for(N).await;
            drop(streams);
            live.wait_for(0).await;
        })
        .await
        .unwrap();
    }
}
