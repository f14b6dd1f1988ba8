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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LikeRequest {
    #[serde(default)]
    pub user_id: Option<String>,
}

/// Body of `POST /v1/videos/{id}/comments`; `user_id` as for [`LikeRequest`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommentRequest {
    #[serde(default)]
    pub user_id: Option<String>,
    pub text: String,
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
    }
}
