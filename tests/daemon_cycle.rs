//! The daemon's cycle against the in-process fake registry, stepped by hand: first run, new tokens,
//! restarts, registry outages, recovery, a sink that is down. Every notification is caught by a webhook
//! receiver, so the assertions are about what a user would be sent.

mod daemon_support;
use testkit::fake_registry;
use testkit::secrets::{self, assert_absent};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::Router;
use daemon_support::{metric, Logs};
use fake_registry::{FakeRegistry, Fault};
use npm_watchdog::alerts::webhook::WebhookSinkConfig;
use npm_watchdog::checks::Group;
use npm_watchdog::config::{Config, HumanDuration};
use npm_watchdog::credential::Environment;
use npm_watchdog::daemon::Watchdog;
use npm_watchdog::finding::Severity;
use npm_watchdog::metrics::Metrics;
use npm_watchdog::runtime::Runtime;
use npm_watchdog::secret::SecretUrl;
use npm_watchdog::state::State;
use serde_json::{json, Value};

const SECRET: &str = "npm_DaemonCycleSecretToken_0123456789abcdef";

/// A webhook endpoint that records JSON bodies and answers with a settable status.
#[derive(Clone, Default)]
struct Hook {
    bodies: Arc<Mutex<Vec<Value>>>,
    /// Every request body as sent, accepted or not; never cleared.
    raw: Arc<Mutex<String>>,
    status: Arc<AtomicU16>,
}

impl Hook {
    async fn start() -> (Hook, String) {
        let hook = Hook::default();
        hook.status.store(200, Ordering::SeqCst);
        let app = Router::new()
            .fallback(|AxState(h): AxState<Hook>, body: String| async move {
                let code = h.status.load(Ordering::SeqCst);
                h.raw.lock().expect("lock").push_str(&body);
                if code == 200 {
                    if let Ok(v) = serde_json::from_str(&body) {
                        h.bodies.lock().expect("lock").push(v);
                    }
                }
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            })
            .with_state(hook.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (hook, url)
    }

    /// `STATUS check subject` of every notification received, then forget them.
    fn take(&self) -> Vec<String> {
        let mut b = self.bodies.lock().expect("lock");
        let out = b
            .iter()
            .flat_map(testkit::receiver::webhook_findings)
            .map(|v| {
                let mut s = format!(
                    "{} {} {}",
                    v["status"].as_str().unwrap_or("?").to_uppercase(),
                    v["check"].as_str().unwrap_or("?"),
                    v["subject"].as_str().unwrap_or("?")
                );
                if v["reminder"] == json!(true) {
                    s.push_str(" (reminder)");
                }
                s
            })
            .collect();
        b.clear();
        out
    }

    fn raw(&self) -> String {
        self.raw.lock().expect("lock").clone()
    }
}

/// The fixtures' expiry: 16 days ahead, on a whole second, so that a token stays live (an expired
/// token is not judged) and its lifetime (24 days) stays within `policy.token_max_lifetime`.
fn fixture_expiry() -> chrono::DateTime<chrono::Utc> {
    let t = chrono::Utc::now() + chrono::Duration::days(16);
    chrono::DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

fn token(key: &str, name: &str, bypass: bool) -> Value {
    let expiry = fixture_expiry();
    let created = expiry - chrono::Duration::days(24);
    let iso =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({
        "name": name, "key": key, "token": "npm_ab...yz", "cidr": null, "bypass_2fa": bypass,
        "created": iso(created), "expiry": iso(expiry),
        "permissions": [{"name": "package", "action": "write"}], "revoked": null
    })
}

struct Setup {
    registry: FakeRegistry,
    hook: Hook,
    hook_url: String,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        let registry = FakeRegistry::start().await;
        registry.set_valid_tokens(vec![SECRET.to_string()]);
        registry.set_username("alice");
        registry.set_profile(
            json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}),
        );
        registry.set_page_size(2);
        let (hook, hook_url) = Hook::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("token"), format!("{SECRET}\n")).expect("write token");
        Setup {
            registry,
            hook,
            hook_url,
            dir,
        }
    }

    fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    /// A fresh daemon over the same state file: what a restart does.
    fn watchdog(&self) -> Arc<Watchdog> {
        self.watchdog_with(|_| {})
    }

    /// As [`watchdog`](Self::watchdog), with the config adjusted first.
    fn watchdog_with(&self, adjust: impl FnOnce(&mut Config)) -> Arc<Watchdog> {
        let mut cfg = Config::default();
        cfg.registry.url = Some(url::Url::parse(&self.registry.url).expect("url"));
        cfg.registry.token_file = Some(self.dir.path().join("token"));
        cfg.registry.retries = 0;
        cfg.policy.blind_after = 2;
        cfg.state.path = Some(self.state_path());
        cfg.alerts.webhook.push(WebhookSinkConfig {
            name: None,
            url: SecretUrl::new(url::Url::parse(&self.hook_url).expect("url")),
            secret_file: None,
            min_severity: Severity::Info,
            checks: Vec::new(),
            exclude_checks: Vec::new(),
            repeat_interval: None,
            group_by: None,
            max_items: None,
            group_wait: None,
            timeout: HumanDuration::secs(5),
        });
        adjust(&mut cfg);
        let rt = Runtime::new(cfg, Environment::default()).expect("runtime");
        let state = State::open(&self.state_path()).expect("state");
        Arc::new(Watchdog::new(rt, state, Metrics::new()).expect("watchdog"))
    }
}

async fn cycle(wd: &Arc<Watchdog>) {
    cycle_group(wd, Group::Tokens).await;
}

async fn cycle_group(wd: &Arc<Watchdog>, group: Group) {
    wd.run_group(group).await;
    wd.outbox().dispatch().await;
}

#[tokio::test]
async fn first_run_new_token_restart_outage_and_recovery() {
    let s = Setup::new().await;
    s.registry.set_tokens(vec![
        token("aaaaaa11111111111111", "old-one", false),
        token("bbbbbb22222222222222", "old-two", false),
        token("cccccc33333333333333", "old-three", false),
    ]);

    // First run: existing tokens are present, not "created".
    let wd = s.watchdog();
    cycle(&wd).await;
    let mut got = s.hook.take();
    got.sort();
    assert_eq!(
        got,
        vec![
            "FIRING token-present token aaaaaa (old-one)",
            "FIRING token-present token bbbbbb (old-two)",
            "FIRING token-present token cccccc (old-three)",
            "FIRING token-unrestricted token aaaaaa (old-one)",
            "FIRING token-unrestricted token bbbbbb (old-two)",
            "FIRING token-unrestricted token cccccc (old-three)",
        ]
    );
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}"
        )
        .as_deref(),
        Some("1")
    );
    // Three tokens over pages of two: the second page came through `urls.next`.
    assert!(s.registry.requests_to("/-/npm/v1/tokens").len() >= 2);

    // Nothing changed: nothing sent.
    cycle(&wd).await;
    assert!(s.hook.take().is_empty());

    // A bypass-2FA token appears.
    let mut tokens = vec![
        token("aaaaaa11111111111111", "old-one", false),
        token("bbbbbb22222222222222", "old-two", false),
        token("cccccc33333333333333", "old-three", false),
        token("dddddd44444444444444", "bulk-hardening", true),
    ];
    s.registry.set_tokens(tokens.clone());
    cycle(&wd).await;
    let mut got = s.hook.take();
    got.sort();
    assert_eq!(
        got,
        vec![
            "FIRING token-bypass-2fa token dddddd (bulk-hardening)",
            "FIRING token-created token dddddd (bulk-hardening)",
            "FIRING token-present token dddddd (bulk-hardening)",
            "FIRING token-unrestricted token dddddd (bulk-hardening)",
        ]
    );

    // Restart: no duplicate FIRING, and the same token is not "created" again.
    drop(wd);
    let wd = s.watchdog();
    cycle(&wd).await;
    assert!(s.hook.take().is_empty());

    // A token created while the daemon was down is still reported as created.
    drop(wd);
    tokens.push(token("eeeeee55555555555555", "while-down", false));
    s.registry.set_tokens(tokens.clone());
    let wd = s.watchdog();
    cycle(&wd).await;
    assert!(s
        .hook
        .take()
        .contains(&"FIRING token-created token eeeeee (while-down)".to_string()));

    // Registry outage: check fails, nothing resolves; blind after two failed runs.
    s.registry.push_faults("/-/npm/v1", Fault::Status(500), 100);
    cycle(&wd).await;
    assert!(
        s.hook.take().is_empty(),
        "an outage must not resolve anything"
    );
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}"
        )
        .as_deref(),
        Some("0")
    );
    cycle(&wd).await;
    assert_eq!(
        s.hook.take(),
        vec!["FIRING watchdog-blind check group tokens"]
    );
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_findings{check=\"token-present\",severity=\"warning\"}"
        )
        .as_deref(),
        Some("5"),
        "findings are kept while blind"
    );

    // Recovery, and meanwhile two tokens were revoked.
    s.registry.clear_faults();
    tokens.retain(|t| t["key"] != "aaaaaa11111111111111" && t["key"] != "dddddd44444444444444");
    s.registry.set_tokens(tokens);
    cycle(&wd).await;
    let mut got = s.hook.take();
    got.sort();
    assert_eq!(
        got,
        vec![
            "RESOLVED token-bypass-2fa token dddddd (bulk-hardening)",
            "RESOLVED token-present token aaaaaa (old-one)",
            "RESOLVED token-present token dddddd (bulk-hardening)",
            "RESOLVED token-unrestricted token aaaaaa (old-one)",
            "RESOLVED token-unrestricted token dddddd (bulk-hardening)",
            "RESOLVED watchdog-blind check group tokens",
        ]
    );
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}"
        )
        .as_deref(),
        Some("1")
    );
    let db = s.state_path().display().to_string();
    assert_absent(
        &[SECRET],
        [
            ("/metrics".to_string(), wd.metrics().render()),
            ("webhook bodies".to_string(), s.hook.raw()),
            (db, secrets::file_text(&s.state_path())),
        ],
    );
}

#[tokio::test]
async fn a_down_sink_keeps_notifications_until_it_is_back_and_sends_each_once() {
    let s = Setup::new().await;
    s.registry
        .set_tokens(vec![token("ffffff66666666666666", "laptop", false)]);
    s.hook.status.store(503, Ordering::SeqCst);
    let wd = s.watchdog();
    cycle(&wd).await;
    assert!(s.hook.take().is_empty());
    // The token's two findings are one message (grouped by check group).
    assert_eq!(
        metric(&wd, "npm_watchdog_notification_queue{sink=\"webhook\"}").as_deref(),
        Some("1")
    );
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_notifications_total{outcome=\"failed\",sink=\"webhook\"}"
        )
        .as_deref(),
        Some("1")
    );

    // Restart while the sink is still down: the outbox survives.
    drop(wd);
    s.hook.status.store(200, Ordering::SeqCst);
    let wd = s.watchdog();
    // Not due yet (backoff): nothing is sent early.
    wd.outbox().dispatch().await;
    assert!(s.hook.take().is_empty());
    wd.outbox()
        .dispatch_at(chrono::Utc::now() + chrono::Duration::minutes(1))
        .await;
    let mut got = s.hook.take();
    got.sort();
    assert_eq!(
        got,
        vec![
            "FIRING token-present token ffffff (laptop)",
            "FIRING token-unrestricted token ffffff (laptop)"
        ]
    );
    wd.outbox()
        .dispatch_at(chrono::Utc::now() + chrono::Duration::minutes(2))
        .await;
    cycle(&wd).await;
    assert!(
        s.hook.take().is_empty(),
        "each notification is delivered once"
    );
    assert_eq!(
        metric(&wd, "npm_watchdog_notification_queue{sink=\"webhook\"}").as_deref(),
        Some("0")
    );
}

/// npmjs.com keeps listing a token after its expiry. Once expired it can do nothing: its findings
/// resolve, saying it expired; no finding fires for it again; it is counted as `state="expired"`.
#[tokio::test]
async fn an_expired_token_is_still_listed_but_no_longer_judged() {
    let s = Setup::new().await;
    let expiry = chrono::Utc::now() + chrono::Duration::seconds(2);
    let mut expiring = token("eeeeee55555555555555", "nightly", true);
    expiring["expiry"] = json!(expiry.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    s.registry.set_tokens(vec![
        expiring,
        token("aaaaaa11111111111111", "old-one", false),
    ]);
    let wd = s.watchdog();
    cycle(&wd).await;
    assert_eq!(
        sorted(s.hook.take()),
        vec![
            "FIRING token-bypass-2fa token eeeeee (nightly)",
            "FIRING token-present token aaaaaa (old-one)",
            "FIRING token-present token eeeeee (nightly)",
            "FIRING token-unrestricted token aaaaaa (old-one)",
            "FIRING token-unrestricted token eeeeee (nightly)",
        ]
    );

    // The registry lists it unchanged after its expiry, as npmjs.com does.
    while chrono::Utc::now() <= expiry {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cycle(&wd).await;
    let resolved: Vec<Value> = s
        .hook
        .bodies
        .lock()
        .expect("lock")
        .iter()
        .flat_map(testkit::receiver::webhook_findings)
        .collect();
    assert_eq!(
        sorted(s.hook.take()),
        vec![
            "RESOLVED token-bypass-2fa token eeeeee (nightly)",
            "RESOLVED token-present token eeeeee (nightly)",
            "RESOLVED token-unrestricted token eeeeee (nightly)",
        ]
    );
    for body in &resolved {
        let why = body["resolution"].as_str().unwrap_or_default();
        assert!(why.starts_with("the token expired on "), "{body}");
    }
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_tokens{access=\"read-write\",bypass_2fa=\"true\",state=\"expired\"}"
        )
        .as_deref(),
        Some("1")
    );
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_tokens{access=\"read-write\",bypass_2fa=\"false\",state=\"live\"}"
        )
        .as_deref(),
        Some("1")
    );

    // Still listed, still expired: nothing more, and a restart does not bring it back.
    cycle(&wd).await;
    assert!(s.hook.take().is_empty());
    drop(wd);
    let wd = s.watchdog();
    cycle(&wd).await;
    assert!(s.hook.take().is_empty());
}

#[tokio::test]
async fn a_rejected_credential_is_never_read_as_no_tokens() {
    let s = Setup::new().await;
    s.registry
        .set_tokens(vec![token("abcdef77777777777777", "ci", false)]);
    let wd = s.watchdog();
    cycle(&wd).await;
    assert_eq!(s.hook.take().len(), 2);
    // The token is revoked server-side: every request is now 401.
    s.registry.set_valid_tokens(vec!["something-else".into()]);
    s.registry.set_tokens(vec![]);
    cycle(&wd).await;
    cycle(&wd).await;
    assert_eq!(
        s.hook.take(),
        vec!["FIRING watchdog-blind check group tokens"]
    );
    let health = wd.state().group_health().expect("health");
    let err = health[0].last_error.clone().unwrap_or_default();
    assert!(err.contains("unauthorized (401)"), "{err}");
    assert_absent(&[SECRET], [("the group's last error", &err)]);
}

/// npmjs.com keeps listing a token after its expiry, but no longer takes it as a credential: the
/// daemon's own expired token is a refusal counted as `unauthorized`, never "no tokens", and the
/// error says which credential to replace.
#[tokio::test]
async fn an_expired_read_credential_is_refused_and_named() {
    let s = Setup::new().await;
    s.registry
        .set_tokens(vec![token("abcdef78787878787878", "ci", false)]);
    let wd = s.watchdog_with(|c| c.watch.own_account = false);
    cycle(&wd).await;
    assert_eq!(s.hook.take().len(), 2);
    s.registry.expire_credential(SECRET);
    cycle(&wd).await;
    cycle(&wd).await;
    assert_eq!(
        s.hook.take(),
        vec!["FIRING watchdog-blind check group tokens"],
        "nothing resolved: a refusal is not an empty list"
    );
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_check_errors_total{check=\"tokens\",group=\"tokens\",reason=\"unauthorized\"}"
        )
        .as_deref(),
        Some("4")
    );
    let health = wd.state().group_health().expect("health");
    let err = health[0].last_error.clone().unwrap_or_default();
    assert!(
        err.contains("unauthorized (401): the credential was rejected: token expired")
            && err.contains("the registry refused the read credential itself"),
        "{err}"
    );
    assert_absent(&[SECRET], [("the group's last error", &err)]);
}

/// A read credential without permission on an org (a granular token that does not name it) gets
/// 403: the stored view still judges, nothing resolves, and the refusal is counted as `forbidden` and
/// names the credential and what it lacks.
#[tokio::test]
async fn an_org_list_refused_to_the_read_credential_keeps_the_stored_view() {
    let s = Setup::new().await;
    s.registry
        .set_org_packages("acme", [("@acme/widget", "write")]);
    s.registry
        .set_org_roster("acme", [("alice", "owner"), ("bob", "developer")]);
    s.registry.set_org_teams("acme", &["developers"]);
    s.registry
        .set_team_packages("acme", "developers", [("@acme/widget", "write")]);
    let wd = s.watchdog_with(|c| {
        c.watch.orgs = vec!["acme".into()];
        c.policy.expected_owners = vec!["alice".into()];
    });
    cycle_group(&wd, Group::Org).await;
    assert_eq!(
        s.hook.take(),
        vec!["FIRING team-write-access team @acme:developers"]
    );
    s.registry
        .push_faults("/-/org/acme/team", Fault::Status(403), 50);
    cycle_group(&wd, Group::Org).await;
    assert!(s.hook.take().is_empty(), "nothing resolved on a refusal");
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_check_errors_total{check=\"org\",group=\"org\",reason=\"forbidden\"}"
        )
        .as_deref(),
        Some("1")
    );
    let error = last_error(&wd, "org");
    assert!(
        error.contains("forbidden (403): Forbidden; the read credential may not read this"),
        "{error}"
    );
    // Back: the same view, nothing fires again.
    s.registry.clear_faults();
    cycle_group(&wd, Group::Org).await;
    assert!(s.hook.take().is_empty());
}

/// The last error the state holds for `group`'s runs ("" when none).
fn last_error(wd: &Watchdog, group: &str) -> String {
    wd.state()
        .group_health()
        .expect("health")
        .into_iter()
        .find(|h| h.group == group)
        .and_then(|h| h.last_error)
        .unwrap_or_default()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// `server.package_series = false` drops the per-package series; the findings still report every
/// untrusted publish.
#[tokio::test]
async fn package_series_can_be_turned_off_without_losing_findings() {
    use fake_registry::packument_doc;
    let s = Setup::new().await;
    s.registry.add_packument(
        "@acme/widget",
        packument_doc(
            "@acme/widget",
            &[("1.0.0", "2026-11-01T00:00:00.000Z", None, "alice")],
            &["alice"],
        ),
    );
    let wd = s.watchdog_with(|c| {
        c.watch.packages = vec!["@acme/widget".into()];
        c.server.package_series = false;
    });
    cycle_group(&wd, Group::Packages).await;
    let text = wd.metrics().render();
    assert!(
        !text.contains("npm_watchdog_package_latest_trusted_publish{"),
        "{text}"
    );
    assert_eq!(
        s.hook.take(),
        vec!["FIRING publish-untrusted version @acme/widget@1.0.0"]
    );
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_findings{check=\"publish-untrusted\",severity=\"critical\"}"
        )
        .as_deref(),
        Some("1")
    );
}

/// The stored copies keep only versions after `policy.trusted_publishing_since` (and the latest).
/// Moving the cutoff earlier makes the next cycle read the documents whole again instead of taking a
/// 304 for a copy that lacks the versions now in scope, so an older token publish is reported.
#[tokio::test]
async fn an_earlier_cutoff_reads_the_documents_again() {
    use fake_registry::packument_doc;
    let s = Setup::new().await;
    s.registry.add_packument(
        "@acme/widget",
        packument_doc(
            "@acme/widget",
            &[
                ("1.0.0", "2025-06-01T00:00:00.000Z", None, "mallory"),
                (
                    "2.0.0",
                    "2026-02-01T00:00:00.000Z",
                    Some("github"),
                    "GitHub Actions",
                ),
            ],
            &["alice"],
        ),
    );
    let wd = s.watchdog_with(|c| c.watch.packages = vec!["@acme/widget".into()]);
    cycle_group(&wd, Group::Packages).await;
    assert!(s.hook.take().is_empty());
    // Unchanged: a conditional read answered 304.
    cycle_group(&wd, Group::Packages).await;
    assert!(s.hook.take().is_empty());
    let conditional = |reg: &FakeRegistry| {
        reg.requests()
            .iter()
            .filter(|r| r.path_and_query.starts_with("/@acme"))
            .map(|r| r.headers.contains_key("if-none-match"))
            .collect::<Vec<_>>()
    };
    assert_eq!(conditional(&s.registry), vec![false, true]);

    let mut cfg = wd.live().rt.config.clone();
    cfg.policy.trusted_publishing_since =
        chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
    wd.apply(Runtime::new(cfg, Environment::default()).expect("runtime"))
        .expect("reload");
    cycle_group(&wd, Group::Packages).await;
    assert_eq!(
        s.hook.take(),
        vec!["FIRING publish-untrusted version @acme/widget@1.0.0"]
    );
    assert_eq!(conditional(&s.registry), vec![false, true, false]);
    // Stored again with the new cutoff: conditional from now on.
    cycle_group(&wd, Group::Packages).await;
    assert!(s.hook.take().is_empty());
    assert_eq!(conditional(&s.registry), vec![false, true, false, true]);
}

/// `registry.concurrency` bounds the packument reads and the provenance reads alike, and both use
/// all of it: reads in flight never pass it and reach it.
#[tokio::test]
async fn package_reads_keep_to_registry_concurrency() {
    use fake_registry::packument_doc;
    let s = Setup::new().await;
    let names: Vec<String> = (0..24).map(|i| format!("@acme/p{i:02}")).collect();
    for name in &names {
        s.registry.add_packument(
            name,
            packument_doc(
                name,
                &[(
                    "1.0.0",
                    "2026-03-01T00:00:00.000Z",
                    Some("github"),
                    "GitHub Actions",
                )],
                &["alice"],
            ),
        );
    }
    s.registry.set_latency(Duration::from_millis(40));
    let wd = s.watchdog_with(|c| {
        c.watch.packages = names.clone();
        c.registry.concurrency = 4;
    });
    cycle_group(&wd, Group::Packages).await;
    let requests = s.registry.requests();
    let kind = |prefix: &str| {
        requests
            .iter()
            .filter(|r| r.path_and_query.starts_with(prefix))
            .count()
    };
    assert_eq!(
        kind("/-/npm/v1/attestations/"),
        24,
        "one provenance read per version"
    );
    assert_eq!(kind("/@acme%2fp"), 24, "one packument read per package");
    let most = s.registry.with_state(|st| st.max_in_flight.clone());
    assert_eq!(
        most.get("other"),
        Some(&4),
        "packument reads at once: {most:?}"
    );
    assert_eq!(
        most.get("attestations"),
        Some(&4),
        "provenance reads at once: {most:?}"
    );
}

#[tokio::test]
async fn packages_group_untrusted_publish_etags_outage_and_deprecation() {
    use fake_registry::packument_doc;
    let s = Setup::new().await;
    let trusted = (
        "1.0.0",
        "2026-02-01T00:00:00.000Z",
        Some("github"),
        "GitHub Actions",
    );
    s.registry.add_packument(
        "@acme/widget",
        packument_doc("@acme/widget", &[trusted], &["alice"]),
    );
    s.registry.add_packument(
        "left-pad-acme",
        packument_doc(
            "left-pad-acme",
            &[("0.1.0", "2025-06-01T00:00:00.000Z", None, "alice")],
            &["alice"],
        ),
    );
    s.registry
        .set_user_packages("alice", [("left-pad-acme", "write")]);
    let watch = |c: &mut Config| {
        c.watch.packages = vec!["@acme/widget".into()];
        c.watch.users = vec!["alice".into()];
    };
    let wd = s.watchdog_with(watch);
    assert_eq!(wd.active_groups(), vec![Group::Tokens, Group::Packages]);
    cycle_group(&wd, Group::Packages).await;
    // A trusted release and a release from before the cutoff: nothing to report.
    assert!(s.hook.take().is_empty());
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_check_success{check=\"packages\",group=\"packages\"}"
        )
        .as_deref(),
        Some("1")
    );
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_package_latest_trusted_publish{package=\"@acme/widget\"}"
        )
        .as_deref(),
        Some("1")
    );
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_package_latest_trusted_publish{package=\"left-pad-acme\"}"
        )
        .as_deref(),
        Some("0")
    );
    assert!(
        s.registry
            .requests()
            .iter()
            .any(|r| r.path_and_query == "/@acme%2fwidget"),
        "scoped names are escaped"
    );

    // Nothing changed: the second cycle is all 304s.
    cycle_group(&wd, Group::Packages).await;
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_registry_requests_total{code=\"304\",endpoint=\"packument\"}"
        )
        .as_deref(),
        Some("2")
    );
    assert!(s.hook.take().is_empty());

    // A version published with a token, and a new maintainer.
    let untrusted = ("1.1.0", "2026-11-26T01:00:00.000Z", None, "mallory");
    s.registry.add_packument(
        "@acme/widget",
        packument_doc("@acme/widget", &[trusted, untrusted], &["alice", "mallory"]),
    );
    cycle_group(&wd, Group::Packages).await;
    assert_eq!(
        sorted(s.hook.take()),
        vec![
            "FIRING maintainers-changed maintainers of @acme/widget",
            "FIRING publish-untrusted version @acme/widget@1.1.0",
        ]
    );
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_package_latest_trusted_publish{package=\"@acme/widget\"}"
        )
        .as_deref(),
        Some("0")
    );

    // The registry fails for that package: nothing resolves, the group reports the failure.
    s.registry
        .push_faults("/@acme%2fwidget", Fault::Status(500), 50);
    cycle_group(&wd, Group::Packages).await;
    assert!(
        s.hook.take().is_empty(),
        "a failed fetch must not resolve anything"
    );
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_check_success{check=\"packages\",group=\"packages\"}"
        )
        .as_deref(),
        Some("0")
    );

    // Back, and the version has been deprecated: the finding resolves.
    s.registry.clear_faults();
    let mut doc = packument_doc("@acme/widget", &[trusted, untrusted], &["alice", "mallory"]);
    doc["versions"]["1.1.0"]["deprecated"] = json!("compromised; use 1.0.0");
    s.registry.add_packument("@acme/widget", doc);
    cycle_group(&wd, Group::Packages).await;
    assert_eq!(
        s.hook.take(),
        vec!["RESOLVED publish-untrusted version @acme/widget@1.1.0"]
    );
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_check_success{check=\"packages\",group=\"packages\"}"
        )
        .as_deref(),
        Some("1")
    );
}

/// A cycle whose commit fails keeps nothing: not its findings, and not the stored copies it read
/// either. Were the new packument kept while the findings it causes were lost, the next cycle would
/// compare the registry with a copy that already holds the change, and never report it.
#[tokio::test]
async fn a_cycle_whose_commit_fails_keeps_nothing_and_the_next_one_reports_the_change() {
    use fake_registry::packument_doc;
    let s = Setup::new().await;
    let v1 = (
        "1.0.0",
        "2026-02-01T00:00:00.000Z",
        Some("github"),
        "GitHub Actions",
    );
    s.registry.add_packument(
        "@acme/widget",
        packument_doc("@acme/widget", &[v1], &["alice"]),
    );
    let wd = s.watchdog_with(|c| c.watch.packages = vec!["@acme/widget".into()]);
    cycle_group(&wd, Group::Packages).await;
    assert!(s.hook.take().is_empty());

    // The database refuses the cycle's commit, as a full disk or a read-only file would. The
    // trigger aborts the transaction that queues a notification; everything else in it is undone.
    let db = rusqlite::Connection::open(s.state_path()).expect("open state");
    db.execute_batch(
        "CREATE TRIGGER refuse_commit BEFORE INSERT ON outbox
         BEGIN SELECT RAISE(ABORT, 'disk full (injected)'); END;",
    )
    .expect("trigger");
    s.registry.add_packument(
        "@acme/widget",
        packument_doc("@acme/widget", &[v1], &["alice", "mallory"]),
    );
    cycle_group(&wd, Group::Packages).await;
    assert_eq!(
        metric(&wd, "npm_watchdog_state_write_errors_total").as_deref(),
        Some("1")
    );
    assert!(
        !s.hook
            .take()
            .iter()
            .any(|n| n.contains("maintainers-changed")),
        "nothing of the failed cycle is sent"
    );

    // Writable again: the change is still a change, and it is reported once.
    db.execute_batch("DROP TRIGGER refuse_commit;")
        .expect("drop trigger");
    cycle_group(&wd, Group::Packages).await;
    let sent = s.hook.take();
    assert_eq!(
        sent.iter()
            .filter(|n| n.contains("maintainers-changed"))
            .collect::<Vec<_>>(),
        vec!["FIRING maintainers-changed maintainers of @acme/widget"],
        "{sent:?}"
    );

    // The same holds after a restart: what the state kept is what the next process compares with.
    cycle_group(&wd, Group::Packages).await;
    assert!(s.hook.take().is_empty());
    drop(wd);
    let wd = s.watchdog_with(|c| c.watch.packages = vec!["@acme/widget".into()]);
    cycle_group(&wd, Group::Packages).await;
    assert!(s.hook.take().is_empty());
}

#[tokio::test]
async fn org_group_teams_owners_retired_accounts_and_a_missing_org() {
    let s = Setup::new().await;
    s.registry
        .set_org_packages("acme", [("@acme/widget", "write")]);
    s.registry.set_org_roster(
        "acme",
        [
            ("alice", "owner"),
            ("bob", "developer"),
            ("old-ci", "developer"),
        ],
    );
    s.registry
        .set_org_teams("acme", &["developers", "release-admins"]);
    s.registry.set_team_packages(
        "acme",
        "developers",
        [("@acme/widget", "write"), ("@acme/cli", "read")],
    );
    s.registry
        .set_team_packages("acme", "release-admins", [("@acme/widget", "write")]);
    let policy = |c: &mut Config| {
        c.watch.orgs = vec!["acme".into()];
        c.policy.write_teams = vec!["release-admins".into()];
        c.policy.expected_owners = vec!["alice".into()];
        c.policy.retired_accounts = vec!["old-ci".into()];
    };
    let wd = s.watchdog_with(policy);
    assert_eq!(
        wd.active_groups(),
        vec![Group::Tokens, Group::Packages, Group::Org]
    );
    cycle_group(&wd, Group::Org).await;
    assert_eq!(
        sorted(s.hook.take()),
        vec![
            "FIRING retired-account-active retired account old-ci in @acme",
            "FIRING team-write-access team @acme:developers"
        ]
    );

    // The team goes back to read-only: resolved.
    s.registry.set_team_packages(
        "acme",
        "developers",
        [("@acme/widget", "read"), ("@acme/cli", "read")],
    );
    cycle_group(&wd, Group::Org).await;
    assert_eq!(
        s.hook.take(),
        vec!["RESOLVED team-write-access team @acme:developers"]
    );

    // The roster cannot be read: the retired account's finding stays, the group fails.
    s.registry
        .push_faults("/-/org/acme/user", Fault::Status(503), 50);
    cycle_group(&wd, Group::Org).await;
    assert!(s.hook.take().is_empty());
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_check_success{check=\"org\",group=\"org\"}"
        )
        .as_deref(),
        Some("0")
    );
    s.registry.clear_faults();

    // A watched org that does not exist is an error for that org, never someone's user packages.
    drop(wd);
    let wd = s.watchdog_with(|c| {
        policy(c);
        c.watch.orgs.push("nope".into());
    });
    cycle_group(&wd, Group::Org).await;
    // The second failed org run in a row (blind_after = 2): the watchdog says it cannot see.
    assert_eq!(s.hook.take(), vec!["FIRING watchdog-blind check group org"]);
    let error = last_error(&wd, "org");
    assert!(
        error.contains("org nope: org_roster: not found (404)"),
        "{error}"
    );
    assert!(!s
        .registry
        .requests()
        .iter()
        .any(|r| r.path_and_query.starts_with("/-/user/nope")));
}

#[tokio::test]
async fn the_daemons_own_token_expiry_is_exported() {
    let s = Setup::new().await;
    let mut own = token("0123abcd99999999999", "watchdog", false);
    own["expiry"] = json!("2027-01-31T00:00:00.000Z");
    own["permissions"] = json!([{"name": "package", "action": "read"}]);
    s.registry.set_tokens(vec![own]);
    let wd = s.watchdog_with(|c| {
        c.policy.allow_tokens = vec![npm_watchdog::config::AllowToken {
            key_prefix: "0123abcd".into(),
            reason: "the watchdog's own read-only credential".into(),
            expires: None,
            own: true,
        }];
    });
    cycle(&wd).await;
    assert!(
        s.hook.take().is_empty(),
        "the allowlisted own token is not reported"
    );
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_credential_expiry_timestamp_seconds{token=\"0123ab\"}"
        )
        .as_deref(),
        Some("1801353600") // 2027-01-31T00:00:00Z
    );
}

/// The registry key npmjs.com lists a token under: the SHA-512 of its value, in hex.
fn registry_key_of(secret: &str) -> String {
    use sha2::{Digest, Sha512};
    hex::encode(Sha512::digest(secret.as_bytes()))
}

/// The fake lists the daemon's own credential under its SHA-512 key, as npmjs.com does. Not
/// allowlisted, it gets one `token-present` finding that says what it is (and none of the other token
/// checks'); its expiry is exported. Allowlisted (by a plain entry, without `self = true`), it is
/// quiet and still recognised.
#[tokio::test]
async fn the_daemons_own_token_is_recognised_by_its_sha512_key() {
    let s = Setup::new().await;
    let own_key = registry_key_of(SECRET);
    // A write token with no CIDR: the other token checks would fire for any other token like it.
    let own = token(&own_key, "watchdog", false);
    // The expiry the registry lists for it, as the metric must export it.
    let listed = chrono::DateTime::parse_from_rfc3339(own["expiry"].as_str().expect("expiry"))
        .expect("an RFC 3339 expiry")
        .timestamp()
        .to_string();
    s.registry
        .set_tokens(vec![own, token("abcdef12121212121212", "laptop", false)]);
    let wd = s.watchdog();
    cycle(&wd).await;
    let bodies: Vec<Value> = s
        .hook
        .bodies
        .lock()
        .expect("lock")
        .iter()
        .flat_map(testkit::receiver::webhook_findings)
        .collect();
    let about_own: Vec<&Value> = bodies
        .iter()
        .filter(|b| {
            b["fingerprint"]
                .as_str()
                .is_some_and(|f| f.ends_with(&own_key))
        })
        .collect();
    assert_eq!(about_own.len(), 1, "{about_own:?}");
    assert_eq!(about_own[0]["check"], "token-present");
    let summary = about_own[0]["summary"].as_str().unwrap_or("");
    assert!(
        summary.starts_with("This is npm-watchdog's own credential"),
        "{summary}"
    );
    let fix = about_own[0]["fix"].as_str().unwrap_or("");
    assert!(
        fix.contains(&format!("key_prefix = \"{}\"", &own_key[..6])),
        "{fix}"
    );
    assert!(!fix.contains("npm token revoke"), "{fix}");
    // The other token gets the usual findings.
    assert_eq!(
        sorted(s.hook.take()),
        sorted(vec![
            "FIRING token-present token abcdef (laptop)".to_string(),
            format!("FIRING token-present token {} (watchdog)", &own_key[..6]),
            "FIRING token-unrestricted token abcdef (laptop)".to_string(),
        ])
    );
    let expiry = format!(
        "npm_watchdog_credential_expiry_timestamp_seconds{{token=\"{}\"}}",
        &own_key[..6]
    );
    assert_eq!(metric(&wd, &expiry).as_deref(), Some(listed.as_str()));

    // Accepted on purpose: the finding resolves, the credential is still known as the daemon's own.
    let mut cfg = wd.live().rt.config.clone();
    cfg.policy.allow_tokens = vec![npm_watchdog::config::AllowToken {
        key_prefix: own_key[..8].to_string(),
        reason: "npm-watchdog's own credential".into(),
        expires: chrono::NaiveDate::from_ymd_opt(2027, 1, 31),
        own: false,
    }];
    wd.apply(Runtime::new(cfg, Environment::default()).expect("runtime"))
        .expect("reload");
    cycle(&wd).await;
    assert_eq!(
        s.hook.take(),
        vec![format!(
            "RESOLVED token-present token {} (watchdog)",
            &own_key[..6]
        )]
    );
    assert_eq!(metric(&wd, &expiry).as_deref(), Some(listed.as_str()));
}

/// A reload takes effect from the next cycle: a removed sink's queue is dropped (counted, never sent
/// to the sink that replaced it), a new watch list is read, state and active findings stay.
#[tokio::test]
async fn a_reload_swaps_sinks_watch_lists_and_policy_between_cycles() {
    let s = Setup::new().await;
    s.registry
        .set_tokens(vec![token("abcdef12121212121212", "laptop", false)]);
    s.hook.status.store(503, Ordering::SeqCst);
    let wd = s.watchdog_with(|c| c.watch.own_account = false);
    assert_eq!(wd.active_groups(), vec![Group::Tokens]);
    cycle(&wd).await;
    assert_eq!(
        metric(&wd, "npm_watchdog_notification_queue{sink=\"webhook\"}").as_deref(),
        Some("1"),
        "one message for the token's two findings"
    );

    // The webhook is replaced by another one (named differently) and a package is watched now.
    let (other, other_url) = Hook::start().await;
    let mut cfg = wd.live().rt.config.clone();
    cfg.alerts.webhook = vec![WebhookSinkConfig {
        name: Some("chat".into()),
        url: SecretUrl::new(url::Url::parse(&other_url).expect("url")),
        secret_file: None,
        min_severity: Severity::Info,
        checks: Vec::new(),
        exclude_checks: Vec::new(),
        repeat_interval: None,
        group_by: None,
        max_items: None,
        group_wait: None,
        timeout: HumanDuration::secs(5),
    }];
    cfg.watch.packages = vec!["@acme/widget".into()];
    s.registry.add_packument(
        "@acme/widget",
        fake_registry::packument_doc(
            "@acme/widget",
            &[("1.0.0", "2026-11-26T01:00:00.000Z", None, "mallory")],
            &["alice"],
        ),
    );
    let restart = wd
        .apply(Runtime::new(cfg, Environment::default()).expect("runtime"))
        .expect("reload");
    assert!(restart.is_empty(), "{restart:?}");
    assert_eq!(wd.active_groups(), vec![Group::Tokens, Group::Packages]);

    // The old sink's queue is dropped, not re-routed; nothing new was found, so nothing is sent.
    wd.outbox().dispatch().await;
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_notifications_total{outcome=\"dropped\",sink=\"webhook\"}"
        )
        .as_deref(),
        Some("1")
    );
    assert!(other.take().is_empty());
    cycle(&wd).await;
    assert!(
        other.take().is_empty(),
        "active findings stay; nothing re-fires"
    );

    // The newly watched package is read in its group's next cycle, and alerts go to the new sink.
    cycle_group(&wd, Group::Packages).await;
    assert_eq!(
        other.take(),
        vec!["FIRING publish-untrusted version @acme/widget@1.0.0"]
    );
    assert!(s.hook.take().is_empty());

    // Settings bound at start are reported as needing a restart, and nothing else changes.
    let mut cfg = wd.live().rt.config.clone();
    cfg.server.listen = "127.0.0.1:1".parse().expect("addr");
    let restart = wd
        .apply(Runtime::new(cfg, Environment::default()).expect("runtime"))
        .expect("reload");
    assert_eq!(restart.len(), 1, "{restart:?}");
    assert!(
        restart[0].starts_with("server.listen changed from 127.0.0.1:9858 to 127.0.0.1:1"),
        "{restart:?}"
    );
}

/// What could not be read is counted by group and by a fixed reason, so a dashboard can tell an
/// outage from a revoked credential without parsing log lines.
#[tokio::test]
async fn read_failures_are_counted_by_reason() {
    let s = Setup::new().await;
    s.registry
        .set_tokens(vec![token("abcdef12121212121212", "laptop", false)]);
    let wd = s.watchdog_with(|c| c.watch.own_account = false);
    let errors = |reason: &str| {
        metric(
            &wd,
            &format!("npm_watchdog_check_errors_total{{check=\"tokens\",group=\"tokens\",reason=\"{reason}\"}}"),
        )
    };
    cycle(&wd).await;
    assert_eq!(errors("server_error"), None, "no error, no series");

    // The token list and the profile both answer 500: two sources, one reason.
    s.registry.push_faults("/-/npm/v1", Fault::Status(500), 2);
    cycle(&wd).await;
    assert_eq!(errors("server_error").as_deref(), Some("2"));

    s.registry.set_valid_tokens(vec!["another".into()]);
    cycle(&wd).await;
    assert_eq!(errors("unauthorized").as_deref(), Some("2"));

    std::fs::remove_file(s.dir.path().join("token")).expect("remove the token file");
    cycle(&wd).await;
    assert_eq!(errors("credential").as_deref(), Some("1"));
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}"
        )
        .as_deref(),
        Some("0")
    );
}

/// Each sink hears only what its route asks for: a pager limited to critical findings of two checks
/// beside a webhook that excludes one check.
#[tokio::test]
async fn each_sink_gets_only_what_its_route_asks_for() {
    let s = Setup::new().await;
    s.registry
        .set_tokens(vec![token("abcdef12121212121212", "bulk-hardening", true)]);
    let (pager, pager_url) = Hook::start().await;
    let wd = s.watchdog_with(|c| {
        c.watch.own_account = false;
        c.policy.bypass_token_max_age = HumanDuration::secs(3600);
        c.alerts.webhook[0].exclude_checks = vec!["token-unrestricted".into()];
        c.alerts.webhook.push(WebhookSinkConfig {
            name: Some("pager".into()),
            url: SecretUrl::new(url::Url::parse(&pager_url).expect("url")),
            secret_file: None,
            min_severity: Severity::Critical,
            checks: vec!["token-bypass-2fa".into(), "token-present".into()],
            exclude_checks: Vec::new(),
            repeat_interval: None,
            group_by: None,
            max_items: None,
            group_wait: None,
            timeout: HumanDuration::secs(5),
        });
    });
    cycle(&wd).await;
    assert_eq!(
        pager.take(),
        vec!["FIRING token-bypass-2fa token abcdef (bulk-hardening)"],
        "token-present is a warning: below the pager's minimum"
    );
    let mut got = s.hook.take();
    got.sort();
    assert_eq!(
        got,
        vec![
            "FIRING token-bypass-2fa token abcdef (bulk-hardening)",
            "FIRING token-present token abcdef (bulk-hardening)",
        ],
        "token-unrestricted is excluded from the webhook"
    );
    assert_eq!(
        metric(&wd, "npm_watchdog_notification_queue{sink=\"pager\"}").as_deref(),
        Some("0")
    );
}

/// A registry whose token list never ends (every page links to a new one, slowly) holds the group
/// for `schedule.max_run` at most: the run is stopped, fails like any other, and after
/// `policy.blind_after` of them `watchdog-blind` fires; nothing already found is resolved.
#[tokio::test]
async fn an_endless_token_list_is_cut_at_max_run_and_counts_as_a_failed_run() {
    let s = Setup::new().await;
    s.registry
        .set_tokens(vec![token("abcdef12121212121212", "laptop", false)]);
    let wd = s.watchdog_with(|c| {
        c.watch.own_account = false;
        c.schedule.max_run = HumanDuration::secs(2);
    });
    cycle(&wd).await;
    let mut first = s.hook.take();
    first.sort();
    assert_eq!(
        first,
        vec![
            "FIRING token-present token abcdef (laptop)",
            "FIRING token-unrestricted token abcdef (laptop)",
        ]
    );

    // From now on every page links to another, each answered after 300 ms.
    s.registry.set_min_pages(usize::MAX);
    s.registry.push_faults(
        "/-/npm/v1/tokens",
        Fault::Delay(Duration::from_millis(300)),
        1000,
    );
    let started = std::time::Instant::now();
    cycle(&wd).await;
    let took = started.elapsed();
    assert!(s.hook.take().is_empty(), "one failed run: nothing resolves");
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_check_errors_total{check=\"tokens\",group=\"tokens\",reason=\"run_timeout\"}"
        )
        .as_deref(),
        Some("1")
    );
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}"
        )
        .as_deref(),
        Some("0")
    );
    cycle(&wd).await;
    assert_eq!(
        s.hook.take(),
        vec!["FIRING watchdog-blind check group tokens"],
        "blind after two stopped runs (policy.blind_after = 2)"
    );
    println!("one stopped run took {took:?} with schedule.max_run = 2s");
}

/// The registry fault matrix, each fault through whole cycles of the daemon: no crash, nothing
/// resolved while the token list cannot be read, `check_success` 0, `watchdog-blind` after
/// `policy.blind_after` (2 here) failed runs, and recovery once the fault ends.
#[tokio::test]
async fn every_registry_fault_fails_closed_and_recovers() {
    /// Puts a fault in place for the given number of requests.
    type Cause = Box<dyn Fn(&FakeRegistry, usize)>;
    let status = |code: u16| -> Cause {
        Box::new(move |r: &FakeRegistry, n| {
            r.push_faults("/-/npm/v1/tokens", Fault::Status(code), n)
        })
    };
    let fault = |f: Fault| -> Cause {
        Box::new(move |r: &FakeRegistry, n| r.push_faults("/-/npm/v1/tokens", f.clone(), n))
    };
    let oversized = "x".repeat(6 * 1024 * 1024);
    // Each fault, the reason it is counted under, and how to cause it.
    let rows: Vec<(&str, &str, Cause)> = vec![
        ("connection closed", "unreachable", fault(Fault::Drop)),
        ("timeout", "unreachable", fault(Fault::Delay(Duration::from_secs(3)))),
        ("429 with Retry-After", "rate_limited", fault(Fault::RateLimited { retry_after: Some("1".into()) })),
        ("429 without Retry-After", "rate_limited", fault(Fault::RateLimited { retry_after: None })),
        ("500", "server_error", status(500)),
        ("502", "server_error", status(502)),
        ("503", "server_error", status(503)),
        ("malformed JSON", "malformed", fault(Fault::Malformed("{\"objects\": [".into()))),
        ("truncated body", "unreachable", fault(Fault::TruncatedBody)),
        (
            "token without key",
            "malformed",
            fault(Fault::Malformed(
                "{\"objects\":[{\"name\":\"x\",\"token\":\"npm_ab...yz\"}],\"urls\":{\"next\":null}}"
                    .into(),
            )),
        ),
        (
            "oversized body",
            "too_large",
            fault(Fault::Custom {
                status: 200,
                headers: vec![],
                body: oversized,
            }),
        ),
        (
            "looping next",
            "malformed",
            Box::new(|r: &FakeRegistry, _| r.set_next_override(Some("/-/npm/v1/tokens".into()))),
        ),
        (
            "endless next",
            "malformed",
            Box::new(|r: &FakeRegistry, _| r.set_min_pages(usize::MAX)),
        ),
    ];
    for (name, reason, apply) in rows {
        let logs = Logs::default();
        let _capture = logs.capture();
        let s = Setup::new().await;
        s.registry
            .set_tokens(vec![token("abcdef12121212121212", "laptop", false)]);
        let wd = s.watchdog_with(|c| {
            c.watch.own_account = false;
            // A registry that says nothing for a second is not answering.
            c.registry.idle_timeout = HumanDuration::secs(1);
            c.registry.timeout = HumanDuration::secs(1);
        });
        cycle(&wd).await;
        assert_eq!(
            s.hook.take().len(),
            2,
            "{name}: the token's two findings fire"
        );

        apply(&s.registry, 2);
        cycle(&wd).await;
        assert!(
            s.hook.take().is_empty(),
            "{name}: one failed run changes nothing"
        );
        assert_eq!(
            metric(
                &wd,
                "npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}"
            )
            .as_deref(),
            Some("0"),
            "{name}"
        );
        cycle(&wd).await;
        assert_eq!(
            s.hook.take(),
            vec!["FIRING watchdog-blind check group tokens"],
            "{name}: blind after two failed runs, and nothing resolved"
        );
        let counted: Vec<String> = wd
            .metrics()
            .render()
            .lines()
            .filter(|l| {
                l.starts_with("npm_watchdog_check_errors_total{check=\"tokens\",group=\"tokens\"")
            })
            .map(str::to_string)
            .collect();
        println!("{name}: {counted:?}");
        if !reason.is_empty() {
            assert!(
                counted
                    .iter()
                    .any(|l| l.contains(&format!("reason=\"{reason}\""))),
                "{name}: counted as {reason}: {counted:?}"
            );
        }

        s.registry.clear_faults();
        s.registry.set_next_override(None);
        s.registry.set_min_pages(1);
        cycle(&wd).await;
        assert_eq!(
            s.hook.take(),
            vec!["RESOLVED watchdog-blind check group tokens"],
            "{name}: recovery"
        );
        assert_eq!(
            metric(
                &wd,
                "npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}"
            )
            .as_deref(),
            Some("1"),
            "{name}"
        );
        // The fault's errors went through logs, the blind alert, metrics and the state file.
        let log = logs.text();
        assert_eq!(
            log.matches("check group could not read everything").count(),
            2,
            "{name}: both failed runs were logged:\n{log}"
        );
        let mut places = vec![
            ("the log".to_string(), log),
            ("/metrics".to_string(), wd.metrics().render()),
            ("webhook bodies".to_string(), s.hook.raw()),
        ];
        for file in [s.state_path(), s.state_path().with_extension("db-wal")] {
            places.push((file.display().to_string(), secrets::file_text(&file)));
        }
        assert_absent(&[SECRET], places);
    }
}

/// `registry.max_body` is in force in the daemon: a token page larger than it fails the group with
/// reason `too_large` and is never read as "no tokens".
#[tokio::test]
async fn registry_max_body_from_the_config_caps_the_token_list() {
    let s = Setup::new().await;
    s.registry
        .set_tokens(vec![token("abcdef12121212121212", "laptop", false)]);
    let wd = s.watchdog_with(|c| {
        c.watch.own_account = false;
        c.registry.max_body = npm_watchdog::config::HumanSize(128);
    });
    cycle(&wd).await;
    assert!(s.hook.take().is_empty(), "nothing read, nothing reported");
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_check_errors_total{check=\"tokens\",group=\"tokens\",reason=\"too_large\"}"
        )
        .as_deref(),
        Some("1")
    );
    assert_eq!(
        metric(
            &wd,
            "npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}"
        )
        .as_deref(),
        Some("0")
    );
}
