//! One viewer's SSE stream.
//!
//! Each write takes everything the viewer has queued: consecutive likes become one `likes`
//! event (counts summed, latest total), comments go out as encoded once by the hub. Nothing
//! waits on a timer when there is something to send.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use fanfare_model::{sse, Position, VideoId};
use futures::Stream;
use tokio::sync::broadcast::{self, error::TryRecvError};

use crate::history::Replay;
use crate::hub::{encode_likes, encode_reset, encode_total, Frame};
use crate::Shared;

/// Removes the viewer from the hub when its stream is dropped (the viewer left, or the
/// frontend is shutting down), and withdraws interest after the video's last viewer.
struct ViewerGuard {
    shared: Arc<Shared>,
    video: VideoId,
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        let last = self.shared.hub.leave(&self.video);
        self.shared.metrics.viewer_left(last);
        if last {
            self.shared.interest.withdraw(self.video.clone());
        }
    }
}

pub(crate) struct ViewerStream {
    guard: ViewerGuard,
    /// Frames of this viewer's video, sent by the hub; lagging past its capacity ends the
    /// stream.
    frames: broadcast::Receiver<Arc<Frame>>,
    /// What this connection was sent, per origin: a comment frame not newer is skipped (it
    /// came already through the replay of a resume).
    position: Position,
    /// Events to write before anything live: the like total, replayed comments or a reset.
    opening: Vec<u8>,
}

/// Most frames folded into one write, so one busy viewer cannot hold a runtime thread long.
const MAX_FRAMES_PER_WRITE: usize = 512;

impl ViewerStream {
    /// Joins the video's viewers; with `resume_from` (a `Last-Event-ID`), first replays the
    /// comments published after it, or tells the viewer with a `reset` event when they cannot
    /// all be replayed.
    pub(crate) async fn open(
        shared: Arc<Shared>,
        video: VideoId,
        resume_from: Option<Position>,
    ) -> Self {
        // Join before reading history: whatever arrives meanwhile is both queued here and in
        // the history, and the position filter keeps one copy.
        let (frames, first) = shared.hub.join(&video);
        shared.metrics.viewer_joined(first);
        let guard = ViewerGuard {
            shared: shared.clone(),
            video: video.clone(),
        };
        if first {
            shared.interest.register(video.clone()).await;
            match shared.history.heads(&video).await {
                Ok((heads, total)) => shared.hub.seed(&video, &heads, total),
                Err(error) => shared.metrics.history_failed(&error),
            }
        }
        let (now, total) = shared.hub.snapshot(&video);
        let mut opening = Vec::new();
        if total > 0 {
            encode_total(&mut opening, &video, total);
        }
        let position = match resume_from {
            None => now,
            Some(from) => {
                let limit = shared.settings.max_replay;
                match shared
                    .history
                    .comments_after(&video, &from, &now, limit)
                    .await
                {
                    Ok(Replay::Comments(comments)) => {
                        let mut position = from;
                        shared.metrics.replayed(comments.len());
                        for replayed in comments {
                            if !position.advance(&replayed.origin, replayed.origin_seq) {
                                continue;
                            }
                            let data = serde_json::to_string(&replayed.comment).unwrap_or_default();
                            let id = position.to_string();
                            sse::write_event(&mut opening, "comment", Some(&id), &data);
                        }
                        position
                    }
                    Ok(Replay::TooOld) => {
                        shared.metrics.replay_reset();
                        encode_reset(
                            &mut opening,
                            &video,
                            "the position is older than what this datacenter retains",
                        );
                        now
                    }
                    Err(error) => {
                        shared.metrics.history_failed(&error);
                        encode_reset(&mut opening, &video, "history is unavailable right now");
                        now
                    }
                }
            }
        };
        Self {
            guard,
            frames,
            position,
            opening,
        }
    }

    pub(crate) fn into_body(
        self,
        preamble: Bytes,
    ) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        let state = State {
            viewer: self,
            preamble: Some(preamble),
            finished: false,
        };
        futures::stream::unfold(state, |mut state| async move {
            let chunk = state.next_chunk().await?;
            Some((Ok(chunk), state))
        })
    }
}

/// A viewer's stream between writes. No timer and no shutdown watch of its own: the hub sends
/// keep-alives to every video at once and closes every video's channel on shutdown, so a
/// wake-up costs one channel receive.
struct State {
    viewer: ViewerStream,
    preamble: Option<Bytes>,
    finished: bool,
}

impl State {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(preamble) = self.preamble.take() {
            let mut first = preamble.to_vec();
            first.append(&mut self.viewer.opening);
            return Some(Bytes::from(first));
        }
        if self.finished {
            return None;
        }
        let first = self.viewer.frames.recv().await;
        let mut out = Vec::with_capacity(512);
        let mut events = 0;
        let mut likes: Option<(u64, u64)> = None;
        let mut next = match first {
            Ok(frame) => Some(frame),
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                return Some(self.cut_off(skipped))
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        let mut taken = 0;
        while let Some(frame) = next.take() {
            taken += 1;
            match &*frame {
                Frame::KeepAlive => {
                    if out.is_empty() && likes.is_none() {
                        sse::write_comment(&mut out, "keep-alive");
                    }
                }
                Frame::Likes { count, total } => {
                    let run = likes.get_or_insert((0, 0));
                    run.0 += count;
                    run.1 = *total;
                }
                Frame::Comment {
                    origin,
                    seq,
                    encoded,
                } => {
                    if self.viewer.position.advance(origin, *seq) {
                        if let Some((count, total)) = likes.take() {
                            encode_likes(&mut out, &self.viewer.guard.video, count, total);
                            events += 1;
                        }
                        out.extend_from_slice(encoded);
                        events += 1;
                    }
                }
            }
            if taken >= MAX_FRAMES_PER_WRITE {
                break;
            }
            match self.viewer.frames.try_recv() {
                Ok(frame) => next = Some(frame),
                Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => {}
                Err(TryRecvError::Lagged(skipped)) => {
                    // Send what was taken, then end the stream.
                    let notice = self.cut_off(skipped);
                    out.extend_from_slice(&notice);
                }
            }
        }
        if let Some((count, total)) = likes.take() {
            encode_likes(&mut out, &self.viewer.guard.video, count, total);
            events += 1;
        }
        self.viewer.guard.shared.metrics.events_sent(events);
        Some(Bytes::from(out))
    }

    /// Ends a stream that fell more than the buffer behind; the viewer reconnects (the `retry:`
    /// hint) and resumes.
    fn cut_off(&mut self, skipped: u64) -> Bytes {
        self.finished = true;
        self.viewer.guard.shared.metrics.viewer_lagged(skipped);
        let mut out = Vec::with_capacity(64);
        sse::write_comment(&mut out, "too far behind, reconnect to resume");
        Bytes::from(out)
    }
}
