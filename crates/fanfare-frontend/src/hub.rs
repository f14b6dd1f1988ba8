//! Video → viewers of this frontend, and the de-duplication and ordering of what dispatchers
//! send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fanfare_model::{sse, Delivery, DeliveryPayload, LikesEvent, Position, VideoId};
use tokio::sync::broadcast;

/// What a video's viewers are sent, encoded once for all of them.
#[derive(Debug, Clone)]
pub(crate) enum Frame {
    /// Time for an SSE comment, so that proxies and clients see the stream is alive.
    KeepAlive,
    /// `count` more likes, the video now at `total`; a viewer's stream sums consecutive ones.
    Likes { count: u64, total: u64 },
    /// A comment from `origin` (its sequence there), as a whole SSE event ready to write.
    Comment {
        origin: Arc<str>,
        seq: u64,
        encoded: Bytes,
    },
}

struct VideoState {
    viewers: usize,
    /// Sent by [`Hub::deliver`], received by each viewer's stream; capacity is the
    /// `viewer_buffer` setting. A viewer that falls that far behind is cut off.
    frames: broadcast::Sender<Arc<Frame>>,
    /// What this frontend has delivered to the video's viewers, per origin.
    position: Position,
    total: u64,
    /// Likes received since the last likes frame went out: sent by [`Hub::flush_likes`] (or
    /// before the next comment), so that a stream of like batches costs each viewer a wake-up
    /// per flush, not one per stored batch.
    pending_likes: u64,
}

/// Counts of one [`Hub::deliver`] call, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeliverOutcome {
    pub delivered: usize,
    pub unwatched: usize,
    pub duplicates: usize,
}

pub(crate) struct Hub {
    videos: Mutex<HashMap<VideoId, VideoState>>,
    /// Videos with likes waiting for the next flush.
    liked: Mutex<Vec<VideoId>>,
    viewer_buffer: usize,
}

impl Hub {
    pub(crate) fn new(viewer_buffer: usize) -> Self {
        Self {
            videos: Mutex::default(),
            liked: Mutex::default(),
            viewer_buffer,
        }
    }

    /// Adds a viewer of `video`; true when it is the video's first one here.
    pub(crate) fn join(&self, video: &VideoId) -> (broadcast::Receiver<Arc<Frame>>, bool) {
        let mut videos = self.lock();
        match videos.get_mut(video) {
            Some(state) => {
                state.viewers += 1;
                // Likes from before the viewer joined are not its to count.
                send_pending_likes(state);
                (state.frames.subscribe(), false)
            }
            None => {
                let (frames, receiver) = broadcast::channel(self.viewer_buffer);
                videos.insert(
                    video.clone(),
                    VideoState {
                        viewers: 1,
                        frames,
                        position: Position::new(),
                        total: 0,
                        pending_likes: 0,
                    },
                );
                (receiver, true)
            }
        }
    }

    /// Removes a viewer of `video`; true when it was the video's last one here.
    pub(crate) fn leave(&self, video: &VideoId) -> bool {
        let mut videos = self.lock();
        let Some(state) = videos.get_mut(video) else {
            return false;
        };
        state.viewers = state.viewers.saturating_sub(1);
        if state.viewers > 0 {
            return false;
        }
        videos.remove(video);
        true
    }

    /// Moves `video`'s position up to `heads` (where every origin stands in this datacenter's
    /// fan-out stream when the video gets its first viewer here) and its total up to `total`.
    pub(crate) fn seed(&self, video: &VideoId, heads: &Position, total: u64) {
        let mut videos = self.lock();
        if let Some(state) = videos.get_mut(video) {
            for (origin, seq) in heads.origins() {
                state.position.advance(origin, seq);
            }
            state.total = state.total.max(total);
        }
    }

    /// The position and like total of `video` as its viewers here stand now.
    pub(crate) fn snapshot(&self, video: &VideoId) -> (Position, u64) {
        self.lock()
            .get(video)
            .map(|state| (state.position.clone(), state.total))
            .unwrap_or_default()
    }

    pub(crate) fn is_watched(&self, video: &VideoId) -> bool {
        self.lock().contains_key(video)
    }

    pub(crate) fn watched_videos(&self) -> Vec<VideoId> {
        self.lock().keys().cloned().collect()
    }

    /// Hands each new delivery to the viewers of its video, dropping what was already delivered
    /// (a dispatcher's redelivery, or a second dispatcher during a hand-over).
    pub(crate) fn deliver(&self, deliveries: Vec<Delivery>) -> DeliverOutcome {
        let mut outcome = DeliverOutcome::default();
        let mut newly_liked = Vec::new();
        let mut videos = self.lock();
        for delivery in deliveries {
            let Some(state) = videos.get_mut(&delivery.video_id) else {
                outcome.unwatched += 1;
                continue;
            };
            if !state
                .position
                .advance(&delivery.origin_dc, delivery.origin_seq)
            {
                outcome.duplicates += 1;
                continue;
            }
            match delivery.payload {
                DeliveryPayload::Likes { count, total } => {
                    state.total = state.total.max(total);
                    if state.pending_likes == 0 {
                        newly_liked.push(delivery.video_id.clone());
                    }
                    state.pending_likes += count;
                }
                DeliveryPayload::Comment(comment) => {
                    // Likes that came before the comment go out before it.
                    send_pending_likes(state);
                    let mut out = Vec::with_capacity(256);
                    let data = serde_json::to_string(&comment).unwrap_or_default();
                    let id = state.position.to_string();
                    sse::write_event(&mut out, "comment", Some(&id), &data);
                    let frame = Frame::Comment {
                        origin: Arc::from(delivery.origin_dc.as_str()),
                        seq: delivery.origin_seq,
                        encoded: Bytes::from(out),
                    };
                    // An error only means no viewer is subscribed right now.
                    let _ = state.frames.send(Arc::new(frame));
                }
            }
            outcome.delivered += 1;
        }
        drop(videos);
        if !newly_liked.is_empty() {
            self.liked_lock().extend(newly_liked);
        }
        outcome
    }

    /// Sends each video's likes received since its last likes frame as one frame.
    pub(crate) fn flush_likes(&self) {
        let liked = std::mem::take(&mut *self.liked_lock());
        if liked.is_empty() {
            return;
        }
        let mut videos = self.lock();
        for video in liked {
            if let Some(state) = videos.get_mut(&video) {
                send_pending_likes(state);
            }
        }
    }

    fn liked_lock(&self) -> std::sync::MutexGuard<'_, Vec<VideoId>> {
        self.liked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends a keep-alive frame to every video's viewers: one timer for the whole frontend
    /// instead of one per viewer.
    pub(crate) fn keep_alive(&self) {
        let keep_alive = Arc::new(Frame::KeepAlive);
        for state in self.lock().values() {
            let _ = state.frames.send(keep_alive.clone());
        }
    }

    /// Ends every viewer's stream (they see their channel closed): the frontend is stopping.
    /// The videos stay, so each stream's end goes through the usual leave and withdrawal.
    pub(crate) fn close(&self) {
        for state in self.lock().values_mut() {
            let (fresh, _) = broadcast::channel(1);
            state.frames = fresh;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<VideoId, VideoState>> {
        self.videos
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn send_pending_likes(state: &mut VideoState) {
    if state.pending_likes == 0 {
        return;
    }
    let frame = Frame::Likes {
        count: std::mem::take(&mut state.pending_likes),
        total: state.total,
    };
    let _ = state.frames.send(Arc::new(frame));
}

/// Renders a run of likes frames as one `likes` event.
pub(crate) fn encode_likes(out: &mut Vec<u8>, video: &VideoId, count: u64, total: u64) {
    let event = LikesEvent {
        video_id: video.clone(),
        count,
        total,
    };
    let data = serde_json::to_string(&event).unwrap_or_default();
    sse::write_event(out, "likes", None, &data);
}

/// Renders the `total` event a stream opens with: the video's like total as this datacenter
/// knows it.
pub(crate) fn encode_total(out: &mut Vec<u8>, video: &VideoId, total: u64) {
    let data = serde_json::json!({ "video_id": video, "total": total }).to_string();
    sse::write_event(out, "total", None, &data);
}

/// Renders the `reset` event: comments after the viewer's position cannot all be replayed, so
/// the stream goes on from now.
pub(crate) fn encode_reset(out: &mut Vec<u8>, video: &VideoId, reason: &str) {
    let data = serde_json::json!({ "video_id": video, "reason": reason }).to_string();
    sse::write_event(out, "reset", None, &data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanfare_model::Comment;

    fn like(video: &VideoId, origin: &str, seq: u64, count: u64, total: u64) -> Delivery {
        Delivery {
            video_id: video.clone(),
            origin_dc: origin.into(),
            origin_seq: seq,
            payload: DeliveryPayload::Likes { count, total },
        }
    }

    #[test]
    fn redelivered_interactions_reach_viewers_once() {
        let hub = Hub::new(16);
        let video = VideoId::parse("v").unwrap();
        let (mut viewer, first) = hub.join(&video);
        assert!(first);
        let outcome = hub.deliver(vec![
            like(&video, "dc1", 1, 1, 1),
            like(&video, "dc1", 2, 1, 2),
            like(&video, "dc1", 2, 1, 2),
            like(&video, "dc2", 1, 1, 3),
            like(&video, "dc1", 1, 1, 1),
        ]);
        assert_eq!(outcome.delivered, 3);
        assert_eq!(outcome.duplicates, 2);
        assert!(viewer.try_recv().is_err(), "likes wait for the flush");
        hub.flush_likes();
        let mut counted = 0;
        while let Ok(frame) = viewer.try_recv() {
            if let Frame::Likes { count, .. } = *frame {
                counted += count;
            }
        }
        assert_eq!(counted, 3);
    }

    fn comment(video: &VideoId, origin: &str, seq: u64) -> Delivery {
        Delivery {
            video_id: video.clone(),
            origin_dc: origin.into(),
            origin_seq: seq,
            payload: DeliveryPayload::Comment(Comment {
                video_id: video.clone(),
                comment_id: format!("c{seq}"),
                user_id: "u".into(),
                text: "t".into(),
                origin_dc: origin.into(),
                published_at: 0,
            }),
        }
    }

    #[test]
    fn like_batches_become_one_frame_per_flush_and_precede_a_later_comment() {
        let hub = Hub::new(64);
        let video = VideoId::parse("v").unwrap();
        let (mut viewer, _) = hub.join(&video);
        hub.deliver(
            (1..=10)
                .map(|seq| like(&video, "dc1", seq, 2, seq * 2))
                .collect(),
        );
        hub.deliver(vec![
            comment(&video, "dc1", 11),
            like(&video, "dc1", 12, 1, 21),
        ]);
        hub.flush_likes();
        hub.flush_likes();
        let frames: Vec<String> = std::iter::from_fn(|| viewer.try_recv().ok())
            .map(|frame| match &*frame {
                Frame::Likes { count, total } => format!("likes {count} {total}"),
                Frame::Comment { seq, .. } => format!("comment {seq}"),
                Frame::KeepAlive => "keep-alive".to_owned(),
            })
            .collect();
        assert_eq!(frames, ["likes 20 20", "comment 11", "likes 1 21"]);
    }

    #[test]
    fn a_viewer_joining_is_not_sent_likes_from_before_it_joined() {
        let hub = Hub::new(16);
        let video = VideoId::parse("v").unwrap();
        let (_first, _) = hub.join(&video);
        hub.deliver(vec![like(&video, "dc1", 1, 5, 5)]);
        let (mut second, _) = hub.join(&video);
        hub.flush_likes();
        assert!(second.try_recv().is_err());
        assert_eq!(
            hub.snapshot(&video).1,
            5,
            "the total it opens with has them"
        );
    }

    #[test]
    fn deliveries_for_unwatched_videos_are_counted_not_kept() {
        let hub = Hub::new(16);
        let video = VideoId::parse("v").unwrap();
        let outcome = hub.deliver(vec![like(&video, "dc1", 1, 1, 1)]);
        assert_eq!(outcome.unwatched, 1);
        assert!(!hub.is_watched(&video));
    }

    #[test]
    fn last_viewer_leaving_forgets_the_video() {
        let hub = Hub::new(16);
        let video = VideoId::parse("v").unwrap();
        let (_a, first) = hub.join(&video);
        let (_b, second_first) = hub.join(&video);
        assert!(first && !second_first);
        assert!(!hub.leave(&video));
        assert!(hub.leave(&video));
        assert!(!hub.is_watched(&video));
    }

    #[test]
    fn comment_ids_are_the_position_after_the_comment() {
        let hub = Hub::new(16);
        let video = VideoId::parse("v").unwrap();
        let (mut viewer, _) = hub.join(&video);
        let comment = Comment {
            video_id: video.clone(),
            comment_id: "c1".into(),
            user_id: "u".into(),
            text: "hi\nevent: likes".into(),
            origin_dc: "dc2".into(),
            published_at: 0,
        };
        hub.deliver(vec![
            like(&video, "dc1", 4, 1, 1),
            Delivery {
                video_id: video.clone(),
                origin_dc: "dc2".into(),
                origin_seq: 9,
                payload: DeliveryPayload::Comment(comment),
            },
        ]);
        let _likes = viewer.try_recv().unwrap();
        let Frame::Comment { encoded, seq, .. } = &*viewer.try_recv().unwrap() else {
            panic!("expected a comment")
        };
        assert_eq!(*seq, 9);
        let text = std::str::from_utf8(encoded).unwrap();
        assert!(
            text.starts_with("event: comment\nid: dc1:4,dc2:9\n"),
            "{text}"
        );
        assert_eq!(text.matches("\n\n").count(), 1);
    }
}
