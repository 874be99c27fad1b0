//! The daemon's `ci` group against the in-process fake GitHub and GitLab APIs, stepped by hand: an npm
//! token added to CI fires within one run, deleting it resolves it, and while its list cannot be read
//! the finding is kept (no RESOLVED), across a restart too. Every notification goes to a webhook
//! receiver; the planted GitLab values are searched for in everything the daemon wrote.

mod daemon_support;
use testkit::fake_ci;
use testkit::receiver;
use testkit::test_config;

use std::path::Path;
use std::sync::Arc;

use daemon_support::{metric, Logs};
use fake_ci::{FakeCi, GitlabVar, DEFAULT_TIME as T, GITHUB_TOKEN, GITLAB_TOKEN};
use npm_watchdog::alerts::webhook::WebhookSinkConfig;
use npm_watchdog::checks::Group;
use npm_watchdog::ci::github::GithubConfig;
use npm_watchdog::ci::gitlab::GitlabConfig;
use npm_watchdog::config::{Config, HumanDuration};
use npm_watchdog::credential::Environment;
use npm_watchdog::daemon::Watchdog;
use npm_watchdog::finding::Severity;
use npm_watchdog::metrics::Metrics;
use npm_watchdog::runtime::Runtime;
use npm_watchdog::secret::SecretUrl;
use npm_watchdog::state::State;
use receiver::Receiver;

/// GitLab variable values: one looks like an npm token, one is an npmrc line, one is harmless. None
/// may appear anywhere the daemon writes.
const NPM_VALUE: &str = "npm_Q7rT2mXw9LpK4sVb8NcH1jYf6GdZ3aEuR0oi";
const NPMRC_VALUE: &str = "//registry.npmjs.org/:_authToken=kept-in-ci-NPMRC-8c1f";
const HARMLESS_VALUE: &str = "harmless-value-Zr4q";

struct Setup {
    ci: FakeCi,
    hook: Receiver,
    hook_url: String,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        let ci = FakeCi::start().await;
        ci.add_github_repo("acme/widget", false);
        ci.add_github_repo_secret("acme/widget", "DEPLOY_KEY", T, T);
        ci.add_github_environment("acme/widget", "release");
        ci.add_gitlab_project("acme/widget");
        ci.add_gitlab_project_var("acme/widget", GitlabVar::new("DOCS_URL", HARMLESS_VALUE));
        let (hook, hook_url) = Receiver::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, token) in [("github", GITHUB_TOKEN), ("gitlab", GITLAB_TOKEN)] {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{token}\n")).expect("write token");
            set_private(&path);
        }
        // The npm side is not read by the `ci` group; a token file keeps the runtime content.
        std::fs::write(dir.path().join("npm-token"), "npm_unused\n").expect("write token");
        set_private(&dir.path().join("npm-token"));
        Setup {
            ci,
            hook,
            hook_url,
            dir,
        }
    }

    /// A daemon over this setup's state file: a new one is what a restart gives.
    fn watchdog(&self) -> Arc<Watchdog> {
        let mut cfg = Config::default();
        cfg.registry.url = Some(url::Url::parse("http://127.0.0.1:9/").expect("url"));
        cfg.registry.token_file = Some(self.dir.path().join("npm-token"));
        cfg.registry.retries = 0;
        cfg.watch.own_account = false;
        cfg.state.path = Some(self.dir.path().join("state.db"));
        cfg.ci.github.push(GithubConfig {
            token_file: self.dir.path().join("github"),
            api_url: url::Url::parse(&self.ci.github_url()).expect("url"),
            repos: vec!["acme/widget".into()],
            orgs: vec![],
        });
        cfg.ci.gitlab.push(GitlabConfig {
            token_file: self.dir.path().join("gitlab"),
            api_url: url::Url::parse(&self.ci.gitlab_url()).expect("url"),
            projects: vec!["acme/widget".into()],
            groups: vec![],
        });
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
        let rt = Runtime::new(cfg, Environment::default()).expect("runtime");
        let state = State::open(&self.dir.path().join("state.db")).expect("state");
        Arc::new(Watchdog::new(rt, state, Metrics::new()).expect("watchdog"))
    }

    /// `STATUS check subject` of the notifications received since the last call.
    fn take(&self, seen: &mut usize) -> Vec<String> {
        let bodies = self.hook.bodies();
        let new = bodies[*seen..]
            .iter()
            .flat_map(testkit::receiver::webhook_findings)
            .map(|v| {
                format!(
                    "{} {} {}",
                    v["status"].as_str().unwrap_or("?").to_uppercase(),
                    v["check"].as_str().unwrap_or("?"),
                    v["subject"].as_str().unwrap_or("?")
                )
            })
            .collect();
        *seen = bodies.len();
        new
    }
}

fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

async fn run_ci(wd: &Arc<Watchdog>) {
    wd.run_group(Group::Ci).await;
    wd.outbox().dispatch().await;
}

const ENV_TOKEN: &str =
    "FIRING ci-npm-secret CI secret NPM_TOKEN in GitHub secrets of environment release in repository acme/widget";

#[tokio::test]
async fn an_npm_token_in_ci_fires_resolves_and_is_held_while_unreadable() {
    let s = Setup::new().await;
    let logs = Logs::default();
    let _guard = logs.capture();
    let mut seen = 0;

    // Nothing that looks like an npm token: nothing sent, the group is healthy.
    let wd = s.watchdog();
    run_ci(&wd).await;
    assert_eq!(s.take(&mut seen), Vec::<String>::new());
    assert_eq!(
        metric(&wd, "npm_watchdog_check_success{check=\"ci\",group=\"ci\"}").as_deref(),
        Some("1")
    );
    assert_eq!(
        metric(&wd, "npm_watchdog_ci_secrets{provider=\"github\"}").as_deref(),
        Some("1")
    );
    assert_eq!(
        metric(&wd, "npm_watchdog_ci_secrets{provider=\"gitlab\"}").as_deref(),
        Some("1")
    );

    // A token comes back, in an environment: one run is enough to alert.
    s.ci.add_github_env_secret("acme/widget", "release", "NPM_TOKEN", T, T);
    // And two on GitLab under innocuous names, given away by their values.
    s.ci.add_gitlab_project_var("acme/widget", GitlabVar::new("RELEASE_KEY", NPM_VALUE));
    s.ci.add_gitlab_project_var(
        "acme/widget",
        GitlabVar::new("NPMRC", NPMRC_VALUE).scope("production"),
    );
    run_ci(&wd).await;
    let mut got = s.take(&mut seen);
    got.sort();
    assert_eq!(
        got,
        [
            "FIRING ci-npm-secret CI secret NPMRC (environment scope `production`) in GitLab CI/CD variables of project acme/widget".to_string(),
            ENV_TOKEN.into(),
            "FIRING ci-npm-secret CI secret RELEASE_KEY in GitLab CI/CD variables of project acme/widget".into(),
        ]
    );

    // GitHub refuses the repository: no RESOLVED, the group says it is failing.
    s.ci.deny_github("/repos/acme/widget", 403);
    run_ci(&wd).await;
    assert_eq!(s.take(&mut seen), Vec::<String>::new());
    assert_eq!(
        metric(&wd, "npm_watchdog_check_success{check=\"ci\",group=\"ci\"}").as_deref(),
        Some("0")
    );
    assert!(
        metric(
            &wd,
            "npm_watchdog_check_errors_total{check=\"ci\",group=\"ci\",reason=\"forbidden\"}"
        )
        .is_some_and(|v| v != "0"),
        "{}",
        wd.metrics().render()
    );

    // Deleted while unreadable, and the daemon restarted: still held, from the stored lists.
    assert!(s
        .ci
        .remove_github_env_secret("acme/widget", "release", "NPM_TOKEN"));
    drop(wd);
    let wd = s.watchdog();
    run_ci(&wd).await;
    assert_eq!(s.take(&mut seen), Vec::<String>::new());
    assert_eq!(
        metric(&wd, "npm_watchdog_ci_secrets{provider=\"github\"}").as_deref(),
        Some("2"),
        "the last complete lists stand in for the repository"
    );

    // Readable again: the deletion is seen and resolves the finding; GitLab's stay.
    s.ci.with_state(|st| st.github.deny.clear());
    run_ci(&wd).await;
    assert_eq!(
        s.take(&mut seen),
        [ENV_TOKEN.replacen("FIRING", "RESOLVED", 1)]
    );
    assert_eq!(
        metric(&wd, "npm_watchdog_check_success{check=\"ci\",group=\"ci\"}").as_deref(),
        Some("1")
    );
    assert!(
        metric(
            &wd,
            "npm_watchdog_ci_requests_total{code=\"200\",endpoint=\"project_variables\",provider=\"gitlab\"}"
        )
        .is_some_and(|v| v != "0"),
        "{}",
        wd.metrics().render()
    );

    // No value and no CI token anywhere the daemon wrote.
    let mut written = vec![
        ("the log".to_string(), logs.text()),
        ("/metrics".to_string(), wd.metrics().render()),
    ];
    for r in s.hook.requests() {
        written.push((
            format!("webhook {}", r.path),
            String::from_utf8_lossy(&r.body).into_owned(),
        ));
    }
    for f in ["state.db", "state.db-wal"] {
        let path = s.dir.path().join(f);
        if let Ok(bytes) = std::fs::read(&path) {
            written.push((
                path.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
    testkit::secrets::assert_absent(
        &[
            NPM_VALUE,
            NPMRC_VALUE,
            HARMLESS_VALUE,
            GITHUB_TOKEN,
            GITLAB_TOKEN,
        ],
        written,
    );
}

/// The scheduler runs the `ci` group on `schedule.ci`: with `npm-watchdog run` and `ci = "1s"`, a
/// token added to CI is alerted without anything stepping the daemon, and `/metrics` shows the group.
#[tokio::test(flavor = "multi_thread")]
async fn the_running_daemon_schedules_the_ci_group() {
    let s = Setup::new().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let config = test_config::TestConfig::new(
        "http://127.0.0.1:9/",
        &s.dir.path().join("npm-token"),
        &s.dir.path().join("state.db"),
    )
    .listen(port)
    .not_own_account()
    .with(&format!(
        "[schedule]\ntokens = \"1h\"\nci = \"1s\"\n\n\
         [[ci.github]]\ntoken_file = \"{}\"\napi_url = \"{}\"\nrepos = [\"acme/widget\"]\n\n\
         [[alerts.webhook]]\nurl = \"{}\"\n",
        s.dir.path().join("github").display(),
        s.ci.github_url(),
        s.hook_url
    ))
    .write(&s.dir.path().join("config.toml"));
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_npm-watchdog"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("NPM_CONFIG_USERCONFIG", s.dir.path().join("no-npmrc"))
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the daemon");

    // The first ci run finds nothing; then a token is added and the next runs must report it.
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut added = false;
    let fired = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ci-npm-secret alert within 60 s; received: {:?}",
            s.hook.bodies()
        );
        if let Some(v) = s
            .hook
            .findings()
            .into_iter()
            .find(|v| v["check"] == "ci-npm-secret")
        {
            break v;
        }
        if !added {
            let text = match reqwest::get(&metrics_url).await {
                Ok(r) => r.text().await.unwrap_or_default(),
                // Not listening yet.
                Err(_) => String::new(),
            };
            if text.contains("npm_watchdog_check_success{check=\"ci\",group=\"ci\"} 1") {
                s.ci.add_github_repo_secret("acme/widget", "NPM_TOKEN", T, T);
                added = true;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(added, "the alert came before the token was added: {fired}");
    assert_eq!(fired["status"], "firing");
    assert_eq!(
        fired["subject"],
        "CI secret NPM_TOKEN in GitHub Actions secrets of repository acme/widget"
    );
    daemon.kill().await.expect("stop the daemon");
}

/// A CI secret's name is chosen by whoever can write to the repository: one named to forge a line,
/// drive a terminal and reverse text comes out inert in the alert, and the fix suggests nothing that
/// pastes it into a shell.
#[tokio::test]
async fn a_hostile_ci_secret_name_is_inert_in_the_alert() {
    let s = Setup::new().await;
    let mut seen = 0;
    let wd = s.watchdog();
    run_ci(&wd).await;
    assert_eq!(s.take(&mut seen), Vec::<String>::new());
    let hostile = "NPM_TOKEN\n2026-12-04T00:00:00Z INFO all clear\u{1b}[2J\u{202e}";
    s.ci.add_github_repo_secret("acme/widget", hostile, T, T);
    run_ci(&wd).await;
    let got = s.take(&mut seen);
    assert_eq!(got.len(), 1, "{got:?}");
    let finding = s
        .hook
        .findings()
        .into_iter()
        .find(|f| f["check"] == "ci-npm-secret")
        .expect("the finding");
    for field in ["subject", "summary", "fix", "title"] {
        let text = finding[field].as_str().unwrap_or_default();
        assert!(
            !text.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{field}: {text:?}"
        );
    }
    let subject = finding["subject"].as_str().unwrap_or_default();
    assert!(
        subject.contains("NPM_TOKEN\\n2026-12-04T00:00:00Z INFO all clear\\u{1b}[2J\\u{202e}"),
        "{subject}"
    );
}
