//! End to end with real peers: the `npm-watchdog` binary watches a real Verdaccio registry, tokens are
//! made and revoked with the real npm CLI, alerts arrive at a real SMTP server (aiosmtpd), and promtool
//! lints the live `/metrics`. Every secret used is searched for in the logs, metrics, emails and state.

use testkit::peers;
use testkit::test_config;

use std::time::Duration;

use peers::{
    free_port, http, npm_token_create, npm_token_revoke, wait_until, Daemon, Smtp, Verdaccio,
};
use serde_json::json;
use test_config::TestConfig;

const PASSWORD: &str = "e2e-Pa55word-for-alice";
/// `schedule.tokens` in this test.
const PERIOD: Duration = Duration::from_secs(2);
/// Generous bound for slow steps (restarts, outages); the fast paths are measured and printed.
const SLOW: Duration = Duration::from_secs(60);

#[test]
fn tokens_made_and_revoked_with_npm_reach_the_mailbox_and_outages_are_reported() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut verdaccio = Verdaccio::start();
    let session = verdaccio.add_user("alice", PASSWORD);
    let npmrc = work.path().join("npmrc");
    verdaccio.write_npmrc(&npmrc, &session);

    // The daemon's own credential: a read-only, CIDR-bound token, as the README recommends.
    let (code, body) = http(
        "POST",
        &format!("{}-/npm/v1/tokens", verdaccio.url),
        Some(&session),
        Some(&json!({"password": PASSWORD, "readonly": true, "cidr_whitelist": ["127.0.0.1/32"]})),
    )
    .expect("create the daemon's token");
    assert!(
        code == 200 || code == 201,
        "token create answered {code}: {body}"
    );
    let created: serde_json::Value = serde_json::from_str(&body).expect("json");
    let own_secret = created["token"].as_str().expect("token").to_string();
    let own_key = created["key"].as_str().expect("key").to_string();
    let token_file = work.path().join("npm-token");
    std::fs::write(&token_file, &own_secret).expect("write token file");

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

[schedule]
tokens = "2s"

[policy]
blind_after = 2
allow_tokens = [{{ key_prefix = "{own_prefix}", reason = "the watchdog's own read-only credential" }}]

[[alerts.email]]
smtp_url = "smtp://127.0.0.1:{smtp_port}"
from = "npm-watchdog@example.test"
to = ["security@example.test"]
timeout = "5s"
"#,
            own_prefix = &own_key[..8],
            smtp_port = smtp.port,
        ))
        .write(&config);
    let log = work.path().join("daemon.log");
    let mut daemon = Daemon::start(&config, port, &log, &npmrc);

    // First run: Verdaccio reports 2FA off (a true finding); the allowlisted own token is not reported.
    smtp.wait_for("[FIRING:critical] account-2fa: account alice", SLOW);
    assert_eq!(
        smtp.count("[FIRING:warning] token-present"),
        0,
        "{:?}",
        smtp.subjects()
    );
    assert_eq!(
        daemon.metric("npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}"),
        Some(1.0)
    );
    peers::promtool_check_metrics(&daemon.metrics()).expect("promtool accepts /metrics");

    // A token made with the real npm CLI fires within two periods: one message for everything the
    // new token trips (grouped by check group).
    let firing_before = smtp.count("[FIRING");
    let made = npm_token_create(&verdaccio, &npmrc, PASSWORD, &[]);
    let id = &made.key[..6];
    let (mail, latency) = smtp.wait_for(
        &format!("[FIRING:critical] 4 findings on token {id}: token-created, token-long-lived, token-present, token-unrestricted"),
        2 * PERIOD + Duration::from_secs(4),
    );
    println!("token created -> FIRING email: {latency:?} (schedule.tokens = {PERIOD:?})");
    assert!(
        mail.body.contains(&format!("npm token revoke {id}")),
        "{}",
        mail.body
    );
    for check in [
        "token-created",
        "token-long-lived",
        "token-present",
        "token-unrestricted",
    ] {
        assert!(
            mail.body.contains(&format!("{check}: token {id}")),
            "{check} not listed:\n{}",
            mail.body
        );
    }
    assert!(mail.to.contains("security@example.test"));
    // Two more token cycles: still exactly one message about the new token.
    wait_until("two more token cycles", SLOW, || {
        let n = daemon
            .metric("npm_watchdog_registry_requests_total{code=\"200\",endpoint=\"tokens\"}")?;
        (n >= 2.0).then_some(n)
    });
    assert_eq!(
        smtp.count("[FIRING") - firing_before,
        1,
        "{:?}",
        smtp.subjects()
    );
    let metrics = daemon.metrics();
    assert!(
        metrics.contains(&format!("npm_watchdog_token_created_timestamp_seconds{{access=\"read-write\",bypass_2fa=\"false\",name=\"\",token=\"{id}\"}}")),
        "{metrics}"
    );
    peers::promtool_check_metrics(&metrics).expect("promtool accepts /metrics with tokens");

    // A restart sends no duplicate FIRING.
    let firing_before = smtp.count("[FIRING");
    let (status, took) = daemon.stop();
    println!("SIGTERM -> exit: {took:?}");
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
    daemon.spawn();
    wait_until("two token cycles after the restart", SLOW, || {
        (daemon.metric("npm_watchdog_registry_requests_total{code=\"200\",endpoint=\"tokens\"}")?
            >= 2.0)
            .then_some(())
    });
    assert_eq!(
        smtp.count("[FIRING"),
        firing_before,
        "{:?}",
        smtp.subjects()
    );

    // Revoking it with the real npm CLI resolves it: one message. The event (token-created) never
    // resolves.
    npm_token_revoke(&verdaccio, &npmrc, id);
    let (mail, latency) = smtp.wait_for(
        &format!("[RESOLVED] 3 findings on token {id}: token-long-lived, token-present, token-unrestricted"),
        SLOW,
    );
    println!("token revoked -> RESOLVED email: {latency:?}");
    assert!(!mail.body.contains("token-created"), "{}", mail.body);
    assert_eq!(smtp.count("[RESOLVED]"), 1, "{:?}", smtp.subjects());

    // Registry down: the check fails, nothing resolves, and the watchdog reports itself blind.
    let resolved_before = smtp.count("[RESOLVED]");
    verdaccio.stop();
    wait_until("check_success 0 while the registry is down", SLOW, || {
        (daemon.metric("npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}")? == 0.0)
            .then_some(())
    });
    smtp.wait_for("[FIRING:critical] watchdog-blind: check group tokens", SLOW);
    assert_eq!(
        smtp.count("[RESOLVED]"),
        resolved_before,
        "{:?}",
        smtp.subjects()
    );
    assert_eq!(
        daemon.metric("npm_watchdog_findings{check=\"account-2fa\",severity=\"critical\"}"),
        Some(1.0),
        "findings are kept while blind"
    );

    // Registry back: recovery, and the blind finding resolves.
    verdaccio.restart();
    wait_until("check_success 1 after the registry is back", SLOW, || {
        (daemon.metric("npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}")? == 1.0)
            .then_some(())
    });
    smtp.wait_for("[RESOLVED] watchdog-blind: check group tokens", SLOW);
    let final_metrics = daemon.metrics();
    peers::promtool_check_metrics(&final_metrics)
        .expect("promtool accepts /metrics after recovery");
    let (status, _) = daemon.stop();
    assert!(status.success());

    // No secret anywhere a user or an attacker could read.
    let log_text = std::fs::read_to_string(&log).expect("daemon log");
    assert!(log_text.contains("npm-watchdog starting"), "{log_text}");
    let mails: String = smtp
        .messages()
        .into_iter()
        .map(|m| m.raw)
        .collect::<Vec<_>>()
        .join("\n");
    let state_bytes =
        String::from_utf8_lossy(&std::fs::read(&state).expect("state db")).into_owned();
    // The daemon's token, the npm CLI's token, alice's session token and her password.
    testkit::secrets::assert_absent(
        &[
            own_secret.as_str(),
            made.token.as_str(),
            session.as_str(),
            PASSWORD,
        ],
        [
            ("daemon log", &log_text),
            ("emails", &mails),
            ("/metrics", &final_metrics),
            ("state database", &state_bytes),
        ],
    );
}
