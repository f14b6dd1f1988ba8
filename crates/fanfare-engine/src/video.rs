//! One video on one frontend: where its history stands, its likes as handed to its viewers,
//! its viewer count as shown, and the connections that follow it.
//!
//! Two locks, never held across an await, taken in this order when both are needed:
//! `followers` (who follows; held while a comment is pushed to them, which keeps every
//! connection's copy in delivery order), then a connection's own state, then `state` (a few
//! counters, read by every writer that wakes up). A writer never takes `followers`, so a
//! comment pushed to 5,000 viewers never blocks a viewer reading its likes.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use fanfare_model::{events, sse, LikesEvent, VideoId, ViewersEvent};
use tokio::sync::Notify;

use crate::connection::ConnShared;
use crate::origins::Seqs;

pub(crate) struct Video {
    pub(crate) id: VideoId,
    pub(crate) followers: Mutex<Followers>,
    pub(crate) state: Mutex<VideoState>,
    /// Woken once the video's position and total are seeded (see [`crate::Hub::seed`]).
    pub(crate) seeded: Notify,
}

#[derive(Default)]
pub(crate) struct Followers {
    pub(crate) connections: Vec<Arc<ConnShared>>,
    /// In the hub's list of videos whose follower count changed.
    pub(crate) recount_queued: bool,
}

/// Likes as handed out to a video's viewers: a viewer is owed `handed_out` minus what it was
/// sent, however far behind it is, so likes never queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Likes {
    pub(crate) handed_out: u64,
    pub(crate) total: u64,
}

/// The `likes` event of one hand-out, encoded once: every viewer that was sent everything up to
/// `from` writes these bytes as they are.
#[derive(Clone)]
pub(crate) struct LikesFrame {
    pub(crate) from: u64,
    pub(crate) to: Likes,
    pub(crate) bytes: Bytes,
}

/// The `viewers` event as last shown, encoded once.
#[derive(Clone)]
pub(crate) struct Shown {
    pub(crate) viewers: u64,
    pub(crate) partial: bool,
    pub(crate) bytes: Bytes,
}

#[derive(Default)]
pub(crate) struct VideoState {
    /// What this frontend has delivered for the video, per origin.
    pub(crate) position: Seqs,
    pub(crate) likes: Likes,
    /// Likes received since the last hand-out (a flush, or the next comment).
    pub(crate) pending_likes: u64,
    pub(crate) likes_frame: Option<LikesFrame>,
    /// While a comment is being pushed to the followers, the likes handed out before it: a
    /// writer does not write likes past them until it has the comment, so a like never
    /// overtakes a comment it came after.
    pub(crate) in_flight: Option<Likes>,
    pub(crate) shown: Option<Shown>,
    /// In the hub's list of videos with likes to hand out.
    pub(crate) liked_queued: bool,
    pub(crate) seeded: bool,
}

impl VideoState {
    /// Hands out the pending likes; the hand-out to encode, if there were any.
    pub(crate) fn hand_out(&mut self) -> Option<(u64, Likes)> {
        if self.pending_likes == 0 {
            return None;
        }
        let from = self.likes.handed_out;
        self.likes.handed_out += std::mem::take(&mut self.pending_likes);
        Some((from, self.likes))
    }

    /// The likes a writer may write up to now.
    pub(crate) fn writable_likes(&self) -> Likes {
        self.in_flight.unwrap_or(self.likes)
    }
}

/// A comment from `origin` (its sequence there), ready to write: `head` (its `event:` and
/// `id:` lines, for a viewer whose position this comment moves to `position`) and `data`
/// (everything after them), both shared by every follower of the video.
pub(crate) struct Frame {
    pub(crate) video: Arc<Video>,
    pub(crate) origin: usize,
    pub(crate) seq: u64,
    /// The video's position with this comment.
    pub(crate) position: Seqs,
    pub(crate) head: Bytes,
    pub(crate) data: Bytes,
    /// The likes handed out before the comment; a writer writes them first.
    pub(crate) likes_before: Likes,
    /// The hand-out just before the comment, encoded, when there was one.
    pub(crate) likes_frame: Option<LikesFrame>,
}

impl Video {
    pub(crate) fn new(id: VideoId) -> Self {
        Self {
            id,
            followers: Mutex::default(),
            state: Mutex::default(),
            seeded: Notify::new(),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, VideoState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn followers(&self) -> MutexGuard<'_, Followers> {
        self.followers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Renders a `likes` event.
pub(crate) fn encode_likes(video: &VideoId, count: u64, total: u64) -> Bytes {
    let event = LikesEvent {
        video_id: video.clone(),
        count,
        total,
    };
    encode_event(events::name::LIKES, None, &event)
}

pub(crate) fn encode_viewers(video: &VideoId, viewers: u64, partial: bool) -> Bytes {
    let event = ViewersEvent {
        video_id: video.clone(),
        viewers,
        partial,
    };
    encode_event(events::name::VIEWERS, None, &event)
}

/// Renders one whole event whose data is `data` as JSON.
pub fn encode_event(name: &str, id: Option<&str>, data: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_default();
    let mut out = Vec::with_capacity(json.len() + 32);
    sse::write_event(&mut out, name, id, &json);
    Bytes::from(out)
}

/// The data part of an event (after its `event:`/`id:` lines).
pub(crate) fn encode_data(data: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_default();
    let mut out = Vec::with_capacity(json.len() + 16);
    sse::write_event_data(&mut out, &json);
    Bytes::from(out)
}

/// The head of an event (its `event:` and `id:` lines).
pub(crate) fn encode_head(name: &str, id: &str) -> Bytes {
    let mut out = Vec::with_capacity(name.len() + id.len() + 16);
    sse::write_event_head(&mut out, name, Some(id));
    Bytes::from(out)
}
