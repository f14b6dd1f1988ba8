//! The wire model of fanfare: every name, id and payload that crosses a process boundary.
//!
//! Data flows through these types in this order:
//! 1. a publisher's request becomes an [`Interaction`], stored once in the origin stream of the
//!    datacenter that received it, under the subject from [`names::origin_subject`];
//! 2. NATS sources every origin stream into each datacenter's fan-out stream, where a subject
//!    transform spreads videos over dispatch partitions ([`names::fanout_transform`]);
//! 3. the dispatcher that owns a partition turns each stored interaction into a [`Delivery`] and
//!    sends the local frontends that watch the video one [`FrontendBatch`] each;
//! 4. a frontend renders deliveries for its viewers as SSE frames ([`sse`]) whose `id:` is a
//!    [`Position`].
//!
//! This crate depends on nothing else of fanfare, so that every other crate can share it.

mod connection_position;
pub mod events;
mod ids;
pub mod names;
mod payload;
pub mod sse;

pub use connection_position::{
    write_connection_position, ConnectionPosition, CONNECTION_POSITION_MAX_LEN,
    CONNECTION_POSITION_MAX_VIDEOS, CONNECTION_POSITION_TAG,
};
pub use events::{
    ConnectionEvent, DisconnectEvent, ResetEvent, SubscriptionsEvent, TotalEvent, ViewersEvent,
};
pub use ids::{
    InvalidMessageId, InvalidPosition, InvalidVideoId, MessageId, Position, VideoId,
    MESSAGE_ID_MAX_LEN, POSITION_MAX_LEN, VIDEO_ID_MAX_LEN,
};
pub use payload::{
    check_comment_text, check_user_id, unix_millis, Comment, CommentRequest, Delivery,
    DeliveryPayload, FrontendBatch, Interaction, InvalidBody, LikeBatch, LikeRequest, LikesEvent,
    ViewerReport, COMMENT_TEXT_MAX_CHARS, USER_ID_MAX_LEN,
};
