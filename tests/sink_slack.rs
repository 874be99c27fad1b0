//! The Slack sink against a fake Slack: an in-process axum server on 127.0.0.1 that listens at an
//! incoming-webhook-like path, records what it gets and answers as scripted (Slack's `200 ok`, its
//! `429` with `Retry-After`, its `404 channel_not_found`, …).

mod outbox_harness;
use testkit::receiver;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use outbox_harness::Outbox;
use receiver::{Receiver, Reply};
use serde_json::Value;

use npm_watchdog::alerts::slack::{SlackSink, SlackSinkConfig};
use npm_watchdog::alerts::{AlertsConfig, Notification, Sink, SinkContext, Status};
use npm_watchdog::config::HumanDuration;
use npm_watchdog::finding::{Dod, Finding, Severity};

/// The part of an incoming-webhook URL that is the credential.
const SECRET: &str = "XXXXSECRETXXXX";
const HOOK_PATH: &str = "/services/T000/B000/XXXXSECRETXXXX";

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

fn firing(key: &str) -> Notification {
    Notification::change(
        Status::Firing,
        Finding {
            check: "token-bypass-2fa".into(),
            subject_key: key.into(),
            subject: "token 82e393 (bulk-hardening)".into(),
            severity: Severity::Critical,
            summary: "The bypass-2FA token 82e393 (bulk-hardening) is 2 days old.".into(),
            why: "Anyone holding it can publish without a second factor.".into(),
            fix: "Revoke it: `npm token revoke 82e393`.".into(),
            dod: Some(Dod::D9),
        },
        at("2026-11-24T09:30:00Z"),
        at("2026-11-26T12:00:00Z"),
    )
}

// ---------------------------------------------------------------------------------------------
// The fake Slack
// ---------------------------------------------------------------------------------------------

/// A fake Slack on 127.0.0.1 and its base URL (`http://127.0.0.1:<port>`): it records every post and
/// answers as scripted, Slack's `200 ok` once the script runs out.
async fn fake_slack() -> (Receiver, String) {
    let (fake, base) = Receiver::start().await;
    fake.set_default(Reply::new(200, "ok"));
    (fake, base)
}

/// A config whose `url_file` (in `dir`) holds `url`.
fn config(dir: &Path, url: &str) -> SlackSinkConfig {
    let url_file = dir.join("slack-url");
    std::fs::write(&url_file, format!("{url}\n")).expect("write url file");
    let cfg: SlackSinkConfig = toml::from_str(&format!(
        "name = \"slack\"\nurl_file = {:?}\ntimeout = \"5s\"",
        url_file.display().to_string()
    ))
    .expect("config");
    assert_eq!(cfg.timeout, HumanDuration::secs(5));
    cfg
}

fn texts(body: &Value) -> Vec<String> {
    body["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .filter_map(|b| b["text"]["text"].as_str().map(str::to_string))
        .collect()
}

fn fields(body: &Value) -> Vec<String> {
    body["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .filter_map(|b| b["fields"].as_array())
        .flatten()
        .map(|f| f["text"].as_str().expect("field text").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// What arrives
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn firing_and_resolved_arrive_as_block_kit_messages() {
    let (fake, base) = fake_slack().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SlackSink::new(
        "slack".into(),
        &config(dir.path(), &format!("{base}{HOOK_PATH}")),
    )
    .expect("sink");

    let mut n = firing("82e3930f1c5a6a7f0d2b9c44e1f3a5b6");
    std::sync::Arc::make_mut(&mut n.finding).subject = "package <@acme/core> & friends".into();
    std::sync::Arc::make_mut(&mut n.finding).summary =
        "2 publishes in 1h > the 1 allowed; see <https://evil.example|here>".into();
    sink.send(&n).await.expect("firing delivered");

    let mut resolved = firing("82e3930f1c5a6a7f0d2b9c44e1f3a5b6");
    resolved.status = Status::Resolved;
    std::sync::Arc::make_mut(&mut resolved.finding).dod = None;
    sink.send(&resolved).await.expect("resolved delivered");

    let got = fake.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].path, HOOK_PATH);
    assert_eq!(got[0].header("content-type"), Some("application/json"));

    let b = &got[0].json();
    assert_eq!(
        b["text"],
        "[FIRING:critical] token-bypass-2fa: package &lt;@acme/core&gt; &amp; friends — \
         2 publishes in 1h &gt; the 1 allowed; see &lt;https://evil.example|here&gt;"
    );
    let blocks = b["blocks"].as_array().expect("blocks");
    let kinds: Vec<&str> = blocks
        .iter()
        .map(|b| b["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        kinds,
        vec!["header", "section", "section", "section", "section"]
    );
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert_eq!(
        texts(b),
        vec![
            "[FIRING:critical] token-bypass-2fa: package &lt;@acme/core&gt; &amp; friends",
            "2 publishes in 1h &gt; the 1 allowed; see &lt;https://evil.example|here&gt;",
            "*Why it matters:* Anyone holding it can publish without a second factor.",
            "*Fix:* Revoke it: `npm token revoke 82e393`.",
        ]
    );
    for block in &blocks[1..4] {
        assert_eq!(block["text"]["type"], "mrkdwn");
    }
    assert_eq!(
        fields(b),
        vec![
            "*Check*\ntoken-bypass-2fa",
            "*Severity*\ncritical",
            "*Subject*\npackage &lt;@acme/core&gt; &amp; friends",
            "*DoD box*\nD9",
            "*First seen*\n2026-11-24T09:30:00Z",
        ]
    );
    let raw = b.to_string();
    assert!(
        !raw.contains("<https://evil"),
        "no link can be injected: {raw}"
    );

    let r = &got[1].json();
    assert_eq!(
        r["text"],
        "[RESOLVED] token-bypass-2fa: token 82e393 (bulk-hardening) — \
         The bypass-2FA token 82e393 (bulk-hardening) is 2 days old."
    );
    assert_eq!(
        texts(r),
        vec![
            "[RESOLVED] token-bypass-2fa: token 82e393 (bulk-hardening)",
            "Resolved: token-bypass-2fa no longer reports token 82e393 (bulk-hardening).",
            "_It was:_ The bypass-2FA token 82e393 (bulk-hardening) is 2 days old.",
        ]
    );
    assert!(!r.to_string().contains("Fix:"), "{r}");
    assert_eq!(
        fields(r),
        vec![
            "*Check*\ntoken-bypass-2fa",
            "*Severity*\ncritical",
            "*Subject*\ntoken 82e393 (bulk-hardening)",
            "*First seen*\n2026-11-24T09:30:00Z",
        ]
    );
}

#[tokio::test]
async fn alerts_slack_section_builds_a_sink_named_after_it() {
    let (fake, base) = fake_slack().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url_file = dir.path().join("slack-url");
    std::fs::write(&url_file, format!("{base}{HOOK_PATH}\n")).expect("write");
    let cfg: AlertsConfig = toml::from_str(&format!(
        "[[slack]]\nurl_file = {:?}\nmin_severity = \"warning\"\n",
        url_file.display().to_string()
    ))
    .expect("parse");
    cfg.validate(&npm_watchdog::checks::ids()).expect("valid");
    let entries = cfg.entries();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].key(), "alerts.slack[0]");
    assert_eq!(
        entries[0].config.secret_files(),
        vec![("url_file", url_file.as_path())]
    );
    let targets = cfg.build_sinks(&SinkContext::default()).expect("build");
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].sink.name(), "slack");
    assert_eq!(targets[0].route.min_severity, Severity::Warning);
    targets[0]
        .sink
        .send(&Notification::test(Utc::now()))
        .await
        .expect("delivered");
    let got = fake.requests();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].json()["text"]
            .as_str()
            .expect("text")
            .starts_with("[TEST] [FIRING:info] notify-test"),
        "{:?}",
        got[0].json()
    );

    let unknown = toml::from_str::<AlertsConfig>(&format!(
        "[[slack]]\nurl_file = {:?}\nchannel = \"#alerts\"\n",
        url_file.display().to_string()
    ));
    assert!(unknown.is_err(), "unknown keys are refused");
}

// ---------------------------------------------------------------------------------------------
// Delivery semantics, through the outbox
// ---------------------------------------------------------------------------------------------

/// An outbox delivering through a Slack sink built from `cfg`, its state database in `dir`.
fn slack_outbox(cfg: &SlackSinkConfig, dir: tempfile::TempDir) -> Outbox {
    let sink: Arc<dyn Sink> = Arc::new(SlackSink::new("slack".into(), cfg).expect("sink"));
    Outbox::new(vec![sink], dir)
}

#[tokio::test]
async fn rate_limited_429_waits_for_retry_after_then_delivers_once() {
    let (fake, base) = fake_slack().await;
    fake.push_replies([Reply::new(429, "rate_limited").retry_after("30")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &format!("{base}{HOOK_PATH}"));
    let outbox = slack_outbox(&cfg, dir);
    outbox.queue(vec![firing("k1")], &["slack"]);

    outbox.pass(Duration::ZERO).await;
    assert_eq!(fake.count(), 1);
    assert_eq!(outbox.count("slack", "failed"), 1);
    assert_eq!(outbox.waiting("slack"), 1);

    // The outbox's own backoff would try again after 5 s; Slack asked for 30.
    outbox.pass(Duration::from_secs(20)).await;
    assert_eq!(fake.count(), 1, "Retry-After is honoured");

    outbox.pass(Duration::from_secs(31)).await;
    assert_eq!(fake.count(), 2);
    assert_eq!(outbox.count("slack", "sent"), 1);
    assert_eq!(outbox.waiting("slack"), 0);

    outbox.pass(Duration::from_secs(3600)).await;
    assert_eq!(fake.count(), 2, "delivered once");
    assert_eq!(outbox.count("slack", "rejected"), 0);
}

#[tokio::test]
async fn channel_not_found_and_archived_are_rejected_once_and_never_retried() {
    let (fake, base) = fake_slack().await;
    fake.push_replies([
        Reply::new(404, "channel_not_found"),
        Reply::new(410, "channel_is_archived"),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &format!("{base}{HOOK_PATH}"));
    let outbox = slack_outbox(&cfg, dir);
    outbox.queue(vec![firing("k1"), firing("k2"), firing("k3")], &["slack"]);

    outbox.pass(Duration::ZERO).await;
    let got = fake.requests();
    assert_eq!(
        got.len(),
        3,
        "a rejection does not hold back the next message"
    );
    assert_eq!(outbox.count("slack", "rejected"), 2);
    assert_eq!(outbox.count("slack", "sent"), 1);
    assert_eq!(outbox.count("slack", "failed"), 0);
    assert_eq!(outbox.waiting("slack"), 0);

    for later in [60, 3600, 86_400] {
        outbox.pass(Duration::from_secs(later)).await;
    }
    assert_eq!(fake.count(), 3, "rejected messages are never retried");
    assert_eq!(outbox.count("slack", "rejected"), 2);
}

#[tokio::test]
async fn server_errors_are_retried_until_delivered() {
    let (fake, base) = fake_slack().await;
    fake.push_replies([Reply::new(500, "internal_error"), Reply::new(503, "")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &format!("{base}{HOOK_PATH}"));
    let outbox = slack_outbox(&cfg, dir);
    outbox.queue(vec![firing("k1")], &["slack"]);

    outbox.pass(Duration::ZERO).await;
    assert_eq!(outbox.count("slack", "failed"), 1);
    assert_eq!(outbox.waiting("slack"), 1);
    outbox.pass(Duration::from_secs(3600)).await;
    assert_eq!(outbox.count("slack", "failed"), 2);
    assert_eq!(outbox.waiting("slack"), 1);
    outbox.pass(Duration::from_secs(7200)).await;
    assert_eq!(outbox.count("slack", "sent"), 1);
    assert_eq!(outbox.waiting("slack"), 0);
    assert_eq!(fake.count(), 3);
    assert_eq!(outbox.count("slack", "rejected"), 0);
}

#[tokio::test]
async fn rejection_names_slacks_reason() {
    let (fake, base) = fake_slack().await;
    fake.push_replies([
        Reply::new(400, "invalid_payload"),
        Reply::new(403, "action_prohibited"),
        Reply::new(404, "no_service"),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SlackSink::new(
        "slack".into(),
        &config(dir.path(), &format!("{base}{HOOK_PATH}")),
    )
    .expect("sink");
    for (code, reason) in [
        ("400", "invalid_payload"),
        ("403", "action_prohibited"),
        ("404", "no_service"),
    ] {
        let err = sink.send(&firing("k1")).await.expect_err("refused");
        assert!(err.is_rejected(), "{code}: {err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "slack sink slack: POST {base}/<redacted> answered {code} "
            )),
            "{text}"
        );
        assert!(text.ends_with(reason), "{text}");
    }
    assert_eq!(fake.count(), 3);
}

// ---------------------------------------------------------------------------------------------
// Pacing and the URL file
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn posts_to_one_webhook_are_about_a_second_apart() {
    let (fake, base) = fake_slack().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SlackSink::new(
        "slack".into(),
        &config(dir.path(), &format!("{base}{HOOK_PATH}")),
    )
    .expect("sink");
    for key in ["k1", "k2", "k3"] {
        sink.send(&firing(key)).await.expect("delivered");
    }
    let got = fake.requests();
    assert_eq!(got.len(), 3);
    for pair in got.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(900), "{gap:?}");
    }
}

#[tokio::test]
async fn url_file_is_read_again_at_each_send() {
    let (fake, base) = fake_slack().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &format!("{base}{HOOK_PATH}"));
    let sink = SlackSink::new("slack".into(), &cfg).expect("sink");
    sink.send(&firing("k1")).await.expect("first");

    let rotated = "/services/T000/B111/ROTATEDSECRET";
    std::fs::write(&cfg.url_file, format!("  {base}{rotated}\r\n")).expect("rotate");
    sink.send(&firing("k2")).await.expect("second");
    let paths = fake.paths();
    assert_eq!(paths, vec![HOOK_PATH.to_string(), rotated.to_string()]);

    let file = cfg.url_file.display().to_string();
    std::fs::remove_file(&cfg.url_file).expect("remove");
    let err = sink.send(&firing("k3")).await.expect_err("file gone");
    assert!(!err.is_rejected(), "a missing file is retried: {err}");
    assert!(err.to_string().contains(&file), "{err}");

    for bad in [
        format!("hooks.slack.com{HOOK_PATH}"),
        format!("ftp://127.0.0.1{HOOK_PATH}"),
    ] {
        std::fs::write(&cfg.url_file, &bad).expect("write");
        let err = sink
            .send(&firing("k3"))
            .await
            .expect_err("not a webhook URL");
        let text = err.to_string();
        assert!(!err.is_rejected(), "{text}");
        assert!(text.contains(&file), "{text}");
        testkit::secrets::assert_absent(&[SECRET], [("the error", &text)]);
    }
    assert_eq!(fake.count(), 2, "nothing is sent without a good URL");
}

// ---------------------------------------------------------------------------------------------
// The secret path never shows
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_secret_path_never_appears_in_errors_debug_metrics_or_state() {
    let (fake, base) = fake_slack().await;
    // A careless receiver echoing the path it was called at.
    fake.push_replies([
        Reply::new(404, format!("channel_not_found for {HOOK_PATH}")),
        Reply::new(500, format!("oops at {base}{HOOK_PATH}")),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &format!("{base}{HOOK_PATH}"));
    let mut shown = vec![format!("{cfg:?}")];

    let sink = SlackSink::new("slack".into(), &cfg).expect("sink");
    shown.push(format!("{sink:?}"));
    let rejected = sink.send(&firing("k1")).await.expect_err("404");
    assert!(rejected.is_rejected());
    assert!(
        rejected.to_string().contains("channel_not_found"),
        "{rejected}"
    );
    assert!(rejected.to_string().contains("<redacted>"), "{rejected}");
    shown.push(rejected.to_string());
    shown.push(format!("{rejected:?}"));
    let failed = sink.send(&firing("k1")).await.expect_err("500");
    shown.push(failed.to_string());

    // Nobody listens on this port any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let other = tempfile::tempdir().expect("tempdir");
    let closed = config(other.path(), &format!("http://127.0.0.1:{port}{HOOK_PATH}"));
    let refused = SlackSink::new("slack".into(), &closed)
        .expect("sink")
        .send(&firing("k1"))
        .await
        .expect_err("connection refused");
    assert!(!refused.is_rejected(), "{refused}");
    assert!(
        refused.to_string().starts_with(&format!(
            "slack sink slack: POST http://127.0.0.1:{port}/<redacted> could not connect"
        )),
        "{refused}"
    );
    shown.push(refused.to_string());

    // Through the outbox, which keeps errors with its rows and counts them in metrics.
    let outbox = slack_outbox(&cfg, tempfile::tempdir().expect("tempdir"));
    fake.push_replies([
        Reply::new(410, format!("channel_is_archived {HOOK_PATH}")),
        Reply::new(502, format!("bad gateway {HOOK_PATH}")),
    ]);
    outbox.queue(vec![firing("k1"), firing("k2")], &["slack"]);
    outbox.pass(Duration::ZERO).await;
    assert_eq!(outbox.count("slack", "rejected"), 1);
    assert_eq!(outbox.count("slack", "failed"), 1);
    shown.push(outbox.metrics.render());
    shown.push(outbox.database_bytes());
    testkit::secrets::assert_absent(&[SECRET], shown.iter().map(|t| ("a shown text", t)));
    assert!(
        fake.requests().iter().all(|r| r.path == HOOK_PATH),
        "the real path was used for every post"
    );
}
