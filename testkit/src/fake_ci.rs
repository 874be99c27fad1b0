//! An in-process fake of three CI providers' secrets APIs, served by axum on `127.0.0.1:0`, for the
//! tests of the CI-secret inventory (the watchdog lists CI secrets to find npm tokens hidden there).
//!
//! One server serves all three providers under path prefixes, so a test starts one [`FakeCi`]:
//!
//! - **GitHub REST** under `/github` ([`FakeCi::github_url`], used like a GitHub Enterprise `api_url`).
//!   Auth: `Authorization: Bearer <t>` or `Authorization: token <t>` ([`FakeCi::set_github_token`],
//!   default [`GITHUB_TOKEN`]); otherwise 401 `{"message":"Bad credentials",…}`. Routes (all GET):
//!   - `/repos/{owner}/{repo}/actions/secrets` → `{"total_count","secrets":[{name,created_at,updated_at}]}`
//!   - `/repos/{owner}/{repo}/actions/organization-secrets` → same shape: the owner org's Actions secrets
//!     the repo can see (visibility `all`; `private` when the repo is private; `selected` when selected)
//!   - `/repos/{owner}/{repo}/environments` → `{"total_count","environments":[{id,node_id,name,url,
//!     html_url,created_at,updated_at,protection_rules:[],deployment_branch_policy:null}]}`
//!   - `/repos/{owner}/{repo}/environments/{environment_name}/secrets` (name percent-decoded)
//!   - `/repos/{owner}/{repo}/dependabot/secrets`
//!   - `/orgs/{org}/actions/secrets`, `/orgs/{org}/dependabot/secrets` → secrets with `visibility`
//!     and, for `selected`, `selected_repositories_url`.
//!
//!   All are paginated with `per_page` (default 30, max 100, further capped by
//!   [`FakeCi::set_github_max_per_page`]) and `page` (1-based); a `Link` header with absolute URLs
//!   carries `rel="prev"`, `rel="next"`, `rel="last"`, `rel="first"` as they apply, keeping the
//!   request's other query parameters. An unknown repo or org is 404 `{"message":"Not Found",…}`;
//!   [`FakeCi::deny_github`] answers a chosen status for a path prefix (403 reads
//!   `Resource not accessible by personal access token`). Names of repos, orgs and environments
//!   match case-insensitively, as on GitHub.
//! - **CircleCI v2** under `/circleci/api/v2` ([`FakeCi::circleci_url`]). Auth: `Circle-Token: <t>`
//!   ([`FakeCi::set_circleci_token`], default [`CIRCLECI_TOKEN`]); otherwise 401
//!   `{"message":"You must log in first."}`. Routes:
//!   - `GET /context?owner-slug=gh/acme` (or `owner-id=<uuid>`) → `{"items":[{id,name,created_at}],
//!     "next_page_token":null|"…"}`; an owner nothing was added under is 404, neither parameter 400.
//!   - `GET /context/{context_id}/environment-variable` → items `{variable,created_at,updated_at,context_id}`
//!   - `GET /project/{project_slug}/envvar` with the slug raw (`gh/acme/widget`) or `%2F`-encoded →
//!     items `{name,value,created_at}` where `value` is `xxxx` plus the last four characters of the
//!     real value (which is kept only to build that mask). `github/` and `bitbucket/` slugs are read
//!     as `gh/` and `bb/`.
//!
//!   Every list follows `page-token=`; the tokens are opaque. Page size: [`FakeCi::set_circleci_page_size`]
//!   (default 20). [`FakeCi::set_circleci_repeat_page_token`] (or a queued [`Fault::RepeatPageToken`]
//!   for one answer) makes `next_page_token` repeat the token of the request (page one's own token on
//!   a first request), so a client without a guard loops forever. Unknown context or project: 404
//!   `{"message":"Not found."}`; [`FakeCi::deny_circleci`] for a chosen status.
//! - **GitLab v4** under `/gitlab/api/v4` ([`FakeCi::gitlab_url`]). Auth: `PRIVATE-TOKEN: <t>` or
//!   `Authorization: Bearer <t>` ([`FakeCi::set_gitlab_token`], default [`GITLAB_TOKEN`]); otherwise 401
//!   `{"message":"401 Unauthorized"}`. Routes: `GET /projects/:id/variables`, `GET /groups/:id/variables`
//!   where `:id` is the numeric id or the URL-encoded full path (`acme%2Fwidget`). The items carry the
//!   values, as GitLab's do (`{variable_type,key,value,protected,masked,hidden,raw,environment_scope,
//!   description}`), except that a hidden variable's value is `null`. Pagination: `page`, `per_page`
//!   (default 20, max 100, capped by [`FakeCi::set_gitlab_max_per_page`]); headers `x-page`,
//!   `x-per-page`, `x-next-page` and `x-prev-page` (empty at the ends), `x-total`, `x-total-pages`, and
//!   `Link` with `rel="prev"`/`"next"`/`"first"`/`"last"`. Unknown: 404 `{"message":"404 Project Not
//!   Found"}` (`Group` for groups); [`FakeCi::deny_gitlab`] answers e.g. 403 `{"message":"403 Forbidden"}`
//!   for a project or group path and everything below it.
//!
//! Common knobs:
//!
//! - Faults ([`Fault`]) are queued per path prefix of the full request path and query (e.g.
//!   `/github/repos/acme/widget`, or just `/gitlab`), and consumed one per matching request, before
//!   authentication: [`FakeCi::push_fault`]. Error bodies follow the provider the path belongs to.
//! - Every request is recorded ([`Recorded`]: method, path and query, lowercase headers, arrival
//!   time): [`FakeCi::requests`], [`FakeCi::requests_count`], [`FakeCi::requests_to`].
//! - Dropping the [`FakeCi`] shuts the server down.
//!
//! To extend it: add fields to the provider's state ([`GithubState`], [`CircleState`],
//! [`GitlabState`]), setters on [`FakeCi`] and a route in [`routes`]; faults, recording and
//! authentication then apply without further work.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The GitHub credential accepted unless told otherwise. Deliberately not shaped like a real token,
/// so that secret scanners leave the test sources alone.
pub const GITHUB_TOKEN: &str = "fake-ci-github-token-0123456789";
/// The CircleCI credential accepted unless told otherwise.
pub const CIRCLECI_TOKEN: &str = "fake-ci-circleci-token-0123456789";
/// The GitLab credential accepted unless told otherwise.
pub const GITLAB_TOKEN: &str = "fake-ci-gitlab-token-0123456789";

/// Path prefixes of the three providers on the fake's origin.
pub const GITHUB_PREFIX: &str = "/github";
pub const CIRCLECI_PREFIX: &str = "/circleci/api/v2";
pub const GITLAB_PREFIX: &str = "/gitlab/api/v4";

/// A timestamp for tests that do not care.
pub const DEFAULT_TIME: &str = "2025-01-01T00:00:00Z";

const GITHUB_DOCS: &str = "https://docs.github.com/rest";
const GITHUB_RATE_DOCS: &str =
    "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api";

/// A misbehaviour for one request; see [`FakeCi::push_fault`].
#[derive(Debug, Clone)]
pub enum Fault {
    /// This status with the provider's error body (GitHub `{"message","documentation_url","status"}`,
    /// CircleCI `{"message"}`, GitLab `{"message":"<code> <reason>"}`).
    Status(u16),
    /// GitHub's primary rate limit (`status` 403 or 429): `x-ratelimit-limit: 5000`,
    /// `x-ratelimit-remaining: 0`, `x-ratelimit-used: 5000`, `x-ratelimit-resource: core` and
    /// `x-ratelimit-reset` = now + `reset_in` in epoch seconds; body `API rate limit exceeded for …`.
    GithubRateLimit { reset_in: Duration, status: u16 },
    /// `status` (normally 429; GitHub also uses 403) with `retry-after: <secs>`. Under `/github` this
    /// is GitHub's secondary rate limit (`You have exceeded a secondary rate limit…`); under
    /// `/circleci` a JSON message; under `/gitlab` GitLab's plain-text `Retry later`.
    RetryAfter { status: u16, secs: u64 },
    /// CircleCI: the normal answer, but its `next_page_token` repeats the request's own token.
    /// Elsewhere it has no effect.
    RepeatPageToken,
    /// 200, `content-type: application/json`, a body that is not JSON (cut off mid-object).
    Garbage,
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// As on the wire, e.g. `/github/repos/acme/widget/actions/secrets?page=2`.
    pub path_and_query: String,
    /// Lowercase names; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

// ---------------------------------------------------------------------------------------------------
// State

/// Who may see an organization secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    All,
    /// Private (and internal) repositories of the org.
    Private,
    /// Only the repositories named when the secret was added.
    Selected,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::All => "all",
            Visibility::Private => "private",
            Visibility::Selected => "selected",
        }
    }
}

/// A GitHub secret's metadata (GitHub never serves values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GhSecret {
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
}

impl GhSecret {
    fn new(name: &str, created_at: &str, updated_at: &str) -> Self {
        GhSecret {
            name: name.to_string(),
            created_at: created_at.to_string(),
            updated_at: updated_at.to_string(),
        }
    }

    fn to_json(&self) -> Value {
        json!({"name": self.name, "created_at": self.created_at, "updated_at": self.updated_at})
    }
}

#[derive(Debug, Clone)]
pub struct GhEnvironment {
    pub id: u64,
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
    pub secrets: Vec<GhSecret>,
}

#[derive(Debug, Clone)]
pub struct GhRepo {
    pub owner: String,
    pub name: String,
    pub id: u64,
    pub private: bool,
    pub secrets: Vec<GhSecret>,
    pub environments: Vec<GhEnvironment>,
    pub dependabot: Vec<GhSecret>,
}

#[derive(Debug, Clone)]
pub struct GhOrgSecret {
    pub secret: GhSecret,
    pub visibility: Visibility,
    /// Lowercase repository names (without the owner) for [`Visibility::Selected`].
    pub selected: BTreeSet<String>,
}

#[derive(Debug, Clone, Default)]
pub struct GhOrg {
    /// As given first (case kept for URLs).
    pub login: String,
    pub actions: Vec<GhOrgSecret>,
    pub dependabot: Vec<GhOrgSecret>,
}

#[derive(Debug)]
pub struct GithubState {
    pub tokens: Vec<String>,
    pub max_per_page: usize,
    /// Keyed by lowercase `owner/repo`.
    pub repos: BTreeMap<String, GhRepo>,
    /// Keyed by lowercase login.
    pub orgs: BTreeMap<String, GhOrg>,
    /// `(path prefix relative to /github, status)`, first match wins.
    pub deny: Vec<(String, u16)>,
    next_id: u64,
}

#[derive(Debug, Clone)]
pub struct CcContextVar {
    pub variable: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone)]
pub struct CcContext {
    pub id: String,
    /// Normalised owner slug (`gh/acme`).
    pub owner_slug: String,
    pub name: String,
    pub created_at: String,
    pub vars: Vec<CcContextVar>,
}

/// A project environment variable. The value is private: it only feeds the `xxxx1234` mask.
#[derive(Debug, Clone)]
pub struct CcProjectVar {
    pub name: String,
    value: String,
    pub created_at: String,
}

impl CcProjectVar {
    /// What CircleCI shows instead of the value: four `x` and the value's last four characters.
    pub fn masked(&self) -> String {
        mask_circleci(&self.value)
    }
}

#[derive(Debug)]
pub struct CircleState {
    pub tokens: Vec<String>,
    pub page_size: usize,
    pub repeat_page_token: bool,
    /// Normalised owner slug → owner id (UUID-shaped).
    pub owners: BTreeMap<String, String>,
    pub contexts: Vec<CcContext>,
    /// Normalised project slug → variables.
    pub projects: BTreeMap<String, Vec<CcProjectVar>>,
    /// `(prefix of the decoded path and query relative to /circleci/api/v2, status)`.
    pub deny: Vec<(String, u16)>,
    next_id: u64,
}

/// A GitLab CI/CD variable, built with [`GitlabVar::new`] and the flag methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitlabVar {
    /// `env_var` or `file`.
    pub variable_type: String,
    pub key: String,
    pub value: String,
    pub protected: bool,
    pub masked: bool,
    pub hidden: bool,
    pub raw: bool,
    pub environment_scope: String,
    pub description: Option<String>,
}

impl GitlabVar {
    pub fn new(key: &str, value: &str) -> Self {
        GitlabVar {
            variable_type: "env_var".into(),
            key: key.to_string(),
            value: value.to_string(),
            protected: false,
            masked: false,
            hidden: false,
            raw: false,
            environment_scope: "*".into(),
            description: None,
        }
    }

    pub fn protected(mut self) -> Self {
        self.protected = true;
        self
    }

    pub fn masked(mut self) -> Self {
        self.masked = true;
        self
    }

    /// Masked and hidden: GitLab then leaves the value out of API answers (`"value": null`).
    pub fn hidden(mut self) -> Self {
        self.masked = true;
        self.hidden = true;
        self
    }

    pub fn raw(mut self) -> Self {
        self.raw = true;
        self
    }

    pub fn file(mut self) -> Self {
        self.variable_type = "file".into();
        self
    }

    pub fn scope(mut self, environment_scope: &str) -> Self {
        self.environment_scope = environment_scope.to_string();
        self
    }

    pub fn description(mut self, text: &str) -> Self {
        self.description = Some(text.to_string());
        self
    }

    fn to_json(&self) -> Value {
        let value = if self.hidden {
            Value::Null
        } else {
            Value::String(self.value.clone())
        };
        json!({
            "variable_type": self.variable_type,
            "key": self.key,
            "value": value,
            "protected": self.protected,
            "masked": self.masked,
            "hidden": self.hidden,
            "raw": self.raw,
            "environment_scope": self.environment_scope,
            "description": self.description,
        })
    }
}

/// A GitLab project or group.
#[derive(Debug, Clone)]
pub struct GlEntity {
    pub id: u64,
    /// Full path, e.g. `acme/sub/widget`.
    pub path: String,
    pub vars: Vec<GitlabVar>,
}

#[derive(Debug)]
pub struct GitlabState {
    pub tokens: Vec<String>,
    pub max_per_page: usize,
    pub projects: Vec<GlEntity>,
    pub groups: Vec<GlEntity>,
    /// `(full path prefix, status)`: applies to that project or group and everything below it.
    pub deny: Vec<(String, u16)>,
    next_project_id: u64,
    next_group_id: u64,
}

/// Everything the fake serves and remembers. Reachable through [`FakeCi::with_state`].
#[derive(Debug)]
pub struct FakeCiState {
    pub github: GithubState,
    pub circleci: CircleState,
    pub gitlab: GitlabState,
    /// `(prefix of the full path and query, fault)`, consumed front to back.
    pub faults: VecDeque<(String, Fault)>,
    pub requests: Vec<Recorded>,
}

impl Default for FakeCiState {
    fn default() -> Self {
        FakeCiState {
            github: GithubState {
                tokens: vec![GITHUB_TOKEN.to_string()],
                max_per_page: 100,
                repos: BTreeMap::new(),
                orgs: BTreeMap::new(),
                deny: Vec::new(),
                next_id: 1000,
            },
            circleci: CircleState {
                tokens: vec![CIRCLECI_TOKEN.to_string()],
                page_size: 20,
                repeat_page_token: false,
                owners: BTreeMap::new(),
                contexts: Vec::new(),
                projects: BTreeMap::new(),
                deny: Vec::new(),
                next_id: 1,
            },
            gitlab: GitlabState {
                tokens: vec![GITLAB_TOKEN.to_string()],
                max_per_page: 100,
                projects: Vec::new(),
                groups: Vec::new(),
                deny: Vec::new(),
                next_project_id: 1001,
                next_group_id: 2001,
            },
            faults: VecDeque::new(),
            requests: Vec::new(),
        }
    }
}

impl GithubState {
    fn repo(&self, owner: &str, repo: &str) -> Option<&GhRepo> {
        self.repos
            .get(&format!("{owner}/{repo}").to_ascii_lowercase())
    }

    fn repo_mut(&mut self, full_name: &str) -> &mut GhRepo {
        let key = full_name.to_ascii_lowercase();
        if !self.repos.contains_key(&key) {
            let (owner, name) = split_repo(full_name);
            self.next_id += 1;
            let repo = GhRepo {
                owner: owner.to_string(),
                name: name.to_string(),
                id: self.next_id,
                private: false,
                secrets: Vec::new(),
                environments: Vec::new(),
                dependabot: Vec::new(),
            };
            self.repos.insert(key.clone(), repo);
        }
        self.repos.get_mut(&key).expect("repo just inserted")
    }

    fn org_mut(&mut self, org: &str) -> &mut GhOrg {
        self.orgs
            .entry(org.to_ascii_lowercase())
            .or_insert_with(|| GhOrg {
                login: org.to_string(),
                ..GhOrg::default()
            })
    }

    fn environment_mut(&mut self, repo: &str, env: &str) -> &mut GhEnvironment {
        let position = |r: &GhRepo| {
            r.environments
                .iter()
                .position(|e| e.name.eq_ignore_ascii_case(env))
        };
        if position(self.repo_mut(repo)).is_none() {
            self.next_id += 1;
            let id = 100_000 + self.next_id;
            self.repo_mut(repo).environments.push(GhEnvironment {
                id,
                name: env.to_string(),
                created_at: DEFAULT_TIME.into(),
                updated_at: DEFAULT_TIME.into(),
                secrets: Vec::new(),
            });
        }
        let r = self.repo_mut(repo);
        let i = position(r).expect("environment just added");
        &mut r.environments[i]
    }
}

impl CircleState {
    fn owner_id(&mut self, slug: &str) -> String {
        let slug = normalise_slug(slug);
        if let Some(id) = self.owners.get(&slug) {
            return id.clone();
        }
        let id = uuid_from(&["owner", &slug]);
        self.owners.insert(slug, id.clone());
        id
    }
}

impl GitlabState {
    fn find(list: &[GlEntity], id: &str) -> Option<usize> {
        match id.parse::<u64>() {
            Ok(n) => list.iter().position(|e| e.id == n),
            Err(_) => list.iter().position(|e| e.path.eq_ignore_ascii_case(id)),
        }
    }

    fn entity_mut(&mut self, group: bool, path: &str) -> &mut GlEntity {
        let path = path.trim_matches('/');
        let (list, next) = if group {
            (&mut self.groups, &mut self.next_group_id)
        } else {
            (&mut self.projects, &mut self.next_project_id)
        };
        let i = match list.iter().position(|e| e.path.eq_ignore_ascii_case(path)) {
            Some(i) => i,
            None => {
                list.push(GlEntity {
                    id: *next,
                    path: path.to_string(),
                    vars: Vec::new(),
                });
                *next += 1;
                list.len() - 1
            }
        };
        &mut list[i]
    }

    fn denied(&self, key: &str) -> Option<u16> {
        let key = key.to_ascii_lowercase();
        self.deny.iter().find_map(|(p, status)| {
            let p = p.trim_matches('/').to_ascii_lowercase();
            (key == p || key.starts_with(&format!("{p}/"))).then_some(*status)
        })
    }
}

// ---------------------------------------------------------------------------------------------------
// The handle

/// What the handlers share.
#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<FakeCiState>>,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    origin: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeCiState> {
        // A test that panicked while holding the lock must not hide the state from the others.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Marks a request whose CircleCI answer must repeat its page token ([`Fault::RepeatPageToken`]).
#[derive(Clone, Copy)]
struct RepeatToken;

/// A running fake. Dropping it shuts the server down.
pub struct FakeCi {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    pub addr: SocketAddr,
    shared: Shared,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for FakeCi {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl FakeCi {
    /// All three providers on `http://127.0.0.1:<free port>`.
    pub async fn start() -> FakeCi {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let origin = format!("http://{addr}");
        let shared = Shared {
            state: Arc::new(Mutex::new(FakeCiState::default())),
            origin: origin.clone(),
        };
        let app = routes(&shared);
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        FakeCi {
            url: origin,
            addr,
            shared,
            shutdown: Some(tx),
        }
    }

    /// `http://127.0.0.1:PORT/github`: the `api_url` of a GitHub Enterprise-style client.
    pub fn github_url(&self) -> String {
        format!("{}{GITHUB_PREFIX}", self.url)
    }

    /// `http://127.0.0.1:PORT/circleci/api/v2`.
    pub fn circleci_url(&self) -> String {
        format!("{}{CIRCLECI_PREFIX}", self.url)
    }

    /// `http://127.0.0.1:PORT/gitlab/api/v4`.
    pub fn gitlab_url(&self) -> String {
        format!("{}{GITLAB_PREFIX}", self.url)
    }

    /// Read or change any part of the state.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut FakeCiState) -> R) -> R {
        f(&mut self.shared.lock())
    }

    // -----------------------------------------------------------------------------------------------
    // Faults and recording

    /// Queue a fault for the next request whose full path and query (e.g.
    /// `/circleci/api/v2/context?owner-slug=gh/acme`, as sent) starts with `path_prefix`. Each fault
    /// is used once; queue several for a persistent condition. Faults apply before authentication.
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

    /// Recorded requests whose full path and query starts with `prefix` (`/github`, `/gitlab/api/v4/groups`…).
    pub fn requests_to(&self, prefix: &str) -> Vec<Recorded> {
        self.with_state(|s| {
            s.requests
                .iter()
                .filter(|r| r.path_and_query.starts_with(prefix))
                .cloned()
                .collect()
        })
    }

    /// How many recorded requests start with `prefix`, faulted ones included.
    pub fn requests_count(&self, prefix: &str) -> usize {
        self.with_state(|s| {
            s.requests
                .iter()
                .filter(|r| r.path_and_query.starts_with(prefix))
                .count()
        })
    }

    pub fn clear_requests(&self) {
        self.with_state(|s| s.requests.clear());
    }

    // -----------------------------------------------------------------------------------------------
    // GitHub

    /// The only GitHub token accepted from now on.
    pub fn set_github_token(&self, token: &str) {
        self.with_state(|s| s.github.tokens = vec![token.to_string()]);
    }

    /// Cap `per_page` below GitHub's 100 (at least 1), so that a few items span several pages.
    pub fn set_github_max_per_page(&self, n: usize) {
        self.with_state(|s| s.github.max_per_page = n.clamp(1, 100));
    }

    /// Add (or change the privacy of) `owner/repo`; returns its id. The other repo setters add a
    /// missing repo as public.
    pub fn add_github_repo(&self, full_name: &str, private: bool) -> u64 {
        self.with_state(|s| {
            let r = s.github.repo_mut(full_name);
            r.private = private;
            r.id
        })
    }

    /// Add a repository Actions secret, or replace the one of that name.
    pub fn add_github_repo_secret(
        &self,
        repo: &str,
        name: &str,
        created_at: &str,
        updated_at: &str,
    ) {
        let secret = GhSecret::new(name, created_at, updated_at);
        self.with_state(|s| upsert_secret(&mut s.github.repo_mut(repo).secrets, secret));
    }

    /// Change a repository secret's `updated_at` (as a rotation would). Panics if it is missing.
    pub fn update_github_repo_secret(&self, repo: &str, name: &str, updated_at: &str) {
        self.with_state(|s| {
            let secret = s
                .github
                .repo_mut(repo)
                .secrets
                .iter_mut()
                .find(|x| x.name.eq_ignore_ascii_case(name))
                .unwrap_or_else(|| panic!("no secret {name} in {repo}"));
            secret.updated_at = updated_at.to_string();
        });
    }

    pub fn remove_github_repo_secret(&self, repo: &str, name: &str) -> bool {
        self.with_state(|s| remove_secret(&mut s.github.repo_mut(repo).secrets, name))
    }

    /// Add a deployment environment (kept if it exists); returns its id.
    pub fn add_github_environment(&self, repo: &str, env: &str) -> u64 {
        self.with_state(|s| s.github.environment_mut(repo, env).id)
    }

    /// Add an environment secret (the environment is added when missing).
    pub fn add_github_env_secret(
        &self,
        repo: &str,
        env: &str,
        name: &str,
        created_at: &str,
        updated_at: &str,
    ) {
        let secret = GhSecret::new(name, created_at, updated_at);
        self.with_state(|s| {
            upsert_secret(&mut s.github.environment_mut(repo, env).secrets, secret)
        });
    }

    pub fn remove_github_env_secret(&self, repo: &str, env: &str, name: &str) -> bool {
        self.with_state(|s| remove_secret(&mut s.github.environment_mut(repo, env).secrets, name))
    }

    /// Add a repository Dependabot secret, or replace the one of that name.
    pub fn add_github_dependabot_secret(
        &self,
        repo: &str,
        name: &str,
        created_at: &str,
        updated_at: &str,
    ) {
        let secret = GhSecret::new(name, created_at, updated_at);
        self.with_state(|s| upsert_secret(&mut s.github.repo_mut(repo).dependabot, secret));
    }

    pub fn remove_github_dependabot_secret(&self, repo: &str, name: &str) -> bool {
        self.with_state(|s| remove_secret(&mut s.github.repo_mut(repo).dependabot, name))
    }

    /// Make an org known (its secret lists answer `[]` instead of 404).
    pub fn add_github_org(&self, org: &str) {
        self.with_state(|s| {
            s.github.org_mut(org);
        });
    }

    /// Add an org Actions secret. `selected` names repositories (`widget` or `acme/widget`) and
    /// matters only for [`Visibility::Selected`].
    pub fn add_github_org_secret(
        &self,
        org: &str,
        name: &str,
        visibility: Visibility,
        selected: &[&str],
        created_at: &str,
        updated_at: &str,
    ) {
        let secret = org_secret(name, visibility, selected, created_at, updated_at);
        self.with_state(|s| upsert_org_secret(&mut s.github.org_mut(org).actions, secret));
    }

    /// Add an org Dependabot secret (same arguments as [`Self::add_github_org_secret`]).
    pub fn add_github_org_dependabot_secret(
        &self,
        org: &str,
        name: &str,
        visibility: Visibility,
        selected: &[&str],
        created_at: &str,
        updated_at: &str,
    ) {
        let secret = org_secret(name, visibility, selected, created_at, updated_at);
        self.with_state(|s| upsert_org_secret(&mut s.github.org_mut(org).dependabot, secret));
    }

    pub fn remove_github_org_secret(&self, org: &str, name: &str) -> bool {
        self.with_state(|s| {
            let list = &mut s.github.org_mut(org).actions;
            let before = list.len();
            list.retain(|x| !x.secret.name.eq_ignore_ascii_case(name));
            list.len() != before
        })
    }

    /// Answer `status` (after authentication) to every GitHub request whose decoded path and query,
    /// relative to `/github`, starts with `path_prefix` at a segment boundary, e.g.
    /// `deny_github("/repos/acme/vault", 403)` or `deny_github("/orgs/acme", 404)`.
    pub fn deny_github(&self, path_prefix: &str, status: u16) {
        self.with_state(|s| s.github.deny.push((path_prefix.to_string(), status)));
    }

    // -----------------------------------------------------------------------------------------------
    // CircleCI

    /// The only CircleCI token accepted from now on.
    pub fn set_circleci_token(&self, token: &str) {
        self.with_state(|s| s.circleci.tokens = vec![token.to_string()]);
    }

    /// Items per CircleCI page (at least 1; default 20).
    pub fn set_circleci_page_size(&self, n: usize) {
        self.with_state(|s| s.circleci.page_size = n.max(1));
    }

    /// While on, every CircleCI list answer repeats the request's page token as `next_page_token`.
    pub fn set_circleci_repeat_page_token(&self, on: bool) {
        self.with_state(|s| s.circleci.repeat_page_token = on);
    }

    /// Make an owner (`gh/acme`) known and return its id (stable for the slug), for `owner-id=`.
    pub fn add_circleci_owner(&self, owner_slug: &str) -> String {
        self.with_state(|s| s.circleci.owner_id(owner_slug))
    }

    /// Add a context under `owner_slug`; returns its id.
    pub fn add_circleci_context(&self, owner_slug: &str, name: &str, created_at: &str) -> String {
        self.with_state(|s| {
            let c = &mut s.circleci;
            c.owner_id(owner_slug);
            c.next_id += 1;
            let id = uuid_from(&["context", &c.next_id.to_string(), name]);
            c.contexts.push(CcContext {
                id: id.clone(),
                owner_slug: normalise_slug(owner_slug),
                name: name.to_string(),
                created_at: created_at.to_string(),
                vars: Vec::new(),
            });
            id
        })
    }

    /// Add a variable to a context (replacing one of that name). Panics on an unknown context.
    pub fn add_circleci_context_var(
        &self,
        context_id: &str,
        variable: &str,
        created_at: &str,
        updated_at: &str,
    ) {
        self.with_state(|s| {
            let ctx = s
                .circleci
                .contexts
                .iter_mut()
                .find(|c| c.id == context_id)
                .unwrap_or_else(|| panic!("no context {context_id}"));
            ctx.vars.retain(|v| v.variable != variable);
            ctx.vars.push(CcContextVar {
                variable: variable.to_string(),
                created_at: created_at.to_string(),
                updated_at: updated_at.to_string(),
            });
        });
    }

    pub fn remove_circleci_context_var(&self, context_id: &str, variable: &str) -> bool {
        self.with_state(|s| {
            let Some(ctx) = s.circleci.contexts.iter_mut().find(|c| c.id == context_id) else {
                return false;
            };
            let before = ctx.vars.len();
            ctx.vars.retain(|v| v.variable != variable);
            ctx.vars.len() != before
        })
    }

    /// Make a project (`gh/acme/widget`) known; its owner becomes known too.
    pub fn add_circleci_project(&self, slug: &str) {
        self.with_state(|s| {
            let slug = normalise_slug(slug);
            if let Some((owner, _)) = slug.rsplit_once('/') {
                s.circleci.owner_id(owner);
            }
            s.circleci.projects.entry(slug).or_default();
        });
    }

    /// Add a project environment variable (replacing one of that name). The value is only used to
    /// build the `xxxx` + last-four mask the API shows.
    pub fn add_circleci_project_var(&self, slug: &str, name: &str, value: &str, created_at: &str) {
        self.add_circleci_project(slug);
        self.with_state(|s| {
            let vars = s
                .circleci
                .projects
                .get_mut(&normalise_slug(slug))
                .expect("project just added");
            vars.retain(|v| v.name != name);
            vars.push(CcProjectVar {
                name: name.to_string(),
                value: value.to_string(),
                created_at: created_at.to_string(),
            });
        });
    }

    pub fn remove_circleci_project_var(&self, slug: &str, name: &str) -> bool {
        self.with_state(|s| {
            let Some(vars) = s.circleci.projects.get_mut(&normalise_slug(slug)) else {
                return false;
            };
            let before = vars.len();
            vars.retain(|v| v.name != name);
            vars.len() != before
        })
    }

    /// Answer `status` (after authentication) to CircleCI requests whose decoded path and query,
    /// relative to `/circleci/api/v2`, starts with `prefix` at a boundary, e.g.
    /// `/project/gh/acme/widget`, `/context/<id>` or `/context?owner-slug=gh/acme`.
    pub fn deny_circleci(&self, prefix: &str, status: u16) {
        self.with_state(|s| s.circleci.deny.push((prefix.to_string(), status)));
    }

    // -----------------------------------------------------------------------------------------------
    // GitLab

    /// The only GitLab token accepted from now on.
    pub fn set_gitlab_token(&self, token: &str) {
        self.with_state(|s| s.gitlab.tokens = vec![token.to_string()]);
    }

    /// Cap `per_page` below GitLab's 100 (at least 1).
    pub fn set_gitlab_max_per_page(&self, n: usize) {
        self.with_state(|s| s.gitlab.max_per_page = n.clamp(1, 100));
    }

    /// Add a project by full path (`acme/widget`); returns its id (kept if it exists).
    pub fn add_gitlab_project(&self, path: &str) -> u64 {
        self.with_state(|s| s.gitlab.entity_mut(false, path).id)
    }

    /// Add a group by full path (`acme`, `acme/sub`); returns its id (kept if it exists).
    pub fn add_gitlab_group(&self, path: &str) -> u64 {
        self.with_state(|s| s.gitlab.entity_mut(true, path).id)
    }

    /// Add a project variable (adding the project when missing); one with the same key and
    /// environment scope is replaced.
    pub fn add_gitlab_project_var(&self, project: &str, var: GitlabVar) {
        self.with_state(|s| upsert_gitlab_var(&mut s.gitlab.entity_mut(false, project).vars, var));
    }

    /// Add a group variable (adding the group when missing).
    pub fn add_gitlab_group_var(&self, group: &str, var: GitlabVar) {
        self.with_state(|s| upsert_gitlab_var(&mut s.gitlab.entity_mut(true, group).vars, var));
    }

    /// Remove every variable with this key (all scopes) from a project.
    pub fn remove_gitlab_project_var(&self, project: &str, key: &str) -> bool {
        self.with_state(|s| {
            let vars = &mut s.gitlab.entity_mut(false, project).vars;
            let before = vars.len();
            vars.retain(|v| v.key != key);
            vars.len() != before
        })
    }

    pub fn remove_gitlab_group_var(&self, group: &str, key: &str) -> bool {
        self.with_state(|s| {
            let vars = &mut s.gitlab.entity_mut(true, group).vars;
            let before = vars.len();
            vars.retain(|v| v.key != key);
            vars.len() != before
        })
    }

    pub fn gitlab_project_id(&self, path: &str) -> Option<u64> {
        self.with_state(|s| {
            GitlabState::find(&s.gitlab.projects, path).map(|i| s.gitlab.projects[i].id)
        })
    }

    pub fn gitlab_group_id(&self, path: &str) -> Option<u64> {
        self.with_state(|s| {
            GitlabState::find(&s.gitlab.groups, path).map(|i| s.gitlab.groups[i].id)
        })
    }

    /// Answer `status` (after authentication) for the project or group at `path` and everything
    /// below it (`acme` covers `acme/widget`), whether the request names it by path or by id.
    pub fn deny_gitlab(&self, path: &str, status: u16) {
        self.with_state(|s| s.gitlab.deny.push((path.to_string(), status)));
    }
}

// ---------------------------------------------------------------------------------------------------
// Helpers for the state

fn split_repo(full_name: &str) -> (&str, &str) {
    full_name
        .split_once('/')
        .unwrap_or_else(|| panic!("repository {full_name:?} is not owner/name"))
}

fn upsert_secret(list: &mut Vec<GhSecret>, secret: GhSecret) {
    match list
        .iter_mut()
        .find(|x| x.name.eq_ignore_ascii_case(&secret.name))
    {
        Some(x) => *x = secret,
        None => list.push(secret),
    }
}

fn remove_secret(list: &mut Vec<GhSecret>, name: &str) -> bool {
    let before = list.len();
    list.retain(|x| !x.name.eq_ignore_ascii_case(name));
    list.len() != before
}

fn org_secret(
    name: &str,
    visibility: Visibility,
    selected: &[&str],
    created_at: &str,
    updated_at: &str,
) -> GhOrgSecret {
    GhOrgSecret {
        secret: GhSecret::new(name, created_at, updated_at),
        visibility,
        selected: selected
            .iter()
            .map(|r| r.rsplit('/').next().unwrap_or(r).to_ascii_lowercase())
            .collect(),
    }
}

fn upsert_org_secret(list: &mut Vec<GhOrgSecret>, secret: GhOrgSecret) {
    match list
        .iter_mut()
        .find(|x| x.secret.name.eq_ignore_ascii_case(&secret.secret.name))
    {
        Some(x) => *x = secret,
        None => list.push(secret),
    }
}

fn upsert_gitlab_var(list: &mut Vec<GitlabVar>, var: GitlabVar) {
    match list
        .iter_mut()
        .find(|v| v.key == var.key && v.environment_scope == var.environment_scope)
    {
        Some(v) => *v = var,
        None => list.push(var),
    }
}

/// `github/acme/x` → `gh/acme/x`, `bitbucket/…` → `bb/…`, lowercase, no outer slashes.
fn normalise_slug(slug: &str) -> String {
    let slug = slug.trim_matches('/').to_ascii_lowercase();
    if let Some(rest) = slug.strip_prefix("github/") {
        format!("gh/{rest}")
    } else if let Some(rest) = slug.strip_prefix("bitbucket/") {
        format!("bb/{rest}")
    } else {
        slug
    }
}

/// `xxxx` and the last four characters of the value.
fn mask_circleci(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("xxxx{tail}")
}

/// A stable UUID-shaped string (version 4 layout) derived from the parts with FNV-1a; not random.
fn uuid_from(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut hex = String::new();
    for round in 0..2u8 {
        for p in parts {
            for b in p.bytes().chain([0, round]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        hex.push_str(&format!("{h:016x}"));
    }
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

// ---------------------------------------------------------------------------------------------------
// Routes

fn routes(sh: &Shared) -> Router {
    let github = Router::new()
        .route(
            "/repos/{owner}/{repo}/actions/secrets",
            get(gh_repo_secrets),
        )
        .route(
            "/repos/{owner}/{repo}/actions/organization-secrets",
            get(gh_repo_org_secrets),
        )
        .route("/repos/{owner}/{repo}/environments", get(gh_environments))
        .route(
            "/repos/{owner}/{repo}/environments/{env}/secrets",
            get(gh_env_secrets),
        )
        .route(
            "/repos/{owner}/{repo}/dependabot/secrets",
            get(gh_repo_dependabot),
        )
        .route("/orgs/{org}/actions/secrets", get(gh_org_actions))
        .route("/orgs/{org}/dependabot/secrets", get(gh_org_dependabot))
        .route_layer(middleware::from_fn_with_state(sh.clone(), github_gate));
    let circleci = Router::new()
        .route("/context", get(cc_contexts))
        .route("/context/{id}/environment-variable", get(cc_context_vars))
        .route("/project/{*rest}", get(cc_project))
        .route_layer(middleware::from_fn_with_state(sh.clone(), circleci_gate));
    let gitlab = Router::new()
        .route("/projects/{id}/variables", get(gl_project_vars))
        .route("/groups/{id}/variables", get(gl_group_vars))
        .route_layer(middleware::from_fn_with_state(sh.clone(), gitlab_gate));
    Router::new()
        .nest(GITHUB_PREFIX, github)
        .nest(CIRCLECI_PREFIX, circleci)
        .nest(GITLAB_PREFIX, gitlab)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(sh.clone(), record_and_fault))
        .with_state(sh.clone())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Github,
    Circleci,
    Gitlab,
    Other,
}

fn provider_of(path: &str) -> Provider {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?']))
    };
    if under(GITHUB_PREFIX) {
        Provider::Github
    } else if under(CIRCLECI_PREFIX) {
        Provider::Circleci
    } else if under(GITLAB_PREFIX) {
        Provider::Gitlab
    } else {
        Provider::Other
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn set_header(resp: &mut Response, name: &str, value: &str) {
    resp.headers_mut().insert(
        HeaderName::from_bytes(name.as_bytes()).expect("header name"),
        HeaderValue::from_str(value).expect("header value"),
    );
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or_else(|_| panic!("invalid status code {code}"))
}

fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

fn github_error(status: StatusCode) -> Response {
    let message = match status.as_u16() {
        401 => "Bad credentials",
        403 => "Resource not accessible by personal access token",
        404 => "Not Found",
        _ => reason(status),
    };
    json_response(
        status,
        &json!({
            "message": message,
            "documentation_url": GITHUB_DOCS,
            "status": status.as_u16().to_string(),
        }),
    )
}

fn circleci_error(status: StatusCode) -> Response {
    let message = match status.as_u16() {
        401 => "You must log in first.",
        404 => "Not found.",
        _ => reason(status),
    };
    circleci_message(status, message)
}

fn circleci_message(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "message": message }))
}

/// `{"message":"404 Project Not Found"}` and the like; `what` names the entity for 404s.
fn gitlab_error(status: StatusCode, what: Option<&str>) -> Response {
    let message = match (status.as_u16(), what) {
        (404, Some(what)) => format!("404 {what} Not Found"),
        (code, _) => format!("{code} {}", reason(status)),
    };
    json_response(status, &json!({ "message": message }))
}

fn provider_error(provider: Provider, status: StatusCode) -> Response {
    match provider {
        Provider::Github => github_error(status),
        Provider::Circleci => circleci_error(status),
        Provider::Gitlab => gitlab_error(status, None),
        Provider::Other => json_response(status, &json!({ "message": reason(status) })),
    }
}

async fn not_found(uri: Uri) -> Response {
    match provider_of(uri.path()) {
        // GitLab's answer for a route it does not have.
        Provider::Gitlab => {
            json_response(StatusCode::NOT_FOUND, &json!({"error": "404 Not Found"}))
        }
        p => provider_error(p, StatusCode::NOT_FOUND),
    }
}

fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn fault_response(provider: Provider, fault: Fault) -> Response {
    match fault {
        Fault::Status(code) => provider_error(provider, status_code(code)),
        Fault::GithubRateLimit { reset_in, status } => {
            let mut resp = json_response(
                status_code(status),
                &json!({
                    "message": "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, please include the request ID 0000:0000:0000000:0000000:00000000.",
                    "documentation_url": GITHUB_RATE_DOCS,
                }),
            );
            let reset = epoch_now() + reset_in.as_secs();
            set_header(&mut resp, "x-ratelimit-limit", "5000");
            set_header(&mut resp, "x-ratelimit-remaining", "0");
            set_header(&mut resp, "x-ratelimit-used", "5000");
            set_header(&mut resp, "x-ratelimit-reset", &reset.to_string());
            set_header(&mut resp, "x-ratelimit-resource", "core");
            resp
        }
        Fault::RetryAfter { status, secs } => {
            let status = status_code(status);
            let mut resp = match provider {
                Provider::Github => json_response(
                    status,
                    &json!({
                        "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                        "documentation_url": format!("{GITHUB_RATE_DOCS}#about-secondary-rate-limits"),
                    }),
                ),
                // Rack::Attack's throttled answer, which GitLab sends as is.
                Provider::Gitlab => (
                    status,
                    [(header::CONTENT_TYPE, "text/plain")],
                    "Retry later\n",
                )
                    .into_response(),
                _ => json_response(status, &json!({"message": "Rate limit exceeded"})),
            };
            set_header(&mut resp, "retry-after", &secs.to_string());
            resp
        }
        Fault::Garbage => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"total_count":3,"items":[{"name":"TRUNC"#,
        )
            .into_response(),
        Fault::RepeatPageToken => unreachable!("handled in record_and_fault"),
    }
}

/// The outermost layer: record the request, then apply the first queued fault for its path.
async fn record_and_fault(State(sh): State<Shared>, mut req: Request, next: Next) -> Response {
    let at = Instant::now();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let fault = {
        let mut st = sh.lock();
        st.requests.push(Recorded {
            method: req.method().to_string(),
            path_and_query: path_and_query.clone(),
            headers,
            at,
        });
        st.faults
            .iter()
            .position(|(p, _)| path_and_query.starts_with(p.as_str()))
            .and_then(|i| st.faults.remove(i))
            .map(|(_, f)| f)
    };
    match fault {
        None => next.run(req).await,
        Some(Fault::RepeatPageToken) => {
            req.extensions_mut().insert(RepeatToken);
            next.run(req).await
        }
        Some(f) => fault_response(provider_of(req.uri().path()), f),
    }
}

// ---------------------------------------------------------------------------------------------------
// Authentication and denial (route layers: they see the path relative to the provider's prefix)

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The token of `Authorization: <scheme> <token>` for one of the given schemes (case-insensitive).
fn authorization_token<'a>(headers: &'a HeaderMap, schemes: &[&str]) -> Option<&'a str> {
    let (scheme, token) = header_str(headers, "authorization")?.split_once(' ')?;
    schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
        .then(|| token.trim())
}

/// The decoded path and query, for matching deny prefixes.
fn decoded_target(uri: &Uri) -> String {
    let mut out = percent_decode(uri.path());
    if let Some(q) = uri.query() {
        out.push('?');
        out.push_str(&percent_decode(q));
    }
    out
}

/// `prefix` matches `target` when it is a prefix ending at a boundary (`/`, `?`, `&` or the end).
fn prefix_matches(target: &str, prefix: &str) -> bool {
    let (t, p) = (target.to_ascii_lowercase(), prefix.to_ascii_lowercase());
    match t.strip_prefix(&p) {
        Some(rest) => {
            rest.is_empty() || p.ends_with(['/', '?', '&']) || rest.starts_with(['/', '?', '&'])
        }
        None => false,
    }
}

async fn github_gate(State(sh): State<Shared>, req: Request, next: Next) -> Response {
    let token = authorization_token(req.headers(), &["bearer", "token"]);
    let denied = {
        let st = sh.lock();
        if !token.is_some_and(|t| st.github.tokens.iter().any(|v| v == t)) {
            return github_error(StatusCode::UNAUTHORIZED);
        }
        let target = decoded_target(req.uri());
        st.github
            .deny
            .iter()
            .find(|(p, _)| prefix_matches(&target, p))
            .map(|(_, s)| *s)
    };
    match denied {
        Some(code) => github_error(status_code(code)),
        None => next.run(req).await,
    }
}

async fn circleci_gate(State(sh): State<Shared>, req: Request, next: Next) -> Response {
    let token = header_str(req.headers(), "circle-token");
    let denied = {
        let st = sh.lock();
        if !token.is_some_and(|t| st.circleci.tokens.iter().any(|v| v == t)) {
            return circleci_error(StatusCode::UNAUTHORIZED);
        }
        let target = decoded_target(req.uri());
        st.circleci
            .deny
            .iter()
            .find(|(p, _)| prefix_matches(&target, p))
            .map(|(_, s)| *s)
    };
    match denied {
        Some(code) => circleci_error(status_code(code)),
        None => next.run(req).await,
    }
}

async fn gitlab_gate(State(sh): State<Shared>, req: Request, next: Next) -> Response {
    let token = header_str(req.headers(), "private-token")
        .or_else(|| authorization_token(req.headers(), &["bearer"]));
    let ok = token.is_some_and(|t| sh.lock().gitlab.tokens.iter().any(|v| v == t));
    if ok {
        next.run(req).await
    } else {
        gitlab_error(StatusCode::UNAUTHORIZED, None)
    }
}

// ---------------------------------------------------------------------------------------------------
// Query strings and pagination

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The query with `sets` replacing (or appended after) the parameters of those names.
fn query_with(pairs: &[(String, String)], sets: &[(&str, String)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some((_, new)) = sets.iter().find(|(name, _)| name == k) {
            out.append_pair(k, new);
        } else {
            out.append_pair(k, v);
        }
    }
    for (name, value) in sets {
        if !pairs.iter().any(|(k, _)| k == name) {
            out.append_pair(name, value);
        }
    }
    out.finish()
}

/// Decodes `%XX` escapes (not `+`); invalid escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn positive(pairs: &[(String, String)], name: &str) -> Option<usize> {
    param(pairs, name)
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n >= 1)
}

/// A GitHub list page: `{"total_count": N, key: [...]}` plus the `Link` header.
fn github_page(sh: &Shared, uri: &Uri, key: &str, items: Vec<Value>) -> Response {
    let pairs = query_pairs(uri.query());
    let cap = sh.lock().github.max_per_page;
    let per_page = positive(&pairs, "per_page").unwrap_or(30).min(100).min(cap);
    let page = positive(&pairs, "page").unwrap_or(1);
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    let start = (page - 1).saturating_mul(per_page).min(total);
    let end = start.saturating_add(per_page).min(total);
    let mut body = serde_json::Map::new();
    body.insert("total_count".into(), json!(total));
    body.insert(key.into(), Value::Array(items[start..end].to_vec()));
    let mut resp = json_response(StatusCode::OK, &Value::Object(body));

    let link = |n: usize, rel: &str| {
        let q = query_with(&pairs, &[("page", n.to_string())]);
        format!(
            "<{}{GITHUB_PREFIX}{}?{q}>; rel=\"{rel}\"",
            sh.origin,
            uri.path()
        )
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(link((page - 1).min(last), "prev"));
    }
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
    }
    if !links.is_empty() {
        set_header(&mut resp, "link", &links.join(", "));
    }
    resp
}

/// A CircleCI list page: `{"items": [...], "next_page_token": …}`.
fn circleci_page(sh: &Shared, req: &Request, items: Vec<Value>) -> Response {
    let pairs = query_pairs(req.uri().query());
    let token = param(&pairs, "page-token");
    let start = match token {
        None => 0,
        Some(t) => match decode_page_token(t) {
            Some(n) => n,
            None => return circleci_message(StatusCode::BAD_REQUEST, "Invalid page-token."),
        },
    };
    let (size, sticky) = {
        let st = sh.lock();
        (st.circleci.page_size, st.circleci.repeat_page_token)
    };
    let total = items.len();
    let start = start.min(total);
    let end = start.saturating_add(size).min(total);
    let repeat = sticky || req.extensions().get::<RepeatToken>().is_some();
    let next = if repeat {
        Some(token.map_or_else(|| page_token(start), str::to_string))
    } else if end < total {
        Some(page_token(end))
    } else {
        None
    };
    json_response(
        StatusCode::OK,
        &json!({"items": items[start..end], "next_page_token": next}),
    )
}

/// Opaque-looking page tokens: the hex of `offset=N`.
fn page_token(offset: usize) -> String {
    hex::encode(format!("offset={offset}"))
}

fn decode_page_token(token: &str) -> Option<usize> {
    let raw = String::from_utf8(hex::decode(token).ok()?).ok()?;
    raw.strip_prefix("offset=")?.parse().ok()
}

/// A GitLab list page: a JSON array plus the `x-*` and `Link` headers.
fn gitlab_page(sh: &Shared, uri: &Uri, items: Vec<Value>) -> Response {
    let pairs = query_pairs(uri.query());
    let cap = sh.lock().gitlab.max_per_page;
    let per_page = positive(&pairs, "per_page").unwrap_or(20).min(100).min(cap);
    let page = positive(&pairs, "page").unwrap_or(1);
    let total = items.len();
    let pages = total.div_ceil(per_page).max(1);
    let start = (page - 1).saturating_mul(per_page).min(total);
    let end = start.saturating_add(per_page).min(total);
    let mut resp = json_response(StatusCode::OK, &Value::Array(items[start..end].to_vec()));

    let link = |n: usize, rel: &str| {
        let q = query_with(
            &pairs,
            &[("page", n.to_string()), ("per_page", per_page.to_string())],
        );
        format!(
            "<{}{GITLAB_PREFIX}{}?{q}>; rel=\"{rel}\"",
            sh.origin,
            uri.path()
        )
    };
    let mut links = Vec::new();
    let prev = (page > 1).then(|| (page - 1).min(pages));
    let next = (page < pages).then_some(page + 1);
    if let Some(p) = prev {
        links.push(link(p, "prev"));
    }
    if let Some(n) = next {
        links.push(link(n, "next"));
    }
    links.push(link(1, "first"));
    links.push(link(pages, "last"));
    let num = |n: Option<usize>| n.map(|n| n.to_string()).unwrap_or_default();
    set_header(&mut resp, "x-page", &page.to_string());
    set_header(&mut resp, "x-per-page", &per_page.to_string());
    set_header(&mut resp, "x-next-page", &num(next));
    set_header(&mut resp, "x-prev-page", &num(prev));
    set_header(&mut resp, "x-total", &total.to_string());
    set_header(&mut resp, "x-total-pages", &pages.to_string());
    set_header(&mut resp, "link", &links.join(", "));
    resp
}

// ---------------------------------------------------------------------------------------------------
// GitHub handlers

/// A page of the items `f` lists for the repo named in the path, or a 404 when it is unknown.
fn repo_page(
    sh: &Shared,
    (owner, repo): (String, String),
    uri: &Uri,
    key: &str,
    f: impl FnOnce(&GithubState, &GhRepo) -> Vec<Value>,
) -> Response {
    let items = {
        let st = sh.lock();
        match st.github.repo(&owner, &repo) {
            Some(r) => f(&st.github, r),
            None => return github_error(StatusCode::NOT_FOUND),
        }
    };
    github_page(sh, uri, key, items)
}

fn secrets_json(list: &[GhSecret]) -> Vec<Value> {
    list.iter().map(GhSecret::to_json).collect()
}

/// `GET /repos/{owner}/{repo}/actions/secrets`.
async fn gh_repo_secrets(
    State(sh): State<Shared>,
    Path(names): Path<(String, String)>,
    uri: Uri,
) -> Response {
    repo_page(&sh, names, &uri, "secrets", |_, r| secrets_json(&r.secrets))
}

/// `GET /repos/{owner}/{repo}/actions/organization-secrets`: the owner org's Actions secrets this
/// repository can use, without `visibility` (GitHub's `actions-secret` shape).
async fn gh_repo_org_secrets(
    State(sh): State<Shared>,
    Path(names): Path<(String, String)>,
    uri: Uri,
) -> Response {
    repo_page(&sh, names, &uri, "secrets", |gh, r| {
        let Some(org) = gh.orgs.get(&r.owner.to_ascii_lowercase()) else {
            return Vec::new();
        };
        let name = r.name.to_ascii_lowercase();
        org.actions
            .iter()
            .filter(|s| match s.visibility {
                Visibility::All => true,
                Visibility::Private => r.private,
                Visibility::Selected => s.selected.contains(&name),
            })
            .map(|s| s.secret.to_json())
            .collect()
    })
}

/// `GET /repos/{owner}/{repo}/environments`.
async fn gh_environments(
    State(sh): State<Shared>,
    Path(names): Path<(String, String)>,
    uri: Uri,
) -> Response {
    let base = format!("{}{GITHUB_PREFIX}", sh.origin);
    repo_page(&sh, names, &uri, "environments", |_, r| {
        r.environments
            .iter()
            .map(|e| {
                let escaped = url::form_urlencoded::byte_serialize(e.name.as_bytes())
                    .collect::<String>()
                    .replace('+', "%20");
                json!({
                    "id": e.id,
                    "node_id": format!("EN_fake{}", e.id),
                    "name": e.name,
                    "url": format!("{base}/repos/{}/{}/environments/{escaped}", r.owner, r.name),
                    "html_url": format!(
                        "https://github.com/{}/{}/deployments/activity_log?environments_filter={escaped}",
                        r.owner, r.name
                    ),
                    "created_at": e.created_at,
                    "updated_at": e.updated_at,
                    "protection_rules": [],
                    "deployment_branch_policy": null,
                })
            })
            .collect()
    })
}

/// `GET /repos/{owner}/{repo}/environments/{environment_name}/secrets` (the name arrives decoded).
async fn gh_env_secrets(
    State(sh): State<Shared>,
    Path((owner, repo, env)): Path<(String, String, String)>,
    uri: Uri,
) -> Response {
    let items = {
        let st = sh.lock();
        let secrets = st.github.repo(&owner, &repo).and_then(|r| {
            r.environments
                .iter()
                .find(|e| e.name.eq_ignore_ascii_case(&env))
                .map(|e| secrets_json(&e.secrets))
        });
        match secrets {
            Some(items) => items,
            None => return github_error(StatusCode::NOT_FOUND),
        }
    };
    github_page(&sh, &uri, "secrets", items)
}

/// `GET /repos/{owner}/{repo}/dependabot/secrets`.
async fn gh_repo_dependabot(
    State(sh): State<Shared>,
    Path(names): Path<(String, String)>,
    uri: Uri,
) -> Response {
    repo_page(&sh, names, &uri, "secrets", |_, r| {
        secrets_json(&r.dependabot)
    })
}

fn org_secrets(sh: &Shared, org: &str, uri: &Uri, dependabot: bool) -> Response {
    let kind = if dependabot { "dependabot" } else { "actions" };
    let items = {
        let st = sh.lock();
        let Some(o) = st.github.orgs.get(&org.to_ascii_lowercase()) else {
            return github_error(StatusCode::NOT_FOUND);
        };
        let list = if dependabot {
            &o.dependabot
        } else {
            &o.actions
        };
        list.iter()
            .map(|s| {
                let mut v = s.secret.to_json();
                v["visibility"] = json!(s.visibility.as_str());
                if s.visibility == Visibility::Selected {
                    v["selected_repositories_url"] = json!(format!(
                        "{}{GITHUB_PREFIX}/orgs/{}/{kind}/secrets/{}/repositories",
                        sh.origin, o.login, s.secret.name
                    ));
                }
                v
            })
            .collect()
    };
    github_page(sh, uri, "secrets", items)
}

/// `GET /orgs/{org}/actions/secrets`.
async fn gh_org_actions(State(sh): State<Shared>, Path(org): Path<String>, uri: Uri) -> Response {
    org_secrets(&sh, &org, &uri, false)
}

/// `GET /orgs/{org}/dependabot/secrets`.
async fn gh_org_dependabot(
    State(sh): State<Shared>,
    Path(org): Path<String>,
    uri: Uri,
) -> Response {
    org_secrets(&sh, &org, &uri, true)
}

// ---------------------------------------------------------------------------------------------------
// CircleCI handlers

/// `GET /context?owner-slug=…|owner-id=…[&page-token=…]`.
async fn cc_contexts(State(sh): State<Shared>, req: Request) -> Response {
    let pairs = query_pairs(req.uri().query());
    let items = {
        let st = sh.lock();
        let c = &st.circleci;
        let slug = if let Some(slug) = param(&pairs, "owner-slug") {
            Some(normalise_slug(slug))
        } else if let Some(id) = param(&pairs, "owner-id") {
            c.owners
                .iter()
                .find(|(_, v)| v.eq_ignore_ascii_case(id))
                .map(|(k, _)| k.clone())
        } else {
            return circleci_message(
                StatusCode::BAD_REQUEST,
                "Must specify either owner-id or owner-slug.",
            );
        };
        let Some(slug) = slug.filter(|s| c.owners.contains_key(s)) else {
            return circleci_error(StatusCode::NOT_FOUND);
        };
        c.contexts
            .iter()
            .filter(|x| x.owner_slug == slug)
            .map(|x| json!({"id": x.id, "name": x.name, "created_at": x.created_at}))
            .collect()
    };
    circleci_page(&sh, &req, items)
}

/// `GET /context/{id}/environment-variable[?page-token=…]`.
async fn cc_context_vars(
    State(sh): State<Shared>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let items = {
        let st = sh.lock();
        let Some(ctx) = st.circleci.contexts.iter().find(|c| c.id == id) else {
            return circleci_error(StatusCode::NOT_FOUND);
        };
        ctx.vars
            .iter()
            .map(|v| {
                json!({
                    "variable": v.variable,
                    "created_at": v.created_at,
                    "updated_at": v.updated_at,
                    "context_id": ctx.id,
                })
            })
            .collect()
    };
    circleci_page(&sh, &req, items)
}

/// `GET /project/{slug}/envvar`, the slug raw (`gh/acme/widget`) or `%2F`-encoded.
async fn cc_project(State(sh): State<Shared>, Path(rest): Path<String>, req: Request) -> Response {
    let Some(slug) = rest.trim_start_matches('/').strip_suffix("/envvar") else {
        return circleci_error(StatusCode::NOT_FOUND);
    };
    let items = {
        let st = sh.lock();
        let Some(vars) = st.circleci.projects.get(&normalise_slug(slug)) else {
            return circleci_error(StatusCode::NOT_FOUND);
        };
        vars.iter()
            .map(|v| json!({"name": v.name, "value": v.masked(), "created_at": v.created_at}))
            .collect()
    };
    circleci_page(&sh, &req, items)
}

// ---------------------------------------------------------------------------------------------------
// GitLab handlers

fn gitlab_vars(sh: &Shared, group: bool, id: &str, uri: &Uri) -> Response {
    let what = if group { "Group" } else { "Project" };
    let items = {
        let st = sh.lock();
        let gl = &st.gitlab;
        let list = if group { &gl.groups } else { &gl.projects };
        let found = GitlabState::find(list, id).map(|i| &list[i]);
        let key = found.map_or(id, |e| e.path.as_str());
        if let Some(code) = gl.denied(key) {
            return gitlab_error(status_code(code), Some(what));
        }
        let Some(entity) = found else {
            return gitlab_error(StatusCode::NOT_FOUND, Some(what));
        };
        entity.vars.iter().map(GitlabVar::to_json).collect()
    };
    gitlab_page(sh, uri, items)
}

/// `GET /projects/:id/variables` (`:id` numeric or the URL-encoded full path, decoded by the router).
async fn gl_project_vars(State(sh): State<Shared>, Path(id): Path<String>, uri: Uri) -> Response {
    gitlab_vars(&sh, false, &id, &uri)
}

/// `GET /groups/:id/variables`.
async fn gl_group_vars(State(sh): State<Shared>, Path(id): Path<String>, uri: Uri) -> Response {
    gitlab_vars(&sh, true, &id, &uri)
}

// -------------------------------------------------------------------------------------------------
// What the client tests share besides the fake.

/// A token file as the daemon expects one (mode 0600), removed when dropped.
pub fn token_file(token: &str) -> tempfile::NamedTempFile {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(f, "{token}").expect("write token");
    std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    f
}
