//! An in-process HTTP receiver for the sink tests, served by axum on `127.0.0.1:0`: it stands in for
//! a webhook endpoint, Slack's incoming webhooks or PagerDuty's Events API.
//!
//! Use it from an integration test as `use testkit::receiver;`.
//!
//! Every request is recorded as it arrives (method, path, headers, body, arrival time), whatever its
//! method or path. The answer comes from a queue of scripted [`Reply`]s, in order; once the queue is
//! empty, from the default reply (`204 No Content` unless [`Receiver::set_default`] says otherwise).
//! [`Receiver::set_delay`] makes every answer wait after the request was recorded, as a slow receiver
//! that has already acted on a request would.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::Router;
use serde_json::Value;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the request reached the handler.
    pub at: Instant,
}

impl Request {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON; panics (showing the body) when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request body to {} is not JSON ({e}): {}",
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One scripted answer: a status, a body, and optionally `Retry-After` and other headers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Reply {
            status,
            body: body.into(),
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// The same reply with a `Retry-After` header (seconds, or an HTTP date).
    pub fn retry_after(mut self, value: &str) -> Self {
        self.retry_after = Some(value.to_string());
        self
    }

    /// The same reply with one more header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn into_response(self) -> (StatusCode, HeaderMap, String) {
        let mut headers = HeaderMap::new();
        let retry_after = self.retry_after.map(|v| ("retry-after".to_string(), v));
        for (name, value) in self.headers.into_iter().chain(retry_after) {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(&value).expect("header value"),
            );
        }
        (
            StatusCode::from_u16(self.status).expect("status"),
            headers,
            self.body,
        )
    }
}

struct Inner {
    requests: Mutex<Vec<Request>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    delay: Mutex<Duration>,
}

/// A running receiver; clones share it.
#[derive(Clone)]
pub struct Receiver(Arc<Inner>);

impl Receiver {
    /// Start a receiver on 127.0.0.1 and return it with its base URL (`http://127.0.0.1:<port>`).
    pub async fn start() -> (Receiver, String) {
        let rx = Receiver(Arc::new(Inner {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Reply::new(204, "")),
            delay: Mutex::new(Duration::ZERO),
        }));
        let app = Router::new().fallback(handle).with_state(rx.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        (rx, base)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.0.requests.lock().expect("lock").clone()
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.0.requests.lock().expect("lock").len()
    }

    /// Every request body so far, parsed as JSON (see [`Request::json`]).
    pub fn bodies(&self) -> Vec<Value> {
        self.requests().iter().map(Request::json).collect()
    }

    /// Every finding of every webhook message so far (schema 2: each message lists its findings),
    /// in arrival order.
    pub fn findings(&self) -> Vec<Value> {
        self.bodies().iter().flat_map(webhook_findings).collect()
    }

    /// The path of every request so far.
    pub fn paths(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.path).collect()
    }

    /// Answer the next request not yet answered from the script with `reply`.
    pub fn push_reply(&self, reply: Reply) {
        self.0.script.lock().expect("lock").push_back(reply);
    }

    /// [`Receiver::push_reply`] for each reply, in order.
    pub fn push_replies(&self, replies: impl IntoIterator<Item = Reply>) {
        self.0.script.lock().expect("lock").extend(replies);
    }

    /// The answer once the script has run out.
    pub fn set_default(&self, reply: Reply) {
        *self.0.default.lock().expect("lock") = reply;
    }

    /// How long every answer waits after its request was recorded.
    pub fn set_delay(&self, delay: Duration) {
        *self.0.delay.lock().expect("lock") = delay;
    }
}

async fn handle(
    State(rx): State<Receiver>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, String) {
    let at = Instant::now();
    rx.0.requests.lock().expect("lock").push(Request {
        method,
        path: uri.path().to_string(),
        headers,
        body,
        at,
    });
    let reply = rx.0.script.lock().expect("lock").pop_front();
    let reply = reply.unwrap_or_else(|| rx.0.default.lock().expect("lock").clone());
    let delay = *rx.0.delay.lock().expect("lock");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    reply.into_response()
}

/// The findings a webhook message (schema 2) lists, each as the sink sent it (with its own
/// `status` and `reminder`).
pub fn webhook_findings(message: &Value) -> Vec<Value> {
    message["findings"].as_array().cloned().unwrap_or_default()
}
