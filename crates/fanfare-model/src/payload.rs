//! Payloads: what publishers send, what origin streams store, what dispatchers send frontends
//! and what viewers receive.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::VideoId;

/// Longest accepted user id, in bytes.
pub const USER_ID_MAX_LEN: usize = 128;
/// Longest accepted comment, in characters.
pub const COMMENT_TEXT_MAX_CHARS: usize = 2000;

/// Body of `POST /v1/videos/{id}/likes`. `user_id` is required with authentication off;
/// with it on, the token's subject is the user and `user_id`, if given, must equal it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LikeRequest {
    #[serde(default)]
    pub user_id: Option<String>,
}

/// Body of `POST /v1/videos/{id}/comments`; `user_id` as for [`LikeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommentRequest {
    #[serde(default)]
    pub user_id: Option<String>,
    pub text: String,
}

/// Why a publish body was refused. Every message is safe to show the publisher.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBody {
    #[error("body is not valid UTF-8")]
    NotUtf8,
    #[error("body must be a JSON object")]
    NotAnObject,
    /// Not JSON, not an object of the expected fields, or a field of the wrong type (the JSON
    /// parser's message, which says where).
    #[error("{0}")]
    Json(String),
    #[error("user_id must be 1 to {USER_ID_MAX_LEN} bytes")]
    UserIdLength,
    #[error("user_id must not contain control characters")]
    UserIdControl,
    #[error("text must not be empty")]
    TextEmpty,
    /// Longer than `limit` characters: the model's bound, or a lower one the frontend is
    /// configured with.
    #[error("text must be at most {limit} characters")]
    TextTooLong { limit: usize },
    #[error(
        "text must not contain control characters other than tab, line feed and carriage \
         return (found U+{0:04X})"
    )]
    TextControl(u32),
}

impl LikeRequest {
    /// Parses and checks a like body. A pure function of the bytes: every input is either a
    /// request that may be published or an [`InvalidBody`], never a panic.
    pub fn decode(body: &[u8]) -> Result<Self, InvalidBody> {
        let request: Self = decode_json(body)?;
        if let Some(user_id) = &request.user_id {
            check_user_id(user_id)?;
        }
        Ok(request)
    }
}

impl CommentRequest {
    /// Parses and checks a comment body; see [`LikeRequest::decode`] and [`check_comment_text`].
    pub fn decode(body: &[u8]) -> Result<Self, InvalidBody> {
        Self::decode_within(body, COMMENT_TEXT_MAX_CHARS)
    }

    /// [`CommentRequest::decode`] for text of at most `max_chars` characters (capped at
    /// [`COMMENT_TEXT_MAX_CHARS`]): a frontend may be configured with a lower bound.
    pub fn decode_within(body: &[u8], max_chars: usize) -> Result<Self, InvalidBody> {
        let request: Self = decode_json(body)?;
        if let Some(user_id) = &request.user_id {
            check_user_id(user_id)?;
        }
        check_comment_text_within(&request.text, max_chars)?;
        Ok(request)
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, InvalidBody> {
    // Checked first so that invalid UTF-8 anywhere (not only inside a string) gets one clear
    // answer. JSON escapes cannot smuggle what this rejects: serde_json refuses lone surrogates.
    std::str::from_utf8(body).map_err(|_| InvalidBody::NotUtf8)?;
    // serde's derived structs also accept a JSON array of the field values in order
    // (`["u","text"]`); the contract is an object with named fields, nothing else.
    let starts_an_object = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| *b == b'{');
    if !starts_an_object {
        return Err(InvalidBody::NotAnObject);
    }
    serde_json::from_slice(body).map_err(|error| InvalidBody::Json(error.to_string()))
}

/// A user id: 1 to [`USER_ID_MAX_LEN`] bytes, no control character.
pub fn check_user_id(user_id: &str) -> Result<(), InvalidBody> {
    if user_id.is_empty() || user_id.len() > USER_ID_MAX_LEN {
        return Err(InvalidBody::UserIdLength);
    }
    if user_id.chars().any(char::is_control) {
        return Err(InvalidBody::UserIdControl);
    }
    Ok(())
}

/// What comment text fanfare accepts: 1 to [`COMMENT_TEXT_MAX_CHARS`] characters (Unicode
/// scalar values, so a 4-byte emoji counts one), and no control character (Unicode category
/// Cc: U+0000 to U+001F, U+007F, U+0080 to U+009F) other than tab, line feed and carriage
/// return.
///
/// Why: framing does not depend on it. Text travels JSON-escaped on one `data:` line, so nothing
/// in it can end or inject an SSE event, and accepted text reaches viewers byte for byte. But
/// NUL, escape sequences (ESC), backspace, bell or C1 controls are never part of a human
/// comment: they exist to truncate C strings, rewrite terminals and logs, or confuse the software
/// that shows comments, so they are refused (400) rather than silently altered. Line breaks
/// and tabs are kept: multi-line comments are ordinary. Format characters (zero-width joiners,
/// bidirectional marks and overrides), combining marks, emoji and every other assigned or
/// unassigned character are accepted unchanged: right-to-left languages need the bidi
/// controls, and showing text safely (isolating its direction, escaping HTML) is the job of
/// whatever renders it.
pub fn check_comment_text(text: &str) -> Result<(), InvalidBody> {
    check_comment_text_within(text, COMMENT_TEXT_MAX_CHARS)
}

/// [`check_comment_text`] with at most `max_chars` characters (capped at
/// [`COMMENT_TEXT_MAX_CHARS`]).
fn check_comment_text_within(text: &str, max_chars: usize) -> Result<(), InvalidBody> {
    if text.is_empty() {
        return Err(InvalidBody::TextEmpty);
    }
    let mut chars = 0usize;
    for ch in text.chars() {
        chars += 1;
        if ch.is_control() && !matches!(ch, '\t' | '\n' | '\r') {
            return Err(InvalidBody::TextControl(ch as u32));
        }
    }
    let limit = max_chars.min(COMMENT_TEXT_MAX_CHARS);
    if chars > limit {
        return Err(InvalidBody::TextTooLong { limit });
    }
    Ok(())
}

/// One message of an origin stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Interaction {
    Likes(LikeBatch),
    Comment(Comment),
}

impl Interaction {
    pub fn kind(&self) -> crate::names::Kind {
        match self {
            Interaction::Likes(_) => crate::names::Kind::Likes,
            Interaction::Comment(_) => crate::names::Kind::Comment,
        }
    }

    pub fn video_id(&self) -> &VideoId {
        match self {
            Interaction::Likes(likes) => &likes.video_id,
            Interaction::Comment(comment) => &comment.video_id,
        }
    }
}

/// `count` likes on one video that arrived together at one frontend and were stored as one
/// message (group commit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LikeBatch {
    pub video_id: VideoId,
    pub count: u64,
    pub origin_dc: String,
    pub published_at: u64,
}

/// A comment, as stored and as sent to viewers (`event: comment`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub video_id: VideoId,
    pub comment_id: String,
    pub user_id: String,
    pub text: String,
    pub origin_dc: String,
    /// Milliseconds since the Unix epoch, taken by the frontend that accepted it.
    pub published_at: u64,
}

/// What a viewer receives as `event: likes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LikesEvent {
    pub video_id: VideoId,
    /// Likes since the previous `likes` event on this connection.
    pub count: u64,
    /// The video's total as this datacenter knows it.
    pub total: u64,
}

/// One NATS message from a dispatcher to one frontend: every delivery of one dispatch round for
/// the videos that frontend watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendBatch {
    pub dispatcher: String,
    pub deliveries: Vec<Delivery>,
}

/// One stored interaction, addressed to the viewers of its video.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub video_id: VideoId,
    pub origin_dc: String,
    /// Sequence of the interaction in its origin stream; frontends drop anything not newer than
    /// what they already delivered from that origin for that video.
    pub origin_seq: u64,
    pub payload: DeliveryPayload,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeliveryPayload {
    Likes { count: u64, total: u64 },
    Comment(Comment),
}

impl From<Interaction> for DeliveryPayload {
    /// A like batch's `total` is 0 until a dispatcher has counted it.
    fn from(interaction: Interaction) -> Self {
        match interaction {
            Interaction::Likes(likes) => DeliveryPayload::Likes {
                count: likes.count,
                total: 0,
            },
            Interaction::Comment(comment) => DeliveryPayload::Comment(comment),
        }
    }
}

/// One frontend's viewer counts, as it reports them to every other frontend (core NATS,
/// `fanfare.viewers.report.<dc>.<frontend>`).
///
/// Reports of one frontend instance (`epoch`) are numbered (`seq`); a receiver that sees a gap
/// or a new epoch asks for a full report. A full report replaces what the receiver knew of the
/// frontend; the others set the counts they carry (0: no viewers any more). One with no
/// counts is a heartbeat. A frontend that stops sends a full report with nothing in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewerReport {
    pub frontend: String,
    pub dc: String,
    pub epoch: String,
    pub seq: u64,
    /// Replaces everything known of this frontend (the first of the messages of a full report
    /// split in several: the rest follow as ordinary reports).
    pub full: bool,
    pub counts: std::collections::BTreeMap<VideoId, u64>,
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interactions_are_tagged_by_kind() {
        let likes = Interaction::Likes(LikeBatch {
            video_id: VideoId::parse("v").unwrap(),
            count: 3,
            origin_dc: "dc1".into(),
            published_at: 1,
        });
        let json = serde_json::to_string(&likes).unwrap();
        assert!(json.starts_with(r#"{"kind":"likes""#), "{json}");
        let back: Interaction = serde_json::from_str(&json).unwrap();
        assert_eq!(back, likes);
    }

    #[test]
    fn publish_bodies_reject_unknown_fields() {
        let body = r#"{"user_id":"u","extra":1}"#;
        assert!(serde_json::from_str::<LikeRequest>(body).is_err());
        assert!(matches!(
            LikeRequest::decode(body.as_bytes()),
            Err(InvalidBody::Json(_))
        ));
    }

    #[test]
    fn invalid_utf8_and_lone_surrogates_are_refused() {
        assert_eq!(
            CommentRequest::decode(b"{\"user_id\":\"u\",\"text\":\"a\xffb\"}"),
            Err(InvalidBody::NotUtf8)
        );
        assert_eq!(
            LikeRequest::decode(b"{\"user_id\":\"u\"}\xc3"),
            Err(InvalidBody::NotUtf8)
        );
        let surrogate = br#"{"user_id":"u","text":"\ud800"}"#;
        assert!(matches!(
            CommentRequest::decode(surrogate),
            Err(InvalidBody::Json(_))
        ));
        let pair = br#"{"user_id":"u","text":"\ud83c\udf89"}"#;
        assert_eq!(CommentRequest::decode(pair).unwrap().text, "\u{1F389}");
    }

    /// Found by the property test of publish bodies: serde's derived structs take an array of
    /// the field values too.
    #[test]
    fn arrays_of_field_values_are_refused() {
        assert_eq!(
            LikeRequest::decode(br#"["u"]"#),
            Err(InvalidBody::NotAnObject)
        );
        assert_eq!(
            CommentRequest::decode(br#" ["u","text"]"#),
            Err(InvalidBody::NotAnObject)
        );
        assert_eq!(
            LikeRequest::decode(b" \r\n\t{\"user_id\":\"u\"} \n")
                .unwrap()
                .user_id
                .as_deref(),
            Some("u")
        );
    }

    #[test]
    fn duplicate_fields_are_refused() {
        let body = br#"{"user_id":"a","user_id":"b"}"#;
        assert!(matches!(
            LikeRequest::decode(body),
            Err(InvalidBody::Json(_))
        ));
    }

    #[test]
    fn comment_text_keeps_line_breaks_and_refuses_other_controls() {
        for ok in [
            "line\nbreak",
            "\r\n",
            "\ttab",
            "\n\ndata: injected",
            "<script>alert(1)</script>",
            "\u{202E}override\u{202C}",
            "e\u{301}\u{301}\u{301}",
            "\u{1F469}\u{200D}\u{1F4BB}",
            "\u{FEFF}bom",
            "\u{FFFF}",
        ] {
            assert_eq!(check_comment_text(ok), Ok(()), "{ok:?}");
        }
        for (bad, code) in [
            ("nul\u{0}", 0),
            ("esc\u{1B}[2J", 0x1B),
            ("bell\u{7}", 7),
            ("del\u{7F}", 0x7F),
            ("c1\u{85}", 0x85),
            ("c1\u{9B}31m", 0x9B),
            ("vt\u{B}", 0xB),
            ("ff\u{C}", 0xC),
        ] {
            assert_eq!(
                check_comment_text(bad),
                Err(InvalidBody::TextControl(code)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn comment_length_counts_characters_not_bytes() {
        let emoji = "\u{1F389}".repeat(COMMENT_TEXT_MAX_CHARS);
        assert_eq!(check_comment_text(&emoji), Ok(()));
        let over = format!("{emoji}x");
        assert_eq!(
            check_comment_text(&over),
            Err(InvalidBody::TextTooLong {
                limit: COMMENT_TEXT_MAX_CHARS
            })
        );
        assert_eq!(check_comment_text(""), Err(InvalidBody::TextEmpty));
    }
}
