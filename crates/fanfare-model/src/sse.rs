//! Server-Sent Events framing.
//!
//! What the encoder guarantees, for any input strings (checked by property tests against the
//! WHATWG-conforming parser in `fanfare-client`):
//! - every writer appends whole lines and ends with a blank line, so frames can be concatenated
//!   in any order and each one starts where a parser expects a new field;
//! - [`write_event`] appends exactly one event: a conforming parser reads back exactly one
//!   event with the given name, id and data, and no other field (no `retry`, no second event),
//!   whatever the strings hold;
//! - its `data` comes back exactly as given once line breaks are normalised: SSE itself turns
//!   CRLF and CR into LF (the encoder writes one `data:` line per line, split on CRLF, CR and LF),
//!   so data without CR (all JSON, which escapes every control character: everything fanfare
//!   sends) comes back byte for byte, on a single `data:` line;
//! - `event` and `id` are single-line fields: CR, LF and NUL in them (never in what fanfare
//!   writes: event names are constants, ids are [`Position`](crate::Position)s) are replaced by
//!   U+FFFD, so they can neither end the event early nor make a parser drop the id; every other
//!   character comes back unchanged (an empty name reads as `message`, an empty id as none);
//! - [`write_comment`] appends one comment line that dispatches nothing, with the same
//!   replacement, and [`write_retry`] one `retry:` field.

/// Stands for a character a single-line field cannot hold.
const REPLACEMENT: char = '\u{FFFD}';

/// Appends one event: `event:`, optional `id:`, `data:` lines and the blank line. The same as
/// [`write_event_head`] followed by [`write_event_data`].
pub fn write_event(out: &mut Vec<u8>, event: &str, id: Option<&str>, data: &str) {
    write_event_head(out, event, id);
    write_event_data(out, data);
}

/// Appends the first part of an event, its `event:` and optional `id:` lines: what differs
/// between viewers of one comment when their ids differ, while the data part is shared.
pub fn write_event_head(out: &mut Vec<u8>, event: &str, id: Option<&str>) {
    out.extend_from_slice(b"event: ");
    push_single_line(out, event);
    out.push(b'\n');
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        push_single_line(out, id);
        out.push(b'\n');
    }
}

/// Appends the rest of an event after [`write_event_head`]: the `data:` lines and the blank
/// line that ends the event.
pub fn write_event_data(out: &mut Vec<u8>, data: &str) {
    for line in split_lines(data) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Appends an `id:` field on its own, ended by a blank line: it sets a client's last event id
/// without dispatching any event (an event with no data is not fired, but its id is kept, per
/// the WHATWG parsing rules). A stream opens with one, so that a client that reconnects before
/// its first comment resumes from where it started instead of from whenever it comes back.
pub fn write_id(out: &mut Vec<u8>, id: &str) {
    out.extend_from_slice(b"id: ");
    push_single_line(out, id);
    out.extend_from_slice(b"\n\n");
}

/// Appends a comment line (`: text`), which clients ignore; used for keep-alives and notices.
pub fn write_comment(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b": ");
    push_single_line(out, text);
    out.extend_from_slice(b"\n\n");
}

/// Appends a `retry:` hint: how long a browser waits before reconnecting.
pub fn write_retry(out: &mut Vec<u8>, millis: u64) {
    out.extend_from_slice(format!("retry: {millis}\n\n").as_bytes());
}

fn push_single_line(out: &mut Vec<u8>, text: &str) {
    for piece in text.split_inclusive(['\r', '\n', '\0']) {
        match piece.strip_suffix(['\r', '\n', '\0']) {
            Some(head) => {
                out.extend_from_slice(head.as_bytes());
                let mut buf = [0u8; 4];
                out.extend_from_slice(REPLACEMENT.encode_utf8(&mut buf).as_bytes());
            }
            None => out.extend_from_slice(piece.as_bytes()),
        }
    }
}

/// Splits on CRLF, CR and LF, as an SSE parser does.
fn split_lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\r', '\n']) {
            Some(index) => {
                let line = &text[..index];
                let after = &text[index..];
                let skip = if after.starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&after[skip..]);
                Some(line)
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(event: &str, id: Option<&str>, data: &str) -> String {
        let mut out = Vec::new();
        write_event(&mut out, event, id, data);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn data_with_line_breaks_becomes_several_data_lines() {
        assert_eq!(
            frame("comment", Some("dc1:1"), "a\r\nb\rc\nd"),
            "event: comment\nid: dc1:1\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(
            frame("x", None, "\n\r\n\r"),
            "event: x\ndata: \ndata: \ndata: \ndata: \n\n"
        );
    }

    #[test]
    fn injected_fields_stay_inside_data() {
        let text = frame("comment", None, "x\n\nevent: likes\ndata: {}");
        assert_eq!(text.matches("\n\n").count(), 1, "{text}");
        assert!(text.contains("data: event: likes\n"));
    }

    #[test]
    fn event_names_and_ids_cannot_break_lines() {
        assert_eq!(
            frame("a\nb", Some("1\r2\x003\r\n"), ""),
            "event: a\u{FFFD}b\nid: 1\u{FFFD}2\u{FFFD}3\u{FFFD}\u{FFFD}\ndata: \n\n"
        );
    }

    #[test]
    fn a_bare_id_is_one_field_and_a_blank_line() {
        let mut out = Vec::new();
        write_id(&mut out, "dc1:4\nevent: x");
        assert_eq!(out, "id: dc1:4\u{FFFD}event: x\n\n".as_bytes());
    }

    #[test]
    fn comments_stay_one_line() {
        let mut out = Vec::new();
        write_comment(&mut out, "x\n\ndata: injected\r");
        assert_eq!(
            out,
            ": x\u{FFFD}\u{FFFD}data: injected\u{FFFD}\n\n".as_bytes()
        );
    }
}
