//! Identifiers that reach NATS subjects or viewers, validated once at the edge.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest accepted video id, in bytes (all accepted characters are ASCII).
pub const VIDEO_ID_MAX_LEN: usize = 64;

/// A video id: `[A-Za-z0-9_-]{1,64}`.
///
/// It becomes one token of NATS subjects and KV keys, so `.`, `*`, `>` and whitespace must never
/// get through; constructing a `VideoId` is the only way to name a video anywhere in fanfare.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VideoId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidVideoId {
    #[error("video id is empty")]
    Empty,
    #[error("video id is longer than {VIDEO_ID_MAX_LEN} characters")]
    TooLong,
    #[error("video id may only contain A-Z, a-z, 0-9, '_' and '-'")]
    BadCharacter,
}

impl VideoId {
    pub fn parse(raw: &str) -> Result<Self, InvalidVideoId> {
        if raw.is_empty() {
            return Err(InvalidVideoId::Empty);
        }
        if raw.len() > VIDEO_ID_MAX_LEN {
            return Err(InvalidVideoId::TooLong);
        }
        let valid = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(InvalidVideoId::BadCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for VideoId {
    type Err = InvalidVideoId;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

impl TryFrom<String> for VideoId {
    type Error = InvalidVideoId;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<VideoId> for String {
    fn from(id: VideoId) -> String {
        id.0
    }
}

impl fmt::Display for VideoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest accepted message id, in bytes (all accepted characters are ASCII).
pub const MESSAGE_ID_MAX_LEN: usize = 64;

/// A message id: `[A-Za-z0-9_-]{1,64}`. It is the `Nats-Msg-Id` header that de-duplicates a
/// retried publish in the origin stream, and a comment's `comment_id`; a publisher chooses it
/// with `Idempotency-Key`, so it is checked like a video id (no CR, LF or `:` that could forge a
/// NATS header line, no whitespace, no subject metacharacter).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MessageId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message id must be 1 to {MESSAGE_ID_MAX_LEN} characters of A-Z, a-z, 0-9, '_' and '-'")]
pub struct InvalidMessageId;

impl MessageId {
    pub fn parse(raw: &str) -> Result<Self, InvalidMessageId> {
        let valid = !raw.is_empty()
            && raw.len() <= MESSAGE_ID_MAX_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(InvalidMessageId);
        }
        Ok(Self(raw.to_owned()))
    }

    /// A fresh unique id (a NUID: 22 alphanumeric characters).
    pub fn generate() -> Self {
        Self(nuid::next().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a viewer stands in a video's history: for each origin datacenter, the sequence number
/// (in that datacenter's origin stream) of the last interaction the viewer was sent.
///
/// It is the SSE `id:` of every comment, written `dc1:12,dc3:7` (origins sorted by name). Because
/// origin sequences are the same wherever they are read, a position taken in one datacenter means
/// the same thing in every other one, which is what lets a viewer resume anywhere.
///
/// Origins are datacenter names ([`crate::names::is_valid_name`]): parsing enforces it, and
/// the origins fanfare records come from subjects whose parsers enforce it too, so a position's
/// text never holds a line break, NUL or separator out of place and always parses back to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Position {
    seqs: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event position: {reason}")]
pub struct InvalidPosition {
    reason: &'static str,
}

impl InvalidPosition {
    pub(crate) fn new(reason: &'static str) -> Self {
        Self { reason }
    }

    /// A position that parses but cannot be used where it was given (`reason` says why).
    pub fn unusable(reason: &'static str) -> Self {
        Self { reason }
    }
}

/// One sequence of a position: plain decimal ASCII digits (no sign, no space), a `u64`.
pub(crate) fn parse_seq(seq: &str) -> Result<u64, InvalidPosition> {
    let digits_only = !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit());
    match seq.parse() {
        Ok(seq) if digits_only => Ok(seq),
        _ => Err(InvalidPosition::new("bad sequence number")),
    }
}

/// Bound on origins in one position, so that a hostile `Last-Event-ID` cannot cost much to parse.
const POSITION_MAX_ORIGINS: usize = 64;

/// Longest textual position: [`POSITION_MAX_ORIGINS`] origins of the longest name with the
/// largest sequence, and their separators. Anything longer is rejected before it is looked at.
pub const POSITION_MAX_LEN: usize =
    POSITION_MAX_ORIGINS * (crate::names::NAME_MAX_LEN + 1 + U64_MAX_DIGITS + 1) - 1;

const U64_MAX_DIGITS: usize = 20;

impl Position {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last sequence seen from `origin`, 0 when none.
    pub fn seq(&self, origin: &str) -> u64 {
        self.seqs.get(origin).copied().unwrap_or(0)
    }

    /// Records `seq` from `origin`; returns false (and changes nothing) when `seq` is not newer
    /// than what the position already holds, i.e. when the interaction is a duplicate.
    pub fn advance(&mut self, origin: &str, seq: u64) -> bool {
        match self.seqs.get_mut(origin) {
            Some(last) if *last >= seq => false,
            Some(last) => {
                *last = seq;
                true
            }
            None => {
                self.seqs.insert(origin.to_owned(), seq);
                true
            }
        }
    }

    pub fn origins(&self) -> impl Iterator<Item = (&str, u64)> {
        self.seqs.iter().map(|(dc, seq)| (dc.as_str(), *seq))
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (origin, seq)) in self.seqs.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{origin}:{seq}")?;
        }
        Ok(())
    }
}

impl FromStr for Position {
    type Err = InvalidPosition;

    /// Parses `origin:seq,origin:seq`: origins are datacenter names
    /// ([`crate::names::is_valid_name`]), each listed once, sequences plain decimal `u64`s
    /// (ASCII digits only: no sign, no space). The empty string is the empty position.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let mut position = Position::new();
        if raw.is_empty() {
            return Ok(position);
        }
        if raw.len() > POSITION_MAX_LEN {
            return Err(InvalidPosition { reason: "too long" });
        }
        for (index, part) in raw.split(',').enumerate() {
            if index >= POSITION_MAX_ORIGINS {
                return Err(InvalidPosition {
                    reason: "too many origins",
                });
            }
            let Some((origin, seq)) = part.split_once(':') else {
                return Err(InvalidPosition {
                    reason: "expected origin:sequence",
                });
            };
            if !crate::names::is_valid_name(origin) {
                return Err(InvalidPosition {
                    reason: "bad origin name",
                });
            }
            let seq = parse_seq(seq)?;
            if position.seqs.insert(origin.to_owned(), seq).is_some() {
                return Err(InvalidPosition {
                    reason: "origin listed twice",
                });
            }
        }
        Ok(position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn video_ids_that_could_reach_a_subject_wildcard_are_rejected() {
        for bad in ["a.b", "a*", "a>", "a b", "", "é", "a\nb", "a/b"] {
            assert!(VideoId::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            VideoId::parse(&"x".repeat(65)),
            Err(InvalidVideoId::TooLong)
        );
        assert!(VideoId::parse(&"x".repeat(64)).is_ok());
        assert!(VideoId::parse("Keynote_2026-live").is_ok());
    }

    #[test]
    fn video_id_deserialization_validates() {
        let bad: Result<VideoId, _> = serde_json::from_str("\"a.b\"");
        assert!(bad.is_err());
    }

    #[test]
    fn position_advance_rejects_replays_and_keeps_newest() {
        let mut position = Position::new();
        assert!(position.advance("dc1", 5));
        assert!(!position.advance("dc1", 5));
        assert!(!position.advance("dc1", 3));
        assert!(position.advance("dc2", 1));
        assert!(position.advance("dc1", 6));
        assert_eq!(position.to_string(), "dc1:6,dc2:1");
    }

    #[test]
    fn malformed_positions_are_errors() {
        for bad in [
            "dc1",
            "dc1:x",
            "DC1:1",
            "dc1:1,dc1:2",
            ":1",
            "dc1:-1",
            "dc1:1,",
            "dc1:+1",
            "dc1: 1",
            " dc1:1",
            "dc1:1 ",
            "dc1:1\n",
            "dc1:1\r\nid: x",
            "dc1:1\u{0}",
            "dc.1:1",
            "dc*:1",
            "-dc:1",
            "dc1:18446744073709551616",
            "dc1:1;dc2:2",
        ] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?} was accepted");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn valid_video_ids_round_trip(raw in "[A-Za-z0-9_-]{1,64}") {
            let id = VideoId::parse(&raw).unwrap();
            prop_assert_eq!(id.as_str(), raw.as_str());
        }

        #[test]
        fn positions_round_trip(seqs in proptest::collection::btree_map("[a-z0-9][a-z0-9-]{0,31}", any::<u64>(), 0..64)) {
            let mut position = Position::new();
            for (origin, seq) in &seqs {
                position.advance(origin, *seq);
            }
            let text = position.to_string();
            let parsed: Position = text.parse().unwrap();
            prop_assert_eq!(parsed, position);
        }

        #[test]
        fn position_parser_never_panics(raw in ".{0,80}") {
            let _ = raw.parse::<Position>();
        }

        /// Inputs built from the position alphabet and the characters that matter around it
        /// (separators, signs, whitespace, controls): whatever parses displays back to a string
        /// that parses to the same position, and holds nothing but names, digits, `:` and `,`.
        #[test]
        fn accepted_positions_are_canonical_and_plain(raw in "[a-z0-9:,\\- +\t\r\n\u{0}.*>]{0,60}") {
            if let Ok(position) = raw.parse::<Position>() {
                let shown = position.to_string();
                prop_assert_eq!(shown.parse::<Position>().unwrap(), position);
                prop_assert!(shown.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-:,".contains(&b)));
                prop_assert!(!raw.contains([' ', '\t', '\r', '\n', '\0', '+', '.', '*', '>']));
            }
        }

        #[test]
        fn message_ids_are_accepted_iff_plain_tokens(raw in proptest::prop_oneof!["[A-Za-z0-9_-]{0,66}", "\\PC{0,70}"]) {
            let plain = (1..=MESSAGE_ID_MAX_LEN).contains(&raw.len())
                && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            prop_assert_eq!(MessageId::parse(&raw).is_ok(), plain);
        }

        #[test]
        fn video_ids_are_accepted_iff_plain_tokens(raw in proptest::prop_oneof!["[A-Za-z0-9_-]{0,66}", "[A-Za-z0-9_.*> %\u{2024}\u{FF0E}-]{0,66}", "\\PC{0,70}"]) {
            let plain = (1..=VIDEO_ID_MAX_LEN).contains(&raw.len())
                && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            prop_assert_eq!(VideoId::parse(&raw).is_ok(), plain);
            if plain {
                prop_assert!(!raw.contains(['.', '*', '>', ' ', '%']));
            }
        }
    }

    #[test]
    fn huge_positions_are_rejected_before_they_are_parsed() {
        let longest: Position = (0..POSITION_MAX_ORIGINS)
            .map(|index| format!("{index:0>32}:{}", u64::MAX))
            .collect::<Vec<_>>()
            .join(",")
            .parse()
            .expect("the longest valid position parses");
        assert_eq!(longest.to_string().len(), POSITION_MAX_LEN);
        let huge = "dc1:1,".repeat(1_000_000);
        assert_eq!(
            huge.parse::<Position>().unwrap_err().reason,
            "too long",
            "rejected by its length alone"
        );
    }
}
