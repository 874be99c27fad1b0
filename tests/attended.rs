//! The attended commands (`harden`, `audit` reading trust) against a registry that behaves like
//! npmjs.com: one-time codes that expire part-way, web-based 2FA, credentials that may not take the
//! action. On a terminal (a real pseudo-terminal here) the command asks for a fresh code and goes on;
//! off one it stops with exit code 3 and says what remains. Every run checks that neither credential
//! appears in what it printed.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use rexpect::process::wait::WaitStatus;
use serde_json::{json, Value};
use testkit::fake_registry::{self, CredentialKind, FakeRegistry, TOKEN};
use testkit::test_config::TestConfig;

const BIN: &str = env!("CARGO_BIN_EXE_npm-watchdog");
/// The write credential of the attended runs: the user's own session, given as a file.
const WRITER: &str = "npm_WriterSessionToken000000000000000000";
const PACKAGES: [&str; 3] = ["@acme/a", "@acme/b", "@acme/c"];

struct Setup {
    reg: FakeRegistry,
    dir: tempfile::TempDir,
    /// The daemon's `/metrics` port (for the one test that runs it).
    port: u16,
}

impl Setup {
    /// Three watched packages, the daemon's token read-only (as README advises), the writer a
    /// session; writes paced by `write_interval`.
    async fn new(write_interval: &str) -> Self {
        let reg = FakeRegistry::start().await;
        reg.set_profile(
            json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}),
        );
        reg.set_valid_tokens(vec![TOKEN.to_string(), WRITER.to_string()]);
        reg.set_read_only_tokens([TOKEN]);
        for name in PACKAGES {
            let release = (
                "1.0.0",
                "2026-02-01T00:00:00.000Z",
                Some("github"),
                "GitHub Actions",
            );
            reg.add_packument(
                name,
                fake_registry::packument_doc(name, &[release], &["alice"]),
            );
            reg.set_trust(
                name,
                json!([{"id": "t", "type": "github", "claims": {"repository": "acme/x",
                        "workflow_ref": {"file": "release.yml"}, "environment": "npm"}}]),
            );
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("token"), TOKEN).expect("token file");
        std::fs::write(dir.path().join("writer"), WRITER).expect("writer file");
        let port = testkit::peers::free_port();
        TestConfig::new(
            &reg.url,
            &dir.path().join("token"),
            &dir.path().join("state.db"),
        )
        .listen(port)
        .no_retries()
        .with(&format!(
            "[watch]\npackages = [\"@acme/a\", \"@acme/b\", \"@acme/c\"]\n\
             [registry]\nwrite_interval = \"{write_interval}\"\n"
        ))
        .write(&dir.path().join("config.toml"));
        Self { reg, dir, port }
    }

    /// The user's npm config (absent until written: see [`Self::login`]).
    fn npmrc(&self) -> PathBuf {
        self.dir.path().join("npmrc")
    }

    /// What `npm login` leaves in the npm user config: the session for this registry.
    fn login(&self) {
        let nerf = self.reg.url.trim_start_matches("http:");
        std::fs::write(self.npmrc(), format!("{nerf}:_authToken={WRITER}\n")).expect("npmrc");
    }

    fn writer(&self) -> PathBuf {
        self.dir.path().join("writer")
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(BIN);
        c.arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .args(args)
            .env("NPM_CONFIG_USERCONFIG", self.npmrc())
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("NPM_WATCHDOG_WRITE_TOKEN_FILE");
        c
    }

    /// Off a terminal: standard input is not one.
    async fn run(&self, args: &[&str]) -> Output {
        let out = tokio::process::Command::from(self.command(args))
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run npm-watchdog");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        no_credential(&format!("the output of {args:?}"), &all);
        out
    }

    /// On a pseudo-terminal: `converse` answers the prompts; returns everything the terminal showed
    /// and the exit code.
    fn on_terminal(
        &self,
        args: &[&str],
        converse: impl FnOnce(&mut rexpect::session::PtySession),
    ) -> (String, i32) {
        let command = self.command(args);
        tokio::task::block_in_place(|| {
            let mut p =
                rexpect::session::spawn_command(command, Some(30_000)).expect("spawn on a pty");
            converse(&mut p);
            let rest = p.exp_eof().expect("the command ends");
            let code = match p.process().wait().expect("wait") {
                WaitStatus::Exited(_, code) => code,
                other => panic!("ended by {other:?}"),
            };
            no_credential(&format!("the terminal of {args:?}"), &rest);
            (rest, code)
        })
    }

    fn posted(&self) -> Vec<String> {
        self.reg
            .access_posts()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }
}

fn no_credential(place: &str, text: &str) {
    testkit::secrets::assert_absent(&[TOKEN, WRITER], [(place.to_string(), text)]);
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A code accepted once, then expired; on a terminal `harden` asks for a fresh one, sends the refused
/// package again with it, and finishes the run: every package changed exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_terminal_harden_asks_for_a_fresh_code_and_finishes() {
    let s = Setup::new("1ms").await;
    s.reg.set_valid_otps(["111111"]);
    s.reg.otp_uses_left(Some(1));
    let writer = s.writer();
    let writer = writer.to_str().expect("utf-8 path");
    let (shown, code) = s.on_terminal(
        &["harden", "--otp", "111111", "--write-token-file", writer],
        |p| {
            p.exp_string("The one-time password was refused or has expired. Enter a fresh one")
                .expect("asked for a fresh code");
            s.reg.add_otp("222222");
            p.send_line("222222").expect("answer");
        },
    );
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("ok      @acme/b"), "{shown}");
    assert!(
        shown.contains("3 of 3 package(s) now require 2FA and disallow tokens (3 by this run"),
        "{shown}"
    );
    assert_eq!(s.posted(), PACKAGES, "each package once, none lost");
    let otps: Vec<_> = s
        .reg
        .requests_to("/-/package/")
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.header("npm-otp").unwrap_or("").to_string())
        .collect();
    assert_eq!(
        otps,
        ["111111", "111111", "222222", "222222"],
        "@acme/b sent again with the fresh code"
    );
}

/// Without --otp on a terminal, the first challenge is answered like any later one. An empty answer
/// stops the run (exit 3) with nothing changed.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_terminal_an_otp_is_asked_for_when_none_was_given_and_an_empty_answer_stops() {
    let s = Setup::new("1ms").await;
    s.reg.set_valid_otps(["333333"]);
    let writer = s.writer();
    let writer = writer.to_str().expect("utf-8 path");
    let (shown, code) = s.on_terminal(&["harden", "--write-token-file", writer], |p| {
        p.exp_string("This operation needs a one-time password. Enter one (empty to stop): ")
            .expect("asked");
        p.send_line("").expect("answer");
    });
    assert_eq!(code, 3, "{shown}");
    assert!(
        shown.contains("stopped: no one-time password was given"),
        "{shown}"
    );
    assert!(shown.contains("  not done: @acme/a"), "{shown}");
    assert!(s.posted().is_empty());

    let (shown, code) = s.on_terminal(&["harden", "--write-token-file", writer], |p| {
        p.exp_string("Enter one (empty to stop): ").expect("asked");
        p.send_line("333333").expect("answer");
    });
    assert_eq!(code, 0, "{shown}");
    assert_eq!(s.posted(), PACKAGES);
}

/// The registry offers web-based 2FA: on a terminal the command shows where to confirm, polls
/// `doneUrl` (202, then the code) with the write credential, and sends the code it gets as the OTP.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_terminal_web_2fa_is_confirmed_by_polling_done_url() {
    let s = Setup::new("1ms").await;
    s.reg.set_web_2fa(Some(1));
    let writer = s.writer();
    let writer = writer.to_str().expect("utf-8 path");
    let (shown, code) = s.on_terminal(&["harden", "--write-token-file", writer], |p| {
        p.exp_string("Authenticate your account at:")
            .expect("the auth URL is shown");
        p.exp_string(&format!("{}-/auth/cli/1", s.reg.url))
            .expect("the registry's authUrl");
    });
    assert_eq!(code, 0, "{shown}");
    assert_eq!(s.posted(), PACKAGES);
    let polls = s.reg.requests_to("/-/v1/done");
    assert_eq!(polls.len(), 2, "202 once, then the code");
    let bearer = format!("Bearer {WRITER}");
    assert!(polls
        .iter()
        .all(|r| r.header("authorization") == Some(bearer.as_str())));
    let posts: Vec<_> = s
        .reg
        .requests_to("/-/package/")
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(
        posts[0].header("npm-otp"),
        None,
        "the first write goes without a code"
    );
    assert!(posts[1..]
        .iter()
        .all(|r| r.header("npm-otp") == Some("web-1")));
    // The code doneUrl handed out is a credential while it lasts: sent, never shown (the
    // credentials themselves are checked in every terminal's output by `on_terminal`).
    assert!(
        !shown.contains("web-1"),
        "the web 2FA code was shown: {shown}"
    );
}

/// Off a terminal web-based 2FA cannot be completed: both URLs are printed, `doneUrl` is not polled,
/// and the run stops with exit 3.
#[tokio::test(flavor = "multi_thread")]
async fn off_a_terminal_web_2fa_prints_both_urls_and_stops() {
    let s = Setup::new("1ms").await;
    s.reg.set_web_2fa(Some(0));
    let writer = s.writer();
    let out = s
        .run(&[
            "harden",
            "--write-token-file",
            writer.to_str().expect("utf-8 path"),
        ])
        .await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(3), "{shown}");
    assert!(
        shown.contains(&format!("open {}-/auth/cli/1 in a browser", s.reg.url))
            && shown.contains(&format!("poll {}-/v1/done?authId=1", s.reg.url)),
        "{shown}"
    );
    assert!(s.reg.requests_to("/-/v1/done").is_empty());
    assert!(s.posted().is_empty());
}

/// `audit` on a terminal without --otp asks for a code when the trust reads are challenged, and
/// judges D1 from what it then reads.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_terminal_audit_asks_for_a_code_to_read_trust() {
    let s = Setup::new("1ms").await;
    s.reg.set_valid_otps(["444444"]);
    let writer = s.writer();
    let writer = writer.to_str().expect("utf-8 path");
    let (shown, _) = s.on_terminal(&["audit", "--write-token-file", writer], |p| {
        p.exp_string("This operation needs a one-time password")
            .expect("asked");
        p.send_line("444444").expect("answer");
    });
    let d1 = shown
        .lines()
        .find(|l| l.trim_start().starts_with("D1 "))
        .unwrap_or_default()
        .to_string();
    assert!(d1.contains("PASS"), "{shown}");
    assert_eq!(s.reg.requests_to("/-/package/").len(), 1 + PACKAGES.len());
}

/// Writes go one at a time, `registry.write_interval` apart (1 ms elsewhere in these tests).
#[tokio::test(flavor = "multi_thread")]
async fn writes_are_paced() {
    let s = Setup::new("200ms").await;
    s.reg.set_valid_otps(["555555"]);
    let writer = s.writer();
    let out = s
        .run(&[
            "harden",
            "--otp",
            "555555",
            "--write-token-file",
            writer.to_str().expect("utf-8 path"),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let at: Vec<_> = s
        .reg
        .requests_to("/-/package/")
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.at)
        .collect();
    assert_eq!(at.len(), 3);
    // The client spaces its sends 200 ms apart; arrivals can be a few ms closer than that (the
    // first request also opens the connection), never anywhere near back to back.
    for pair in at.windows(2) {
        assert!(
            pair[1].duration_since(pair[0]) >= Duration::from_millis(150),
            "{:?}",
            pair[1].duration_since(pair[0])
        );
    }
}

/// The kinds of credential npmjs.com refuses for trust and for settings: a granular write token is
/// refused trust reads (401, no OTP challenge), a bypass-2FA token may not change settings. Neither
/// refusal is a verdict, and each names the credential to use instead.
#[tokio::test(flavor = "multi_thread")]
async fn granular_tokens_are_refused_where_npm_wants_a_session() {
    let s = Setup::new("1ms").await;
    s.reg.set_valid_otps(["666666"]);
    s.reg.set_credential_kind(WRITER, CredentialKind::Write);
    let writer = s.writer();
    let writer = writer.to_str().expect("utf-8 path");
    let out = s
        .run(&[
            "audit",
            "--otp",
            "666666",
            "--format",
            "json",
            "--write-token-file",
            writer,
        ])
        .await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["dod"][0]["status"], "UNVERIFIED", "{}", v["dod"][0]);
    let evidence = v["dod"][0]["evidence"].to_string();
    assert!(
        evidence.contains("unauthorized (401)")
            && evidence.contains("needs your own npm login session as the write credential"),
        "{evidence}"
    );

    s.reg
        .set_credential_kind(WRITER, CredentialKind::WriteBypass2fa);
    let out = s
        .run(&["harden", "--otp", "666666", "--write-token-file", writer])
        .await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("stopped: access: unauthorized (401)")
            && shown.contains("a token that bypasses 2FA may not change settings"),
        "{shown}"
    );
    assert!(s.posted().is_empty());
}

/// README's credential section, followed: the daemon runs on a read-only token and reads every
/// group with it; the user's own `npm login` session (in the npm user config, no flag) is what
/// `harden` and the audit's trust reads use; each credential goes only where it is needed.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_credentials_least_privilege_for_the_daemon_the_session_for_attended_runs() {
    let s = Setup::new("1ms").await;
    s.reg.set_valid_otps(["777777"]);
    s.reg.set_tokens(vec![]);
    let log = s.dir.path().join("daemon.log");
    let (metrics, stopped) = tokio::task::block_in_place(|| {
        let mut daemon = testkit::peers::Daemon::start(
            &s.dir.path().join("config.toml"),
            s.port,
            &log,
            &s.npmrc(),
        );
        for group in ["tokens", "packages"] {
            daemon.wait_metric(
                &format!("npm_watchdog_check_success{{check=\"{group}\",group=\"{group}\"}}"),
                1.0,
            );
        }
        let metrics = daemon.metrics();
        (metrics, daemon.stop().0)
    });
    assert!(stopped.success());
    assert!(
        !metrics.contains("npm_watchdog_check_errors_total{"),
        "the read-only token reads everything the daemon reads:\n{metrics}"
    );
    let bearer = |t: &str| format!("Bearer {t}");
    let daemon_requests = s.reg.requests();
    assert!(!daemon_requests.is_empty());
    assert!(
        daemon_requests
            .iter()
            .all(|r| r.header("authorization").is_none_or(|a| a == bearer(TOKEN))),
        "the daemon only ever sends its own read-only token"
    );
    s.reg.clear_requests();

    // `npm login`, then the attended commands with no credential flag.
    s.login();
    let out = s
        .run(&["audit", "--otp", "777777", "--format", "json"])
        .await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["dod"][0]["status"], "PASS", "{}", v["dod"][0]);
    let out = s.run(&["harden", "--otp", "777777"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(s.posted(), PACKAGES);
    for r in s.reg.requests() {
        let sent = r.header("authorization");
        let what = format!("{} {}", r.method, r.path_and_query);
        if r.path_and_query.starts_with("/-/package/") {
            assert_eq!(sent, Some(bearer(WRITER).as_str()), "{what}");
        } else {
            assert!(sent.is_none_or(|a| a == bearer(TOKEN)), "{what}");
        }
    }
    let daemon_log = std::fs::read_to_string(&log).unwrap_or_default();
    no_credential("the daemon's log", &daemon_log);
}
