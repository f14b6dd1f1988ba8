//! The incremental scanner of one viewer connection: HTTP response head, chunked transfer
//! coding, SSE `data:` lines, and in them the bench marker `b<seq>@<micros>` or a like
//! `"total":N`.
//!
//! It is fed whatever each `read` returned, so every boundary (a chunk-size line, a marker, a
//! line ending) may fall between two reads; the state needed to resume is a few integers and a
//! carry buffer for one partial line. Complete lines are scanned in place in the read buffer:
//! nothing is allocated per event and no JSON is parsed, so the viewer side stays cheap next to
//! the server it measures.

use memchr::memmem;

/// The largest response head accepted (status line and headers).
const HEAD_CAP: usize = 8 * 1024;
/// The longest `data:` line kept across reads; a longer one is skipped (never ours: markers
/// and like totals travel in lines of a few hundred bytes).
const LINE_CAP: usize = 8 * 1024;

/// What a stream yields, reported to its owner as the scanner finds it.
pub trait EventSink {
    /// A `b<seq>@<micros>` marker: a published comment and when it was sent.
    fn on_marker(&mut self, seq: u64, sent_micros: u64);
    /// A `w<n>@<micros>` marker: a warm-up probe, which shows the route to this viewer works.
    fn on_warmup(&mut self);
    /// A like total (`"total":N` in a `likes` or `total` event).
    fn on_total(&mut self, total: u64);
}

/// Why a stream cannot be scanned any further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("response status {0}, expected 200")]
    Status(u16),
    #[error("malformed response head")]
    BadHead,
    #[error("response head larger than {HEAD_CAP} bytes")]
    HeadTooLarge,
    #[error("malformed chunked transfer coding")]
    BadChunk,
}

/// Where in the chunked transfer coding the next byte falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In a chunk-size line: the size so far, and whether extensions started (`;...`).
    Size {
        size: u64,
        digits: bool,
        extension: bool,
    },
    /// After the `\r` of a chunk-size line.
    SizeLf {
        size: u64,
    },
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// After chunk data, expecting `\r\n`.
    DataCr,
    DataLf,
    /// The last chunk (size 0) was seen: the body is over.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Body { chunked: bool },
}

/// One connection's scanner; see the module docs.
#[derive(Debug)]
pub struct StreamScanner {
    phase: Phase,
    /// The response head as it arrives; freed once the head is parsed.
    head: Vec<u8>,
    chunk: Chunk,
    /// The start of a line whose end has not arrived yet.
    carry: Vec<u8>,
    /// The carried line outgrew [`LINE_CAP`]: drop it up to its end.
    overflow: bool,
}

impl Default for StreamScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamScanner {
    pub fn new() -> Self {
        Self {
            phase: Phase::Head,
            head: Vec::new(),
            chunk: Chunk::Size {
                size: 0,
                digits: false,
                extension: false,
            },
            carry: Vec::new(),
            overflow: false,
        }
    }

    /// True once a `200` head was read and the body is being scanned.
    pub fn streaming(&self) -> bool {
        matches!(self.phase, Phase::Body { .. })
    }

    /// True once a chunked body ended with its last chunk: the server closed the stream.
    pub fn ended(&self) -> bool {
        self.chunk == Chunk::Done && matches!(self.phase, Phase::Body { chunked: true })
    }

    /// Scans the bytes of one read.
    pub fn feed(&mut self, bytes: &[u8], sink: &mut impl EventSink) -> Result<(), ScanError> {
        let body = match self.phase {
            Phase::Head => {
                let searched_from = self.head.len().saturating_sub(3);
                self.head.extend_from_slice(bytes);
                let Some(end) = memmem::find(&self.head[searched_from..], b"\r\n\r\n") else {
                    if self.head.len() > HEAD_CAP {
                        return Err(ScanError::HeadTooLarge);
                    }
                    return Ok(());
                };
                let head_len = searched_from + end + 4;
                let chunked = parse_head(&self.head[..head_len])?;
                self.phase = Phase::Body { chunked };
                // The rest of this read is body: scan it from the head buffer, then free it.
                let head = std::mem::take(&mut self.head);
                self.body(&head[head_len..], chunked, sink)?;
                return Ok(());
            }
            Phase::Body { chunked } => chunked,
        };
        self.body(bytes, body, sink)
    }

    fn body(
        &mut self,
        bytes: &[u8],
        chunked: bool,
        sink: &mut impl EventSink,
    ) -> Result<(), ScanError> {
        if !chunked {
            self.lines(bytes, sink);
            return Ok(());
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.chunk {
                Chunk::Data(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    self.lines(&rest[..take], sink);
                    rest = &rest[take..];
                    let left = left - take as u64;
                    self.chunk = if left == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left)
                    };
                }
                Chunk::Done => return Ok(()),
                state => {
                    self.chunk = chunk_step(state, rest[0])?;
                    rest = &rest[1..];
                }
            }
        }
        Ok(())
    }

    /// Splits decoded body bytes into lines and scans each complete one.
    fn lines(&mut self, bytes: &[u8], sink: &mut impl EventSink) {
        let mut rest = bytes;
        while let Some(newline) = memchr::memchr(b'\n', rest) {
            let piece = &rest[..newline];
            if self.overflow {
                self.overflow = false;
            } else if self.carry.is_empty() {
                scan_line(piece, sink);
            } else if self.carry.len() + piece.len() <= LINE_CAP {
                self.carry.extend_from_slice(piece);
                scan_line(&self.carry, sink);
            }
            self.carry.clear();
            rest = &rest[newline + 1..];
        }
        if rest.is_empty() || self.overflow {
            return;
        }
        if self.carry.len() + rest.len() > LINE_CAP {
            self.overflow = true;
            self.carry.clear();
        } else {
            self.carry.extend_from_slice(rest);
        }
    }
}

/// One byte of chunk framing (everything but chunk data).
fn chunk_step(state: Chunk, byte: u8) -> Result<Chunk, ScanError> {
    let next = match state {
        Chunk::Size {
            size,
            digits,
            extension,
        } => match byte {
            b'\r' if digits => Chunk::SizeLf { size },
            b'\n' if digits => after_size_line(size),
            _ if extension => state,
            b';' | b' ' | b'\t' if digits => Chunk::Size {
                size,
                digits,
                extension: true,
            },
            _ => {
                let digit = (byte as char).to_digit(16).ok_or(ScanError::BadChunk)?;
                let size = size
                    .checked_mul(16)
                    .and_then(|size| size.checked_add(u64::from(digit)))
                    .ok_or(ScanError::BadChunk)?;
                Chunk::Size {
                    size,
                    digits: true,
                    extension: false,
                }
            }
        },
        Chunk::SizeLf { size } if byte == b'\n' => after_size_line(size),
        Chunk::DataCr if byte == b'\r' => Chunk::DataLf,
        Chunk::DataCr | Chunk::DataLf if byte == b'\n' => Chunk::Size {
            size: 0,
            digits: false,
            extension: false,
        },
        _ => return Err(ScanError::BadChunk),
    };
    Ok(next)
}

fn after_size_line(size: u64) -> Chunk {
    if size == 0 {
        Chunk::Done
    } else {
        Chunk::Data(size)
    }
}

/// Checks the status line is a 200 and tells whether the body is chunked.
fn parse_head(head: &[u8]) -> Result<bool, ScanError> {
    let text = std::str::from_utf8(head).map_err(|_| ScanError::BadHead)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or(ScanError::BadHead)?;
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(ScanError::BadHead);
    }
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or(ScanError::BadHead)?;
    if status != 200 {
        return Err(ScanError::Status(status));
    }
    let chunked = lines.any(|line| {
        let Some((name, value)) = line.split_once(':') else {
            return false;
        };
        name.trim().eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
    });
    Ok(chunked)
}

/// Scans one complete line (without its `\n`).
fn scan_line(line: &[u8], sink: &mut impl EventSink) {
    let Some(value) = line.strip_prefix(b"data:") else {
        return;
    };
    if let Some((kind, seq, micros)) = find_marker(value) {
        if kind == b'w' {
            sink.on_warmup();
        } else {
            sink.on_marker(seq, micros);
        }
        return;
    }
    if let Some(at) = memmem::find(value, b"\"total\":") {
        if let Some((total, _)) = digits(&value[at + 8..]) {
            sink.on_total(total);
        }
    }
}

/// The first `b<digits>@<digits>` or `w<digits>@<digits>` in `value`.
fn find_marker(value: &[u8]) -> Option<(u8, u64, u64)> {
    for at in memchr::memchr_iter(b'@', value) {
        let before = &value[..at];
        let seq_start = before
            .iter()
            .rposition(|byte| !byte.is_ascii_digit())
            .map_or(0, |index| index + 1);
        if seq_start == 0 || seq_start == at {
            continue;
        }
        let kind = before[seq_start - 1];
        if kind != b'b' && kind != b'w' {
            continue;
        }
        let Some((micros, _)) = digits(&value[at + 1..]) else {
            continue;
        };
        let (seq, _) = digits(&before[seq_start..])?;
        return Some((kind, seq, micros));
    }
    None
}

/// The decimal number at the start of `bytes` and how many bytes it took.
fn digits(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    let mut count = 0;
    for &byte in bytes {
        if !byte.is_ascii_digit() {
            break;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
        count += 1;
    }
    (count > 0).then_some((value, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Default, PartialEq, Eq)]
    struct Seen {
        markers: Vec<(u64, u64)>,
        warmups: usize,
        totals: Vec<u64>,
    }

    impl EventSink for Seen {
        fn on_marker(&mut self, seq: u64, sent_micros: u64) {
            self.markers.push((seq, sent_micros));
        }
        fn on_warmup(&mut self) {
            self.warmups += 1;
        }
        fn on_total(&mut self, total: u64) {
            self.totals.push(total);
        }
    }

    const HEAD_CHUNKED: &str =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    const HEAD_PLAIN: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n";

    fn sse_body() -> String {
        let mut body = String::from("retry: 2000\n\n");
        body.push_str("event: total\ndata: {\"total\":7,\"video_id\":\"v\"}\n\n");
        for seq in 0..20u64 {
            body.push_str(&format!(
                "event: comment\nid: dc1:{seq}\ndata: {{\"video_id\":\"v\",\"comment_id\":\"c{seq}\",\"user_id\":\"bench\",\"text\":\"b{seq}@{}\",\"origin_dc\":\"dc1\",\"published_at\":1}}\n\n",
                1_700_000_000_000_000 + seq
            ));
            body.push_str(&format!(
                "event: likes\ndata: {{\"video_id\":\"v\",\"count\":1,\"total\":{}}}\n\n",
                8 + seq
            ));
        }
        body.push_str(": keep-alive\n\ndata: w3@1700000000000000\n\n");
        body
    }

    fn expected() -> Seen {
        Seen {
            markers: (0..20)
                .map(|seq| (seq, 1_700_000_000_000_000 + seq))
                .collect(),
            warmups: 1,
            totals: std::iter::once(7).chain(8..28).collect(),
        }
    }

    /// Frames `body` in chunks of the given sizes (cycled), as a server would.
    fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut index = 0;
        while !rest.is_empty() {
            let size = sizes[index % sizes.len()].clamp(1, rest.len());
            index += 1;
            out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
            out.extend_from_slice(&rest[..size]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[size..];
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    fn feed_in_reads(stream: &[u8], reads: &[usize]) -> (StreamScanner, Seen) {
        let mut scanner = StreamScanner::new();
        let mut seen = Seen::default();
        let mut rest = stream;
        let mut index = 0;
        while !rest.is_empty() {
            let size = reads[index % reads.len()].clamp(1, rest.len());
            index += 1;
            scanner.feed(&rest[..size], &mut seen).unwrap();
            rest = &rest[size..];
        }
        (scanner, seen)
    }

    #[test]
    fn a_whole_chunked_stream_in_one_read_yields_every_marker_and_total() {
        let mut stream = HEAD_CHUNKED.as_bytes().to_vec();
        stream.extend(chunked(sse_body().as_bytes(), &[120]));
        let (scanner, seen) = feed_in_reads(&stream, &[stream.len()]);
        assert_eq!(seen, expected());
        assert!(scanner.ended());
    }

    #[test]
    fn markers_split_across_reads_of_one_byte_are_found() {
        let mut stream = HEAD_CHUNKED.as_bytes().to_vec();
        stream.extend(chunked(sse_body().as_bytes(), &[7, 64, 3]));
        let (_, seen) = feed_in_reads(&stream, &[1]);
        assert_eq!(seen, expected());
    }

    #[test]
    fn a_marker_straddling_a_chunk_boundary_is_found() {
        let body = b"data: {\"text\":\"b42@1700000000123456\"}\n\n";
        let split = body.iter().position(|&byte| byte == b'@').unwrap();
        let mut stream = HEAD_CHUNKED.as_bytes().to_vec();
        stream.extend(chunked(body, &[split, body.len()]));
        let (_, seen) = feed_in_reads(&stream, &[stream.len()]);
        assert_eq!(seen.markers, vec![(42, 1_700_000_000_123_456)]);
    }

    #[test]
    fn a_plain_body_is_scanned_without_chunk_decoding() {
        let mut stream = HEAD_PLAIN.as_bytes().to_vec();
        stream.extend_from_slice(sse_body().as_bytes());
        let (scanner, seen) = feed_in_reads(&stream, &[5, 17, 300]);
        assert_eq!(seen, expected());
        assert!(!scanner.ended());
    }

    #[test]
    fn a_raw_marker_line_from_a_generic_server_is_found_with_crlf_endings() {
        let stream = format!("{HEAD_PLAIN}event: message\r\ndata: b9@123\r\n\r\n");
        let (_, seen) = feed_in_reads(stream.as_bytes(), &[stream.len()]);
        assert_eq!(seen.markers, vec![(9, 123)]);
    }

    #[test]
    fn chunk_extensions_and_uppercase_hex_are_accepted() {
        let stream = format!("{HEAD_CHUNKED}C;name=value\r\ndata: b1@2\n\r\n0\r\n\r\n");
        let (scanner, seen) = feed_in_reads(stream.as_bytes(), &[3]);
        assert_eq!(seen.markers, vec![(1, 2)]);
        assert!(scanner.ended());
    }

    #[test]
    fn a_non_200_status_is_an_error() {
        let mut scanner = StreamScanner::new();
        let error = scanner
            .feed(
                b"HTTP/1.1 503 Service Unavailable\r\n\r\n",
                &mut Seen::default(),
            )
            .unwrap_err();
        assert_eq!(error, ScanError::Status(503));
    }

    #[test]
    fn broken_chunk_framing_is_an_error() {
        let stream = format!("{HEAD_CHUNKED}zz\r\n");
        let mut scanner = StreamScanner::new();
        let error = scanner
            .feed(stream.as_bytes(), &mut Seen::default())
            .unwrap_err();
        assert_eq!(error, ScanError::BadChunk);
    }

    #[test]
    fn text_that_only_looks_like_a_marker_is_ignored() {
        let mut seen = Seen::default();
        scan_line(b"data: mail me at ana@example.com or x12@34", &mut seen);
        scan_line(b"id: b1@2", &mut seen);
        assert_eq!(seen, Seen::default());
    }

    #[test]
    fn an_overlong_line_is_skipped_and_the_next_one_is_scanned() {
        let long = "x".repeat(LINE_CAP + 10);
        let stream = format!("{HEAD_PLAIN}data: {long}b1@1\ndata: b2@2\n\n");
        let (_, seen) = feed_in_reads(stream.as_bytes(), &[1000]);
        assert_eq!(seen.markers, vec![(2, 2)]);
    }

    proptest! {
        #[test]
        fn any_chunking_and_any_read_sizes_yield_the_same_events(
            chunks in proptest::collection::vec(1usize..300, 1..8),
            reads in proptest::collection::vec(1usize..200, 1..8),
        ) {
            let mut stream = HEAD_CHUNKED.as_bytes().to_vec();
            stream.extend(chunked(sse_body().as_bytes(), &chunks));
            let (scanner, seen) = feed_in_reads(&stream, &reads);
            prop_assert_eq!(seen, expected());
            prop_assert!(scanner.ended());
        }
    }
}
