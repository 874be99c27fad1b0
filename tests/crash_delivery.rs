//! At-least-once delivery when the daemon is killed with SIGKILL in the middle of sending.
//!
//! A real `npm-watchdog run` watches a fake registry listing many tokens, so its first cycle queues a
//! long run of notifications for a webhook that answers slowly. The process is killed three times
//! while that queue drains, each time started again at once on the same state file (the lock of a
//! dead process must not keep the next one out), and finally left to finish. Then every queued
//! notification must have reached the receiver at least once, and a message may arrive twice only
//! when it was in flight at a kill: at most one per kill, and only after the restart said it was
//! sending interrupted notifications again.

use testkit::fake_registry;
use testkit::receiver;
use testkit::test_config;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fake_registry::{FakeRegistry, TOKEN};
use receiver::Receiver;
use serde_json::{json, Value};
use test_config::TestConfig;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_npm-watchdog");
/// Tokens on the account: each one is at least a `token-present` finding, so a first cycle queues at
/// least this many notifications.
const TOKENS: usize = 40;
/// `CRASH_KILLS=50` (scripts/crash-soak.sh) kills that many times instead of three, at points spread
/// by a fixed pseudo-random sequence, with enough tokens to keep messages in flight throughout.
const KILLS_VAR: &str = "CRASH_KILLS";
/// How long the receiver takes to answer: the queue drains slowly enough to be killed mid-way, and a
/// request is in flight most of the time.
const REPLY_DELAY: Duration = Duration::from_millis(150);
/// The start-up warning of a process that finds rows its predecessor claimed and never finished.
const RESENDING: &str =
    "notifications were being sent when npm-watchdog last stopped; sending them again";
/// Generous bound for anything the test waits for.
const WAIT: Duration = Duration::from_secs(90);
const QUEUE: &str = "npm_watchdog_notification_queue{sink=\"webhook\"}";

/// A token key whose six-character prefix (the label the daemon shows) is unique too.
fn key(i: usize) -> String {
    format!("{i:02x}c0de{i:014x}")
}

fn token(i: usize) -> Value {
    json!({
        "name": format!("ci-{i:02}"), "key": key(i), "token": "npm_ab...yz", "cidr": ["127.0.0.1/32"],
        "bypass_2fa": false, "created": days_from_now(-33), "expiry": days_from_now(16),
        "permissions": [{"name": "package", "action": "write"}], "revoked": null
    })
}

/// A webhook receiver that records every body the moment it arrives (as a receiver acting on it
/// would), then takes [`REPLY_DELAY`] to answer 204; with the webhook's URL.
async fn webhook_receiver() -> (Receiver, String) {
    let (rx, base) = Receiver::start().await;
    rx.set_delay(REPLY_DELAY);
    (rx, format!("{base}/hook"))
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// One `npm-watchdog run` process and the file its log goes to.
struct Run {
    child: Child,
    log: PathBuf,
}

impl Run {
    fn start(dir: &Path, n: usize) -> Run {
        let log = dir.join(format!("run-{n}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(dir.join("config.toml"))
            .arg("run")
            .env("RUST_LOG", "info")
            .env("NPM_CONFIG_USERCONFIG", dir.join("no-npmrc"))
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("STATE_DIRECTORY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start npm-watchdog");
        Run { child, log }
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Panics with the log if the process has exited (it must keep running until killed).
    fn assert_running(&mut self, what: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "npm-watchdog exited with {status} while {what}; its log:\n{}",
                self.log_text()
            );
        }
    }

    /// Polls until the receiver has at least `n` bodies, making sure the daemon stays up.
    async fn wait_received(&mut self, rx: &Receiver, n: usize) {
        let deadline = Instant::now() + WAIT;
        while rx.count() < n {
            self.assert_running(&format!("waiting for {n} webhook requests"));
            assert!(
                Instant::now() < deadline,
                "only {} of {n} webhook requests after {WAIT:?}; log:\n{}",
                rx.count(),
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGKILL (what `Child::kill` sends on unix) and reap.
    async fn kill9(mut self) -> String {
        self.child.kill().await.expect("SIGKILL npm-watchdog");
        self.log_text()
    }

    /// SIGTERM and wait for an orderly exit.
    async fn terminate(mut self) -> String {
        let pid = self.child.id().expect("pid").to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill");
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("exits within 15 s of SIGTERM")
            .expect("wait");
        let log = self.log_text();
        assert!(status.success(), "exit {status}; log:\n{log}");
        log
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let r = client.get(url).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The `count=N` of the resend warning in a start-up log (0 when there is none).
fn released(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(RESENDING))
        .map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("count="))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("no count= in the warning: {l}"))
        })
        .sum()
}

/// One outbox row as stored: fingerprint, body, delivered, last error, attempts.
type OutboxRow = (String, String, Option<i64>, Option<String>, i64);

/// (fingerprint, status): one notification as the receiver tells them apart.
/// The one finding of a message (`group_by = ["finding"]`), and its status.
fn ident(v: &Value) -> (String, String) {
    let f = &v["findings"][0];
    let s = |k: &str| {
        f[k].as_str()
            .unwrap_or_else(|| panic!("no {k} in webhook body {v}"))
            .to_string()
    };
    (s("fingerprint"), s("status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_delivery_loses_nothing_and_resends_at_most_the_message_in_flight() {
    let began = Instant::now();
    let reg = FakeRegistry::start().await;
    let kill_after: Vec<usize> = match std::env::var(KILLS_VAR).ok().and_then(|v| v.parse().ok()) {
        None => vec![5, 12, 1],
        // 1 to 6 more messages between kills, from a fixed linear congruential sequence.
        Some(n) => (0..n)
            .scan(7u64, |x, _| {
                *x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                Some(1 + (*x >> 33) as usize % 6)
            })
            .collect(),
    };
    let tokens = TOKENS.max(kill_after.iter().sum::<usize>() + 20);
    reg.set_tokens((0..tokens).map(token).collect());
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));
    let (rx, hook) = webhook_receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), TOKEN).expect("token file");
    let state = dir.path().join("state.db");
    let port = free_port();
    TestConfig::new(&reg.url, &dir.path().join("token"), &state)
        .listen(port)
        .no_retries()
        .with(&format!(
            "[watch]\nown_account = false\n[[alerts.webhook]]\nurl = \"{hook}\"\ngroup_by = [\"finding\"]\n"
        ))
        .write(&dir.path().join("config.toml"));

    // Each kill lands right after a request arrived, so (with the receiver's slow answer) a message
    // is almost surely in flight: the first part-way through the first run's queue, the second
    // further on in the next run, the third on the very first request of the run after, which is the
    // message the previous kill interrupted.
    let mut logs = Vec::new();
    let mut at_kill = Vec::new();
    let mut in_flight = BTreeSet::new();
    for (n, more) in kill_after.iter().copied().enumerate() {
        let mut run = Run::start(dir.path(), n + 1);
        let target = rx.count() + more;
        run.wait_received(&rx, target).await;
        logs.push(run.kill9().await);
        let bodies = rx.bodies();
        at_kill.push(bodies.len());
        // The one message a kill can interrupt: the last to arrive (its answer or its record in the
        // state may not have made it), or one claimed that never arrived at all.
        in_flight.extend(bodies.last().map(ident));
    }

    // The last run is left to finish: ready (its first cycle recorded), nothing queued for the
    // webhook, and the receiver's count no longer moving.
    let mut last = Run::start(dir.path(), kill_after.len() + 1);
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + WAIT;
    let mut settled: Option<(usize, Instant)> = None;
    loop {
        last.assert_running("draining the outbox");
        let ready = matches!(
            get(&client, &format!("{base}/readyz")).await,
            Some((200, _))
        );
        let queue = get(&client, &format!("{base}/metrics"))
            .await
            .and_then(|(_, text)| metric(&text, QUEUE));
        let count = rx.count();
        // A row a killed process left claimed and no start released stays in the queue for ever.
        assert!(
            Instant::now() < deadline,
            "the outbox never drained: ready {ready}, {QUEUE} = {queue:?}, {count} received; log:\n{}",
            last.log_text()
        );
        if ready && queue == Some(0.0) {
            match settled {
                Some((c, since)) if c == count => {
                    if since.elapsed() >= Duration::from_secs(1) {
                        break;
                    }
                }
                _ => settled = Some((count, Instant::now())),
            }
        } else {
            settled = None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    logs.push(last.terminate().await);

    // What the state queued for the webhook: one row per notification, each marked delivered.
    let db =
        rusqlite::Connection::open_with_flags(&state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the state file");
    let mut stmt = db
        .prepare("SELECT fingerprint, body, delivered, last_error, attempts FROM outbox WHERE sink = 'webhook' ORDER BY id")
        .expect("query");
    let rows: Vec<OutboxRow> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    let mut expected = BTreeSet::new();
    for (about, body, delivered, error, attempts) in &rows {
        assert!(
            delivered.is_some() && error.is_none(),
            "outbox row {about} (attempts {attempts}) not delivered cleanly: {error:?}"
        );
        let message: Value = serde_json::from_str(body).expect("outbox body");
        assert_eq!(message["total"], 1, "one finding per message: {message}");
        let status = message["status"].as_str().expect("status").to_string();
        let finding = &message["notes"][0]["finding"];
        let fingerprint = format!(
            "{}:{}",
            finding["check"].as_str().expect("check"),
            finding["subject_key"].as_str().expect("subject key")
        );
        assert!(
            expected.insert((fingerprint.clone(), status)),
            "{fingerprint} was queued twice for one change: a restart re-queued it"
        );
    }
    for i in 0..tokens {
        let fp = format!("token-present:{}", key(i));
        assert!(
            expected.contains(&(fp.clone(), "firing".to_string())),
            "no FIRING {fp} was queued; queued: {expected:?}"
        );
    }

    let bodies = rx.bodies();
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for b in &bodies {
        *seen.entry(ident(b)).or_default() += 1;
    }
    let lost: Vec<_> = expected.iter().filter(|k| !seen.contains_key(*k)).collect();
    let unexpected: Vec<_> = seen.keys().filter(|k| !expected.contains(*k)).collect();
    let duplicated = bodies.len() - seen.len();
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let mut first_arrivals = Vec::new();
    for b in &bodies {
        let k = ident(b);
        if !first_arrivals.contains(&k) {
            first_arrivals.push(k);
        }
    }
    let resent: Vec<usize> = logs.iter().map(|l| released(l)).collect();
    let kills = kill_after.len();
    let mut checks: BTreeMap<&str, usize> = BTreeMap::new();
    for (fp, _) in &expected {
        *checks
            .entry(fp.split(':').next().unwrap_or_default())
            .or_default() += 1;
    }

    println!(
        "crash delivery: {tokens} tokens, {kills} x SIGKILL, receiver answering in {REPLY_DELAY:?}"
    );
    println!("  queued per check:       {checks:?}");
    println!("  expected notifications: {}", expected.len());
    println!("  received at each kill:  {at_kill:?}");
    println!("  received total:         {}", bodies.len());
    println!("  received distinct:      {}", seen.len());
    println!("  lost:                   {}", lost.len());
    println!("  duplicated:             {duplicated} {twice:?}");
    println!("  in flight at the kills: {in_flight:?}");
    println!("  released at each start: {resent:?} (warning \"{RESENDING}\")");
    println!("  test time:              {:.1?}", began.elapsed());

    for (i, n) in at_kill.iter().enumerate() {
        assert!(
            *n < expected.len(),
            "kill {} came after everything was delivered ({n} of {}): it proved nothing",
            i + 1,
            expected.len()
        );
    }
    assert!(lost.is_empty(), "lost across SIGKILL: {lost:?}");
    assert!(
        unexpected.is_empty(),
        "sent but never queued: {unexpected:?}"
    );
    assert!(
        duplicated <= kills,
        "{duplicated} duplicates from {kills} kills: more than the one message in flight per kill: {twice:?}"
    );
    assert!(
        twice.iter().all(|(k, _)| in_flight.contains(*k)),
        "a message arrived twice that was not the one in flight at a kill: {twice:?}; in flight: {in_flight:?}"
    );
    // Resending after a kill must not reorder the queue: messages first arrive in the order queued.
    let queued: Vec<_> = rows
        .iter()
        .map(|(fp, body, ..)| {
            let note: Value = serde_json::from_str(body).expect("outbox body");
            (
                fp.clone(),
                note["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(first_arrivals, queued, "delivered out of queue order");
    assert_eq!(resent[0], 0, "the first start found rows in flight");
    assert!(
        resent.iter().all(|n| *n <= 1),
        "one sink sends one message at a time, so at most one can be in flight at a kill: {resent:?}"
    );
    // A duplicate is a message whose send was interrupted; its row was still claimed, so the next start
    // must have said it was sending it again.
    assert!(
        resent.iter().sum::<usize>() >= duplicated,
        "{duplicated} duplicates but the restarts released {resent:?} interrupted rows"
    );
    if duplicated > 0 {
        assert!(
            logs.iter().any(|l| l.contains(RESENDING)),
            "duplicates without the resend warning in any log"
        );
    }
    for (i, log) in logs.iter().enumerate() {
        testkit::secrets::assert_absent(&[TOKEN], [(format!("the log of run {}", i + 1), log)]);
        assert!(
            !log.contains("in use by another npm-watchdog"),
            "run {} was refused by the lock of a killed process:\n{log}",
            i + 1
        );
    }
    testkit::secrets::assert_absent(
        &[TOKEN],
        bodies.iter().map(|b| ("a webhook body", b.to_string())),
    );
}

/// A registry time `days` from now: fixtures' tokens stay live (an expired token is not judged)
/// with a 49-day lifetime, within `policy.token_max_lifetime`.
fn days_from_now(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
