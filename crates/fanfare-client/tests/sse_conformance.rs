//! Two sides of SSE framing, checked against each other:
//! - the parser ([`SseParser`]) against a literal, independent transcription of the WHATWG
//!   "event stream interpretation" rules, on byte soups built from the tokens that matter;
//! - fanfare's encoder (`fanfare_model::sse`) against the parser: any event name, id and data,
//!   and any comment, come back as exactly one event with the same fields.
//!
//! "The same fields" is precise where SSE itself normalises: a parser turns CRLF and CR in data
//! into LF, so data comes back with line breaks normalised (and byte for byte when it holds no
//! CR, as all JSON does); `event` and `id` come back with CR, LF and NUL replaced by U+FFFD
//! (they are single-line fields; NUL would make a browser ignore the id), an empty event name
//! as `message`, an empty id as none.

use fanfare_client::sse::{SseEvent, SseItem, SseParser};
use fanfare_model::{sse, Comment, Position, VideoId};
use proptest::prelude::*;

/// The WHATWG rules, transcribed step by step over the whole stream at once: decode (UTF-8,
/// invalid sequences to U+FFFD, one leading BOM dropped), split lines on CRLF, LF or CR (an
/// unterminated last line is not a line), then process each line. Comment lines are reported
/// too, as the parser under test does (text after the colon, one leading space removed).
/// Returns the items and the final last-event-id string.
fn reference(bytes: &[u8]) -> (Vec<SseItem>, String) {
    let decoded = String::from_utf8_lossy(bytes);
    let text = decoded.strip_prefix('\u{FEFF}').unwrap_or(&decoded);
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                lines.push(std::mem::take(&mut current));
            }
            '\n' => lines.push(std::mem::take(&mut current)),
            other => current.push(other),
        }
    }
    let mut items = Vec::new();
    let (mut data, mut event_type, mut id_buffer, mut last_id) =
        (String::new(), String::new(), String::new(), String::new());
    let mut retry = None;
    for line in lines {
        if line.is_empty() {
            // Dispatch.
            last_id.clone_from(&id_buffer);
            let block_retry = retry.take();
            if data.is_empty() {
                event_type.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            let event = if event_type.is_empty() {
                "message".to_owned()
            } else {
                std::mem::take(&mut event_type)
            };
            items.push(SseItem::Event(SseEvent {
                event,
                data: std::mem::take(&mut data),
                id: (!last_id.is_empty()).then(|| last_id.clone()),
                retry: block_retry,
            }));
            continue;
        }
        if let Some(comment) = line.strip_prefix(':') {
            let comment = comment.strip_prefix(' ').unwrap_or(comment);
            items.push(SseItem::Comment(comment.to_owned()));
            continue;
        }
        let (field, value) = match line.find(':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line.as_str(), ""),
        };
        match field {
            "event" => event_type = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            // An id holding NUL is ignored.
            "id" if !value.contains('\0') => id_buffer = value.to_owned(),
            // "Consists of only ASCII digits": taken as non-empty, as browsers do; a value too
            // large for the reconnection time is ignored.
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                retry = value.parse::<u64>().ok().or(retry);
            }
            _ => {}
        }
    }
    (items, last_id)
}

/// Parses `bytes` fed in the pieces `cuts` makes.
fn parse_in_pieces(bytes: &[u8], cuts: &[prop::sample::Index]) -> (Vec<SseItem>, Option<String>) {
    let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut parser = SseParser::new();
    let mut items = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain(std::iter::once(bytes.len())) {
        items.extend(parser.feed(&bytes[start..cut]));
        start = cut;
    }
    (items, parser.last_event_id().map(str::to_owned))
}

const TOKENS: &[&[u8]] = &[
    b"data",
    b"event",
    b"id",
    b"retry",
    b":",
    b": ",
    b" ",
    b"\r",
    b"\n",
    b"\r\n",
    b"\0",
    b"x",
    b"7",
    b"message",
    b"\xEF\xBB\xBF",
    b"\xFF",
    b"\xE2\x82",
    b"\xC3\xA9",
    b"\xF0\x9F\x8E\x89",
    b"\xF0\x9F",
    b"Data",
    b"data:",
    b"id: ",
    b"event: ",
];

fn byte_soup() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..60).prop_map(|tokens| tokens.concat())
}

fn single_line(text: &str) -> String {
    text.replace(['\r', '\n', '\0'], "\u{FFFD}")
}

fn normalised(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

/// What a parser must report for one event encoded by fanfare, given the id in effect before.
fn expected_event(event: &str, id: Option<&str>, data: &str, id_before: &str) -> SseEvent {
    let event = single_line(event);
    let id = match id {
        Some(id) => single_line(id),
        None => id_before.to_owned(),
    };
    SseEvent {
        event: if event.is_empty() {
            "message".to_owned()
        } else {
            event
        },
        data: normalised(data),
        id: (!id.is_empty()).then_some(id),
        retry: None,
    }
}

fn position() -> impl Strategy<Value = Position> {
    prop::collection::btree_map("[a-z0-9][a-z0-9-]{0,31}", any::<u64>(), 0..4).prop_map(|seqs| {
        let mut position = Position::new();
        for (origin, seq) in seqs {
            position.advance(&origin, seq);
        }
        position
    })
}

/// Text a hostile publisher would try, and anything else.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(\\n|\\r|\\r\\n|\\n\\n|data: |event: likes|id: x|retry: 1|: |\\u{0}|\\u{FEFF}|\\u{2028}|<script>|x){0,12}",
    ]
}

// Case counts keep the whole file within a few seconds in a debug build on a busy CI machine:
// byte soups are cheap, events of arbitrary strings are not.
proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_parser_follows_the_whatwg_rules_on_any_bytes(
        bytes in byte_soup(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let (expected, last_id) = reference(&bytes);
        let (items, parser_last_id) = parse_in_pieces(&bytes, &cuts);
        prop_assert_eq!(items, expected, "stream {:?}", String::from_utf8_lossy(&bytes));
        prop_assert_eq!(parser_last_id.unwrap_or_default(), last_id);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_event_comes_back_as_exactly_one_event(
        event in hostile_text(),
        id in prop::option::of(hostile_text()),
        data in hostile_text(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut out = Vec::new();
        sse::write_event(&mut out, &event, id.as_deref(), &data);
        let (items, _) = parse_in_pieces(&out, &cuts);
        let expected = expected_event(&event, id.as_deref(), &data, "");
        prop_assert_eq!(items, vec![SseItem::Event(expected)]);
    }

    #[test]
    fn a_run_of_events_and_comments_comes_back_one_for_one(
        blocks in prop::collection::vec(
            prop_oneof![
                (hostile_text(), prop::option::of(hostile_text()), hostile_text())
                    .prop_map(|(event, id, data)| (Some((event, id)), data)),
                hostile_text().prop_map(|text| (None, text)),
            ],
            0..8,
        ),
        retry in prop::option::of(any::<u64>()),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut out = Vec::new();
        let mut expected = Vec::new();
        let mut id_before = String::new();
        if let Some(millis) = retry {
            sse::write_retry(&mut out, millis);
        }
        for (event, text) in &blocks {
            match event {
                Some((event, id)) => {
                    sse::write_event(&mut out, event, id.as_deref(), text);
                    let parsed = expected_event(event, id.as_deref(), text, &id_before);
                    id_before = parsed.id.clone().unwrap_or_default();
                    expected.push(SseItem::Event(parsed));
                }
                None => {
                    sse::write_comment(&mut out, text);
                    expected.push(SseItem::Comment(single_line(text)));
                }
            }
        }
        let mut parser = SseParser::new();
        let (items, _) = parse_in_pieces(&out, &cuts);
        prop_assert_eq!(items, expected);
        parser.feed(&out);
        prop_assert_eq!(parser.reconnection_time(), retry);
    }

    /// All fanfare sends as data is JSON: it comes back byte for byte, on one `data:` line.
    #[test]
    fn json_data_comes_back_byte_for_byte_on_one_line(text in hostile_text()) {
        let data = serde_json::to_string(&serde_json::json!({ "text": text })).unwrap();
        let mut out = Vec::new();
        sse::write_event(&mut out, "comment", Some("dc1:1"), &data);
        let data_lines = out.split(|b| *b == b'\n').filter(|line| line.starts_with(b"data:"));
        prop_assert_eq!(data_lines.count(), 1);
        let (items, _) = parse_in_pieces(&out, &[]);
        let [SseItem::Event(event)] = items.as_slice() else {
            return Err(TestCaseError::fail(format!("not one event: {items:?}")));
        };
        prop_assert_eq!(&event.data, &data);
    }

    /// A comment frame as the frontend encodes it (hub and replay): the viewer gets the same
    /// `Comment` back, and an id it can resume from.
    #[test]
    fn a_comment_frame_parses_back_to_the_same_comment(
        text in hostile_text(),
        user_id in hostile_text(),
        comment_id in "[A-Za-z0-9_-]{1,64}",
        video in "[A-Za-z0-9_-]{1,64}",
        at in position(),
        published_at in any::<u64>(),
    ) {
        let comment = Comment {
            video_id: VideoId::parse(&video).unwrap(),
            comment_id,
            user_id,
            text,
            origin_dc: "dc1".to_owned(),
            published_at,
        };
        let mut out = Vec::new();
        let data = serde_json::to_string(&comment).unwrap();
        sse::write_event(&mut out, "comment", Some(&at.to_string()), &data);
        let (items, last_id) = parse_in_pieces(&out, &[]);
        let [SseItem::Event(event)] = items.as_slice() else {
            return Err(TestCaseError::fail(format!("not one event: {items:?}")));
        };
        prop_assert_eq!(event.event.as_str(), "comment");
        let back: Comment = serde_json::from_str(&event.data).unwrap();
        prop_assert_eq!(back, comment);
        let resume_from: Position = last_id.unwrap_or_default().parse().unwrap();
        prop_assert_eq!(resume_from, at);
    }
}

#[test]
fn the_reference_agrees_with_the_spec_examples() {
    let stream = b"\xEF\xBB\xBFdata: YHOO\r\ndata: +2\rdata: 10\n\n: test stream\n\ndata\n\ndata\ndata\n\ndata:\nid: 7\n\n";
    let (items, last_id) = reference(stream);
    assert_eq!(
        items,
        vec![
            SseItem::Event(SseEvent {
                event: "message".into(),
                data: "YHOO\n+2\n10".into(),
                id: None,
                retry: None
            }),
            SseItem::Comment("test stream".into()),
            SseItem::Event(SseEvent {
                event: "message".into(),
                data: String::new(),
                id: None,
                retry: None
            }),
            SseItem::Event(SseEvent {
                event: "message".into(),
                data: "\n".into(),
                id: None,
                retry: None
            }),
            SseItem::Event(SseEvent {
                event: "message".into(),
                data: String::new(),
                id: Some("7".into()),
                retry: None
            }),
        ]
    );
    assert_eq!(last_id, "7");
}
