//! The Alertmanager sink end to end, with the watchdog run highly available: two replicas of the real
//! binary (each with its own state file and its own copy of the credential) watch the same account on
//! the in-process fake registry and post to one real Alertmanager (Debian package
//! `prometheus-alertmanager`), which emails a real SMTP server (aiosmtpd).
//!
//! Alertmanager runs the route and inhibition of `config/alertmanager.example.yml`, with the test's
//! SMTP server and one-second grouping instead of the example's address and minutes. What a user checks:
//!
//! - the example passes `amtool check-config`, with and without its commented pager, and routes
//!   findings where it says;
//! - every finding of a stale bypass-2FA token is ONE alert in Alertmanager (both replicas merged), with
//!   the identity labels, the readable annotations and `startsAt` = when it was first seen, and ONE
//!   email per finding;
//! - a replica killed with SIGKILL loses nothing: the other keeps the alerts alive;
//! - the token removed while one replica is down: the live one resolves it, Alertmanager drops the
//!   alerts and sends the resolved emails;
//! - the killed replica restarted on its old state (which still holds the findings) does not re-open
//!   what the other resolved: not after its own cycles, and not while it cannot read the registry;
//! - a finding that turns critical silences its stale warning (the example's inhibition);
//! - the npm credential is in no alert, email or log.
//!
//! A missing Alertmanager, amtool or aiosmtpd is a failure, never a skip: run
//! `scripts/install-peers.sh`.

use testkit::fake_registry;
use testkit::peers;
use testkit::test_config;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use fake_registry::{FakeRegistry, TOKEN};
use npm_watchdog::alerts::Active;
use npm_watchdog::state::State;
use peers::{
    amtool, amtool_check_config, free_port, start_alertmanager, wait_until, Daemon, Server, Smtp,
};
use serde_json::{json, Value};
use test_config::TestConfig;

const EXAMPLE: &str = "config/alertmanager.example.yml";
/// The `alertname` of every alert the sink posts.
const ALERTNAME: &str = "NpmWatchdogFinding";
/// The receiver of the example's finding route.
const RECEIVER: &str = "npm-security-email";
/// The registry key of the stale bypass-2FA token on the watched account.
const BYPASS_KEY: &str = "b5c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5";
/// What a replica restarted with an outdated credential presents; the registry refuses it.
const REFUSED_TOKEN: &str = "npm_OutdatedCredentialTheRegistryRefuses0123";
/// The sinks' `resend_interval` here (`"1s"` in their configuration).
const RESEND: Duration = Duration::from_secs(1);
/// An alert the sink posted ends this long after the post unless posted again (4 × resend_interval).
const LIFETIME: Duration = Duration::from_secs(4);
/// Alertmanager's `group_wait` and `group_interval` here.
const GROUPING: Duration = Duration::from_secs(1);
/// How long an absence (a second email, a re-opened alert) is watched for: several group intervals.
const QUIET: Duration = Duration::from_secs(5);
/// How long alerts are watched after a replica died: twice their lifetime, so only the other
/// replica's re-sending can keep them.
const HOLD: Duration = Duration::from_secs(8);
/// Generous bound for slow steps (process start, first cycle, first email).
const SLOW: Duration = Duration::from_secs(60);

fn repo_file(rel: &str) -> PathBuf {
    peers::repo_root().join(rel)
}

fn example() -> String {
    let path = repo_file(EXAMPLE);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

// ---------------------------------------------------------------------------
// The example configuration
// ---------------------------------------------------------------------------

/// The example with its commented-out configuration (the pager route and receiver) uncommented, and
/// how many lines that changed. A commented configuration line is indented, then `# `, then a YAML
/// list item or `key:`; prose comments never start that way.
fn with_pager(example: &str) -> (String, usize) {
    let mut changed = 0;
    let text = example
        .lines()
        .map(|line| {
            let indent = &line[..line.len() - line.trim_start().len()];
            let rest = line.trim_start().strip_prefix("# ");
            let is_config = rest.is_some_and(|r| {
                let r = r.trim_start();
                let key = r.split_once(':').map(|(k, _)| k).unwrap_or_default();
                r.starts_with("- ")
                    || (!key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            });
            match rest {
                Some(rest) if is_config && !indent.is_empty() => {
                    changed += 1;
                    format!("{indent}{rest}\n")
                }
                _ => format!("{line}\n"),
            }
        })
        .collect();
    (text, changed)
}

/// The example as the test runs it: email through aiosmtpd on `smtp_port` (no login, no STARTTLS)
/// and one-second `group_wait`/`group_interval`; its route, receivers and inhibition unchanged.
fn test_alertmanager_config(example: &str, smtp_port: u16) -> String {
    let wait = format!("{}s", GROUPING.as_secs());
    let replacements: [(&str, Option<String>); 5] = [
        ("smtp_smarthost:", Some(format!("'127.0.0.1:{smtp_port}'"))),
        ("smtp_auth_username:", None),
        ("smtp_auth_password_file:", None),
        ("smtp_require_tls:", Some("false".into())),
        ("group_wait:", Some(wait.clone())),
    ];
    let replacements = replacements
        .into_iter()
        .chain([("group_interval:", Some(wait))]);
    let mut text: Vec<String> = example.lines().map(str::to_string).collect();
    for (key, value) in replacements {
        let mut hits = 0;
        text = text
            .into_iter()
            .filter_map(|line| {
                let trimmed = line.trim_start();
                if !trimmed.starts_with(key) {
                    return Some(line);
                }
                hits += 1;
                let indent = &line[..line.len() - trimmed.len()];
                value.as_ref().map(|v| format!("{indent}{key} {v}"))
            })
            .collect();
        assert_eq!(
            hits, 1,
            "{EXAMPLE}: expected one uncommented `{key}` line to adapt for the test, found {hits}"
        );
    }
    let mut out = String::from("# Generated by tests/e2e_alertmanager.rs from ");
    out.push_str(EXAMPLE);
    out.push('\n');
    for line in text {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `amtool config routes test` on `config`: the receivers an alert with `labels` goes to.
fn routed_to(dir: &Path, config: &str, labels: &[&str]) -> String {
    let path = dir.join("routes.yml");
    fs::write(&path, config).expect("write config");
    let out = Command::new(amtool())
        .args(["config", "routes", "test"])
        .arg(format!("--config.file={}", path.display()))
        .args(labels)
        .output()
        .unwrap_or_else(|e| panic!("run amtool: {e}; run scripts/install-peers.sh"));
    assert!(
        out.status.success(),
        "amtool config routes test {labels:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn example_config_passes_amtool_and_routes_findings_by_email() {
    let example = example();
    // As a user runs it, on the file itself.
    let out = Command::new(amtool())
        .arg("check-config")
        .arg(repo_file(EXAMPLE))
        .output()
        .unwrap_or_else(|e| panic!("run amtool: {e}; run scripts/install-peers.sh"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "amtool check-config {EXAMPLE}:\n{said}"
    );
    assert!(
        said.contains("SUCCESS") && said.contains("1 inhibit rules"),
        "{said}"
    );

    for wanted in [
        "- alertname=\"NpmWatchdogFinding\"",
        "group_by: ['check', 'fingerprint']",
        "- source_matchers:",
        "target_matchers:",
        "- severity=\"critical\"",
        "- severity=\"warning\"",
        "equal: ['fingerprint']",
        "send_resolved: true",
    ] {
        assert!(
            example.lines().any(|l| l.trim() == wanted),
            "{EXAMPLE} has no line {wanted:?}"
        );
    }
    assert!(
        !example.contains("smtp_auth_password:"),
        "the example keeps the SMTP password in a file"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let finding = |severity: &str| {
        [
            format!("alertname={ALERTNAME}"),
            "check=token-bypass-2fa".to_string(),
            format!("severity={severity}"),
            format!("fingerprint=token-bypass-2fa:{BYPASS_KEY}"),
            format!("token={BYPASS_KEY}"),
        ]
    };
    let route = |config: &str, labels: &[String]| {
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        routed_to(dir.path(), config, &labels)
    };
    assert_eq!(route(&example, &finding("critical")), RECEIVER);
    assert_eq!(route(&example, &finding("warning")), RECEIVER);
    assert_eq!(
        route(
            &example,
            &["alertname=DiskFull".into(), "severity=critical".into()]
        ),
        "default",
        "alerts of other systems keep the top-level receiver"
    );

    // The commented pager: valid once uncommented, and it pages critical findings only, which still
    // get their email.
    let (paged, changed) = with_pager(&example);
    assert_eq!(
        changed, 13,
        "the pager route (9 lines) and receiver (4 lines) are the commented configuration:\n{paged}"
    );
    amtool_check_config(dir.path(), "with-pager.yml", &paged);
    assert_eq!(
        route(&paged, &finding("critical")),
        format!("npm-pager,{RECEIVER}")
    );
    assert_eq!(route(&paged, &finding("warning")), RECEIVER);

    // What the end-to-end tests run is valid too and routes the same way.
    let tested = test_alertmanager_config(&example, 2525);
    amtool_check_config(dir.path(), "tested.yml", &tested);
    assert_eq!(route(&tested, &finding("critical")), RECEIVER);
}

// ---------------------------------------------------------------------------
// The account, the replicas, Alertmanager
// ---------------------------------------------------------------------------

/// A token as the registry lists it (`token` is the registry's masked form, never the secret).
fn listed_token(key: &str, name: &str, bypass: bool, created: DateTime<Utc>) -> Value {
    json!({
        "name": name, "key": key, "token": "npm_ab...yz", "cidr": null, "bypass_2fa": bypass,
        "created": iso(created),
        "expiry": iso(Utc::now() + chrono::Duration::days(30)),
        "permissions": [{"name": "package", "action": "write"}],
        "revoked": null
    })
}

/// The fake registry: an account with 2FA on and one write token that bypasses 2FA, created at
/// `created`; the watchdog's credential is [`TOKEN`].
async fn account_with_bypass_token(created: DateTime<Utc>) -> FakeRegistry {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(vec![listed_token(
        BYPASS_KEY,
        "bulk-hardening",
        true,
        created,
    )]);
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));
    reg
}

/// One replica of the watchdog: the real binary with its own state file and credential file.
struct Replica {
    name: &'static str,
    daemon: Daemon,
    state: PathBuf,
    token_file: PathBuf,
}

impl Replica {
    /// Starts `npm-watchdog run` in `root/<name>`, reading the token list every second and posting
    /// to the Alertmanager on `am_port` with `resend_interval = "1s"`; `extra` is merged into its
    /// configuration. Returns once its first cycle is done (`/readyz`).
    fn start(
        reg: &FakeRegistry,
        root: &Path,
        name: &'static str,
        am_port: u16,
        extra: &str,
    ) -> Replica {
        let dir = root.join(name);
        fs::create_dir_all(&dir).expect("replica dir");
        let token_file = dir.join("npm-token");
        fs::write(&token_file, TOKEN).expect("token file");
        let state = dir.join("state.db");
        let port = free_port();
        let config = dir.join("config.toml");
        TestConfig::new(&reg.url, &token_file, &state)
            .listen(port)
            .no_retries()
            .not_own_account()
            .with(&format!(
                r#"[schedule]
tokens = "1s"

[[alerts.alertmanager]]
urls = ["http://127.0.0.1:{am_port}"]
resend_interval = "{}s"
"#,
                RESEND.as_secs()
            ))
            .with(extra)
            .write(&config);
        let daemon = Daemon::start(
            &config,
            port,
            &dir.join("daemon.log"),
            &dir.join("no-npmrc"),
        );
        Replica {
            name,
            daemon,
            state,
            token_file,
        }
    }

    /// The findings its state file holds as active, by fingerprint (read beside the running daemon,
    /// as SQLite allows).
    fn active(&self) -> BTreeMap<String, Active> {
        let state = State::open(&self.state)
            .unwrap_or_else(|e| panic!("replica {}: open its state: {e}", self.name));
        state
            .active(None)
            .unwrap_or_else(|e| panic!("replica {}: read its findings: {e}", self.name))
            .into_iter()
            .map(|a| (a.finding.fingerprint(), a))
            .collect()
    }

    /// A series of its `/metrics`, whatever the order of its labels.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        series(&self.daemon.metrics(), name, labels)
    }

    /// Notifications it delivered to Alertmanager.
    fn sent(&self) -> f64 {
        self.metric(
            "npm_watchdog_notifications_total",
            &[("sink", "alertmanager"), ("outcome", "sent")],
        )
        .unwrap_or(0.0)
    }

    fn log(&self) -> String {
        self.daemon.log_text()
    }

    /// SIGKILL, and wait until the process is gone.
    fn kill(&mut self) {
        self.daemon.signal("KILL");
        wait_until(
            &format!("replica {} to die after SIGKILL", self.name),
            SLOW,
            || (!self.daemon.is_running()).then_some(()),
        );
    }
}

/// The value of the series `name` with (at least) `labels`.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (head, value) = l.rsplit_once(' ')?;
        let (n, rest) = head.split_once('{').unwrap_or((head, ""));
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        (n == name && all).then(|| value.parse().ok()).flatten()
    })
}

/// Alertmanager's alerts named `NpmWatchdogFinding` (`GET /api/v2/alerts` lists the unresolved ones)
/// with the raw body.
fn am_alerts(am: &Server, query: &str) -> Result<(String, Vec<Value>), String> {
    let (body, v) = am.get_json(&format!("/api/v2/alerts{query}"))?;
    let ours = v
        .as_array()
        .ok_or_else(|| format!("not a list: {body}"))?
        .iter()
        .filter(|a| a["labels"]["alertname"] == ALERTNAME)
        .cloned()
        .collect();
    Ok((body, ours))
}

/// The alerts of `alerts` whose `fingerprint` label is `fp`.
fn with_fp<'a>(alerts: &'a [Value], fp: &str) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| a["labels"]["fingerprint"] == fp)
        .collect()
}

fn time_of(v: &Value, what: &str) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("{what} is not a time: {v}"))
        .with_timezone(&Utc)
}

/// Emails about the finding `fp`, `(firing, resolved)`. Alertmanager's default subject is
/// `[FIRING:n] <check> <fingerprint> (<other common labels>)` or `[RESOLVED] …`.
fn emails_about(smtp: &Smtp, fp: &str) -> (usize, usize) {
    let needle = format!(" {fp} ");
    let subjects: Vec<String> = smtp
        .subjects()
        .into_iter()
        .filter(|s| s.contains(&needle))
        .collect();
    let firing = subjects
        .iter()
        .filter(|s| s.starts_with("[FIRING:"))
        .count();
    let resolved = subjects
        .iter()
        .filter(|s| s.starts_with("[RESOLVED]"))
        .count();
    (firing, resolved)
}

/// Polls `check` for `period`; panics with its complaint the first time it has one.
#[track_caller]
fn hold(what: &str, period: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let until = Instant::now() + period;
    let mut polls = 0;
    while Instant::now() < until {
        if let Err(complaint) = check() {
            panic!("{what}: after {polls} good polls: {complaint}");
        }
        polls += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A real SMTP server and a real Alertmanager running the example's route and inhibition.
fn alertmanager_with_email() -> (Smtp, Server) {
    let smtp = Smtp::start();
    let am = start_alertmanager(&test_alertmanager_config(&example(), smtp.port));
    (smtp, am)
}

/// What two replicas reported, once both did and Alertmanager shows every finding active.
struct Fired {
    fingerprints: BTreeSet<String>,
    /// The findings by fingerprint, with the earliest first-seen time of the two replicas.
    findings: BTreeMap<String, Active>,
    /// The body of `GET /api/v2/alerts` then.
    body: String,
    alerts: Vec<Value>,
}

/// Waits until both replicas hold the token's findings, both delivered them, and Alertmanager lists
/// each of them active.
fn both_fired(am: &Server, a: &Replica, b: &Replica) -> Fired {
    let findings = wait_until("both replicas hold the same token findings", SLOW, || {
        let (fa, fb) = (a.active(), b.active());
        let same = fa.keys().eq(fb.keys());
        let bypass = format!("token-bypass-2fa:{BYPASS_KEY}");
        (same && fa.contains_key(&bypass)).then(|| {
            fa.into_iter()
                .map(|(fp, x)| {
                    let first = fb[&fp].first_seen.min(x.first_seen);
                    (
                        fp,
                        Active {
                            first_seen: first,
                            ..x
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>()
        })
    });
    for (fp, f) in &findings {
        assert_eq!(
            f.finding.subject_key, BYPASS_KEY,
            "{fp}: every finding is about the one token, so removing it resolves them all"
        );
    }
    let fingerprints: BTreeSet<String> = findings.keys().cloned().collect();
    let n = fingerprints.len() as f64;
    wait_until(
        "both replicas delivered every FIRING to Alertmanager",
        SLOW,
        || (a.sent() >= n && b.sent() >= n).then_some(()),
    );
    let (body, alerts) = wait_until("Alertmanager lists every finding active", SLOW, || {
        let (body, alerts) = am_alerts(am, "").ok()?;
        fingerprints
            .iter()
            .all(|fp| {
                with_fp(&alerts, fp)
                    .iter()
                    .any(|x| x["status"]["state"] == "active")
            })
            .then_some((body, alerts))
    });
    Fired {
        fingerprints,
        findings,
        body,
        alerts,
    }
}

/// Kills `b`, removes the token from the registry, and waits until `a` resolved its findings and
/// Alertmanager no longer lists them. Returns the alerts JSON seen while `b` was down.
fn kill_b_and_resolve(
    reg: &FakeRegistry,
    am: &Server,
    smtp: &Smtp,
    a: &Replica,
    b: &mut Replica,
    fired: &Fired,
) -> Vec<String> {
    let mut bodies = Vec::new();
    let killed_at = Utc::now();
    b.kill();
    let emails_before: BTreeMap<&String, (usize, usize)> = fired
        .fingerprints
        .iter()
        .map(|fp| (fp, emails_about(smtp, fp)))
        .collect();
    hold(
        "with replica b killed, every alert stays active (replica a keeps re-sending) and no email is sent",
        HOLD,
        || {
            let (body, alerts) = am_alerts(am, "")?;
            for fp in &fired.fingerprints {
                let listed = with_fp(&alerts, fp);
                if listed.len() != 1 || listed[0]["status"]["state"] != "active" {
                    return Err(format!("{fp} is not one active alert: {listed:?}"));
                }
                let now = emails_about(smtp, fp);
                if now != emails_before[fp] {
                    return Err(format!(
                        "{fp}: emails (firing, resolved) went from {:?} to {now:?}: {:?}",
                        emails_before[fp],
                        smtp.subjects()
                    ));
                }
            }
            bodies.push(body);
            Ok(())
        },
    );
    let (_, alerts) = am_alerts(am, "").expect("alerts");
    let lifetime = chrono::Duration::from_std(LIFETIME).expect("lifetime");
    for fp in &fired.fingerprints {
        let ends = time_of(&with_fp(&alerts, fp)[0]["endsAt"], "endsAt");
        assert!(
            ends > killed_at + lifetime,
            "{fp}: endsAt {ends} is not past what replica b could have set before it died ({killed_at} + {LIFETIME:?})"
        );
    }
    // Replica b's state still holds every finding: it was killed, it resolved nothing.
    let held = b.active();
    for fp in &fired.fingerprints {
        assert!(
            held.contains_key(fp),
            "replica b's state lost {fp}: {held:?}"
        );
    }

    reg.set_tokens(vec![]);
    wait_until(
        "replica a resolves every finding of the removed token",
        SLOW,
        || {
            let left = a.active();
            fired
                .fingerprints
                .iter()
                .all(|fp| !left.contains_key(fp))
                .then_some(())
        },
    );
    let resolved = wait_until_or_none(SLOW, || {
        let (body, alerts) = am_alerts(am, "").ok()?;
        let (_, active) = am_alerts(am, "?active=true").ok()?;
        let gone = fired
            .fingerprints
            .iter()
            .all(|fp| with_fp(&alerts, fp).is_empty() && with_fp(&active, fp).is_empty());
        gone.then_some(body)
    });
    match resolved {
        Some(body) => bodies.push(body),
        None => panic!(
            "Alertmanager still lists the resolved findings after {SLOW:?}: {:?}\nreplica a's log:\n{}\nalertmanager log:\n{}",
            am_alerts(am, "").map(|(b, _)| b),
            a.log(),
            am.log_text()
        ),
    }
    bodies
}

/// Like [`wait_until`], but `None` at the deadline instead of a panic.
fn wait_until_or_none<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `text` with quoted-printable soft line breaks removed, so a value split across lines is found.
fn unfold_qp(text: &str) -> String {
    text.replace("=\r\n", "").replace("=\n", "")
}

/// Every email, raw and decoded, by subject.
fn email_texts(smtp: &Smtp) -> Vec<(String, String)> {
    smtp.messages()
        .into_iter()
        .flat_map(|m| {
            [
                (format!("email {:?} (raw)", m.subject), unfold_qp(&m.raw)),
                (format!("email {:?} (decoded)", m.subject), m.body),
            ]
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_make_one_alert_per_finding_and_a_restart_does_not_reopen_it() {
    let reg = account_with_bypass_token(Utc::now() - chrono::Duration::days(3)).await;
    tokio::task::block_in_place(|| two_replicas(&reg));
}

fn two_replicas(reg: &FakeRegistry) {
    let t0 = Instant::now();
    let (smtp, am) = alertmanager_with_email();
    let peers_up = t0.elapsed();
    let root = tempfile::tempdir().expect("tempdir");
    let a = Replica::start(reg, root.path(), "a", am.port, "");
    let mut b = Replica::start(reg, root.path(), "b", am.port, "");
    let replicas_up = t0.elapsed();

    // One alert per finding, both replicas merged, labelled and annotated from the finding.
    let fired = both_fired(&am, &a, &b);
    let listed_after = t0.elapsed();
    let mut am_bodies = vec![fired.body.clone()];
    for (fp, f) in &fired.findings {
        let listed = with_fp(&fired.alerts, fp);
        assert_eq!(
            listed.len(),
            1,
            "{fp}: Alertmanager holds {} alerts for one finding of two replicas: {listed:#?}",
            listed.len()
        );
        let alert = listed[0];
        let finding = &f.finding;
        assert_eq!(
            alert["labels"],
            json!({
                "alertname": ALERTNAME,
                "check": finding.check,
                "severity": finding.severity.as_str(),
                "fingerprint": fp,
                "token": BYPASS_KEY,
            }),
            "{fp}: labels"
        );
        assert_eq!(
            alert["annotations"]["summary"],
            finding.summary.as_str(),
            "{fp}"
        );
        assert_eq!(
            alert["annotations"]["description"],
            format!("{}\n\nFix: {}", finding.why, finding.fix),
            "{fp}"
        );
        assert_eq!(alert["receivers"][0]["name"], RECEIVER, "{fp}: {alert}");
        assert_eq!(
            time_of(&alert["startsAt"], "startsAt"),
            f.first_seen,
            "{fp}: startsAt is when the first replica first saw it: {alert}"
        );
    }
    let bypass = format!("token-bypass-2fa:{BYPASS_KEY}");
    assert_eq!(
        fired.findings[&bypass].finding.severity.as_str(),
        "critical"
    );
    let others: Vec<&Value> = fired
        .alerts
        .iter()
        .filter(|x| {
            x["labels"]["fingerprint"]
                .as_str()
                .is_none_or(|fp| !fired.fingerprints.contains(fp))
        })
        .collect();
    assert!(others.is_empty(), "alerts for no finding: {others:#?}");

    // One email per finding (its own group), however many times both replicas re-send it.
    for fp in &fired.fingerprints {
        wait_until(&format!("the email about {fp}"), SLOW, || {
            (emails_about(&smtp, fp).0 >= 1).then_some(())
        });
    }
    let emailed_after = t0.elapsed();
    hold(
        "with both replicas re-sending every second, each finding has one email",
        QUIET,
        || {
            for fp in &fired.fingerprints {
                let got = emails_about(&smtp, fp);
                if got != (1, 0) {
                    return Err(format!(
                        "{fp}: (firing, resolved) emails {got:?}: {:?}",
                        smtp.subjects()
                    ));
                }
            }
            Ok(())
        },
    );
    let bypass_mail = smtp
        .messages()
        .into_iter()
        .find(|m| m.subject.contains(&format!(" {bypass} ")))
        .expect("the bypass-2FA email");
    assert_eq!(
        bypass_mail.subject,
        format!("[FIRING:1] token-bypass-2fa {bypass} ({ALERTNAME} critical {BYPASS_KEY})"),
        "{}",
        bypass_mail.raw
    );
    assert_eq!(bypass_mail.to, "npm-security@example.org");
    assert!(
        bypass_mail.body.contains(&format!(
            "summary = {}",
            fired.findings[&bypass].finding.summary
        )),
        "{}",
        bypass_mail.body
    );

    // Replica b dies; a keeps the alerts; the token goes; a resolves it, with b still down.
    let killed = Instant::now();
    am_bodies.extend(kill_b_and_resolve(reg, &am, &smtp, &a, &mut b, &fired));
    let resolved_after = killed.elapsed();
    for fp in &fired.fingerprints {
        wait_until(&format!("the resolved email about {fp}"), SLOW, || {
            (emails_about(&smtp, fp) == (1, 1)).then_some(())
        });
    }
    let resolved_email_after = killed.elapsed();

    // Replica b comes back on its old state, which still holds every finding as active. Its own
    // cycles resolve them; nothing re-opens in Alertmanager and no email goes out.
    let restarted = Utc::now();
    b.daemon.spawn();
    let restart_ready = Instant::now();
    wait_until(
        "replica b ran two more token cycles after its restart",
        SLOW,
        || {
            let last = b.metric(
                "npm_watchdog_check_last_success_timestamp_seconds",
                &[("check", "tokens")],
            )?;
            (last >= (restarted.timestamp() + 2) as f64).then_some(())
        },
    );
    let held = b.active();
    for fp in &fired.fingerprints {
        assert!(
            !held.contains_key(fp),
            "replica b's own cycles did not resolve {fp}:\n{}",
            b.log()
        );
    }
    wait_until("replica b's outbox is delivered", SLOW, || {
        (b.metric(
            "npm_watchdog_notification_queue",
            &[("sink", "alertmanager")],
        )? == 0.0)
            .then_some(())
    });
    hold(
        "after replica b's restart, nothing it held re-opens in Alertmanager and no email is sent",
        HOLD,
        || {
            let (body, alerts) = am_alerts(&am, "")?;
            for fp in &fired.fingerprints {
                let listed = with_fp(&alerts, fp);
                if !listed.is_empty() {
                    return Err(format!(
                        "{fp} is listed again: {listed:#?}\nreplica b's log:\n{}",
                        b.log()
                    ));
                }
                let got = emails_about(&smtp, fp);
                if got != (1, 1) {
                    return Err(format!(
                        "{fp}: (firing, resolved) emails {got:?}: {:?}",
                        smtp.subjects()
                    ));
                }
            }
            am_bodies.push(body);
            Ok(())
        },
    );
    let after_restart = restart_ready.elapsed();

    // No credential anywhere a user or an attacker could read it.
    let (groups, _) = am.get_json("/api/v2/alerts/groups").expect("alert groups");
    let mut texts: Vec<(String, String)> = am_bodies
        .into_iter()
        .map(|b| ("GET /api/v2/alerts".to_string(), b))
        .collect();
    texts.push(("GET /api/v2/alerts/groups".into(), groups));
    texts.extend(email_texts(&smtp));
    texts.push(("replica a's log".into(), a.log()));
    texts.push(("replica b's log".into(), b.log()));
    texts.push(("alertmanager's log".into(), am.log_text()));
    testkit::secrets::assert_absent(&[TOKEN], texts);
    assert!(a.log().contains("finding resolved"), "{}", a.log());

    println!(
        "{} findings; aiosmtpd + alertmanager up: {peers_up:?}; both replicas ready: {replicas_up:?}; \
         all listed in alertmanager: {listed_after:?}; all emailed: {emailed_after:?} (after start); \
         killed b, held {HOLD:?}, removed the token, gone from alertmanager: {resolved_after:?}, \
         resolved emails: {resolved_email_after:?} (after the kill); \
         b restarted, cycled and watched {HOLD:?}: {after_restart:?}; total {:?}",
        fired.fingerprints.len(),
        t0.elapsed()
    );
    println!("emails: {:#?}", smtp.subjects());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_while_it_cannot_read_the_registry_does_not_reopen_what_the_other_resolved(
) {
    let reg = account_with_bypass_token(Utc::now() - chrono::Duration::days(3)).await;
    tokio::task::block_in_place(|| restart_blind(&reg));
}

fn restart_blind(reg: &FakeRegistry) {
    let t0 = Instant::now();
    let (smtp, am) = alertmanager_with_email();
    let root = tempfile::tempdir().expect("tempdir");
    let a = Replica::start(reg, root.path(), "a", am.port, "");
    let mut b = Replica::start(reg, root.path(), "b", am.port, "");
    let fired = both_fired(&am, &a, &b);
    for fp in &fired.fingerprints {
        wait_until(&format!("the email about {fp}"), SLOW, || {
            (emails_about(&smtp, fp).0 >= 1).then_some(())
        });
    }
    let mut am_bodies = kill_b_and_resolve(reg, &am, &smtp, &a, &mut b, &fired);
    for fp in &fired.fingerprints {
        wait_until(&format!("the resolved email about {fp}"), SLOW, || {
            (emails_about(&smtp, fp) == (1, 1)).then_some(())
        });
    }

    // Replica b comes back with a credential the registry refuses (rotated everywhere but here): its
    // token cycles fail, so it cannot know the findings its state holds are gone. It must not
    // announce them again: replica a resolved them, and b has confirmed nothing since it started.
    fs::write(&b.token_file, REFUSED_TOKEN).expect("replace b's credential");
    b.daemon.spawn();
    let restarted = Instant::now();
    wait_until("replica b's token cycles fail", SLOW, || {
        (b.metric("npm_watchdog_check_success", &[("check", "tokens")])? == 0.0).then_some(())
    });
    let held = b.active();
    for fp in &fired.fingerprints {
        assert!(
            held.contains_key(fp),
            "replica b cannot read the tokens, yet its state dropped {fp}"
        );
    }
    hold(
        "replica b, restarted while the registry refuses it, must not re-open in Alertmanager the \
         findings replica a resolved (its state still holds them, but no cycle of b has confirmed \
         them since it started; see mirror_firing in src/daemon/cycle.rs, which counts a group as \
         confirmed after any cycle, even one whose read failed)",
        HOLD,
        || {
            let (body, alerts) = am_alerts(&am, "")?;
            for fp in &fired.fingerprints {
                let listed = with_fp(&alerts, fp);
                if !listed.is_empty() {
                    return Err(format!("{fp} is active again: {listed:#?}"));
                }
                let got = emails_about(&smtp, fp);
                if got != (1, 1) {
                    return Err(format!(
                        "{fp}: (firing, resolved) emails {got:?}: {:?}",
                        smtp.subjects()
                    ));
                }
            }
            am_bodies.push(body);
            Ok(())
        },
    );
    let mut texts: Vec<(String, String)> = am_bodies
        .into_iter()
        .map(|b| ("GET /api/v2/alerts".to_string(), b))
        .collect();
    texts.extend(email_texts(&smtp));
    texts.push(("replica a's log".into(), a.log()));
    texts.push(("replica b's log".into(), b.log()));
    testkit::secrets::assert_absent(&[TOKEN, REFUSED_TOKEN], texts);
    println!(
        "b restarted blind and watched {HOLD:?}: {:?}; total {:?}",
        restarted.elapsed(),
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_turning_critical_silences_its_stale_warning() {
    // The bypass-2FA token is a warning until it is `bypass_token_max_age` old, then critical: the
    // same finding (fingerprint) with another severity, so Alertmanager holds the warning alert until
    // it times out. The example's inhibition keeps it quiet meanwhile.
    let max_age = Duration::from_secs(20);
    let reg = account_with_bypass_token(Utc::now() - chrono::Duration::seconds(8)).await;
    tokio::task::block_in_place(|| turning_critical(&reg, max_age));
}

fn turning_critical(reg: &FakeRegistry, max_age: Duration) {
    let t0 = Instant::now();
    let (smtp, am) = alertmanager_with_email();
    let root = tempfile::tempdir().expect("tempdir");
    // Only this check goes to Alertmanager. Merging replaces an array of tables: the whole section.
    let extra = format!(
        "[policy]\nbypass_token_max_age = \"{}s\"\n\n[[alerts.alertmanager]]\nurls = [\"http://127.0.0.1:{}\"]\nresend_interval = \"1s\"\nchecks = [\"token-bypass-2fa\"]\n",
        max_age.as_secs(),
        am.port
    );
    let a = Replica::start(reg, root.path(), "a", am.port, &extra);
    let fp = format!("token-bypass-2fa:{BYPASS_KEY}");
    let by_severity = |alerts: &[Value], severity: &str| -> Option<Value> {
        with_fp(alerts, &fp)
            .into_iter()
            .find(|x| x["labels"]["severity"] == severity)
            .cloned()
    };
    let warning = wait_until("the warning alert, active", SLOW, || {
        let (_, alerts) = am_alerts(&am, "").ok()?;
        by_severity(&alerts, "warning").filter(|x| x["status"]["state"] == "active")
    });
    assert!(
        by_severity(&am_alerts(&am, "").expect("alerts").1, "critical").is_none(),
        "the token is younger than {max_age:?}: {warning}"
    );
    let (warn_mail, _) = smtp.wait_for("[FIRING:1] token-bypass-2fa", SLOW);
    assert!(
        warn_mail.subject.contains("warning"),
        "{}",
        warn_mail.subject
    );

    let (critical, suppressed) = wait_until_or_none(SLOW, || {
        let (_, alerts) = am_alerts(&am, "").ok()?;
        let critical = by_severity(&alerts, "critical")?;
        let warning = by_severity(&alerts, "warning")?;
        (warning["status"]["state"] == "suppressed").then_some((critical, warning))
    })
    .unwrap_or_else(|| {
        panic!(
            "the warning was never inhibited by the critical alert of the same finding: {:?}\nalertmanager log:\n{}",
            am_alerts(&am, "").map(|(b, _)| b),
            am.log_text()
        )
    });
    assert_eq!(critical["status"]["state"], "active", "{critical}");
    assert_eq!(
        suppressed["status"]["inhibitedBy"],
        json!([critical["fingerprint"]]),
        "the warning names the critical alert as what inhibits it: {suppressed}"
    );
    // The warning is no longer re-sent: it times out, the critical alert stays.
    wait_until("the stale warning times out", SLOW, || {
        let (_, alerts) = am_alerts(&am, "").ok()?;
        by_severity(&alerts, "warning").is_none().then_some(())
    });
    let (_, alerts) = am_alerts(&am, "").expect("alerts");
    assert_eq!(
        by_severity(&alerts, "critical").map(|x| x["status"]["state"].clone()),
        Some(json!("active"))
    );
    let crit_mail = wait_until("the email about the critical finding", SLOW, || {
        smtp.messages().into_iter().find(|m| {
            m.subject.starts_with("[FIRING:1] token-bypass-2fa") && m.subject.contains("critical")
        })
    });
    println!(
        "warning then critical in {:?}; emails: {:?}; a's log lines: {}",
        t0.elapsed(),
        smtp.subjects(),
        a.log().lines().count()
    );
    testkit::secrets::assert_absent(&[TOKEN], [("the critical email", &crit_mail.raw)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_stays_active_between_slow_cycles_at_the_shortest_resend_interval() {
    let reg = account_with_bypass_token(Utc::now() - chrono::Duration::days(3)).await;
    tokio::task::block_in_place(|| slow_cycles(&reg));
}

fn slow_cycles(reg: &FakeRegistry) {
    let (_smtp, am) = alertmanager_with_email();
    let root = tempfile::tempdir().expect("tempdir");
    // The token group on its default schedule: after the first cycle, none for 30 s. The sink must
    // still re-send every resend_interval (1 s, the least it accepts), or its alerts end after 4 s.
    let a = Replica::start(
        reg,
        root.path(),
        "a",
        am.port,
        "[schedule]\ntokens = \"30s\"\n",
    );
    let fp = format!("token-bypass-2fa:{BYPASS_KEY}");
    wait_until("the alert, active", SLOW, || {
        let (_, alerts) = am_alerts(&am, "").ok()?;
        with_fp(&alerts, &fp)
            .iter()
            .any(|x| x["status"]["state"] == "active")
            .then_some(())
    });
    let started = Instant::now();
    hold(
        "with resend_interval = \"1s\" and no cycle for 30 s, the alert must stay active (it ends 4 s \
         after each post, so it must be re-sent within that; the sink re-sends only on a delivery \
         pass, and without a cycle src/delivery.rs makes one every IDLE_PASS = 5 s)",
        HOLD,
        || {
            let (_, alerts) = am_alerts(&am, "")?;
            match with_fp(&alerts, &fp).first() {
                Some(x) if x["status"]["state"] == "active" => Ok(()),
                other => Err(format!(
                    "{:?} after the first cycle, the alert is {other:?}\nreplica log:\n{}",
                    started.elapsed(),
                    a.log()
                )),
            }
        },
    );
}
