//! The Alertmanager sink against in-process stand-ins for Alertmanager instances, through the outbox:
//! what `POST /api/v2/alerts` carries, each instance delivered to on its own, the re-send of active
//! findings every `resend_interval`, resolved alerts re-sent for 15 minutes, and a 400 rejected.
//! The real Alertmanager, with two replicas, is driven in `e2e_alertmanager.rs`.

mod outbox_harness;
use testkit::receiver;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use npm_watchdog::alerts::alertmanager::AlertmanagerSinkConfig;
use npm_watchdog::alerts::{Notification, Sink, SinkConfig, SinkContext, Status};
use npm_watchdog::config::HumanDuration;
use npm_watchdog::finding::{Dod, Finding, Severity};
use outbox_harness::Outbox;
use receiver::{Receiver, Reply};
use serde_json::Value;
use url::Url;

const RESEND: Duration = Duration::from_secs(60);

fn ctx() -> SinkContext {
    SinkContext {
        watched: "registry.npmjs.org: alice".into(),
        external_url: Some(Url::parse("https://npm-watchdog.example.com/").expect("url")),
        checks: npm_watchdog::runtime::check_facts(),
    }
}

fn config(urls: &[String]) -> AlertmanagerSinkConfig {
    let text = format!(
        "urls = [{}]\nresend_interval = \"60s\"\ntimeout = \"2s\"\n",
        urls.iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    toml::from_str(&text).expect("section")
}

fn sinks(urls: &[String]) -> Vec<Arc<dyn Sink>> {
    config(urls).build("am".into(), &ctx()).expect("sinks")
}

fn bypass(status: Status, first_seen: DateTime<Utc>, at: DateTime<Utc>) -> Notification {
    Notification::change(
        status,
        Finding {
            check: "token-bypass-2fa".into(),
            subject_key: "82e3930f1c5a6a7f0d2b9c44e1f3a5b6".into(),
            subject: "token 82e393 (bulk-hardening)".into(),
            severity: Severity::Critical,
            summary: "A bypass-2FA token is 2d old.".into(),
            why: "It publishes without a second factor.".into(),
            fix: "Revoke it: `npm token revoke 82e393`.".into(),
            dod: Some(Dod::D9),
        },
        first_seen,
        at,
    )
}

fn ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Every alert posted to `am`, in order, with the path each came to.
fn alerts(am: &Receiver) -> Vec<Value> {
    am.requests()
        .iter()
        .flat_map(|r| {
            assert_eq!(r.path, "/api/v2/alerts");
            r.json().as_array().cloned().expect("an array of alerts")
        })
        .collect()
}

async fn instance() -> (Receiver, String) {
    let (am, url) = Receiver::start().await;
    am.set_default(Reply::new(200, ""));
    (am, url)
}

#[tokio::test]
async fn firing_posts_one_alert_with_identity_labels_to_every_instance() {
    let (a, a_url) = instance().await;
    let (b, b_url) = instance().await;
    let out = Outbox::new(
        sinks(&[a_url.clone(), b_url.clone()]),
        tempfile::tempdir().expect("tempdir"),
    );
    let first = out.now - chrono::Duration::days(2);
    out.queue(
        vec![bypass(Status::Firing, first, out.now)],
        &[
            &format!("am@{}", a_url.trim_start_matches("http://")),
            &format!("am@{}", b_url.trim_start_matches("http://")),
        ],
    );
    out.pass(Duration::ZERO).await;
    for am in [&a, &b] {
        let got = alerts(am);
        assert_eq!(got.len(), 1, "{got:?}");
        let alert = &got[0];
        assert_eq!(
            alert["labels"],
            serde_json::json!({
                "alertname": "NpmWatchdogFinding",
                "check": "token-bypass-2fa",
                "severity": "critical",
                "fingerprint": "token-bypass-2fa:82e3930f1c5a6a7f0d2b9c44e1f3a5b6",
                "token": "82e3930f1c5a6a7f0d2b9c44e1f3a5b6",
            })
        );
        assert_eq!(
            alert["annotations"]["summary"],
            "A bypass-2FA token is 2d old."
        );
        assert_eq!(
            alert["annotations"]["description"],
            "It publishes without a second factor.\n\nFix: Revoke it: `npm token revoke 82e393`."
        );
        assert_eq!(alert["annotations"]["dod"], "D9");
        assert_eq!(alert["annotations"]["source"], "registry.npmjs.org: alice");
        assert_eq!(alert["startsAt"], ms(first));
        assert_eq!(alert["generatorURL"], "https://npm-watchdog.example.com/");
        // endsAt is four resend intervals past the post, so a missed re-send or two does not end it.
        let ends: DateTime<Utc> = alert["endsAt"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("endsAt");
        let ahead = ends - Utc::now();
        assert!(
            ahead > chrono::Duration::seconds(200) && ahead <= chrono::Duration::seconds(240),
            "endsAt {ends} is {ahead} ahead"
        );
    }
}

#[tokio::test]
async fn one_instance_down_holds_back_neither_the_other_nor_its_own_queue_for_ever() {
    let (a, a_url) = instance().await;
    // Nothing listens on the second instance's port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let b_url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let out = Outbox::new(
        sinks(&[a_url.clone(), b_url.clone()]),
        tempfile::tempdir().expect("tempdir"),
    );
    let a_name = format!("am@{}", a_url.trim_start_matches("http://"));
    let b_name = format!("am@{}", b_url.trim_start_matches("http://"));
    let first = out.now;
    out.queue(
        vec![
            bypass(Status::Firing, first, out.now),
            bypass(Status::Resolved, first, out.now),
        ],
        &[&a_name, &b_name],
    );
    out.pass(Duration::ZERO).await;
    assert_eq!(out.count(&a_name, "sent"), 2);
    assert_eq!(out.waiting(&a_name), 0);
    assert_eq!(alerts(&a).len(), 2);
    assert_eq!(out.count(&b_name, "failed"), 1);
    assert_eq!(out.waiting(&b_name), 2, "kept, in order, for the retry");
}

#[tokio::test]
async fn active_findings_are_re_sent_and_resolved_ones_end_then_fade() {
    let (am, url) = instance().await;
    let sink = sinks(std::slice::from_ref(&url));
    let out = Outbox::new(sink.clone(), tempfile::tempdir().expect("tempdir"));
    let first = out.now - chrono::Duration::hours(1);

    // After a cycle the daemon hands over what is firing; the first pass posts it.
    out.dispatcher
        .firing(&[bypass(Status::Firing, first, out.now)]);
    out.pass(Duration::ZERO).await;
    assert_eq!(alerts(&am).len(), 1);
    // Not again before resend_interval.
    out.pass(RESEND / 2).await;
    assert_eq!(am.count(), 1);
    out.pass(RESEND).await;
    let got = alerts(&am);
    assert_eq!(got.len(), 2, "re-sent after resend_interval");
    assert_eq!(got[1]["startsAt"], ms(first), "still the first-seen time");

    // It resolves: the cycle hands over nothing, the outbox delivers RESOLVED with endsAt = then.
    let resolved_at = out.at(RESEND * 2);
    out.dispatcher.firing(&[]);
    out.queue(vec![bypass(Status::Resolved, first, resolved_at)], &["am"]);
    out.pass(RESEND * 2).await;
    let got = alerts(&am);
    assert_eq!(got.len(), 3);
    assert_eq!(got[2]["endsAt"], ms(resolved_at));
    // Re-sent as resolved at the next periods, for 15 minutes, then no more.
    out.pass(RESEND * 3).await;
    let got = alerts(&am);
    assert_eq!(got.len(), 4);
    assert_eq!(got[3]["endsAt"], ms(resolved_at));
    out.pass(RESEND * 2 + Duration::from_secs(16 * 60)).await;
    assert_eq!(am.count(), 4, "nothing left to re-send");
    assert_eq!(out.count("am", "sent"), 1);
}

#[tokio::test]
async fn a_refused_batch_is_rejected_once_and_counted() {
    let (am, url) = instance().await;
    am.push_reply(Reply::new(400, "{\"code\":400,\"message\":\"bad alert\"}"));
    let out = Outbox::new(
        sinks(std::slice::from_ref(&url)),
        tempfile::tempdir().expect("tempdir"),
    );
    out.queue(vec![bypass(Status::Firing, out.now, out.now)], &["am"]);
    out.pass(Duration::ZERO).await;
    out.pass(Duration::from_secs(3600)).await;
    assert_eq!(am.count(), 1, "a rejected alert is not retried");
    assert_eq!(out.count("am", "rejected"), 1);
    assert_eq!(out.waiting("am"), 0);
}

#[test]
fn resend_interval_defaults_to_a_minute() {
    let c: AlertmanagerSinkConfig =
        toml::from_str("urls = [\"http://127.0.0.1:9093\"]").expect("section");
    assert_eq!(c.resend_interval, HumanDuration::secs(60));
}
