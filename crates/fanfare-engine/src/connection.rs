//! One viewer's connection: what it follows, what is queued for it, and its writer.
//!
//! Comments are pushed into the connection's own queue by the hub (shared frames, a reference
//! each); likes, viewer counts and keep-alives are not queued at all: the hub marks the
//! connection dirty and the writer reads each followed video's current counters. So a viewer
//! that is behind owes one `likes` event per video however long it was away, and only
//! comments can pile up, at most `viewer_buffer` of them before the connection is cut off.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use fanfare_model::{
    events, write_connection_position, DisconnectEvent, SubscriptionsEvent, VideoId,
};
use tokio::sync::Notify;

use crate::chunk::Chunk;
use crate::hub::HubInner;
use crate::origins::{OriginView, Seqs};
use crate::video::{encode_event, encode_head, encode_likes, Frame, Likes, LikesFrame, Video};

/// Most comments folded into one write, so one busy viewer cannot hold a runtime thread long.
pub const MAX_FRAMES_PER_WRITE: usize = 512;

/// What kind of stream a connection writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamKind {
    /// `GET /v1/videos/{id}/events`: one video; ids are [`fanfare_model::Position`]s.
    Single,
    /// `GET /v1/events`: any number of videos, changed while it is open; ids are
    /// [`fanfare_model::ConnectionPosition`]s.
    Multi { connection_id: Arc<str> },
}

/// The part of a connection the hub reaches: its state and its wake-up.
pub(crate) struct ConnShared {
    pub(crate) state: Mutex<ConnState>,
    /// Woken by the hub whenever the state has something new for the writer; one permit is
    /// kept if the writer is busy, so no wake-up is lost.
    pub(crate) notify: Notify,
    pub(crate) kind: StreamKind,
}

#[derive(Default)]
pub(crate) struct ConnState {
    /// Comments for the writer, in delivery order per video. Bounded by the hub's
    /// `viewer_buffer`: a comment that finds it full is dropped and counted in `lagged`.
    pub(crate) frames: VecDeque<Arc<Frame>>,
    pub(crate) subscriptions: Vec<Subscription>,
    /// Whole events to write before anything else (a newly followed video's `total`).
    pub(crate) notices: Vec<Bytes>,
    /// Likes or the viewer count of some followed video changed.
    pub(crate) dirty: bool,
    pub(crate) beat: bool,
    /// The followed set changed (a multi-video stream then says so, with a new id).
    pub(crate) subscriptions_changed: bool,
    /// Comments dropped because the queue was full: the connection is cut off.
    pub(crate) lagged: u64,
    /// The frontend is stopping: the writer writes what is queued, then ends.
    pub(crate) closed: bool,
}

/// One followed video, as this connection stands in it.
pub(crate) struct Subscription {
    pub(crate) video: Arc<Video>,
    /// What the connection was sent of the video: a comment not newer is skipped (it came
    /// through a resume's replay already).
    pub(crate) position: Seqs,
    /// Likes handed out that this connection was sent (or that predate it).
    pub(crate) seen_likes: u64,
    /// The viewer count last written to this connection.
    pub(crate) shown: Option<(u64, bool)>,
}

impl ConnShared {
    pub(crate) fn new(kind: StreamKind) -> Self {
        Self {
            state: Mutex::default(),
            notify: Notify::new(),
            kind,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a comment (called with the video's followers locked, so in delivery order).
    pub(crate) fn push(&self, frame: Arc<Frame>, capacity: usize) {
        let mut state = self.lock();
        if state.lagged > 0 || state.frames.len() >= capacity {
            state.lagged += 1;
        } else {
            state.frames.push_back(frame);
        }
        drop(state);
        self.notify.notify_one();
    }

    pub(crate) fn mark(&self, mark: impl FnOnce(&mut ConnState)) {
        mark(&mut self.lock());
        self.notify.notify_one();
    }
}

/// A connection's writer: owned by the task that writes the socket. Dropping it leaves every
/// followed video (the hub forgets videos nobody follows any more).
pub struct Connection {
    pub(crate) hub: Arc<HubInner>,
    pub(crate) shared: Arc<ConnShared>,
    /// Bytes written before anything else: the `retry:` hint, the opening events.
    pub(crate) preamble: Option<Chunk>,
    pub(crate) finished: bool,
}

/// The outcome of one [`Connection::next_chunk`].
enum Build {
    Write(Chunk),
    End,
    /// Nothing to write yet, but more is queued (everything taken was skipped): build again.
    Again,
    Wait,
}

impl Connection {
    /// A handle the frontend uses to change what the connection follows while it is open.
    pub fn handle(&self) -> crate::ConnectionHandle {
        crate::ConnectionHandle {
            shared: self.shared.clone(),
        }
    }

    /// Bytes to write before anything live (preamble, replayed comments, resets), in order.
    pub fn push_preamble(&mut self, bytes: Bytes) {
        self.preamble.get_or_insert_with(Chunk::new).push(bytes);
    }

    /// The next bytes to write: everything queued, waiting until there is something. `None`
    /// when the stream is over (the frontend is stopping, or the viewer was cut off).
    pub async fn next_chunk(&mut self) -> Option<Chunk> {
        if let Some(preamble) = self.preamble.take() {
            if !preamble.is_empty() {
                return Some(preamble);
            }
        }
        loop {
            if self.finished {
                return None;
            }
            match self.build() {
                Build::Write(chunk) => return Some(chunk),
                Build::End => return None,
                Build::Again => continue,
                Build::Wait => self.shared.notify.notified().await,
            }
        }
    }

    /// Whether more comments were due to this connection than its buffer holds: cheap, for a
    /// viewer whose write is stuck.
    pub fn is_lagging(&self) -> bool {
        self.shared.lock().lagged > 0
    }

    /// How many comments were dropped for this connection (it is cut off when not 0).
    pub fn lagged(&self) -> u64 {
        self.shared.lock().lagged
    }

    /// Ends a stream whose write is stuck: nothing more is written to it.
    pub fn cut_off_stuck(&mut self) {
        self.finished = true;
    }

    fn build(&mut self) -> Build {
        let view = self.hub.origins.view();
        let kind = self.shared.kind.clone();
        let mut state = self.shared.lock();
        let state = &mut *state;
        let mut out = Chunk::new();
        for notice in state.notices.drain(..) {
            out.push(notice);
        }
        let dirty = std::mem::take(&mut state.dirty);
        // Read each video's counters before draining the queue: a comment handed out before
        // the read is queued already, so the likes written after the queue never overtake a
        // comment they came after.
        let snapshots: Vec<Snapshot> = if dirty {
            state.subscriptions.iter().map(Snapshot::read).collect()
        } else {
            Vec::new()
        };
        let mut taken = 0;
        let mut events = 0;
        while let Some(frame) = state.frames.pop_front() {
            taken += 1;
            let Some(index) = state
                .subscriptions
                .iter()
                .position(|sub| Arc::ptr_eq(&sub.video, &frame.video))
            else {
                // Unfollowed since it was queued.
                continue;
            };
            let subscription = &mut state.subscriptions[index];
            if !subscription.position.advance(frame.origin, frame.seq) {
                continue;
            }
            events +=
                subscription.owe_likes(&mut out, frame.likes_before, frame.likes_frame.as_ref());
            let covered = subscription.position.is_covered_by(&frame.position);
            subscription.position.raise_to(&frame.position);
            match &kind {
                StreamKind::Single if covered => out.push(frame.head.clone()),
                StreamKind::Single => {
                    let mut id = String::new();
                    subscription.position.write_id(&mut id, &view);
                    out.push(encode_head(events::name::COMMENT, &id));
                }
                StreamKind::Multi { .. } => {
                    let id = connection_id(&state.subscriptions, &view);
                    out.push(encode_head(events::name::COMMENT, &id));
                }
            }
            out.push(frame.data.clone());
            events += 1;
            if taken >= MAX_FRAMES_PER_WRITE {
                break;
            }
        }
        if !state.frames.is_empty() {
            // Capped: the counters wait for the rest of the queue.
            state.dirty |= dirty;
        } else {
            for (subscription, snapshot) in state.subscriptions.iter_mut().zip(&snapshots) {
                events +=
                    subscription.owe_likes(&mut out, snapshot.likes, snapshot.likes_frame.as_ref());
                if let Some((viewers, partial, bytes)) = &snapshot.shown {
                    if subscription.shown != Some((*viewers, *partial)) {
                        subscription.shown = Some((*viewers, *partial));
                        out.push(bytes.clone());
                        events += 1;
                    }
                }
            }
        }
        if std::mem::take(&mut state.subscriptions_changed) {
            if let StreamKind::Multi { connection_id: id } = &kind {
                let event = SubscriptionsEvent {
                    connection_id: id.to_string(),
                    videos: state
                        .subscriptions
                        .iter()
                        .map(|sub| sub.video.id.clone())
                        .collect(),
                };
                let position = connection_id(&state.subscriptions, &view);
                out.push(encode_event(
                    events::name::SUBSCRIPTIONS,
                    Some(&position),
                    &event,
                ));
                events += 1;
            }
        }
        if std::mem::take(&mut state.beat) && out.is_empty() {
            let mut comment = Vec::with_capacity(16);
            fanfare_model::sse::write_comment(&mut comment, "keep-alive");
            out.push_vec(comment);
        }
        self.hub.counters.events(events);
        if state.lagged > 0 && state.frames.is_empty() {
            // Everything before the gap is written; the viewer resumes after it.
            self.finished = true;
            let video_id = match &kind {
                StreamKind::Single => state.subscriptions.first().map(|sub| sub.video.id.clone()),
                StreamKind::Multi { .. } => None,
            };
            let event = DisconnectEvent {
                video_id,
                reason: "too-slow".to_owned(),
                detail: "comments piled up past this connection's buffer; reconnect with \
                         Last-Event-ID to resume"
                    .to_owned(),
            };
            out.push(encode_event(events::name::DISCONNECT, None, &event));
            self.hub.counters.lagged(state.lagged);
            return Build::Write(out);
        }
        if !out.is_empty() {
            return Build::Write(out);
        }
        if state.closed {
            return Build::End;
        }
        if !state.frames.is_empty() || state.dirty {
            return Build::Again;
        }
        Build::Wait
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.hub.disconnect(&self.shared);
    }
}

impl Subscription {
    /// Writes the likes handed out up to `upto` that this connection was not sent yet, as one
    /// `likes` event (the shared encoding when it is exactly that hand-out); returns the events
    /// written (0 or 1).
    fn owe_likes(&mut self, out: &mut Chunk, upto: Likes, frame: Option<&LikesFrame>) -> usize {
        if upto.handed_out <= self.seen_likes {
            return 0;
        }
        match frame {
            Some(frame) if frame.from == self.seen_likes && frame.to == upto => {
                out.push(frame.bytes.clone())
            }
            _ => out.push(encode_likes(
                &self.video.id,
                upto.handed_out - self.seen_likes,
                upto.total,
            )),
        }
        self.seen_likes = upto.handed_out;
        1
    }
}

/// One followed video's counters as a writer reads them.
struct Snapshot {
    likes: Likes,
    likes_frame: Option<LikesFrame>,
    shown: Option<(u64, bool, Bytes)>,
}

impl Snapshot {
    fn read(subscription: &Subscription) -> Self {
        let state = subscription.video.state();
        Self {
            likes: state.writable_likes(),
            likes_frame: state.likes_frame.clone(),
            shown: state
                .shown
                .as_ref()
                .map(|shown| (shown.viewers, shown.partial, shown.bytes.clone())),
        }
    }
}

/// The `id:` of a multi-video stream: every followed video's position.
pub(crate) fn connection_id(subscriptions: &[Subscription], view: &OriginView) -> String {
    let mut out = String::with_capacity(16 + subscriptions.len() * 48);
    write_connection_position(
        &mut out,
        &view.sorted_names(),
        subscriptions
            .iter()
            .map(|sub| (&sub.video.id, sub.position.in_name_order(view))),
    );
    out
}

/// Ids of the videos a set of subscriptions follows, in the order they were followed.
pub(crate) fn followed(subscriptions: &[Subscription]) -> Vec<VideoId> {
    subscriptions
        .iter()
        .map(|sub| sub.video.id.clone())
        .collect()
}
