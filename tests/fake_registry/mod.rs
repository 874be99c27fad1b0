#![allow(dead_code)]
//! An in-process fake npm registry for integration tests, served by axum on `127.0.0.1:0`.
//!
//! It follows the registry API as the npm CLI calls it (`/work/shared/npm-registry-api.md`):
//!
//! - `GET /-/npm/v1/tokens` serves the token list as pages of `{objects, urls: {next, prev}, total}`;
//!   the following pages are `/-/npm/v1/tokens?page=N`. How `urls.next` is written is programmable
//!   ([`NextStyle`]), as is the marker on the last page and a forced value ([`FakeRegistry::set_next_override`]).
//! - `GET /-/whoami` → `{"username": …}`; `GET /-/npm/v1/user` → a settable profile document.
//! - Every route above wants `authorization: Bearer <valid token>`; without one the answer is Verdaccio's
//!   401 `{"error":"no credentials provided"}`, with an unknown one 401 `{"error":"bad token"}`.
//! - Faults ([`Fault`]) are queued per path prefix and consumed one per matching request, before auth.
//! - Every request is recorded ([`Recorded`]) with its arrival time, headers (lowercase names) and body.
//! - [`FakeRegistry::stop`] closes the port (connection refused) and [`FakeRegistry::restart`] opens it
//!   again on the same port with the same state.
//!
//! A registry can live below a path ([`FakeRegistry::start_at`]): all routes are then mounted under the
//! prefix, `url` ends with it, and relative `next` links stay registry-relative (`/-/npm/v1/tokens?page=2`),
//! because npm-registry-fetch appends a relative path to the registry URL (API reference §0, "URL
//! building"); an absolute `next` includes the prefix.
//!
//! To extend it (packuments, orgs, teams, trust): add fields to [`FakeState`], setters on
//! [`FakeRegistry`], and routes in [`routes`] (inside `authed` if they need the credential). Fault
//! injection, recording and the path prefix then apply to them without further work.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::IncomingStream;
use axum::Router;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The credential the fake accepts unless told otherwise ([`FakeRegistry::set_valid_tokens`]).
pub const TOKEN: &str = "npm_FakeRegistryValidToken0123456789abcdef";

/// The token-list path, relative to the registry URL.
pub const TOKENS_PATH: &str = "/-/npm/v1/tokens";

/// How `urls.next` (and the `urls` object around it) is written.
///
/// [`FakeRegistry::set_next_style`] sets it for pages that have a successor, [`FakeRegistry::set_end_style`]
/// for the last page (default [`NextStyle::Null`]). A terminal style on a page with a successor ends the
/// list early, as a registry that drops its links would; a link style on the last page is written as `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStyle {
    /// `"next": "/-/npm/v1/tokens?page=2"`: registry-relative, also under a path prefix.
    Relative,
    /// `"next": "http://127.0.0.1:PORT[/prefix]/-/npm/v1/tokens?page=2"`.
    Absolute,
    /// No `urls` key at all (npm throws on this).
    Missing,
    /// `"urls": {}`: the `next` key is absent.
    NoNextKey,
    /// `"next": null`.
    Null,
    /// `"next": ""`.
    Empty,
}

impl NextStyle {
    fn is_link(self) -> bool {
        matches!(self, NextStyle::Relative | NextStyle::Absolute)
    }
}

/// A misbehaviour for one request; see [`FakeRegistry::push_fault`].
#[derive(Debug, Clone)]
pub enum Fault {
    /// This status with `{"error": "<reason phrase>"}`.
    Status(u16),
    /// 429, with `Retry-After: <value>` when given.
    RateLimited { retry_after: Option<String> },
    /// 401 with `www-authenticate: OTP` (npm-registry-fetch: EOTP from the header).
    Otp,
    /// 401 without `www-authenticate`, body naming the one-time pass (EOTP from the body).
    OtpBody,
    /// 401 with `www-authenticate: IPAddress` (EAUTHIP: the token's CIDR list excludes the caller).
    IpBlocked,
    /// 200, `content-type: application/json`, this exact body.
    Malformed(String),
    /// Wait this long, then answer normally (the request is recorded on arrival).
    Delay(Duration),
    /// Close the connection without writing any response.
    Drop,
    /// The normal answer, cut off after the headers and the first 10 bytes of the body (the connection
    /// is then closed), as on a connection reset during the transfer.
    TruncatedBody,
    /// 302 to this location.
    Redirect(String),
    /// Anything else: status, extra headers, raw body (`content-type: application/json` unless given).
    Custom {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// As on the wire, including any path prefix, e.g. `/npm/-/npm/v1/tokens?page=2`.
    pub path_and_query: String,
    /// Lowercase names; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    pub body: String,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// Everything the fake serves and remembers. Reachable through [`FakeRegistry::with_state`].
#[derive(Debug)]
pub struct FakeState {
    /// Raw token objects, served in order.
    pub tokens: Vec<Value>,
    pub page_size: usize,
    /// Serve at least this many pages (pages past the data are empty), e.g. for endless `next` chains.
    pub min_pages: usize,
    pub next_style: NextStyle,
    pub end_style: NextStyle,
    pub next_override: Option<String>,
    pub valid_tokens: Vec<String>,
    pub username: String,
    pub profile: Value,
    /// `(path prefix, fault)`, consumed front to back by the first request that matches.
    pub faults: VecDeque<(String, Fault)>,
    pub requests: Vec<Recorded>,
}

impl Default for FakeState {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            page_size: 100,
            min_pages: 1,
            next_style: NextStyle::Relative,
            end_style: NextStyle::Null,
            next_override: None,
            valid_tokens: vec![TOKEN.to_string()],
            username: "alice".into(),
            profile: json!({
                "name": "alice",
                "email": "alice@example.com",
                "email_verified": true,
                "created": "2020-01-01T00:00:00.000Z",
                "updated": "2026-01-01T00:00:00.000Z",
                "cidr_whitelist": null,
                "tfa": {"mode": "auth-and-writes", "pending": false}
            }),
            faults: VecDeque::new(),
            requests: Vec::new(),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<FakeState>>,
    /// `""` or `/npm` (no trailing slash).
    prefix: String,
    /// The registry URL with its trailing slash.
    url: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        lock(&self.state)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock must not hide the state from the others.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A running fake registry. Dropping it shuts the server down.
pub struct FakeRegistry {
    /// `http://127.0.0.1:PORT/` or `http://127.0.0.1:PORT/prefix/`.
    pub url: String,
    pub addr: SocketAddr,
    shared: Shared,
    conns: Conns,
    running: Mutex<Option<Running>>,
}

impl FakeRegistry {
    /// A registry at the root of `http://127.0.0.1:<free port>/`.
    pub async fn start() -> FakeRegistry {
        Self::start_at("/").await
    }

    /// A registry below `prefix` (e.g. `"/npm/"`), as behind a reverse proxy or in Artifactory/Nexus.
    pub async fn start_at(prefix: &str) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let trimmed = prefix.trim_matches('/');
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        };
        let url = format!("http://{addr}{prefix}/");
        let shared = Shared {
            state: Arc::new(Mutex::new(FakeState::default())),
            prefix,
            url: url.clone(),
        };
        let conns = Arc::new(Mutex::new(Vec::new()));
        let running = spawn_server(listener, &shared, &conns);
        FakeRegistry {
            url,
            addr,
            shared,
            conns,
            running: Mutex::new(Some(running)),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The path prefix, `""` at the root.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// An absolute URL for a registry-relative path: `url_for("/-/whoami")`.
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{}", self.url, path.trim_start_matches('/'))
    }

    /// Read or change any part of the state.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.shared.lock())
    }

    pub fn set_tokens(&self, tokens: Vec<Value>) {
        self.with_state(|s| s.tokens = tokens);
    }

    /// Objects per token-list page (at least 1).
    pub fn set_page_size(&self, n: usize) {
        self.with_state(|s| s.page_size = n.max(1));
    }

    /// Serve at least `n` pages even when the data fits in fewer (the extra ones are empty).
    pub fn set_min_pages(&self, n: usize) {
        self.with_state(|s| s.min_pages = n.max(1));
    }

    /// How a page that has a successor writes `urls.next`.
    pub fn set_next_style(&self, style: NextStyle) {
        self.with_state(|s| s.next_style = style);
    }

    /// How the last page ends the list (default `"next": null`).
    pub fn set_end_style(&self, style: NextStyle) {
        self.with_state(|s| s.end_style = style);
    }

    /// Force `urls.next` to this string on every page (for loops and off-origin links). `{next}` in it is
    /// replaced by the following page number; an override holding `{next}` is a link format, so the last
    /// page still ends the list with the end style.
    pub fn set_next_override(&self, next: Option<String>) {
        self.with_state(|s| s.next_override = next);
    }

    pub fn set_valid_tokens(&self, tokens: Vec<String>) {
        self.with_state(|s| s.valid_tokens = tokens);
    }

    pub fn set_username(&self, name: &str) {
        self.with_state(|s| s.username = name.to_string());
    }

    pub fn set_profile(&self, profile: Value) {
        self.with_state(|s| s.profile = profile);
    }

    /// Queue a fault for the next request whose registry-relative path and query (prefix stripped, e.g.
    /// `/-/npm/v1/tokens?page=2`) starts with `path_prefix`. Each fault is used once; queue several for a
    /// persistent condition. Faults apply before authentication.
    pub fn push_fault(&self, path_prefix: &str, fault: Fault) {
        self.with_state(|s| s.faults.push_back((path_prefix.to_string(), fault)));
    }

    /// Queue the same fault `n` times.
    pub fn push_faults(&self, path_prefix: &str, fault: Fault, n: usize) {
        for _ in 0..n {
            self.push_fault(path_prefix, fault.clone());
        }
    }

    pub fn pending_faults(&self) -> usize {
        self.with_state(|s| s.faults.len())
    }

    pub fn clear_faults(&self) {
        self.with_state(|s| s.faults.clear());
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.with_state(|s| s.requests.clone())
    }

    /// Recorded requests whose registry-relative path and query starts with `path_prefix`.
    pub fn requests_to(&self, path_prefix: &str) -> Vec<Recorded> {
        let prefix = self.shared.prefix.clone();
        self.requests()
            .into_iter()
            .filter(|r| {
                r.path_and_query
                    .strip_prefix(&prefix)
                    .is_some_and(|rel| rel.starts_with(path_prefix))
            })
            .collect()
    }

    pub fn clear_requests(&self) {
        self.with_state(|s| s.requests.clear());
    }

    /// Shut the server down: the port is closed (new connections are refused), idle keep-alive
    /// connections are closed, and a response still being prepared is never written.
    pub async fn stop(&self) {
        let running = lock(&self.running).take();
        let Some(running) = running else { return };
        self.kill_connections();
        let _ = running.shutdown.send(());
        // Graceful shutdown waits for the connection tasks; they end at once since writes now fail.
        let _ = tokio::time::timeout(Duration::from_secs(5), running.task).await;
    }

    /// Listen again on the same port, with the same state. Panics if the port was taken meanwhile.
    pub async fn restart(&self) {
        if lock(&self.running).is_some() {
            return;
        }
        let listener = TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("rebind {}: {e}", self.addr));
        let running = spawn_server(listener, &self.shared, &self.conns);
        *lock(&self.running) = Some(running);
    }

    fn kill_connections(&self) {
        let mut conns = lock(&self.conns);
        for c in conns.drain(..) {
            if let Some(ctl) = c.upgrade() {
                ctl.kill();
            }
        }
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        if let Some(running) = lock(&self.running).take() {
            self.kill_connections();
            let _ = running.shutdown.send(());
        }
    }
}

/// npm's `escapedName` for a package name in a URL path (`/<pkg>`, `/-/package/<pkg>/…`, trust, stage):
/// only the first `/` becomes lowercase `%2f` and `@` stays literal, so `@a/b` → `@a%2fb` (API reference
/// §0 "Name escaping", `npm-package-arg/lib/npa.js:188`; JavaScript's `String.replace` with a string
/// pattern replaces the first match only).
pub fn escaped_name(pkg: &str) -> String {
    pkg.replacen('/', "%2f", 1)
}

/// How org, scope, team and user names go into `/-/org/…`, `/-/team/…`, `/-/user/…`: the leading `@`
/// removed, then `encodeURIComponent` (API reference §0), e.g. `@myorg` → `myorg`.
pub fn escaped_entity(name: &str) -> String {
    encode_uri_component(name.strip_prefix('@').unwrap_or(name))
}

/// JavaScript's `encodeURIComponent`: everything but `A–Z a–z 0–9 - _ . ! ~ * ' ( )` percent-encoded
/// as UTF-8 with uppercase hex.
pub fn encode_uri_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Routes

fn routes(shared: &Shared) -> Router {
    let authed = Router::new()
        .route(TOKENS_PATH, get(tokens_page))
        .route("/-/whoami", get(whoami))
        .route("/-/npm/v1/user", get(profile))
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_auth));
    let api = Router::new().merge(authed).fallback(not_found);
    let app = if shared.prefix.is_empty() {
        api
    } else {
        Router::new().nest(&shared.prefix, api).fallback(not_found)
    };
    app.layer(middleware::from_fn_with_state(
        shared.clone(),
        record_and_fault,
    ))
    .with_state(shared.clone())
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "Not found")
}

/// The outermost layer: record the request, then apply the first queued fault for its path.
async fn record_and_fault(State(sh): State<Shared>, req: Request, next: Next) -> Response {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    // Faults match the registry-relative path, so the same test works with and without a prefix.
    let relative = path_and_query
        .strip_prefix(&sh.prefix)
        .unwrap_or(&path_and_query)
        .to_string();
    let fault = {
        let mut st = sh.lock();
        st.requests.push(Recorded {
            method: parts.method.to_string(),
            path_and_query,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            at,
        });
        st.faults
            .iter()
            .position(|(p, _)| relative.starts_with(p.as_str()))
            .and_then(|i| st.faults.remove(i))
            .map(|(_, f)| f)
    };
    let conn = parts
        .extensions
        .get::<ConnectInfo<ConnMeta>>()
        .map(|ci| ci.0.ctl.clone());
    let req = Request::from_parts(parts, Body::from(bytes));
    match fault {
        None => next.run(req).await,
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(Fault::Drop) => {
            // The connection's writes fail from now on, so hyper gives up on it without sending
            // anything and closes the socket.
            if let Some(c) = conn {
                c.kill();
            }
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Some(Fault::TruncatedBody) => {
            let resp = next.run(req).await;
            if let Some(c) = conn {
                *lock(&c.cut) = Some(Cut::AfterHeaders(10));
            }
            resp
        }
        Some(f) => fault_response(f),
    }
}

fn fault_response(fault: Fault) -> Response {
    match fault {
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).expect("valid status code");
            error_response(status, status.canonical_reason().unwrap_or("error"))
        }
        Fault::RateLimited { retry_after } => {
            let mut resp = error_response(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
            if let Some(ra) = retry_after {
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_str(&ra).expect("retry-after value"),
                );
            }
            resp
        }
        Fault::Otp => {
            let mut resp = error_response(StatusCode::UNAUTHORIZED, "OTP required for authentication");
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("OTP"));
            resp
        }
        Fault::OtpBody => error_response(
            StatusCode::UNAUTHORIZED,
            "You must provide a one-time pass. Upgrade your client to npm@latest in order to use 2FA.",
        ),
        Fault::IpBlocked => {
            let mut resp = error_response(StatusCode::UNAUTHORIZED, "IP address not allowed");
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("IPAddress"),
            );
            resp
        }
        Fault::Malformed(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Fault::Redirect(location) => {
            let mut resp = error_response(StatusCode::FOUND, "Found");
            resp.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_str(&location).expect("location value"),
            );
            resp
        }
        Fault::Custom {
            status,
            headers,
            body,
        } => {
            let mut resp = (
                StatusCode::from_u16(status).expect("valid status code"),
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
            for (k, v) in headers {
                resp.headers_mut().insert(
                    HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                    HeaderValue::from_str(&v).expect("header value"),
                );
            }
            resp
        }
        // Handled by the caller.
        Fault::Delay(_) | Fault::Drop | Fault::TruncatedBody => {
            unreachable!("handled in record_and_fault")
        }
    }
}

/// `authorization: Bearer <token>` with a token from `valid_tokens`, else Verdaccio's 401s.
async fn require_auth(State(sh): State<Shared>, req: Request, next: Next) -> Response {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let Some(auth) = auth else {
        return error_response(StatusCode::UNAUTHORIZED, "no credentials provided");
    };
    let ok = auth
        .strip_prefix("Bearer ")
        .is_some_and(|t| sh.lock().valid_tokens.iter().any(|v| v == t));
    if ok {
        next.run(req).await
    } else {
        error_response(StatusCode::UNAUTHORIZED, "bad token")
    }
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `GET /-/npm/v1/tokens[?page=N]`.
async fn tokens_page(State(sh): State<Shared>, req: Request) -> Response {
    let page = match query_param(req.uri().query(), "page") {
        None => 1,
        Some(p) => match p.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => return error_response(StatusCode::BAD_REQUEST, "invalid page"),
        },
    };
    let st = sh.lock();
    let size = st.page_size.max(1);
    let total = st.tokens.len();
    let pages = total.div_ceil(size).max(st.min_pages).max(1);
    let start = (page - 1).saturating_mul(size).min(total);
    let end = start.saturating_add(size).min(total);
    let objects: Vec<Value> = st.tokens[start..end].to_vec();
    let has_next = page < pages;

    let link = |style: NextStyle, p: usize| -> String {
        match style {
            NextStyle::Absolute => {
                format!("{}{}?page={p}", sh.url, TOKENS_PATH.trim_start_matches('/'))
            }
            _ => format!("{TOKENS_PATH}?page={p}"),
        }
    };
    let mut style = if has_next {
        st.next_style
    } else {
        st.end_style
    };
    if !has_next && style.is_link() {
        style = NextStyle::Null;
    }
    let mut urls = serde_json::Map::new();
    match &st.next_override {
        Some(o) if !o.contains("{next}") || has_next => {
            style = NextStyle::Relative;
            urls.insert(
                "next".into(),
                Value::String(o.replace("{next}", &(page + 1).to_string())),
            );
        }
        _ => match style {
            NextStyle::Relative | NextStyle::Absolute => {
                urls.insert("next".into(), Value::String(link(style, page + 1)));
            }
            NextStyle::Null => {
                urls.insert("next".into(), Value::Null);
            }
            NextStyle::Empty => {
                urls.insert("next".into(), Value::String(String::new()));
            }
            NextStyle::NoNextKey | NextStyle::Missing => {}
        },
    }
    if page > 1 {
        let prev_style = if st.next_style == NextStyle::Absolute {
            NextStyle::Absolute
        } else {
            NextStyle::Relative
        };
        urls.insert("prev".into(), Value::String(link(prev_style, page - 1)));
    }
    let mut body = serde_json::Map::new();
    body.insert("objects".into(), Value::Array(objects));
    if style != NextStyle::Missing {
        body.insert("urls".into(), Value::Object(urls));
    }
    body.insert("total".into(), json!(total));
    drop(st);
    json_response(StatusCode::OK, &Value::Object(body))
}

/// `GET /-/whoami`.
async fn whoami(State(sh): State<Shared>) -> Response {
    let name = sh.lock().username.clone();
    json_response(StatusCode::OK, &json!({ "username": name }))
}

/// `GET /-/npm/v1/user`.
async fn profile(State(sh): State<Shared>) -> Response {
    let profile = sh.lock().profile.clone();
    json_response(StatusCode::OK, &profile)
}

// ---------------------------------------------------------------------------------------------------
// Server plumbing: a listener whose connections can be cut from a handler (Fault::Drop) or by stop().

fn spawn_server(listener: TcpListener, shared: &Shared, conns: &Conns) -> Running {
    let app = routes(shared).into_make_service_with_connect_info::<ConnMeta>();
    let listener = TrackedListener {
        inner: listener,
        conns: conns.clone(),
    };
    let (shutdown, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Running { shutdown, task }
}

/// The live connections, so that `stop()` can cut them.
type Conns = Arc<Mutex<Vec<Weak<ConnCtl>>>>;

struct TrackedListener {
    inner: TcpListener,
    conns: Conns,
}

/// Controls for one connection, shared by its stream and (through `ConnectInfo`) the handlers.
#[derive(Debug, Default)]
struct ConnCtl {
    /// Once set, every write on the connection fails and reads see end-of-file.
    killed: AtomicBool,
    cut: Mutex<Option<Cut>>,
}

impl ConnCtl {
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
    }

    fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}

/// Truncation of the next response written on a connection.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Let the head through (up to its blank line) and this many body bytes.
    AfterHeaders(usize),
    /// This many more bytes may be written, then the connection is killed.
    Left(usize),
}

/// Per-connection information handed to handlers through `ConnectInfo`.
#[derive(Debug, Clone)]
struct ConnMeta {
    peer: SocketAddr,
    ctl: Arc<ConnCtl>,
}

impl axum::serve::Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = ConnMeta;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    let ctl = Arc::new(ConnCtl::default());
                    {
                        let mut conns = lock(&self.conns);
                        conns.retain(|w| w.strong_count() > 0);
                        conns.push(Arc::downgrade(&ctl));
                    }
                    let io = TrackedStream {
                        inner: stream,
                        ctl: ctl.clone(),
                    };
                    return (io, ConnMeta { peer, ctl });
                }
                // EMFILE and the like: wait a little, as axum's own listener does.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ConnMeta {
            peer: self.inner.local_addr()?,
            ctl: Arc::new(ConnCtl::default()),
        })
    }
}

impl Connected<IncomingStream<'_, TrackedListener>> for ConnMeta {
    fn connect_info(stream: IncomingStream<'_, TrackedListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP stream that its [`ConnCtl`] can cut. It does not claim vectored writes, so hyper hands it
/// each response as one flattened buffer, which keeps the truncation simple.
struct TrackedStream {
    inner: TcpStream,
    ctl: Arc<ConnCtl>,
}

impl TrackedStream {
    fn killed(&self) -> bool {
        self.ctl.is_killed()
    }

    /// How much of `buf` may be written under the current cut, if any.
    fn allowed(&self, buf: &[u8]) -> Option<usize> {
        let mut cut = lock(&self.ctl.cut);
        if let Some(Cut::AfterHeaders(n)) = *cut {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                *cut = Some(Cut::Left(i + 4 + n));
            }
        }
        match *cut {
            Some(Cut::Left(left)) => Some(left.min(buf.len())),
            _ => None,
        }
    }

    fn wrote(&self, n: usize) {
        let mut cut = lock(&self.ctl.cut);
        if let Some(Cut::Left(left)) = *cut {
            let left = left.saturating_sub(n);
            *cut = Some(Cut::Left(left));
            if left == 0 {
                self.ctl.kill();
            }
        }
    }
}

fn dropped() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "fake registry dropped the connection",
    )
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.killed() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.killed() {
            return Poll::Ready(Err(dropped()));
        }
        let Some(allowed) = this.allowed(buf) else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        let result = Pin::new(&mut this.inner).poll_write(cx, &buf[..allowed]);
        if let Poll::Ready(Ok(n)) = result {
            this.wrote(n);
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.killed() {
            return Poll::Ready(Err(dropped()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
