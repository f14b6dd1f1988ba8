//! Viewers: SSE connections that behave like a browser's `EventSource`.
//!
//! A viewer watches one video for the whole run. When its connection ends (its frontend was
//! killed or restarted, or cut it off), it waits a moment and reconnects to a different
//! running frontend, chosen at random in any datacenter, sending the last event id it received
//! as `Last-Event-ID`. Everything it receives goes to the [`Ledger`]: each comment (for
//! duplicates, order and loss), each like total, each reset.

use std::sync::Arc;
use std::time::Duration;

use fanfare_client::sse::{SseItem, SseStream};
use fanfare_model::{unix_millis, Position};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::ledger::Ledger;
use crate::liveness::Liveness;
use crate::rng::SeededRng;

/// A reconnect waits this long at least, and up to twice as long (spread so that the viewers
/// of a killed frontend do not all come back in the same instant).
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// A frontend a viewer can connect to.
#[derive(Debug, Clone)]
pub(crate) struct Frontend {
    pub(crate) name: String,
    pub(crate) dc: usize,
    pub(crate) url: String,
}

pub(crate) struct Viewer {
    pub(crate) index: usize,
    pub(crate) video: String,
    /// The frontend it starts on (index into `frontends`).
    pub(crate) first: usize,
    pub(crate) frontends: Arc<Vec<Frontend>>,
    pub(crate) rng: SeededRng,
}

/// What one event says, as far as the soak cares.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    Comment {
        id: String,
        origin_dc: String,
        /// The comment's sequence in its origin stream, from the event id.
        seq: u64,
        published_at: u64,
    },
    Total(u64),
    Reset,
    Other,
}

/// Reads one SSE event. A comment without a parsable id or body counts as `Other`, which the
/// soak then reports as missing rather than inventing an order for it.
pub(crate) fn interpret(event: &str, data: &str, id: Option<&str>) -> Seen {
    let body: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    match event {
        "comment" => {
            let (Some(comment_id), Some(origin_dc)) =
                (body["comment_id"].as_str(), body["origin_dc"].as_str())
            else {
                return Seen::Other;
            };
            let Some(position) = id.and_then(|id| id.parse::<Position>().ok()) else {
                return Seen::Other;
            };
            Seen::Comment {
                id: comment_id.to_owned(),
                origin_dc: origin_dc.to_owned(),
                seq: position.seq(origin_dc),
                published_at: body["published_at"].as_u64().unwrap_or(0),
            }
        }
        "likes" | "total" => match body["total"].as_u64() {
            Some(total) => Seen::Total(total),
            None => Seen::Other,
        },
        "reset" => Seen::Reset,
        _ => Seen::Other,
    }
}

impl Viewer {
    /// Chooses where to reconnect: a random running frontend other than `previous`; the same
    /// one if it is the only one running; `None` if none runs.
    fn next_frontend(&mut self, previous: usize, liveness: &Liveness) -> Option<usize> {
        let others: Vec<usize> = (0..self.frontends.len())
            .filter(|&index| index != previous && liveness.is_running(&self.frontends[index].name))
            .collect();
        if let Some(&index) = self.rng.pick(&others) {
            return Some(index);
        }
        liveness
            .is_running(&self.frontends[previous].name)
            .then_some(previous)
    }

    /// Watches until `shutdown`.
    pub(crate) async fn run(
        mut self,
        ledger: Arc<Ledger>,
        liveness: Arc<Liveness>,
        shutdown: CancellationToken,
    ) {
        let mut current = self.first;
        let mut last_event_id: Option<String> = None;
        let mut connected_before = false;
        loop {
            let frontend = self.frontends[current].clone();
            let url = format!("{}/v1/videos/{}/events", frontend.url, self.video);
            let headers: Vec<(&str, &str)> = last_event_id
                .as_deref()
                .map(|id| ("last-event-id", id))
                .into_iter()
                .collect();
            let connecting = tokio::select! {
                _ = shutdown.cancelled() => return,
                connecting = SseStream::connect(&url, &headers) => connecting,
            };
            if let Ok(mut stream) = connecting {
                ledger.viewer_connected(self.index, connected_before);
                connected_before = true;
                loop {
                    let item = tokio::select! {
                        _ = shutdown.cancelled() => {
                            ledger.viewer_disconnected(self.index);
                            return;
                        }
                        item = stream.next_item() => item,
                    };
                    let Ok(Some(SseItem::Event(event))) = item else {
                        if matches!(item, Ok(Some(SseItem::Comment(_)))) {
                            continue;
                        }
                        break;
                    };
                    match interpret(&event.event, &event.data, event.id.as_deref()) {
                        Seen::Comment {
                            id,
                            origin_dc,
                            seq,
                            published_at,
                        } => {
                            last_event_id = event.id.clone();
                            let staleness = unix_millis().saturating_sub(published_at);
                            ledger.comment_received(
                                self.index,
                                frontend.dc,
                                &id,
                                &origin_dc,
                                seq,
                                staleness,
                            );
                        }
                        Seen::Total(total) => ledger.total_seen(self.index, total),
                        Seen::Reset => ledger.reset_received(self.index),
                        Seen::Other => {}
                    }
                }
                ledger.viewer_disconnected(self.index);
            }
            // Like EventSource: a pause, then try again, here somewhere else.
            loop {
                let pause = self.rng.between(RECONNECT_PAUSE, RECONNECT_PAUSE * 2);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                if let Some(next) = self.next_frontend(current, &liveness) {
                    current = next;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comment_event_gives_its_id_origin_and_the_origin_sequence_of_its_position() {
        let data = r#"{"video_id":"v","comment_id":"k1","user_id":"u","text":"t","origin_dc":"dc3","published_at":1700000000000}"#;
        assert_eq!(
            interpret("comment", data, Some("dc1:4,dc2:0,dc3:12")),
            Seen::Comment {
                id: "k1".into(),
                origin_dc: "dc3".into(),
                seq: 12,
                published_at: 1_700_000_000_000
            }
        );
        assert_eq!(interpret("comment", data, None), Seen::Other);
        assert_eq!(interpret("comment", "{}", Some("dc1:1")), Seen::Other);
    }

    #[test]
    fn likes_and_total_events_both_carry_the_total_and_reset_is_noticed() {
        assert_eq!(
            interpret("likes", r#"{"video_id":"v","count":2,"total":9}"#, None),
            Seen::Total(9)
        );
        assert_eq!(
            interpret("total", r#"{"video_id":"v","total":4}"#, None),
            Seen::Total(4)
        );
        assert_eq!(
            interpret("reset", r#"{"video_id":"v","reason":"x"}"#, None),
            Seen::Reset
        );
        assert_eq!(interpret("message", "hello", None), Seen::Other);
    }
}
