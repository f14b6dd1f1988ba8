//! The `id:` of a multi-video stream: one [`Position`] per followed video.
//!
//! A connection that follows several videos cannot resume from one position per origin: its
//! videos are dispatched by different partitions, so from one origin it may have received a
//! later interaction of one video before an earlier one of another. It resumes from each
//! video's own position instead, and its id lists them all, together with the set it follows
//! (a reconnect follows what the id names).
//!
//! Written `m1;dc1,dc2,dc3;talk-1:12,0,7;talk-2:5,0,3`: the version tag, the origins once
//! (sorted, as in a [`Position`]), then for each video, in the order it was followed, its id
//! and one sequence per origin, in the origins' order. Its length is bounded by what it holds:
//! at most `3 + K × 33 + V × (66 + 21 K)` bytes for V videos and K origins (8.4 KB for 64
//! videos and three datacenters), and the parser refuses anything over
//! [`CONNECTION_POSITION_MAX_LEN`] before looking at it.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use crate::{InvalidPosition, Position, VideoId};

/// What every connection position starts with (and a single-video position never does).
pub const CONNECTION_POSITION_TAG: &str = "m1;";

/// Longest connection position the parser looks at (64 KiB).
pub const CONNECTION_POSITION_MAX_LEN: usize = 64 * 1024;

/// Most videos one connection position may hold.
pub const CONNECTION_POSITION_MAX_VIDEOS: usize = 1024;

/// Most origins one connection position may hold (as in a [`Position`]).
const MAX_ORIGINS: usize = 64;

/// Where a multi-video connection stands: each followed video, in the order it was followed,
/// with its position.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionPosition {
    videos: Vec<(VideoId, Position)>,
}

fn invalid(reason: &'static str) -> InvalidPosition {
    InvalidPosition::new(reason)
}

impl ConnectionPosition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `raw` is written as a connection position (it may still be malformed).
    pub fn is_tagged(raw: &str) -> bool {
        raw.starts_with(CONNECTION_POSITION_TAG)
    }

    /// Adds `video` at `position`, or replaces its position if it is there already.
    pub fn insert(&mut self, video: VideoId, position: Position) {
        match self.videos.iter_mut().find(|(known, _)| *known == video) {
            Some((_, known)) => *known = position,
            None => self.videos.push((video, position)),
        }
    }

    pub fn videos(&self) -> &[(VideoId, Position)] {
        &self.videos
    }

    pub fn into_videos(self) -> Vec<(VideoId, Position)> {
        self.videos
    }
}

/// Writes a connection position: `origins` sorted by name, and for each video its sequences in
/// the order of `origins`. What [`ConnectionPosition`]'s `Display` writes, for callers that keep
/// positions in another shape.
pub fn write_connection_position<'a, V, S>(out: &mut String, origins: &[&str], videos: V)
where
    V: IntoIterator<Item = (&'a VideoId, S)>,
    S: IntoIterator<Item = u64>,
{
    out.push_str(CONNECTION_POSITION_TAG);
    for (index, origin) in origins.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(origin);
    }
    for (video, seqs) in videos {
        out.push(';');
        out.push_str(video.as_str());
        out.push(':');
        for (index, seq) in seqs.into_iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            let _ = write!(out, "{seq}");
        }
    }
}

impl fmt::Display for ConnectionPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origins: BTreeSet<&str> = self
            .videos
            .iter()
            .flat_map(|(_, position)| position.origins().map(|(origin, _)| origin))
            .collect();
        let origins: Vec<&str> = origins.into_iter().collect();
        let mut out = String::new();
        write_connection_position(
            &mut out,
            &origins,
            self.videos.iter().map(|(video, position)| {
                (
                    video,
                    origins
                        .iter()
                        .map(|origin| position.seq(origin))
                        .collect::<Vec<_>>(),
                )
            }),
        );
        f.write_str(&out)
    }
}

impl FromStr for ConnectionPosition {
    type Err = InvalidPosition;

    /// Parses what [`fmt::Display`] writes. Origins are datacenter names, sorted and each
    /// listed once; videos are [`VideoId`]s, each listed once, with exactly one plain decimal
    /// sequence per origin.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.len() > CONNECTION_POSITION_MAX_LEN {
            return Err(invalid("too long"));
        }
        let body = raw
            .strip_prefix(CONNECTION_POSITION_TAG)
            .ok_or_else(|| invalid("not a connection position"))?;
        let mut parts = body.split(';');
        let origins_text = parts.next().unwrap_or_default();
        let origins: Vec<&str> = if origins_text.is_empty() {
            Vec::new()
        } else {
            origins_text.split(',').collect()
        };
        if origins.len() > MAX_ORIGINS {
            return Err(invalid("too many origins"));
        }
        if origins
            .iter()
            .any(|origin| !crate::names::is_valid_name(origin))
        {
            return Err(invalid("bad origin name"));
        }
        if origins.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err(invalid("origins must be sorted and listed once"));
        }
        let mut position = ConnectionPosition::new();
        for part in parts {
            if position.videos.len() >= CONNECTION_POSITION_MAX_VIDEOS {
                return Err(invalid("too many videos"));
            }
            let (video, seqs) = part
                .split_once(':')
                .ok_or_else(|| invalid("expected video:sequences"))?;
            let video = VideoId::parse(video).map_err(|_| invalid("bad video id"))?;
            if position.videos.iter().any(|(known, _)| *known == video) {
                return Err(invalid("video listed twice"));
            }
            let seqs: Vec<&str> = if seqs.is_empty() {
                Vec::new()
            } else {
                seqs.split(',').collect()
            };
            if seqs.len() != origins.len() {
                return Err(invalid("one sequence per origin expected"));
            }
            let mut video_position = Position::new();
            for (origin, seq) in origins.iter().zip(seqs) {
                video_position.advance(origin, crate::ids::parse_seq(seq)?);
            }
            position.videos.push((video, video_position));
        }
        Ok(position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn position(text: &str) -> Position {
        text.parse().unwrap()
    }

    #[test]
    fn videos_keep_their_order_and_origins_are_written_once() {
        let mut connection = ConnectionPosition::new();
        connection.insert(VideoId::parse("b").unwrap(), position("dc1:5,dc2:1"));
        connection.insert(VideoId::parse("a").unwrap(), position("dc3:7"));
        let text = connection.to_string();
        assert_eq!(text, "m1;dc1,dc2,dc3;b:5,1,0;a:0,0,7");
        let parsed: ConnectionPosition = text.parse().unwrap();
        assert_eq!(parsed.videos()[0].0.as_str(), "b");
        assert_eq!(parsed.videos()[1].1.seq("dc3"), 7);
        assert_eq!(parsed.videos()[1].1.seq("dc1"), 0);
    }

    #[test]
    fn an_empty_connection_has_a_position_too() {
        let text = ConnectionPosition::new().to_string();
        assert_eq!(text, "m1;");
        assert!(text
            .parse::<ConnectionPosition>()
            .unwrap()
            .videos()
            .is_empty());
    }

    #[test]
    fn malformed_connection_positions_are_errors() {
        for bad in [
            "",
            "dc1:1",
            "m1",
            "m2;dc1;a:1",
            "m1;dc1;a",
            "m1;dc1;a:",
            "m1;dc1;a:1,2",
            "m1;dc2,dc1;a:1,2",
            "m1;dc1,dc1;a:1,2",
            "m1;dc1;a:1;a:2",
            "m1;dc1;a.b:1",
            "m1;dc1;a:-1",
            "m1;dc1;a:+1",
            "m1;dc1;a: 1",
            "m1;DC1;a:1",
            "m1;dc1;a:1;",
            "m1;dc1;a:1\n",
            "m1;dc1;a:18446744073709551616",
            "m1;dc1;:1",
        ] {
            assert!(
                bad.parse::<ConnectionPosition>().is_err(),
                "{bad:?} was accepted"
            );
        }
        let huge = format!("m1;dc1{}", ";a:1".repeat(CONNECTION_POSITION_MAX_LEN));
        assert!(huge.parse::<ConnectionPosition>().is_err());
        let many: String = (0..=CONNECTION_POSITION_MAX_VIDEOS)
            .map(|index| format!(";v{index}:1"))
            .collect();
        assert!(format!("m1;dc1{many}")
            .parse::<ConnectionPosition>()
            .is_err());
    }

    #[test]
    fn the_documented_bound_holds_for_the_largest_default_connection() {
        let mut connection = ConnectionPosition::new();
        let origins = ["dc1", "dc2", "dc3"];
        for index in 0..64 {
            let video = VideoId::parse(&format!("{index:0>64}")).unwrap();
            let mut seqs = Position::new();
            for origin in origins {
                seqs.advance(origin, u64::MAX);
            }
            connection.insert(video, seqs);
        }
        let len = connection.to_string().len();
        let (videos, origins) = (64, origins.len());
        assert!(
            len <= 3 + origins * 33 + videos * (66 + 21 * origins),
            "{len}"
        );
        assert!(len < 16 * 1024, "fits the default head limit: {len}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn connection_positions_round_trip(
            videos in proptest::collection::vec(("[A-Za-z0-9_-]{1,8}", proptest::collection::btree_map("[a-z0-9]{1,4}", 1..u64::MAX, 0..4)), 0..8),
        ) {
            let mut connection = ConnectionPosition::new();
            for (video, seqs) in &videos {
                let mut position = Position::new();
                for (origin, seq) in seqs {
                    position.advance(origin, *seq);
                }
                connection.insert(VideoId::parse(video).unwrap(), position);
            }
            let text = connection.to_string();
            let parsed: ConnectionPosition = text.parse().unwrap();
            prop_assert_eq!(parsed.videos().len(), connection.videos().len());
            for ((video, position), (parsed_video, parsed_position)) in connection.videos().iter().zip(parsed.videos()) {
                prop_assert_eq!(video, parsed_video);
                for (origin, seq) in position.origins() {
                    prop_assert_eq!(parsed_position.seq(origin), seq);
                }
            }
            prop_assert_eq!(parsed.to_string(), text);
        }

        #[test]
        fn the_parser_never_panics(raw in "m1;[a-z0-9,;:.A-Z_-]{0,80}") {
            let _ = raw.parse::<ConnectionPosition>();
        }
    }
}
