//! End to end, hostile names: tokens named to forge log lines, drive a terminal, reverse text or drown
//! a message reach every sink at once (a real SMTP server, a webhook, Slack and PagerDuty receivers,
//! the log) through the `npm-watchdog` binary. The test reads what each one got, byte for byte: no
//! byte a terminal acts on, no forged line, every message inside its channel's limits, every JSON
//! body valid.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::fake_registry::{self, FakeRegistry};
use testkit::peers::{free_port, wait_until, Daemon, Smtp};
use testkit::receiver::Receiver;
use testkit::test_config::TestConfig;

const SLOW: Duration = Duration::from_secs(90);

const FORGED: &str =
    "ci\n2026-12-04T00:00:00Z  INFO npm_watchdog: all tokens revoked, account hardened";
const TERMINAL: &str =
    "\u{1b}[2J\u{1b}]8;;https://evil.example\u{7}x\u{1b}]0;title\u{7}\u{9b}1A\u{0}";
const BIDI: &str = "gpj.\u{202e}exe\u{200b}";

fn names() -> Vec<String> {
    vec![
        FORGED.to_string(),
        TERMINAL.to_string(),
        BIDI.to_string(),
        "y".repeat(1_000_000),
    ]
}

fn token(i: usize, name: &str) -> Value {
    let created = (chrono::Utc::now() - chrono::Duration::days(40))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({
        "name": name, "key": format!("{i:02x}bad0{i:014x}"), "token": "npm_ab...yz", "cidr": null,
        "bypass_2fa": i == 1, "created": created, "expiry": null, "readonly": false,
        "permissions": [{"name": "package", "action": "write"}], "revoked": null
    })
}

/// What no text a person reads may hold: characters that move the cursor, break lines, reorder or
/// hide text.
fn assert_inert(place: &str, text: &str) {
    for c in text.chars() {
        let hidden = (c.is_control() && c != '\n' && c != '\r' && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200b}' | '\u{2028}' | '\u{2029}');
        assert!(!hidden, "{place} holds {c:?}");
    }
    assert!(
        !text.contains("\n2026-12-04T00:00:00Z  INFO npm_watchdog: all tokens revoked"),
        "{place}: a forged line"
    );
}

/// Every string in a JSON document.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_token_names_reach_every_sink_inert_and_within_its_limits() {
    let reg = FakeRegistry::start().await;
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));
    reg.set_tokens(
        names()
            .iter()
            .enumerate()
            .map(|(i, n)| token(i, n))
            .collect(),
    );
    let (hook, hook_url) = Receiver::start().await;
    let (slack, slack_url) = Receiver::start().await;
    let (pager, pager_url) = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), fake_registry::TOKEN).expect("token file");
    std::fs::write(
        dir.path().join("slack-url"),
        format!("{slack_url}/services/T0/B0/X\n"),
    )
    .expect("slack url");
    std::fs::write(
        dir.path().join("pd-key"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .expect("key");
    let smtp = Smtp::start();
    let port = free_port();
    let config = dir.path().join("config.toml");
    TestConfig::new(&reg.url, &dir.path().join("token"), &dir.path().join("state.db"))
        .listen(port)
        .not_own_account()
        .with(&format!(
            "[alerts]\nlog = true\n\
             [[alerts.email]]\nsmtp_url = \"smtp://127.0.0.1:{}\"\nfrom = \"w@example.test\"\nto = \"sec@example.test\"\ntimeout = \"5s\"\n\
             [[alerts.webhook]]\nurl = \"{hook_url}/hook\"\n\
             [[alerts.slack]]\nurl_file = \"{}\"\n\
             [[alerts.pagerduty]]\nrouting_key_file = \"{}\"\nurl = \"{pager_url}/v2/enqueue\"\n",
            smtp.port,
            dir.path().join("slack-url").display(),
            dir.path().join("pd-key").display(),
        ))
        .write(&config);
    let log = dir.path().join("daemon.log");
    let metrics = tokio::task::block_in_place(|| {
        let mut daemon = Daemon::start(&config, port, &log, &dir.path().join("no-npmrc"));
        wait_until("every sink has its messages", SLOW, || {
            let m = daemon.metrics();
            let sent = m
                .lines()
                .filter(|l| {
                    l.starts_with("npm_watchdog_notifications_total{")
                        && l.contains("outcome=\"sent\"")
                })
                .count();
            (sent >= 5 && !hook.requests().is_empty() && !smtp.messages().is_empty()).then_some(())
        });
        let metrics = daemon.metrics();
        let (status, _) = daemon.stop();
        assert!(status.success());
        metrics
    });

    // Email: the decoded subject and body are inert; no raw line is longer than SMTP allows.
    for mail in smtp.messages() {
        assert_inert("an email subject", &mail.subject);
        assert_inert("an email body", &mail.body);
        assert!(
            mail.subject.len() < 998,
            "{} byte subject",
            mail.subject.len()
        );
        let longest = mail.raw.lines().map(str::len).max().unwrap_or(0);
        assert!(longest <= 998, "a raw email line of {longest} bytes");
    }
    // Webhook, Slack, PagerDuty: valid JSON, every string inert, each within its channel's size.
    for (what, rx, limit) in [
        ("webhook", &hook, 1 << 20),
        ("slack", &slack, 64 << 10),
        ("pagerduty", &pager, 512 << 10),
    ] {
        let requests = rx.requests();
        assert!(!requests.is_empty(), "{what} got nothing");
        for r in requests {
            assert!(r.body.len() < limit, "{what}: {} bytes", r.body.len());
            let v: Value = serde_json::from_slice(&r.body).expect("valid JSON");
            let mut all = Vec::new();
            strings(&v, &mut all);
            for s in &all {
                assert_inert(what, s);
            }
            if what == "pagerduty" {
                if let Some(summary) = v["payload"]["summary"].as_str() {
                    assert!(summary.chars().count() <= 1024, "{summary}");
                }
            }
        }
    }
    // The log: one line per event, none forged, no terminal bytes.
    let log_text = std::fs::read_to_string(&log).expect("log");
    assert_inert("the daemon's log", &log_text);
    assert!(log_text.contains("gpj.\\\\u{202e}exe") || log_text.contains("gpj.\\u{202e}exe"));
    // /metrics: the names bounded, no raw control characters.
    assert_inert("/metrics", &metrics);
    assert!(metrics.len() < 256 << 10, "{} bytes", metrics.len());
}
