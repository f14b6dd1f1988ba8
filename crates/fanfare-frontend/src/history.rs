//! Reading a video's history back from this datacenter's fan-out stream: where each origin
//! stands now (to seed a new video's position) and the comments after a position (to resume a
//! viewer). Direct gets only: they work in a datacenter cut off from the others, where no new
//! consumer could be created.

use async_nats::jetstream;
use fanfare_fabric::{origin_sequence, FabricError, FabricErrorKind, Totals};
use fanfare_model::names::{self, Kind};
use fanfare_model::{Comment, Interaction, Position, VideoId};

/// Bound on one read from another datacenter's origin stream during a resume.
const ORIGIN_READ_WITHIN: std::time::Duration = std::time::Duration::from_millis(500);

/// Reader of one datacenter's fan-out stream.
#[derive(Clone)]
pub(crate) struct History {
    js: jetstream::Context,
    dc: String,
    fanout: jetstream::stream::Stream,
    /// Every origin datacenter, from the fan-out stream's sources.
    origins: Vec<String>,
    totals: Totals,
}

/// A comment read back, with where it stands.
pub(crate) struct Replayed {
    pub origin: String,
    pub origin_seq: u64,
    pub fanout_seq: u64,
    pub comment: Comment,
}

/// What a resume finds.
pub(crate) enum Replay {
    /// The comments after the position, in the order this datacenter received them.
    Comments(Vec<Replayed>),
    /// Some of what came after the position is gone (older than retention, or more than the
    /// replay limit): the viewer must be told.
    TooOld,
}

fn read_error(
    context: String,
    error: impl std::error::Error + Send + Sync + 'static,
) -> FabricError {
    FabricError::new(FabricErrorKind::Consume, context, error)
}

impl History {
    pub(crate) async fn open(js: &jetstream::Context, dc: &str) -> Result<Self, FabricError> {
        let name = names::fanout_stream(dc);
        let mut fanout = js
            .get_stream(&name)
            .await
            .map_err(|error| read_error(format!("opening stream {name}"), error))?;
        let info = fanout
            .info()
            .await
            .map_err(|error| read_error(format!("reading stream {name}"), error))?;
        let origins = info
            .config
            .sources
            .iter()
            .flatten()
            .filter_map(|source| source.name.strip_prefix("EVENTS_").map(str::to_owned))
            .collect();
        let totals = Totals::open(js, dc).await?;
        Ok(Self {
            js: js.clone(),
            dc: dc.to_owned(),
            fanout,
            origins,
            totals,
        })
    }

    /// Where every origin stands now for `video` (0 for an origin with nothing on it), and the
    /// video's like total.
    pub(crate) async fn heads(&self, video: &VideoId) -> Result<(Position, u64), FabricError> {
        let mut position = Position::new();
        for origin in &self.origins {
            let subject = format!("fanfare.fanout.{}.*.{origin}.{video}.*", self.dc);
            let seq = match self.fanout.direct_get_last_for_subject(subject).await {
                Ok(message) => origin_sequence(&message.headers).unwrap_or(0),
                Err(error) if is_not_found(&error) => 0,
                Err(error) => {
                    return Err(read_error(format!("reading the head of {video}"), error))
                }
            };
            position.advance(origin, seq);
        }
        let (record, _) = self.totals.read(video).await?;
        Ok((position, record.total))
    }

    /// The comments on `video` after `from`, at most `limit`. `known` is where this frontend's
    /// viewers of the video stand: proof that interactions up to there existed, even when
    /// retention removed all of them.
    pub(crate) async fn comments_after(
        &self,
        video: &VideoId,
        from: &Position,
        known: &Position,
        limit: usize,
    ) -> Result<Replay, FabricError> {
        let first_retained = self.first_retained_seq().await?;
        let mut replayed = Vec::new();
        for origin in &self.origins {
            let after = from.seq(origin);
            if first_retained > 1
                && self
                    .lost_after(origin, after, known.seq(origin), first_retained)
                    .await?
            {
                return Ok(Replay::TooOld);
            }
            let subject = names::fanout_comments(&self.dc, origin, video);
            let mut next = first_retained;
            loop {
                let message = match self
                    .fanout
                    .direct_get_next_for_subject(subject.as_str(), Some(next))
                    .await
                {
                    Ok(message) => message,
                    Err(error) if is_not_found(&error) => break,
                    Err(error) => return Err(read_error(format!("replaying {video}"), error)),
                };
                next = message.sequence + 1;
                let Some(origin_seq) = origin_sequence(&message.headers) else {
                    continue;
                };
                if origin_seq <= after {
                    continue;
                }
                let Ok(Interaction::Comment(comment)) = serde_json::from_slice(&message.payload)
                else {
                    continue;
                };
                if replayed.len() >= limit {
                    return Ok(Replay::TooOld);
                }
                replayed.push(Replayed {
                    origin: origin.clone(),
                    origin_seq,
                    fanout_seq: message.sequence,
                    comment,
                });
            }
            if known.seq(origin) > after {
                let bridged = self.bridged_comments(video, origin, after, known).await?;
                if replayed.len() + bridged.len() > limit {
                    return Ok(Replay::TooOld);
                }
                replayed.extend(bridged);
            }
        }
        replayed.sort_by_key(|item| item.fanout_seq);
        Ok(Replay::Comments(replayed))
    }

    /// Comments this frontend delivered from `origin` that the fan-out stream does not hold
    /// yet: right after a heal, the dispatchers' bridge sends them straight from the origin
    /// stream while the fan-out stream's source is still being restarted. They are read from
    /// the origin stream too, after `after` and up to what the viewers here have seen.
    async fn bridged_comments(
        &self,
        video: &VideoId,
        origin: &str,
        after: u64,
        known: &Position,
    ) -> Result<Vec<Replayed>, FabricError> {
        let held = match self
            .fanout
            .direct_get_last_for_subject(names::fanout_from_origin(&self.dc, origin))
            .await
        {
            Ok(message) => origin_sequence(&message.headers).unwrap_or(0),
            Err(error) if is_not_found(&error) => 0,
            Err(error) => return Err(read_error(format!("replaying {video}"), error)),
        };
        let up_to = known.seq(origin);
        if up_to <= held {
            return Ok(Vec::new());
        }
        let stream = self
            .js
            .get_stream_no_info(names::origin_stream(origin))
            .await
            .map_err(|error| read_error(format!("replaying {video}"), error))?;
        let subject = names::origin_subject(origin, video, Kind::Comment);
        let mut bridged = Vec::new();
        let mut next = held.max(after) + 1;
        while next <= up_to {
            // From the stream's leader: a lagging replica would answer "none" for comments
            // that exist (see `FanoutSources::read_origin`).
            let read = stream.get_first_raw_message_by_subject(subject.as_str(), next);
            let message = match tokio::time::timeout(ORIGIN_READ_WITHIN, read).await {
                Ok(Ok(message)) if message.sequence <= up_to => message,
                Ok(Ok(_)) => break,
                Ok(Err(error))
                    if error.kind()
                        == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                {
                    break
                }
                Ok(Err(error)) => return Err(read_error(format!("replaying {video}"), error)),
                Err(elapsed) => return Err(read_error(format!("replaying {video}"), elapsed)),
            };
            next = message.sequence + 1;
            let Ok(Interaction::Comment(comment)) = serde_json::from_slice(&message.payload) else {
                continue;
            };
            bridged.push(Replayed {
                origin: origin.to_owned(),
                origin_seq: message.sequence,
                // After everything the fan-out stream holds, in origin order.
                fanout_seq: u64::MAX,
                comment,
            });
        }
        Ok(bridged)
    }

    async fn first_retained_seq(&self) -> Result<u64, FabricError> {
        let mut fanout = self.fanout.clone();
        let info = fanout
            .info()
            .await
            .map_err(|error| read_error("reading the fan-out stream".to_owned(), error))?;
        Ok(info.state.first_sequence.max(1))
    }

    /// True when retention already removed interactions of `origin` that came after `after`:
    /// the oldest one still held is more than one step past it, or none is held although
    /// `known_head` shows there were some after it.
    async fn lost_after(
        &self,
        origin: &str,
        after: u64,
        known_head: u64,
        first_retained: u64,
    ) -> Result<bool, FabricError> {
        let subject = names::fanout_from_origin(&self.dc, origin);
        match self
            .fanout
            .direct_get_next_for_subject(subject, Some(first_retained))
            .await
        {
            Ok(message) => {
                Ok(origin_sequence(&message.headers).is_some_and(|oldest| oldest > after + 1))
            }
            Err(error) if is_not_found(&error) => Ok(known_head > after),
            Err(error) => Err(read_error(
                "reading the oldest retained interaction".to_owned(),
                error,
            )),
        }
    }
}

fn is_not_found(error: &jetstream::stream::DirectGetError) -> bool {
    error.kind() == jetstream::stream::DirectGetErrorKind::NotFound
}
