//! Video → viewers of this frontend, and the de-duplication and ordering of what dispatchers
//! send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fanfare_model::{sse, Delivery, DeliveryPayload, LikesEvent, Position, VideoId};
use tokio::sync::{broadcast, watch};

/// A comment from `origin` (its sequence there), as a whole SSE event ready to write, encoded
/// once for every viewer of the video.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub origin: Arc<str>,
    pub seq: u64,
    pub encoded: Bytes,
    /// The video's likes as they stood when the comment was handed out: a viewer writes the
    /// likes up to here before the comment.
    pub likes_before: Likes,
}

/// A video's likes as handed to its viewers, and its keep-alive beat. Viewers hold a watch on
/// it, not a queue: however long a viewer is behind, its likes are one difference of two
/// counters (coalescing costs nothing and never fills a buffer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Likes {
    /// Likes handed to the video's viewers since the video got its first viewer here; what a
    /// viewer is owed is this minus what it was sent.
    pub handed_out: u64,
    /// The video's total as this datacenter knows it.
    pub total: u64,
    /// Bumped at every keep-alive tick.
    pub beat: u64,
}

struct VideoState {
    viewers: usize,
    /// Comments, sent by [`Hub::deliver`], received by each viewer's stream; capacity is the
    /// `viewer_buffer` setting. A viewer that falls that far behind is cut off.
    frames: broadcast::Sender<Arc<Frame>>,
    /// Likes and keep-alives.
    likes: watch::Sender<Likes>,
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
    pub(crate) fn join(&self, video: &VideoId) -> (Subscription, bool) {
        let mut videos = self.lock();
        match videos.get_mut(video) {
            Some(state) => {
                state.viewers += 1;
                // Likes from before the viewer joined are not its to count: it starts from
                // what was handed out so far (the watch's current value counts as seen).
                send_pending_likes(state);
                let subscription = Subscription {
                    frames: state.frames.subscribe(),
                    likes: state.likes.subscribe(),
                    seen: *state.likes.borrow(),
                };
                (subscription, false)
            }
            None => {
                let (frames, receiver) = broadcast::channel(self.viewer_buffer);
                let (likes, likes_receiver) = watch::channel(Likes::default());
                videos.insert(
                    video.clone(),
                    VideoState {
                        viewers: 1,
                        frames,
                        likes,
                        position: Position::new(),
                        total: 0,
                        pending_likes: 0,
                    },
                );
                let subscription = Subscription {
                    frames: receiver,
                    likes: likes_receiver,
                    seen: Likes::default(),
                };
                (subscription, true)
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
                    let frame = Frame {
                        origin: Arc::from(delivery.origin_dc.as_str()),
                        seq: delivery.origin_seq,
                        encoded: Bytes::from(out),
                        likes_before: *state.likes.borrow(),
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

    /// Beats every video's keep-alive: one timer for the whole frontend instead of one per
    /// viewer.
    pub(crate) fn keep_alive(&self) {
        for state in self.lock().values() {
            state.likes.send_modify(|likes| likes.beat += 1);
        }
    }

    /// Ends every viewer's stream (they see their channels closed): the frontend is stopping.
    /// The videos stay, so each stream's end goes through the usual leave and withdrawal.
    pub(crate) fn close(&self) {
        for state in self.lock().values_mut() {
            let (fresh, _) = broadcast::channel(1);
            state.frames = fresh;
            let (fresh, _) = watch::channel(*state.likes.borrow());
            state.likes = fresh;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<VideoId, VideoState>> {
        self.videos
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What one viewer's stream receives: the video's comments, and a watch on its likes.
pub(crate) struct Subscription {
    pub frames: broadcast::Receiver<Arc<Frame>>,
    pub likes: watch::Receiver<Likes>,
    /// The likes as they stood when the viewer joined: counted as already seen.
    pub seen: Likes,
}

/// Hands the likes received since the last hand-out to the video's viewers.
fn send_pending_likes(state: &mut VideoState) {
    if state.pending_likes == 0 {
        return;
    }
    let count = std::mem::take(&mut state.pending_likes);
    let total = state.total;
    state.likes.send_modify(|likes| {
        likes.handed_out += count;
        likes.total = total;
    });
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

/// Renders the `disconnect` event a stream ends with when the frontend ends it: `reason` is a
/// short code (`too-slow`), `detail` says what to do.
pub(crate) fn encode_disconnect(out: &mut Vec<u8>, video: &VideoId, reason: &str, detail: &str) {
    let data =
        serde_json::json!({ "video_id": video, "reason": reason, "detail": detail }).to_string();
    sse::write_event(out, "disconnect", None, &data);
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
        assert!(
            !viewer.likes.has_changed().unwrap(),
            "likes wait for the flush"
        );
        hub.flush_likes();
        let likes = *viewer.likes.borrow_and_update();
        assert_eq!(likes.handed_out - viewer.seen.handed_out, 3);
        assert_eq!(likes.total, 3);
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
    fn likes_before_a_comment_are_handed_out_with_it_and_later_ones_at_the_flush() {
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
        let frame = viewer.frames.try_recv().unwrap();
        assert_eq!(frame.seq, 11);
        assert_eq!(
            (frame.likes_before.handed_out, frame.likes_before.total),
            (20, 20),
            "the comment carries the likes that came before it"
        );
        assert!(viewer.frames.try_recv().is_err(), "likes never queue");
        assert_eq!(viewer.likes.borrow_and_update().handed_out, 20);
        hub.flush_likes();
        hub.flush_likes();
        let likes = *viewer.likes.borrow_and_update();
        assert_eq!((likes.handed_out, likes.total), (21, 21));
    }

    #[test]
    fn a_viewer_joining_is_not_sent_likes_from_before_it_joined() {
        let hub = Hub::new(16);
        let video = VideoId::parse("v").unwrap();
        let (_first, _) = hub.join(&video);
        hub.deliver(vec![like(&video, "dc1", 1, 5, 5)]);
        let (mut second, _) = hub.join(&video);
        hub.flush_likes();
        assert_eq!(
            second.likes.borrow_and_update().handed_out,
            second.seen.handed_out,
            "nothing is owed to it"
        );
        assert_eq!(
            hub.snapshot(&video).1,
            5,
            "the total it opens with has them"
        );
    }

    #[test]
    fn a_viewer_behind_owes_all_its_likes_as_one_difference() {
        let hub = Hub::new(4);
        let video = VideoId::parse("v").unwrap();
        let (mut viewer, _) = hub.join(&video);
        for seq in 1..=1000 {
            hub.deliver(vec![like(&video, "dc1", seq, 1, seq)]);
            hub.flush_likes();
        }
        hub.keep_alive();
        assert!(viewer.frames.try_recv().is_err(), "no comment was queued");
        let likes = *viewer.likes.borrow_and_update();
        assert_eq!((likes.handed_out, likes.total, likes.beat), (1000, 1000, 1));
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
        let frame = viewer.frames.try_recv().unwrap();
        assert_eq!(frame.seq, 9);
        let text = std::str::from_utf8(&frame.encoded).unwrap();
        assert!(
            text.starts_with("event: comment\nid: dc1:4,dc2:9\n"),
            "{text}"
        );
        assert_eq!(text.matches("\n\n").count(), 1);
    }
}
