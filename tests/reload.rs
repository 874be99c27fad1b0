//! `systemctl reload` for the real binary against the in-process fake registry: SIGHUP re-reads the
//! configuration. An invalid file is logged with exactly the error `config check` prints and the
//! running configuration stays; a valid one takes effect from the next cycles (a new sink, a new
//! watch list), says that a changed listen address needs a restart, and the reload metrics tell which
//! happened.

use testkit::fake_registry;
use testkit::peers;
use testkit::test_config;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::Router;
use fake_registry::{packument_doc, FakeRegistry, TOKEN};
use peers::{free_port, wait_until, Daemon};
use serde_json::{json, Value};
use test_config::TestConfig;

const OK: &str = "npm_watchdog_config_last_reload_successful";
const AT: &str = "npm_watchdog_config_last_reload_success_timestamp_seconds";

/// A webhook receiver that keeps every JSON body.
async fn hook() -> (Arc<Mutex<Vec<Value>>>, String) {
    let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = Router::new()
        .fallback(
            |State(b): State<Arc<Mutex<Vec<Value>>>>, body: String| async move {
                if let Ok(v) = serde_json::from_str(&body) {
                    b.lock().expect("lock").push(v);
                }
                "ok"
            },
        )
        .with_state(Arc::clone(&bodies));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (bodies, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_valid_config_and_keeps_the_running_one_on_error() {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(vec![]);
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));
    reg.add_packument(
        "@acme/widget",
        packument_doc(
            "@acme/widget",
            &[("1.0.0", "2026-11-20T00:00:00.000Z", None, "mallory")],
            &["alice"],
        ),
    );
    let (received, hook_url) = hook().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), TOKEN).expect("token");
    let config = dir.path().join("config.toml");
    let port = free_port();
    let base = || {
        TestConfig::new(
            &reg.url,
            &dir.path().join("token"),
            &dir.path().join("state.db"),
        )
        .listen(port)
        .no_retries()
        .with("[watch]\nown_account = false\n[schedule]\ntokens = \"1s\"\n")
    };
    base().write(&config);
    let log = dir.path().join("daemon.log");
    let mut daemon = tokio::task::block_in_place(|| {
        Daemon::start(&config, port, &log, &dir.path().join("no-npmrc"))
    });
    let started_at = daemon.metric(AT).expect("reload timestamp at start");
    assert_eq!(daemon.metric(OK), Some(1.0));

    // An invalid file: the same error as `config check`, the running configuration stays.
    base().with("[policy]\nblind_aftr = 2\n").write(&config);
    let (code, _, check_err) = daemon.cli(&["config", "check"]);
    assert_eq!(code, 2);
    let expected = check_err
        .trim()
        .strip_prefix("npm-watchdog: ")
        .expect("config check's error line")
        .to_string();
    daemon.signal("HUP");
    tokio::task::block_in_place(|| {
        wait_until(
            "the reload failure in the log",
            Duration::from_secs(30),
            || {
                daemon
                    .log_text()
                    .lines()
                    .find(|l| l.contains("configuration reload failed"))
                    .map(str::to_string)
            },
        )
    });
    let line = daemon
        .log_text()
        .lines()
        .find(|l| l.contains("configuration reload failed"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.contains(&expected), "{expected}\nnot in:\n{line}");
    assert_eq!(daemon.metric(OK), Some(0.0));
    assert_eq!(daemon.metric(AT), Some(started_at));
    assert!(daemon.is_running());
    assert_eq!(
        daemon.metric("npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}"),
        Some(1.0)
    );

    // A valid one: a webhook sink, a watched package, and a listen address that needs a restart.
    let moved = free_port();
    base()
        .with(&format!(
            "[watch]\npackages = [\"@acme/widget\"]\n[server]\nlisten = \"127.0.0.1:{moved}\"\n[[alerts.webhook]]\nurl = \"{hook_url}\"\n"
        ))
        .write(&config);
    daemon.signal("HUP");
    tokio::task::block_in_place(|| daemon.wait_metric(OK, 1.0));
    assert!(daemon.metric(AT).is_some_and(|t| t >= started_at));
    // The newly watched group runs at once; its finding reaches the new sink.
    let first = tokio::task::block_in_place(|| {
        wait_until(
            "the webhook receives the finding",
            Duration::from_secs(30),
            || {
                let bodies = received.lock().expect("lock");
                bodies.first().map(|b| b["findings"][0].clone())
            },
        )
    });
    assert_eq!(first["check"], "publish-untrusted");
    assert_eq!(first["subject"], "version @acme/widget@1.0.0");
    let text = daemon.log_text();
    assert!(
        text.contains(&format!(
            "server.listen changed from 127.0.0.1:{port} to 127.0.0.1:{moved}: still serving on 127.0.0.1:{port} until a restart; restart npm-watchdog to apply it"
        )),
        "{text}"
    );
    assert!(text.contains("configuration reloaded"), "{text}");
    // Still served where it was bound.
    assert_eq!(
        daemon.metric("npm_watchdog_check_success{check=\"packages\",group=\"packages\"}"),
        Some(1.0)
    );

    let (status, _) = tokio::task::block_in_place(|| daemon.stop());
    assert!(status.success());
    testkit::secrets::assert_absent(&[TOKEN], [("the log", daemon.log_text())]);
}
