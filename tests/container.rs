//! The container image, built from the Dockerfile and run with podman (Debian's podman and runc).
//!
//! Base images cannot be pulled where this is tested, and nothing here may leave the machine, so:
//! - the runtime base (the Dockerfile's last `FROM`, distroless cc) is a stand-in made from this
//!   machine's Debian packages by `scripts/make-standin-base.sh` and imported under that exact name
//!   (a real copy already in podman's storage is used as it is);
//! - only the runtime stage is built (`--target`), with `--pull=never`, and the build stage that it
//!   copies the binary from is replaced by a build context of that name (`--build-context build=DIR`)
//!   holding the binary `cargo test` built for these tests ([`shipped_binary`]): no compiler runs in a
//!   container and nothing is built twice;
//! - the container reaches the in-process fake registry on the host's loopback through slirp4netns
//!   (`allow_host_loopback`: 10.0.2.2 in the container is 127.0.0.1 on the host), and its port is
//!   published on 127.0.0.1 only. Host networking would also stay on loopback, but the image listens
//!   on every address (0.0.0.0:9858), which with `--network host` would be every address of the host.
//!
//! It is run as the README shows: `--read-only` (without podman's extra tmpfs mounts, so as
//! `docker run --read-only`), a named state volume, the token as a read-only file at
//! `/run/secrets/npm-token`, the config at `/etc/npm-watchdog/config.toml`. Then: the image's
//! HEALTHCHECK passes (`podman healthcheck run`), a token added on the registry is alerted in the
//! log, `podman restart` keeps the state (no second alert, the token's first sighting unchanged),
//! `podman stop` ends it with exit 0 well within its 10 s grace, and the token never shows in the
//! logs. Everything it creates (container, volume, image, the stand-in base if it made it) is removed
//! at the end, also when it fails.
//!
//! Needs root (rootful podman), podman, runc, slirp4netns and python3 (to read the state file); a
//! missing one fails the test, it is never skipped. `scripts/install-peers.sh` installs them.

use testkit::fake_registry;
use testkit::peers;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fake_registry::{FakeRegistry, TOKEN};
use peers::{
    bin_on_path, free_port, http, metric_in, podman, podman_ok, require_podman, wait_until,
    PodmanCleanup,
};
use serde_json::{json, Value};

/// The image's user (distroless `nonroot`).
const IMAGE_UID: u32 = 65532;
/// The port the image listens on (its `EXPOSE`).
const IMAGE_PORT: u16 = 9858;
/// slirp4netns's address for the host's loopback, with `allow_host_loopback=true`.
const HOST_LOOPBACK_FROM_CONTAINER: &str = "10.0.2.2";
/// The key of the token that "appears" on the account during the test.
const NEW_TOKEN_KEY: &str = "c0ffee00-1111-4222-8333-444455556666";
/// `podman stop`'s grace before SIGKILL, and the bound the stop must stay under.
const STOP_GRACE_SECS: u64 = 10;
const WAIT: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary `cargo test` built for these tests; see tests/packaging.rs.
fn shipped_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_npm-watchdog"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn epoch_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// The Dockerfile's instructions (comments dropped, continuation lines joined), as `(KEYWORD, args)`.
fn dockerfile() -> Vec<(String, String)> {
    let src = std::fs::read_to_string(root().join("Dockerfile")).expect("read Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in src.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head.trim());
                current.push(' ');
            }
            None => {
                current.push_str(t);
                let whole = std::mem::take(&mut current);
                let (kw, args) = whole
                    .split_once(char::is_whitespace)
                    .unwrap_or((&whole, ""));
                out.push((kw.to_ascii_uppercase(), args.trim().to_string()));
            }
        }
    }
    out
}

/// What the runtime stage is built from: its base image, its stage name (for `--target`), the stage
/// its `COPY --from` names and the paths it copies from there.
struct RuntimeStage {
    base: String,
    name: String,
    from_stage: String,
    copied: Vec<String>,
}

fn runtime_stage() -> RuntimeStage {
    let all = dockerfile();
    let at = all.iter().rposition(|(k, _)| k == "FROM").expect("a FROM");
    let words: Vec<&str> = all[at]
        .1
        .split_whitespace()
        .filter(|w| !w.starts_with("--"))
        .collect();
    let (base, name) = match words.as_slice() {
        [base, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => (base, name),
        _ => panic!(
            "the runtime stage needs a name (`FROM <image> AS <name>`) to be built with --target: {:?}",
            all[at]
        ),
    };
    let mut from_stage = None;
    let mut copied = Vec::new();
    for (_, args) in all[at..].iter().filter(|(k, _)| k == "COPY") {
        let Some(stage) = args
            .split_whitespace()
            .find_map(|w| w.strip_prefix("--from="))
        else {
            panic!("the runtime stage copies from its build context ({args}); this test supplies only the build stage");
        };
        assert!(
            from_stage.is_none_or(|s: &str| s == stage),
            "the runtime stage copies from more than one stage"
        );
        from_stage = Some(stage);
        let paths: Vec<&str> = args
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        copied.extend(paths[..paths.len() - 1].iter().map(|p| p.to_string()));
    }
    RuntimeStage {
        base: base.to_string(),
        name: name.to_string(),
        from_stage: from_stage
            .expect("the runtime stage copies the binary from the build stage")
            .to_string(),
        copied,
    }
}

/// The build stage's output as the runtime stage copies it: `/out/npm-watchdog` (the test binary,
/// hard-linked when it can be) and `/out/state` (the state folder, 0700).
fn build_stage_stand_in(dir: &Path, stage: &RuntimeStage) {
    let out = dir.join("out");
    std::fs::create_dir_all(out.join("state")).expect("mkdir out/state");
    std::fs::set_permissions(out.join("state"), std::fs::Permissions::from_mode(0o700))
        .expect("chmod out/state");
    let bin = out.join("npm-watchdog");
    if std::fs::hard_link(shipped_binary(), &bin).is_err() {
        std::fs::copy(shipped_binary(), &bin).expect("copy the binary into the build context");
    }
    for p in &stage.copied {
        assert!(
            dir.join(p.trim_start_matches('/')).exists(),
            "the runtime stage copies {p} from the build stage, which this test does not provide"
        );
    }
}

/// Every line of the container's output so far (stdout and stderr, all starts).
fn logs(name: &str) -> String {
    let out = podman(&["logs", name]);
    assert!(
        out.status.success(),
        "podman logs {name}: {}",
        text(&out.stderr)
    );
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// The log sink's alert lines for `check`.
fn alerts(log: &str, check: &str) -> usize {
    let field = format!("check={check} ");
    log.lines()
        .filter(|l| l.contains("npm_watchdog::alert") && l.contains(&field))
        .count()
}

/// Runs the image's HEALTHCHECK until it passes; how long that took.
fn wait_healthy(name: &str, since: Instant) -> Duration {
    wait_until(&format!("{name} to pass its health check"), WAIT, || {
        let out = podman(&["healthcheck", "run", name]);
        out.status.success().then_some(())
    });
    let elapsed = since.elapsed();
    let status = podman_ok(&["inspect", "--format", "{{.State.Health.Status}}", name]);
    assert_eq!(status.trim(), "healthy", "{}", logs(name));
    elapsed
}

fn metrics(port: u16) -> Option<String> {
    match http(
        "GET",
        &format!("http://127.0.0.1:{port}/metrics"),
        None,
        None,
    ) {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

fn wait_metric_at_least(port: u16, series: &str, value: f64, name: &str) {
    let what = format!("{series} >= {value}");
    let started = Instant::now();
    loop {
        if metrics(port).and_then(|m| metric_in(&m, series)) >= Some(value) {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "timed out waiting for {what}; the container's log:\n{}",
            logs(name)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `(name, milliseconds since the epoch)` rows of the state file.
type Rows = Vec<(String, i64)>;

/// `(key, first_seen)` of the seen tokens and `(check, first_seen)` of the active findings, read from
/// the state file with Python's sqlite3 (read-only; the container is stopped by then).
fn read_state(db: &Path) -> (Rows, Rows) {
    bin_on_path("python3", "python3");
    const READ: &str = r#"
import json, sqlite3, sys
c = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
print(json.dumps({
    "seen": c.execute("SELECT key, first_seen FROM seen_tokens ORDER BY key").fetchall(),
    "findings": c.execute("SELECT check_id, first_seen FROM findings ORDER BY check_id").fetchall(),
}))
"#;
    let out = Command::new("python3")
        .args(["-c", READ])
        .arg(db)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "reading {}: {}",
        db.display(),
        text(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let pairs = |k: &str| -> Rows {
        v[k].as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r[0].as_str().expect("text").to_string(),
                    r[1].as_i64().expect("integer"),
                )
            })
            .collect()
    };
    (pairs("seen"), pairs("findings"))
}

/// Holds an exclusive lock on a file in the temporary folder while the test runs: the stand-in base is
/// shared under one name in podman's storage, so two runs of this test on one machine take turns.
fn machine_lock() -> std::fs::File {
    let path = std::env::temp_dir().join("npm-watchdog-container-test.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_builds_runs_read_only_detects_a_token_and_keeps_its_state_across_a_restart() {
    let test_started = Instant::now();
    let uid = Command::new("id").arg("-u").output().expect("run id");
    assert_eq!(
        text(&uid.stdout).trim(),
        "0",
        "this test must run as root: it runs rootful podman"
    );
    require_podman();
    let _lock = machine_lock();
    let mut cleanup = PodmanCleanup::default();
    let unique = format!("{}-{}", std::process::id(), epoch_millis());
    let image = format!("localhost/npm-watchdog-test:{unique}");
    let name = format!("npm-watchdog-test-{unique}");
    let volume = format!("npm-watchdog-test-state-{unique}");

    // --- the fake registry: no tokens yet, 2FA on -------------------------------------------------
    let reg = FakeRegistry::start().await;
    reg.set_tokens(vec![]);
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));

    // --- the image ---------------------------------------------------------------------------------
    let stage = runtime_stage();
    let made = Command::new(root().join("scripts/make-standin-base.sh"))
        .arg(&stage.base)
        .output()
        .expect("run scripts/make-standin-base.sh");
    assert!(
        made.status.success(),
        "scripts/make-standin-base.sh {} failed:\n{}",
        stage.base,
        text(&made.stderr)
    );
    if text(&made.stdout).lines().last() == Some("created") {
        cleanup.image(&stage.base);
    }

    let work = tempfile::Builder::new()
        .prefix("container-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir");
    let build_ctx = work.path().join("build-stage");
    build_stage_stand_in(&build_ctx, &stage);
    let build_started = Instant::now();
    cleanup.image(&image);
    podman_ok(&[
        "build".to_string(),
        "--pull=never".into(),
        // Docker's image format: OCI's has no HEALTHCHECK.
        "--format=docker".into(),
        "--layers=false".into(),
        format!("--target={}", stage.name),
        format!(
            "--build-context={}={}",
            stage.from_stage,
            build_ctx.display()
        ),
        format!("--tag={image}"),
        format!("--file={}", root().join("Dockerfile").display()),
        root().display().to_string(),
    ]);
    let build_time = build_started.elapsed();
    let image_size: u64 = podman_ok(&["image", "inspect", "--format", "{{.Size}}", &image])
        .trim()
        .parse()
        .expect("image size");
    let health = podman_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .HealthCheck}}",
        &image,
    ]);
    let health: Value = serde_json::from_str(&health).expect("HealthCheck JSON");
    assert_eq!(
        health["Test"],
        json!(["CMD", "npm-watchdog", "healthcheck"]),
        "the image's HEALTHCHECK is the binary's own verb"
    );
    let user = podman_ok(&["image", "inspect", "--format", "{{.Config.User}}", &image]);
    assert_eq!(user.trim(), format!("{IMAGE_UID}:{IMAGE_UID}"));

    // --- what the container is given: the secret, the config, a state volume -----------------------
    let secret = work.path().join("npm-token");
    std::fs::write(&secret, format!("{TOKEN}\n")).expect("write the secret");
    std::os::unix::fs::chown(&secret, Some(IMAGE_UID), Some(IMAGE_UID)).expect("chown secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    let config = work.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "# The fake registry on the host's loopback, as slirp4netns shows it to the container.\n\
             [registry]\nurl = \"http://{HOST_LOOPBACK_FROM_CONTAINER}:{}/\"\nretries = 0\n\n\
             [watch]\nown_account = false\n\n[schedule]\ntokens = \"1s\"\n",
            reg.port()
        ),
    )
    .expect("write the config");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    cleanup.volume(&volume);
    podman_ok(&["volume", "create", &volume]);

    // --- run ---------------------------------------------------------------------------------------
    let port = free_port();
    cleanup.container(&name);
    let run_started = Instant::now();
    podman_ok(&[
        "run".to_string(),
        "--detach".into(),
        format!("--name={name}"),
        "--read-only".into(),
        // podman adds tmpfs on /run, /tmp and /var/tmp to a read-only root unless told not to;
        // `docker run --read-only` does not.
        "--read-only-tmpfs=false".into(),
        "--ulimit=nofile=1024:1024".into(),
        "--ulimit=nproc=1000:1000".into(),
        "--network=slirp4netns:allow_host_loopback=true".into(),
        format!("--publish=127.0.0.1:{port}:{IMAGE_PORT}"),
        format!("--volume={volume}:/var/lib/npm-watchdog"),
        format!("--volume={}:/run/secrets/npm-token:ro", secret.display()),
        format!(
            "--volume={}:/etc/npm-watchdog/config.toml:ro",
            config.display()
        ),
        image.clone(),
    ]);
    let to_healthy = wait_healthy(&name, run_started);
    let readonly = podman_ok(&[
        "inspect",
        "--format",
        "{{.HostConfig.ReadonlyRootfs}}",
        &name,
    ]);
    assert_eq!(readonly.trim(), "true");
    let published = podman_ok(&["port", &name]);
    assert_eq!(
        published.trim(),
        format!("{IMAGE_PORT}/tcp -> 127.0.0.1:{port}"),
        "the port is published on the host's loopback only"
    );
    match http(
        "GET",
        &format!("http://127.0.0.1:{port}/healthz"),
        None,
        None,
    ) {
        Ok((200, _)) => {}
        other => panic!("/healthz through the published port: {other:?}"),
    }

    // The first token run reached the registry (through the host's loopback) and saw no token.
    wait_metric_at_least(
        port,
        "npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"}",
        1.0,
        &name,
    );
    assert_eq!(alerts(&logs(&name), "token-created"), 0, "{}", logs(&name));

    // --- a token appears on the account ------------------------------------------------------------
    let appeared = epoch_millis();
    let detect_started = Instant::now();
    reg.set_tokens(vec![json!({
        "name": "ci-publish", "key": NEW_TOKEN_KEY, "token": "npm_ab...yz", "cidr": null,
        "bypass_2fa": false, "created": "2026-11-26T00:00:00.000Z", "expiry": null,
        "permissions": [{"name": "package", "action": "write"}], "revoked": null
    })]);
    wait_until("a token-created alert in podman logs", WAIT, || {
        (alerts(&logs(&name), "token-created") > 0).then_some(())
    });
    let detect_time = detect_started.elapsed();
    wait_metric_at_least(
        port,
        "npm_watchdog_findings{check=\"token-present\",severity=\"warning\"}",
        1.0,
        &name,
    );
    assert_eq!(alerts(&logs(&name), "token-created"), 1, "{}", logs(&name));

    // --- restart: the state survives ---------------------------------------------------------------
    let before_restart = epoch_millis();
    let restart_started = Instant::now();
    podman_ok(&["restart", &name]);
    let restart_time = restart_started.elapsed();
    let restart_to_healthy = wait_healthy(&name, restart_started);
    // Right after the start, before any run: the active findings come from the state file.
    let after = metrics(port).expect("metrics after the restart");
    assert_eq!(
        metric_in(
            &after,
            "npm_watchdog_findings{check=\"token-present\",severity=\"warning\"}"
        ),
        Some(1.0),
        "{after}"
    );
    // Two token runs after the restart, then: still one token-created alert.
    wait_metric_at_least(
        port,
        "npm_watchdog_registry_requests_total{code=\"200\",endpoint=\"tokens\"}",
        2.0,
        &name,
    );
    let log = logs(&name);
    assert_eq!(
        log.matches("first cycle done").count(),
        2,
        "two starts:\n{log}"
    );
    assert_eq!(
        alerts(&log, "token-created"),
        1,
        "the restart forgot the token:\n{log}"
    );

    // --- stop ------------------------------------------------------------------------------------------
    let stop_started = Instant::now();
    podman_ok(&["stop", &format!("--time={STOP_GRACE_SECS}"), &name]);
    let stop_time = stop_started.elapsed();
    let exit = podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    let log = logs(&name);
    assert_eq!(exit.trim(), "0", "exit code after podman stop:\n{log}");
    assert!(
        stop_time < Duration::from_secs(STOP_GRACE_SECS),
        "podman stop took {stop_time:?}"
    );
    assert!(log.contains("SIGTERM received"), "{log}");

    // --- the logs: no secret, no write refused -----------------------------------------------------------
    let body = TOKEN.trim_start_matches("npm_");
    testkit::secrets::assert_absent(&[TOKEN, body], [("podman logs", &log)]);
    for bad in [
        "Read-only file system",
        "os error 30",
        "Permission denied",
        "os error 13",
    ] {
        assert!(!log.contains(bad), "the daemon hit `{bad}`:\n{log}");
    }

    // --- the state file on the volume ----------------------------------------------------------------
    let mountpoint = podman_ok(&["volume", "inspect", "--format", "{{.Mountpoint}}", &volume]);
    let db = Path::new(mountpoint.trim()).join("state.db");
    let meta = std::fs::metadata(&db).unwrap_or_else(|e| panic!("state.db on the volume: {e}"));
    assert_eq!(
        meta.uid(),
        IMAGE_UID,
        "state.db belongs to the image's user"
    );
    let (seen, findings) = read_state(&db);
    let first_seen = seen
        .iter()
        .find(|(k, _)| k == NEW_TOKEN_KEY)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("{NEW_TOKEN_KEY} not among the seen tokens: {seen:?}"));
    assert!(
        (appeared - 1000..before_restart).contains(&first_seen),
        "the token's first sighting ({first_seen}) is not from before the restart ({appeared}..{before_restart})"
    );
    let present = findings
        .iter()
        .find(|(c, _)| c == "token-present")
        .unwrap_or_else(|| panic!("no active token-present finding: {findings:?}"));
    assert!(
        present.1 < before_restart,
        "token-present was found anew after the restart: {findings:?}"
    );

    println!(
        "container figures: image {:.1} MB (stand-in base {}), build {:.1} s, run to healthy {:.2} s, \
         token detected in {:.2} s, podman restart {:.2} s (to healthy {:.2} s), podman stop {:.2} s, \
         test {:.1} s",
        image_size as f64 / 1e6,
        stage.base,
        build_time.as_secs_f64(),
        to_healthy.as_secs_f64(),
        detect_time.as_secs_f64(),
        restart_time.as_secs_f64(),
        restart_to_healthy.as_secs_f64(),
        stop_time.as_secs_f64(),
        test_started.elapsed().as_secs_f64(),
    );
    drop(cleanup);
}
