//! The PagerDuty sink against an in-process fake of the Events API v2 (`POST /v2/enqueue` on
//! 127.0.0.1): what each event says, how trigger and resolve meet, and how the outbox treats
//! PagerDuty's answers (rate limits, invalid events, outages). The routing key is searched for in
//! everything a user or an operator could see.

mod outbox_harness;
use testkit::receiver;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use outbox_harness::Outbox;
use receiver::{Receiver, Reply};
use serde_json::{json, Value};
use url::Url;

use npm_watchdog::alerts::pagerduty::{PagerDutySink, PagerDutySinkConfig};
use npm_watchdog::alerts::{AlertsConfig, Failure, Notification, Sink, SinkContext, Status};
use npm_watchdog::finding::{Dod, Finding, Severity};

/// A well-formed integration key: 32 letters and digits.
const KEY: &str = "Pd7RoutingKeyAbCdEf0123456789xyZ";
const SOURCE: &str = "registry.npmjs.org: alice, org acme";
const SINK: &str = "pager";

// ---------------------------------------------------------------------------------------------
// The fake Events API
// ---------------------------------------------------------------------------------------------

/// A PagerDuty answer: JSON, as the Events API's always are.
fn answer(status: u16, body: impl Into<String>) -> Reply {
    Reply::new(status, body).header("content-type", "application/json")
}

fn accepted() -> Reply {
    answer(
        202,
        r#"{"status":"success","message":"Event processed","dedup_key":"x"}"#,
    )
}

fn invalid(errors: &[&str]) -> Reply {
    answer(
        400,
        json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors})
            .to_string(),
    )
}

/// A fake Events API that records every event and answers from a script, then 202 once the script
/// runs out; with the URL of its `/v2/enqueue`.
async fn fake_pagerduty() -> (Receiver, Url) {
    let (fake, base) = Receiver::start().await;
    fake.set_default(accepted());
    (
        fake,
        Url::parse(&format!("{base}/v2/enqueue")).expect("url"),
    )
}

/// Every event received so far, each of which went to `/v2/enqueue`.
fn events(fake: &Receiver) -> Vec<Value> {
    for path in fake.paths() {
        assert_eq!(path, "/v2/enqueue");
    }
    fake.bodies()
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

fn note(
    status: Status,
    check: &str,
    key: &str,
    subject: &str,
    severity: Severity,
    dod: Option<Dod>,
) -> Notification {
    Notification::change(
        status,
        Finding {
            check: check.to_string().into(),
            subject_key: key.into(),
            subject: subject.into(),
            severity,
            summary: format!("{subject} needs attention."),
            why: format!("Why {check} matters.").into(),
            fix: format!("How to fix {check}."),
            dod,
        },
        t("2026-11-24T09:30:00Z"),
        t("2026-11-26T12:00:00Z"),
    )
}

fn token_note(status: Status) -> Notification {
    note(
        status,
        "token-bypass-2fa",
        "82e3930f1c5a6a7f0d2b9c44e1f3a5b6",
        "token 82e393 (bulk-hardening)",
        Severity::Critical,
        Some(Dod::D9),
    )
}

fn package_note() -> Notification {
    note(
        Status::Firing,
        "publish-untrusted",
        "@acme/core@1.2.1",
        "version @acme/core@1.2.1",
        Severity::Warning,
        Some(Dod::D5),
    )
}

fn health_note() -> Notification {
    note(
        Status::Firing,
        "watchdog-blind",
        "packages",
        "check group packages",
        Severity::Info,
        None,
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    key_file: PathBuf,
    config: PagerDutySinkConfig,
}

/// A `[[alerts.pagerduty]]` section as a user writes it, with the key in its own file.
fn setup(url: &Url) -> Setup {
    assert_eq!(KEY.len(), 32);
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("pagerduty-routing-key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("write key");
    let config = section(&key_file, url);
    Setup {
        _dir: dir,
        key_file,
        config,
    }
}

fn section(key_file: &Path, url: &Url) -> PagerDutySinkConfig {
    let toml = format!(
        "[[pagerduty]]\nname = \"{SINK}\"\nrouting_key_file = {:?}\nurl = \"{url}\"\ntimeout = \"5s\"\n",
        key_file.display().to_string()
    );
    let alerts: AlertsConfig = toml::from_str(&toml).expect("section parses");
    alerts
        .validate(&npm_watchdog::checks::ids())
        .expect("section is valid");
    alerts.pagerduty[0].clone()
}

fn ctx(external_url: Option<&str>) -> SinkContext {
    SinkContext {
        watched: SOURCE.into(),
        external_url: external_url.map(|u| Url::parse(u).expect("url")),
        checks: npm_watchdog::runtime::check_facts(),
    }
}

fn sink(cfg: &PagerDutySinkConfig, ctx: &SinkContext) -> PagerDutySink {
    PagerDutySink::new(SINK.into(), cfg, ctx).expect("sink")
}

// ---------------------------------------------------------------------------------------------
// What is sent
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn firing_is_a_trigger_event_with_the_finding_for_every_severity() {
    let (pd, url) = fake_pagerduty().await;
    let s = setup(&url);
    let pager = sink(&s.config, &ctx(Some("https://watchdog.example.com/")));

    for n in [token_note(Status::Firing), package_note(), health_note()] {
        pager.send(&n).await.expect("delivered");
    }

    let got = events(&pd);
    assert_eq!(got.len(), 3, "{got:#?}");
    for v in &got {
        assert_eq!(v["routing_key"], KEY);
        assert_eq!(v["event_action"], "trigger");
        assert_eq!(v["client"], "npm-watchdog");
        assert_eq!(v["client_url"], "https://watchdog.example.com/");
        assert_eq!(v["payload"]["source"], SOURCE);
        assert_eq!(v["payload"]["timestamp"], "2026-11-26T12:00:00Z");
        assert_eq!(
            v["payload"]["custom_details"]["first_seen"],
            "2026-11-24T09:30:00Z"
        );
        assert_eq!(v["payload"]["custom_details"]["reminder"], false);
        assert_eq!(v["payload"]["custom_details"]["test"], false);
    }

    let token = &got[0];
    assert_eq!(
        token["dedup_key"],
        "token-bypass-2fa:82e3930f1c5a6a7f0d2b9c44e1f3a5b6"
    );
    assert_eq!(
        token["payload"],
        json!({
            "summary": "[FIRING:critical] token-bypass-2fa: token 82e393 (bulk-hardening): token 82e393 (bulk-hardening) needs attention.",
            "source": SOURCE,
            "severity": "critical",
            "timestamp": "2026-11-26T12:00:00Z",
            "component": "token-bypass-2fa",
            "group": "tokens",
            "class": "token",
            "custom_details": {
                "subject": "token 82e393 (bulk-hardening)",
                "why": "Why token-bypass-2fa matters.",
                "fix": "How to fix token-bypass-2fa.",
                "dod": "D9",
                "first_seen": "2026-11-24T09:30:00Z",
                "fingerprint": "token-bypass-2fa:82e3930f1c5a6a7f0d2b9c44e1f3a5b6",
                "reminder": false,
                "test": false,
            },
        })
    );
    assert!(
        token.get("links").is_none(),
        "a token has no public page: {token}"
    );

    let package = &got[1];
    assert_eq!(package["dedup_key"], "publish-untrusted:@acme/core@1.2.1");
    assert_eq!(package["payload"]["severity"], "warning");
    assert_eq!(package["payload"]["component"], "publish-untrusted");
    assert_eq!(package["payload"]["group"], "packages");
    assert_eq!(package["payload"]["class"], "package");
    assert_eq!(package["payload"]["custom_details"]["dod"], "D5");
    let links = package["links"].as_array().expect("links");
    assert_eq!(links.len(), 1, "{package}");
    assert_eq!(links[0]["href"], "https://www.npmjs.com/package/@acme/core");
    assert!(!links[0]["text"].as_str().unwrap_or("").is_empty());

    let health = &got[2];
    assert_eq!(health["payload"]["severity"], "info");
    assert_eq!(health["payload"]["component"], "watchdog-blind");
    assert_eq!(health["payload"]["group"], "health");
    assert_eq!(health["payload"]["class"], "watchdog");
    assert!(health["payload"]["custom_details"].get("dod").is_none());

    // Without `server.external_url` there is no client_url to point at.
    let plain = sink(&s.config, &ctx(None));
    plain.send(&health_note()).await.expect("delivered");
    let last = events(&pd).pop().expect("event");
    assert!(last.get("client_url").is_none(), "{last}");
    assert_eq!(last["client"], "npm-watchdog");
}

#[tokio::test]
async fn a_reminder_is_a_trigger_under_the_same_key_marked_as_reminder() {
    let (pd, url) = fake_pagerduty().await;
    let s = setup(&url);
    let pager = sink(&s.config, &ctx(None));
    let mut reminder = token_note(Status::Firing);
    reminder.reminder = true;
    pager
        .send(&token_note(Status::Firing))
        .await
        .expect("first");
    pager.send(&reminder).await.expect("reminder");
    let got = events(&pd);
    assert_eq!(got[1]["event_action"], "trigger");
    assert_eq!(got[1]["dedup_key"], got[0]["dedup_key"]);
    assert_eq!(got[1]["payload"]["custom_details"]["reminder"], true);
    assert!(got[1]["payload"]["summary"]
        .as_str()
        .expect("summary")
        .starts_with("[FIRING:critical] (reminder) token-bypass-2fa: "));
}

#[tokio::test]
async fn summary_is_cut_to_1024_characters() {
    let (pd, url) = fake_pagerduty().await;
    let s = setup(&url);
    let pager = sink(&s.config, &ctx(None));
    let mut n = token_note(Status::Firing);
    std::sync::Arc::make_mut(&mut n.finding).summary = "Ünïcödé ".repeat(500);
    pager.send(&n).await.expect("delivered");
    let got = events(&pd);
    let summary = got[0]["payload"]["summary"].as_str().expect("summary");
    assert_eq!(summary.chars().count(), 1024, "{summary}");
    assert!(summary.ends_with('…'), "{summary}");
    assert!(summary.starts_with("[FIRING:critical] token-bypass-2fa: token 82e393"));
    // The rest of the finding is not cut.
    assert_eq!(
        got[0]["payload"]["custom_details"]["subject"],
        "token 82e393 (bulk-hardening)"
    );
}

#[tokio::test]
async fn a_long_fingerprint_is_hashed_the_same_way_after_a_restart() {
    let (pd, url) = fake_pagerduty().await;
    let s = setup(&url);
    let maintainers: Vec<String> = (0..40).map(|i| format!("maintainer-{i:02}")).collect();
    let key = format!("@acme/core:{}", maintainers.join(","));
    let firing = note(
        Status::Firing,
        "maintainers-changed",
        &key,
        "maintainers of @acme/core",
        Severity::Warning,
        Some(Dod::D6),
    );
    assert!(firing.fingerprint().len() > 255);
    let mut resolved = firing.clone();
    resolved.status = Status::Resolved;

    sink(&s.config, &ctx(None))
        .send(&firing)
        .await
        .expect("first run");
    // A restarted daemon builds its sink afresh from the same configuration.
    let restarted = sink(&s.config, &ctx(None));
    restarted.send(&firing).await.expect("after restart");
    restarted.send(&resolved).await.expect("resolve");

    let got = events(&pd);
    assert_eq!(got.len(), 3);
    let dedup = got[0]["dedup_key"].as_str().expect("dedup_key");
    assert!(dedup.starts_with("sha256:"), "{dedup}");
    assert!(dedup.chars().count() <= 255, "{dedup}");
    assert_eq!(got[1]["dedup_key"], dedup);
    assert_eq!(got[2]["dedup_key"], dedup);
    assert_eq!(got[2]["event_action"], "resolve");
    assert_eq!(
        got[0]["payload"]["custom_details"]["fingerprint"],
        firing.fingerprint(),
        "the full fingerprint stays visible"
    );
    assert_eq!(
        got[0]["links"][0]["href"],
        "https://www.npmjs.com/package/@acme/core"
    );
}

#[tokio::test]
async fn resolved_is_a_resolve_event_under_the_same_key() {
    let (pd, url) = fake_pagerduty().await;
    let s = setup(&url);
    let pager = sink(&s.config, &ctx(Some("https://watchdog.example.com/")));
    pager
        .send(&token_note(Status::Firing))
        .await
        .expect("trigger");
    pager
        .send(&token_note(Status::Resolved))
        .await
        .expect("resolve");
    let got = events(&pd);
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[1],
        json!({
            "routing_key": KEY,
            "event_action": "resolve",
            "dedup_key": got[0]["dedup_key"],
        })
    );
    assert_eq!(
        got[1]["dedup_key"],
        "token-bypass-2fa:82e3930f1c5a6a7f0d2b9c44e1f3a5b6"
    );
}

// ---------------------------------------------------------------------------------------------
// Through the outbox
// ---------------------------------------------------------------------------------------------

/// A fresh outbox delivering through `sink`, with `n` queued for it.
fn outbox_with(sink: PagerDutySink, n: Notification) -> Outbox {
    let outbox = Outbox::new(vec![Arc::new(sink)], tempfile::tempdir().expect("tempdir"));
    outbox.queue(vec![n], &[SINK]);
    outbox
}

/// What the outbox recorded with its one row: (delivered, last_error).
fn only_row(outbox: &Outbox) -> (bool, Option<String>) {
    let [row] = <[_; 1]>::try_from(outbox.rows(SINK)).expect("one row");
    row
}

#[tokio::test]
async fn rate_limited_then_accepted_is_delivered_exactly_once() {
    let (pd, url) = fake_pagerduty().await;
    let s = setup(&url);
    let busy = answer(
        429,
        r#"{"status":"throttle event","message":"Requests for this service are arriving too quickly."}"#,
    )
    .retry_after("1");
    pd.push_replies([busy, accepted()]);
    let outbox = outbox_with(sink(&s.config, &ctx(None)), token_note(Status::Firing));

    outbox.pass(Duration::ZERO).await;
    assert_eq!(events(&pd).len(), 1);
    assert_eq!(outbox.count(SINK, "failed"), 1);
    assert_eq!(outbox.count(SINK, "sent"), 0);
    assert_eq!(outbox.waiting(SINK), 1, "kept for a retry");
    let (delivered, reason) = only_row(&outbox);
    assert!(!delivered);
    assert!(reason.unwrap_or_default().contains("429"));

    outbox.pass(Duration::from_secs(3600)).await;
    outbox.pass(Duration::from_secs(7200)).await;
    let got = events(&pd);
    assert_eq!(got.len(), 2, "one refused attempt, one delivery, no more");
    assert_eq!(got[0], got[1], "the retry is the same event");
    assert_eq!(outbox.count(SINK, "sent"), 1);
    assert_eq!(outbox.count(SINK, "rejected"), 0);
    assert_eq!(outbox.waiting(SINK), 0);
    assert!(outbox.state.pending().expect("pending").is_empty());
}

#[tokio::test]
async fn retry_after_holds_the_sink_back_and_is_passed_to_the_outbox() {
    let (pd, url) = fake_pagerduty().await;
    let s = setup(&url);
    let busy = answer(429, "{}").retry_after("120");
    pd.push_replies([busy.clone(), busy]);

    let direct = sink(&s.config, &ctx(None))
        .send(&token_note(Status::Firing))
        .await
        .expect_err("throttled");
    assert_eq!(
        direct.failure,
        Failure::Retry {
            after: Some(Duration::from_secs(120))
        }
    );

    let outbox = outbox_with(sink(&s.config, &ctx(None)), token_note(Status::Firing));
    outbox.pass(Duration::ZERO).await;
    assert_eq!(events(&pd).len(), 2);
    // The outbox's own backoff would allow a retry after 5 s; PagerDuty asked for 120.
    outbox.pass(Duration::from_secs(60)).await;
    assert_eq!(events(&pd).len(), 2, "not before Retry-After");
    outbox.pass(Duration::from_secs(121)).await;
    assert_eq!(events(&pd).len(), 3);
    assert_eq!(outbox.count(SINK, "sent"), 1);
    assert_eq!(outbox.waiting(SINK), 0);
}

#[tokio::test]
async fn an_invalid_event_is_rejected_once_and_never_retried() {
    let (pd, url) = fake_pagerduty().await;
    let s = setup(&url);
    let reasons = [
        "'payload.summary' is missing or blank",
        "'payload.severity' is invalid",
    ];
    pd.push_replies([invalid(&reasons), invalid(&reasons)]);
    let outbox = outbox_with(sink(&s.config, &ctx(None)), token_note(Status::Firing));

    outbox.pass(Duration::ZERO).await;
    outbox.pass(Duration::from_secs(3600)).await;
    outbox.pass(Duration::from_secs(7200)).await;

    assert_eq!(events(&pd).len(), 1, "a refused event is not sent again");
    assert_eq!(outbox.count(SINK, "rejected"), 1);
    assert_eq!(outbox.count(SINK, "failed"), 0);
    assert_eq!(outbox.count(SINK, "sent"), 0);
    assert_eq!(outbox.waiting(SINK), 0, "it does not hold back the queue");
    assert!(outbox.state.pending().expect("pending").is_empty());
    let (delivered, reason) = only_row(&outbox);
    assert!(delivered, "the row is closed");
    let reason = reason.expect("the reason is recorded");
    assert!(reason.starts_with("rejected: "), "{reason}");
    for r in reasons {
        assert!(reason.contains(r), "{reason}");
    }

    // The sink's own error says the same.
    let err = sink(&s.config, &ctx(None))
        .send(&token_note(Status::Firing))
        .await
        .expect_err("invalid");
    assert!(err.is_rejected());
    let text = err.to_string();
    assert!(text.starts_with("pagerduty sink pager: POST "), "{text}");
    assert!(text.contains("400"), "{text}");
    assert!(text.contains("invalid event"), "{text}");
    assert!(
        text.contains(&reasons.join("; ")),
        "PagerDuty's errors are kept: {text}"
    );
}

#[tokio::test]
async fn a_server_error_is_retried_and_then_delivered_once() {
    let (pd, url) = fake_pagerduty().await;
    let s = setup(&url);
    pd.push_replies([
        answer(500, r#"{"status":"error","message":"internal"}"#),
        accepted(),
    ]);
    let outbox = outbox_with(sink(&s.config, &ctx(None)), token_note(Status::Resolved));

    outbox.pass(Duration::ZERO).await;
    assert_eq!(outbox.count(SINK, "failed"), 1);
    assert_eq!(outbox.waiting(SINK), 1);
    outbox.pass(Duration::from_secs(3600)).await;
    outbox.pass(Duration::from_secs(7200)).await;

    let got = events(&pd);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1]["event_action"], "resolve");
    assert_eq!(outbox.count(SINK, "sent"), 1);
    assert_eq!(outbox.count(SINK, "rejected"), 0);
    assert_eq!(outbox.waiting(SINK), 0);
}

#[tokio::test]
async fn other_client_errors_are_rejected_and_outages_are_retried() {
    let (pd, url) = fake_pagerduty().await;
    let s = setup(&url);
    let pager = sink(&s.config, &ctx(None));
    for (status, rejected) in [
        (401, true),
        (403, true),
        (404, true),
        (413, true),
        (408, false),
        (502, false),
        (503, false),
    ] {
        pd.push_replies([answer(status, "{}")]);
        let err = pager
            .send(&token_note(Status::Firing))
            .await
            .expect_err("refused");
        assert_eq!(err.is_rejected(), rejected, "{status}: {err}");
        assert!(err.to_string().contains(&status.to_string()), "{err}");
    }

    // Nothing listening: a network failure is retried.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let closed = Url::parse(&format!("http://127.0.0.1:{port}/v2/enqueue")).expect("url");
    let err = sink(&section(&s.key_file, &closed), &ctx(None))
        .send(&token_note(Status::Firing))
        .await
        .expect_err("nothing listens");
    assert_eq!(err.failure, Failure::Retry { after: None }, "{err}");
}

// ---------------------------------------------------------------------------------------------
// The routing key stays secret
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_routing_key_never_shows_in_errors_debug_metrics_or_state() {
    let (pd, url) = fake_pagerduty().await;
    let s = setup(&url);
    // A careless server that echoes the key in every refusal.
    let echo = format!("routing key {KEY} is not valid");
    let replies = [
        invalid(&[echo.as_str()]),
        answer(401, format!(r#"{{"message":"{echo}"}}"#)),
        answer(429, echo.clone()),
        answer(500, echo.clone()),
    ];
    let pager = sink(&s.config, &ctx(Some("https://watchdog.example.com/")));
    let mut shown = Vec::new();
    for reply in replies.clone() {
        pd.push_replies([reply]);
        let err = pager
            .send(&token_note(Status::Firing))
            .await
            .expect_err("refused");
        shown.push(err.to_string());
        shown.push(format!("{err:?}"));
    }
    assert!(
        shown.iter().any(|e| e.contains("<redacted>")),
        "the echo was scrubbed, not lost: {shown:#?}"
    );

    // Through the outbox, failed then rejected: the recorded reasons, the metrics and the database
    // itself.
    pd.push_replies([replies[3].clone(), replies[0].clone()]);
    let outbox = outbox_with(
        sink(&s.config, &ctx(Some("https://watchdog.example.com/"))),
        token_note(Status::Firing),
    );
    outbox.pass(Duration::ZERO).await;
    let (_, failed) = only_row(&outbox);
    outbox.pass(Duration::from_secs(3600)).await;
    let (_, rejected) = only_row(&outbox);
    assert_eq!(
        (outbox.count(SINK, "failed"), outbox.count(SINK, "rejected")),
        (1, 1)
    );
    for reason in [failed, rejected] {
        let reason = reason.expect("a reason is recorded");
        assert!(reason.contains("<redacted>"), "{reason}");
        shown.push(reason);
    }
    let metrics = outbox.metrics.render();
    assert!(
        metrics.contains("npm_watchdog_notifications_total"),
        "{metrics}"
    );
    shown.push(metrics);
    shown.push(outbox.database_bytes());

    shown.push(format!("{pager:?}"));
    shown.push(format!("{:?}", s.config));
    shown.push(toml::to_string(&s.config).expect("serialize"));

    assert_eq!(events(&pd).len(), 6);
    testkit::secrets::assert_absent(&[KEY], shown.iter().map(|t| ("a shown text", t)));
}

#[tokio::test]
async fn a_missing_or_malformed_key_file_is_retried_and_named_never_shown() {
    let (pd, url) = fake_pagerduty().await;
    let s = setup(&url);
    let pager = sink(&s.config, &ctx(None));
    let path = s.key_file.display().to_string();

    std::fs::remove_file(&s.key_file).expect("remove");
    let err = pager
        .send(&token_note(Status::Firing))
        .await
        .expect_err("no key file");
    assert_eq!(err.failure, Failure::Retry { after: None }, "{err}");
    let text = err.to_string();
    assert!(text.contains("routing_key_file"), "{text}");
    assert!(text.contains(&path), "{text}");

    for wrong in [
        "R0utingKeyTooShort42",
        "Pd7RoutingKeyAbCdEf0123456789xyZ-and-more",
        "Pd7RoutingKey-bCdEf0123456789xyZ",
        "Pd7RoutingKeyAbCdEf0123456789xy\u{e9}",
    ] {
        std::fs::write(&s.key_file, format!("{wrong}\n")).expect("write");
        let err = pager
            .send(&token_note(Status::Firing))
            .await
            .expect_err("malformed key");
        assert!(!err.is_rejected(), "{wrong}: {err}");
        let text = err.to_string();
        assert!(text.contains(&path), "{text}");
        assert!(text.contains("32-character"), "{text}");
        testkit::secrets::assert_absent(&[wrong], [("the error", &text)]);
    }
    assert!(
        events(&pd).is_empty(),
        "nothing is sent without a valid key"
    );

    // Surrounding whitespace is not part of the key; a rotated key is used from the next send.
    let rotated = "NewKey0123456789abcdefABCDEF0123";
    std::fs::write(&s.key_file, format!("  {rotated}\r\n")).expect("write");
    pager
        .send(&token_note(Status::Firing))
        .await
        .expect("delivered");
    assert_eq!(events(&pd)[0]["routing_key"], rotated);
}
