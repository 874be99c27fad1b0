//! Schedules survive a stall: a daemon stopped for several periods (a suspended machine, a runtime
//! blocked on a slow disk) goes on checking once it runs again, instead of never again.

use testkit::fake_registry;
use testkit::peers;
use testkit::test_config;

use std::time::Duration;

use fake_registry::{FakeRegistry, TOKEN, TOKENS_PATH};
use peers::{free_port, wait_until, Daemon};
use serde_json::json;
use test_config::TestConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_group_keeps_running_after_the_process_was_stopped_for_several_periods() {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(vec![]);
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let port = free_port();
    let config = TestConfig::new(&reg.url, &token_file, &dir.path().join("state.db"))
        .listen(port)
        .no_retries()
        .not_own_account()
        .with("[schedule]\ntokens = \"1s\"\n")
        .write(&dir.path().join("config.toml"));
    let mut daemon = Daemon::start(
        &config,
        port,
        &dir.path().join("daemon.log"),
        &dir.path().join("no-npmrc"),
    );
    let reads = || reg.requests_to(TOKENS_PATH).len();
    wait_until("a few token runs", Duration::from_secs(20), || {
        (reads() >= 3).then_some(())
    });

    // Four periods without running at all.
    daemon.signal("STOP");
    let frozen = reads();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(reads(), frozen, "a stopped process reads nothing");
    daemon.signal("CONT");
    wait_until(
        "token runs to go on after the stall",
        Duration::from_secs(20),
        || (reads() >= frozen + 3).then_some(()),
    );
    let (exit, _) = daemon.stop();
    assert!(exit.success(), "{exit:?}");
}
