//! Names of every NATS subject, stream, consumer and bucket fanfare uses.
//!
//! Every value that becomes a subject token, stream or bucket name is checked before it gets
//! here: video ids are [`VideoId`]s, message ids [`MessageId`](crate::MessageId)s, and datacenter
//! and node names pass [`check_name`] where they enter fanfare (topology files, node configs).
//! None of them can hold a subject separator (`.`), wildcard (`*`, `>`), whitespace or control
//! character. The builders below also assert it in debug builds, so a caller that skipped the
//! check fails its tests instead of addressing the wrong subjects.

use crate::VideoId;

/// Longest datacenter or node name.
pub const NAME_MAX_LEN: usize = 32;

/// What a datacenter or node name looks like.
pub const NAME_PATTERN: &str = "[a-z0-9][a-z0-9-]{0,31}";

/// A datacenter or node name that does not match [`NAME_PATTERN`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {shown:?}: must match {NAME_PATTERN}")]
pub struct InvalidName {
    /// The start of the name, for the message (a hostile one may be huge).
    shown: String,
}

/// Whether `name` may name a datacenter or node: `[a-z0-9][a-z0-9-]{0,31}`. Such a name is one
/// subject token, a valid stream and bucket name suffix, and a valid part of an event position.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match bytes.split_first() {
        Some((first, rest)) => {
            bytes.len() <= NAME_MAX_LEN
                && allowed(first)
                && rest.iter().all(|b| allowed(b) || *b == b'-')
        }
        None => false,
    }
}

/// [`is_valid_name`] as a result whose error says what is wrong.
pub fn check_name(name: &str) -> Result<(), InvalidName> {
    if is_valid_name(name) {
        return Ok(());
    }
    Err(InvalidName {
        shown: name.chars().take(NAME_MAX_LEN + 8).collect(),
    })
}

/// Debug-build guard in every builder: names reach subjects only after [`check_name`].
fn debug_check(names: &[&str]) {
    for name in names {
        debug_assert!(
            is_valid_name(name),
            "unchecked name {name:?} reached a subject"
        );
    }
}

/// Per-datacenter stream that holds every interaction published in that datacenter, once.
pub fn origin_stream(dc: &str) -> String {
    debug_check(&[dc]);
    format!("EVENTS_{dc}")
}

/// Last subject token: what kind of interaction a message holds, so that comments can be read
/// back (replay) without walking through likes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Likes,
    Comment,
}

impl Kind {
    pub fn token(self) -> &'static str {
        match self {
            Kind::Likes => "likes",
            Kind::Comment => "comment",
        }
    }
}

/// Subject an interaction of `kind` on `video` published in `dc` is stored under.
pub fn origin_subject(dc: &str, video: &VideoId, kind: Kind) -> String {
    debug_check(&[dc]);
    format!("fanfare.events.{dc}.{video}.{}", kind.token())
}

/// Every subject of `dc`'s origin stream.
pub fn origin_subjects(dc: &str) -> String {
    debug_check(&[dc]);
    format!("fanfare.events.{dc}.*.*")
}

/// Per-datacenter stream that sources every origin stream: that datacenter's copy of all
/// interactions, whatever datacenter received them.
pub fn fanout_stream(dc: &str) -> String {
    debug_check(&[dc]);
    format!("FANOUT_{dc}")
}

/// Destination of the subject transform applied while `dc`'s fan-out stream sources `origin`:
/// it inserts the dispatch partition of the video (a hash of the video token), so that all
/// interactions on one video, from every origin, land in one partition and keep their order.
pub fn fanout_transform(dc: &str, origin: &str, partitions: u16) -> String {
    debug_check(&[dc, origin]);
    format!(
        "fanfare.fanout.{dc}.{{{{partition({partitions},1)}}}}.{origin}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}"
    )
}

/// Filter of the consumer for one dispatch partition of `dc`'s fan-out stream.
pub fn fanout_partition_filter(dc: &str, partition: u16) -> String {
    debug_check(&[dc]);
    format!("fanfare.fanout.{dc}.{partition}.>")
}

/// Every comment on `video` from `origin` in `dc`'s fan-out stream, whatever its partition.
pub fn fanout_comments(dc: &str, origin: &str, video: &VideoId) -> String {
    debug_check(&[dc, origin]);
    format!("fanfare.fanout.{dc}.*.{origin}.{video}.comment")
}

/// Every interaction from `origin` in `dc`'s fan-out stream.
pub fn fanout_from_origin(dc: &str, origin: &str) -> String {
    debug_check(&[dc, origin]);
    format!("fanfare.fanout.{dc}.*.{origin}.>")
}

/// Durable consumer name of one dispatch partition.
pub fn dispatch_consumer(partition: u16) -> String {
    format!("dispatch-p{partition}")
}

/// Priority group every dispatcher of a datacenter pulls partitions with; the server pins each
/// partition to one dispatcher at a time.
pub const DISPATCH_GROUP: &str = "dispatch";

/// Key-value bucket of `dc`'s subscription table: per frontend one lease key, and one interest
/// key per video that frontend has viewers of (see [`SubscriptionKey`]).
pub fn subscription_bucket(dc: &str) -> String {
    debug_check(&[dc]);
    format!("SUBS_{dc}")
}

/// A key of the subscription table, as written by frontends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionKey<'a> {
    /// `v.<video>.<frontend>`: the frontend has viewers of the video. Its value is the epoch of
    /// the frontend's lease it was written under; it holds only while that lease is alive.
    Interest { video: VideoId, frontend: &'a str },
    /// `f.<frontend>`: the frontend's lease, refreshed every third of `interest_ttl` and gone
    /// (by the key's own TTL) when the frontend stops refreshing it. Its value is the epoch.
    Lease { frontend: &'a str },
}

/// Key of one frontend's interest in one video.
pub fn interest_key(video: &VideoId, frontend: &str) -> String {
    debug_check(&[frontend]);
    format!("v.{video}.{frontend}")
}

/// Every interest key of `frontend`, as a filter of the bucket's keys.
pub fn interest_keys_of(frontend: &str) -> String {
    debug_check(&[frontend]);
    format!("v.*.{frontend}")
}

/// Key of one frontend's lease.
pub fn lease_key(frontend: &str) -> String {
    debug_check(&[frontend]);
    format!("f.{frontend}")
}

/// Splits a subscription-table key; None for keys fanfare did not write.
pub fn parse_subscription_key(key: &str) -> Option<SubscriptionKey<'_>> {
    if let Some(frontend) = key.strip_prefix("f.") {
        return is_valid_name(frontend).then_some(SubscriptionKey::Lease { frontend });
    }
    let (video, frontend) = key.strip_prefix("v.")?.split_once('.')?;
    let video = VideoId::parse(video).ok()?;
    if !is_valid_name(frontend) {
        return None;
    }
    Some(SubscriptionKey::Interest { video, frontend })
}

/// Core NATS subject a frontend reports its viewer counts on (see the frontend's `counts`).
pub fn viewer_report(dc: &str, frontend: &str) -> String {
    debug_check(&[dc, frontend]);
    format!("fanfare.viewers.report.{dc}.{frontend}")
}

/// Every frontend's viewer reports, in every datacenter.
pub const VIEWER_REPORTS: &str = "fanfare.viewers.report.>";

/// Core NATS subject that asks one frontend to send all its viewer counts again.
pub fn viewer_sync(dc: &str, frontend: &str) -> String {
    debug_check(&[dc, frontend]);
    format!("fanfare.viewers.sync.{dc}.{frontend}")
}

/// Every frontend's sync subject: what any frontend may ask.
pub const VIEWER_SYNCS: &str = "fanfare.viewers.sync.*.*";

/// Key-value bucket of `dc`'s like totals per video, written by the dispatcher that owns the
/// video's partition.
pub fn totals_bucket(dc: &str) -> String {
    debug_check(&[dc]);
    format!("TOTALS_{dc}")
}

/// Core NATS subject a frontend receives its dispatchers' batches on.
pub fn frontend_inbox(dc: &str, frontend: &str) -> String {
    debug_check(&[dc, frontend]);
    format!("fanfare.{dc}.fe.{frontend}")
}

/// Every frontend inbox of `dc`: what its dispatchers may send to.
pub fn frontend_inboxes(dc: &str) -> String {
    debug_check(&[dc]);
    format!("fanfare.{dc}.fe.*")
}

/// Splits a fan-out subject `fanfare.fanout.<dc>.<partition>.<origin>.<video>.<kind>` into
/// origin and video.
pub fn parse_fanout_subject(subject: &str) -> Option<(&str, VideoId)> {
    let mut tokens = subject.split('.');
    let (Some("fanfare"), Some("fanout"), Some(_dc), Some(_partition)) =
        (tokens.next(), tokens.next(), tokens.next(), tokens.next())
    else {
        return None;
    };
    origin_video_kind(tokens)
}

/// Splits an origin subject `fanfare.events.<origin>.<video>.<kind>` into origin and video.
pub fn parse_origin_subject(subject: &str) -> Option<(&str, VideoId)> {
    let mut tokens = subject.split('.');
    let (Some("fanfare"), Some("events")) = (tokens.next(), tokens.next()) else {
        return None;
    };
    origin_video_kind(tokens)
}

/// The last three tokens of an interaction subject, `<origin>.<video>.<kind>`, and nothing
/// after them.
fn origin_video_kind<'a>(mut tokens: std::str::Split<'a, char>) -> Option<(&'a str, VideoId)> {
    let origin = tokens.next().filter(|origin| is_valid_name(origin))?;
    let video = VideoId::parse(tokens.next()?).ok()?;
    let _kind = tokens.next()?;
    if tokens.next().is_some() {
        return None;
    }
    Some((origin, video))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_transform_uses_nats_mapping_functions() {
        assert_eq!(
            fanout_transform("dc2", "dc1", 8),
            "fanfare.fanout.dc2.{{partition(8,1)}}.dc1.{{wildcard(1)}}.{{wildcard(2)}}"
        );
    }

    #[test]
    fn fanout_subject_parses_back() {
        let (origin, video) =
            parse_fanout_subject("fanfare.fanout.dc2.3.dc1.talk-1.comment").unwrap();
        assert_eq!(origin, "dc1");
        assert_eq!(video.as_str(), "talk-1");
        assert!(parse_fanout_subject("fanfare.fanout.dc2.3.dc1.talk-1").is_none());
        assert!(parse_fanout_subject("fanfare.fanout.dc2.3.dc1.a.likes.b").is_none());
    }

    #[test]
    fn origin_subject_parses_back() {
        let video = VideoId::parse("talk-1").unwrap();
        let subject = origin_subject("dc1", &video, Kind::Likes);
        assert_eq!(parse_origin_subject(&subject), Some(("dc1", video)));
        assert!(parse_origin_subject("fanfare.events.dc1.talk-1").is_none());
        assert!(parse_origin_subject("fanfare.fanout.dc1.talk-1.likes").is_none());
    }

    #[test]
    fn subscription_keys_round_trip() {
        let video = VideoId::parse("v1").unwrap();
        let key = interest_key(&video, "dc1-fe1");
        assert_eq!(
            parse_subscription_key(&key),
            Some(SubscriptionKey::Interest {
                video,
                frontend: "dc1-fe1"
            })
        );
        assert_eq!(
            parse_subscription_key(&lease_key("dc1-fe1")),
            Some(SubscriptionKey::Lease {
                frontend: "dc1-fe1"
            })
        );
        // A video may be called `f`: its keys still say which is which.
        let f = VideoId::parse("f").unwrap();
        assert!(matches!(
            parse_subscription_key(&interest_key(&f, "fe")),
            Some(SubscriptionKey::Interest { .. })
        ));
        for other in [
            "nodot",
            "v1.fe1",
            "v.v1.fe,1",
            "f.Fe",
            "v.a.b.c",
            "f.",
            "x.v.fe",
        ] {
            assert_eq!(parse_subscription_key(other), None, "{other}");
        }
    }

    #[test]
    fn names_that_could_inject_into_a_subject_are_rejected() {
        for bad in [
            "",
            "dc.1",
            "dc*",
            "dc>",
            "dc 1",
            "dc\t1",
            "dc\n1",
            "dc\u{0}",
            "DC1",
            "-dc",
            "dc_1",
            "d\u{441}1",
            "dc%2E1",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(check_name(&"a".repeat(NAME_MAX_LEN + 1)).is_err());
        for good in ["dc1", "0", "dc1-fe-2", &"a".repeat(NAME_MAX_LEN)] {
            assert!(check_name(good).is_ok(), "{good:?} was rejected");
        }
    }

    #[test]
    fn subjects_from_other_writers_do_not_parse() {
        assert!(parse_origin_subject("fanfare.events.d,c:1.v.comment").is_none());
        assert!(parse_fanout_subject("fanfare.fanout.dc2.3.D C.v.comment").is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 1024, ..Default::default() })]

        #[test]
        fn an_accepted_name_never_holds_a_subject_metacharacter(
            name in proptest::prop_oneof!["[a-z0-9.*>, :\t\n-]{0,34}", "\\PC{0,40}"],
        ) {
            if is_valid_name(&name) {
                proptest::prop_assert!(!name.contains(['.', '*', '>', ' ', ',', ':']));
                proptest::prop_assert!(!name.chars().any(|c| c.is_whitespace() || c.is_control()));
            }
        }
    }
}
