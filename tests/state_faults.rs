//! The state database failing under a running daemon: it must not carry on blind while reporting
//! ready. Another process holds the write lock (WAL readers are not blocked, so the daemon started
//! fine): every cycle fails after the busy timeout, and the daemon says so in `/readyz`, the metrics,
//! the log and an alert sent straight to the sinks; when the lock is gone it recovers by itself and
//! the alert resolves. Further down: a state database that cannot be opened at start (a read-only
//! folder, a file where the folder should be, a corrupt file, a full disk) and a full disk at run time.

use testkit::fake_registry;
use testkit::peers;
use testkit::receiver;
use testkit::test_config;

use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_registry::{FakeRegistry, TOKEN};
use peers::{free_port, http, wait_until, Daemon, Tmpfs};
use receiver::Receiver;
use rusqlite::OpenFlags;
use serde_json::{json, Value};
use test_config::TestConfig;

/// Long enough for a cycle to fail (SQLite's busy timeout is 5 s) and the next to be recorded.
const FAULT_WAIT: Duration = Duration::from_secs(30);

fn readyz(port: u16) -> u16 {
    http(
        "GET",
        &format!("http://127.0.0.1:{port}/readyz"),
        None,
        None,
    )
    .map(|(code, _)| code)
    .unwrap_or(0)
}

/// `STATUS check subject` of each notification the webhook got.
fn received(hook: &Receiver) -> Vec<String> {
    hook.findings()
        .iter()
        .map(|b: &Value| {
            format!(
                "{} {} {}",
                b["status"].as_str().unwrap_or("?").to_uppercase(),
                b["check"].as_str().unwrap_or("?"),
                b["subject"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_state_database_is_loud_and_recovers_by_itself() {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(vec![json!({
        "name": "laptop", "key": "abcdef12121212121212", "token": "npm_ab...yz", "cidr": null,
        "bypass_2fa": false, "created": "2026-11-26T00:00:00.000Z", "expiry": null,
        "permissions": [{"name": "package", "action": "read"}], "revoked": null
    })]);
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));
    let (hook, hook_url) = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let state = dir.path().join("state.db");
    let port = free_port();
    let config = TestConfig::new(&reg.url, &token_file, &state)
        .listen(port)
        .no_retries()
        .not_own_account()
        .with(&format!(
            "[schedule]\ntokens = \"1s\"\n[[alerts.webhook]]\nurl = \"{hook_url}/hook\"\n"
        ))
        .write(&dir.path().join("config.toml"));
    let log = dir.path().join("daemon.log");
    let mut daemon = Daemon::start(&config, port, &log, &dir.path().join("no-npmrc"));
    wait_until("the token is reported", FAULT_WAIT, || {
        received(&hook)
            .contains(&"FIRING token-present token abcdef (laptop)".to_string())
            .then_some(())
    });

    // Another process takes the write lock and keeps it.
    let holder = rusqlite::Connection::open(&state).expect("open the state");
    holder
        .execute_batch("BEGIN EXCLUSIVE;")
        .expect("take the write lock");
    wait_until("/readyz answers 503", FAULT_WAIT, || {
        (readyz(port) == 503).then_some(())
    });
    let alert = format!("FIRING watchdog-blind state database {}", state.display());
    wait_until("the state alert reaches the webhook", FAULT_WAIT, || {
        received(&hook).contains(&alert).then_some(())
    });
    assert!(
        daemon
            .metric("npm_watchdog_state_write_errors_total")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        daemon.metric("npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}"),
        Some(0.0)
    );
    let body = hook
        .findings()
        .into_iter()
        .find(|b| b["check"] == "watchdog-blind")
        .expect("the alert");
    assert_eq!(body["severity"], "critical");
    assert!(
        body["summary"]
            .as_str()
            .is_some_and(|s| s.contains("database is locked")),
        "{body}"
    );
    // Failing cycles go on; the alert is not repeated for every one of them.
    daemon.wait_counter("npm_watchdog_state_write_errors_total", 2.0);
    assert_eq!(
        received(&hook).iter().filter(|r| **r == alert).count(),
        1,
        "{:?}",
        received(&hook)
    );

    // The lock is released: the next cycle is recorded, ready again, and the alert resolves.
    holder.execute_batch("ROLLBACK;").expect("release");
    drop(holder);
    wait_until("/readyz answers 200 again", FAULT_WAIT, || {
        (readyz(port) == 200).then_some(())
    });
    let resolved = format!("RESOLVED watchdog-blind state database {}", state.display());
    wait_until("the state alert resolves", FAULT_WAIT, || {
        received(&hook).contains(&resolved).then_some(())
    });
    assert_eq!(
        daemon.metric("npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}"),
        Some(1.0)
    );
    let (exit, _) = daemon.stop();
    assert!(exit.success(), "{exit:?}");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("cannot record the cycle"), "{text}");
    assert!(
        text.contains("the state database can be written again"),
        "{text}"
    );
    testkit::secrets::assert_absent(&[TOKEN], [("the log", &text)]);
    // Nothing found was lost: the token is still reported once, not again.
    assert_eq!(
        received(&hook)
            .iter()
            .filter(|r| r.starts_with("FIRING token-present"))
            .count(),
        1
    );
}

// ---------------------------------------------------------------------------------------------------
// A state database that cannot be opened at start stops `run` at once with exit code 2 and an error
// naming the file, before any registry call; a file that is there is never altered. A full disk at
// run time follows the run-time rule above, and nothing found while it was full is lost.
// ---------------------------------------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_npm-watchdog");

/// How long a refused start may take: it must not get as far as a cycle (generous for a loaded
/// machine; a refusal takes milliseconds).
const REFUSE_WITHIN: Duration = Duration::from_secs(15);

/// One token as the registry lists it (read-only, no expiry).
fn listed_token(key: &str, name: &str) -> Value {
    json!({
        "name": name, "key": key, "token": "npm_ab...yz", "cidr": null,
        "bypass_2fa": false, "created": "2026-11-26T00:00:00.000Z", "expiry": null,
        "permissions": [{"name": "package", "action": "read"}], "revoked": null
    })
}

/// A fake registry listing one token, its token file in `dir`, and `<dir>/config.toml` with the
/// state at `state` and `extra` merged in.
async fn start_setup(dir: &Path, state: &Path, extra: &str) -> (FakeRegistry, PathBuf) {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(vec![listed_token("abcdef12121212121212", "laptop")]);
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    // Owner-only, so the one line a refused start prints is its reason.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = TestConfig::new(&reg.url, &token_file, state)
        .listen(free_port())
        .no_retries()
        .not_own_account()
        .with(extra)
        .write(&dir.join("config.toml"));
    (reg, config)
}

/// `npm-watchdog run` that must refuse to start: its exit code and standard error. Fails (after
/// stopping it) if it is still running after [`REFUSE_WITHIN`]. `dir` holds its output and no-npmrc.
fn run_refused(config: &Path, dir: &Path) -> (Option<i32>, String) {
    let err_path = dir.join("refused.stderr");
    let err_file = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("NPM_CONFIG_USERCONFIG", dir.join("no-npmrc"))
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
        .expect("start npm-watchdog");
    let deadline = Instant::now() + REFUSE_WITHIN;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`npm-watchdog run` was still running after {REFUSE_WITHIN:?} instead of refusing \
                 to start; it printed:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = std::fs::read_to_string(&err_path).expect("stderr");
    testkit::secrets::assert_absent(&[TOKEN], [("the output", &err)]);
    (status.code(), err)
}

/// Fills the file system holding `path` to the last byte with the file `path`, as a runaway log
/// would; returns how many bytes that took.
fn fill_disk(path: &Path) -> u64 {
    let mut file =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let chunk = vec![0x5a_u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => panic!("writing {} made no progress", path.display()),
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == ErrorKind::StorageFull => return written,
            Err(e) => panic!("write {}: {e}", path.display()),
        }
    }
}

/// Whether every queued notification is delivered and recorded as delivered (read beside the
/// running daemon: WAL readers do not block it).
fn outbox_settled(state: &Path) -> bool {
    let Ok(c) = rusqlite::Connection::open_with_flags(state, OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return false;
    };
    c.query_row(
        "SELECT count(*) FROM outbox WHERE delivered IS NULL",
        [],
        |r| r.get::<_, i64>(0),
    )
    .is_ok_and(|n| n == 0)
}

/// A deterministic stream of garbage bytes (xorshift), so a failure can be reproduced.
fn garbage(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_state_folder_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Permission bits do not stop root: a read-only file system does.
    let ro = Tmpfs::mount(&dir.path().join("ro"), "ro,size=1m");
    // The folder exists but cannot be written; the folder cannot even be created.
    for state in [
        ro.path.join("state.db"),
        ro.path.join("npm-watchdog/state.db"),
    ] {
        let (reg, config) = start_setup(dir.path(), &state, "").await;
        let (code, err) = run_refused(&config, dir.path());
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains(&state.display().to_string()),
            "the error does not name the state file {}:\n{err}",
            state.display()
        );
        assert!(err.contains("Read-only file system"), "{err}");
        assert!(
            reg.requests().is_empty(),
            "it called the registry before refusing to start:\n{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_folder_that_is_a_regular_file_stops_the_start_saying_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let in_the_way = dir.path().join("npm-watchdog");
    std::fs::write(&in_the_way, "a file where the state folder should be\n").expect("file");
    let state = in_the_way.join("state.db");
    let (reg, config) = start_setup(dir.path(), &state, "").await;
    let (code, err) = run_refused(&config, dir.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&state.display().to_string()),
        "the error does not name the state file {}:\n{err}",
        state.display()
    );
    assert!(reg.requests().is_empty(), "{err}");
    let lower = err.to_lowercase();
    assert!(
        lower.contains("not a directory") || lower.contains("not a folder"),
        "the state folder {} is a regular file, but the error does not say so: a bare \"File exists\" \
         about the lock file reads as if the lock file were in the way (it does not exist):\n{err}",
        in_the_way.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_stops_the_start_naming_it_and_is_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.db");

    // A real state of a daemon that ran and stopped cleanly, to cut short below.
    let port = free_port();
    let (_reg, config) = start_setup(
        dir.path(),
        &state,
        &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .await;
    let mut daemon = Daemon::start(
        &config,
        port,
        &dir.path().join("daemon.log"),
        &dir.path().join("no-npmrc"),
    );
    let (exit, _) = daemon.stop();
    assert!(exit.success(), "{exit:?}");
    let real = std::fs::read(&state).expect("the real state");
    let wal = dir.path().join("state.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "a clean stop leaves everything in the database file"
    );

    let mut with_header = b"SQLite format 3\0".to_vec();
    with_header.extend(garbage(16 * 1024));
    let cases: [(&str, Vec<u8>); 3] = [
        ("garbage", garbage(16 * 1024)),
        ("garbage behind an SQLite header", with_header),
        (
            "a real state cut short after 4 pages",
            real[..16 * 1024].to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        std::fs::write(&state, &bytes).expect("write the corrupt state");
        let (reg, config) = start_setup(dir.path(), &state, "").await;
        let (code, err) = run_refused(&config, dir.path());
        assert_eq!(code, Some(2), "{what}: {err}");
        assert!(
            err.contains(&format!("state database {}", state.display())),
            "{what}: the error does not name the state file {}:\n{err}",
            state.display()
        );
        assert!(
            err.contains("file is not a database") || err.contains("malformed"),
            "{what}: {err}"
        );
        assert!(reg.requests().is_empty(), "{what}: {err}");
        // Nothing stored is lost: the file is exactly as it was, and no journal beside it changes
        // how it reads.
        assert!(
            std::fs::read(&state).expect("the state") == bytes,
            "{what}: the refused start changed the state file"
        );
        assert!(
            std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
            "{what}: the refused start left a write-ahead log beside the state file"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_at_start_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Tmpfs::mount(&dir.path().join("disk"), "size=256k");
    fill_disk(&disk.path.join("filler"));
    let state = disk.path.join("state.db");
    let (reg, config) = start_setup(dir.path(), &state, "").await;
    let (code, err) = run_refused(&config, dir.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("state database {}", state.display())),
        "the error does not name the state file {}:\n{err}",
        state.display()
    );
    assert!(err.contains("disk is full"), "{err}");
    assert!(reg.requests().is_empty(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_at_run_time_is_loud_and_nothing_found_meanwhile_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Room for the state at start; then a filler takes the rest.
    let disk = Tmpfs::mount(&dir.path().join("disk"), "size=8m");
    let state = disk.path.join("state.db");
    let (hook, hook_url) = Receiver::start().await;
    let port = free_port();
    let (reg, config) = start_setup(
        dir.path(),
        &state,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[schedule]\ntokens = \"1s\"\n\
             [[alerts.webhook]]\nurl = \"{hook_url}/hook\"\n"
        ),
    )
    .await;
    let log = dir.path().join("daemon.log");
    let mut daemon = Daemon::start(&config, port, &log, &dir.path().join("no-npmrc"));
    wait_until("the token is reported", FAULT_WAIT, || {
        received(&hook)
            .contains(&"FIRING token-present token abcdef (laptop)".to_string())
            .then_some(())
    });
    // Its delivery is recorded too, so no write the fault blocks is owed before it starts.
    wait_until("the outbox is settled", FAULT_WAIT, || {
        outbox_settled(&state).then_some(())
    });

    // The disk fills up.
    let filler = disk.path.join("filler");
    fill_disk(&filler);
    wait_until("/readyz answers 503", FAULT_WAIT, || {
        (readyz(port) == 503).then_some(())
    });
    let alert = format!("FIRING watchdog-blind state database {}", state.display());
    wait_until("the state alert reaches the webhook", FAULT_WAIT, || {
        received(&hook).contains(&alert).then_some(())
    });
    assert!(
        daemon
            .metric("npm_watchdog_state_write_errors_total")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        daemon.metric("npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}"),
        Some(0.0)
    );
    let body = hook
        .findings()
        .into_iter()
        .find(|b| b["check"] == "watchdog-blind")
        .expect("the alert");
    assert_eq!(body["severity"], "critical");
    assert!(
        body["summary"]
            .as_str()
            .is_some_and(|s| s.contains("disk is full")),
        "{body}"
    );

    // A token is created while nothing can be recorded: the cycles read it and cannot record it.
    reg.set_tokens(vec![
        listed_token("abcdef12121212121212", "laptop"),
        listed_token("fedcba34343434343434", "tonight"),
    ]);
    reg.clear_requests();
    wait_until("a cycle reads the new token list", FAULT_WAIT, || {
        (!reg.requests_to(fake_registry::TOKENS_PATH).is_empty()).then_some(())
    });
    let errors = daemon
        .metric("npm_watchdog_state_write_errors_total")
        .unwrap_or(0.0);
    daemon.wait_counter("npm_watchdog_state_write_errors_total", errors + 1.0);
    assert_eq!(readyz(port), 503);
    assert!(
        !received(&hook).iter().any(|r| r.contains("(tonight)")),
        "nothing about the new token can be sent before it is recorded: {:?}",
        received(&hook)
    );
    assert_eq!(
        received(&hook).iter().filter(|r| **r == alert).count(),
        1,
        "the state alert is sent once per outage: {:?}",
        received(&hook)
    );

    // Space is freed: the next cycle is recorded, ready again, the alert resolves, and the token
    // made meanwhile is reported, late but not lost.
    std::fs::remove_file(&filler).expect("remove the filler");
    wait_until("/readyz answers 200 again", FAULT_WAIT, || {
        (readyz(port) == 200).then_some(())
    });
    let resolved = format!("RESOLVED watchdog-blind state database {}", state.display());
    wait_until("the state alert resolves", FAULT_WAIT, || {
        received(&hook).contains(&resolved).then_some(())
    });
    for check in ["token-created", "token-present"] {
        let firing = format!("FIRING {check} token fedcba (tonight)");
        wait_until(&firing, FAULT_WAIT, || {
            received(&hook).contains(&firing).then_some(())
        });
    }
    wait_until("the outbox is settled", FAULT_WAIT, || {
        outbox_settled(&state).then_some(())
    });
    assert_eq!(
        daemon.metric("npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}"),
        Some(1.0)
    );
    let (exit, _) = daemon.stop();
    assert!(exit.success(), "{exit:?}");

    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("cannot record the cycle"), "{text}");
    assert!(text.contains("disk is full"), "{text}");
    assert!(
        text.contains("the state database can be written again"),
        "{text}"
    );
    testkit::secrets::assert_absent(&[TOKEN], [("the log", &text)]);
    // Nothing found was lost and nothing was sent twice: every FIRING arrived exactly once.
    let got = received(&hook);
    for line in got.iter().filter(|r| r.starts_with("FIRING")) {
        assert_eq!(
            got.iter().filter(|r| *r == line).count(),
            1,
            "{line} arrived more than once: {got:?}"
        );
    }
    assert_eq!(
        got.iter()
            .filter(|r| r.starts_with("FIRING token-present token abcdef"))
            .count(),
        1,
        "{got:?}"
    );
}
