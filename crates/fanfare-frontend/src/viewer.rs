//! Opening a viewer's stream on the engine: follow its videos (a video's first viewer here
//! registers this frontend's interest and seeds the video from history), then write what the
//! stream opens with: the `retry:` hint, for a multi-video stream its `connection` event, each
//! video's like total, and for a resume the comments published after its position (or a
//! `reset` when they cannot all be replayed). After that the engine writes it live.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fanfare_engine::{encode_event, Connection, ConnectionHandle, Follow, StreamKind};
use fanfare_model::events::name;
use fanfare_model::{
    sse, ConnectionEvent, ConnectionPosition, Position, ResetEvent, TotalEvent, VideoId,
};

use crate::history::{Replay, Replayed};
use crate::problem::ApiError;
use crate::stream::StreamOpen;
use crate::Shared;

/// How long a viewer that joins a video waits for the video's first viewer to seed it.
const SEED_WAIT: Duration = Duration::from_secs(2);

/// Lives as long as the stream: counts it, and forgets a multi-video connection's owner when
/// it ends. The engine's [`Connection`] leaves the videos on its own.
pub(crate) struct StreamGuard {
    shared: Arc<Shared>,
    connection_id: Option<String>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.shared.metrics.stream_closed();
        self.shared
            .open_streams
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(id) = &self.connection_id {
            self.shared.connection_closed(id);
        }
    }
}

/// An open stream: the engine's writer, and what ends with it.
pub(crate) struct Viewer {
    pub connection: Connection,
    pub guard: StreamGuard,
}

/// A fresh connection id: 128 random bits, hex; `None` without an entropy source.
fn new_connection_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Opens a checked stream request.
pub(crate) async fn open(shared: &Arc<Shared>, request: StreamOpen) -> Result<Viewer, ApiError> {
    let mut preamble = Vec::with_capacity(64);
    sse::write_retry(&mut preamble, shared.settings.retry_hint.as_millis() as u64);
    match request {
        StreamOpen::Video { video, resume } => {
            let mut connection = shared.hub.connect(StreamKind::Single);
            let handle = connection.handle();
            follow(shared, &handle, &video).await;
            connection.push_preamble(Bytes::from(preamble));
            let (now, total) = shared.hub.position(&video);
            if total > 0 {
                connection.push_preamble(total_event(&video, total));
            }
            if let Some(from) = resume {
                let replayed =
                    replay(shared, &video, &from, &now, shared.settings.max_replay).await;
                let mut position = from;
                for item in replayed.comments {
                    if position.advance(&item.origin, item.origin_seq) {
                        connection.push_preamble(comment_event(&item, &position.to_string()));
                    }
                }
                match replayed.reset {
                    Some(reset) => connection.push_preamble(reset),
                    None => handle.set_position(&shared.hub, &video, &position),
                }
            }
            // The stream's position from the start: a reconnect before the first comment
            // resumes from here, missing nothing.
            let mut id = Vec::with_capacity(48);
            sse::write_id(&mut id, &handle.position(&shared.hub, &video).to_string());
            connection.push_preamble(Bytes::from(id));
            shared.stream_opened();
            Ok(Viewer {
                connection,
                guard: StreamGuard {
                    shared: shared.clone(),
                    connection_id: None,
                },
            })
        }
        StreamOpen::Videos { videos, owner } => {
            let connection_id = new_connection_id().ok_or(ApiError::Unavailable)?;
            let mut connection = shared.hub.connect(StreamKind::Multi {
                connection_id: Arc::from(connection_id.as_str()),
            });
            shared.connection_opened(&connection_id, owner);
            let handle = connection.handle();
            let ids: Vec<VideoId> = videos.iter().map(|(video, _)| video.clone()).collect();
            follow_all(shared, &handle, &ids).await;
            let event = ConnectionEvent {
                connection_id: connection_id.clone(),
                frontend: shared.settings.name.clone(),
                dc: shared.settings.dc.clone(),
            };
            preamble.extend_from_slice(&encode_event(name::CONNECTION, None, &event));
            connection.push_preamble(Bytes::from(preamble));
            let mut position = ConnectionPosition::new();
            let mut nows = Vec::with_capacity(videos.len());
            for (video, resume) in &videos {
                let (now, total) = shared.hub.position(video);
                if total > 0 {
                    connection.push_preamble(total_event(video, total));
                }
                position.insert(video.clone(), resume.clone().unwrap_or_else(|| now.clone()));
                nows.push(now);
            }
            // Resumed videos replay in the order this datacenter received their comments,
            // within one budget for the whole connection.
            let mut budget = shared.settings.max_replay;
            let mut replayed: Vec<(usize, Replayed)> = Vec::new();
            for (index, (video, resume)) in videos.iter().enumerate() {
                let Some(from) = resume else { continue };
                let found = replay(shared, video, from, &nows[index], budget).await;
                if let Some(reset) = found.reset {
                    connection.push_preamble(reset);
                    position.insert(video.clone(), nows[index].clone());
                    continue;
                }
                budget = budget.saturating_sub(found.comments.len());
                replayed.extend(found.comments.into_iter().map(|item| (index, item)));
            }
            replayed.sort_by_key(|(_, item)| item.fanout_seq);
            let mut current: Vec<Position> =
                position.videos().iter().map(|(_, at)| at.clone()).collect();
            for (index, item) in &replayed {
                if !current[*index].advance(&item.origin, item.origin_seq) {
                    continue;
                }
                position.insert(videos[*index].0.clone(), current[*index].clone());
                connection.push_preamble(comment_event(item, &position.to_string()));
            }
            for (video, at) in position.videos() {
                handle.set_position(&shared.hub, video, at);
            }
            shared.stream_opened();
            Ok(Viewer {
                connection,
                guard: StreamGuard {
                    shared: shared.clone(),
                    connection_id: Some(connection_id),
                },
            })
        }
    }
}

/// Makes `handle` follow `video`; for the video's first viewer here, registers this
/// frontend's interest first and seeds the video from history, else waits for that seed.
pub(crate) async fn follow(shared: &Shared, handle: &ConnectionHandle, video: &VideoId) {
    match shared.hub.follow(handle, video) {
        Follow::Started { first: true } => prepare_first(shared, video).await,
        Follow::Started { first: false } => shared.hub.seeded(video, SEED_WAIT).await,
        Follow::Already => {}
    }
}

/// [`follow`] for several videos: the hub is joined in order, the history is read for all of
/// them at once.
pub(crate) async fn follow_all(shared: &Shared, handle: &ConnectionHandle, videos: &[VideoId]) {
    let firsts: Vec<(VideoId, Follow)> = videos
        .iter()
        .map(|video| (video.clone(), shared.hub.follow(handle, video)))
        .collect();
    let preparing = firsts.iter().map(|(video, follow)| async move {
        match follow {
            Follow::Started { first: true } => prepare_first(shared, video).await,
            Follow::Started { first: false } => shared.hub.seeded(video, SEED_WAIT).await,
            Follow::Already => {}
        }
    });
    futures::future::join_all(preparing).await;
}

/// A video's first viewer here: dispatchers must route the video to this frontend before its
/// position is read, or what is published in between would be in neither.
async fn prepare_first(shared: &Shared, video: &VideoId) {
    shared.interest.register(video.clone()).await;
    match shared.history.heads(video).await {
        Ok((heads, total)) => shared.hub.seed(video, &heads, total),
        Err(error) => {
            shared.metrics.history_failed(&error);
            shared.hub.seed(video, &Position::new(), 0);
        }
    }
}

/// What a resume of one video finds: the comments to replay, or the reset to send instead.
struct Found {
    comments: Vec<Replayed>,
    reset: Option<Bytes>,
}

async fn replay(
    shared: &Shared,
    video: &VideoId,
    from: &Position,
    now: &Position,
    limit: usize,
) -> Found {
    let reset = |reason: &str| Found {
        comments: Vec::new(),
        reset: Some(encode_event(
            name::RESET,
            None,
            &ResetEvent {
                video_id: video.clone(),
                reason: reason.to_owned(),
            },
        )),
    };
    match shared.history.comments_after(video, from, now, limit).await {
        Ok(Replay::Comments(comments)) => {
            shared.metrics.replayed(comments.len());
            Found {
                comments,
                reset: None,
            }
        }
        Ok(Replay::TooOld) => {
            shared.metrics.replay_reset();
            reset("the position is older than what this datacenter retains")
        }
        Err(error) => {
            shared.metrics.history_failed(&error);
            reset("history is unavailable right now")
        }
    }
}

/// The `total` event a video opens with when it already has likes.
pub(crate) fn total_event(video: &VideoId, total: u64) -> Bytes {
    let event = TotalEvent {
        video_id: video.clone(),
        total,
    };
    encode_event(name::TOTAL, None, &event)
}

fn comment_event(item: &Replayed, id: &str) -> Bytes {
    encode_event(name::COMMENT, Some(id), &item.comment)
}
