//! End to end, grouping: the `npm-watchdog` binary watches an account with many tokens and packages
//! (the in-process fake registry) and alerts by email to a real SMTP server (aiosmtpd) and to a real
//! Alertmanager. A first run with hundreds of findings is one email per check group listing them; one
//! new token afterwards is exactly one more email, promptly; revoking many tokens is one RESOLVED
//! email. Alertmanager, which groups by itself, still gets one alert per finding.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::fake_registry::{self, FakeRegistry};
use testkit::peers::{free_port, start_alertmanager, wait_until, Daemon, Smtp};
use testkit::test_config::TestConfig;

const TOKENS: usize = 60;
const PACKAGES: usize = 120;
/// `schedule.tokens` in this test.
const PERIOD: Duration = Duration::from_secs(2);
const SLOW: Duration = Duration::from_secs(90);

fn ago(days: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(days))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn key(i: usize) -> String {
    format!("{i:02x}9e0c{i:014x}")
}

/// A read-write token with no CIDR and no expiry: present, unrestricted and long-lived.
fn token(i: usize) -> Value {
    json!({
        "name": format!("ci-{i:02}"), "key": key(i), "token": "npm_ab...yz", "cidr": null,
        "bypass_2fa": false, "created": ago(40), "expiry": null, "readonly": false,
        "permissions": [{"name": "package", "action": "write"}], "revoked": null
    })
}

/// `N` of a subject `[FIRING:…] N findings …`, or 1 for a message about one finding.
fn count_in(subject: &str) -> usize {
    subject
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// Sum of the series `name{…}` in a scrape.
fn sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Alerts Alertmanager holds active.
fn am_alerts(am: &testkit::peers::Server) -> usize {
    let query = "?active=true&silenced=false&inhibited=false";
    am.get_json(&format!("/api/v2/alerts{query}"))
        .ok()
        .and_then(|(_, v)| v.as_array().map(Vec::len))
        .unwrap_or(0)
}

/// A folder with the fake's token and the daemon's config: `extra` and an email sink on a real SMTP
/// server. Returns the folder, the server, the metrics port and the config's path.
fn with_email(reg: &FakeRegistry, extra: &str) -> (tempfile::TempDir, Smtp, u16, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), fake_registry::TOKEN).expect("token file");
    let smtp = Smtp::start();
    let port = free_port();
    let config = dir.path().join("config.toml");
    TestConfig::new(
        &reg.url,
        &dir.path().join("token"),
        &dir.path().join("state.db"),
    )
    .listen(port)
    .not_own_account()
    .with(&format!(
        "{extra}[[alerts.email]]\nsmtp_url = \"smtp://127.0.0.1:{}\"\nfrom = \"w@example.test\"\n\
         to = \"sec@example.test\"\ntimeout = \"5s\"\n",
        smtp.port,
    ))
    .write(&config);
    (dir, smtp, port, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_findings_are_one_message_per_group_and_a_new_token_is_one_more() {
    let reg = FakeRegistry::start().await;
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));
    reg.set_tokens((0..TOKENS).map(token).collect());
    let mut names = Vec::new();
    for i in 0..PACKAGES {
        let name = format!("@acme/p{i:03}");
        // Published by hand after the account moved to trusted publishing: publish-untrusted.
        let published = ago(2);
        reg.add_packument(
            &name,
            fake_registry::packument_doc(
                &name,
                &[("1.0.0", &published, None, "mallory")],
                &["alice"],
            ),
        );
        names.push(format!("\"{name}\""));
    }
    let am = start_alertmanager("route:\n  receiver: none\nreceivers:\n  - name: none\n");
    let (dir, smtp, port, config) = with_email(
        &reg,
        &format!(
            "[watch]\npackages = [{}]\n[schedule]\ntokens = \"2s\"\n\
             [[alerts.alertmanager]]\nurls = [\"{}\"]\n",
            names.join(", "),
            am.url("")
        ),
    );
    let log = dir.path().join("daemon.log");

    tokio::task::block_in_place(|| {
        let daemon = Daemon::start(&config, port, &log, &dir.path().join("no-npmrc"));
        // The first runs of both groups are out: every finding is listed, the queues are empty.
        let findings = wait_until("both groups' findings, delivered", SLOW, || {
            let m = daemon.metrics();
            let found = sum(&m, "npm_watchdog_findings");
            let queued = sum(&m, "npm_watchdog_notification_queue");
            let ran =
                m.contains("npm_watchdog_check_success{check=\"packages\",group=\"packages\"} 1");
            (ran && found >= (TOKENS * 3 + PACKAGES) as f64 && queued == 0.0).then_some(found)
        });
        let firing: Vec<_> = smtp
            .messages()
            .into_iter()
            .filter(|m| m.subject.starts_with("[FIRING"))
            .collect();
        let subjects: Vec<&str> = firing.iter().map(|m| m.subject.as_str()).collect();
        assert_eq!(firing.len(), 2, "one email per check group: {subjects:#?}");
        assert_eq!(
            firing.iter().map(|m| count_in(&m.subject)).sum::<usize>() as f64,
            findings,
            "the emails count every finding: {subjects:#?}"
        );
        let packages = firing
            .iter()
            .find(|m| m.subject.contains("(group=packages)"))
            .unwrap_or_else(|| panic!("no packages email: {subjects:#?}"));
        assert_eq!(
            count_in(&packages.subject),
            PACKAGES,
            "{}",
            packages.subject
        );
        assert_eq!(packages.body.matches("Fingerprint: ").count(), 50);
        assert!(
            packages
                .body
                .contains(&format!("... and {} more.", PACKAGES - 50)),
            "{}",
            packages.body
        );
        assert!(
            firing.iter().any(|m| m.subject.contains("(group=tokens)")),
            "{subjects:#?}"
        );
        // Alertmanager groups by itself: one alert per finding.
        wait_until("one Alertmanager alert per finding", SLOW, || {
            (am_alerts(&am) as f64 == findings).then_some(())
        });

        // One new token: exactly one more email, within a token period and a few seconds.
        let before = smtp.count("[FIRING");
        let made = Instant::now();
        let mut listed: Vec<Value> = (0..TOKENS).map(token).collect();
        let mut fresh = token(TOKENS);
        fresh["created"] = json!(ago(0));
        listed.push(fresh);
        reg.set_tokens(listed);
        let new_id = &key(TOKENS)[..6];
        let (mail, took) = smtp.wait_for(
            &format!("[FIRING:critical] 4 findings on token {new_id}"),
            PERIOD * 2 + Duration::from_secs(8),
        );
        println!(
            "new token -> one email in {took:?} ({:?} since the token was listed)",
            made.elapsed()
        );
        assert!(mail.body.contains("token-created"), "{}", mail.body);
        let requests = |d: &Daemon| {
            d.metric("npm_watchdog_registry_requests_total{code=\"200\",endpoint=\"tokens\"}")
                .unwrap_or(0.0)
        };
        let seen = requests(&daemon);
        wait_until("two more token runs", SLOW, || {
            (requests(&daemon) >= seen + 2.0).then_some(())
        });
        assert_eq!(smtp.count("[FIRING") - before, 1, "{:#?}", smtp.subjects());

        // Half the tokens revoked at once: one RESOLVED email for all of them.
        let kept: Vec<Value> = (TOKENS / 2..TOKENS).map(token).collect();
        reg.set_tokens(kept);
        let (resolved, _) = smtp.wait_for("[RESOLVED]", SLOW);
        let seen = requests(&daemon);
        wait_until("two more token runs", SLOW, || {
            (requests(&daemon) >= seen + 2.0).then_some(())
        });
        assert_eq!(smtp.count("[RESOLVED]"), 1, "{:#?}", smtp.subjects());
        assert!(
            resolved.subject.contains("(group=tokens)"),
            "{}",
            resolved.subject
        );
        assert!(
            count_in(&resolved.subject) >= TOKENS / 2 * 3,
            "{}",
            resolved.subject
        );
        assert!(
            resolved.body.contains("of this group are still active"),
            "{}",
            resolved.body
        );
        let mut daemon = daemon;
        let (status, _) = daemon.stop();
        assert!(status.success());
    });
}

/// With `group_wait`, a FIRING message waits that long once queued, and what the next runs find for
/// its group key joins it: two tokens made a run apart are one email listing both, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_wait_gathers_the_next_runs_into_the_held_message() {
    const WAIT: Duration = Duration::from_secs(6);
    let reg = FakeRegistry::start().await;
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));
    reg.set_tokens(Vec::new());
    let (dir, smtp, port, config) = with_email(
        &reg,
        &format!(
            "[schedule]\ntokens = \"2s\"\n[alerts]\ngroup_wait = \"{}s\"\n",
            WAIT.as_secs()
        ),
    );
    let log = dir.path().join("daemon.log");

    tokio::task::block_in_place(|| {
        let daemon = Daemon::start(&config, port, &log, &dir.path().join("no-npmrc"));
        let runs = |d: &Daemon| {
            d.metric("npm_watchdog_registry_requests_total{code=\"200\",endpoint=\"tokens\"}")
                .unwrap_or(0.0)
        };
        wait_until("the first token run", SLOW, || {
            (runs(&daemon) >= 1.0).then_some(())
        });
        let fresh = |i: usize| {
            let mut t = token(i);
            t["created"] = json!(ago(0));
            t
        };
        let first = Instant::now();
        reg.set_tokens(vec![fresh(1)]);
        // The first token's message is queued and held.
        wait_until("the first token's message, held", SLOW, || {
            (daemon.metric("npm_watchdog_notification_queue{sink=\"email\"}") == Some(1.0))
                .then_some(())
        });
        assert_eq!(smtp.count("[FIRING"), 0, "{:#?}", smtp.subjects());
        reg.set_tokens(vec![fresh(1), fresh(2)]);
        let (mail, _) = smtp.wait_for("[FIRING:critical]", SLOW);
        let took = first.elapsed();
        println!("two tokens a run apart -> one email after {took:?} (group_wait {WAIT:?})");
        assert!(took >= WAIT, "sent before group_wait was over: {took:?}");
        assert_eq!(count_in(&mail.subject), 8, "{}", mail.subject);
        for t in [1, 2] {
            assert!(
                mail.body.contains(&format!("token {}", &key(t)[..6])),
                "token {t} missing: {}",
                mail.body
            );
        }
        // Nothing more comes for them: the second token was not a message of its own.
        let seen = runs(&daemon);
        wait_until("two more token runs and an empty queue", SLOW, || {
            (runs(&daemon) >= seen + 2.0
                && daemon.metric("npm_watchdog_notification_queue{sink=\"email\"}") == Some(0.0))
            .then_some(())
        });
        assert_eq!(smtp.count("[FIRING"), 1, "{:#?}", smtp.subjects());
        let mut daemon = daemon;
        let (status, _) = daemon.stop();
        assert!(status.success());
    });
}
