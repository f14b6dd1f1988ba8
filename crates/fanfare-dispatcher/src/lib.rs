//! The dispatcher: takes its datacenter's copy of every interaction and sends each one to the
//! local frontends that have viewers of its video, and to no one else.
//!
//! Data path: `FANOUT_<dc>` stream → one pull per dispatch partition (the server pins each
//! partition to one dispatcher of the datacenter at a time, so per-video order holds and a
//! second dispatcher is a hot standby that takes over when the pin expires) → a dispatch round
//! (decode, count likes into the datacenter's totals, look the video up in the watched
//! subscription table) → one [`FrontendBatch`](fanfare_model::FrontendBatch) per interested
//! frontend on core NATS → acknowledgements. After a partition heals, the bridge reads what
//! the fan-out stream is still missing straight from the origin streams (see `bridge`).
//!
//! [`run`] is what `fanfare dispatcher` calls; tests call it too.

mod admin;
mod bridge;
mod partition;
mod send;
mod settings;

pub use settings::Settings;

use std::sync::Arc;
use std::time::Duration;

use fanfare_fabric::{FabricError, FanoutSources, SubscriptionTable, Totals};
use fanfare_telemetry::DispatcherMetrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    #[error("cannot reach nats")]
    Nats(#[from] FabricError),
    #[error("admin server failed")]
    Admin(#[source] std::io::Error),
}

/// How long shutdown waits for partitions to finish their round and hand their pin back.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a dispatcher until `shutdown` is cancelled. `admin` serves `/healthz`, `/readyz`,
/// `/metrics` and `/v1/table`.
pub async fn run(
    settings: Settings,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), DispatcherError> {
    let mut registry = fanfare_telemetry::node_registry(&settings.dc, &settings.name);
    let metrics = DispatcherMetrics::register(&mut registry);
    let client = fanfare_fabric::connect(&settings.nats, &settings.name).await?;
    let js = async_nats::jetstream::new(client.clone());
    let (table, table_task) = SubscriptionTable::start(
        js.clone(),
        &settings.dc,
        settings.stale_interest_grace,
        shutdown.child_token(),
    )
    .await?;
    let totals = Totals::open(&js, &settings.dc).await?;
    let fanout = partition::open_fanout(&js, &settings.dc).await?;

    let sources = FanoutSources::open(&js, &settings.dc).await?;

    let settings = Arc::new(settings);
    let sender = Arc::new(send::Sender {
        dc: settings.dc.clone(),
        dispatcher: settings.name.clone(),
        client: client.clone(),
        table: table.clone(),
        totals,
        unreachable: Default::default(),
    });
    let tracker = TaskTracker::new();
    let partitions_token = shutdown.child_token();
    for partition in 0..settings.partitions {
        let worker = partition::PartitionWorker {
            partition,
            settings: settings.clone(),
            fanout: fanout.clone(),
            sender: sender.clone(),
            metrics: metrics.clone(),
        };
        tracker.spawn(worker.run(partitions_token.clone()));
    }
    // Every dispatcher of the datacenter runs the bridge: what two of them send twice is
    // dropped downstream like any redelivery.
    let bridge = bridge::Bridge {
        dc: settings.dc.clone(),
        sources,
        fanout,
        partitions: settings.partitions,
        max_batch: settings.max_round,
        sender,
        metrics: metrics.clone(),
    };
    tracker.spawn(bridge.run(partitions_token.clone()));
    tracker.close();
    tracing::info!(
        dc = settings.dc,
        partitions = settings.partitions,
        "dispatcher started"
    );

    let state = admin::AdminState {
        registry: Arc::new(registry),
        table: table.clone(),
        client: client.clone(),
        metrics,
    };
    let admin_token = shutdown.clone();
    let admin_server = axum::serve(admin, admin::router(state))
        .with_graceful_shutdown(async move { admin_token.cancelled().await });
    let admin_result = admin_server.await;

    partitions_token.cancel();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("partitions did not stop within {DRAIN_TIMEOUT:?}");
    }
    let _ = table_task.await;
    let _ = client.flush().await;
    tracing::info!("dispatcher stopped");
    admin_result.map_err(DispatcherError::Admin)
}
