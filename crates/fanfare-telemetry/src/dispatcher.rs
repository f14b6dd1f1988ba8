use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Every metric of a dispatcher.
#[derive(Clone)]
pub struct DispatcherMetrics {
    messages: Counter,
    redeliveries: Counter,
    unwatched: Counter,
    deliveries: Counter,
    batches: Counter,
    undecodable: Counter,
    bridged: Counter,
    bridged_deliveries: Counter,
    table_videos: Gauge,
    partitions_owned: Gauge,
    round_messages: Histogram,
}

impl DispatcherMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            messages: Counter::default(),
            redeliveries: Counter::default(),
            unwatched: Counter::default(),
            deliveries: Counter::default(),
            batches: Counter::default(),
            undecodable: Counter::default(),
            bridged: Counter::default(),
            bridged_deliveries: Counter::default(),
            table_videos: Gauge::default(),
            partitions_owned: Gauge::default(),
            round_messages: Histogram::new([
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
            ]),
        };
        let prefix = registry.sub_registry_with_prefix("fanfare_dispatcher");
        prefix.register(
            "messages",
            "Interactions consumed from the fan-out stream",
            metrics.messages.clone(),
        );
        prefix.register(
            "redeliveries",
            "Interactions consumed more than once",
            metrics.redeliveries.clone(),
        );
        prefix.register(
            "unwatched",
            "Interactions no local frontend wanted",
            metrics.unwatched.clone(),
        );
        prefix.register(
            "deliveries",
            "Interactions sent to frontends (one per frontend)",
            metrics.deliveries.clone(),
        );
        prefix.register(
            "batches",
            "Batches sent to frontends",
            metrics.batches.clone(),
        );
        prefix.register(
            "undecodable",
            "Messages dropped because they do not decode",
            metrics.undecodable.clone(),
        );
        prefix.register(
            "bridged",
            "Interactions read straight from an origin stream while the fan-out stream was stalled behind it",
            metrics.bridged.clone(),
        );
        prefix.register(
            "bridged_deliveries",
            "Bridged interactions sent to frontends (one per frontend)",
            metrics.bridged_deliveries.clone(),
        );
        prefix.register(
            "table_videos",
            "Videos in the subscription table",
            metrics.table_videos.clone(),
        );
        prefix.register(
            "partitions_owned",
            "Dispatch partitions this dispatcher currently receives",
            metrics.partitions_owned.clone(),
        );
        prefix.register(
            "round_messages",
            "Interactions handled per dispatch round",
            metrics.round_messages.clone(),
        );
        metrics
    }

    /// One dispatch round: `messages` consumed (of which `redelivered`), `unwatched` of them
    /// wanted by no frontend, `deliveries` sent in `batches` NATS messages.
    pub fn round(
        &self,
        messages: usize,
        redelivered: usize,
        unwatched: usize,
        deliveries: usize,
        batches: usize,
    ) {
        self.messages.inc_by(messages as u64);
        self.redeliveries.inc_by(redelivered as u64);
        self.unwatched.inc_by(unwatched as u64);
        self.deliveries.inc_by(deliveries as u64);
        self.batches.inc_by(batches as u64);
        self.round_messages.observe(messages as f64);
    }

    /// One bridge send: `interactions` read from an origin stream, `unwatched` of them wanted
    /// by no frontend, `deliveries` sent in `batches` NATS messages.
    pub fn bridged(
        &self,
        interactions: usize,
        unwatched: usize,
        deliveries: usize,
        batches: usize,
    ) {
        self.bridged.inc_by(interactions as u64);
        self.bridged_deliveries.inc_by(deliveries as u64);
        self.batches.inc_by(batches as u64);
        self.unwatched.inc_by(unwatched as u64);
    }

    pub fn undecodable(&self, subject: &str, error: &dyn std::error::Error) {
        self.undecodable.inc();
        tracing::error!(subject, %error, "dropping a fan-out message that does not decode");
    }

    pub fn table_size(&self, videos: usize) {
        self.table_videos.set(videos as i64);
    }

    pub fn partition_owned(&self, partition: u16) {
        self.partitions_owned.inc();
        tracing::info!(partition, "dispatch partition pinned to this dispatcher");
    }

    pub fn partition_lost(&self, partition: u16) {
        self.partitions_owned.dec();
        tracing::info!(partition, "dispatch partition moved to another dispatcher");
    }
}
