//! An in-process fake npm registry for integration tests, served by axum on `127.0.0.1:0`.
//!
//! It follows the registry API as the npm CLI 11 calls it (the request shapes of npm-registry-fetch,
//! libnpmaccess, libnpmorg, libnpmteam and pacote):
//!
//! - `GET /-/npm/v1/tokens` serves the token list as pages of `{objects, urls: {next, prev}, total}`;
//!   the following pages are `/-/npm/v1/tokens?page=N`. How `urls.next` is written is programmable
//!   ([`NextStyle`]), as is the marker on the last page and a forced value ([`FakeRegistry::set_next_override`]).
//! - `GET /-/whoami` → `{"username": …}` ([`FakeRegistry::set_username`], default `alice`), whose user
//!   route answers `{}` until given packages; `GET /-/npm/v1/user` → a settable profile document.
//! - Package, org and team lists (§3.5, §4): `GET /-/user/<u>/package`, `/-/org/<o>/package`,
//!   `/-/org/<o>/user`, `/-/org/<o>/team?format=cli` (`["org:team", …]`), `/-/team/<o>/<t>/package`.
//!   An unknown user, org or team is a 404 `{"error":"Not found"}`; nothing falls back to another route.
//! - Trust and publishing access (§3.3, §5.1): `GET /-/package/<pkg>/trust` and
//!   `POST /-/package/<pkg>/access` also want a valid `npm-otp` ([`FakeRegistry::set_valid_otps`],
//!   optionally a limited number of uses, [`FakeRegistry::otp_uses_left`], or a lifetime,
//!   [`FakeRegistry::expire_otps_after`]); a read-only credential
//!   ([`FakeRegistry::set_read_only_tokens`]) gets 403 first; otherwise 401 with
//!   `www-authenticate: OTP`. Accepted access bodies are kept ([`FakeRegistry::access_posts`]).
//! - Every route above wants `authorization: Bearer <valid token>`; without one the answer is Verdaccio's
//!   401 `{"error":"no credentials provided"}`, with an unknown one 401 `{"error":"bad token"}`.
//! - Packuments (§6): `GET /<escaped name>` (`/@a%2fb`, also `/@a%2Fb`; an unescaped `/@a/b` is another
//!   route and a 404) serves a stored document with `ETag: "rev-N"`, 304 on a matching `If-None-Match`.
//!   Public unless [`FakeRegistry::set_packument_private`]. [`packument_doc`] builds realistic ones.
//! - Attestations (§6): `GET /-/npm/v1/attestations/<escaped name>@<version>`, public, 404 when none
//!   ([`FakeRegistry::set_attestation`], [`attestation_reply`]).
//! - Benchmarks: [`FakeRegistry::set_latency`], [`FakeRegistry::bytes_served`],
//!   [`FakeRegistry::requests_count`], [`FakeRegistry::add_many_packages`].
//! - Faults ([`Fault`]) are queued per path prefix and consumed one per matching request, before auth.
//!   [`Fault::Oversized`] serves a body of any size, with or without `Content-Length`, and
//!   [`FakeRegistry::wire_bytes`] counts what actually reached the sockets, so a test can tell a
//!   client that stopped reading from one that read everything.
//! - Every request is recorded ([`Recorded`]) with its arrival time, headers (lowercase names) and body.
//! - [`FakeRegistry::stop`] closes the port (connection refused) and [`FakeRegistry::restart`] opens it
//!   again on the same port with the same state.
//!
//! A registry can live below a path ([`FakeRegistry::start_at`]): all routes are then mounted under the
//! prefix, `url` ends with it, and relative `next` links stay registry-relative (`/-/npm/v1/tokens?page=2`),
//! because npm-registry-fetch appends a relative path to the registry URL (API reference §0, "URL
//! building"); an absolute `next` includes the prefix.
//!
//! To extend it (collaborators, stage, keys…): add fields to [`FakeState`], setters on
//! [`FakeRegistry`], and routes in [`routes`] (inside `authed` if they need the credential). Fault
//! injection, recording and the path prefix then apply to them without further work.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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
    /// The normal answer, its body sent a tenth of `bytes_per_sec` every 100 ms, as over a slow link
    /// (npmjs.com serving a multi-megabyte packument to a busy host).
    Slow { bytes_per_sec: usize },
    /// The normal answer's headers, then nothing, ever: a connection that stalls mid-answer.
    Stall,
    /// 302 to this location.
    Redirect(String),
    /// 200 with a JSON body of exactly `bytes` bytes (at least a few dozen): an empty token-list
    /// page padded with a long string ([`oversized_body`]). With `declared` it is sent with
    /// `Content-Length`; without, chunked and without one, so that only reading it shows its size.
    Oversized { bytes: usize, declared: bool },
    /// 200, `content-type: application/json` and `content-encoding: gzip`, these bytes as the body
    /// (already compressed by the test; sent whatever the request's `accept-encoding` said).
    Gzipped(Vec<u8>),
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
    /// Full packuments by package name (`@a/b`), served at `GET /<escaped name>`.
    pub packuments: BTreeMap<String, StoredPackument>,
    /// Packuments that want the bearer token (the name may be set before the document is added).
    pub private_packuments: BTreeSet<String>,
    /// Source of ETags: bumped by every packument stored.
    pub etag_seq: u64,
    /// Attestation replies by `(package name, version)`.
    pub attestations: BTreeMap<(String, String), Value>,
    /// `GET /-/user/<user>/package`, keyed by the user without a leading `@`.
    pub user_packages: BTreeMap<String, BTreeMap<String, String>>,
    /// Orgs keyed by name without the leading `@`; an org is known once any org setter named it.
    pub orgs: BTreeMap<String, FakeOrg>,
    /// `GET /-/package/<pkg>/trust` replies (the configuration array as given).
    pub trust: BTreeMap<String, Value>,
    /// One-time passwords accepted in `npm-otp` (none by default), each with its own lifetime and
    /// number of uses.
    pub otps: Vec<FakeOtp>,
    /// What each credential is, by token; a token not listed is an npm login session.
    pub credential_kinds: BTreeMap<String, CredentialKind>,
    /// Tokens past their expiry: still valid strings, refused with 401 on every authed route.
    pub expired_tokens: BTreeSet<String>,
    /// Web-based 2FA: OTP challenges carry `{authUrl, doneUrl}` and `doneUrl` answers 202 this many
    /// times before it hands out a code.
    pub web_2fa: Option<usize>,
    /// Open web-2FA logins: id → polls left before `doneUrl` answers the code.
    pub web_logins: BTreeMap<u64, usize>,
    pub web_login_seq: u64,
    /// Accepted `POST /-/package/<pkg>/access` bodies, in arrival order.
    pub access_posts: Vec<(String, Value)>,
    /// Added to every response (before the answer, after the request is recorded).
    pub latency: Duration,
    /// Response body bytes written since start (or [`FakeRegistry::reset_counters`]).
    pub bytes_served: u64,
    /// Requests received since start (or [`FakeRegistry::reset_counters`]); unlike `requests` this is
    /// not reset by [`FakeRegistry::clear_requests`].
    pub requests_count: u64,
    /// Requests being answered now, and the most there ever were at once, by kind: `attestations`
    /// (provenance reads) or `other`.
    pub in_flight: BTreeMap<&'static str, usize>,
    pub max_in_flight: BTreeMap<&'static str, usize>,
}

/// One stored packument: serialised once, so serving a multi-megabyte document costs a reference count.
#[derive(Clone)]
pub struct StoredPackument {
    pub body: Bytes,
    /// Quoted, as sent in the `ETag` header: `"rev-7"`.
    pub etag: String,
}

impl std::fmt::Debug for StoredPackument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredPackument")
            .field("bytes", &self.body.len())
            .field("etag", &self.etag)
            .finish()
    }
}

/// An org: its package list, roster and teams (team → package → `read`|`write`).
#[derive(Debug, Clone, Default)]
pub struct FakeOrg {
    pub packages: BTreeMap<String, String>,
    pub roster: BTreeMap<String, String>,
    pub teams: BTreeMap<String, BTreeMap<String, String>>,
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
            in_flight: BTreeMap::new(),
            max_in_flight: BTreeMap::new(),
            packuments: BTreeMap::new(),
            private_packuments: BTreeSet::new(),
            etag_seq: 0,
            attestations: BTreeMap::new(),
            user_packages: BTreeMap::new(),
            orgs: BTreeMap::new(),
            trust: BTreeMap::new(),
            otps: Vec::new(),
            credential_kinds: BTreeMap::new(),
            expired_tokens: BTreeSet::new(),
            web_2fa: None,
            web_logins: BTreeMap::new(),
            web_login_seq: 0,
            access_posts: Vec::new(),
            latency: Duration::ZERO,
            bytes_served: 0,
            requests_count: 0,
        }
    }
}

/// A one-time password the fake accepts, as an authenticator shows it.
#[derive(Debug, Clone)]
pub struct FakeOtp {
    pub code: String,
    /// When it stops being accepted (a TOTP code lives about 30 s); `None` = never.
    pub valid_until: Option<Instant>,
    /// How many more requests it is accepted on; `None` = without limit.
    pub uses_left: Option<usize>,
}

impl FakeOtp {
    fn new(code: String) -> Self {
        Self {
            code,
            valid_until: None,
            uses_left: None,
        }
    }
}

/// What a credential may do, as npmjs.com sorts them (the registry API notes, section 8;
/// `docs/NPM-CONTRACT.md` has the sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// The user's own `npm login` session: trust reads and access writes want a valid OTP.
    Session,
    /// A read-only granular token: 403 on trust reads and access writes.
    ReadOnly,
    /// A read-write granular token without bypass-2FA: access writes want an OTP; trust answers
    /// 401 without an OTP challenge (npm/cli #9957: granular tokens are refused there).
    Write,
    /// A read-write granular token with bypass-2FA: 401 without an OTP challenge on trust and on
    /// access (account-management actions, refused to such tokens since August 2026).
    WriteBypass2fa,
}

/// The 401 npmjs.com gives a granular token on an action it may not take with one (npm/cli #9957).
const GRANULAR_REFUSED: &str = "npm tokens that bypass 2FA are being restricted";

/// What the handlers share.
#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<FakeState>>,
    /// `""` or `/npm` (no trailing slash).
    prefix: String,
    /// The registry URL with its trailing slash.
    url: String,
    /// Bytes written to client sockets (heads and bodies) since start; see [`FakeRegistry::wire_bytes`].
    wire: Arc<AtomicU64>,
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
        Self::start_on(prefix, 0).await
    }

    /// A registry below `prefix` on `127.0.0.1:<port>` (`0`: a free port), e.g. for a standalone
    /// server that another process is told to use. Panics if the port cannot be bound.
    pub async fn start_on(prefix: &str, port: u16) -> FakeRegistry {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
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
            wire: Arc::new(AtomicU64::new(0)),
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

    // -----------------------------------------------------------------------------------------------
    // Packuments and attestations

    /// Store (or replace) the full document served at `GET /<escaped name>`; returns its new ETag
    /// (quoted). Every call gives a new ETag, so a changed document is never answered with a 304.
    pub fn add_packument(&self, name: &str, doc: Value) -> String {
        let body = Bytes::from(serde_json::to_vec(&doc).expect("serialise packument"));
        self.with_state(|s| store_packument(s, name, body))
    }

    /// Store a document given as raw JSON text (e.g. a real packument read from a file).
    pub fn add_packument_raw(&self, name: &str, json: impl Into<Bytes>) -> String {
        let body = json.into();
        self.with_state(|s| store_packument(s, name, body))
    }

    pub fn remove_packument(&self, name: &str) {
        self.with_state(|s| s.packuments.remove(name));
    }

    /// The stored document, parsed.
    pub fn packument(&self, name: &str) -> Option<Value> {
        let body = self.with_state(|s| s.packuments.get(name).map(|p| p.body.clone()))?;
        Some(serde_json::from_slice(&body).expect("stored packument is JSON"))
    }

    /// The current ETag (quoted), if the packument exists.
    pub fn packument_etag(&self, name: &str) -> Option<String> {
        self.with_state(|s| s.packuments.get(name).map(|p| p.etag.clone()))
    }

    /// A private packument is served only with a valid bearer token (else 401, as for the token
    /// routes). The flag may be set before or after the document is added.
    pub fn set_packument_private(&self, name: &str, private: bool) {
        self.with_state(|s| {
            if private {
                s.private_packuments.insert(name.to_string());
            } else {
                s.private_packuments.remove(name);
            }
        });
    }

    /// Serve a GitHub provenance attestation for `name@version` at
    /// `GET /-/npm/v1/attestations/<escaped name>@<version>`, naming `repository`
    /// (`https://github.com/o/r`) and `workflow_path` (`.github/workflows/release.yml`); see
    /// [`attestation_reply`].
    pub fn set_attestation(
        &self,
        name: &str,
        version: &str,
        repository: &str,
        workflow_path: &str,
    ) {
        let reply = attestation_reply(name, version, repository, workflow_path);
        self.set_attestation_reply(name, version, reply);
    }

    /// Serve this exact attestations reply for `name@version`.
    pub fn set_attestation_reply(&self, name: &str, version: &str, reply: Value) {
        self.with_state(|s| {
            s.attestations
                .insert((name.to_string(), version.to_string()), reply)
        });
    }

    pub fn remove_attestation(&self, name: &str, version: &str) {
        self.with_state(|s| {
            s.attestations
                .remove(&(name.to_string(), version.to_string()))
        });
    }

    // -----------------------------------------------------------------------------------------------
    // Package lists, orgs and teams (all behind the bearer token)

    /// `GET /-/user/<user>/package` → this map (package → `read`|`write`). An unknown user is a 404.
    pub fn set_user_packages<K, V>(&self, user: &str, map: impl IntoIterator<Item = (K, V)>)
    where
        K: Into<String>,
        V: Into<String>,
    {
        let map = string_map(map);
        self.with_state(|s| s.user_packages.insert(entity_key(user), map));
    }

    /// `GET /-/org/<org>/package` → this map. An org no setter named is a 404 `{"error":"Not found"}`
    /// on every org and team route; nothing falls back to the user route.
    pub fn set_org_packages<K, V>(&self, org: &str, map: impl IntoIterator<Item = (K, V)>)
    where
        K: Into<String>,
        V: Into<String>,
    {
        let map = string_map(map);
        self.with_org(org, |o| o.packages = map);
    }

    /// `GET /-/org/<org>/user` → this map (user → `owner`|`admin`|`developer`).
    pub fn set_org_roster<K, V>(&self, org: &str, map: impl IntoIterator<Item = (K, V)>)
    where
        K: Into<String>,
        V: Into<String>,
    {
        let map = string_map(map);
        self.with_org(org, |o| o.roster = map);
    }

    /// The org's teams, served at `GET /-/org/<org>/team?format=cli` as `["org:team", …]` (sorted).
    /// Replaces the team set; package grants of teams that stay are kept.
    pub fn set_org_teams(&self, org: &str, teams: &[&str]) {
        self.with_org(org, |o| {
            let mut next = BTreeMap::new();
            for t in teams {
                let grants = o.teams.remove(*t).unwrap_or_default();
                next.insert(t.to_string(), grants);
            }
            o.teams = next;
        });
    }

    /// `GET /-/team/<org>/<team>/package` → this map; adds the team to the org when missing.
    pub fn set_team_packages<K, V>(
        &self,
        org: &str,
        team: &str,
        map: impl IntoIterator<Item = (K, V)>,
    ) where
        K: Into<String>,
        V: Into<String>,
    {
        let map = string_map(map);
        self.with_org(org, |o| {
            o.teams.insert(team.to_string(), map);
        });
    }

    /// Forget an org: its routes answer 404 again.
    pub fn remove_org(&self, org: &str) {
        self.with_state(|s| s.orgs.remove(&entity_key(org)));
    }

    fn with_org(&self, org: &str, f: impl FnOnce(&mut FakeOrg)) {
        self.with_state(|s| f(s.orgs.entry(entity_key(org)).or_default()));
    }

    // -----------------------------------------------------------------------------------------------
    // Trust, OTP and publishing access

    /// `GET /-/package/<pkg>/trust` → this value (normally an array of configurations). The route
    /// wants the bearer token and a valid `npm-otp`; a package with neither trust nor packument is a
    /// 404, a packument without trust set answers `[]`.
    pub fn set_trust(&self, name: &str, configs: Value) {
        self.with_state(|s| s.trust.insert(name.to_string(), configs));
    }

    /// The one-time passwords accepted in `npm-otp`, without limit (none by default, so every OTP
    /// route answers 401 `www-authenticate: OTP` until this is called). Replaces the earlier ones.
    pub fn set_valid_otps<S: Into<String>>(&self, otps: impl IntoIterator<Item = S>) {
        let otps = otps.into_iter().map(|c| FakeOtp::new(c.into())).collect();
        self.with_state(|s| s.otps = otps);
    }

    /// One more accepted code, without limit, beside the earlier ones (the authenticator's next code).
    pub fn add_otp(&self, code: &str) {
        self.with_state(|s| s.otps.push(FakeOtp::new(code.to_string())));
    }

    /// Let each code accepted so far be used `n` more times (then it is refused like an expired one),
    /// or without limit (`None`, the default). Codes added later are not limited by this.
    pub fn otp_uses_left(&self, n: Option<usize>) {
        self.with_state(|s| s.otps.iter_mut().for_each(|o| o.uses_left = n));
    }

    /// The codes accepted so far expire `lifetime` from now, as a TOTP code does: from then on they
    /// are answered with the challenge again. Codes added later are not touched.
    pub fn expire_otps_after(&self, lifetime: Duration) {
        let until = Instant::now() + lifetime;
        self.with_state(|s| s.otps.iter_mut().for_each(|o| o.valid_until = Some(until)));
    }

    /// What is left of the first code's [`otp_uses_left`](Self::otp_uses_left) budget.
    pub fn remaining_otp_uses(&self) -> Option<usize> {
        self.with_state(|s| s.otps.first().and_then(|o| o.uses_left))
    }

    /// These credentials may read but not write: trust reads and access writes answer 403.
    pub fn set_read_only_tokens<S: Into<String>>(&self, tokens: impl IntoIterator<Item = S>) {
        for t in tokens {
            self.set_credential_kind(&t.into(), CredentialKind::ReadOnly);
        }
    }

    /// What this credential may do (a token not named is an npm login session).
    pub fn set_credential_kind(&self, token: &str, kind: CredentialKind) {
        self.with_state(|s| s.credential_kinds.insert(token.to_string(), kind));
    }

    /// This credential is past its expiry: every authed route answers 401, no OTP challenge.
    pub fn expire_credential(&self, token: &str) {
        self.with_state(|s| s.expired_tokens.insert(token.to_string()));
    }

    /// Offer web-based 2FA on every OTP challenge (`None`: plain challenges, the default). The
    /// challenge's `doneUrl` answers 202 `retry-after: 1` `polls_before_done` times, then 200 with a
    /// code that is then accepted as `npm-otp`.
    pub fn set_web_2fa(&self, polls_before_done: Option<usize>) {
        self.with_state(|s| s.web_2fa = polls_before_done);
    }

    /// The accepted `POST /-/package/<pkg>/access` bodies: `(package name, JSON body)`.
    pub fn access_posts(&self) -> Vec<(String, Value)> {
        self.with_state(|s| s.access_posts.clone())
    }

    // -----------------------------------------------------------------------------------------------
    // Benchmark support

    /// Delay every response by this much (a tokio sleep after the request is recorded).
    pub fn set_latency(&self, latency: Duration) {
        self.with_state(|s| s.latency = latency);
    }

    /// Response body bytes served (as handed to the connection; a cut-off body counts in full).
    pub fn bytes_served(&self) -> u64 {
        self.with_state(|s| s.bytes_served)
    }

    /// Bytes written to client sockets since start, heads included: unlike [`Self::bytes_served`],
    /// a body the client stopped reading counts only as far as it was written (what the client read
    /// plus what the socket buffers held when it closed the connection).
    pub fn wire_bytes(&self) -> u64 {
        self.shared.wire.load(Ordering::SeqCst)
    }

    /// Requests received, faulted ones included.
    pub fn requests_count(&self) -> u64 {
        self.with_state(|s| s.requests_count)
    }

    pub fn reset_counters(&self) {
        self.with_state(|s| {
            s.bytes_served = 0;
            s.requests_count = 0;
        });
    }

    /// Add `n` public packages named `<prefix><i>` (`i` from 0), each with `versions_per_package`
    /// versions `1.<j>.0` a day apart and a `readme_bytes` readme. Versions are published by
    /// `alice`, except the last, which is a trusted GitHub publish with provenance (an attestation
    /// naming `https://github.com/bench/<basename>` and `.github/workflows/release.yml` is served).
    /// Maintainers: `alice`, `bob`. Returns the names in order.
    pub fn add_many_packages(
        &self,
        prefix: &str,
        n: usize,
        versions_per_package: usize,
        readme_bytes: usize,
    ) -> Vec<String> {
        let base = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .expect("base time")
            .with_timezone(&chrono::Utc);
        let mut docs = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("{prefix}{i}");
            let versions: Vec<(String, String)> = (0..versions_per_package)
                .map(|j| {
                    let at = base
                        + chrono::Duration::days(j as i64)
                        + chrono::Duration::minutes(i as i64);
                    (
                        format!("1.{j}.0"),
                        at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                    )
                })
                .collect();
            let last = versions.len().saturating_sub(1);
            let spec: Vec<(&str, &str, Option<&str>, &str)> = versions
                .iter()
                .enumerate()
                .map(|(j, (v, t))| {
                    if j == last {
                        (v.as_str(), t.as_str(), Some("github"), "GitHub Actions")
                    } else {
                        (v.as_str(), t.as_str(), None, "alice")
                    }
                })
                .collect();
            let doc = packument_doc(&name, &spec, &["alice", "bob"]);
            let mut body = serde_json::to_vec(&doc).expect("serialise packument");
            if readme_bytes > 0 {
                // Spliced in as bytes: serialising megabytes of string is slow in debug builds.
                body.pop(); // the closing `}`
                body.reserve(readme_bytes + 16);
                body.extend_from_slice(b",\"readme\":\"");
                body.resize(body.len() + readme_bytes, b'x');
                body.extend_from_slice(b"\"}");
            }
            let body = Bytes::from(body);
            let attestation = versions.last().map(|(v, _)| {
                let repo = format!("https://github.com/bench/{}", basename(&name));
                (
                    (name.clone(), v.clone()),
                    attestation_reply(&name, v, &repo, ".github/workflows/release.yml"),
                )
            });
            docs.push((name, body, attestation));
        }
        self.with_state(|s| {
            docs.into_iter()
                .map(|(name, body, attestation)| {
                    store_packument(s, &name, body);
                    if let Some((key, reply)) = attestation {
                        s.attestations.insert(key, reply);
                    }
                    name
                })
                .collect()
        })
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

fn store_packument(s: &mut FakeState, name: &str, body: Bytes) -> String {
    s.etag_seq += 1;
    let etag = format!("\"rev-{}\"", s.etag_seq);
    s.packuments.insert(
        name.to_string(),
        StoredPackument {
            body,
            etag: etag.clone(),
        },
    );
    etag
}

/// Org and user keys: the name without its leading `@` (what the route carries once decoded).
fn entity_key(name: &str) -> String {
    name.strip_prefix('@').unwrap_or(name).to_string()
}

fn string_map<K: Into<String>, V: Into<String>>(
    map: impl IntoIterator<Item = (K, V)>,
) -> BTreeMap<String, String> {
    map.into_iter().map(|(k, v)| (k.into(), v.into())).collect()
}

/// `@scope/name` → `name`.
fn basename(name: &str) -> &str {
    name.rsplit_once('/').map_or(name, |(_, b)| b)
}

/// `n` made-up bytes, stable for the parts (FNV-1a seed, splitmix64 stream): cheap even in debug
/// builds, which matters for [`FakeRegistry::add_many_packages`]. Not a real digest.
fn fake_bytes(parts: &[&str], n: usize) -> Vec<u8> {
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0]) {
            seed ^= u64::from(b);
            seed = seed.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// `2 * bytes` made-up hex digits, stable for the parts.
fn digest_hex(parts: &[&str], bytes: usize) -> String {
    hex::encode(fake_bytes(parts, bytes))
}

/// A stable UUID-shaped id derived from the parts.
fn fake_uuid(parts: &[&str]) -> String {
    let h = digest_hex(parts, 16);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The package URL npm puts in an attestation subject: `pkg:npm/%40scope/name@1.0.0`.
fn purl(name: &str, version: &str) -> String {
    format!("pkg:npm/{}@{version}", name.replacen('@', "%40", 1))
}

/// A full packument as `GET /<pkg>` with `accept: application/json` returns it (API reference §6).
///
/// `versions` are `(version, ISO publish time, trustedPublisher id, publisher name)` in publish
/// order; `dist-tags.latest` is the last one. A version with a trusted publisher gets
/// `_npmUser.trustedPublisher {id, oidcConfigId}` (the config id is stable per package and id) and,
/// when the id is `github`, `dist.attestations {url, provenance.predicateType = SLSA v1}` as on
/// npmjs.com. `maintainers` become `{name, email: <name>@example.com}`. Digests are made up but
/// well-formed (`shasum` 40 hex digits, `integrity` `sha512-<base64 of 64 bytes>`).
pub fn packument_doc(
    name: &str,
    versions: &[(&str, &str, Option<&str>, &str)],
    maintainers: &[&str],
) -> Value {
    use base64::Engine as _;
    let person = |n: &str| json!({"name": n, "email": format!("{n}@example.com")});
    let mut time = serde_json::Map::new();
    let mut version_docs = serde_json::Map::new();
    if let Some((_, first, _, _)) = versions.first() {
        time.insert("created".into(), json!(first));
    }
    let modified = versions
        .iter()
        .map(|v| v.1)
        .max()
        .unwrap_or("2025-01-01T00:00:00.000Z");
    time.insert("modified".into(), json!(modified));
    for (version, at, trusted, publisher) in versions {
        time.insert(version.to_string(), json!(at));
        let npm_user = match trusted {
            Some(id) => {
                let email = if *id == "github" {
                    "npm-oidc-no-reply@github.com".to_string()
                } else {
                    format!("npm-oidc-no-reply@{id}.example")
                };
                json!({
                    "name": publisher,
                    "email": email,
                    "trustedPublisher": {
                        "id": id,
                        "oidcConfigId": format!("oidc:{}", fake_uuid(&[name, id])),
                    },
                })
            }
            None => person(publisher),
        };
        let seed = [name, *version];
        let sha512 = fake_bytes(&[name, version, "tarball"], 64);
        let mut dist = json!({
            "tarball": format!("https://registry.npmjs.org/{name}/-/{}-{version}.tgz", basename(name)),
            "shasum": digest_hex(&seed, 20),
            "integrity": format!("sha512-{}", base64::engine::general_purpose::STANDARD.encode(sha512)),
            "fileCount": 7,
            "unpackedSize": 12345,
            "signatures": [{
                "keyid": "SHA256:jl3bwswu80PjjokCgh0o2w5c2U4LhQAE57gj9cz1kzA",
                "sig": format!("MEUCIQ{}", digest_hex(&[name, version, "sig"], 20)),
            }],
        });
        if *trusted == Some("github") {
            dist["attestations"] = json!({
                "url": format!("https://registry.npmjs.org/-/npm/v1/attestations/{}@{version}", escaped_name(name)),
                "provenance": {"predicateType": "https://slsa.dev/provenance/v1"},
            });
        }
        version_docs.insert(
            version.to_string(),
            json!({
                "name": name,
                "version": version,
                "description": format!("{name} for tests"),
                "license": "MIT",
                "main": "index.js",
                "_id": format!("{name}@{version}"),
                "_npmVersion": "11.19.1",
                "_nodeVersion": "20.20.2",
                "_npmUser": npm_user,
                "maintainers": maintainers.iter().map(|m| person(m)).collect::<Vec<_>>(),
                "dist": dist,
            }),
        );
    }
    let latest = versions.last().map(|v| v.0);
    let mut dist_tags = serde_json::Map::new();
    if let Some(latest) = latest {
        dist_tags.insert("latest".into(), json!(latest));
    }
    json!({
        "_id": name,
        "_rev": format!("{}-{}", versions.len().max(1), digest_hex(&[name, modified], 16)),
        "name": name,
        "description": format!("{name} for tests"),
        "dist-tags": dist_tags,
        "maintainers": maintainers.iter().map(|m| person(m)).collect::<Vec<_>>(),
        "time": time,
        "versions": version_docs,
        "license": "MIT",
        "readmeFilename": "README.md",
    })
}

/// [`packument_doc`] with a top-level `readme` of `readme_bytes` bytes, for multi-megabyte documents.
pub fn packument_doc_padded(
    name: &str,
    versions: &[(&str, &str, Option<&str>, &str)],
    maintainers: &[&str],
    readme_bytes: usize,
) -> Value {
    let mut doc = packument_doc(name, versions, maintainers);
    doc["readme"] = Value::String("x".repeat(readme_bytes));
    doc
}

/// The attestations reply npmjs.com gives for a GitHub trusted publish with provenance (API
/// reference §6): npm's own publish attestation first, then the SLSA v1 provenance whose DSSE
/// payload is the base64 of an in-toto statement with
/// `predicate.buildDefinition.externalParameters.workflow {repository, path, ref}`.
pub fn attestation_reply(
    name: &str,
    version: &str,
    repository: &str,
    workflow_path: &str,
) -> Value {
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::STANDARD.encode(v.to_string());
    let sha512 = digest_hex(&[name, version, "tarball"], 64);
    let subject = json!([{"name": purl(name, version), "digest": {"sha512": sha512}}]);
    let commit = digest_hex(&[repository, version], 20);
    let provenance = json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subject,
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://slsa-framework.github.io/github-actions-buildtypes/workflow/v1",
                "externalParameters": {"workflow": {
                    "ref": "refs/heads/main",
                    "repository": repository,
                    "path": workflow_path,
                }},
                "internalParameters": {"github": {
                    "event_name": "push",
                    "repository_id": "123456789",
                    "repository_owner_id": "987654321",
                }},
                "resolvedDependencies": [{
                    "uri": format!("git+{repository}@refs/heads/main"),
                    "digest": {"gitCommit": commit},
                }],
            },
            "runDetails": {
                "builder": {"id": "https://github.com/actions/runner/github-hosted"},
                "metadata": {"invocationId": format!("{repository}/actions/runs/1/attempts/1")},
            },
        },
    });
    let publish = json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subject,
        "predicateType": "https://github.com/npm/attestation/tree/main/specs/publish/v0.1",
        "predicate": {"name": name, "version": version, "registry": "https://registry.npmjs.org"},
    });
    let bundle = |statement: &Value, keyid: &str| {
        json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"tlogEntries": [{"logIndex": "1", "integratedTime": "1735689600"}]},
            "dsseEnvelope": {
                "payload": b64(statement),
                "payloadType": "application/vnd.in-toto+json",
                "signatures": if keyid.is_empty() { json!([]) } else { json!([{"keyid": keyid, "sig": "MEUCIQ"}]) },
            },
        })
    };
    json!({"attestations": [
        {
            "predicateType": "https://github.com/npm/attestation/tree/main/specs/publish/v0.1",
            "bundle": bundle(&publish, "SHA256:jl3bwswu80PjjokCgh0o2w5c2U4LhQAE57gj9cz1kzA"),
        },
        {
            "predicateType": "https://slsa.dev/provenance/v1",
            "bundle": bundle(&provenance, ""),
        },
    ]})
}

// ---------------------------------------------------------------------------------------------------
// Routes

fn routes(shared: &Shared) -> Router {
    let authed = Router::new()
        .route(TOKENS_PATH, get(tokens_page))
        .route("/-/whoami", get(whoami))
        .route("/-/npm/v1/user", get(profile))
        .route("/-/user/{user}/package", get(user_packages))
        .route("/-/org/{org}/package", get(org_packages))
        .route("/-/org/{org}/user", get(org_roster))
        .route("/-/org/{org}/team", get(org_teams))
        .route("/-/team/{org}/{team}/package", get(team_packages))
        .route("/-/package/{pkg}/trust", get(trust))
        .route("/-/package/{pkg}/access", post(access))
        .route("/-/v1/done", get(web_done))
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_auth));
    // Public routes; a private packument checks the credential itself.
    let public = Router::new()
        .route("/{pkg}", get(packument))
        .route("/-/npm/v1/attestations/{spec}", get(attestations));
    let api = Router::new()
        .merge(authed)
        .merge(public)
        .fallback(not_found);
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

/// `{"objects":[],"urls":{},"pad":"xx…"}` of exactly `bytes` bytes (or the shortest such page when
/// `bytes` is smaller): a valid, empty token-list page that is large only by its padding.
pub fn oversized_body(bytes: usize) -> Bytes {
    const HEAD: &[u8] = br#"{"objects":[],"urls":{},"pad":""#;
    const TAIL: &[u8] = br#""}"#;
    let pad = bytes.saturating_sub(HEAD.len() + TAIL.len());
    let mut body = Vec::with_capacity(HEAD.len() + pad + TAIL.len());
    body.extend_from_slice(HEAD);
    body.resize(HEAD.len() + pad, b'x');
    body.extend_from_slice(TAIL);
    Bytes::from(body)
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
    let (fault, latency) = {
        let mut st = sh.lock();
        st.requests_count += 1;
        st.requests.push(Recorded {
            method: parts.method.to_string(),
            path_and_query,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            at,
        });
        let fault = st
            .faults
            .iter()
            .position(|(p, _)| relative.starts_with(p.as_str()))
            .and_then(|i| st.faults.remove(i))
            .map(|(_, f)| f);
        (fault, st.latency)
    };
    let kind = if relative.starts_with("/-/npm/v1/attestations/") {
        "attestations"
    } else {
        "other"
    };
    let _answering = Answering::new(&sh.state, kind);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let conn = parts
        .extensions
        .get::<ConnectInfo<ConnMeta>>()
        .map(|ci| ci.0.ctl.clone());
    let req = Request::from_parts(parts, Body::from(bytes));
    let resp = match fault {
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
        Some(Fault::Slow { bytes_per_sec }) => {
            let (parts, body) = next.run(req).await.into_parts();
            let whole = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let step = (bytes_per_sec / 10).max(1);
            let chunks = futures_util::stream::unfold(0usize, move |at| {
                let whole = whole.clone();
                async move {
                    if at >= whole.len() {
                        return None;
                    }
                    if at > 0 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let end = (at + step).min(whole.len());
                    Some((Ok::<_, io::Error>(whole.slice(at..end)), end))
                }
            });
            Response::from_parts(parts, Body::from_stream(chunks))
        }
        Some(Fault::Stall) => {
            let (mut parts, _) = next.run(req).await.into_parts();
            parts.headers.remove(header::CONTENT_LENGTH);
            let nothing = futures_util::stream::pending::<Result<Bytes, io::Error>>();
            Response::from_parts(parts, Body::from_stream(nothing))
        }
        Some(f) => fault_response(f),
    };
    let served = resp.body().size_hint().exact().unwrap_or(0);
    sh.lock().bytes_served += served;
    resp
}

/// Counts a request in [`FakeState::in_flight`] until its answer is built (or the client gives up).
struct Answering(Arc<Mutex<FakeState>>, &'static str);

impl Answering {
    fn new(state: &Arc<Mutex<FakeState>>, kind: &'static str) -> Self {
        let mut st = lock(state);
        let now = {
            let n = st.in_flight.entry(kind).or_default();
            *n += 1;
            *n
        };
        let max = st.max_in_flight.entry(kind).or_default();
        *max = (*max).max(now);
        Answering(Arc::clone(state), kind)
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.0).in_flight.get_mut(self.1) {
            *n -= 1;
        }
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
        Fault::Oversized { bytes, declared } => {
            let body = oversized_body(bytes);
            let body = if declared {
                Body::from(body)
            } else {
                // A stream has no known length: hyper sends it chunked, without Content-Length.
                Body::from_stream(Body::from(body).into_data_stream())
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
        Fault::Gzipped(bytes) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CONTENT_ENCODING, "gzip"),
            ],
            bytes,
        )
            .into_response(),
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
        Fault::Delay(_)
        | Fault::Drop
        | Fault::TruncatedBody
        | Fault::Slow { .. }
        | Fault::Stall => {
            unreachable!("handled in record_and_fault")
        }
    }
}

/// `authorization: Bearer <token>` with a token from `valid_tokens`, else Verdaccio's 401s.
async fn require_auth(State(sh): State<Shared>, req: Request, next: Next) -> Response {
    match bearer_rejection(&sh, req.headers()) {
        None => next.run(req).await,
        Some(resp) => resp,
    }
}

/// `None` for `authorization: Bearer <valid token>`, else the 401 to answer with.
fn bearer_rejection(sh: &Shared, headers: &HeaderMap) -> Option<Response> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let Some(auth) = auth else {
        return Some(error_response(
            StatusCode::UNAUTHORIZED,
            "no credentials provided",
        ));
    };
    let token = auth.strip_prefix("Bearer ");
    let st = sh.lock();
    if token.is_some_and(|t| st.expired_tokens.contains(t)) {
        return Some(error_response(StatusCode::UNAUTHORIZED, "token expired"));
    }
    let ok = token.is_some_and(|t| st.valid_tokens.iter().any(|v| v == t));
    (!ok).then(|| error_response(StatusCode::UNAUTHORIZED, "bad token"))
}

/// Which route of the two behind 2FA a request is on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TwoFactorRoute {
    Trust,
    Access,
}

/// The refusal of a credential that may not take this action at all, whatever the OTP: 403 for a
/// read-only token, a 401 without an OTP challenge for a granular token where npmjs.com wants a
/// session (see [`CredentialKind`]).
fn credential_rejection(
    st: &FakeState,
    headers: &HeaderMap,
    route: TwoFactorRoute,
) -> Option<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))?;
    let kind = st
        .credential_kinds
        .get(token)
        .copied()
        .unwrap_or(CredentialKind::Session);
    match (kind, route) {
        (CredentialKind::Session, _) | (CredentialKind::Write, TwoFactorRoute::Access) => None,
        (CredentialKind::ReadOnly, _) => Some(error_response(
            StatusCode::FORBIDDEN,
            "this token does not have permission to perform this action",
        )),
        (CredentialKind::Write, TwoFactorRoute::Trust) | (CredentialKind::WriteBypass2fa, _) => {
            Some(error_response(StatusCode::UNAUTHORIZED, GRANULAR_REFUSED))
        }
    }
}

/// `None` for a valid `npm-otp` (using up one of its uses), else npm's OTP challenge: 401
/// `www-authenticate: OTP`, with a web-2FA body when that is offered.
fn otp_rejection(st: &mut FakeState, headers: &HeaderMap, url: &str) -> Option<Response> {
    let given = headers
        .get("npm-otp")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let now = Instant::now();
    let accepted = given.and_then(|g| {
        st.otps.iter_mut().find(|o| {
            o.code == g
                && o.valid_until.is_none_or(|t| now < t)
                && o.uses_left.is_none_or(|n| n > 0)
        })
    });
    if let Some(otp) = accepted {
        if let Some(n) = &mut otp.uses_left {
            *n -= 1;
        }
        return None;
    }
    let mut resp = match st.web_2fa {
        None => fault_response(Fault::Otp),
        Some(polls) => {
            st.web_login_seq += 1;
            let id = st.web_login_seq;
            st.web_logins.insert(id, polls);
            // authUrl is only shown to the user, never fetched; doneUrl is on the registry.
            json_response(
                StatusCode::UNAUTHORIZED,
                &json!({
                    "authUrl": format!("{url}-/auth/cli/{id}"),
                    "doneUrl": format!("{url}-/v1/done?authId={id}"),
                }),
            )
        }
    };
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("OTP"));
    Some(resp)
}

/// `GET /-/v1/done?authId=N`: 202 `retry-after: 1` until the login has been polled enough, then
/// 200 `{token}` with a code the OTP routes accept from then on.
async fn web_done(State(sh): State<Shared>, req: Request) -> Response {
    let id = query_param(req.uri().query(), "authId").and_then(|v| v.parse::<u64>().ok());
    let mut st = sh.lock();
    let Some(left) = id.and_then(|id| st.web_logins.get_mut(&id)) else {
        return error_response(StatusCode::NOT_FOUND, "Not found");
    };
    if *left > 0 {
        *left -= 1;
        let mut resp = StatusCode::ACCEPTED.into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    }
    let code = format!("web-{}", id.unwrap_or_default());
    st.otps.push(FakeOtp::new(code.clone()));
    json_response(StatusCode::OK, &json!({ "token": code }))
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

/// `GET /<escaped name>`: the stored document with its `ETag`, or 304 on a matching `If-None-Match`.
async fn packument(
    State(sh): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (stored, private) = {
        let st = sh.lock();
        (
            st.packuments.get(&name).cloned(),
            st.private_packuments.contains(&name),
        )
    };
    if private {
        if let Some(resp) = bearer_rejection(&sh, &headers) {
            return resp;
        }
    }
    let Some(stored) = stored else {
        return error_response(StatusCode::NOT_FOUND, "Not found");
    };
    let etag = HeaderValue::from_str(&stored.etag).expect("etag value");
    if if_none_match(&headers, &stored.etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag),
        ],
        stored.body,
    )
        .into_response()
}

/// `If-None-Match` lists (weak or strong) the current ETag, or is `*`.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// `GET /-/npm/v1/attestations/<escaped name>@<version>`.
async fn attestations(State(sh): State<Shared>, Path(spec): Path<String>) -> Response {
    let found = spec.rfind('@').filter(|&i| i > 0).and_then(|i| {
        let key = (spec[..i].to_string(), spec[i + 1..].to_string());
        sh.lock().attestations.get(&key).cloned()
    });
    match found {
        Some(reply) => json_response(StatusCode::OK, &reply),
        None => error_response(StatusCode::NOT_FOUND, "Not found"),
    }
}

fn map_or_404(map: Option<BTreeMap<String, String>>) -> Response {
    match map {
        Some(m) => json_response(StatusCode::OK, &json!(m)),
        None => error_response(StatusCode::NOT_FOUND, "Not found"),
    }
}

/// `GET /-/user/<user>/package`. The decoded segment is looked up as is, so a client that kept the
/// `@` (sent `%40name`) finds nothing. The account `/-/whoami` names exists even without packages,
/// so it answers `{}` until [`FakeRegistry::set_user_packages`] gives it some.
async fn user_packages(State(sh): State<Shared>, Path(user): Path<String>) -> Response {
    let st = sh.lock();
    let known = st.user_packages.get(&user).cloned();
    let own = (st.username == user).then(BTreeMap::new);
    drop(st);
    map_or_404(known.or(own))
}

/// `GET /-/org/<org>/package`.
async fn org_packages(State(sh): State<Shared>, Path(org): Path<String>) -> Response {
    map_or_404(sh.lock().orgs.get(&org).map(|o| o.packages.clone()))
}

/// `GET /-/org/<org>/user`.
async fn org_roster(State(sh): State<Shared>, Path(org): Path<String>) -> Response {
    map_or_404(sh.lock().orgs.get(&org).map(|o| o.roster.clone()))
}

/// `GET /-/org/<org>/team?format=cli` → `["org:team", …]`.
async fn org_teams(State(sh): State<Shared>, Path(org): Path<String>) -> Response {
    let teams: Option<Vec<String>> = sh
        .lock()
        .orgs
        .get(&org)
        .map(|o| o.teams.keys().map(|t| format!("{org}:{t}")).collect());
    match teams {
        Some(t) => json_response(StatusCode::OK, &json!(t)),
        None => error_response(StatusCode::NOT_FOUND, "Not found"),
    }
}

/// `GET /-/team/<org>/<team>/package`.
async fn team_packages(
    State(sh): State<Shared>,
    Path((org, team)): Path<(String, String)>,
) -> Response {
    map_or_404(
        sh.lock()
            .orgs
            .get(&org)
            .and_then(|o| o.teams.get(&team))
            .cloned(),
    )
}

/// `GET /-/package/<escaped name>/trust`: bearer token, then a valid OTP, then the configurations.
async fn trust(State(sh): State<Shared>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let mut st = sh.lock();
    if let Some(resp) = credential_rejection(&st, &headers, TwoFactorRoute::Trust) {
        return resp;
    }
    if let Some(resp) = otp_rejection(&mut st, &headers, &sh.url) {
        return resp;
    }
    match st.trust.get(&name) {
        Some(configs) => json_response(StatusCode::OK, configs),
        None if st.packuments.contains_key(&name) => json_response(StatusCode::OK, &json!([])),
        None => error_response(StatusCode::NOT_FOUND, "Not found"),
    }
}

/// `POST /-/package/<escaped name>/access`: bearer token, then a valid OTP; records the body.
async fn access(
    State(sh): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = sh.lock();
    if let Some(resp) = credential_rejection(&st, &headers, TwoFactorRoute::Access) {
        return resp;
    }
    if let Some(resp) = otp_rejection(&mut st, &headers, &sh.url) {
        return resp;
    }
    if !st.packuments.contains_key(&name) && !st.trust.contains_key(&name) {
        return error_response(StatusCode::NOT_FOUND, "Not found");
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        return error_response(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    st.access_posts.push((name, parsed));
    json_response(StatusCode::OK, &json!({}))
}

// ---------------------------------------------------------------------------------------------------
// Server plumbing: a listener whose connections can be cut from a handler (Fault::Drop) or by stop().

fn spawn_server(listener: TcpListener, shared: &Shared, conns: &Conns) -> Running {
    let app = routes(shared).into_make_service_with_connect_info::<ConnMeta>();
    let listener = TrackedListener {
        inner: listener,
        conns: conns.clone(),
        wire: shared.wire.clone(),
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
    wire: Arc<AtomicU64>,
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
    ctl: Arc<ConnCtl>,
}

impl axum::serve::Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = ConnMeta;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, _peer)) => {
                    let ctl = Arc::new(ConnCtl::default());
                    {
                        let mut conns = lock(&self.conns);
                        conns.retain(|w| w.strong_count() > 0);
                        conns.push(Arc::downgrade(&ctl));
                    }
                    let io = TrackedStream {
                        inner: stream,
                        ctl: ctl.clone(),
                        wire: self.wire.clone(),
                    };
                    return (io, ConnMeta { ctl });
                }
                // EMFILE and the like: wait a little, as axum's own listener does.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        // Axum asks only to log where it listens; the connection's control is what handlers use.
        self.inner.local_addr()?;
        Ok(ConnMeta {
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
    /// The registry's count of bytes written to sockets.
    wire: Arc<AtomicU64>,
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
            let result = Pin::new(&mut this.inner).poll_write(cx, buf);
            if let Poll::Ready(Ok(n)) = result {
                this.wire.fetch_add(n as u64, Ordering::SeqCst);
            }
            return result;
        };
        let result = Pin::new(&mut this.inner).poll_write(cx, &buf[..allowed]);
        if let Poll::Ready(Ok(n)) = result {
            this.wire.fetch_add(n as u64, Ordering::SeqCst);
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
