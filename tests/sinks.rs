//! The email and webhook sinks against real receivers: an in-process axum server that records what
//! it gets, and the real SMTP server aiosmtpd (installed by `scripts/install-peers.sh`).

mod outbox_harness;
use testkit::peers;
use testkit::receiver;
use testkit::secrets::assert_absent;

use std::path::Path;
use std::time::{Duration, Instant};

use axum::http::Method;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use url::Url;

use receiver::{Receiver, Reply};

use npm_watchdog::alerts::email::{EmailSink, EmailSinkConfig};
use npm_watchdog::alerts::webhook::{WebhookSink, WebhookSinkConfig};
use npm_watchdog::alerts::{Notification, Sink, Status};
use npm_watchdog::config::HumanDuration;
use npm_watchdog::finding::{Dod, Finding, Severity};
use npm_watchdog::secret::SecretUrl;

const FIX: &str = "Revoke it now: `npm token revoke 82e393`, then confirm with `npm token list`.";

fn firing() -> Notification {
    let first = DateTime::parse_from_rfc3339("2026-11-24T09:30:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let at = DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    Notification::change(
        Status::Firing,
        Finding {
            check: "token-bypass-2fa".into(),
            subject_key: "82e3930f1c5a6a7f0d2b9c44e1f3a5b6".into(),
            subject: "token 82e393 (bulk-hardening)".into(),
            severity: Severity::Critical,
            summary: "The bypass-2FA token 82e393 (bulk-hardening) is 2 days old; it was meant to live one day."
                .into(),
            why: "Anyone holding it can publish every package without a second factor.".into(),
            fix: FIX.into(),
            dod: Some(Dod::D9),
        },
        first,
        at,
    )
}

// ---------------------------------------------------------------------------------------------
// Webhook
// ---------------------------------------------------------------------------------------------

/// What a careless receiver answers with an error status: it echoes the path it was called at
/// (which holds the URL's secret), with control characters and far more text than an error message
/// should carry.
fn careless(status: u16, path: &str) -> Reply {
    let body = format!("boom\x1b[31m at {path}\r\n{}", "detail ".repeat(100));
    let reply = Reply::new(status, body);
    if (300..400).contains(&status) {
        reply.header("location", "http://127.0.0.1:9/elsewhere")
    } else {
        reply
    }
}

fn webhook_config(url: &str, secret_file: Option<&Path>) -> WebhookSinkConfig {
    WebhookSinkConfig {
        name: Some("hook".into()),
        url: SecretUrl::new(Url::parse(url).expect("url")),
        secret_file: secret_file.map(Path::to_path_buf),
        min_severity: Severity::Info,
        checks: Vec::new(),
        exclude_checks: Vec::new(),
        repeat_interval: None,
        group_by: None,
        max_items: None,
        group_wait: None,
        timeout: HumanDuration::secs(5),
    }
}

fn verify(key: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac key");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

const PATH_SECRET: &str = "B0PATHSECRETxyz";
const HOOK_SECRET: &str = "whsec-Hook-Key-4f1d9c";

#[tokio::test]
async fn webhook_posts_schema_v2_json_signed_with_the_secret() {
    let (rx, base) = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("hook-secret");
    std::fs::write(&secret, format!("{HOOK_SECRET}\n")).expect("write secret");
    let url = format!("{base}/services/T0/{PATH_SECRET}");
    let sink = WebhookSink::new("hook".into(), &webhook_config(&url, Some(&secret))).expect("sink");

    sink.send(&firing()).await.expect("delivered");

    let got = rx.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    let req = &got[0];
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.path, format!("/services/T0/{PATH_SECRET}"));
    assert_eq!(
        req.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let whole: serde_json::Value = serde_json::from_slice(&req.body).expect("json body");
    assert_eq!(whole["version"], "2");
    assert_eq!(whole["status"], "firing");
    assert_eq!(whole["total"], 1);
    assert_eq!(whole["omitted"], 0);
    let v = &whole["findings"][0];
    assert_eq!(v["status"], "firing");
    assert_eq!(v["check"], "token-bypass-2fa");
    assert_eq!(v["severity"], "critical");
    assert_eq!(v["subject"], "token 82e393 (bulk-hardening)");
    assert_eq!(
        v["fingerprint"],
        "token-bypass-2fa:82e3930f1c5a6a7f0d2b9c44e1f3a5b6"
    );
    assert!(
        v["summary"]
            .as_str()
            .expect("summary")
            .contains("2 days old"),
        "{v}"
    );
    assert!(
        v["why"].as_str().expect("why").contains("second factor"),
        "{v}"
    );
    assert_eq!(v["fix"], FIX);
    assert_eq!(v["first_seen"], "2026-11-24T09:30:00Z");
    assert_eq!(v["at"], "2026-11-26T12:00:00Z");
    assert_eq!(
        v["title"],
        "[FIRING:critical] token-bypass-2fa: token 82e393 (bulk-hardening)"
    );
    assert_eq!(v["reminder"], false);
    assert_eq!(v["dod"], "D9");

    let sig = req
        .headers
        .get("x-npm-watchdog-signature")
        .and_then(|v| v.to_str().ok())
        .expect("signature header");
    assert!(verify(HOOK_SECRET.as_bytes(), &req.body, sig), "{sig}");
    assert!(!verify(b"another key", &req.body, sig));
    assert!(
        !verify(HOOK_SECRET.as_bytes(), b"{\"tampered\":true}", sig),
        "the signature covers the exact body"
    );
    assert_absent(
        &[HOOK_SECRET],
        [("the webhook body", String::from_utf8_lossy(&req.body))],
    );
}

#[tokio::test]
async fn webhook_secret_is_reread_at_each_send() {
    let (rx, base) = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("hook-secret");
    std::fs::write(&secret, "first-key").expect("write");
    let sink = WebhookSink::new(
        "hook".into(),
        &webhook_config(&format!("{base}/h"), Some(&secret)),
    )
    .expect("sink");
    sink.send(&firing()).await.expect("first");
    std::fs::write(&secret, "rotated-key\n").expect("rotate");
    sink.send(&firing()).await.expect("second");
    let got = rx.requests();
    assert_eq!(got.len(), 2);
    let sig = |r: &receiver::Request| {
        r.headers
            .get("x-npm-watchdog-signature")
            .and_then(|v| v.to_str().ok())
            .expect("signature")
            .to_string()
    };
    assert!(verify(b"first-key", &got[0].body, &sig(&got[0])));
    assert!(verify(b"rotated-key", &got[1].body, &sig(&got[1])));

    std::fs::remove_file(&secret).expect("remove");
    let err = sink
        .send(&firing())
        .await
        .expect_err("secret file gone")
        .to_string();
    assert!(err.contains(&secret.display().to_string()), "{err}");
    assert_eq!(
        rx.requests().len(),
        2,
        "nothing unsigned is sent when the key is unreadable"
    );
}

#[tokio::test]
async fn webhook_without_secret_file_sends_no_signature() {
    let (rx, base) = Receiver::start().await;
    let sink = WebhookSink::new(
        "hook".into(),
        &webhook_config(&format!("{base}/plain"), None),
    )
    .expect("sink");
    sink.send(&firing()).await.expect("delivered");
    let got = rx.requests();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].headers.get("x-npm-watchdog-signature").is_none(),
        "{:?}",
        got[0].headers
    );
    let v: serde_json::Value = serde_json::from_slice(&got[0].body).expect("json");
    assert_eq!(v["findings"][0]["check"], "token-bypass-2fa");
}

#[tokio::test]
async fn webhook_500_is_an_error_with_the_status_and_no_secret() {
    let (rx, base) = Receiver::start().await;
    rx.set_default(careless(500, &format!("/services/T0/{PATH_SECRET}")));
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("hook-secret");
    std::fs::write(&secret, HOOK_SECRET).expect("write");
    let url = format!("{base}/services/T0/{PATH_SECRET}");
    let sink = WebhookSink::new("hook".into(), &webhook_config(&url, Some(&secret))).expect("sink");

    let err = sink
        .send(&firing())
        .await
        .expect_err("500 is a failure")
        .to_string();
    assert_eq!(rx.requests().len(), 1);
    assert!(err.contains("500"), "{err}");
    assert!(err.contains("boom"), "the receiver's reason is kept: {err}");
    assert_absent(&[PATH_SECRET, HOOK_SECRET], [("the error", &err)]);
    assert!(!err.chars().any(char::is_control), "{err:?}");
    assert!(
        err.len() < 400,
        "the body excerpt is bounded: {} chars",
        err.len()
    );
    assert!(err.contains(&format!("{base}/<redacted>")), "{err}");

    assert_absent(
        &[PATH_SECRET, HOOK_SECRET],
        [("the sink's Debug", format!("{sink:?}"))],
    );
}

#[tokio::test]
async fn webhook_redirect_is_not_followed() {
    let (rx, base) = Receiver::start().await;
    rx.set_default(careless(302, &format!("/{PATH_SECRET}")));
    let sink = WebhookSink::new(
        "hook".into(),
        &webhook_config(&format!("{base}/{PATH_SECRET}"), None),
    )
    .expect("sink");
    let err = sink
        .send(&firing())
        .await
        .expect_err("302 is a failure")
        .to_string();
    assert!(err.contains("302"), "{err}");
    assert_absent(&[PATH_SECRET], [("the error", &err)]);
    assert_eq!(rx.requests().len(), 1);
}

#[tokio::test]
async fn webhook_slow_receiver_hits_the_timeout() {
    let (rx, base) = Receiver::start().await;
    rx.set_delay(Duration::from_millis(3_000));
    let mut cfg = webhook_config(&format!("{base}/{PATH_SECRET}"), None);
    cfg.timeout = HumanDuration(Duration::from_millis(500));
    let sink = WebhookSink::new("hook".into(), &cfg).expect("sink");
    let started = Instant::now();
    let err = sink
        .send(&firing())
        .await
        .expect_err("too slow")
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains("timed out"), "{err}");
    assert_absent(&[PATH_SECRET], [("the error", &err)]);
}

// ---------------------------------------------------------------------------------------------
// Email, against aiosmtpd
// ---------------------------------------------------------------------------------------------

fn email_config(port: u16) -> EmailSinkConfig {
    EmailSinkConfig {
        name: Some("mail".into()),
        smtp_url: Url::parse(&format!("smtp://127.0.0.1:{port}")).expect("url"),
        from: "npm-watchdog <watchdog@example.com>".into(),
        to: vec!["security@example.com".into()],
        username: None,
        password_file: None,
        min_severity: Severity::Info,
        checks: Vec::new(),
        exclude_checks: Vec::new(),
        repeat_interval: None,
        group_by: None,
        max_items: None,
        group_wait: None,
        timeout: HumanDuration::secs(5),
    }
}

#[tokio::test]
async fn email_firing_arrives_at_a_real_smtp_server() {
    let smtp = peers::Smtp::start();
    let sink = EmailSink::new("mail".into(), &email_config(smtp.port)).expect("sink");

    sink.send(&firing()).await.expect("delivered");

    let mails = peers::wait_until("the alert in the maildir", Duration::from_secs(10), || {
        let m = smtp.messages();
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(
        mail.subject,
        "[FIRING:critical] token-bypass-2fa: token 82e393 (bulk-hardening)"
    );
    assert!(mail.from.contains("watchdog@example.com"), "{}", mail.from);
    assert!(mail.to.contains("security@example.com"), "{}", mail.to);
    assert!(mail.body.contains(FIX), "{}", mail.body);
    assert!(mail.body.contains("Why it matters: "), "{}", mail.body);
    assert!(
        mail.raw.contains("X-Npm-Watchdog-Check: token-bypass-2fa"),
        "{}",
        mail.raw
    );
    assert!(
        mail.raw.contains("X-Npm-Watchdog-Severity: critical"),
        "{}",
        mail.raw
    );
    assert!(
        mail.raw.contains("X-Npm-Watchdog-Status: firing"),
        "{}",
        mail.raw
    );
}

#[tokio::test]
async fn email_to_a_closed_port_fails_within_the_timeout() {
    let port = peers::free_port();
    let mut cfg = email_config(port);
    cfg.timeout = HumanDuration::secs(3);
    let sink = EmailSink::new("mail".into(), &cfg).expect("sink");
    let started = Instant::now();
    let err = sink
        .send(&firing())
        .await
        .expect_err("nothing listens")
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains("connection refused"), "{err}");
    assert!(err.contains(&format!("smtp://127.0.0.1:{port}")), "{err}");
}

#[tokio::test]
async fn email_server_down_then_back_delivers_on_the_next_send() {
    let mut smtp = peers::Smtp::start();
    let sink = EmailSink::new("mail".into(), &email_config(smtp.port)).expect("sink");
    smtp.stop();
    let err = sink
        .send(&firing())
        .await
        .expect_err("server stopped")
        .to_string();
    assert!(err.contains("connection refused"), "{err}");
    // Same port and Maildir: the same sink delivers once the server is back.
    smtp.restart();
    sink.send(&firing()).await.expect("delivered after restart");
    let mails = peers::wait_until("the alert after restart", Duration::from_secs(10), || {
        let m = smtp.messages();
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(mails.len(), 1, "{mails:?}");
}

/// aiosmtpd offers no AUTH (it only would over TLS, with an authenticator). With credentials
/// configured, lettre refuses to go on without authenticating: the send fails, no mail is sent, and
/// the error says why without showing the password.
#[tokio::test]
async fn email_credentials_on_a_server_without_auth_fail_without_leaking_the_password() {
    const PASSWORD: &str = "Smtp-Pa55word-never-shown";
    let smtp = peers::Smtp::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("smtp-password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).expect("write");
    let mut cfg = email_config(smtp.port);
    cfg.username = Some("watchdog".into());
    cfg.password_file = Some(pw.clone());
    let sink = EmailSink::new("mail".into(), &cfg).expect("sink");

    let err = sink
        .send(&firing())
        .await
        .expect_err("no AUTH offered")
        .to_string();
    assert!(err.contains("no AUTH mechanism"), "{err}");
    assert!(err.contains("credentials were not sent"), "{err}");
    assert_absent(
        &[PASSWORD],
        [
            ("the error", err.clone()),
            ("the sink's Debug", format!("{sink:?}")),
        ],
    );

    // Nothing was delivered: give the server a moment to write anything it might have accepted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        smtp.messages().is_empty(),
        "no mail without the configured login"
    );

    // An emptied password file is a clear error naming the file.
    std::fs::write(&pw, "\n").expect("empty");
    let err = sink
        .send(&firing())
        .await
        .expect_err("empty password file")
        .to_string();
    assert!(
        err.contains(&format!("password_file {} is empty", pw.display())),
        "{err}"
    );
}

/// aiosmtpd offers no STARTTLS: `smtp+starttls://` must refuse to fall back to plain text, and
/// `smtps://` must fail the TLS handshake, both quickly and without delivering anything.
#[tokio::test]
async fn email_tls_schemes_never_fall_back_to_plain_text() {
    let smtp = peers::Smtp::start();
    for (scheme, want) in [
        ("smtp+starttls", "does not offer STARTTLS"),
        ("smtps", "TLS failed"),
    ] {
        let mut cfg = email_config(smtp.port);
        cfg.smtp_url = Url::parse(&format!("{scheme}://127.0.0.1:{}", smtp.port)).expect("url");
        cfg.timeout = HumanDuration::secs(5);
        let sink = EmailSink::new("mail".into(), &cfg).expect("sink");
        let started = Instant::now();
        let err = sink.send(&firing()).await.expect_err(scheme).to_string();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{scheme}: {:?}",
            started.elapsed()
        );
        assert!(err.contains(want), "{scheme}: {err}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        smtp.messages().is_empty(),
        "nothing may be sent in clear text"
    );
}

/// A permanent (5xx) SMTP refusal is the server's final word: the message is rejected once and never
/// retried. A transient (4xx) one is retried until the server takes it. Other mail is not held back.
#[tokio::test]
async fn email_5xx_is_rejected_for_good_and_4xx_is_retried() {
    let smtp = peers::Smtp::start_refusing();
    let sink_for = |name: &str, to: &str| -> std::sync::Arc<dyn Sink> {
        let mut cfg = email_config(smtp.port);
        cfg.name = Some(name.into());
        cfg.to = vec![to.into()];
        std::sync::Arc::new(EmailSink::new(name.into(), &cfg).expect("sink"))
    };
    let out = outbox_harness::Outbox::new(
        vec![
            sink_for("refused", "refused@example.com"),
            sink_for("later", "later@example.com"),
            sink_for("fine", "security@example.com"),
        ],
        tempfile::tempdir().expect("tempdir"),
    );
    out.queue(vec![firing()], &["refused", "later", "fine"]);
    out.pass(Duration::ZERO).await;
    assert_eq!(out.count("fine", "sent"), 1);
    assert_eq!(out.count("refused", "rejected"), 1);
    assert_eq!(out.waiting("refused"), 0, "closed, not retried");
    assert_eq!(out.count("later", "failed"), 1);
    assert_eq!(out.waiting("later"), 1, "kept for the retry");
    let (delivered, reason) = out.rows("refused").pop().expect("row");
    assert!(delivered);
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.starts_with("rejected: ") && r.contains("550")),
        "{reason:?}"
    );
    // Later passes retry the 451, never the 550.
    out.pass(Duration::from_secs(3600)).await;
    assert_eq!(out.count("refused", "rejected"), 1);
    assert_eq!(out.count("later", "failed"), 2);
    assert_eq!(smtp.count("[FIRING:critical] token-bypass-2fa"), 1);
}
