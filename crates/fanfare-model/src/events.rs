//! What viewers receive: the name and the `data` of every SSE event fanfare sends, one typed
//! struct each, so that the frontend never builds an event's JSON by hand and clients (the
//! tests, the bench, the browser client) read the same shapes back.
//!
//! `comment` events carry a [`Comment`](crate::Comment) and `likes` events a
//! [`LikesEvent`](crate::LikesEvent); the others are here.

use serde::{Deserialize, Serialize};

use crate::VideoId;

/// Event names, as written on the `event:` line.
pub mod name {
    pub const LIKES: &str = "likes";
    pub const COMMENT: &str = "comment";
    pub const TOTAL: &str = "total";
    pub const RESET: &str = "reset";
    pub const DISCONNECT: &str = "disconnect";
    pub const CONNECTION: &str = "connection";
    pub const SUBSCRIPTIONS: &str = "subscriptions";
    pub const VIEWERS: &str = "viewers";
}

/// `event: total`: a video's like total as this datacenter knows it, sent when a stream starts
/// following a video that already has likes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalEvent {
    pub video_id: VideoId,
    pub total: u64,
}

/// `event: reset`: the comments after the viewer's position cannot all be replayed (older than
/// retention, or more than the replay limit); the video goes on from now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetEvent {
    pub video_id: VideoId,
    pub reason: String,
}

/// `event: disconnect`: the frontend ends the stream. `reason` is a short code
/// (`too-slow`), `detail` says what to do. A single-video stream names its video; a
/// multi-video stream does not (the whole connection ends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisconnectEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_id: Option<VideoId>,
    pub reason: String,
    pub detail: String,
}

/// `event: connection`: the first event of a multi-video stream (`GET /v1/events`). Its
/// `connection_id` addresses `POST /v1/connections/{connection_id}/subscriptions` on the same
/// frontend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionEvent {
    pub connection_id: String,
    pub frontend: String,
    pub dc: String,
}

/// `event: subscriptions`: what a multi-video stream follows, sent (with an `id:`) after every
/// change, so that a browser's `Last-Event-ID` always names the current set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionsEvent {
    pub connection_id: String,
    pub videos: Vec<VideoId>,
}

/// `event: viewers`: how many viewers a video has in every datacenter. `partial` is true while
/// some datacenter cannot be reached: its viewers are counted as last known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewersEvent {
    pub video_id: VideoId,
    pub viewers: u64,
    pub partial: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_video_disconnect_names_no_video() {
        let event = DisconnectEvent {
            video_id: None,
            reason: "too-slow".into(),
            detail: "d".into(),
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"reason":"too-slow","detail":"d"}"#
        );
    }

    #[test]
    fn viewers_always_say_whether_they_are_partial() {
        let event = ViewersEvent {
            video_id: VideoId::parse("v").unwrap(),
            viewers: 3,
            partial: false,
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"video_id":"v","viewers":3,"partial":false}"#
        );
    }
}
