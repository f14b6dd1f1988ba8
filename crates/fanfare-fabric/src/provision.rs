//! Creates (or updates to the wanted shape) every stream, consumer and bucket of a topology.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use fanfare_model::names;

use crate::{FabricError, FabricErrorKind};

/// What [`provision`] builds: the datacenters and the knobs that shape their streams.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Datacenter names with the replica count of their streams and buckets.
    pub datacenters: Vec<(String, usize)>,
    pub partitions: u16,
    pub interest_ttl: Duration,
    pub retention: Duration,
    pub dispatch: DispatchTuning,
}

/// Timers of the dispatch consumers.
#[derive(Debug, Clone, Copy)]
pub struct DispatchTuning {
    /// How long a dispatcher may hold a message unacknowledged before it is redelivered.
    pub ack_wait: Duration,
    /// How long a partition stays pinned to a dispatcher that stopped pulling. Longer than
    /// `ack_wait`, so that when the pin moves every message the old owner held is already due
    /// for redelivery and goes out first, in order.
    pub pin_timeout: Duration,
    /// Unacknowledged messages one partition may have in flight.
    pub max_ack_pending: i64,
}

impl Default for DispatchTuning {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(2),
            pin_timeout: Duration::from_secs(4),
            max_ack_pending: 8192,
        }
    }
}

/// How long provisioning keeps retrying an operation the servers are not ready for yet (a fresh
/// supercluster may know its meta leader before every cluster has reported its peers).
const PROVISION_RETRY_FOR: Duration = Duration::from_secs(30);
/// How long a publish retried with the same message id is recognised as a duplicate.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

pub async fn provision(client: &async_nats::Client, layout: &Layout) -> Result<(), FabricError> {
    let js = jetstream::new(client.clone());
    let origins: Vec<&str> = layout
        .datacenters
        .iter()
        .map(|(dc, _)| dc.as_str())
        .collect();
    for (dc, replicas) in &layout.datacenters {
        let config = origin_stream_config(dc, *replicas, layout);
        retry(&format!("creating stream {}", config.name), || {
            js.create_or_update_stream(config.clone())
        })
        .await?;
    }
    for (dc, replicas) in &layout.datacenters {
        let config = fanout_stream_config(dc, &origins, *replicas, layout);
        retry(&format!("creating stream {}", config.name), || {
            js.create_or_update_stream(config.clone())
        })
        .await?;
        let fanout = names::fanout_stream(dc);
        for partition in 0..layout.partitions {
            let config = dispatch_consumer_config(dc, partition, &layout.dispatch);
            let context = format!(
                "creating consumer {fanout}/{}",
                names::dispatch_consumer(partition)
            );
            retry(&context, || {
                js.create_consumer_on_stream(config.clone(), fanout.as_str())
            })
            .await?;
        }
        let subs = subscription_bucket_config(dc, *replicas, layout.interest_ttl);
        retry(&format!("creating bucket {}", subs.bucket), || {
            js.create_or_update_key_value(subs.clone())
        })
        .await?;
        let totals = totals_bucket_config(dc, *replicas);
        retry(&format!("creating bucket {}", totals.bucket), || {
            js.create_or_update_key_value(totals.clone())
        })
        .await?;
    }
    Ok(())
}

async fn retry<T, E, F, Fut>(context: &str, mut attempt: F) -> Result<T, FabricError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let deadline = tokio::time::Instant::now() + PROVISION_RETRY_FOR;
    let mut pause = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%error, context, "provisioning not accepted yet, retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(error) => {
                return Err(FabricError::new(FabricErrorKind::Provision, context, error));
            }
        }
    }
}

fn placement(dc: &str) -> Option<stream::Placement> {
    Some(stream::Placement {
        cluster: Some(dc.to_owned()),
        tags: Vec::new(),
    })
}

fn origin_stream_config(dc: &str, replicas: usize, layout: &Layout) -> stream::Config {
    stream::Config {
        name: names::origin_stream(dc),
        description: Some(format!("interactions published in {dc}, once")),
        subjects: vec![names::origin_subjects(dc)],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_age: layout.retention,
        // Retried publishes within this window are stored once; it cannot exceed retention.
        duplicate_window: DUPLICATE_WINDOW.min(layout.retention),
        allow_direct: true,
        placement: placement(dc),
        ..Default::default()
    }
}

fn fanout_stream_config(
    dc: &str,
    origins: &[&str],
    replicas: usize,
    layout: &Layout,
) -> stream::Config {
    let sources = origins
        .iter()
        .map(|origin| stream::Source {
            name: names::origin_stream(origin),
            subject_transforms: vec![stream::SubjectTransform {
                source: names::origin_subjects(origin),
                destination: names::fanout_transform(dc, origin, layout.partitions),
            }],
            ..Default::default()
        })
        .collect();
    stream::Config {
        name: names::fanout_stream(dc),
        description: Some(format!("{dc}'s copy of every datacenter's interactions")),
        sources: Some(sources),
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_age: layout.retention,
        allow_direct: true,
        placement: placement(dc),
        ..Default::default()
    }
}

fn dispatch_consumer_config(
    dc: &str,
    partition: u16,
    tuning: &DispatchTuning,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(names::dispatch_consumer(partition)),
        description: Some(format!("dispatch partition {partition} of {dc}")),
        filter_subject: names::fanout_partition_filter(dc, partition),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: tuning.ack_wait,
        max_ack_pending: tuning.max_ack_pending,
        deliver_policy: consumer::DeliverPolicy::All,
        priority_policy: consumer::PriorityPolicy::PinnedClient,
        priority_groups: vec![names::DISPATCH_GROUP.to_owned()],
        priority_timeout: tuning.pin_timeout,
        ..Default::default()
    }
}

fn subscription_bucket_config(dc: &str, replicas: usize, interest_ttl: Duration) -> kv::Config {
    kv::Config {
        bucket: names::subscription_bucket(dc),
        description: format!(
            "{dc}'s subscription table: f.<frontend> leases, v.<video>.<frontend> interests"
        ),
        history: 1,
        // Interest keys live as long as their frontend keeps them; only the leases expire, by
        // their own TTL, and the expiry leaves a marker so that watching dispatchers see it.
        max_age: Duration::ZERO,
        limit_markers: Some(interest_ttl.max(Duration::from_secs(1))),
        storage: stream::StorageType::File,
        num_replicas: replicas,
        placement: placement(dc),
        ..Default::default()
    }
}

fn totals_bucket_config(dc: &str, replicas: usize) -> kv::Config {
    kv::Config {
        bucket: names::totals_bucket(dc),
        description: format!("like totals per video as {dc} counts them"),
        history: 1,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        placement: placement(dc),
        ..Default::default()
    }
}
