//! The monitoring that ships with the daemon: the Prometheus alerting rules
//! (`config/prometheus/npm-watchdog.rules.yml`), their promtool unit tests, and the Grafana dashboard
//! (`config/grafana/npm-watchdog.json`).
//!
//! - promtool (Debian package `prometheus`) checks the rules and runs their unit tests;
//! - every metric name that the rules and the dashboard query must exist in a live `/metrics` of the real
//!   binary, run against the in-process fake registry;
//! - a real Prometheus scrapes that daemon with the rules file loaded unchanged (the critical-finding
//!   alert has no `for:`, so nothing is rewritten) and must report `NpmWatchdogCriticalFinding` firing
//!   for the bypass-2FA token, evaluate every rule without error, and accept every dashboard query;
//! - the same chain with a real Alertmanager (Debian package `prometheus-alertmanager`) routing the alert
//!   to an email receiver must deliver Alertmanager's default email to a real SMTP server (aiosmtpd), and
//!   neither the email nor Alertmanager's API may carry the registry token.
//!
//! A missing promtool, prometheus, prometheus-alertmanager or aiosmtpd is a failure, never a skip: run
//! `scripts/install-peers.sh`.

use testkit::fake_registry;
use testkit::peers;
use testkit::test_config;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use fake_registry::{packument_doc, FakeRegistry, TOKEN};
use peers::{amtool_check_config, free_port, http, start_alertmanager, wait_until, Server};
use serde_json::{json, Value};
use test_config::TestConfig;

const RULES: &str = "config/prometheus/npm-watchdog.rules.yml";
const RULES_TESTS: &str = "config/prometheus/npm-watchdog.rules.test.yml";
const DASHBOARD: &str = "config/grafana/npm-watchdog.json";
/// The scrape job name the rules assume (config/prometheus/README.md).
const JOB: &str = "npm-watchdog";
/// Every alert the rules file must define.
const ALERTS: [&str; 9] = [
    "NpmWatchdogCriticalFinding",
    "NpmWatchdogCheckFailing",
    "NpmWatchdogDown",
    "NpmWatchdogAbsent",
    "NpmWatchdogNotificationsFailing",
    "NpmWatchdogNotificationsRejected",
    "NpmWatchdogStateWriteFailing",
    "NpmWatchdogCredentialExpiring",
    "NpmWatchdogConfigReloadFailed",
];
/// Generous bound for slow steps (process start, first cycle, first scrape).
const SLOW: Duration = Duration::from_secs(60);
/// How long the daemon may take to export every series (first cycles, first notification).
const SERIES_TIMEOUT: Duration = Duration::from_secs(20);
const INSTALL_HINT: &str = "run scripts/install-peers.sh";

fn repo_file(rel: &str) -> PathBuf {
    peers::repo_root().join(rel)
}

fn read(rel: &str) -> String {
    let path = repo_file(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// Metric names in PromQL
// ---------------------------------------------------------------------------

/// Aggregations, operators and modifiers: words in PromQL that are not series names.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Keywords that may be followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Series that Prometheus makes itself, not the daemon.
const NOT_EXPORTED: &[&str] = &["up", "ALERTS", "ALERTS_FOR_STATE"];

/// Index just past the string literal that starts at `i`.
fn skip_string(chars: &[char], i: usize) -> Result<usize, String> {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() {
        match chars[j] {
            '\\' if quote != '`' => j += 2,
            c if c == quote => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err(format!("unterminated string starting at {i}"))
}

/// Index just past the bracket group (`{…}`, `[…]`, `(…)`) that opens at `i`; strings inside are
/// skipped whole, so a `}` in a label value does not end it.
fn skip_group(chars: &[char], i: usize) -> Result<usize, String> {
    let open = chars[i];
    let close = match open {
        '{' => '}',
        '[' => ']',
        '(' => ')',
        other => return Err(format!("not a bracket: {other}")),
    };
    let mut depth = 0usize;
    let mut j = i;
    while j < chars.len() {
        match chars[j] {
            '"' | '\'' | '`' => {
                j = skip_string(chars, j)?;
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    Err(format!("unclosed {open} at {i}"))
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The series names a PromQL expression selects: identifiers outside label matchers, strings and
/// ranges that are neither functions (followed by `(`), keywords, Grafana variables (`$x`) nor label
/// lists of `by`/`on`/…. Also accepts Grafana's `label_values(<selector>, <label>)`.
fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let expr = match expr.trim().strip_prefix("label_values(") {
        // The first argument is a selector, the last one a label name.
        Some(rest) => match rest.rfind(',') {
            Some(comma) => rest[..comma].to_string(),
            None => rest.trim_end_matches(')').to_string(),
        },
        None => expr.to_string(),
    };
    let chars: Vec<char> = expr.chars().collect();
    let next_non_space = |from: usize| {
        (from..chars.len())
            .find(|&k| !chars[k].is_whitespace())
            .map(|k| (k, chars[k]))
    };
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i)?;
        } else if matches!(c, '{' | '[') {
            i = skip_group(&chars, i)?;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '$' {
            i += 1;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers and durations: 3600, 1e3, 0x1f, 5m, 1.5.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = next_non_space(i);
            if LABEL_LISTS.contains(&word.as_str()) {
                if let Some((k, '(')) = next {
                    i = skip_group(&chars, k)?;
                }
            } else if matches!(next, Some((_, '('))) {
                // A function call; its arguments are scanned as they come.
            } else if KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
            } else {
                out.insert(word);
            }
        } else {
            i += 1;
        }
    }
    Ok(out)
}

/// `name` without a histogram/summary sample suffix.
fn family_of(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// Every `expr:` of a rules file, inline or as a `|`/`>` block.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let block: Vec<&str> = lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            out.push(block.join("\n").trim().to_string());
        } else if let Some(q) = rest
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .or_else(|| rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
        {
            out.push(q.to_string());
        } else {
            out.push(rest.to_string());
        }
    }
    out
}

/// Every query of the dashboard: each `expr` and the `query` of each `query` variable, with where
/// it was found.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let here = match map.get("title").and_then(Value::as_str) {
                        Some(t) => format!("{path}/{t:?}"),
                        None => path.to_string(),
                    };
                    if k == "expr" {
                        if let Some(e) = child.as_str() {
                            out.push((here.clone(), e.to_string()));
                        }
                    }
                    walk(child, &format!("{here}.{k}"), out);
                }
            }
            Value::Array(items) => {
                for (n, item) in items.iter().enumerate() {
                    walk(item, &format!("{path}[{n}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, "", &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] == "query" {
            let q = var["query"]["query"]
                .as_str()
                .or_else(|| var["query"].as_str())
                .unwrap_or_else(|| panic!("variable {} has no query: {var}", var["name"]));
            out.push((format!("templating/{}", var["name"]), q.to_string()));
        }
    }
    out
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: not JSON: {e}"))
}

/// Metric names used by the rules and the dashboard, each with the places that use it.
fn names_used() -> BTreeMap<String, BTreeSet<String>> {
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let rules = read(RULES);
    let exprs = rule_exprs(&rules);
    assert_eq!(
        exprs.len(),
        rules.matches("- alert:").count(),
        "one expr per alert in {RULES}: {exprs:#?}"
    );
    let mut queries: Vec<(String, String)> = exprs
        .into_iter()
        .enumerate()
        .map(|(n, e)| (format!("{RULES} rule {n}"), e))
        .collect();
    queries.extend(
        dashboard_queries(&dashboard())
            .into_iter()
            .map(|(w, e)| (format!("{DASHBOARD} {w}"), e)),
    );
    for (place, expr) in queries {
        let names = metric_names(&expr).unwrap_or_else(|e| panic!("{place}: {e} in {expr}"));
        assert!(
            !names.is_empty() || expr.contains("up{"),
            "{place}: no metric in {expr}"
        );
        for name in names {
            if NOT_EXPORTED.contains(&name.as_str()) {
                continue;
            }
            used.entry(name).or_default().insert(place.clone());
        }
    }
    used
}

/// Metric family and sample names in a text exposition.
fn exposed_names(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split_whitespace().next() {
                names.insert(name.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// Names in `used` that the scrape lacks, with where each is used.
fn missing_in(scrape: &str, used: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let have = exposed_names(scrape);
    used.iter()
        .filter(|(name, _)| !have.contains(*name) && !have.contains(family_of(name)))
        .map(|(name, places)| format!("{name} (used in {places:?})"))
        .collect()
}

// ---------------------------------------------------------------------------
// The daemon, run for real against the fake registry
// ---------------------------------------------------------------------------

/// A key prefix (six characters) of the daemon's own token, allowlisted with `self = true`.
const OWN_KEY: &str = "82e3930f1c5a6a7f0d2b9c44e1f3a5b6";
const BULK_KEY: &str = "b5c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5";
const TRUSTED_PKG: &str = "@acme/widget";
const UNTRUSTED_PKG: &str = "@acme/legacy";

fn iso(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn raw_token(
    key: &str,
    name: &str,
    bypass: bool,
    write: bool,
    age_days: i64,
    lifetime_days: i64,
) -> Value {
    let now = Utc::now();
    json!({
        "name": name, "key": key, "token": "npm_ab...yz", "cidr": null, "bypass_2fa": bypass,
        "created": iso(now - chrono::Duration::days(age_days)),
        "expiry": iso(now + chrono::Duration::days(lifetime_days)),
        "permissions": [{"name": "package", "action": if write { "write" } else { "read" }}],
        "revoked": null
    })
}

struct Daemon {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        match http("GET", &self.url("/metrics"), None, None) {
            Ok((200, text)) => text,
            other => panic!("GET /metrics: {other:?}\ndaemon log:\n{}", self.log_text()),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A fake registry holding an old bypass-2FA token (a critical `token-bypass-2fa` finding), the daemon's
/// own read-only token with an expiry, a package released through trusted publishing and one released
/// with a token after the cutoff; and the real daemon watching it until `/readyz` answers 200.
async fn watched_account(dir: &Path) -> (FakeRegistry, Daemon) {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(vec![
        raw_token(OWN_KEY, "watchdog", false, false, 10, 60),
        raw_token(BULK_KEY, "bulk-hardening", true, true, 3, 4),
    ]);
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));
    reg.add_packument(
        TRUSTED_PKG,
        packument_doc(
            TRUSTED_PKG,
            &[(
                "1.0.0",
                "2026-02-01T00:00:00.000Z",
                Some("github"),
                "GitHub Actions",
            )],
            &["alice"],
        ),
    );
    reg.add_packument(
        UNTRUSTED_PKG,
        packument_doc(
            UNTRUSTED_PKG,
            &[("2.0.0", "2026-03-01T00:00:00.000Z", None, "alice")],
            &["alice"],
        ),
    );
    fs::write(dir.join("token"), TOKEN).expect("token file");
    let port = free_port();
    let allow_until = (Utc::now() + chrono::Duration::days(30)).format("%Y-%m-%d");
    let config = dir.join("config.toml");
    TestConfig::new(&reg.url, &dir.join("token"), &dir.join("state.db"))
        .listen(port)
        .no_retries()
        .with(&format!(
            r#"[schedule]
tokens = "2s"
packages = "2s"

[watch]
packages = ["{TRUSTED_PKG}", "{UNTRUSTED_PKG}"]

[policy]
allow_tokens = [{{ key_prefix = "{own}", reason = "the watchdog's own read-only credential", expires = "{allow_until}", self = true }}]
"#,
            own = &OWN_KEY[..6],
        ))
        .write(&config);
    let log = dir.join("daemon.log");
    let err = File::create(&log).expect("daemon log");
    let child = Command::new(env!("CARGO_BIN_EXE_npm-watchdog"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("RUST_LOG", "info")
        // The daemon must not read the developer's own npm config or systemd's directories.
        .env("NPM_CONFIG_USERCONFIG", dir.join("no-npmrc"))
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("start npm-watchdog");
    let mut daemon = Daemon {
        child: Some(child),
        port,
        log,
    };
    let ready = daemon.url("/readyz");
    wait_until("npm-watchdog /readyz answers 200", SLOW, || {
        if let Some(Ok(Some(status))) = daemon.child.as_mut().map(Child::try_wait) {
            panic!("npm-watchdog exited with {status}:\n{}", daemon.log_text());
        }
        matches!(http("GET", &ready, None, None), Ok((200, _))).then_some(())
    });
    (reg, daemon)
}

// ---------------------------------------------------------------------------
// Real Prometheus and Alertmanager
// ---------------------------------------------------------------------------

/// A real Prometheus with `config` as its prometheus.yml.
fn start_prometheus(config: &str) -> Server {
    Server::start(
        "prometheus",
        "prometheus",
        "prometheus.yml",
        config,
        "--storage.tsdb.path",
        &[],
    )
}

/// A prometheus.yml that scrapes the daemon on `daemon_port` every second as job `npm-watchdog`,
/// evaluates the rules file of the repository unchanged every second, and sends alerts to the
/// Alertmanager on `alertmanager_port` if given.
fn prometheus_config(daemon_port: u16, alertmanager_port: Option<u16>) -> String {
    // The rules file is loaded as it is in the repository: NpmWatchdogCriticalFinding has no `for:`.
    let mut config = format!(
        r#"# Generated by tests/monitoring.rs
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - '{rules}'
scrape_configs:
  - job_name: {JOB}
    static_configs:
      - targets: ['127.0.0.1:{daemon_port}']
"#,
        rules = repo_file(RULES).display(),
    );
    if let Some(port) = alertmanager_port {
        config.push_str(&format!(
            r#"alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{port}']
"#
        ));
    }
    config
}

/// Percent-encodes a query parameter value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

fn run_promtool(args: &[&str]) -> String {
    let out = Command::new(peers::promtool())
        .args(args)
        .current_dir(repo_file("config/prometheus"))
        .output()
        .unwrap_or_else(|e| panic!("run promtool: {e}; {INSTALL_HINT}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed with {}:\n{text}",
        args.join(" "),
        out.status
    );
    text
}

#[test]
fn promtool_checks_the_rules_and_passes_their_unit_tests() {
    let started = Instant::now();
    let text = run_promtool(&["check", "rules", "npm-watchdog.rules.yml"]);
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
        "{text}"
    );
    let text = run_promtool(&["test", "rules", "npm-watchdog.rules.test.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
    println!("promtool check + test rules: {:?}", started.elapsed());
}

#[test]
fn every_alert_is_defined_labelled_and_tested_both_ways() {
    let rules = read(RULES);
    let blocks: Vec<&str> = rules.split("- alert: ").skip(1).collect();
    let defined: Vec<&str> = blocks
        .iter()
        .map(|b| b.lines().next().unwrap_or_default().trim())
        .collect();
    assert_eq!(
        defined.iter().copied().collect::<BTreeSet<_>>(),
        ALERTS.into_iter().collect::<BTreeSet<_>>(),
        "alerts in {RULES}"
    );
    for b in &blocks {
        let name = b.lines().next().unwrap_or_default();
        for key in ["severity: ", "summary: ", "description: "] {
            assert!(b.contains(key), "{name} has no {key}");
        }
    }
    assert!(
        rules.contains(&format!("up{{job=\"{JOB}\"}}")),
        "Down/Absent look at the {JOB} job"
    );

    // In the promtool tests: a case that expects the alert and one that expects none, per alert.
    let tests = read(RULES_TESTS);
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut current = String::new();
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = name.trim().to_string();
        } else if let Some(rest) = line.strip_prefix("exp_alerts:") {
            let entry = cases.entry(current.clone()).or_default();
            if rest.trim() == "[]" {
                entry.1 += 1;
            } else {
                entry.0 += 1;
            }
        }
    }
    for alert in ALERTS {
        let (firing, quiet) = cases.get(alert).copied().unwrap_or_default();
        assert!(
            firing >= 1 && quiet >= 1,
            "{alert}: {firing} firing and {quiet} non-firing cases in {RULES_TESTS}"
        );
    }
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = |e: &str| -> Vec<String> {
        metric_names(e)
            .unwrap_or_else(|err| panic!("{err}: {e}"))
            .into_iter()
            .collect()
    };
    assert_eq!(
        names(r#"sum by (job, check) (rate(a_total{x="}", y=~"$v"}[$__rate_interval])) > 0"#),
        ["a_total"]
    );
    assert_eq!(
        names("time() - (b or on (job) (c * 0 + on (job) group_left d)) > 3600 and on (check) e == bool 0"),
        ["b", "c", "d", "e"]
    );
    assert_eq!(names("absent(up{job=\"x\"})"), ["up"]);
    assert_eq!(
        names("histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m] offset 1h)))"),
        ["h_bucket"]
    );
    assert_eq!(family_of("h_bucket"), "h");
    assert_eq!(
        names(r#"label_values(npm_watchdog_build_info{job="$job"}, instance)"#),
        ["npm_watchdog_build_info"]
    );
    assert_eq!(
        rule_exprs("  - alert: A\n    expr: a > 0\n  - alert: B\n    expr: |\n      b\n      or c\n    for: 1m\n"),
        ["a > 0", "b\nor c"]
    );
}

#[test]
fn dashboard_is_importable_with_a_datasource_variable() {
    let text = read(DASHBOARD);
    let d = dashboard();
    assert_eq!(d["uid"], "npm-watchdog");
    assert!(d["id"].is_null(), "an importable dashboard has no id");
    assert!(
        d["schemaVersion"].as_u64().unwrap_or(0) >= 39,
        "schemaVersion"
    );
    assert!(
        d.get("__inputs").is_none() && !text.contains("${DS_"),
        "the data source comes from the variable, not the import dialog"
    );
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    assert!(
        vars.iter().any(|v| v["type"] == "datasource"
            && v["name"] == "datasource"
            && v["query"] == "prometheus"),
        "a datasource variable of Prometheus data sources"
    );
    let uses_variable = |v: &Value| v["datasource"]["uid"] == "${datasource}";
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, u64, u64, u64, u64)> = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().expect("x"),
            g["y"].as_u64().expect("y"),
            g["w"].as_u64().expect("w"),
            g["h"].as_u64().expect("h"),
        );
        assert!(x + w <= 24, "{title} is wider than the grid");
        for (other, ox, oy, ow, oh) in &boxes {
            let overlap = x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h;
            assert!(!overlap, "{title} overlaps {other}");
        }
        boxes.push((title.clone(), x, y, w, h));
        if p["type"] == "row" {
            continue;
        }
        assert!(
            uses_variable(p),
            "{title}: datasource is not ${{datasource}}"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            assert!(
                uses_variable(t),
                "{title}: a target's datasource is not ${{datasource}}"
            );
        }
    }
    // What the dashboard must show (issue item 4).
    let exprs: Vec<String> = dashboard_queries(&d).into_iter().map(|(_, e)| e).collect();
    for wanted in [
        "npm_watchdog_tokens{",
        "sum by (access, bypass_2fa)",
        "npm_watchdog_token_created_timestamp_seconds{bypass_2fa=\"true\"",
        "npm_watchdog_findings{",
        "sum by (check, severity)",
        "npm_watchdog_check_success{",
        "npm_watchdog_check_duration_seconds{",
        "npm_watchdog_findings{check=\"publish-untrusted\"",
        "npm_watchdog_package_latest_trusted_publish{",
        "npm_watchdog_notifications_total{",
        "npm_watchdog_notification_queue{",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(wanted)),
            "no dashboard query contains {wanted}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_in_the_rules_and_the_dashboard_is_exported() {
    let used = names_used();
    for must in [
        "npm_watchdog_findings",
        "npm_watchdog_check_success",
        "npm_watchdog_notifications_total",
        "npm_watchdog_notification_queue",
        "npm_watchdog_credential_expiry_timestamp_seconds",
        "npm_watchdog_package_latest_trusted_publish",
    ] {
        assert!(used.contains_key(must), "{must} is not used: {used:?}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_reg, daemon) = watched_account(dir.path()).await;
    // Some series appear only after the first notification or the first packages run.
    let started = Instant::now();
    let mut last = String::new();
    let complete = wait_until_or_none(SERIES_TIMEOUT, || {
        last = daemon.metrics();
        missing_in(&last, &used).is_empty().then_some(())
    });
    let missing = missing_in(&last, &used);
    assert!(
        complete.is_some() && missing.is_empty(),
        "metrics used by the rules or the dashboard but not in /metrics after {SERIES_TIMEOUT:?}:\n  {}\n\n/metrics:\n{last}\n\ndaemon log:\n{}",
        missing.join("\n  "),
        daemon.log_text()
    );
    println!(
        "{} metric names used by the rules and the dashboard, all in /metrics after {:?}",
        used.len(),
        started.elapsed()
    );
    assert!(
        last.contains("npm_watchdog_findings{check=\"token-bypass-2fa\",severity=\"critical\"} 1"),
        "{last}"
    );
    peers::promtool_check_metrics(&last).expect("promtool accepts /metrics");
}

/// Like [`wait_until`], but returns `None` at the deadline instead of panicking.
fn wait_until_or_none<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The active (pending or firing) alerts named `alertname`, only those with this `check` label if given.
fn active_alerts(alerts: &Value, alertname: &str, check: Option<&str>) -> Vec<Value> {
    alerts["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| {
            a["labels"]["alertname"] == alertname && check.is_none_or(|c| a["labels"]["check"] == c)
        })
        .cloned()
        .collect()
}

/// Waits until `prom` reports `NpmWatchdogCriticalFinding` firing for `check` and returns that alert;
/// panics with the alerts, targets, rules and both logs otherwise.
fn wait_critical_firing(prom: &Server, daemon: &Daemon, check: &str) -> Value {
    let firing = wait_until_or_none(SLOW, || {
        let alerts = prom.api("/api/v1/alerts").ok()?;
        active_alerts(&alerts, "NpmWatchdogCriticalFinding", Some(check))
            .into_iter()
            .find(|a| a["state"] == "firing")
    });
    firing.unwrap_or_else(|| {
        panic!(
            "NpmWatchdogCriticalFinding{{check=\"{check}\"}} not firing after {SLOW:?}\nalerts: {:?}\ntargets: {:?}\nrules: {:?}\nprometheus log:\n{}\ndaemon log:\n{}",
            prom.api("/api/v1/alerts"),
            prom.api("/api/v1/targets"),
            prom.api("/api/v1/rules"),
            prom.log_text(),
            daemon.log_text()
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn real_prometheus_fires_the_critical_finding_alert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_reg, daemon) = watched_account(dir.path()).await;
    let started = Instant::now();
    let prom = start_prometheus(&prometheus_config(daemon.port, None));
    let ready_after = started.elapsed();
    let alert = wait_critical_firing(&prom, &daemon, "token-bypass-2fa");
    let fired_after = started.elapsed();
    println!("prometheus ready: {ready_after:?}; NpmWatchdogCriticalFinding firing: {fired_after:?} after start");
    let labels = &alert["labels"];
    assert_eq!(labels["severity"], "critical", "{alert}");
    assert_eq!(labels["job"], JOB, "{alert}");
    assert_eq!(
        labels["instance"],
        format!("127.0.0.1:{}", daemon.port),
        "{alert}"
    );
    assert_eq!(
        alert["annotations"]["summary"],
        format!(
            "npm-watchdog: 1 critical token-bypass-2fa finding(s) on 127.0.0.1:{}",
            daemon.port
        ),
        "{alert}"
    );

    // The untrusted publish is the other critical finding of this account.
    wait_critical_firing(&prom, &daemon, "publish-untrusted");

    // Every rule has been evaluated without error against the real series.
    let rules_data = wait_until("every rule evaluated", SLOW, || {
        let data = prom.api("/api/v1/rules").ok()?;
        let rules: Vec<Value> = data["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        (rules.len() == ALERTS.len() && rules.iter().all(|r| r["health"] != "unknown"))
            .then_some(rules)
    });
    for r in &rules_data {
        assert_eq!(
            r["health"], "ok",
            "rule {} failed: {}",
            r["name"], r["lastError"]
        );
    }

    // A healthy, scraped daemon with a credential valid for 60 days raises nothing else.
    let alerts = prom.api("/api/v1/alerts").expect("alerts");
    for quiet in ALERTS
        .iter()
        .filter(|a| **a != "NpmWatchdogCriticalFinding")
    {
        let found = active_alerts(&alerts, quiet, None);
        assert!(found.is_empty(), "{quiet} is active: {found:?}");
    }
    let targets = prom.api("/api/v1/targets").expect("targets");
    assert_eq!(targets["activeTargets"][0]["health"], "up", "{targets}");

    // Every dashboard query is valid PromQL for the real Prometheus.
    let mut empty = Vec::new();
    for (place, expr) in dashboard_queries(&dashboard()) {
        if let Some(args) = expr
            .strip_prefix("label_values(")
            .and_then(|a| a.strip_suffix(')'))
        {
            // A variable: the label's values among the series the selector matches.
            let (selector, label) = args
                .rsplit_once(',')
                .expect("label_values(selector, label)");
            let selector = selector.trim().replace("$job", JOB);
            let values = prom
                .api(&format!(
                    "/api/v1/label/{}/values?match[]={}",
                    label.trim(),
                    encode(&selector)
                ))
                .unwrap_or_else(|e| panic!("variable query at {place} rejected: {e}"));
            let values: Vec<&str> = values
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let instance = format!("127.0.0.1:{}", daemon.port);
            assert!(
                values == [JOB] || values == [instance.as_str()],
                "variable query at {place} ({expr}) gave {values:?}"
            );
            continue;
        }
        let q = expr
            .replace("$__rate_interval", "1m")
            .replace("$job", JOB)
            .replace("$instance", ".+");
        let data = prom
            .api(&format!("/api/v1/query?query={}", encode(&q)))
            .unwrap_or_else(|e| panic!("dashboard query at {place} rejected: {e}"));
        if data["result"].as_array().is_none_or(Vec::is_empty) {
            empty.push(place);
        }
    }
    println!("dashboard queries with no data yet (valid, just empty): {empty:?}");
    drop(prom);
    drop(daemon);
}

/// An alertmanager.yml that routes every alert to one email receiver, delivered through the SMTP
/// server on `smtp_port` without TLS: the same route as config/prometheus/README.md, with one-second
/// grouping so a test does not wait.
fn alertmanager_config(smtp_port: u16) -> String {
    format!(
        r#"# Generated by tests/monitoring.rs
global:
  smtp_from: 'npm-watchdog-alerts@example.test'
  smtp_smarthost: '127.0.0.1:{smtp_port}'
  smtp_require_tls: false
route:
  receiver: security-email
  group_by: [alertname, instance, check]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: security-email
    email_configs:
      - to: 'security@example.test'
"#
    )
}

/// `text` with quoted-printable soft line breaks removed, so a value split across lines is found.
fn unfold_qp(text: &str) -> String {
    text.replace("=\r\n", "").replace("=\n", "")
}

#[tokio::test(flavor = "multi_thread")]
async fn real_alertmanager_emails_the_critical_finding_alert() {
    let smtp = peers::Smtp::start();
    let am = start_alertmanager(&alertmanager_config(smtp.port));
    let dir = tempfile::tempdir().expect("tempdir");

    let started = Instant::now();
    let (_reg, daemon) = watched_account(dir.path()).await;
    let daemon_ready = started.elapsed();
    let prom = start_prometheus(&prometheus_config(daemon.port, Some(am.port)));
    let prom_ready = started.elapsed();
    let finding = "npm_watchdog_findings{check=\"token-bypass-2fa\",severity=\"critical\"} 1";
    wait_until("the daemon exports the critical finding", SLOW, || {
        daemon.metrics().contains(finding).then_some(())
    });
    let exported = started.elapsed();
    let alert = wait_critical_firing(&prom, &daemon, "token-bypass-2fa");
    let prom_firing = started.elapsed();
    let instance = format!("127.0.0.1:{}", daemon.port);
    let summary = format!("npm-watchdog: 1 critical token-bypass-2fa finding(s) on {instance}");
    assert_eq!(alert["annotations"]["summary"], summary, "{alert}");

    // Alertmanager received it from Prometheus.
    let is_ours = |a: &&Value| {
        a["labels"]["alertname"] == "NpmWatchdogCriticalFinding"
            && a["labels"]["check"] == "token-bypass-2fa"
    };
    let listed = wait_until_or_none(SLOW, || {
        let (body, alerts) = am.get_json("/api/v2/alerts").ok()?;
        let ours = alerts.as_array()?.iter().find(is_ours)?.clone();
        (ours["status"]["state"] == "active").then_some((body, ours))
    });
    let Some((am_body, am_alert)) = listed else {
        panic!(
            "Alertmanager does not list NpmWatchdogCriticalFinding{{check=\"token-bypass-2fa\"}} after {SLOW:?}\nalertmanager alerts: {:?}\nprometheus alertmanagers: {:?}\nalertmanager log:\n{}\nprometheus log:\n{}",
            am.get_json("/api/v2/alerts").map(|(b, _)| b),
            prom.api("/api/v1/alertmanagers"),
            am.log_text(),
            prom.log_text()
        );
    };
    let am_listed = started.elapsed();
    let labels = &am_alert["labels"];
    assert_eq!(labels["severity"], "critical", "{am_alert}");
    assert_eq!(labels["job"], JOB, "{am_alert}");
    assert_eq!(labels["instance"], instance, "{am_alert}");
    assert_eq!(am_alert["annotations"]["summary"], summary, "{am_alert}");
    assert_eq!(
        am_alert["receivers"][0]["name"], "security-email",
        "{am_alert}"
    );

    // Alertmanager's default email template: the subject is `[FIRING:<n>]`, the group labels
    // (alertname, check, instance: sorted by name), then the other common labels in parentheses;
    // the body is HTML only and lists every label as `name = value` and every annotation.
    let subject = format!(
        "[FIRING:1] NpmWatchdogCriticalFinding token-bypass-2fa {instance} ({JOB} critical)"
    );
    let mail = wait_until_or_none(SLOW, || {
        smtp.messages().into_iter().find(|m| {
            m.subject.contains("NpmWatchdogCriticalFinding")
                && m.subject.contains("token-bypass-2fa")
        })
    });
    let Some(mail) = mail else {
        panic!(
            "no email for NpmWatchdogCriticalFinding{{check=\"token-bypass-2fa\"}} after {SLOW:?}\nmessages: {:?}\naiosmtpd log:\n{}\nalertmanager log:\n{}",
            smtp.messages(),
            smtp.log_text(),
            am.log_text()
        );
    };
    let emailed = started.elapsed();
    assert_eq!(mail.subject, subject, "{}", mail.raw);
    assert_eq!(
        mail.from, "npm-watchdog-alerts@example.test",
        "{}",
        mail.raw
    );
    assert_eq!(mail.to, "security@example.test", "{}", mail.raw);
    assert!(
        mail.raw.contains("Content-Type: text/html"),
        "the default email is HTML:\n{}",
        mail.raw
    );
    for wanted in [
        "alertname = NpmWatchdogCriticalFinding".to_string(),
        "check = token-bypass-2fa".to_string(),
        "severity = critical".to_string(),
        format!("instance = {instance}"),
        format!("summary = {summary}"),
    ] {
        assert!(
            mail.body.contains(&wanted),
            "the email body lacks {wanted:?}:\n{}",
            mail.body
        );
    }

    // The registry credential never reaches an alert: not in Alertmanager's API, not in any email.
    let (groups, _) = am.get_json("/api/v2/alerts/groups").expect("alert groups");
    for (place, text) in [
        ("GET /api/v2/alerts".to_string(), am_body),
        ("GET /api/v2/alerts/groups".to_string(), groups),
    ]
    .into_iter()
    .chain(smtp.messages().into_iter().flat_map(|m| {
        [
            (format!("email {:?} (raw)", m.subject), unfold_qp(&m.raw)),
            (format!("email {:?} (decoded)", m.subject), m.body),
        ]
    })) {
        testkit::secrets::assert_absent(&[TOKEN], [(place, text)]);
    }

    println!(
        "daemon ready: {daemon_ready:?}; prometheus ready: {prom_ready:?}; finding in /metrics: {exported:?}; \
         firing in prometheus: {prom_firing:?} (+{:?}); listed by alertmanager: {am_listed:?} (+{:?}); \
         email received: {emailed:?} (+{:?}) after the daemon's start",
        prom_firing - exported,
        am_listed - prom_firing,
        emailed - am_listed
    );
    println!("email subject: {}", mail.subject);
    drop(prom);
    drop(am);
    drop(daemon);
}

/// The `yaml` code block of config/prometheus/README.md's "Routing to Alertmanager" section.
fn readme_alertmanager_example() -> String {
    let readme = read("config/prometheus/README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Routing to Alertmanager"))
        .expect("config/prometheus/README.md has a \"Routing to Alertmanager\" section");
    let block = section
        .split_once("```yaml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block.to_string());
    block.expect("a yaml block in \"Routing to Alertmanager\"")
}

#[test]
fn readme_alertmanager_example_is_valid_and_routes_like_the_test() {
    let example = readme_alertmanager_example();
    let dir = tempfile::tempdir().expect("tempdir");
    amtool_check_config(dir.path(), "example.yml", &example);
    // The commented variant for a remote relay with a login is valid too.
    let with_login: String = example
        .lines()
        .filter(|l| {
            !l.contains("smtp_smarthost: '127.0.0.1") && !l.contains("smtp_require_tls: false")
        })
        .map(|l| l.replacen("  # smtp_", "  smtp_", 1) + "\n")
        .collect();
    assert!(
        with_login.contains("smtp_auth_password_file:")
            && !with_login.contains("smtp_auth_password:"),
        "{with_login}"
    );
    amtool_check_config(dir.path(), "with-login.yml", &with_login);
    // The route and receiver the end-to-end test proves, but for its one-second timings and addresses.
    let tested = alertmanager_config(25);
    let route_and_receiver = tested
        .lines()
        .skip_while(|l| *l != "route:")
        .filter(|l| !l.contains("_wait:") && !l.contains("_interval:") && !l.contains("- to:"));
    for line in route_and_receiver {
        assert!(
            example.lines().any(|l| l == line),
            "the README's example lacks the tested line {line:?}:\n{example}"
        );
    }
}
