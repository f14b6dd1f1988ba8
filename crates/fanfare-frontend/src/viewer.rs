//! One viewer's SSE stream.
//!
//! Each write takes everything the viewer has queued: comments as encoded once by the hub, and
//! the likes handed out since the viewer's last write as one `likes` event (counts summed,
//! latest total). Nothing waits on a timer when there is something to send.
//!
//! A slow viewer's buffer is bounded: comments queue in the video's shared channel (the
//! `viewer_buffer` setting), likes are a counter difference whatever the delay, and a viewer
//! further behind than the channel holds is cut off with a `disconnect` event; it resumes with
//! its `Last-Event-ID`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use fanfare_model::{sse, Position, VideoId};
use futures::Stream;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::sync::watch;

use crate::history::Replay;
use crate::hub::{encode_disconnect, encode_likes, encode_reset, encode_total, Frame, Likes};
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
    /// Comments of this viewer's video, sent by the hub; lagging past its capacity ends the
    /// stream.
    frames: broadcast::Receiver<Arc<Frame>>,
    /// Capacity of `frames` as the channel counts it (a power of two).
    frames_capacity: usize,
    /// The video's likes and keep-alive beat.
    likes: watch::Receiver<Likes>,
    /// Likes and beat already written to this viewer.
    seen: Likes,
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
        let (subscription, first) = shared.hub.join(&video);
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
            frames_capacity: shared.settings.viewer_buffer.next_power_of_two(),
            frames: subscription.frames,
            likes: subscription.likes,
            seen: subscription.seen,
            position,
            opening,
        }
    }

    /// What writes this stream: [`Writer::next_chunk`] until it returns `None`.
    pub(crate) fn into_writer(self, preamble: Bytes) -> Writer {
        Writer {
            viewer: self,
            preamble: Some(preamble),
            finished: false,
        }
    }

    /// The stream as an HTTP body (for the router's fallback path).
    pub(crate) fn into_body(
        self,
        preamble: Bytes,
    ) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        futures::stream::unfold(self.into_writer(preamble), |mut writer| async move {
            let chunk = writer.next_chunk().await?;
            Some((Ok(chunk), writer))
        })
    }
}

/// A viewer's stream between writes. No timer and no shutdown watch of its own: the hub beats
/// every video's keep-alive at once and closes every video's channels on shutdown, so a
/// wake-up costs one channel receive.
pub(crate) struct Writer {
    viewer: ViewerStream,
    preamble: Option<Bytes>,
    finished: bool,
}

/// What woke a viewer's stream.
enum Wake {
    Comment(Result<Arc<Frame>, broadcast::error::RecvError>),
    Likes(Result<(), watch::error::RecvError>),
}

impl Writer {
    /// The next bytes to write: everything queued for the viewer, waiting until there is
    /// something. `None` when the stream is over (shutdown, or the viewer was cut off).
    pub(crate) async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(preamble) = self.preamble.take() {
            let mut first = preamble.to_vec();
            first.append(&mut self.viewer.opening);
            return Some(Bytes::from(first));
        }
        if self.finished {
            return None;
        }
        let viewer = &mut self.viewer;
        let wake = tokio::select! {
            biased;
            frame = viewer.frames.recv() => Wake::Comment(frame),
            changed = viewer.likes.changed() => Wake::Likes(changed),
        };
        // The likes are read before the comments are drained: every comment handed out before
        // this read is in the channel already, so the likes written after the drained comments
        // never overtake a comment they came after.
        let likes_now = *viewer.likes.borrow_and_update();
        let mut next = match wake {
            Wake::Comment(Ok(frame)) => Some(frame),
            Wake::Comment(Err(broadcast::error::RecvError::Lagged(skipped))) => {
                return Some(self.cut_off(Vec::new(), skipped))
            }
            Wake::Comment(Err(broadcast::error::RecvError::Closed)) | Wake::Likes(Err(_)) => {
                return None
            }
            Wake::Likes(Ok(())) => None,
        };
        let video = &viewer.guard.video;
        let mut out = Vec::with_capacity(512);
        let mut events = 0;
        let mut taken = 0;
        let mut lagged = None;
        let mut capped = false;
        loop {
            if let Some(frame) = next.take() {
                taken += 1;
                if viewer.position.advance(&frame.origin, frame.seq) {
                    // Likes handed out before the comment go out before it.
                    events += owed_likes(&mut out, video, &mut viewer.seen, frame.likes_before);
                    out.extend_from_slice(&frame.encoded);
                    events += 1;
                }
            }
            if taken >= MAX_FRAMES_PER_WRITE {
                capped = true;
                break;
            }
            match viewer.frames.try_recv() {
                Ok(frame) => next = Some(frame),
                Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => break,
                Err(TryRecvError::Lagged(skipped)) => {
                    lagged = Some(skipped);
                    break;
                }
            }
        }
        // Comments still queued may predate likes_now; their likes go out with them.
        if !capped {
            events += owed_likes(&mut out, video, &mut viewer.seen, likes_now);
        }
        if likes_now.beat != viewer.seen.beat {
            viewer.seen.beat = likes_now.beat;
            if out.is_empty() {
                sse::write_comment(&mut out, "keep-alive");
            }
        }
        viewer.guard.shared.metrics.events_sent(events);
        if let Some(skipped) = lagged {
            // Send what was taken, then end the stream.
            return Some(self.cut_off(out, skipped));
        }
        Some(Bytes::from(out))
    }

    /// Whether more comments are queued for this viewer than its buffer holds: its next read
    /// would find some gone. Cheap; for a viewer whose write is stuck.
    pub(crate) fn is_lagging(&self) -> bool {
        self.viewer.frames.len() > self.viewer.frames_capacity
    }

    /// Ends a stream that fell more than the buffer behind, saying why: the viewer reconnects
    /// (the `retry:` hint) with its `Last-Event-ID` and resumes where it was.
    fn cut_off(&mut self, mut out: Vec<u8>, skipped: u64) -> Bytes {
        self.finished = true;
        self.viewer.guard.shared.metrics.viewer_lagged(skipped);
        encode_disconnect(
            &mut out,
            &self.viewer.guard.video,
            "too-slow",
            "comments piled up past this connection's buffer; reconnect with Last-Event-ID to resume",
        );
        Bytes::from(out)
    }

    /// Records a viewer cut off while its write was stuck (nothing more can be written to it).
    pub(crate) fn cut_off_stuck(&mut self) {
        self.finished = true;
        let queued = self.viewer.frames.len() as u64;
        self.viewer.guard.shared.metrics.viewer_lagged(queued);
    }
}

/// Writes the likes handed out up to `upto` that the viewer was not sent yet, as one `likes`
/// event; returns the events written (0 or 1).
fn owed_likes(out: &mut Vec<u8>, video: &VideoId, seen: &mut Likes, upto: Likes) -> usize {
    if upto.handed_out <= seen.handed_out {
        return 0;
    }
    encode_likes(out, video, upto.handed_out - seen.handed_out, upto.total);
    seen.handed_out = upto.handed_out;
    1
}
