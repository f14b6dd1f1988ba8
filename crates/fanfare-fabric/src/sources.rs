//! What a datacenter's fan-out stream holds from each origin, next to what each origin holds.
//!
//! When a gateway link comes back after a cut, nats-server re-establishes it within seconds,
//! but a source that failed while the link was down is retried on a back-off that grows with
//! the length of the cut (measured here: 40–49 s after a 60–120 s cut), and restarting it
//! needs a stream update, which waits for the JetStream meta layer to elect a leader again
//! (4–6 s after the isolated server rejoins). [`FanoutSources`] gives the dispatcher what it
//! needs to notice a stalled source and to read what it misses straight from the origin by
//! direct get, which needs neither.

use async_nats::jetstream::{
    self,
    stream::{DirectGetErrorKind, LastRawMessageErrorKind},
};
use fanfare_model::{names, Delivery, DeliveryPayload, Interaction};
use std::time::Duration;

use crate::{FabricError, FabricErrorKind};

/// How long an origin has to answer a stream info request to count as reachable.
const REACHABLE_WITHIN: Duration = Duration::from_millis(500);

/// Where the fan-out stream stands on one origin: the origin sequence of the last interaction
/// it holds from that origin, and that message's own sequence in the fan-out stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub origin_seq: u64,
    pub fanout_seq: u64,
}

/// One origin-stream read by direct get.
pub enum OriginRead {
    /// The interaction at that sequence, addressed to its video's viewers.
    Delivery(Delivery),
    /// Nothing usable there (deleted by retention, or a message that does not decode).
    Skip,
}

/// The sources of one datacenter's fan-out stream.
#[derive(Clone)]
pub struct FanoutSources {
    js: jetstream::Context,
    dc: String,
    fanout: jetstream::stream::Stream,
    origins: Vec<String>,
    /// A handle on each origin's stream (no request is made to open one).
    origin_streams: std::collections::HashMap<String, jetstream::stream::Stream<()>>,
    /// Every source as the stream had it when this was opened (after provisioning).
    provisioned: Vec<jetstream::stream::Source>,
}

impl FanoutSources {
    pub async fn open(js: &jetstream::Context, dc: &str) -> Result<Self, FabricError> {
        let name = names::fanout_stream(dc);
        let context = || format!("opening stream {name}");
        let mut fanout = js
            .get_stream(&name)
            .await
            .map_err(|error| FabricError::new(FabricErrorKind::Consume, context(), error))?;
        let info = fanout
            .info()
            .await
            .map_err(|error| FabricError::new(FabricErrorKind::Consume, context(), error))?;
        let provisioned = info.config.sources.clone().unwrap_or_default();
        let origins: Vec<String> = provisioned
            .iter()
            .filter_map(|source| source.name.strip_prefix("EVENTS_").map(str::to_owned))
            .collect();
        let mut origin_streams = std::collections::HashMap::new();
        for origin in &origins {
            let stream = js
                .get_stream_no_info(names::origin_stream(origin))
                .await
                .map_err(|error| {
                    FabricError::new(FabricErrorKind::Consume, format!("opening {origin}"), error)
                })?;
            origin_streams.insert(origin.clone(), stream);
        }
        Ok(Self {
            js: js.clone(),
            dc: dc.to_owned(),
            fanout,
            origins,
            origin_streams,
            provisioned,
        })
    }

    /// Every origin datacenter the fan-out stream sources, this one included.
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    /// Where the fan-out stream stands on `origin` (zeros when it holds nothing from it).
    pub async fn held_from(&self, origin: &str) -> Result<Held, FabricError> {
        let subject = names::fanout_from_origin(&self.dc, origin);
        match self.fanout.direct_get_last_for_subject(subject).await {
            Ok(message) => Ok(Held {
                origin_seq: crate::origin_sequence(&message.headers).unwrap_or(0),
                fanout_seq: message.sequence,
            }),
            Err(error) if error.kind() == DirectGetErrorKind::NotFound => Ok(Held::default()),
            Err(error) => Err(FabricError::new(
                FabricErrorKind::Consume,
                format!("reading the last interaction from {origin}"),
                error,
            )),
        }
    }

    /// The last sequence of `origin`'s stream, if the origin answers in time.
    pub async fn origin_last(&self, origin: &str) -> Option<u64> {
        let stream = self.origin_streams.get(origin)?;
        let info = tokio::time::timeout(REACHABLE_WITHIN, stream.get_info()).await;
        info.ok()?.ok().map(|info| info.state.last_sequence)
    }

    /// Reads the interaction at `seq` of `origin`'s stream from the stream's leader (no
    /// consumer, no meta leader needed). Not a direct get: any replica answers those, and a
    /// follower that has not caught up answers "not found" for a message that exists, which
    /// would read as a gap.
    pub async fn read_origin(&self, origin: &str, seq: u64) -> Result<OriginRead, FabricError> {
        let Some(stream) = self.origin_streams.get(origin) else {
            return Ok(OriginRead::Skip);
        };
        let message = match stream.get_raw_message(seq).await {
            Ok(message) => message,
            // Only sequences up to the leader's last are asked for: this one was removed.
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => {
                return Ok(OriginRead::Skip)
            }
            Err(error) => {
                return Err(FabricError::new(
                    FabricErrorKind::Consume,
                    format!("reading {origin} at {seq}"),
                    error,
                ))
            }
        };
        let Some((from, video)) = names::parse_origin_subject(message.subject.as_str()) else {
            return Ok(OriginRead::Skip);
        };
        let Ok(interaction) = serde_json::from_slice::<Interaction>(&message.payload) else {
            return Ok(OriginRead::Skip);
        };
        if from != origin || interaction.video_id() != &video {
            return Ok(OriginRead::Skip);
        }
        Ok(OriginRead::Delivery(Delivery {
            video_id: video,
            origin_dc: origin.to_owned(),
            origin_seq: message.sequence,
            payload: DeliveryPayload::from(interaction),
        }))
    }

    /// Restarts `origin`'s source: removes it and puts it back as provisioned, so the server
    /// starts it afresh from the last sequence the fan-out stream holds (no gap, no
    /// duplicate). A source missing from the live config (an earlier restart removed it and
    /// could not put it back) is put back.
    pub async fn restart(&self, origin: &str) -> Result<(), FabricError> {
        let update_error = |error| {
            FabricError::new(
                FabricErrorKind::Provision,
                format!("restarting the fan-out source of {origin}"),
                error,
            )
        };
        let name = names::origin_stream(origin);
        let Some(provisioned) = self.provisioned.iter().find(|source| source.name == name) else {
            return Ok(());
        };
        let live = self
            .fanout
            .get_info()
            .await
            .map_err(|error| {
                FabricError::new(
                    FabricErrorKind::Consume,
                    "reading the fan-out stream",
                    error,
                )
            })?
            .config;
        let mut without = live.clone();
        without.sources = Some(
            live.sources
                .iter()
                .flatten()
                .filter(|source| source.name != name)
                .cloned()
                .collect(),
        );
        if without.sources != live.sources {
            self.js
                .update_stream(without.clone())
                .await
                .map_err(update_error)?;
        }
        let mut with = without;
        with.sources
            .get_or_insert_with(Vec::new)
            .push(provisioned.clone());
        self.js.update_stream(with).await.map_err(update_error)?;
        Ok(())
    }
}
