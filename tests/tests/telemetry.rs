//! Trace export end to end: real nodes post OTLP/HTTP to a receiver inside the test, and one
//! comment's trace runs from the dc1 frontend that stored it, through a dc2 dispatcher, to the
//! dc2 frontend that handed it to its viewer; a like's runs through its group commit.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::routing::post;
use axum::Router;
use common::{comment, like, receive, SMALL, WAIT};
use fanfare_testkit::{wait, Cluster};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;

/// Bound on the whole test: a cluster start (on a busy 2-core machine), one comment and a few
/// export intervals.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// One exported span, with what the assertions need of its resource.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    dc: String,
    node: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    linked_traces: Vec<Vec<u8>>,
    /// Every attribute value of the span, as text.
    values: Vec<String>,
}

type Spans = Arc<Mutex<Vec<ReceivedSpan>>>;

/// A minimal OTLP/HTTP trace receiver on 127.0.0.1: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, as the nodes' exporter sends it.
async fn start_receiver() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let router = Router::new()
        .route("/v1/traces", post(accept_traces))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver binds");
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, spans)
}

async fn accept_traces(
    State(spans): State<Spans>,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain")],
            b"undecodable".to_vec(),
        );
    };
    let mut received = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.unwrap_or_default().attributes;
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                received.push(ReceivedSpan {
                    service: text(&resource, "service.name"),
                    dc: text(&resource, "fanfare.dc"),
                    node: text(&resource, "fanfare.node"),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    linked_traces: span.links.into_iter().map(|link| link.trace_id).collect(),
                    values: span.attributes.iter().map(value_text).collect(),
                });
            }
        }
    }
    let response = ExportTraceServiceResponse::default().encode_to_vec();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        response,
    )
}

fn value_text(attribute: &KeyValue) -> String {
    match attribute
        .value
        .as_ref()
        .and_then(|value| value.value.as_ref())
    {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn text(attributes: &[KeyValue], key: &str) -> String {
    attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .map(value_text)
        .unwrap_or_default()
}

/// The spans of one comment's way, once all three have arrived.
struct CommentTrace {
    publish: ReceivedSpan,
    round: ReceivedSpan,
    batch: ReceivedSpan,
}

/// The dc1 frontend's `publish` span of `kind` (`comment` or `like`) for `video`.
fn find_publish<'a>(
    spans: &'a [ReceivedSpan],
    kind: &str,
    video: &str,
) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|span| {
        span.service == "fanfare-frontend"
            && span.dc == "dc1"
            && span.name == "publish"
            && span.values.iter().any(|value| value == kind)
            && span.values.iter().any(|value| value == video)
    })
}

/// A dc2 dispatcher's round that continues `cause`'s trace (a round of one interaction) or
/// links to it (several).
fn find_round<'a>(spans: &'a [ReceivedSpan], cause: &ReceivedSpan) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|span| {
        span.service == "fanfare-dispatcher"
            && span.dc == "dc2"
            && span.name == "dispatch_round"
            && (span.trace_id == cause.trace_id || span.linked_traces.contains(&cause.trace_id))
    })
}

fn find_comment_trace(spans: &[ReceivedSpan], video: &str) -> Option<CommentTrace> {
    let publish = find_publish(spans, "comment", video)?;
    let round = find_round(spans, publish)?;
    let batch = spans.iter().find(|span| {
        span.service == "fanfare-frontend"
            && span.dc == "dc2"
            && span.name == "frontend_batch"
            && span.trace_id == round.trace_id
    })?;
    Some(CommentTrace {
        publish: publish.clone(),
        round: round.clone(),
        batch: batch.clone(),
    })
}

/// A like's way: its request, the group commit that stored it, a dc2 round.
fn find_like_trace(spans: &[ReceivedSpan], video: &str) -> Option<(ReceivedSpan, ReceivedSpan)> {
    let publish = find_publish(spans, "like", video)?;
    let commit = spans.iter().find(|span| {
        span.name == "commit_likes" && span.dc == "dc1" && span.trace_id == publish.trace_id
    })?;
    find_round(spans, commit)?;
    Some((publish.clone(), commit.clone()))
}

/// A comment published in dc1 and received by a viewer in dc2 leaves one trace: the dc1
/// frontend's publish span, a dc2 dispatcher's round (its child, or linked to it), and the
/// dc2 frontend's batch span (the round's child). A like's request span is the parent of the
/// group commit that stored it, which a dc2 round continues. No span names the user or the
/// text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_and_a_like_from_dc1_to_a_viewer_in_dc2_are_each_one_trace() {
    tokio::time::timeout(TEST_TIMEOUT, interactions_are_traced())
        .await
        .expect("the test finishes within its bound");
}

async fn interactions_are_traced() {
    let (collector, spans) = start_receiver().await;
    let endpoint = collector.clone();
    let cluster = Cluster::builder()
        .dc("dc1", SMALL)
        .dc("dc2", SMALL)
        .options(move |options| {
            options.frontend.telemetry.otlp_endpoint = Some(endpoint.clone());
            options.dispatcher.telemetry.otlp_endpoint = Some(endpoint.clone());
        })
        .start()
        .await
        .expect("cluster starts");
    eprintln!("cluster up, exporting to {collector}");

    let mut viewer = cluster.watch("dc2-fe1", "traced").await.unwrap();
    let text = "a comment that must not be in any span";
    let comment_id = comment(&cluster.frontend("dc1-fe1"), "traced", text)
        .await
        .unwrap();
    let received = receive(&mut viewer, 0, 1).await;
    assert_eq!(received.comment_ids, vec![comment_id], "the viewer in dc2");
    eprintln!("comment received in dc2");

    let found = wait::until("the comment's spans at the receiver", WAIT, || {
        let spans = spans.clone();
        async move { find_comment_trace(&spans.lock().unwrap(), "traced") }
    })
    .await;
    let trace = found.unwrap_or_else(|error| {
        panic!("{error:#}; received: {:#?}", spans.lock().unwrap());
    });
    eprintln!(
        "publish {} on {} -> round {} on {} -> batch {} on {}",
        hex(&trace.publish.span_id),
        trace.publish.node,
        hex(&trace.round.span_id),
        trace.round.node,
        hex(&trace.batch.span_id),
        trace.batch.node,
    );
    assert_eq!(trace.publish.node, "dc1-fe1");
    assert!(
        trace.publish.values.iter().any(|value| value == "accepted"),
        "the publish span records its outcome: {:?}",
        trace.publish.values
    );
    assert_eq!(trace.batch.node, "dc2-fe1");
    assert_eq!(
        trace.batch.parent_span_id, trace.round.span_id,
        "the frontend's batch span is the child of the dispatcher's round"
    );
    if trace.round.trace_id == trace.publish.trace_id {
        assert_eq!(
            trace.round.parent_span_id, trace.publish.span_id,
            "a round of one interaction is the child of its publish"
        );
    }

    // Likes are stored by group commit: the commit continues the request's trace.
    like(&cluster.frontend("dc1-fe1"), "traced", "tester")
        .await
        .unwrap();
    let received = receive(&mut viewer, 1, 0).await;
    assert_eq!(received.likes, 1, "the like in dc2");
    let found = wait::until("the like's spans at the receiver", WAIT, || {
        let spans = spans.clone();
        async move { find_like_trace(&spans.lock().unwrap(), "traced") }
    })
    .await;
    let (publish, commit) = found.unwrap_or_else(|error| {
        panic!("{error:#}; received: {:#?}", spans.lock().unwrap());
    });
    assert_eq!(
        commit.parent_span_id, publish.span_id,
        "a commit of one like is the child of its request"
    );

    for span in spans.lock().unwrap().iter() {
        for value in &span.values {
            assert!(
                value != "tester" && !value.contains(text),
                "span {} records user data: {value:?}",
                span.name
            );
        }
    }
    cluster.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
