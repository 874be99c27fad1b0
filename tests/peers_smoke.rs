//! Proves the end-to-end harness (testkit::peers) against the real peers:
//! Verdaccio with the real npm CLI, aiosmtpd, and promtool.

use testkit::peers;

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use peers::{
    npm_token_create, npm_token_revoke, promtool, promtool_check_metrics, wait_until,
    wait_until_async, Smtp, Verdaccio,
};
use serde_json::Value;

async fn get_json(url: &str, bearer: &str) -> (u16, Value) {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

async fn listed_keys(v: &Verdaccio, session: &str) -> Vec<Value> {
    let (status, body) = get_json(&format!("{}-/npm/v1/tokens", v.url), session).await;
    assert_eq!(status, 200, "token list: {body}");
    body["objects"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn verdaccio_tokens_with_the_real_npm_cli() {
    let mut v = Verdaccio::start();
    assert!(v.url.starts_with("http://127.0.0.1:") && v.url.ends_with('/'));
    let password = "pw-alice-1";
    let session = v.add_user("alice", password);
    let npmrc = v.dir.path().join("alice.npmrc");
    v.write_npmrc(&npmrc, &session);

    // The session token is a user's credential but is not listed as a token.
    assert!(listed_keys(&v, &session).await.is_empty());

    let created = npm_token_create(&v, &npmrc, password, &[]);
    assert_eq!(created.key.len(), 32, "key {:?}", created.key);
    let listed = listed_keys(&v, &session).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["key"], created.key.as_str());
    assert_eq!(listed[0]["user"], "alice");
    let secret = &created.token;
    let mask = format!("{}...{}", &secret[..5], &secret[secret.len() - 5..]);
    assert_eq!(listed[0]["token"], mask.as_str());

    let whoami = format!("{}-/whoami", v.url);
    let (status, body) = get_json(&whoami, secret).await;
    assert_eq!((status, &body["username"]), (200, &Value::from("alice")));

    npm_token_revoke(&v, &npmrc, &created.key);
    assert!(listed_keys(&v, &session).await.is_empty());
    // Verdaccio refuses a revoked token outright (403), not as anonymous (200 {}).
    let (status, body) = get_json(&whoami, secret).await;
    assert_eq!(status, 403, "revoked token: {body}");

    // Users, passwords and session tokens survive a restart on the same port.
    let port = v.port;
    v.restart();
    assert_eq!(v.port, port);
    let (status, body) = get_json(&whoami, &session).await;
    assert_eq!((status, &body["username"]), (200, &Value::from("alice")));
    let second = npm_token_create(&v, &npmrc, password, &["--cidr", "127.0.0.1/32"]);
    let listed = listed_keys(&v, &session).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["key"], second.key.as_str());
    assert_eq!(listed[0]["cidr"], serde_json::json!(["127.0.0.1/32"]));

    assert!(v.log_text().contains("http address"), "{}", v.log_text());
    v.stop();
    v.stop();
    assert!(!v.is_running());
}

fn alert(to: &str, subject: &str, body: &str) -> Message {
    Message::builder()
        .from(
            "npm-watchdog <watchdog@example.test>"
                .parse::<Mailbox>()
                .unwrap(),
        )
        .to(to.parse::<Mailbox>().unwrap())
        .subject(subject)
        .body(body.to_owned())
        .unwrap()
}

#[tokio::test]
async fn aiosmtpd_receives_mail_sent_with_lettre() {
    let mut smtp = Smtp::start();
    let mailer = |port: u16| {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(port)
            .timeout(Some(Duration::from_secs(10)))
            .build()
    };
    let subject = "Tökèn “ci-publish” was created outside the policy — please look at it today";
    let body = "A new token appeared.\nKey: 0123abcd\nÜnïcode body line\n";
    mailer(smtp.port)
        .send(alert("ops@example.test", subject, body))
        .await
        .unwrap_or_else(|e| panic!("send: {e}\n{}", smtp.log_text()));

    let mails = wait_until_async("one stored mail", Duration::from_secs(10), || {
        Some(smtp.messages()).filter(|m| m.len() == 1)
    })
    .await;
    let mail = &mails[0];
    assert_eq!(mail.subject, subject);
    assert_eq!(mail.from, "npm-watchdog <watchdog@example.test>");
    assert_eq!(mail.to, "ops@example.test");
    assert_eq!(mail.body.replace("\r\n", "\n").trim_end(), body.trim_end());
    assert!(
        mail.raw.contains("X-RcptTo: ops@example.test"),
        "{}",
        mail.raw
    );

    // Same port and Maildir after a restart; messages come back oldest first.
    smtp.restart();
    mailer(smtp.port)
        .send(alert("second@example.test", "second", "two"))
        .await
        .unwrap_or_else(|e| panic!("send after restart: {e}\n{}", smtp.log_text()));
    let mails = wait_until("two stored mails", Duration::from_secs(10), || {
        Some(smtp.messages()).filter(|m| m.len() == 2)
    });
    assert_eq!(mails[0].subject, subject);
    assert_eq!(mails[1].subject, "second");
    assert_eq!(mails[1].to, "second@example.test");
    smtp.stop();
    smtp.stop();
}

#[test]
fn promtool_accepts_good_exposition_and_rejects_a_total_gauge() {
    let good = "# HELP npm_watchdog_up Whether the watchdog is running.\n\
                # TYPE npm_watchdog_up gauge\n\
                npm_watchdog_up 1\n\
                # HELP npm_watchdog_checks_total Checks run so far.\n\
                # TYPE npm_watchdog_checks_total counter\n\
                npm_watchdog_checks_total{check=\"tokens\"} 3\n";
    promtool_check_metrics(good).unwrap();

    let bad = "# HELP foo_total Not really a counter.\n# TYPE foo_total gauge\nfoo_total 1\n";
    let err = promtool_check_metrics(bad).unwrap_err();
    assert!(err.contains("foo_total"), "{err}");

    let out = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(write_temp(bad).path()).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

fn write_temp(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    f
}

#[test]
#[should_panic(expected = "timed out after 100ms waiting for the impossible")]
fn wait_until_names_what_it_waited_for() {
    wait_until("the impossible", Duration::from_millis(100), || None::<()>);
}

#[test]
fn free_ports_are_bindable() {
    let port = peers::free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
}
