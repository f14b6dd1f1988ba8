//! The frontend: holds viewers' SSE connections and accepts publish requests.
//!
//! Data path in: a viewer's `GET /v1/videos/{id}/events` (one video) or `GET /v1/events`
//! (several, changed by connection id) is checked once ([`stream`]) and opened on the fan-out
//! engine ([`fanfare_engine`], [`viewer`]); a video's first viewer here writes this frontend's
//! interest into the datacenter's subscription table ([`interest`], under the frontend's one
//! lease). Dispatchers then send this frontend, on its own NATS subject, batches of
//! interactions for the videos it watches; the engine drops anything already delivered and
//! hands the rest, encoded once, to every follower of the video. Viewer counts of every
//! datacenter come from the other frontends' reports ([`counts`]).
//!
//! Data path out: `POST .../likes` and `.../comments` are authenticated ([`auth`]: the
//! bearer token's subject is the user), validated, stored in the
//! datacenter's origin stream (likes by group commit, [`ingest`]) and answered 202 once stored.
//!
//! [`run`] is what `fanfare frontend` calls; tests call it too.

mod auth;
mod counts;
mod drain;
mod history;
mod http;
mod ingest;
mod interest;
mod limits;
mod listen;
mod problem;
mod settings;
mod stream;
mod viewer;

pub use limits::LimitSettings;
pub use problem::ApiError;
pub use settings::Settings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanfare_engine::{Hub, HubConfig};
use fanfare_fabric::{FabricError, FabricErrorKind, InterestRegistry};
use fanfare_model::{names, FrontendBatch};
use fanfare_telemetry::{spans, FrontendMetrics};
use futures::StreamExt;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ingest::LikeQueue;
use crate::interest::InterestKeeper;

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("cannot reach nats")]
    Nats(#[from] FabricError),
    #[error("http server failed")]
    Serve(#[source] std::io::Error),
    #[error("cannot set up authentication")]
    Auth(#[from] fanfare_auth::AuthConfigError),
}

/// State every request handler shares.
pub(crate) struct Shared {
    settings: Settings,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    hub: Hub,
    /// Viewer streams open now (single- and multi-video).
    open_streams: std::sync::atomic::AtomicUsize,
    /// A graceful drain has begun: `/readyz` answers 503.
    draining: std::sync::atomic::AtomicBool,
    /// Open multi-video connections by id: who owns each, and its one change at a time.
    connections: Mutex<HashMap<String, Arc<ConnectionMeta>>>,
    history: history::History,
    likes: LikeQueue,
    /// Verifies publishers' and private videos' viewers' tokens (a no-op when auth is off).
    auth: auth::Gate,
    interest: InterestKeeper,
    /// Rate limits of likes and comments, per user and per client address.
    publish_limits: limits::PublishLimits,
    metrics: FrontendMetrics,
    registry: Registry,
}

/// What the frontend keeps of an open multi-video connection beside the engine's part.
pub(crate) struct ConnectionMeta {
    /// The user whose token opened or added a private video: later private additions must
    /// come with the same user's token.
    owner: Mutex<Option<String>>,
    /// Held while a subscription change is applied, so that the limit holds.
    pub changes: tokio::sync::Mutex<()>,
}

impl ConnectionMeta {
    fn new(owner: Option<String>) -> Self {
        Self {
            owner: Mutex::new(owner),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// Records `subject` as the owner, or refuses it when the connection has another.
    pub(crate) fn claim(&self, subject: String) -> Result<(), ApiError> {
        let mut owner = self
            .owner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match owner.as_deref() {
            Some(known) if known != subject => Err(ApiError::ConnectionOwnerMismatch),
            _ => {
                *owner = Some(subject);
                Ok(())
            }
        }
    }
}

impl Shared {
    pub(crate) fn stream_opened(&self) {
        self.metrics.stream_opened();
        self.open_streams
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ConnectionMeta>>> {
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn connection_meta(&self, id: &str) -> Option<Arc<ConnectionMeta>> {
        self.connections().get(id).cloned()
    }

    pub(crate) fn connection_opened(&self, id: &str, owner: Option<String>) {
        self.connections()
            .insert(id.to_owned(), Arc::new(ConnectionMeta::new(owner)));
    }

    pub(crate) fn connection_closed(&self, id: &str) {
        self.connections().remove(id);
    }
}

/// How long shutdown waits for in-flight publishes to be acknowledged.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Accept queue of the frontend's listener. Thousands of viewers connect at once when a
/// stream starts; the default of 1024 overflows and the kernel drops SYNs, which clients retry
/// only after a second.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the frontend's listener with a [`LISTEN_BACKLOG`]-deep accept queue.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs a frontend on `listener` until `shutdown` is cancelled, or until a graceful drain that
/// `drain` starts is over: `/readyz` answers 503 for `drain_grace` while everything is still
/// served, then viewer streams end in waves over `drain_window`, each with a jittered `retry:`
/// so their reconnects spread over the window. `shutdown` also cuts a drain short.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
    drain: CancellationToken,
) -> Result<(), FrontendError> {
    // Keys are read before anything connects: a bad key file stops the start-up.
    let verifier = fanfare_auth::Verifier::from_settings(&settings.auth)?;
    if verifier.is_none() {
        tracing::warn!(
            "authentication is OFF: anyone can publish likes and comments as any user; \
             configure [auth] keys for anything but local testing"
        );
    }
    let mut registry = fanfare_telemetry::node_registry(&settings.dc, &settings.name);
    let metrics = FrontendMetrics::register(&mut registry);
    let client = fanfare_fabric::connect(&settings.nats, &settings.name).await?;
    let js = async_nats::jetstream::new(client.clone());
    let hub = Hub::new(HubConfig {
        viewer_buffer: settings.viewer_buffer,
    });
    let tracker = TaskTracker::new();

    let inbox = names::frontend_inbox(&settings.dc, &settings.name);
    let batches = client.subscribe(inbox.clone()).await.map_err(|error| {
        FabricError::new(
            FabricErrorKind::Consume,
            format!("subscribing to {inbox}"),
            error,
        )
    })?;
    tracker.spawn(receive_batches(
        client.clone(),
        batches,
        hub.clone(),
        metrics.clone(),
        shutdown.child_token(),
    ));

    let registry_writer =
        InterestRegistry::open(&js, &settings.dc, &settings.name, settings.interest_ttl).await?;
    // The lease before anything is served: interests count only under it.
    registry_writer.acquire_lease().await?;
    let history = history::History::open(&js, &settings.dc).await?;
    let interest_token = CancellationToken::new();
    let (interest, interest_task) = InterestKeeper::start(
        registry_writer,
        hub.clone(),
        settings.interest_ttl,
        metrics.clone(),
        interest_token.clone(),
    );
    let ingest_token = CancellationToken::new();
    let likes = ingest::start_like_committer(
        js.clone(),
        settings.dc.clone(),
        settings.like_queue,
        settings.like_commits_in_flight,
        metrics.clone(),
        &tracker,
        ingest_token.clone(),
    );

    let counts_token = CancellationToken::new();
    let counts_task = tokio::spawn(counts::run(
        client.clone(),
        js.clone(),
        hub.clone(),
        settings.name.clone(),
        settings.dc.clone(),
        counts::Pace {
            report_every: settings.viewer_report_every,
            heartbeat: settings.viewer_heartbeat,
            viewers_every: settings.viewers_every,
            dead_after: settings.interest_ttl,
        },
        counts_token.clone(),
    ));

    let publish_limits = limits::PublishLimits::new(&settings.limits);
    let shared = Arc::new(Shared {
        settings,
        client: client.clone(),
        js,
        hub,
        open_streams: Default::default(),
        draining: Default::default(),
        connections: Mutex::default(),
        history,
        likes,
        auth: auth::Gate::new(verifier, metrics.clone()),
        interest,
        publish_limits,
        metrics,
        registry,
    });
    tracing::info!(
        dc = shared.settings.dc,
        addr = %listener.local_addr().map_err(FrontendError::Serve)?,
        "frontend listening"
    );
    // Serving stops at once on `shutdown`, or once a drain is over.
    let serving = CancellationToken::new();
    {
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let serving = serving.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = drain.cancelled() => drain::streams(&shared, &shutdown).await,
            }
            serving.cancel();
        });
    }
    // One keep-alive timer for every viewer, likes flushed only while some wait, and one
    // watch that ends every stream when serving stops.
    let ticker_hub = shared.hub.clone();
    let ticker_shutdown = serving.clone();
    let keepalive = shared.settings.keepalive;
    let likes_every = shared.settings.likes_every;
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut keepalives = tokio::time::interval_at(start + keepalive, keepalive);
        loop {
            tokio::select! {
                _ = ticker_shutdown.cancelled() => break,
                _ = ticker_hub.likes_waiting() => {
                    // Likes arriving within one interval go out together.
                    tokio::select! {
                        _ = ticker_shutdown.cancelled() => break,
                        _ = tokio::time::sleep(likes_every) => ticker_hub.flush_likes(),
                    }
                }
                _ = keepalives.tick() => ticker_hub.keep_alive(),
            }
        }
        ticker_hub.flush_likes();
        ticker_hub.close();
    });
    let served = listen::serve(
        listener,
        http::router(shared.clone()),
        shared.clone(),
        serving.clone(),
    )
    .await;

    // Requests are drained: store what was accepted, then leave the subscription table.
    ingest_token.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("in-flight publishes did not finish within {DRAIN_TIMEOUT:?}");
    }
    interest_token.cancel();
    counts_token.cancel();
    if tokio::time::timeout(DRAIN_TIMEOUT, interest_task)
        .await
        .is_err()
    {
        tracing::warn!("withdrawing interest did not finish within {DRAIN_TIMEOUT:?}");
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, counts_task).await;
    let _ = client.flush().await;
    tracing::info!("frontend stopped");
    served.map_err(FrontendError::Serve)
}

/// Receives dispatchers' batches for this frontend and hands them to the hub.
async fn receive_batches(
    client: async_nats::Client,
    batches: async_nats::Subscriber,
    hub: Hub,
    metrics: FrontendMetrics,
    shutdown: CancellationToken,
) {
    let mut batches = std::pin::pin!(batches.take_until(shutdown.cancelled_owned()));
    while let Some(message) = batches.next().await {
        let batch: FrontendBatch = match serde_json::from_slice(&message.payload) {
            Ok(batch) => batch,
            Err(error) => {
                metrics.batch_undecodable(&error);
                continue;
            }
        };
        let received = batch.deliveries.len();
        let traceparent = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(spans::TRACEPARENT))
            .map(|value| value.as_str());
        let cause = spans::TraceCause::from_traceparent(traceparent);
        let span = spans::frontend_batch(&batch.dispatcher, received, cause);
        let outcome = span.in_scope(|| hub.deliver(batch.deliveries));
        metrics.batch_received(received, outcome.unwatched, outcome.duplicates);
        // Confirm, so the dispatcher acknowledges the interactions only once they are here.
        if let Some(reply) = message.reply {
            if let Err(error) = client.publish(reply, bytes::Bytes::new()).await {
                tracing::debug!(%error, "cannot confirm a batch; the dispatcher will send it again");
            }
        }
    }
}
