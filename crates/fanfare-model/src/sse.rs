//! Server-Sent Events framing.
//!
//! Whatever the text, the frame stays one event: `data` is split on every line break (CRLF, CR or
//! LF) into `data:` lines, and names, ids and comments have line breaks and NUL replaced, so no
//! input can end an event early or inject a field.

/// Appends one event: `event:`, optional `id:`, `data:` lines and the blank line.
pub fn write_event(out: &mut Vec<u8>, event: &str, id: Option<&str>, data: &str) {
    out.extend_from_slice(b"event: ");
    push_single_line(out, event);
    out.push(b'\n');
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        push_single_line(out, id);
        out.push(b'\n');
    }
    for line in split_lines(data) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
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
    for ch in text.chars() {
        match ch {
            '\r' | '\n' | '\0' => out.push(b' '),
            _ => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
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
            frame("a\nb", Some("1\r2\x003"), ""),
            "event: a b\nid: 1 2 3\ndata: \n\n"
        );
    }
}
