//! Video → connections of this frontend, and what dispatchers deliver, de-duplicated, encoded
//! once and handed to every follower.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use fanfare_model::{events, Delivery, DeliveryPayload, Position, VideoId};
use tokio::sync::Notify;

use crate::connection::{followed, ConnShared, Connection, StreamKind, Subscription};
use crate::origins::Origins;
use crate::video::{
    encode_data, encode_head, encode_likes, encode_viewers, Frame, LikesFrame, Shown, Video,
};

/// Shards of the video map: a join, a leave or a lookup locks one of them, never all.
const SHARDS: usize = 64;

/// How the engine is sized.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// Comments one connection may have queued before it is cut off.
    pub viewer_buffer: usize,
}

/// Counts of one [`Hub::deliver`] call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliverOutcome {
    pub delivered: usize,
    pub unwatched: usize,
    pub duplicates: usize,
}

/// What the engine counted since it started (the frontend exports them).
#[derive(Debug, Default)]
pub struct Counters {
    events: AtomicU64,
    lagged_connections: AtomicU64,
    lagged_comments: AtomicU64,
}

/// A reading of [`Counters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CounterReading {
    /// Events written to connections.
    pub events: u64,
    /// Connections cut off for falling behind.
    pub lagged_connections: u64,
    /// Comments they missed.
    pub lagged_comments: u64,
}

impl Counters {
    pub(crate) fn events(&self, events: usize) {
        if events > 0 {
            self.events.fetch_add(events as u64, Ordering::Relaxed);
        }
    }

    pub(crate) fn lagged(&self, comments: u64) {
        self.lagged_connections.fetch_add(1, Ordering::Relaxed);
        self.lagged_comments.fetch_add(comments, Ordering::Relaxed);
    }

    pub fn read(&self) -> CounterReading {
        CounterReading {
            events: self.events.load(Ordering::Relaxed),
            lagged_connections: self.lagged_connections.load(Ordering::Relaxed),
            lagged_comments: self.lagged_comments.load(Ordering::Relaxed),
        }
    }
}

type Shard = RwLock<HashMap<VideoId, Arc<Video>>>;

pub(crate) struct HubInner {
    shards: Box<[Shard]>,
    hasher: std::collections::hash_map::RandomState,
    pub(crate) origins: Origins,
    pub(crate) counters: Counters,
    config: HubConfig,
    /// Multi-video connections by connection id, for the subscription endpoint.
    multi: Mutex<HashMap<Arc<str>, Weak<ConnShared>>>,
    /// Videos with likes waiting for the next flush; `likes_waiting` is woken when the first
    /// one is added, so an idle frontend runs no timer for likes.
    liked: Mutex<Vec<Arc<Video>>>,
    likes_waiting: Notify,
    /// Videos nobody here follows any more, for the frontend to withdraw its interest.
    unwatched: Mutex<Vec<VideoId>>,
    unwatched_waiting: Notify,
    /// Videos whose follower count changed, for the viewer counts.
    recounted: Mutex<Vec<Arc<Video>>>,
    recounted_waiting: Notify,
    closed: AtomicBool,
}

/// The fan-out engine of one frontend. Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

/// What [`Hub::follow`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// The connection follows the video now; `first` when nobody here did before (the
    /// frontend registers its interest, then seeds the video).
    Started { first: bool },
    /// It followed the video already.
    Already,
}

/// A connection as the frontend reaches it from elsewhere than its writer (the subscription
/// endpoint, the opening of a stream).
#[derive(Clone)]
pub struct ConnectionHandle {
    pub(crate) shared: Arc<ConnShared>,
}

impl ConnectionHandle {
    /// The videos the connection follows, in the order it started following them.
    pub fn videos(&self) -> Vec<VideoId> {
        followed(&self.shared.lock().subscriptions)
    }

    pub fn follows(&self, video: &VideoId) -> bool {
        self.shared
            .lock()
            .subscriptions
            .iter()
            .any(|sub| sub.video.id == *video)
    }

    /// Where the connection stands in `video` (after a resume's replay it is set with
    /// [`Self::set_position`]).
    pub fn set_position(&self, hub: &Hub, video: &VideoId, position: &Position) {
        let seqs = hub.inner.origins.seqs(position);
        let mut state = self.shared.lock();
        if let Some(sub) = state
            .subscriptions
            .iter_mut()
            .find(|sub| sub.video.id == *video)
        {
            sub.position = seqs;
        }
    }

    /// Where the connection stands in `video` now: what a reconnect from here would resume
    /// after.
    pub fn position(&self, hub: &Hub, video: &VideoId) -> Position {
        let view = hub.inner.origins.view();
        self.shared
            .lock()
            .subscriptions
            .iter()
            .find(|sub| sub.video.id == *video)
            .map(|sub| sub.position.to_position(&view))
            .unwrap_or_default()
    }

    /// Writes `event` before anything else at the next write (e.g. a newly followed video's
    /// `total`).
    pub fn notice(&self, event: Bytes) {
        self.shared.mark(|state| state.notices.push(event));
    }

    pub fn kind(&self) -> &StreamKind {
        &self.shared.kind
    }
}

impl Hub {
    pub fn new(config: HubConfig) -> Self {
        let shards = (0..SHARDS).map(|_| Shard::default()).collect();
        Self {
            inner: Arc::new(HubInner {
                shards,
                hasher: Default::default(),
                origins: Origins::default(),
                counters: Counters::default(),
                config,
                multi: Mutex::default(),
                liked: Mutex::default(),
                likes_waiting: Notify::new(),
                unwatched: Mutex::default(),
                unwatched_waiting: Notify::new(),
                recounted: Mutex::default(),
                recounted_waiting: Notify::new(),
                closed: AtomicBool::new(false),
            }),
        }
    }

    pub fn counters(&self) -> CounterReading {
        self.inner.counters.read()
    }

    /// A new connection following nothing yet. A multi-video connection is found again by its
    /// id ([`Self::connection`]) until it is dropped.
    pub fn connect(&self, kind: StreamKind) -> Connection {
        let shared = Arc::new(ConnShared::new(kind));
        if let StreamKind::Multi { connection_id } = &shared.kind {
            lock(&self.inner.multi).insert(connection_id.clone(), Arc::downgrade(&shared));
        }
        if self.inner.closed.load(Ordering::Acquire) {
            shared.lock().closed = true;
        }
        Connection {
            hub: self.inner.clone(),
            shared,
            preamble: None,
            finished: false,
        }
    }

    /// The open multi-video connection with this id.
    pub fn connection(&self, connection_id: &str) -> Option<ConnectionHandle> {
        let shared = lock(&self.inner.multi).get(connection_id)?.upgrade()?;
        Some(ConnectionHandle { shared })
    }

    /// Makes `connection` follow `video`, from where the video stands now here.
    pub fn follow(&self, connection: &ConnectionHandle, video: &VideoId) -> Follow {
        let inner = &self.inner;
        let shard = inner.shard(video);
        {
            let map = read(shard);
            if let Some(existing) = map.get(video) {
                // The shard stays locked: the video cannot be removed meanwhile.
                return inner.attach(&connection.shared, existing, false);
            }
        }
        let mut map = write(shard);
        let (found, first) = match map.get(video) {
            Some(existing) => (existing.clone(), false),
            None => {
                let created = Arc::new(Video::new(video.clone()));
                map.insert(video.clone(), created.clone());
                (created, true)
            }
        };
        inner.attach(&connection.shared, &found, first)
    }

    /// Stops `connection` following `video`; false when it did not.
    pub fn unfollow(&self, connection: &ConnectionHandle, video: &VideoId) -> bool {
        let removed = {
            let mut state = connection.shared.lock();
            let Some(index) = state
                .subscriptions
                .iter()
                .position(|sub| sub.video.id == *video)
            else {
                return false;
            };
            let removed = state.subscriptions.remove(index);
            state.subscriptions_changed = true;
            removed
        };
        connection.shared.notify.notify_one();
        self.inner.detach(&connection.shared, &removed.video);
        true
    }

    /// Moves `video`'s position up to `heads` (where every origin stands in this datacenter's
    /// fan-out stream when the video gets its first viewer here) and its total up to `total`,
    /// and lets followers that wait for it go on. Called once per first viewer, also when the
    /// heads could not be read (with an empty position), so that nobody waits for ever.
    pub fn seed(&self, video: &VideoId, heads: &Position, total: u64) {
        let Some(found) = self.inner.lookup(video) else {
            return;
        };
        let seqs = self.inner.origins.seqs(heads);
        {
            let mut state = found.state();
            state.position.raise_to(&seqs);
            state.likes.total = state.likes.total.max(total);
            state.seeded = true;
        }
        found.seeded.notify_waiters();
    }

    /// Waits (at most `bound`) until `video` is seeded: a viewer that joins a video whose
    /// first viewer is still reading its heads opens with the same position and total.
    pub async fn seeded(&self, video: &VideoId, bound: Duration) {
        let Some(found) = self.inner.lookup(video) else {
            return;
        };
        let waiting = found.seeded.notified();
        tokio::pin!(waiting);
        waiting.as_mut().enable();
        if found.state().seeded {
            return;
        }
        let _ = tokio::time::timeout(bound, waiting).await;
    }

    /// Where `video` stands here (every known origin) and its like total.
    pub fn position(&self, video: &VideoId) -> (Position, u64) {
        let view = self.inner.origins.view();
        match self.inner.lookup(video) {
            Some(found) => {
                let state = found.state();
                (state.position.to_position(&view), state.likes.total)
            }
            None => (Position::new(), 0),
        }
    }

    pub fn is_watched(&self, video: &VideoId) -> bool {
        self.inner.lookup(video).is_some()
    }

    pub fn watched_videos(&self) -> Vec<VideoId> {
        self.inner
            .shards
            .iter()
            .flat_map(|shard| read(shard).keys().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// How many connections here follow `video`.
    pub fn followers(&self, video: &VideoId) -> usize {
        self.inner
            .lookup(video)
            .map(|found| found.followers().connections.len())
            .unwrap_or(0)
    }

    /// Hands each new delivery to the followers of its video, dropping what was delivered
    /// already (a dispatcher's redelivery, or a second dispatcher during a hand-over).
    pub fn deliver(&self, deliveries: Vec<Delivery>) -> DeliverOutcome {
        let inner = &self.inner;
        let mut outcome = DeliverOutcome::default();
        for delivery in deliveries {
            let Some(found) = inner.lookup(&delivery.video_id) else {
                outcome.unwatched += 1;
                continue;
            };
            let origin = inner.origins.index(&delivery.origin_dc);
            let fresh = match delivery.payload {
                DeliveryPayload::Likes { count, total } => {
                    inner.add_likes(&found, origin, delivery.origin_seq, count, total)
                }
                DeliveryPayload::Comment(comment) => {
                    // Encoded once, before any lock: the data does not depend on the position.
                    let data = encode_data(&comment);
                    inner.push_comment(&found, origin, delivery.origin_seq, data)
                }
            };
            if fresh {
                outcome.delivered += 1;
            } else {
                outcome.duplicates += 1;
            }
        }
        outcome
    }

    /// Hands each video's likes received since the last flush to its followers.
    pub fn flush_likes(&self) {
        let liked = std::mem::take(&mut *lock(&self.inner.liked));
        for video in liked {
            let handed = {
                let mut state = video.state();
                state.liked_queued = false;
                state.hand_out()
            };
            let Some((from, to)) = handed else { continue };
            let bytes = encode_likes(&video.id, to.handed_out - from, to.total);
            {
                let mut state = video.state();
                if state.likes == to {
                    state.likes_frame = Some(LikesFrame { from, to, bytes });
                }
            }
            for connection in &video.followers().connections {
                connection.mark(|state| state.dirty = true);
            }
        }
    }

    /// Resolves when some video has likes waiting for a flush.
    pub async fn likes_waiting(&self) {
        let waiting = self.inner.likes_waiting.notified();
        tokio::pin!(waiting);
        waiting.as_mut().enable();
        if !lock(&self.inner.liked).is_empty() {
            return;
        }
        waiting.await;
    }

    /// Shows `viewers` (and whether the count is partial) to every follower of `video` whose
    /// last shown count differs.
    pub fn show_viewers(&self, video: &VideoId, viewers: u64, partial: bool) {
        let Some(found) = self.inner.lookup(video) else {
            return;
        };
        {
            let mut state = found.state();
            let unchanged = state
                .shown
                .as_ref()
                .is_some_and(|shown| shown.viewers == viewers && shown.partial == partial);
            if unchanged {
                return;
            }
            state.shown = Some(Shown {
                viewers,
                partial,
                bytes: encode_viewers(video, viewers, partial),
            });
        }
        for connection in &found.followers().connections {
            connection.mark(|state| state.dirty = true);
        }
    }

    /// Beats every connection's keep-alive: one timer for the whole frontend.
    pub fn keep_alive(&self) {
        self.inner.each_connection(|state| state.beat = true);
    }

    /// Ends every stream: each writes what it has queued, then ends. New connections end at
    /// once.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.each_connection(|state| state.closed = true);
    }

    /// Ends up to `count` open streams (a wave of a graceful drain): each writes what it has
    /// queued, then `retry: <retry()>` so its client reconnects after that many
    /// milliseconds (elsewhere, since this frontend stops), then ends. Returns how many were
    /// ended; 0 when none is left open.
    pub fn close_some(&self, count: usize, mut retry: impl FnMut() -> u64) -> usize {
        let mut closed = 0;
        self.inner.each_connection_until(|state| {
            if closed >= count {
                return false;
            }
            if !state.closed {
                let mut hint = Vec::with_capacity(24);
                fanfare_model::sse::write_retry(&mut hint, retry());
                state.notices.push(Bytes::from(hint));
                state.closed = true;
                closed += 1;
            }
            true
        });
        closed
    }

    /// Videos nobody here follows any more, since the last call.
    pub fn take_unwatched(&self) -> Vec<VideoId> {
        std::mem::take(&mut *lock(&self.inner.unwatched))
    }

    /// Resolves when [`Self::take_unwatched`] has something.
    pub async fn unwatched_waiting(&self) {
        let waiting = self.inner.unwatched_waiting.notified();
        tokio::pin!(waiting);
        waiting.as_mut().enable();
        if !lock(&self.inner.unwatched).is_empty() {
            return;
        }
        waiting.await;
    }

    /// Videos whose follower count changed since the last call, with their count now (0 for
    /// a video nobody follows any more).
    pub fn take_recounted(&self) -> Vec<(VideoId, usize)> {
        let videos = std::mem::take(&mut *lock(&self.inner.recounted));
        videos
            .into_iter()
            .map(|video| {
                let mut followers = video.followers();
                followers.recount_queued = false;
                (video.id.clone(), followers.connections.len())
            })
            .collect()
    }

    /// Resolves when [`Self::take_recounted`] has something.
    pub async fn recounted_waiting(&self) {
        let waiting = self.inner.recounted_waiting.notified();
        tokio::pin!(waiting);
        waiting.as_mut().enable();
        if !lock(&self.inner.recounted).is_empty() {
            return;
        }
        waiting.await;
    }
}

impl HubInner {
    fn shard(&self, video: &VideoId) -> &Shard {
        &self.shards[(self.hasher.hash_one(video) as usize) % self.shards.len()]
    }

    fn lookup(&self, video: &VideoId) -> Option<Arc<Video>> {
        read(self.shard(video)).get(video).cloned()
    }

    /// Adds `connection` to `video`'s followers, starting from where the video stands.
    fn attach(&self, connection: &Arc<ConnShared>, video: &Arc<Video>, first: bool) -> Follow {
        let mut followers = video.followers();
        let mut state = connection.lock();
        if state
            .subscriptions
            .iter()
            .any(|sub| Arc::ptr_eq(&sub.video, video))
        {
            return Follow::Already;
        }
        let (position, seen_likes) = {
            let video_state = video.state();
            // Likes received but not handed out yet came before this follower: not owed.
            let seen = video_state.likes.handed_out + video_state.pending_likes;
            (video_state.position.clone(), seen)
        };
        state.subscriptions.push(Subscription {
            video: video.clone(),
            position,
            seen_likes,
            shown: None,
        });
        state.subscriptions_changed = true;
        // The new follower is owed the video's current viewer count.
        state.dirty = true;
        drop(state);
        followers.connections.push(connection.clone());
        self.queue_recount(video, &mut followers);
        connection.notify.notify_one();
        Follow::Started { first }
    }

    /// Removes `connection` from `video`'s followers; the video goes when it was the last.
    fn detach(&self, connection: &Arc<ConnShared>, video: &Arc<Video>) {
        let empty = {
            let mut followers = video.followers();
            if let Some(index) = followers
                .connections
                .iter()
                .position(|known| Arc::ptr_eq(known, connection))
            {
                followers.connections.swap_remove(index);
            }
            self.queue_recount(video, &mut followers);
            followers.connections.is_empty()
        };
        if !empty {
            return;
        }
        let mut map = write(self.shard(&video.id));
        let still_empty = video.followers().connections.is_empty();
        let same = map
            .get(&video.id)
            .is_some_and(|known| Arc::ptr_eq(known, video));
        if still_empty && same {
            map.remove(&video.id);
            drop(map);
            lock(&self.unwatched).push(video.id.clone());
            self.unwatched_waiting.notify_one();
        }
    }

    /// A connection is gone: it leaves everything it followed.
    pub(crate) fn disconnect(&self, connection: &Arc<ConnShared>) {
        if let StreamKind::Multi { connection_id } = &connection.kind {
            let mut multi = lock(&self.multi);
            let ours = multi
                .get(connection_id)
                .is_some_and(|known| std::ptr::eq(known.as_ptr(), Arc::as_ptr(connection)));
            if ours {
                multi.remove(connection_id);
            }
        }
        let subscriptions = std::mem::take(&mut connection.lock().subscriptions);
        for subscription in subscriptions {
            self.detach(connection, &subscription.video);
        }
    }

    fn queue_recount(&self, video: &Arc<Video>, followers: &mut crate::video::Followers) {
        if followers.recount_queued {
            return;
        }
        followers.recount_queued = true;
        lock(&self.recounted).push(video.clone());
        self.recounted_waiting.notify_one();
    }

    fn add_likes(
        &self,
        video: &Arc<Video>,
        origin: usize,
        seq: u64,
        count: u64,
        total: u64,
    ) -> bool {
        let queue = {
            let mut state = video.state();
            if !state.position.advance(origin, seq) {
                return false;
            }
            state.likes.total = state.likes.total.max(total);
            state.pending_likes += count;
            !std::mem::replace(&mut state.liked_queued, true)
        };
        if queue {
            let mut liked = lock(&self.liked);
            liked.push(video.clone());
            if liked.len() == 1 {
                self.likes_waiting.notify_one();
            }
        }
        true
    }

    fn push_comment(&self, video: &Arc<Video>, origin: usize, seq: u64, data: Bytes) -> bool {
        // Followers stay locked until every one has the comment: each gets comments of this
        // video in delivery order.
        let followers = video.followers();
        let (position, handed, likes_before) = {
            let mut state = video.state();
            if !state.position.advance(origin, seq) {
                return false;
            }
            // Likes that came before the comment go out before it.
            let handed = state.hand_out();
            state.in_flight = Some(state.likes);
            (state.position.clone(), handed, state.likes)
        };
        let likes_frame = handed.map(|(from, to)| LikesFrame {
            from,
            to,
            bytes: encode_likes(&video.id, to.handed_out - from, to.total),
        });
        let mut id = String::with_capacity(48);
        position.write_id(&mut id, &self.origins.view());
        let frame = Arc::new(Frame {
            video: video.clone(),
            origin,
            seq,
            position,
            head: encode_head(events::name::COMMENT, &id),
            data,
            likes_before,
            likes_frame: likes_frame.clone(),
        });
        for connection in &followers.connections {
            connection.push(frame.clone(), self.config.viewer_buffer);
        }
        let mut state = video.state();
        state.in_flight = None;
        if likes_frame.is_some() && state.likes == likes_before {
            state.likes_frame = likes_frame;
        }
        true
    }

    /// Applies `mark` to connections, as [`Self::each_connection`], while it returns true.
    fn each_connection_until(
        &self,
        mut mark: impl FnMut(&mut crate::connection::ConnState) -> bool,
    ) {
        let mut going = true;
        for shard in self.shards.iter() {
            let videos: Vec<Arc<Video>> = read(shard).values().cloned().collect();
            for video in videos {
                for connection in &video.followers().connections {
                    connection.mark(|state| going = mark(state));
                    if !going {
                        return;
                    }
                }
            }
        }
        let multi: Vec<Arc<ConnShared>> = lock(&self.multi)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for connection in multi {
            connection.mark(|state| going = mark(state));
            if !going {
                return;
            }
        }
    }

    /// Applies `mark` to every open connection: the followers of every video, and multi-video
    /// connections that follow nothing.
    fn each_connection(&self, mark: impl Fn(&mut crate::connection::ConnState)) {
        for shard in self.shards.iter() {
            let videos: Vec<Arc<Video>> = read(shard).values().cloned().collect();
            for video in videos {
                for connection in &video.followers().connections {
                    connection.mark(&mark);
                }
            }
        }
        let multi: Vec<Arc<ConnShared>> = lock(&self.multi)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for connection in multi {
            connection.mark(&mark);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
