//! End to end with real peers, for the package checks: the `npm-watchdog` binary watches a scoped
//! package on a real Verdaccio registry while the real npm CLI publishes it with a token (the
//! "laptop token" an attacker would use) after the trusted-publishing cutoff, then deprecates a
//! version. Alerts arrive at a real SMTP server (aiosmtpd), `audit` is run as a real process, and
//! promtool lints the live `/metrics`. Every secret used is searched for in the logs, metrics, emails,
//! audit output and state.
//!
//! Verdaccio facts this test relies on (checked with Verdaccio 6.8 and npm 11): a packument answer
//! carries a strong `ETag` and `If-None-Match` with it gets 304; a missing package is a 404; `npm
//! deprecate` works (a packument PUT) and changes the ETag; versions carry no `_npmUser` and no
//! `trustedPublisher`; `/-/package/<pkg>/trust` is a 404 (Verdaccio has no trust endpoint).

use testkit::peers;
use testkit::test_config;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use peers::{free_port, metric_in, npm, npm_token_create, Daemon, Mail, Smtp, Verdaccio};
use serde_json::Value;
use test_config::TestConfig;

const PASSWORD: &str = "e2e-Pa55word-for-alice-publish";
const PACKAGE: &str = "@acme/widget";
/// `schedule.packages` (and `schedule.tokens`) in this test.
const PERIOD: Duration = Duration::from_secs(2);
/// Generous bound for every wait; the fast paths are measured and printed.
const SLOW: Duration = Duration::from_secs(60);
/// Bound for a publish (or deprecate) to reach the mailbox: a few package periods plus slack for a
/// loaded 2-core machine.
const PUBLISH_BOUND: Duration = Duration::from_secs(30);

/// Writes a minimal package.json for `PACKAGE@version` in `dir`.
fn write_package(dir: &Path, version: &str) {
    let manifest = serde_json::json!({
        "name": PACKAGE,
        "version": version,
        "description": "npm-watchdog end-to-end test package",
        "license": "MIT",
        "main": "index.js",
    });
    std::fs::write(
        dir.join("package.json"),
        serde_json::to_string_pretty(&manifest).expect("json"),
    )
    .expect("write package.json");
    std::fs::write(dir.join("index.js"), "module.exports = 42;\n").expect("write index.js");
}

/// Runs the real npm and panics with its output unless it succeeds.
fn npm_ok(v: &Verdaccio, npmrc: &Path, args: &[&str], cwd: &Path) {
    let out = npm(v, npmrc, args, cwd);
    assert!(
        out.status.success(),
        "npm {} failed with {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `npm publish` of `PACKAGE@version` from `dir` with the token in `npmrc`; returns when the
/// registry has accepted it.
fn publish(v: &Verdaccio, npmrc: &Path, dir: &Path, version: &str) {
    write_package(dir, version);
    npm_ok(v, npmrc, &["publish", "--registry", v.url.as_str()], dir);
}

/// The `Fingerprint:` line of an alert email's body.
fn fingerprint_line(mail: &Mail) -> String {
    mail.body
        .lines()
        .find(|l| l.starts_with("Fingerprint:"))
        .unwrap_or_else(|| panic!("no Fingerprint line in:\n{}", mail.body))
        .trim_end()
        .to_string()
}

/// The DoD row `id` of an `audit --format json` report.
fn dod_row<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["dod"]
        .as_array()
        .expect("dod array")
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no {id} row in {report:#}"))
}

fn evidence(row: &Value) -> Vec<String> {
    row["evidence"]
        .as_array()
        .expect("evidence array")
        .iter()
        .map(|e| e.as_str().expect("evidence string").to_string())
        .collect()
}

/// The line of the table report that starts the DoD row `id` (`  D4  FAIL  …`).
fn table_row<'a>(table: &'a str, id: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{id} ")))
        .unwrap_or_else(|| panic!("no {id} row in:\n{table}"))
}

#[test]
fn token_publishes_after_the_cutoff_are_alerted_audited_and_resolved_by_deprecate() {
    let test_start = chrono::Utc::now();
    let work = tempfile::tempdir().expect("tempdir");
    let verdaccio = Verdaccio::start();
    let session = verdaccio.add_user("alice", PASSWORD);
    let npmrc = work.path().join("npmrc");
    verdaccio.write_npmrc(&npmrc, &session);

    // The attacker's "laptop token", made with the real npm CLI; publishes below use only it.
    let laptop = npm_token_create(&verdaccio, &npmrc, PASSWORD, &[]);
    let laptop_npmrc = work.path().join("laptop-npmrc");
    verdaccio.write_npmrc(&laptop_npmrc, &laptop.token);

    // The daemon's own credential: alice's session token, in a file.
    let token_file = work.path().join("npm-token");
    std::fs::write(&token_file, &session).expect("write token file");
    // What the daemon and the CLI get as the npm user config: nothing that could stand in for the
    // configured credential.
    let harmless_npmrc = work.path().join("harmless-npmrc");
    std::fs::write(
        &harmless_npmrc,
        "# empty npm user config for npm-watchdog\n",
    )
    .expect("write harmless npmrc");

    let cutoff = test_start - chrono::Duration::minutes(1);
    let cutoff_text = cutoff.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let smtp = Smtp::start();
    let port = free_port();
    let config = work.path().join("config.toml");
    let state = work.path().join("state.db");
    TestConfig::new(&verdaccio.url, &token_file, &state)
        .listen(port)
        .not_own_account()
        .with(&format!(
            r#"[registry]
timeout = "5s"
retries = 1

[watch]
packages = ["{PACKAGE}"]

[schedule]
tokens = "2s"
packages = "2s"

[policy]
trusted_publishing_since = "{cutoff_text}"
blind_after = 2

[[alerts.email]]
smtp_url = "smtp://127.0.0.1:{smtp_port}"
from = "npm-watchdog@example.test"
to = ["security@example.test"]
timeout = "5s"
"#,
            smtp_port = smtp.port,
        ))
        .write(&config);
    let log = work.path().join("daemon.log");
    let mut daemon = Daemon::start(&config, port, &log, &harmless_npmrc);

    // --- Before the package exists: a failure, never "all clear", and no publish email. ---
    daemon.wait_metric(
        "npm_watchdog_check_success{check=\"packages\",group=\"packages\"}",
        0.0,
    );
    // Two package runs answered 404 by the real registry (the scoped name reached it escaped).
    daemon.wait_counter(
        "npm_watchdog_registry_requests_total{code=\"404\",endpoint=\"packument\"}",
        2.0,
    );
    assert_eq!(
        daemon.metric("npm_watchdog_check_success{check=\"packages\",group=\"packages\"}"),
        Some(0.0),
        "a watched package that cannot be read is a failed run"
    );
    assert_eq!(
        daemon.metric("npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}"),
        Some(1.0)
    );
    assert!(
        verdaccio.log_text().contains("/@acme%2fwidget"),
        "Verdaccio saw no request for the escaped name:\n{}",
        verdaccio.log_text()
    );
    let metrics = daemon.metrics();
    assert!(
        !metrics.contains("npm_watchdog_package_latest_trusted_publish{"),
        "no package series before the package exists:\n{metrics}"
    );
    // With blind_after = 2 the unreadable package makes the watchdog report itself blind, naming why.
    let (blind, _) = smtp.wait_for(
        "[FIRING:critical] watchdog-blind: check group packages",
        SLOW,
    );
    assert!(
        blind.body.contains(PACKAGE) && blind.body.contains("404"),
        "{}",
        blind.body
    );
    assert_eq!(
        smtp.count("[FIRING:critical] publish-untrusted"),
        0,
        "{:?}",
        smtp.subjects()
    );
    let log_text = daemon.log_text();
    assert!(
        log_text.contains(PACKAGE) && log_text.contains("not found (404)"),
        "the log should say which package could not be read:\n{log_text}"
    );

    // --- A token publish after the cutoff fires at once. ---
    let pkg = tempfile::tempdir().expect("package dir");
    publish(&verdaccio, &laptop_npmrc, pkg.path(), "1.0.0");
    let published = Instant::now();
    let (fired_100, latency) = smtp.wait_for(
        "[FIRING:critical] publish-untrusted: version @acme/widget@1.0.0",
        PUBLISH_BOUND,
    );
    println!(
        "npm publish 1.0.0 -> FIRING email: {latency:?} (schedule.packages = {PERIOD:?}, bound {PUBLISH_BOUND:?})"
    );
    let body = &fired_100.body;
    assert!(body.contains("@acme/widget@1.0.0"), "{body}");
    assert!(body.contains("npm deprecate @acme/widget@1.0.0"), "{body}");
    assert!(body.contains(&format!("cutoff {cutoff_text}")), "{body}");
    assert!(
        fired_100.to.contains("security@example.test"),
        "{}",
        fired_100.to
    );
    assert!(
        fired_100
            .raw
            .contains("X-Npm-Watchdog-Check: publish-untrusted"),
        "{}",
        fired_100.raw
    );
    daemon.wait_metric(
        "npm_watchdog_check_success{check=\"packages\",group=\"packages\"}",
        1.0,
    );
    println!(
        "npm publish 1.0.0 -> check_success{{packages}} 1: {:?}",
        published.elapsed()
    );
    daemon.wait_metric(
        "npm_watchdog_package_latest_trusted_publish{package=\"@acme/widget\"}",
        0.0,
    );
    smtp.wait_for("[RESOLVED] watchdog-blind: check group packages", SLOW);
    // The next run asks with the stored ETag and Verdaccio answers 304 Not Modified.
    let started = Instant::now();
    daemon.wait_counter(
        "npm_watchdog_registry_requests_total{code=\"304\",endpoint=\"packument\"}",
        1.0,
    );
    println!(
        "FIRING email -> first 304 for the packument: {:?}",
        started.elapsed()
    );
    assert_eq!(
        daemon.metric("npm_watchdog_check_success{check=\"packages\",group=\"packages\"}"),
        Some(1.0),
        "a 304 is a successful read"
    );
    peers::promtool_check_metrics(&daemon.metrics()).expect("promtool accepts /metrics");

    // --- audit, as a separate process while the daemon runs. ---
    let (code, table, table_err) = daemon.cli(&["audit"]);
    println!("npm-watchdog audit (exit {code}):\n{table}");
    assert_eq!(
        code, 1,
        "audit exit code\nstdout:\n{table}\nstderr:\n{table_err}"
    );
    for id in ["D4", "D7"] {
        assert!(
            table_row(&table, id).contains("FAIL"),
            "{id} in the table:\n{table}"
        );
    }
    assert!(
        table_row(&table, "D1").contains("UNVERIFIED"),
        "D1 in the table:\n{table}"
    );
    assert!(table.contains("needs --otp"), "{table}");
    assert!(
        table.contains("[critical] publish-untrusted: version @acme/widget@1.0.0"),
        "{table}"
    );
    let (code, json_text, json_err) = daemon.cli(&["audit", "--format", "json"]);
    assert_eq!(
        code, 1,
        "audit --format json exit code\nstdout:\n{json_text}\nstderr:\n{json_err}"
    );
    let report: Value = serde_json::from_str(&json_text)
        .unwrap_or_else(|e| panic!("audit JSON ({e}):\n{json_text}"));
    assert_eq!(report["result"], "fail", "{report:#}");
    assert_eq!(report["account"], "alice", "{report:#}");
    assert_eq!(
        report["packages"],
        serde_json::json!([PACKAGE]),
        "{report:#}"
    );
    for id in ["D4", "D7"] {
        let row = dod_row(&report, id);
        assert_eq!(row["status"], "FAIL", "{id}: {row:#}");
        assert!(
            evidence(row)
                .iter()
                .any(|e| e.contains("@acme/widget@1.0.0")),
            "{id}: {row:#}"
        );
    }
    let d7 = evidence(dod_row(&report, "D7"));
    assert!(
        d7.iter()
            .any(|e| e.contains("not readable through npm's API")),
        "{d7:?}"
    );
    // Verdaccio has no trust endpoint (404): unknown, so D1 asks for an OTP and nothing claims the
    // package has no trusted publisher.
    let d1 = dod_row(&report, "D1");
    assert_eq!(d1["status"], "UNVERIFIED", "{d1:#}");
    assert!(
        evidence(d1).iter().any(|e| e.contains("needs --otp")),
        "{d1:#}"
    );
    let findings = report["findings"].as_array().expect("findings array");
    assert!(
        !findings
            .iter()
            .any(|f| f["check"] == "trusted-publisher-missing"),
        "a 404 from the trust endpoint became a finding: {findings:#?}"
    );
    assert!(
        findings
            .iter()
            .any(|f| f["check"] == "publish-untrusted" && f["subject_key"] == "@acme/widget@1.0.0"),
        "{findings:#?}"
    );

    // --- A second token publish fires for the new version only. ---
    publish(&verdaccio, &laptop_npmrc, pkg.path(), "1.0.1");
    let (fired_101, latency) = smtp.wait_for(
        "[FIRING:critical] publish-untrusted: version @acme/widget@1.0.1",
        PUBLISH_BOUND,
    );
    println!("npm publish 1.0.1 -> FIRING email: {latency:?}");
    assert!(
        fired_101.body.contains("npm deprecate @acme/widget@1.0.1"),
        "{}",
        fired_101.body
    );
    // Two more package runs after that email (one fresh read, then a 304), and still one 1.0.0 email.
    let seen_304 = daemon
        .metric("npm_watchdog_registry_requests_total{code=\"304\",endpoint=\"packument\"}")
        .expect("304 counter");
    daemon.wait_counter(
        "npm_watchdog_registry_requests_total{code=\"304\",endpoint=\"packument\"}",
        seen_304 + 2.0,
    );
    assert_eq!(
        smtp.count("[FIRING:critical] publish-untrusted: version @acme/widget@1.0.0"),
        1,
        "{:?}",
        smtp.subjects()
    );
    assert_eq!(
        smtp.count("[FIRING:critical] publish-untrusted: version @acme/widget@1.0.1"),
        1,
        "{:?}",
        smtp.subjects()
    );

    // --- Deprecating with the real npm CLI (a packument PUT on Verdaccio) resolves 1.0.0 only. ---
    npm_ok(
        &verdaccio,
        &npmrc,
        &[
            "deprecate",
            "@acme/widget@1.0.0",
            "compromised",
            "--registry",
            verdaccio.url.as_str(),
        ],
        work.path(),
    );
    let (resolved_100, latency) = smtp.wait_for(
        "[RESOLVED] publish-untrusted: version @acme/widget@1.0.0",
        PUBLISH_BOUND,
    );
    println!("npm deprecate 1.0.0 -> RESOLVED email: {latency:?}");
    assert!(
        resolved_100.raw.contains("X-Npm-Watchdog-Status: resolved"),
        "{}",
        resolved_100.raw
    );
    let seen_304 = daemon
        .metric("npm_watchdog_registry_requests_total{code=\"304\",endpoint=\"packument\"}")
        .expect("304 counter");
    daemon.wait_counter(
        "npm_watchdog_registry_requests_total{code=\"304\",endpoint=\"packument\"}",
        seen_304 + 1.0,
    );
    assert_eq!(
        smtp.count("[RESOLVED] publish-untrusted: version @acme/widget@1.0.1"),
        0,
        "{:?}",
        smtp.subjects()
    );
    assert_eq!(
        smtp.count("[FIRING:critical] publish-untrusted: version @acme/widget@1.0.0"),
        1,
        "{:?}",
        smtp.subjects()
    );
    assert_eq!(
        daemon.metric("npm_watchdog_findings{check=\"publish-untrusted\",severity=\"critical\"}"),
        Some(1.0),
        "1.0.1 is still active"
    );

    // --- Metrics lint, and an orderly stop. ---
    let final_metrics = daemon.metrics();
    assert_eq!(
        metric_in(
            &final_metrics,
            "npm_watchdog_package_latest_trusted_publish{package=\"@acme/widget\"}"
        ),
        Some(0.0),
        "{final_metrics}"
    );
    peers::promtool_check_metrics(&final_metrics).expect("promtool accepts the final /metrics");
    let (status, took) = daemon.stop();
    println!("SIGTERM -> exit: {took:?}");
    assert_eq!(status.code(), Some(0), "exit status {status}");

    // --- No secret anywhere a user or an attacker could read. ---
    let log_text = daemon.log_text();
    assert!(log_text.contains("npm-watchdog starting"), "{log_text}");
    let mails: String = smtp
        .messages()
        .into_iter()
        .map(|m| m.raw)
        .collect::<Vec<_>>()
        .join("\n");
    // SQLite in WAL mode: read the sidecar files too, should any be left.
    let mut state_bytes = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = PathBuf::from(format!("{}{suffix}", state.display()));
        if let Ok(bytes) = std::fs::read(&path) {
            state_bytes.extend(bytes);
        }
    }
    assert!(!state_bytes.is_empty(), "the state database is missing");
    let state_text = String::from_utf8_lossy(&state_bytes).into_owned();
    let audit_output = format!("{table}\n{table_err}\n{json_text}\n{json_err}");
    // The laptop token, alice's session token and her password.
    testkit::secrets::assert_absent(
        &[laptop.token.as_str(), session.as_str(), PASSWORD],
        [
            ("daemon log", &log_text),
            ("emails", &mails),
            ("/metrics", &final_metrics),
            ("state database", &state_text),
            ("audit output", &audit_output),
        ],
    );

    // --- The email's Fingerprint line identifies the finding: stable across FIRING and RESOLVED,
    // different for different versions. (Checked last so that everything above is proven even
    // while this fails: src/alerts/message.rs cuts every subject key to 16 bytes, meant for token
    // keys, which turns both `@acme/widget@1.0.0` and `@acme/widget@1.0.1` into `@acme/widget@1.0`.)
    let fp_100 = fingerprint_line(&fired_100);
    let fp_101 = fingerprint_line(&fired_101);
    assert_eq!(
        fingerprint_line(&resolved_100),
        fp_100,
        "one finding, one fingerprint"
    );
    assert_ne!(
        fp_100, fp_101,
        "two versions' findings share the email fingerprint {fp_100:?}"
    );
}
