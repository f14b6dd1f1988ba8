use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum PublishKind {
    Like,
    Comment,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum PublishOutcome {
    Accepted,
    Rejected,
    Unavailable,
}

/// A limit of the frontend that refused or closed something (`limit` label of
/// `fanfare_frontend_limited_total`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Limit {
    /// A user's like rate.
    LikeUserRate,
    /// A client address's like rate.
    LikeAddressRate,
    /// A user's comment rate.
    CommentUserRate,
    /// A client address's comment rate.
    CommentAddressRate,
    /// Open connections of the whole frontend.
    Connections,
    /// Open connections from one client address.
    AddressConnections,
    /// Size of a request head.
    HeaderSize,
    /// Time to send a request head.
    HeaderTimeout,
    /// Time an API keep-alive connection may stay without a request.
    IdleTimeout,
    /// Size of a publish body.
    BodySize,
    /// Length of a comment's text.
    CommentLength,
    /// A client address's rate of subscription changes (multi-video streams).
    SubscriptionAddressRate,
    /// Videos one stream follows.
    VideosPerConnection,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::LikeUserRate => "like_user_rate",
            Limit::LikeAddressRate => "like_address_rate",
            Limit::CommentUserRate => "comment_user_rate",
            Limit::CommentAddressRate => "comment_address_rate",
            Limit::Connections => "connections",
            Limit::AddressConnections => "address_connections",
            Limit::HeaderSize => "header_size",
            Limit::HeaderTimeout => "header_timeout",
            Limit::IdleTimeout => "idle_timeout",
            Limit::BodySize => "body_size",
            Limit::CommentLength => "comment_length",
            Limit::SubscriptionAddressRate => "subscription_address_rate",
            Limit::VideosPerConnection => "videos_per_connection",
        }
    }
}

impl EncodeLabelValue for Limit {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: Limit,
}

/// What a request refused by authentication asked for.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum AuthRequest {
    /// A like or comment.
    Publish,
    /// A private video's stream.
    View,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthRefusedLabels {
    request: AuthRequest,
    /// The problem slug (`token-expired`, ...): a fixed, small set.
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PublishLabels {
    kind: PublishKind,
    outcome: PublishOutcome,
}

/// Every metric of a frontend.
#[derive(Clone)]
pub struct FrontendMetrics {
    viewers: Gauge,
    videos: Gauge,
    connections: Counter,
    batches_received: Counter,
    deliveries_received: Counter,
    deliveries_unwatched: Counter,
    duplicates_dropped: Counter,
    events_sent: Counter,
    viewers_lagged: Counter,
    interest_errors: Counter,
    replayed: Counter,
    replay_resets: Counter,
    history_errors: Counter,
    publish: Family<PublishLabels, Counter>,
    auth_refused: Family<AuthRefusedLabels, Counter>,
    publish_seconds: Histogram,
    likes_per_commit: Histogram,
    limited: Family<LimitLabels, Counter>,
}

impl FrontendMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            viewers: Gauge::default(),
            videos: Gauge::default(),
            connections: Counter::default(),
            batches_received: Counter::default(),
            deliveries_received: Counter::default(),
            deliveries_unwatched: Counter::default(),
            duplicates_dropped: Counter::default(),
            events_sent: Counter::default(),
            viewers_lagged: Counter::default(),
            interest_errors: Counter::default(),
            replayed: Counter::default(),
            replay_resets: Counter::default(),
            history_errors: Counter::default(),
            publish: Family::default(),
            auth_refused: Family::default(),
            publish_seconds: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            likes_per_commit: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            limited: Family::default(),
        };
        let prefix = registry.sub_registry_with_prefix("fanfare_frontend");
        prefix.register("viewers", "Open viewer streams", metrics.viewers.clone());
        prefix.register(
            "videos",
            "Videos with at least one local viewer",
            metrics.videos.clone(),
        );
        prefix.register(
            "connections",
            "Viewer streams opened",
            metrics.connections.clone(),
        );
        prefix.register(
            "batches_received",
            "Batches received from dispatchers",
            metrics.batches_received.clone(),
        );
        prefix.register(
            "deliveries_received",
            "Interactions received from dispatchers",
            metrics.deliveries_received.clone(),
        );
        prefix.register(
            "deliveries_unwatched",
            "Interactions received for a video without local viewers",
            metrics.deliveries_unwatched.clone(),
        );
        prefix.register(
            "duplicates_dropped",
            "Interactions dropped because they were already delivered",
            metrics.duplicates_dropped.clone(),
        );
        prefix.register(
            "events_sent",
            "SSE events written to viewers",
            metrics.events_sent.clone(),
        );
        prefix.register(
            "viewers_lagged",
            "Viewer streams closed because they fell too far behind",
            metrics.viewers_lagged.clone(),
        );
        prefix.register(
            "interest_errors",
            "Failed writes to the subscription table",
            metrics.interest_errors.clone(),
        );
        prefix.register(
            "replayed",
            "Comments replayed to resuming viewers",
            metrics.replayed.clone(),
        );
        prefix.register(
            "replay_resets",
            "Resumes answered with a reset event (position too old)",
            metrics.replay_resets.clone(),
        );
        prefix.register(
            "history_errors",
            "Failed reads of the fan-out stream's history",
            metrics.history_errors.clone(),
        );
        prefix.register(
            "publish",
            "Publish requests by kind and outcome",
            metrics.publish.clone(),
        );
        prefix.register(
            "auth_refused",
            "Requests refused by authentication, by request and reason",
            metrics.auth_refused.clone(),
        );
        prefix.register(
            "publish_seconds",
            "Time from request to the origin stream's acknowledgement",
            metrics.publish_seconds.clone(),
        );
        prefix.register(
            "likes_per_commit",
            "Likes stored per origin stream message (group commit)",
            metrics.likes_per_commit.clone(),
        );
        prefix.register(
            "limited",
            "Requests refused and connections closed by a limit, by limit",
            metrics.limited.clone(),
        );
        metrics
    }

    /// A viewer stream (one video or several) opened.
    pub fn stream_opened(&self) {
        self.connections.inc();
        self.viewers.inc();
    }

    pub fn stream_closed(&self) {
        self.viewers.dec();
    }

    /// What the fan-out engine counts itself, read when metrics are scraped: events written
    /// to viewers since start, and videos followed now.
    pub fn engine(&self, events_written: u64, videos: usize) {
        let counted = self.events_sent.get();
        if events_written > counted {
            self.events_sent.inc_by(events_written - counted);
        }
        self.videos.set(videos as i64);
    }

    pub fn batch_received(&self, deliveries: usize, unwatched: usize, duplicates: usize) {
        self.batches_received.inc();
        self.deliveries_received.inc_by(deliveries as u64);
        self.deliveries_unwatched.inc_by(unwatched as u64);
        self.duplicates_dropped.inc_by(duplicates as u64);
    }

    pub fn batch_undecodable(&self, error: &dyn std::error::Error) {
        tracing::error!(%error, "dropping a dispatcher batch that does not decode");
    }

    pub fn viewer_lagged(&self, skipped: u64) {
        self.viewers_lagged.inc();
        tracing::warn!(
            skipped,
            "viewer fell behind, closing its stream so it resumes"
        );
    }

    pub fn interest_failed(&self, error: &dyn std::error::Error) {
        self.interest_errors.inc();
        tracing::warn!(%error, "cannot write the subscription table");
    }

    pub fn replayed(&self, comments: usize) {
        self.replayed.inc_by(comments as u64);
    }

    pub fn replay_reset(&self) {
        self.replay_resets.inc();
    }

    pub fn history_failed(&self, error: &dyn std::error::Error) {
        self.history_errors.inc();
        tracing::warn!(%error, "cannot read the video's history");
    }

    pub fn published(&self, kind: PublishKind, outcome: PublishOutcome, seconds: f64) {
        if outcome == PublishOutcome::Accepted {
            self.publish_seconds.observe(seconds);
        }
        self.publish
            .get_or_create(&PublishLabels { kind, outcome })
            .inc();
    }

    pub fn likes_committed(&self, likes_in_message: u64) {
        self.likes_per_commit.observe(likes_in_message as f64);
    }

    /// A request refused by authentication; `reason` is the problem slug. Logged at debug
    /// only (clients can cause any number of these), and never with the token.
    pub fn auth_refused(&self, request: AuthRequest, reason: &'static str) {
        self.auth_refused
            .get_or_create(&AuthRefusedLabels {
                request,
                reason: reason.to_owned(),
            })
            .inc();
        tracing::debug!(?request, reason, "request refused by authentication");
    }

    pub fn publish_failed(&self, error: &dyn std::error::Error) {
        tracing::warn!(%error, "cannot store an interaction");
    }

    /// A limit refused a request or closed a connection. Logged at debug only: a flood of
    /// refusals must not become a flood of log lines.
    pub fn limited(&self, limit: Limit) {
        tracing::debug!(limit = limit.as_str(), "refused by a limit");
        self.limited.get_or_create(&LimitLabels { limit }).inc();
    }
}
