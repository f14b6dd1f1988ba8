//! Trace export: an OTLP/HTTP (protobuf) exporter behind a batch span processor, fed by a
//! `tracing-opentelemetry` layer that only sees fanfare's own data-path spans (see
//! [`crate::spans`]).
//!
//! Export is off unless an endpoint is configured, and off means absent: no layer is
//! installed, no span is created and no header is written (see [`enabled`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use serde::{Deserialize, Serialize};

/// Set once, when an exporter is installed; read on the data path before any trace work.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// True once this process exports traces. Everything trace-related on the data path checks it
/// first, so a process without an endpoint pays one relaxed load and nothing else.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// How often the batch processor sends what it holds. Short, so that a trace is visible about
/// as soon as the interaction arrived; a quiet node sends nothing.
const EXPORT_EVERY: Duration = Duration::from_secs(1);
/// Bound on one export request, connection included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Spans kept while the collector is slow or away; past it new spans are dropped (and the SDK
/// counts them), never queued without bound.
const MAX_QUEUED_SPANS: usize = 8192;
/// How long shutdown waits for the last spans to be sent.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// `[telemetry]` of a node's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// Base URL of an OTLP/HTTP collector, e.g. `http://127.0.0.1:4318`; spans are posted to
    /// `<url>/v1/traces`. Unset: the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (full URL)
    /// or `OTEL_EXPORTER_OTLP_ENDPOINT` (base URL) of the environment; none of them: no export.
    pub otlp_endpoint: Option<String>,
}

impl TelemetrySettings {
    /// Checks what serde cannot; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        match &self.otlp_endpoint {
            Some(url) if !url.starts_with("http://") => Err(format!(
                "telemetry.otlp_endpoint: {url:?} must be an http:// url (OTLP over plain HTTP)"
            )),
            _ => Ok(()),
        }
    }

    /// The URL spans are posted to, if any: the setting, then the standard environment
    /// variables in `env`.
    pub fn traces_url(&self, env: &HashMap<String, String>) -> Option<String> {
        let from_env = |name: &str| env.get(name).filter(|value| !value.is_empty());
        if let Some(base) = self.otlp_endpoint.as_ref().filter(|url| !url.is_empty()) {
            return Some(join_traces_path(base));
        }
        if let Some(full) = from_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            return Some(full.clone());
        }
        from_env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| join_traces_path(base))
    }
}

fn join_traces_path(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// Who exports: becomes the resource of every span.
pub struct NodeIdentity<'a> {
    /// `fanfare-frontend` or `fanfare-dispatcher`.
    pub service: &'static str,
    pub dc: &'a str,
    pub node: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error("cannot build the otlp exporter for {url}")]
    Exporter {
        url: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("trace export needs a tokio runtime")]
    NoRuntime,
}

/// Keeps the exporter alive; [`TracesGuard::shutdown`] sends what is still queued.
#[must_use = "dropping the guard does not flush; call shutdown"]
pub struct TracesGuard {
    provider: Option<SdkTracerProvider>,
}

impl TracesGuard {
    /// Sends the spans still queued, waiting at most about [`FLUSH_TIMEOUT`]; logs when it
    /// gives up. Call it after the node has stopped, inside the runtime (the export runs on it).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK's shutdown blocks its caller until the batch thread is done.
        let flushing =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT));
        match tokio::time::timeout(FLUSH_TIMEOUT + Duration::from_secs(1), flushing).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "trace export did not flush"),
            Ok(Err(error)) => tracing::warn!(%error, "trace export flush failed"),
            Err(_) => tracing::warn!("trace export did not flush within {FLUSH_TIMEOUT:?}"),
        }
    }
}

/// Builds the tracer provider posting to `url`, or nothing when `url` is `None`.
pub(crate) fn build_provider(
    url: Option<String>,
    identity: &NodeIdentity<'_>,
) -> Result<Option<SdkTracerProvider>, TracesError> {
    let Some(url) = url else {
        return Ok(None);
    };
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| TracesError::NoRuntime)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(RuntimeHttpClient::new(runtime))
        .with_endpoint(url.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|source| TracesError::Exporter { url, source })?;
    let batch = BatchConfigBuilder::default()
        .with_scheduled_delay(EXPORT_EVERY)
        .with_max_queue_size(MAX_QUEUED_SPANS)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    let resource = Resource::builder()
        .with_service_name(identity.service)
        .with_attributes([
            KeyValue::new("fanfare.dc", identity.dc.to_owned()),
            KeyValue::new("fanfare.node", identity.node.to_owned()),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    Ok(Some(provider))
}

/// The tracer the layer records into.
pub(crate) fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::SdkTracer {
    provider.tracer("fanfare")
}

/// Called once the export layer is installed: from now on the data path creates spans.
pub(crate) fn mark_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}

pub(crate) fn guard(provider: Option<SdkTracerProvider>) -> TracesGuard {
    TracesGuard { provider }
}

/// OTLP/HTTP client on the hyper client the workspace already builds. The batch processor
/// exports from its own thread, outside any runtime, so each request is spawned onto the
/// node's runtime and awaited from there.
#[derive(Debug)]
struct RuntimeHttpClient {
    runtime: tokio::runtime::Handle,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl RuntimeHttpClient {
    fn new(runtime: tokio::runtime::Handle) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(EXPORT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self { runtime, client }
    }
}

#[async_trait::async_trait]
impl HttpClient for RuntimeHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let request = hyper::Request::from_parts(parts, Full::new(body));
        let exchange = async move {
            let response = client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        // The timer too must be made inside the runtime: this caller is not.
        let bounded = self
            .runtime
            .spawn(async move { tokio::time::timeout(EXPORT_TIMEOUT, exchange).await });
        match bounded.await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(format!("no answer within {EXPORT_TIMEOUT:?}").into()),
            Err(error) => Err(Box::new(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn no_endpoint_means_no_export() {
        let settings = TelemetrySettings::default();
        assert_eq!(settings.traces_url(&env(&[("OTHER", "x")])), None);
        assert_eq!(
            settings.traces_url(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")])),
            None
        );
    }

    #[test]
    fn the_setting_wins_over_the_environment() {
        let settings = TelemetrySettings {
            otlp_endpoint: Some("http://127.0.0.1:4318/".to_owned()),
        };
        let url = settings.traces_url(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:1")]));
        assert_eq!(url.as_deref(), Some("http://127.0.0.1:4318/v1/traces"));
    }

    #[test]
    fn the_standard_variables_are_read_as_specified() {
        let settings = TelemetrySettings::default();
        let base = settings.traces_url(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]));
        assert_eq!(base.as_deref(), Some("http://c:4318/v1/traces"));
        let full = settings.traces_url(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x"),
        ]));
        assert_eq!(full.as_deref(), Some("http://t:1/x"));
    }

    #[test]
    fn only_plain_http_endpoints_are_valid() {
        let settings = TelemetrySettings {
            otlp_endpoint: Some("https://collector:4318".to_owned()),
        };
        let problem = settings.validate().unwrap_err();
        assert!(problem.starts_with("telemetry.otlp_endpoint"), "{problem}");
    }
}
