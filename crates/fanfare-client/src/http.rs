//! Plain HTTP/1.1 client: publishing to frontends, reading node endpoints.
//!
//! A thin layer over one shared, lazily created [`hyper_util`] legacy
//! [`Client`] with an [`HttpConnector`]: every request really goes over a TCP
//! socket to the server under test, and every call (connect, request, headers
//! and the whole body) is bounded by [`REQUEST_TIMEOUT`], so a hung server
//! fails the call with [`HttpError::Timeout`] instead of hanging its caller.
//!
//! Idle connections are not pooled: each `#[tokio::test]` runs its own
//! runtime, and a pooled connection whose driver task lived on a runtime that
//! has since shut down would fail the next request. One fresh connection per
//! request is cheap on loopback and keeps the server-side connection count
//! predictable.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

/// Upper bound on every call of this module, from connect to the last body byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a body is quoted in a [`HttpError::Json`] message.
const BODY_EXCERPT_CHARS: usize = 512;

/// What can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The url does not parse as an absolute `http://` URI.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl {
        /// The url as given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The method is not a valid HTTP method token.
    #[error("invalid http method {0:?}")]
    InvalidMethod(String),
    /// A request header name or value is not valid HTTP.
    #[error("invalid request header {name:?}")]
    InvalidHeader {
        /// The offending header name.
        name: String,
    },
    /// The request could not be assembled.
    #[error("invalid request: {0}")]
    Request(#[source] hyper::http::Error),
    /// Connecting, sending the request or reading the response head failed.
    #[error("request failed: {0}")]
    Client(#[source] hyper_util::client::legacy::Error),
    /// Reading the response body failed.
    #[error("reading the response body failed: {0}")]
    Body(#[source] hyper::Error),
    /// The request or its response body took longer than [`REQUEST_TIMEOUT`].
    #[error("request timed out")]
    Timeout,
    /// Serializing a request body to json failed.
    #[error("request body is not serializable to json: {0}")]
    Serialize(#[source] serde_json::Error),
    /// The response body is not the expected json.
    #[error("response (status {status}) is not the expected json: {source}; body: {body}")]
    Json {
        /// Status of the response.
        status: u16,
        /// The start of the body, lossily decoded.
        body: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

/// A complete response: status, headers in wire order, and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lowercase) and values (lossily decoded), in received order.
    pub headers: Vec<(String, String)>,
    /// The whole response body.
    pub body: Bytes,
}

impl HttpResponse {
    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Decodes the body as json.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|source| HttpError::Json {
            status: self.status,
            body: String::from_utf8_lossy(&self.body)
                .chars()
                .take(BODY_EXCERPT_CHARS)
                .collect(),
            source,
        })
    }

    /// The body as text, invalid UTF-8 replaced by U+FFFD.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type SharedClient = Client<HttpConnector, Full<Bytes>>;

/// The process-wide client, created on first use.
fn client() -> &'static SharedClient {
    static CLIENT: OnceLock<SharedClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector)
    })
}

/// `GET url`.
pub async fn get(url: &str) -> Result<HttpResponse, HttpError> {
    request("GET", url, &[], Bytes::new()).await
}

/// `POST url` with `body`, and a `content-type` header when given.
pub async fn post(
    url: &str,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> Result<HttpResponse, HttpError> {
    let headers: Vec<(&str, &str)> = content_type
        .map(|ct| ("content-type", ct))
        .into_iter()
        .collect();
    request("POST", url, &headers, body.into()).await
}

/// `POST url` with `value` serialized as an `application/json` body.
pub async fn post_json(url: &str, value: &serde_json::Value) -> Result<HttpResponse, HttpError> {
    let body = serde_json::to_vec(value).map_err(HttpError::Serialize)?;
    post(url, Some("application/json"), body).await
}

/// Any request: `method url` with extra `headers` (appended in order; `host`
/// is filled in unless given) and `body` (`content-length` is set from it).
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<HttpResponse, HttpError> {
    request_within(REQUEST_TIMEOUT, method, url, headers, body).await
}

/// [`request`] with an explicit bound instead of [`REQUEST_TIMEOUT`].
pub async fn request_within(
    limit: Duration,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<HttpResponse, HttpError> {
    let req = build_request(method, url, headers, body)?;
    tokio::time::timeout(limit, send(req))
        .await
        .map_err(|_| HttpError::Timeout)?
}

/// Parses `url` into an absolute `http://` URI.
pub(crate) fn parse_http_url(url: &str) -> Result<Uri, (String, String)> {
    let invalid = |reason: String| (url.to_owned(), reason);
    let uri: Uri = url.parse().map_err(|e| invalid(format!("{e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => return Err(invalid(format!("unsupported scheme {other:?}"))),
        None => return Err(invalid("missing scheme, expected http://".to_owned())),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("missing host".to_owned()));
    }
    Ok(uri)
}

fn build_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, HttpError> {
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| HttpError::InvalidMethod(method.to_owned()))?;
    let uri = parse_http_url(url).map_err(|(url, reason)| HttpError::InvalidUrl { url, reason })?;
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(body))
        .map_err(HttpError::Request)?;
    let map = req.headers_mut();
    for (name, value) in headers {
        let invalid = || HttpError::InvalidHeader {
            name: (*name).to_owned(),
        };
        let name_parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let value_parsed = HeaderValue::from_str(value).map_err(|_| invalid())?;
        map.append(name_parsed, value_parsed);
    }
    Ok(req)
}

async fn send(req: Request<Full<Bytes>>) -> Result<HttpResponse, HttpError> {
    let response = client().request(req).await.map_err(HttpError::Client)?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(HttpError::Body)?.to_bytes();
    Ok(HttpResponse {
        status: parts.status.as_u16(),
        headers: header_pairs(&parts.headers),
        body,
    })
}

/// Header map as `(lowercase name, lossily decoded value)` pairs, in order.
pub(crate) fn header_pairs(map: &hyper::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The first value of header `name` in `headers`, compared case-insensitively.
pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether `headers` has a `content-type` that is `expected` (ignoring case
/// and parameters such as `charset`).
pub(crate) fn content_type_is(headers: &[(String, String)], expected: &str) -> bool {
    find_header(headers, CONTENT_TYPE.as_str())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case(expected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Request as AxumRequest;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::{get as axum_get, post as axum_post};
    use axum::{Json, Router};
    use serde_json::json;

    const TEST_BOUND: Duration = Duration::from_secs(20);

    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        format!("http://{addr}")
    }

    fn app() -> Router {
        Router::new()
            .route(
                "/hello",
                axum_get(|| async { ([("X-Fanfare", "yes")], "hello world") }),
            )
            .route(
                "/echo",
                axum_post(
                    |Json(v): Json<serde_json::Value>| async move { Json(json!({ "got": v })) },
                ),
            )
            .route(
                "/raw",
                axum::routing::any(|req: AxumRequest| async move {
                    let method = req.method().to_string();
                    let ct = req
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    let extra = req
                        .headers()
                        .get("x-extra")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                        .await
                        .unwrap();
                    format!("{method} {ct} {extra} {}", String::from_utf8_lossy(&body))
                }),
            )
            .route(
                "/missing",
                axum_get(|| async { (StatusCode::NOT_FOUND, "no such thing").into_response() }),
            )
    }

    #[tokio::test]
    async fn get_reads_status_headers_and_body() {
        tokio::time::timeout(TEST_BOUND, async {
            let base = serve(app()).await;
            let resp = get(&format!("{base}/hello")).await.unwrap();
            assert_eq!(resp.status, 200);
            assert_eq!(resp.text(), "hello world");
            assert_eq!(resp.header("x-fanfare"), Some("yes"));
            assert_eq!(resp.header("X-FANFARE"), Some("yes"));
            assert!(resp
                .header("Content-Type")
                .is_some_and(|v| v.starts_with("text/plain")));
            assert!(content_type_is(&resp.headers, "TEXT/PLAIN"));
            assert_eq!(resp.header("x-absent"), None);

            let resp = get(&format!("{base}/missing")).await.unwrap();
            assert_eq!(resp.status, 404);
            assert_eq!(resp.text(), "no such thing");
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn post_json_round_trips_and_bad_json_is_a_typed_error() {
        tokio::time::timeout(TEST_BOUND, async {
            let base = serve(app()).await;
            let resp = post_json(&format!("{base}/echo"), &json!({"likes": 3, "who": "ü"}))
                .await
                .unwrap();
            assert_eq!(resp.status, 200);
            let v: serde_json::Value = resp.json().unwrap();
            assert_eq!(v, json!({"got": {"likes": 3, "who": "ü"}}));

            let resp = get(&format!("{base}/hello")).await.unwrap();
            let err = resp.json::<serde_json::Value>().unwrap_err();
            assert!(matches!(err, HttpError::Json { status: 200, .. }), "{err}");
            assert!(err.to_string().contains("hello world"), "{err}");
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn post_and_request_send_method_headers_and_body() {
        tokio::time::timeout(TEST_BOUND, async {
            let base = serve(app()).await;
            let url = format!("{base}/raw");
            let resp = post(&url, Some("text/plain"), "some text").await.unwrap();
            assert_eq!(resp.text(), "POST text/plain - some text");
            let resp = post(&url, None, Bytes::from_static(b"x")).await.unwrap();
            assert_eq!(resp.text(), "POST - - x");
            let resp = request("PUT", &url, &[("X-Extra", "e1")], Bytes::from("b"))
                .await
                .unwrap();
            assert_eq!(resp.text(), "PUT - e1 b");
            let resp = request("DELETE", &url, &[], Bytes::new()).await.unwrap();
            assert_eq!(resp.text(), "DELETE - - ");
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn bad_inputs_are_typed_errors() {
        tokio::time::timeout(TEST_BOUND, async {
            let err = get("not a url").await.unwrap_err();
            assert!(matches!(err, HttpError::InvalidUrl { .. }), "{err}");
            let err = get("https://127.0.0.1/").await.unwrap_err();
            assert!(matches!(err, HttpError::InvalidUrl { .. }), "{err}");
            let err = get("/relative").await.unwrap_err();
            assert!(matches!(err, HttpError::InvalidUrl { .. }), "{err}");
            let err = request("BAD METHOD", "http://127.0.0.1/", &[], Bytes::new())
                .await
                .unwrap_err();
            assert!(matches!(err, HttpError::InvalidMethod(_)), "{err}");
            let err = request("GET", "http://127.0.0.1/", &[("x", "a\nb")], Bytes::new())
                .await
                .unwrap_err();
            assert!(matches!(err, HttpError::InvalidHeader { .. }), "{err}");

            // Nothing listens on a port we just bound and released.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            drop(listener);
            let err = get(&format!("http://{addr}/")).await.unwrap_err();
            assert!(matches!(err, HttpError::Client(_)), "{err}");
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        tokio::time::timeout(TEST_BOUND, async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            // Accept and hold connections without ever answering.
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((sock, _)) = listener.accept().await {
                    held.push(sock);
                }
            });
            let err = request_within(
                Duration::from_millis(200),
                "GET",
                &format!("http://{addr}/"),
                &[],
                Bytes::new(),
            )
            .await
            .unwrap_err();
            assert!(matches!(err, HttpError::Timeout), "{err}");
            assert_eq!(err.to_string(), "request timed out");
        })
        .await
        .unwrap();
    }
}
