//! The daemon speaks systemd's notify protocol: READY=1 once it serves, WATCHDOG=1 while its scheduler
//! runs, STOPPING=1 on SIGTERM. A plain datagram socket stands in for systemd, as `NOTIFY_SOCKET`.

use testkit::fake_registry;
use testkit::test_config;

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fake_registry::{FakeRegistry, TOKEN};
use serde_json::json;
use test_config::TestConfig;

/// Read datagrams until one contains `want` or the deadline passes; returns every message seen.
fn until(sock: &UnixDatagram, want: &str, timeout: Duration, seen: &mut Vec<String>) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .expect("timeout");
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == want);
                seen.push(msg);
                if hit {
                    return true;
                }
            }
            Err(_) => break,
        }
    }
    false
}

/// Waits for each of `states` in turn (10 s each) and hands the socket back.
async fn in_order(sock: UnixDatagram, states: &'static [&'static str]) -> UnixDatagram {
    tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for want in states {
            assert!(
                until(&sock, want, Duration::from_secs(10), &mut seen),
                "no {want} (after {states:?} began): {seen:?}"
            );
        }
        sock
    })
    .await
    .expect("reader")
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(vec![]);
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    std::fs::write(dir.path().join("token"), TOKEN).expect("token");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    TestConfig::new(
        &reg.url,
        &dir.path().join("token"),
        &dir.path().join("state.db"),
    )
    .listen(port)
    .write(&dir.path().join("config.toml"));
    // systemd sets WATCHDOG_PID to the main process; `exec` keeps the shell's pid for the daemon.
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" --config \"$1\" run")
        .arg(env!("CARGO_BIN_EXE_npm-watchdog"))
        .arg(dir.path().join("config.toml"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");

    let sock = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        assert!(
            until(&sock, "READY=1", Duration::from_secs(30), &mut seen),
            "no READY=1: {seen:?}"
        );
        // READY comes only once the HTTP server is bound.
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "READY=1 before the server listens"
        );
        // Pings at half the 1 s period: two of them within a few seconds.
        assert!(
            until(&sock, "WATCHDOG=1", Duration::from_secs(5), &mut seen),
            "no WATCHDOG=1: {seen:?}"
        );
        assert!(
            until(&sock, "WATCHDOG=1", Duration::from_secs(5), &mut seen),
            "one WATCHDOG=1 only: {seen:?}"
        );
        sock
    })
    .await
    .expect("reader");

    let pid = child.id().expect("pid").to_string();
    // `systemctl reload` (ExecReload sends SIGHUP): RELOADING=1, then READY=1 once it is done.
    assert!(tokio::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .expect("kill")
        .success());
    let sock = in_order(sock, &["RELOADING=1", "READY=1"]).await;

    assert!(tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill")
        .success());
    let sock = in_order(sock, &["STOPPING=1"]).await;
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success());
    drop(sock);
}
