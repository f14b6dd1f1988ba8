//! Telemetry in one place: log set-up, trace export and every metric fanfare exports.
//!
//! Traces: [`init_node_telemetry`] adds an OTLP/HTTP exporter when an endpoint is configured
//! ([`TelemetrySettings`]); [`spans`] has every data-path span and carries their context across
//! NATS. Without an endpoint nothing of it runs.
//!
//! Each node owns one [`Registry`](prometheus_client::registry::Registry) labelled with its
//! datacenter and name (several nodes may share a process in tests). Call sites never touch a
//! metric directly: they call one method of [`FrontendMetrics`] or [`DispatcherMetrics`], which
//! counts and, where an operator should know, logs. Labels are bounded: `dc`, `node`, `kind`,
//! `outcome`; never a video, user or event id.

mod dispatcher;
mod frontend;
mod logs;
pub mod spans;
mod traces;

pub use dispatcher::DispatcherMetrics;
pub use frontend::{AuthRequest, FrontendMetrics, Limit, PublishKind, PublishOutcome};
pub use logs::{init_logs, init_node_telemetry};
pub use traces::{enabled, NodeIdentity, TelemetrySettings, TracesError, TracesGuard};

use prometheus_client::registry::Registry;

/// A node's registry, with `dc` and `node` on every series.
pub fn node_registry(dc: &str, node: &str) -> Registry {
    Registry::with_labels(
        [
            ("dc".into(), dc.to_owned().into()),
            ("node".into(), node.to_owned().into()),
        ]
        .into_iter(),
    )
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}
