//! The `npm-watchdog` binary's one-shot verbs and its zero-config start, run as a user would run them,
//! against the in-process fake registry. Each test checks the exit code and what is printed, and that
//! the token never is.

use testkit::fake_ci;
use testkit::fake_registry;
use testkit::receiver;
use testkit::test_config;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use fake_registry::{FakeRegistry, TOKEN};
use serde_json::{json, Value};
use test_config::TestConfig;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_npm-watchdog");

fn token(key: &str, name: &str, bypass: bool, readonly: bool) -> Value {
    json!({
        "name": name, "key": key, "token": "npm_ab...yz", "cidr": ["127.0.0.1/32"], "bypass_2fa": bypass,
        "created": days_from_now(-33), "expiry": days_from_now(16),
        "permissions": [{"name": "package", "action": if readonly { "read" } else { "write" }}],
        "revoked": null
    })
}

/// A fake registry with the given tokens, and a config file pointing at it.
async fn setup(tokens: Vec<Value>, extra_config: &str) -> (FakeRegistry, tempfile::TempDir) {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(tokens);
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), TOKEN).expect("token file");
    TestConfig::new(
        &reg.url,
        &dir.path().join("token"),
        &dir.path().join("state.db"),
    )
    .no_retries()
    .with(extra_config)
    .write(&dir.path().join("config.toml"));
    (reg, dir)
}

async fn run(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .args(args)
        .env("NPM_CONFIG_USERCONFIG", dir.join("no-npmrc"))
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run npm-watchdog");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    testkit::secrets::assert_absent(&[TOKEN], [(format!("the output of {args:?}"), &all)]);
    out
}

/// The binary with no config file and `home` as the user's home: its npm user config and state folder
/// are the only places it can take settings from (the environment aside).
fn zero_config(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("HOME", home)
        .env("XDG_STATE_HOME", home.join("state"))
        .env("RUST_LOG", "info")
        .env_remove("NPM_CONFIG_USERCONFIG")
        .env_remove("npm_config_userconfig")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// Polls the daemon's `/readyz` at `addr` until it answers 200 (30 s at most).
async fn wait_ready(client: &reqwest::Client, addr: &str) {
    let url = format!("http://{addr}/readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client.get(&url).send().await.map(|r| r.status().as_u16());
        if matches!(ready, Ok(200)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready on {addr}: {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM, then what the daemon printed and how it exited (15 s at most).
async fn terminate(child: tokio::process::Child) -> Output {
    let pid = child.id().expect("pid").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("exits")
        .expect("output")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_scores_d5_and_d9_and_exits_by_result() {
    let (reg, dir) = setup(
        vec![
            token("82e3930000000000aaaa", "watchdog", false, true),
            token("b5c1d20000000000bbbb", "bulk-hardening", true, false),
        ],
        "[policy]\nallow_tokens = [{ key_prefix = \"82e393\", reason = \"own credential\" }]\n",
    )
    .await;
    let out = run(dir.path(), &["audit"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("D5  FAIL"), "{text}");
    assert!(
        text.contains("- token b5c1d2 (bulk-hardening) (granular read-write"),
        "{text}"
    );
    assert!(text.contains("D9  FAIL"), "{text}");
    assert!(
        text.contains("[critical] token-bypass-2fa: token b5c1d2 (bulk-hardening)"),
        "{text}"
    );
    assert!(text.contains("fix: Revoke it as soon as the job it was made for is done: `npm token revoke b5c1d2 --registry"), "{text}");

    let out = run(dir.path(), &["audit", "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("audit json");
    assert_eq!(v["schema"], 1);
    assert_eq!(v["result"], "fail");
    assert_eq!(v["account"], "alice");
    assert_eq!(v["dod"][4]["id"], "D5");
    assert_eq!(v["dod"][4]["status"], "FAIL");
    assert_eq!(v["dod"][8]["id"], "D9");
    assert_eq!(v["dod"][8]["status"], "FAIL");
    assert_eq!(v["dod"].as_array().map(Vec::len), Some(9));
    assert!(v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .any(|f| f["check"] == "token-bypass-2fa"));

    // The bulk token is revoked: only the allowlisted credential is left, so everything passes.
    reg.set_tokens(vec![token("82e3930000000000aaaa", "watchdog", false, true)]);
    let out = run(dir.path(), &["audit"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("D5  PASS"));
    assert!(stdout(&out).contains("D9  PASS"));
    assert!(stdout(&out).contains("Findings (0)"));

    // The registry rejects the credential: the audit could not run, which is not a pass.
    reg.set_valid_tokens(vec!["another".into()]);
    let out = run(dir.path(), &["audit"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unauthorized (401)"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_lists_every_token_with_its_risk() {
    let (_reg, dir) = setup(
        vec![
            token("82e3930000000000aaaa", "watchdog", false, true),
            token("b5c1d20000000000bbbb", "bulk-hardening", true, false),
        ],
        "[policy]\nallow_tokens = [{ key_prefix = \"82e393\", reason = \"own credential\" }]\n",
    )
    .await;
    let out = run(dir.path(), &["tokens"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("ID      NAME            KIND      ACCESS      BYPASS-2FA  CREATED     EXPIRES     LAST USED  RISK"), "{text}");
    assert!(lines[1].starts_with("82e393  watchdog"), "{text}");
    assert!(lines[1].ends_with("allowlisted"), "{text}");
    assert!(
        lines[2].contains("yes") && lines[2].contains("critical: token-present, token-bypass-2fa"),
        "{text}"
    );

    let out = run(dir.path(), &["tokens", "--format", "json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[1]["id"], "b5c1d2");
    assert_eq!(v[1]["bypass_2fa"], true);
    assert_eq!(v[1]["risk"], "critical");
    assert_eq!(v[0]["allowlisted"], true);
}

/// Whoever can create a token names it. A name that tries to forge lines, drive the terminal, hide
/// a link, reverse text or drown the output comes out inert and bounded in `tokens` and `audit`,
/// one row per token, while `--format json` keeps the name as the registry sent it.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_token_names_are_inert_in_tables_and_audits() {
    let forged = "ci\nINFO npm_watchdog: all tokens revoked, account hardened";
    let terminal = "\u{1b}[2J\u{1b}]8;;https://evil.example\u{7}x\u{1b}]0;title\u{7}\u{9b}1A\u{0}";
    let bidi = "gpj.\u{202e}exe\u{200b}";
    let huge = "x".repeat(1_000_000);
    let (_reg, dir) = setup(
        vec![
            token("aaaaaa0000000000aaaa", forged, false, false),
            token("bbbbbb0000000000bbbb", terminal, true, false),
            token("cccccc0000000000cccc", bidi, false, false),
            token("dddddd0000000000dddd", &huge, false, false),
        ],
        "",
    )
    .await;
    let inert = |what: &str, text: &str| {
        for bad in ['\u{1b}', '\u{9b}', '\u{7}', '\u{0}', '\u{202e}', '\u{200b}'] {
            assert!(!text.contains(bad), "{what} holds {bad:?}");
        }
        assert!(
            !text.contains("\nINFO npm_watchdog"),
            "{what}: a forged line"
        );
    };
    let out = run(dir.path(), &["tokens"]).await;
    let text = stdout(&out);
    inert("tokens", &text);
    assert_eq!(text.lines().count(), 1 + 4, "one row per token:\n{text}");
    assert!(text.len() < 8_000, "{} bytes", text.len());
    assert!(text.contains("ci\\nINFO npm_watchdog"), "{text}");
    assert!(text.contains("gpj.\\u{202e}exe"), "{text}");
    assert!(text.contains("…(+999800 bytes, sha256 "), "{text}");

    let out = run(dir.path(), &["audit"]).await;
    let text = stdout(&out);
    inert("audit", &text);
    assert!(text.len() < 64_000, "{} bytes", text.len());
    assert!(text.contains("token bbbbbb (\\u{1b}[2J"), "{text}");

    let out = run(dir.path(), &["tokens", "--format", "json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[0]["name"], forged, "JSON keeps the name as sent");
}

/// A package name from the registry's org listing is printed inert by `harden`.
#[tokio::test(flavor = "multi_thread")]
async fn harden_prints_listed_package_names_inert() {
    let (reg, dir) = setup(vec![], "[watch]\norgs = [\"acme\"]\n").await;
    reg.set_org_packages(
        "acme",
        [("@acme/a\u{1b}[2J\nok      @acme/forged", "write")],
    );
    let out = run(dir.path(), &["harden", "--dry-run"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        !text.contains('\u{1b}') && !text.contains("\nok      @acme/forged"),
        "{text:?}"
    );
    assert!(text.contains("@acme/a\\u{1b}[2J\\nok"), "{text}");
}

/// A bypass-2FA token past its expiry is still listed (npmjs.com keeps it) but can do nothing:
/// `tokens` marks it expired, and the audit judges D5 and D9 on live tokens only.
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_is_listed_as_expired_and_not_judged() {
    let mut expired = token("dead000000000000cccc", "last-night", true, false);
    expired["created"] = json!(days_from_now(-3));
    expired["expiry"] = json!(days_from_now(-1));
    let (_reg, dir) = setup(
        vec![
            token("82e3930000000000aaaa", "watchdog", false, true),
            expired,
        ],
        "[policy]\nallow_tokens = [{ key_prefix = \"82e393\", reason = \"own credential\" }]\n",
    )
    .await;
    let out = run(dir.path(), &["tokens"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.starts_with("dead00"))
        .unwrap_or_else(|| panic!("no row for the expired token:\n{text}"));
    assert!(
        row.ends_with("expired (still listed, cannot be used)"),
        "{text}"
    );
    let out = run(dir.path(), &["tokens", "--format", "json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[1]["expired"], true);
    assert_eq!(v[1]["risk"], Value::Null);

    let out = run(dir.path(), &["audit", "--format", "json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("audit json");
    assert_eq!(v["dod"][4]["id"], "D5");
    assert_eq!(v["dod"][4]["status"], "PASS", "{}", v["dod"][4]);
    assert_eq!(v["dod"][8]["id"], "D9");
    assert_eq!(v["dod"][8]["status"], "PASS", "{}", v["dod"][8]);
    assert!(
        !v["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .any(|f| f["subject"].as_str().unwrap_or_default().contains("dead00")),
        "{}",
        v["findings"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_check_redacts_and_reports_problems() {
    let (_reg, dir) = setup(
        vec![],
        "[[alerts.webhook]]\nurl = \"https://hooks.example.com/services/T0/B0/HOOKSECRET\"\nsecret_file = \"/nonexistent/hook-key\"\n",
    )
    .await;
    let out = run(dir.path(), &["config", "check"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    testkit::secrets::assert_absent(&["HOOKSECRET"], [("config check's output", &text)]);
    assert!(
        text.contains("url = \"https://hooks.example.com/<redacted>\""),
        "{text}"
    );
    assert!(text.contains("# credential: token file"), "{text}");
    assert!(
        text.contains(
            "# PROBLEM: alerts.webhook[0].secret_file: /nonexistent/hook-key: entity not found"
        ),
        "{text}"
    );

    std::fs::write(dir.path().join("config.toml"), "[registry]\nurll = 1\n").expect("write");
    let out = run(dir.path(), &["config", "check"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "npm-watchdog: config file {}: registry.urll: unknown key (expected one of: url, token_file, timeout, connect_timeout, idle_timeout, min_throughput, concurrency, retries, max_body, max_packument, write_interval)",
            dir.path().join("config.toml").display()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn notify_test_reports_each_sink() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let app = axum::Router::new().fallback(|| async { "ok" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let (_reg, dir) = setup(
        vec![],
        &format!(
            "[[alerts.webhook]]\nurl = \"{hook}\"\n[[alerts.webhook]]\nname = \"dead\"\nurl = \"http://127.0.0.1:{closed}/x\"\ntimeout = \"2s\"\n"
        ),
    )
    .await;
    let out = run(dir.path(), &["notify-test"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("webhook: ok"), "{text}");
    assert!(text.contains("dead: FAILED: "), "{text}");
}

/// The pager sinks through the binary: `config check` lists them with their routes, and `notify-test`
/// reports each refusal without the routing key or the Slack URL, even when a receiver echoes back
/// what it was sent.
#[tokio::test(flavor = "multi_thread")]
async fn pager_sinks_report_refusals_without_their_secrets() {
    const KEY: &str = "R0utingKeyCliTest0123456789abcde";
    const PATH: &str = "/services/T000/B000/CLISLACKSECRET";
    let (pd, pd_url) = receiver::Receiver::start().await;
    pd.set_default(receiver::Reply::new(
        400,
        format!("{{\"status\":\"invalid event\",\"errors\":[\"routing_key {KEY} is unknown\"]}}"),
    ));
    let (slack, slack_url) = receiver::Receiver::start().await;
    slack.set_default(receiver::Reply::new(
        404,
        format!("no_service at {slack_url}{PATH}"),
    ));
    let (am, am_url) = receiver::Receiver::start().await;
    am.set_default(receiver::Reply::new(400, "bad alerts"));
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("pagerduty-key");
    let url_file = dir.path().join("slack-url");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("key");
    std::fs::write(&url_file, format!("{slack_url}{PATH}\n")).expect("url");
    let (_reg, dir) = setup(
        vec![],
        &format!(
            "[[alerts.pagerduty]]\nrouting_key_file = \"{}\"\nurl = \"{pd_url}/v2/enqueue\"\n\
             [[alerts.slack]]\nurl_file = \"{}\"\nmin_severity = \"critical\"\n\
             [[alerts.alertmanager]]\nurls = [\"{am_url}\"]\n",
            key_file.display(),
            url_file.display()
        ),
    )
    .await;
    let check = run(dir.path(), &["config", "check"]).await;
    let text = stdout(&check);
    assert_eq!(check.status.code(), Some(0), "{text}");
    assert!(
        text.contains(
            "# sinks: pagerduty (min info), slack (min critical), alertmanager (min info)"
        ),
        "{text}"
    );
    let out = run(dir.path(), &["notify-test"]).await;
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("pagerduty: FAILED: pagerduty sink pagerduty: POST ")
            && all.contains(
                "answered 400 Bad Request: invalid event: routing_key <redacted> is unknown"
            ),
        "{all}"
    );
    assert!(
        all.contains("slack: FAILED: slack sink slack: POST ")
            && all.contains("answered 404 Not Found: no_service at"),
        "{all}"
    );
    assert!(all.contains("alertmanager: FAILED: "), "{all}");
    testkit::secrets::assert_absent(&[KEY, "CLISLACKSECRET"], [("notify-test's output", &all)]);
    assert_eq!(
        (pd.count(), slack.count(), am.count()),
        (1, 1, 1),
        "one test message per sink"
    );
    assert_eq!(
        pd.bodies()[0]["routing_key"],
        KEY,
        "the key travels in the body"
    );
    assert_eq!(slack.requests()[0].path, PATH);
}

#[tokio::test(flavor = "multi_thread")]
async fn version_and_help() {
    let out = Command::new(BIN)
        .arg("--version")
        .output()
        .await
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("npm-watchdog {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(BIN).arg("--help").output().await.expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for verb in ["run", "tokens", "audit", "config", "notify-test"] {
        assert!(help.contains(&format!("  {verb} ")), "{help}");
    }
}

/// With no config file, `run` takes the registry and credential from the npm user config, alerts to
/// the log, keeps state in the user's state folder, serves metrics on loopback, and says so.
#[tokio::test(flavor = "multi_thread")]
async fn zero_config_run_uses_the_npm_user_config() {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(vec![token(
        "c1a55c0000000000cccc",
        "ci-legacy",
        false,
        false,
    )]);
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));
    let home = tempfile::tempdir().expect("tempdir");
    let port = reg.port();
    std::fs::write(
        home.path().join(".npmrc"),
        format!(
            "registry={}\n//127.0.0.1:{port}/:_authToken=${{NPMW_TEST_TOKEN}}\n",
            reg.url
        ),
    )
    .expect("npmrc");
    let state_home = home.path().join("state");
    let child = zero_config(home.path(), &["run"])
        .env("NPMW_TEST_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start");
    let client = reqwest::Client::new();
    wait_ready(&client, "127.0.0.1:9858").await;
    let metrics = client
        .get("http://127.0.0.1:9858/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            "npm_watchdog_tokens{access=\"read-write\",bypass_2fa=\"false\",state=\"live\"} 1"
        ),
        "{metrics}"
    );
    assert!(state_home.join("npm-watchdog/state.db").exists());
    let out = terminate(child).await;
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("no config file: using built-in defaults"),
        "{log}"
    );
    assert!(log.contains("alerts go to this log"), "{log}");
    assert!(
        log.contains(&format!(
            "registry_origin=from the npm user config {}",
            home.path().join(".npmrc").display()
        )),
        "{log}"
    );
    assert!(
        log.contains("[FIRING:warning] token-present: token c1a55c (ci-legacy)"),
        "{log}"
    );
    testkit::secrets::assert_absent(&[TOKEN], [("the log", &log)]);
}

/// Three watched packages, all released through trusted publishing.
async fn hardening_setup() -> (FakeRegistry, tempfile::TempDir) {
    let (reg, dir) = setup(
        vec![],
        "[watch]\npackages = [\"@acme/a\", \"@acme/b\", \"@acme/c\"]\n",
    )
    .await;
    for name in ["@acme/a", "@acme/b", "@acme/c"] {
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
    }
    (reg, dir)
}

/// The daemon's credential is read-only, as README advises; npmjs.com refuses it trust reads and
/// writes (403). That refusal is never a verdict, and the attended commands take a credential that can
/// write for their run only.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_credential_needs_a_write_credential_for_trust_and_harden() {
    const WRITER: &str = "npm_WriterSessionToken000000000000000000";
    let (reg, dir) = hardening_setup().await;
    reg.set_trust(
        "@acme/a",
        json!([{"id": "t-a", "type": "github", "environment": "npm",
                "claims": {"repository": "acme/a", "workflow_ref": {"file": "release.yml"}}}]),
    );
    reg.set_valid_otps(["654321"]);
    reg.set_valid_tokens(vec![TOKEN.to_string(), WRITER.to_string()]);
    reg.set_read_only_tokens([TOKEN]);
    let writer_file = dir.path().join("write-token");
    std::fs::write(&writer_file, WRITER).expect("write token file");
    let writer = writer_file.to_str().expect("utf-8 path");
    let no_writer = |out: &Output| {
        let all = format!("{}{}", stdout(out), stderr(out));
        testkit::secrets::assert_absent(&[WRITER], [("the output", all)]);
    };

    // Trust read with the read-only credential: D1 and D2 unverified, saying what is missing.
    let out = run(
        dir.path(),
        &["audit", "--otp", "654321", "--format", "json"],
    )
    .await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    for (i, id) in [(0, "D1"), (1, "D2")] {
        assert_eq!(v["dod"][i]["id"], id);
        assert_eq!(v["dod"][i]["status"], "UNVERIFIED", "{}", v["dod"][i]);
    }
    let evidence = v["dod"][0]["evidence"].to_string();
    assert!(evidence.contains("forbidden (403)"), "{evidence}");
    assert!(
        evidence.contains("reading trust configurations needs the write credential")
            && evidence.contains("--write-token-file"),
        "{evidence}"
    );
    assert!(!v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .any(|f| f["check"]
            .as_str()
            .unwrap_or("")
            .starts_with("trusted-publisher")));

    // With the write credential: judged. @acme/b and @acme/c have no trusted publisher.
    let out = run(
        dir.path(),
        &[
            "audit",
            "--otp",
            "654321",
            "--format",
            "json",
            "--write-token-file",
            writer,
        ],
    )
    .await;
    no_writer(&out);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["dod"][0]["status"], "FAIL", "{}", v["dod"][0]);

    // harden without a write credential changes nothing and says how to give one.
    let out = run(dir.path(), &["harden", "--otp", "654321"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("harden needs a credential that can write")
            && err.contains("holds no session for //127.0.0.1:")
            && err.contains("--write-token-file FILE (or NPM_WATCHDOG_WRITE_TOKEN_FILE)"),
        "{err}"
    );
    assert!(reg.access_posts().is_empty());

    // Given the read-only token as the write credential: the first 403 stops the run.
    let read_only = dir.path().join("token");
    let read_only = read_only.to_str().expect("utf-8 path");
    let out = run(
        dir.path(),
        &["harden", "--otp", "654321", "--write-token-file", read_only],
    )
    .await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("stopped: access: forbidden (403)")
            && text.contains("needs a credential that can write"),
        "{text}"
    );
    assert!(text.contains("  not done: @acme/c"), "{text}");
    assert!(reg.access_posts().is_empty(), "nothing was changed");

    // With the write credential, harden does every package.
    let out = run(
        dir.path(),
        &["harden", "--otp", "654321", "--write-token-file", writer],
    )
    .await;
    no_writer(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(reg.access_posts().len(), 3);
    let writes: Vec<_> = reg
        .requests_to("/-/package/")
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    let bearer = format!("Bearer {WRITER}");
    assert_eq!(
        writes.len(),
        4,
        "one refused with the read-only token, then three"
    );
    assert!(writes[1..]
        .iter()
        .all(|r| r.header("authorization") == Some(bearer.as_str())));
}

/// A TOTP code lives about 30 seconds: the fake stops accepting it after its lifetime, and the
/// audit's trust reads that come after are unverified, never "no trusted publisher".
#[tokio::test(flavor = "multi_thread")]
async fn an_otp_past_its_lifetime_is_challenged_again() {
    let (reg, dir) = hardening_setup().await;
    reg.set_valid_otps(["654321"]);
    reg.expire_otps_after(Duration::ZERO);
    let out = run(
        dir.path(),
        &["audit", "--otp", "654321", "--format", "json"],
    )
    .await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["dod"][0]["status"], "UNVERIFIED", "{}", v["dod"][0]);
    assert!(!v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .any(|f| f["check"] == "trusted-publisher-missing"));
}

#[tokio::test(flavor = "multi_thread")]
async fn harden_sets_every_package_and_stops_cleanly_when_the_otp_expires() {
    let (reg, dir) = hardening_setup().await;
    let out = run(dir.path(), &["harden", "--otp", "123456", "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "would set \"Require 2FA and disallow tokens\" on 3 package(s) (POST /-/package/<name>/access):\n  @acme/a\n  @acme/b\n  @acme/c\n"
    );
    assert!(reg.access_posts().is_empty(), "a dry run changes nothing");

    // The code is accepted twice, then expires. Off a terminal nothing can ask for another: the
    // run stops with its own exit code and says what remains.
    reg.set_valid_otps(["123456"]);
    reg.otp_uses_left(Some(2));
    let out = run(
        dir.path(),
        &[
            "harden",
            "--otp",
            "123456",
            "--write-token-file",
            &token_file(&dir),
        ],
    )
    .await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.starts_with("ok      @acme/a\nok      @acme/b\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "2 of 3 package(s) now require 2FA and disallow tokens (2 by this run, 0 skipped as \
             done before); 0 failed; 1 not attempted"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "stopped: the registry refused the one-time password (one-time codes expire after \
             about 30 seconds), and there is no terminal to ask for another: run again with --otp"
        ),
        "{text}"
    );
    assert!(text.contains("  not done: @acme/c"), "{text}");
    let posts = reg.access_posts();
    assert_eq!(posts.len(), 2);
    assert_eq!(
        posts[0].1,
        json!({"publish_requires_tfa": true, "automation_token_overrides_tfa": false})
    );
    // Before every package is done, D7 cannot pass.
    let out = run(dir.path(), &["audit"]).await;
    assert!(
        stdout(&out).contains("never enforced by `npm-watchdog harden` on: @acme/c"),
        "{}",
        stdout(&out)
    );

    // A fresh code finishes the job: only what remains is done, the rest is named as skipped.
    reg.add_otp("234567");
    let out = run(
        dir.path(),
        &[
            "harden",
            "--otp",
            "234567",
            "--write-token-file",
            &token_file(&dir),
        ],
    )
    .await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with("skipped @acme/a: done at 20")
            && text.contains("skipped @acme/b: done at ")
            && text.contains("ok      @acme/c\n"),
        "{text}"
    );
    assert!(
        text.contains("3 of 3 package(s) now require 2FA and disallow tokens (1 by this run, 2 skipped as done before)"),
        "{text}"
    );
    let posts = reg.access_posts();
    assert_eq!(
        posts.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["@acme/a", "@acme/b", "@acme/c"],
        "each package was changed once"
    );
    // The run finished: the next one does every package again (the setting cannot be read back, so
    // a complete run re-applies it).
    let out = run(dir.path(), &["harden", "--otp", "234567", "--dry-run"]).await;
    assert!(stdout(&out).contains("on 3 package(s)"), "{}", stdout(&out));
    let out = run(dir.path(), &["audit", "--format", "json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["dod"][6]["id"], "D7");
    assert_eq!(v["dod"][6]["status"], "PASS", "{}", v["dod"][6]);
    let evidence = v["dod"][6]["evidence"].to_string();
    assert!(
        evidence.contains("not readable through npm's API"),
        "{evidence}"
    );
    assert!(
        evidence.contains("enforced by `npm-watchdog harden` on every watched package"),
        "{evidence}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_reads_trust_only_with_an_otp_and_never_reads_eotp_as_missing() {
    let (reg, dir) = hardening_setup().await;
    reg.set_trust(
        "@acme/a",
        json!([{"id": "t-a", "type": "github", "permissions": ["createPackage"],
                "claims": {"repository": "acme/a", "workflow_ref": {"file": "release.yml"}, "environment": "npm"}}]),
    );
    reg.set_trust("@acme/b", json!([]));
    reg.set_trust(
        "@acme/c",
        json!([{"id": "t-c", "type": "circleci", "permissions": ["createPackage"],
                "claims": {"oidc.circleci.com/org-id": "0f0e", "oidc.circleci.com/project-id": "1a1b"}}]),
    );
    reg.set_valid_otps(["654321"]);

    // No OTP: the registry says EOTP, which is "unverified", not "missing".
    let out = run(dir.path(), &["audit", "--format", "json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["dod"][0]["status"], "UNVERIFIED");
    assert!(v["dod"][0]["evidence"][0]
        .as_str()
        .unwrap_or("")
        .contains("needs --otp"));
    let findings = v["findings"].as_array().expect("findings");
    assert!(!findings.iter().any(|f| f["check"]
        .as_str()
        .unwrap_or("")
        .starts_with("trusted-publisher")));

    // With the OTP: D1 fails on the package without a trusted publisher, D2 on the unbound one.
    let out = run(dir.path(), &["audit", "--otp", "654321"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("D1  FAIL"), "{text}");
    assert!(text.contains("D2  FAIL"), "{text}");
    assert!(
        text.contains("[warning] trusted-publisher-missing: "),
        "{text}"
    );
    assert!(text.contains("@acme/b"), "{text}");
    assert!(
        text.contains("[warning] trusted-publisher-unbound: "),
        "{text}"
    );
    assert!(text.contains("circleci org 0f0e project 1a1b"), "{text}");
    let trust_reads = reg.requests_to("/-/package/");
    assert!(trust_reads
        .iter()
        .any(|r| r.header("npm-otp") == Some("654321")));
}

/// npm keeps adding trusted-publishing providers. A configuration of a type this version does not
/// know, or one with an odd entry, is a configured trusted publisher (D1) whose binding cannot be
/// judged (D2 UNVERIFIED, naming it), and the other packages are judged as usual.
#[tokio::test(flavor = "multi_thread")]
async fn audit_names_trust_configurations_it_does_not_understand() {
    let (reg, dir) = hardening_setup().await;
    let bound = |repo: &str| {
        json!([{"id": format!("t-{repo}"), "type": "github", "environment": "npm",
                "claims": {"repository": format!("acme/{repo}"), "workflow_ref": {"file": "release.yml"}}}])
    };
    reg.set_trust(
        "@acme/a",
        json!([{"id": "t-bk", "type": "buildkite", "claims": {"organization_slug": "acme"}}]),
    );
    reg.set_trust("@acme/b", bound("b"));
    reg.set_trust("@acme/c", json!([{"id": "t-odd"}]));
    reg.set_valid_otps(["654321"]);
    let out = run(
        dir.path(),
        &["audit", "--otp", "654321", "--format", "json"],
    )
    .await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["dod"][0]["status"], "PASS", "{}", v["dod"][0]);
    assert_eq!(v["dod"][1]["status"], "UNVERIFIED", "{}", v["dod"][1]);
    let evidence: Vec<&str> = v["dod"][1]["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        evidence,
        [
            "@acme/a: a trusted publisher of type `buildkite`, which this version of npm-watchdog \
             does not know; its binding cannot be judged",
            "@acme/c: a trusted publisher of type `?`, which this version of npm-watchdog does not \
             know; its binding cannot be judged",
        ]
    );
    assert!(!v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .any(|f| f["check"] == "trusted-publisher-unbound"));
}

/// Trust reads run side by side after the first; once the code expires, the reads not yet sent are
/// not sent, and what was not read leaves D1 and D2 unverified instead of passing or failing.
#[tokio::test(flavor = "multi_thread")]
async fn audit_stops_reading_trust_once_the_otp_expires() {
    let (reg, dir) = hardening_setup().await;
    for name in ["@acme/a", "@acme/b", "@acme/c"] {
        reg.set_trust(
            name,
            json!([{"id": "t", "type": "github", "permissions": ["createPackage"],
                    "claims": {"repository": "acme/x", "workflow_ref": {"file": "release.yml"}, "environment": "npm"}}]),
        );
    }
    reg.set_valid_otps(["654321"]);
    // Accepted once: for the probe (@acme/a), then refused for @acme/b. With one read at a time,
    // @acme/c is never asked.
    reg.otp_uses_left(Some(1));
    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .args(["audit", "--otp", "654321", "--format", "json"])
        .env("NPM_CONFIG_USERCONFIG", dir.path().join("no-npmrc"))
        .env("NPM_WATCHDOG_REGISTRY__CONCURRENCY", "1")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run npm-watchdog");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let trust_paths: Vec<String> = reg
        .requests_to("/-/package/")
        .iter()
        .map(|r| r.path_and_query.clone())
        .collect();
    assert_eq!(
        trust_paths,
        ["/-/package/@acme%2fa/trust", "/-/package/@acme%2fb/trust"]
    );
    let d1 = &v["dod"][0];
    assert_eq!(d1["status"], "UNVERIFIED", "{d1}");
    let evidence = d1["evidence"].to_string();
    assert!(evidence.contains("@acme/a: github"), "{evidence}");
    for name in ["@acme/b", "@acme/c"] {
        assert!(
            evidence.contains(&format!("{name}: unverified: needs --otp")),
            "{evidence}"
        );
    }
    assert_eq!(v["dod"][1]["status"], "UNVERIFIED", "{}", v["dod"][1]);
    // Off a terminal no fresh code can be asked for: the audit says so and exits with its own code.
    assert_eq!(out.status.code(), Some(3));
    let stopped = v["stopped"].as_str().expect("the stop is in the report");
    assert!(
        stopped.starts_with(
            "reading trust configurations stopped: the registry refused the one-time password"
        ) && stopped.ends_with("2 package(s) were not read (UNVERIFIED in D1 and D2)"),
        "{stopped}"
    );
}

/// D3 from the CI providers: PASS on a complete read without npm tokens, UNVERIFIED naming the list
/// that could not be read (never PASS on a partial read), FAIL with the secret as evidence.
#[tokio::test(flavor = "multi_thread")]
async fn audit_judges_d3_from_the_ci_secrets() {
    let ci = fake_ci::FakeCi::start().await;
    ci.add_github_repo("acme/widget", false);
    ci.add_github_repo_secret(
        "acme/widget",
        "DEPLOY_KEY",
        fake_ci::DEFAULT_TIME,
        fake_ci::DEFAULT_TIME,
    );
    ci.add_github_repo("acme/cli", false);
    let extra = format!(
        "[[ci.github]]\ntoken_file = \"{}\"\napi_url = \"{}\"\nrepos = [\"acme/widget\", \"acme/cli\"]\n",
        "GITHUB_TOKEN_FILE",
        ci.github_url()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("github-token");
    std::fs::write(&token_file, fake_ci::GITHUB_TOKEN).expect("write");
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let (_reg, dir) = setup(
        vec![],
        &extra.replace("GITHUB_TOKEN_FILE", &token_file.display().to_string()),
    )
    .await;
    let d3 = |out: &Output| -> Value {
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        v["dod"][2].clone()
    };

    let out = run(dir.path(), &["audit", "--format", "json"]).await;
    let row = d3(&out);
    assert_eq!(row["id"], "D3");
    assert_eq!(row["status"], "PASS", "{row}");
    let evidence = row["evidence"].to_string();
    assert!(
        evidence.contains("github: 6 secret list(s) read, 1 secret(s), none an npm token"),
        "{evidence}"
    );

    // One repository the token cannot read: unverified, saying which and why.
    ci.deny_github("/repos/acme/cli/environments", 403);
    let out = run(dir.path(), &["audit", "--format", "json"]).await;
    let row = d3(&out);
    assert_eq!(row["status"], "UNVERIFIED", "{row}");
    assert_eq!(
        row["evidence"][0],
        "some CI secret lists could not be read:"
    );
    assert_eq!(
        row["evidence"][1],
        "ci.github[0]: GitHub environments of repository acme/cli: environments: 403 forbidden: Resource not accessible by personal access token (the token lacks the permission to read this)"
    );

    // An npm token in the readable repository fails D3 and the audit, whatever else is unread.
    ci.add_github_repo_secret(
        "acme/widget",
        "NPM_TOKEN",
        fake_ci::DEFAULT_TIME,
        fake_ci::DEFAULT_TIME,
    );
    let out = run(dir.path(), &["audit", "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let row = d3(&out);
    assert_eq!(row["status"], "FAIL", "{row}");
    assert_eq!(row["evidence"][0], "npm tokens kept in CI:");
    assert!(
        row["evidence"][1].as_str().unwrap_or("").starts_with(
            "CI secret NPM_TOKEN in GitHub Actions secrets of repository acme/widget: "
        ),
        "{row}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .any(|f| f["check"] == "ci-npm-secret" && f["severity"] == "critical"));
    let all =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    testkit::secrets::assert_absent(&[fake_ci::GITHUB_TOKEN], [("audit's output", &all)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_asks_the_running_daemon() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let (_reg, dir) = setup(vec![], &format!("[server]\nlisten = \"0.0.0.0:{port}\"\n")).await;
    let out = run(dir.path(), &["healthcheck"]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "nothing listens yet: {}",
        stdout(&out)
    );
    assert!(stdout(&out).starts_with(&format!("unhealthy: http://127.0.0.1:{port}/healthz")));

    let daemon = Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .arg("run")
        .env("NPM_CONFIG_USERCONFIG", dir.path().join("no-npmrc"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start daemon");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = run(dir.path(), &["healthcheck"]).await;
        if out.status.code() == Some(0) {
            assert_eq!(
                stdout(&out),
                format!("ok: http://127.0.0.1:{port}/healthz answered 200\n")
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never healthy: {}",
            stdout(&out)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(daemon);
}

/// The key npmjs.com lists a token under: the SHA-512 of its value.
fn registry_key_of(secret: &str) -> String {
    use sha2::{Digest, Sha512};
    hex::encode(Sha512::digest(secret.as_bytes()))
}

/// `tokens` and `audit` recognise the credential they run with by its SHA-512 key: marked in the
/// table and the JSON, one finding that says to allowlist it, D5 failing until that is done.
#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_audit_mark_the_daemons_own_credential() {
    let own_key = registry_key_of(TOKEN);
    let own_id = &own_key[..6];
    let (_reg, dir) = setup(vec![token(&own_key, "watchdog", false, true)], "").await;

    let out = run(dir.path(), &["tokens"]).await;
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.starts_with(own_id))
        .unwrap_or_else(|| panic!("no row for {own_id}:\n{text}"));
    assert!(
        row.ends_with("warning: token-present (npm-watchdog's own credential)"),
        "{text}"
    );
    let out = run(dir.path(), &["tokens", "--format", "json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[0]["own"], true);
    assert_eq!(v[0]["allowlisted"], false);

    let out = run(dir.path(), &["audit", "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("audit json");
    assert_eq!(v["dod"][4]["status"], "FAIL");
    let evidence = v["dod"][4]["evidence"][0].as_str().unwrap_or("");
    assert!(
        evidence.ends_with("; npm-watchdog's own credential: allowlist it with an expiry)"),
        "{evidence}"
    );
    let findings = v["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["check"], "token-present");
    assert!(findings[0]["summary"]
        .as_str()
        .unwrap_or("")
        .starts_with("This is npm-watchdog's own credential"));

    // Allowlisted as the fix says: D5 passes and the row is still marked.
    let (_reg2, dir2) = setup(
        vec![token(&own_key, "watchdog", false, true)],
        &format!(
            "[policy]\nallow_tokens = [{{ key_prefix = \"{own_id}\", reason = \"npm-watchdog's own credential\", expires = \"2099-01-31\" }}]\n"
        ),
    )
    .await;
    let out = run(dir2.path(), &["tokens"]).await;
    assert!(
        stdout(&out).contains("allowlisted (npm-watchdog's own credential)"),
        "{}",
        stdout(&out)
    );
    let out = run(dir2.path(), &["audit"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("D5  PASS"), "{}", stdout(&out));
}

/// With nothing configured but the npm user config, the daemon and `audit` watch the packages of the
/// account the credential belongs to: a version published with a token after the cutoff is alerted
/// and scored without any watch list written.
#[tokio::test(flavor = "multi_thread")]
async fn zero_config_watches_the_packages_of_the_credentials_own_account() {
    use fake_registry::packument_doc;
    let reg = FakeRegistry::start().await;
    reg.set_tokens(vec![]);
    reg.set_username("alice");
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));
    reg.set_user_packages("alice", [("left-pad-acme", "write")]);
    reg.add_packument(
        "left-pad-acme",
        packument_doc(
            "left-pad-acme",
            &[
                (
                    "1.0.0",
                    "2026-02-01T00:00:00.000Z",
                    Some("github"),
                    "GitHub Actions",
                ),
                ("1.0.1", "2026-11-20T00:00:00.000Z", None, "alice"),
            ],
            &["alice"],
        ),
    );
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        home.path().join(".npmrc"),
        format!(
            "registry={}\n//127.0.0.1:{}/:_authToken={TOKEN}\n",
            reg.url,
            reg.port()
        ),
    )
    .expect("npmrc");
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let zero_config = |args: &[&str]| {
        let mut c = zero_config(home.path(), args);
        // Only the port: another test holds the default one.
        c.env("NPM_WATCHDOG_SERVER__LISTEN", listen.to_string());
        c
    };

    let out = zero_config(&["audit"]).output().await.expect("audit");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("1 package(s) watched"), "{text}");
    assert!(text.contains("D4  FAIL"), "{text}");
    assert!(!text.contains("no package is watched"), "{text}");
    assert!(
        text.contains("[critical] publish-untrusted: version left-pad-acme@1.0.1"),
        "{text}"
    );

    let out = zero_config(&["config", "check"])
        .output()
        .await
        .expect("check");
    assert!(
        stdout(&out).contains(
            "# watching: tokens, the packages of the credential's own account (watch.own_account)"
        ),
        "{}",
        stdout(&out)
    );

    let child = zero_config(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    wait_ready(&reqwest::Client::new(), &listen.to_string()).await;
    let out = terminate(child).await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("the packages of the credential's own account (watch.own_account)"),
        "{log}"
    );
    assert!(
        log.contains("account=alice")
            && log.contains("watching the packages of the account the credential belongs to"),
        "{log}"
    );
    assert!(
        log.contains("[FIRING:critical] publish-untrusted: version left-pad-acme@1.0.1"),
        "{log}"
    );
    testkit::secrets::assert_absent(&[TOKEN], [("the log", &log)]);
}

/// One watched package, a daemon's port of its own, and the OTP `123456` accepted: what the state
/// lock tests start daemons and `harden` on. Returns the listen address too.
async fn lock_setup() -> (FakeRegistry, tempfile::TempDir, String) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let (reg, dir) = setup(
        vec![],
        &format!("[watch]\npackages = [\"@acme/a\"]\n[server]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .await;
    let release = (
        "1.0.0",
        "2026-02-01T00:00:00.000Z",
        Some("github"),
        "GitHub Actions",
    );
    reg.add_packument(
        "@acme/a",
        fake_registry::packument_doc("@acme/a", &[release], &["alice"]),
    );
    reg.set_valid_otps(["123456"]);
    (reg, dir, format!("127.0.0.1:{port}"))
}

/// `npm-watchdog run` on the config in `dir`, its log piped.
fn start_daemon(dir: &Path) -> tokio::process::Child {
    Command::new(BIN)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .arg("run")
        .env("NPM_CONFIG_USERCONFIG", dir.join("no-npmrc"))
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start daemon")
}

/// What a second process is told while a daemon with `pid` holds the state in `dir`.
/// A daemon on `dir`'s state starts, writes its pid into the lock file, and stops cleanly.
async fn starts_holding_the_lock(dir: &Path, client: &reqwest::Client, addr: &str) {
    let daemon = start_daemon(dir);
    let pid = daemon.id().expect("pid");
    wait_ready(client, addr).await;
    assert_eq!(
        std::fs::read_to_string(dir.join("state.db.lock")).expect("lock file"),
        format!("{pid}\n")
    );
    let out = terminate(daemon).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

fn held_message(dir: &Path, pid: u32) -> String {
    let db = dir.join("state.db");
    format!(
        "npm-watchdog: state database {} is in use by another npm-watchdog (pid {pid}; lock file {}.lock): stop it first, or give this one its own state.path",
        db.display(),
        db.display()
    )
}

/// One daemon per state file: a second `run` on the same state exits 2 at once naming the first
/// one's pid and the lock file, `harden` refuses the same way and changes nothing, and once the first
/// daemon has stopped both work again.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_or_harden_on_the_same_state_exits_2_naming_the_holder() {
    let (reg, dir, addr) = lock_setup().await;
    let client = reqwest::Client::new();
    let first = start_daemon(dir.path());
    let pid = first.id().expect("pid");
    wait_ready(&client, &addr).await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("state.db.lock")).expect("lock file"),
        format!("{pid}\n")
    );

    let second = tokio::time::timeout(Duration::from_secs(10), run(dir.path(), &["run"]))
        .await
        .expect("a second daemon exits at once instead of waiting");
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(err.contains(&held_message(dir.path(), pid)), "{err}");
    assert!(
        !err.contains("npm-watchdog starting"),
        "it stops before starting anything: {err}"
    );

    let harden = tokio::time::timeout(
        Duration::from_secs(10),
        run(
            dir.path(),
            &[
                "harden",
                "--otp",
                "123456",
                "--write-token-file",
                &token_file(&dir),
            ],
        ),
    )
    .await
    .expect("harden exits at once");
    let err = stderr(&harden);
    assert_eq!(harden.status.code(), Some(2), "{err}");
    assert!(err.contains(&held_message(dir.path(), pid)), "{err}");
    assert!(stdout(&harden).is_empty(), "{}", stdout(&harden));
    assert!(
        reg.access_posts().is_empty(),
        "a refused harden changes nothing"
    );

    // Read-only commands and a dry run do not need the lock.
    let out = run(dir.path(), &["harden", "--otp", "123456", "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(dir.path(), &["tokens"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // The first daemon is untouched by all this.
    let ready = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    let out = terminate(first).await;
    assert!(out.status.success(), "{}", stderr(&out));

    let harden = run(
        dir.path(),
        &[
            "harden",
            "--otp",
            "123456",
            "--write-token-file",
            &token_file(&dir),
        ],
    )
    .await;
    assert_eq!(harden.status.code(), Some(0), "{}", stderr(&harden));
    assert_eq!(reg.access_posts().len(), 1);

    starts_holding_the_lock(dir.path(), &client, &addr).await;
}

/// The lock is the kernel's, not the file's: a daemon killed with SIGKILL leaves its lock file (and
/// its pid in it) behind, and the next start takes the lock anyway.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_daemon_leaves_no_lock_that_blocks_the_next_start() {
    let (_reg, dir, addr) = lock_setup().await;
    let client = reqwest::Client::new();
    let mut first = start_daemon(dir.path());
    let pid = first.id().expect("pid");
    wait_ready(&client, &addr).await;
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), first.wait())
        .await
        .expect("dies")
        .expect("status");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("state.db.lock")).expect("lock file left behind"),
        format!("{pid}\n")
    );

    starts_holding_the_lock(dir.path(), &client, &addr).await;
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A token file or a sink's secret file that group or others can open is a warning in `config
/// check` (exit unchanged), a problem under `--strict` (exit 2), and nothing at all once it is
/// 0600. The tests run as root, who can open any file: the mode is what is inspected, not access.
#[tokio::test(flavor = "multi_thread")]
async fn config_check_warns_about_secret_files_others_can_read_and_strict_refuses_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook_key = dir.path().join("hook-key");
    std::fs::write(&hook_key, "k3y\n").expect("hook key");
    let (_reg, dir) = setup(
        vec![],
        &format!(
            "[[alerts.webhook]]\nurl = \"https://hooks.example.com/a\"\nsecret_file = \"{}\"\n",
            hook_key.display()
        ),
    )
    .await;
    let token = dir.path().join("token");
    chmod(&token, 0o644);
    chmod(&hook_key, 0o640);
    let token_line = format!(
        "registry.token_file: {} is readable by group and others (mode 0644); chmod go-rwx it",
        token.display()
    );
    let hook_line = format!(
        "alerts.webhook[0].secret_file: {} is readable by group (mode 0640); chmod go-rwx it",
        hook_key.display()
    );

    let out = run(dir.path(), &["config", "check"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("# WARNING: {token_line}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("# WARNING: {hook_line}\n")),
        "{text}"
    );
    testkit::secrets::assert_absent(&["k3y"], [("config check's output", &text)]);

    let out = run(dir.path(), &["config", "check", "--strict"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!("# PROBLEM: {token_line}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("# PROBLEM: {hook_line}\n")),
        "{text}"
    );
    assert!(!text.contains("# WARNING"), "{text}");

    chmod(&token, 0o600);
    chmod(&hook_key, 0o400);
    for args in [&["config", "check"][..], &["config", "check", "--strict"]] {
        let out = run(dir.path(), args).await;
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {text}");
        assert!(!text.contains("# WARNING"), "{args:?}: {text}");
        assert!(!text.contains("# PROBLEM"), "{args:?}: {text}");
    }
}

/// `config check` lists each CI provider and treats its token file as it does every secret file: missing
/// or empty is a problem, too open a warning; the token itself is never printed.
#[tokio::test(flavor = "multi_thread")]
async fn config_check_lists_ci_sources_and_checks_their_token_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let github = dir.path().join("github-token");
    std::fs::write(&github, "gh-token-never-printed\n").expect("token");
    let missing = dir.path().join("no-such-gitlab-token");
    let (_reg, dir) = setup(
        vec![],
        &format!(
            "[[ci.github]]\ntoken_file = \"{}\"\nrepos = [\"acme/widget\"]\norgs = [\"acme\"]\n\n\
             [[ci.gitlab]]\ntoken_file = \"{}\"\napi_url = \"https://gitlab.example.com/api/v4\"\ngroups = [\"acme\"]\n",
            github.display(),
            missing.display()
        ),
    )
    .await;
    chmod(&github, 0o644);
    let out = run(dir.path(), &["config", "check"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(
            "# ci: ci.github[0] at https://api.github.com/: repositories acme/widget; orgs acme\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("# ci: ci.gitlab[0] at https://gitlab.example.com/api/v4: groups acme\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "# WARNING: ci.github[0].token_file: {} is readable by group and others (mode 0644); chmod go-rwx it\n",
            github.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "# PROBLEM: ci.gitlab[0].token_file: {}: entity not found\n",
            missing.display()
        )),
        "{text}"
    );
    testkit::secrets::assert_absent(
        &["gh-token-never-printed"],
        [("config check's output", &text)],
    );
}

/// `run --strict` with a token file others can read exits 2 naming it, before it opens or locks the
/// state; without `--strict` the daemon starts and logs one warning naming the key, path and mode.
#[tokio::test(flavor = "multi_thread")]
async fn run_warns_about_a_too_open_token_file_and_strict_refuses_to_start() {
    let (_reg, dir, addr) = lock_setup().await;
    let token = dir.path().join("token");
    chmod(&token, 0o644);
    let line = format!(
        "registry.token_file: {} is readable by group and others (mode 0644); chmod go-rwx it",
        token.display()
    );

    let out = run(dir.path(), &["run", "--strict"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim(),
        format!("npm-watchdog: refusing to start (--strict): {line}")
    );
    assert!(!dir.path().join("state.db").exists());
    assert!(!dir.path().join("state.db.lock").exists());

    let daemon = start_daemon(dir.path());
    wait_ready(&reqwest::Client::new(), &addr).await;
    let out = terminate(daemon).await;
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    let warning = log
        .lines()
        .find(|l| l.contains(&line))
        .unwrap_or_else(|| panic!("no warning naming the token file:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("mode=0644"), "{warning}");
    testkit::secrets::assert_absent(&[TOKEN], [("the log", &log)]);
}

/// A registry time `days` from now: fixtures' tokens stay live (an expired token is not judged)
/// with a 49-day lifetime, within `policy.token_max_lifetime`.
fn days_from_now(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The test account's token file, as `harden --write-token-file` takes it (where the fake's token
/// can write).
fn token_file(dir: &tempfile::TempDir) -> String {
    dir.path().join("token").display().to_string()
}
