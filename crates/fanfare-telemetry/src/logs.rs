use std::collections::HashMap;

use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::spans::SPAN_TARGET;
use crate::traces::{self, NodeIdentity, TelemetrySettings, TracesError, TracesGuard};

/// Installs the process's log subscriber: human-readable lines on stderr, filtered by
/// `filter` (`RUST_LOG`, falling back to `info`). Safe to call more than once.
pub fn init_logs(filter: Option<&str>) {
    let _ = install(filter, None);
}

/// What a node (`fanfare frontend|dispatcher`) installs instead of [`init_logs`]: the same
/// logs, plus trace export when `settings` or `env` name an OTLP endpoint. Keep the guard
/// until the node has stopped, then call [`TracesGuard::shutdown`]. Needs a tokio runtime.
pub fn init_node_telemetry(
    filter: Option<&str>,
    identity: NodeIdentity<'_>,
    settings: &TelemetrySettings,
    env: &HashMap<String, String>,
) -> Result<TracesGuard, TracesError> {
    let url = settings.traces_url(env);
    let provider = traces::build_provider(url.clone(), &identity)?;
    let installed = install(filter, provider.as_ref());
    if let (Some(url), true) = (url, installed) {
        traces::mark_enabled();
        tracing::info!(url, "exporting traces");
    }
    Ok(traces::guard(provider))
}

/// Returns false when a subscriber was already installed (tests running nodes in-process).
fn install(
    filter: Option<&str>,
    provider: Option<&opentelemetry_sdk::trace::SdkTracerProvider>,
) -> bool {
    let filter = filter
        .map(EnvFilter::new)
        .unwrap_or_else(|| EnvFilter::new("info,async_nats=warn"));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(filter);
    // The export layer has its own filter, independent of the log level: the data-path spans,
    // and warnings and errors inside them as span events.
    let export = provider.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(traces::tracer(provider))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(
                Targets::new()
                    .with_default(Level::WARN)
                    .with_target(SPAN_TARGET, Level::INFO),
            )
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(export)
        .try_init()
        .is_ok()
}
