//! Shared support for end-to-end tests that drive real third-party peers:
//! Verdaccio (an npm registry), the real `npm` CLI, aiosmtpd (an SMTP server that
//! writes a Maildir), promtool (the Prometheus exposition linter), Prometheus and
//! Alertmanager servers, and amtool (Alertmanager's configuration checker).
//!
//! Use it from an integration test as `use testkit::peers;`.
//!
//! The peers are installed by `scripts/install-peers.sh` into `.peers/` at the repo
//! root (promtool, Prometheus, Alertmanager and amtool system-wide). A missing peer
//! is a test failure, never a skip.
//!
//! Everything here is blocking (it runs processes and short HTTP calls on their own
//! thread), so it is safe to call from plain `#[test]`s and from `#[tokio::test]`s.
//! Inside a tokio test, remember that a blocking wait also blocks that runtime's
//! thread: if the code under test runs on the same runtime, use
//! `#[tokio::test(flavor = "multi_thread")]` or [`wait_until_async`].

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

/// How long a peer may take to come up (Verdaccio needs a few seconds on 2 cores).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one HTTP call the harness itself makes.
const HTTP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_EVERY: Duration = Duration::from_millis(50);
const INSTALL_HINT: &str = "run scripts/install-peers.sh";

// ---------------------------------------------------------------------------
// General helpers
// ---------------------------------------------------------------------------

/// The `npm-watchdog` binary `cargo test` built beside the running test: test binaries live in
/// `target/<profile>/deps/`, the package's binaries one folder up. (Cargo tells an integration test
/// the path only at its own compile time, which a shared kit is not.)
pub fn daemon_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the running test's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("npm-watchdog"))
        .expect("a test binary sits in target/<profile>/deps");
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo test`, which builds the binary first",
        bin.display()
    );
    bin
}

/// The repository root (where the main Cargo.toml lives; the kit sits in its `testkit/` folder).
pub fn repo_root() -> PathBuf {
    let kit = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    kit.parent().map(Path::to_path_buf).unwrap_or(kit)
}

/// Where `scripts/install-peers.sh` puts the peers.
fn peers_dir() -> PathBuf {
    repo_root().join(".peers")
}

/// Returns `path` if it exists, otherwise panics telling how to install `what`.
fn require_peer(path: PathBuf, what: &str) -> PathBuf {
    if !path.exists() {
        panic!(
            "{what} is not installed (expected {}): {INSTALL_HINT}",
            path.display()
        );
    }
    path
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Calls `f` every 50 ms until it returns `Some`, and returns that value.
/// Panics, naming `what`, once `timeout` has passed.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Like [`wait_until`], but sleeps with tokio so the runtime keeps running other
/// tasks (e.g. the daemon under test) between polls.
pub async fn wait_until_async<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Kills a child process (if still there) and reaps it.
fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Panics with the peer's log if the child has exited.
fn assert_running(child: &mut Option<Child>, what: &str, log: impl FnOnce() -> String) {
    if let Some(c) = child.as_mut() {
        if let Ok(Some(status)) = c.try_wait() {
            panic!("{what} exited early with {status}; its log:\n{}", log());
        }
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Opens a log file for appending (restarts keep the earlier output).
fn append_log(path: &Path) -> (File, File) {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let err = out.try_clone().expect("clone log file handle");
    (out, err)
}

/// One HTTP call with the project's own HTTP client. It runs on a fresh thread
/// with its own runtime, so callers may be sync code or inside any tokio runtime.
/// Returns (status, body) or a transport error.
pub fn http(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
    let url = url.to_owned();
    let bearer = bearer.map(str::to_owned);
    let body = body.cloned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        rt.block_on(async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(HTTP_TIMEOUT)
                .build()
                .map_err(|e| format!("reqwest client: {e}"))?;
            let mut req = client.request(method, &url);
            if let Some(token) = bearer {
                req = req.bearer_auth(token);
            }
            if let Some(body) = body {
                req = req.json(&body);
            }
            let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
            let status = resp.status().as_u16();
            let text = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
            Ok((status, text))
        })
    })
    .join()
    .expect("HTTP helper thread panicked")
}

// ---------------------------------------------------------------------------
// Verdaccio
// ---------------------------------------------------------------------------

/// A real Verdaccio registry on 127.0.0.1 with its own storage in a temp dir.
pub struct Verdaccio {
    /// `http://127.0.0.1:PORT/` (with the trailing slash).
    pub url: String,
    pub port: u16,
    /// Holds config.yaml, storage/, htpasswd, verdaccio.log and an npm cache.
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

fn verdaccio_bin() -> PathBuf {
    require_peer(
        peers_dir().join("verdaccio/node_modules/.bin/verdaccio"),
        "Verdaccio",
    )
}

impl Verdaccio {
    /// Starts a fresh registry on a free port and waits until `GET /-/ping` is 200.
    pub fn start() -> Verdaccio {
        verdaccio_bin(); // fail early and loudly when it is not installed
        let dir = tempfile::Builder::new()
            .prefix("verdaccio-")
            .tempdir()
            .expect("temp dir for Verdaccio");
        let port = free_port();
        let root = dir.path();
        fs::create_dir_all(root.join("storage")).expect("create storage dir");
        fs::create_dir_all(root.join("npm-cache")).expect("create npm cache dir");
        // Paths are quoted as YAML strings; temp dirs have no quotes in them.
        let config = format!(
            r#"# Generated by the test harness (testkit/src/peers.rs).
storage: '{storage}'
auth:
  htpasswd:
    file: '{htpasswd}'
    max_users: 1000
uplinks: {{}}
packages:
  '@*/*':
    access: $all $authenticated
    publish: $authenticated
    unpublish: $authenticated
  '**':
    access: $all $authenticated
    publish: $authenticated
    unpublish: $authenticated
# The default allows 1000 user/token calls per 15 minutes; tests that poll may exceed it.
userRateLimit:
  windowMs: 1000
  max: 100000
listen: 127.0.0.1:{port}
log: {{ type: stdout, format: pretty-timestamped, level: http }}
"#,
            storage = root.join("storage").display(),
            htpasswd = root.join("htpasswd").display(),
        );
        fs::write(root.join("config.yaml"), config).expect("write config.yaml");
        let mut v = Verdaccio {
            url: format!("http://127.0.0.1:{port}/"),
            port,
            dir,
            child: None,
        };
        v.spawn();
        v
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("verdaccio.log")
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "Verdaccio is already running");
        let (out, err) = append_log(&self.log_path());
        let child = Command::new(verdaccio_bin())
            .arg("--config")
            .arg(self.dir.path().join("config.yaml"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn Verdaccio: {e}; {INSTALL_HINT}"));
        self.child = Some(child);
        let ping = format!("{}-/ping", self.url);
        let log = self.log_path();
        let what = format!("Verdaccio to answer GET {ping}");
        wait_until(&what, START_TIMEOUT, || {
            assert_running(&mut self.child, "Verdaccio", || read_lossy(&log));
            match http("GET", &ping, None, None) {
                Ok((200, _)) => Some(()),
                _ => None,
            }
        });
    }

    /// Kills the registry and reaps it. Idempotent.
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }

    /// Stops (if needed) and starts again on the same port with the same storage,
    /// so users, tokens, packages and session tokens survive.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Whether the registry process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Everything Verdaccio printed so far (all starts).
    pub fn log_text(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// Creates a user the way `npm adduser` does and returns its session token.
    pub fn add_user(&self, name: &str, password: &str) -> String {
        let id = format!("org.couchdb.user:{name}");
        let url = format!("{}-/user/{id}", self.url);
        let body = json!({
            "_id": id,
            "name": name,
            "password": password,
            "type": "user",
            "roles": [],
            "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        let (status, text) =
            http("PUT", &url, None, Some(&body)).unwrap_or_else(|e| panic!("add_user {name}: {e}"));
        if status != 201 {
            panic!("add_user {name}: PUT {url} answered {status}: {text}");
        }
        let parsed: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("add_user {name}: body is not JSON ({e}): {text}"));
        parsed["token"]
            .as_str()
            .unwrap_or_else(|| panic!("add_user {name}: no token in {text}"))
            .to_owned()
    }

    /// `//127.0.0.1:PORT/` — the npmrc key prefix for this registry.
    fn npmrc_prefix(&self) -> String {
        format!("//127.0.0.1:{}/", self.port)
    }

    /// Writes an npmrc that points at this registry with `token`.
    pub fn write_npmrc(&self, path: &Path, token: &str) {
        let text = format!(
            "registry={}\n{}:_authToken={token}\n",
            self.url,
            self.npmrc_prefix()
        );
        fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// The `_authToken` for this registry in an npmrc written by [`write_npmrc`].
    fn token_in_npmrc(&self, npmrc: &Path) -> String {
        let key = format!("{}:_authToken=", self.npmrc_prefix());
        let text =
            fs::read_to_string(npmrc).unwrap_or_else(|e| panic!("read {}: {e}", npmrc.display()));
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&key).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {key} line in {}", npmrc.display()))
    }

    /// `GET /-/npm/v1/tokens` with `bearer`; panics unless 200.
    fn list_tokens(&self, bearer: &str) -> Vec<Value> {
        let url = format!("{}-/npm/v1/tokens", self.url);
        let (status, text) =
            http("GET", &url, Some(bearer), None).unwrap_or_else(|e| panic!("{e}"));
        if status != 200 {
            panic!("GET {url} answered {status}: {text}");
        }
        let parsed: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {text}"));
        parsed["objects"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Verdaccio {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// The real npm CLI
// ---------------------------------------------------------------------------

/// A token made by `npm token create`: its secret and Verdaccio's key (the id
/// that `npm token revoke` and `DELETE /-/npm/v1/tokens/token/<key>` take).
#[derive(Debug, Clone)]
pub struct CreatedToken {
    pub token: String,
    pub key: String,
}

fn npm_command(v: &Verdaccio, npmrc: &Path, args: &[&str], cwd: &Path) -> Command {
    let mut cmd = Command::new("npm");
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .env("NPM_CONFIG_USERCONFIG", npmrc)
        // A private cache, so tests never touch the user's.
        .env("npm_config_cache", v.dir.path().join("npm-cache"))
        .env("npm_config_update_notifier", "false")
        .env("npm_config_fund", "false")
        .env("npm_config_audit", "false")
        .env("npm_config_noproxy", "127.0.0.1,localhost");
    cmd
}

/// Runs the real `npm` with `args` in `cwd`, using `npmrc` as the user config and a
/// private cache. Returns its output whatever the exit status.
pub fn npm(v: &Verdaccio, npmrc: &Path, args: &[&str], cwd: &Path) -> Output {
    npm_command(v, npmrc, args, cwd)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run npm ({e}): install Node.js/npm, then {INSTALL_HINT}")
        })
}

fn npm_ok(v: &Verdaccio, npmrc: &Path, args: &[&str]) -> Output {
    let out = npm(v, npmrc, args, v.dir.path());
    if !out.status.success() {
        panic!(
            "npm {} failed with {}\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Verdaccio's masked form of a token secret in token lists.
fn masked(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    let n = chars.len();
    let head: String = chars[..5.min(n)].iter().collect();
    let tail: String = chars[n.saturating_sub(5)..].iter().collect();
    format!("{head}...{tail}")
}

/// `npm token create --registry <url> --password <pw> --json [extra_args]` with the
/// session in `npmrc`. npm 11 prints no `key`; it is then found in the registry's
/// token list by the masked secret (and the creation time, should two masks collide).
pub fn npm_token_create(
    v: &Verdaccio,
    npmrc: &Path,
    password: &str,
    extra_args: &[&str],
) -> CreatedToken {
    let mut args = vec![
        "token",
        "create",
        "--registry",
        v.url.as_str(),
        "--password",
        password,
        "--json",
    ];
    args.extend_from_slice(extra_args);
    let out = npm_ok(v, npmrc, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let parsed: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "npm token create printed no JSON ({e})\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let token = parsed["token"]
        .as_str()
        .unwrap_or_else(|| panic!("npm token create: no token in {stdout}"))
        .to_owned();
    if let Some(key) = parsed["key"].as_str().filter(|k| !k.is_empty()) {
        return CreatedToken {
            token,
            key: key.to_owned(),
        };
    }
    let session = v.token_in_npmrc(npmrc);
    let mask = masked(&token);
    let created = parsed["created"].as_str();
    let listed = v.list_tokens(&session);
    let mut matches: Vec<&Value> = listed
        .iter()
        .filter(|o| o["token"].as_str() == Some(mask.as_str()))
        .collect();
    if matches.len() > 1 && created.is_some() {
        matches.retain(|o| o["created"].as_str() == created);
    }
    match matches.as_slice() {
        [one] => CreatedToken {
            token,
            key: one["key"]
                .as_str()
                .unwrap_or_else(|| panic!("token list entry without key: {one}"))
                .to_owned(),
        },
        _ => panic!(
            "cannot find the key of the new token (mask {mask}) among {} listed: {listed:?}",
            matches.len()
        ),
    }
}

/// `npm token revoke <id_or_key> --registry <url>` with the session in `npmrc`.
pub fn npm_token_revoke(v: &Verdaccio, npmrc: &Path, id_or_key: &str) {
    npm_ok(
        v,
        npmrc,
        &["token", "revoke", id_or_key, "--registry", v.url.as_str()],
    );
}

// ---------------------------------------------------------------------------
// aiosmtpd
// ---------------------------------------------------------------------------

/// A real SMTP server (aiosmtpd) on 127.0.0.1 that stores every message in a Maildir.
pub struct Smtp {
    pub port: u16,
    /// The Maildir (messages land in `new/`).
    pub maildir: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The aiosmtpd handler class (`-c`).
    handler: &'static str,
}

/// One message as stored by the SMTP server.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Decoded (RFC 2047) and unfolded.
    pub subject: String,
    /// Decoded addresses as `Name <addr>` or `addr`, joined by ", ".
    pub from: String,
    pub to: String,
    /// The decoded text/plain body.
    pub body: String,
    /// The whole stored file, including the `X-MailFrom`/`X-RcptTo` envelope headers.
    pub raw: String,
}

fn aiosmtpd_python() -> PathBuf {
    let py = require_peer(peers_dir().join("venv/bin/python"), "aiosmtpd's venv");
    require_peer(
        peers_dir().join("venv/bin/aiosmtpd"),
        "aiosmtpd (in .peers/venv)",
    );
    py
}

/// True once something on `addr` speaks SMTP (sends a 220 greeting).
fn smtp_greets(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let ok = BufReader::new(&stream).read_line(&mut line).is_ok() && line.starts_with("220");
    let _ = (&stream).write_all(b"QUIT\r\n");
    ok
}

impl Smtp {
    /// Starts aiosmtpd on a free port and waits for its SMTP greeting.
    pub fn start() -> Smtp {
        Self::start_with("aiosmtpd.handlers.Mailbox")
    }

    /// As [`start`](Self::start), but recipients named `refused…` get a permanent 550 and `later…` a
    /// transient 451 (`testkit/python/smtp_refusing.py`).
    pub fn start_refusing() -> Smtp {
        Self::start_with("smtp_refusing.RefusingMailbox")
    }

    fn start_with(handler: &'static str) -> Smtp {
        aiosmtpd_python();
        let dir = tempfile::Builder::new()
            .prefix("aiosmtpd-")
            .tempdir()
            .expect("temp dir for aiosmtpd");
        let maildir = dir.path().join("maildir");
        // Python's Maildir only makes tmp/new/cur when it makes the top folder
        // itself; an existing empty folder makes every delivery fail. Make all.
        for sub in ["tmp", "new", "cur"] {
            fs::create_dir_all(maildir.join(sub)).expect("create maildir");
        }
        let mut s = Smtp {
            port: free_port(),
            maildir,
            dir,
            child: None,
            handler,
        };
        s.spawn();
        s
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("aiosmtpd.log")
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "aiosmtpd is already running");
        let (out, err) = append_log(&self.log_path());
        let child = Command::new(aiosmtpd_python())
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", self.handler])
            .arg(&self.maildir)
            .current_dir(self.dir.path())
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONPATH", repo_root().join("testkit/python"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn aiosmtpd: {e}; {INSTALL_HINT}"));
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let log = self.log_path();
        let what = format!("aiosmtpd to greet on {addr}");
        wait_until(&what, START_TIMEOUT, || {
            assert_running(&mut self.child, "aiosmtpd", || read_lossy(&log));
            smtp_greets(addr).then_some(())
        });
    }

    /// Kills the server and reaps it. Idempotent.
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }

    /// Stops (if needed) and starts again on the same port and Maildir.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// What aiosmtpd printed so far (errors, tracebacks).
    pub fn log_text(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// Every stored message, oldest first (by file modification time, then name).
    /// Every received subject, in arrival order.
    pub fn subjects(&self) -> Vec<String> {
        self.messages().into_iter().map(|m| m.subject).collect()
    }

    /// How many received subjects start with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.subjects()
            .iter()
            .filter(|s| s.starts_with(prefix))
            .count()
    }

    /// Wait for a message whose subject starts with `prefix`; returns it and how long the wait took.
    pub fn wait_for(&self, prefix: &str, timeout: Duration) -> (Mail, Duration) {
        let started = Instant::now();
        let mail = wait_until(
            &format!("an email whose subject starts with {prefix:?}"),
            timeout,
            || {
                self.messages()
                    .into_iter()
                    .find(|m| m.subject.starts_with(prefix))
            },
        );
        (mail, started.elapsed())
    }

    pub fn messages(&self) -> Vec<Mail> {
        let mut files: Vec<(SystemTime, PathBuf)> = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = fs::read_dir(self.maildir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if let Ok(meta) = entry.metadata() {
                    if meta.is_file() {
                        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                        files.push((mtime, path));
                    }
                }
            }
        }
        files.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| a.1.file_name().cmp(&b.1.file_name()))
        });
        files
            .iter()
            .map(|(_, path)| parse_mail_file(path))
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop();
    }
}

fn render_addresses(addr: Option<&mail_parser::Address<'_>>) -> String {
    let Some(addr) = addr else {
        return String::new();
    };
    addr.iter()
        .map(|a| match (a.name(), a.address()) {
            (Some(name), Some(email)) => format!("{name} <{email}>"),
            (None, Some(email)) => email.to_owned(),
            (Some(name), None) => name.to_owned(),
            (None, None) => String::new(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_mail_file(path: &Path) -> Mail {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    let msg = mail_parser::MessageParser::default()
        .parse(&bytes)
        .unwrap_or_else(|| panic!("{} is not a parsable message:\n{raw}", path.display()));
    Mail {
        subject: msg.subject().unwrap_or_default().to_owned(),
        from: render_addresses(msg.from()),
        to: render_addresses(msg.to()),
        body: msg.body_text(0).map(|b| b.into_owned()).unwrap_or_default(),
        raw,
    }
}

// ---------------------------------------------------------------------------
// promtool
// ---------------------------------------------------------------------------

/// The `promtool` binary on PATH; panics if there is none.
pub fn promtool() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("promtool is not on PATH (Debian package prometheus): {INSTALL_HINT}")
        })
}

/// `promtool check metrics` with `text` on stdin. Err(stdout + stderr) unless it exits 0
/// (exit 3: lint problems such as a gauge named `*_total`; exit 1: parse errors).
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn promtool: {e}; {INSTALL_HINT}"));
    let mut stdin = child.stdin.take().expect("promtool stdin");
    let input = text.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("wait for promtool");
    let _ = writer.join();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

// ---------------------------------------------------------------------------
// Prometheus and Alertmanager (Debian packages prometheus, prometheus-alertmanager)
// ---------------------------------------------------------------------------

/// A server of the Prometheus project (`prometheus`, `prometheus-alertmanager`) on a free port of
/// 127.0.0.1, with its config, storage and log in its own temp dir. Killed on drop.
pub struct Server {
    pub name: &'static str,
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// `name` on PATH; panics (never skips) if it is not there.
pub fn bin_on_path(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not on PATH (Debian package {package}): {INSTALL_HINT}")
        })
}

impl Server {
    /// Writes `config` to `config_name` in a fresh temp dir, starts `name` (from the Debian `package`)
    /// with `--config.file`, `<storage_flag>=<dir>/data`, `--web.listen-address` and `extra` args,
    /// and waits until `/-/ready` answers 200.
    pub fn start(
        name: &'static str,
        package: &str,
        config_name: &str,
        config: &str,
        storage_flag: &str,
        extra: &[&str],
    ) -> Server {
        let bin = bin_on_path(name, package);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir for {name}: {e}"));
        let config_path = dir.path().join(config_name);
        fs::write(&config_path, config).unwrap_or_else(|e| panic!("write {config_name}: {e}"));
        let port = free_port();
        let log = File::create(dir.path().join("server.log")).expect("server log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "{storage_flag}={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}; {INSTALL_HINT}"));
        let mut s = Server {
            name,
            child: Some(child),
            port,
            dir,
        };
        let ready = s.url("/-/ready");
        wait_until(
            &format!("{name} /-/ready answers 200"),
            START_TIMEOUT,
            || {
                if let Some(Ok(Some(status))) = s.child.as_mut().map(Child::try_wait) {
                    panic!("{name} exited with {status}:\n{}", s.log_text());
                }
                matches!(http("GET", &ready, None, None), Ok((200, _))).then_some(())
            },
        );
        s
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// `GET` a path that answers JSON: the raw body and its parsed value.
    pub fn get_json(&self, path_and_query: &str) -> Result<(String, Value), String> {
        let (code, body) = http("GET", &self.url(path_and_query), None, None)?;
        if code != 200 {
            return Err(format!(
                "{} {path_and_query} answered {code}: {body}",
                self.name
            ));
        }
        let v = serde_json::from_str(&body).map_err(|e| format!("{code} {body}: {e}"))?;
        Ok((body, v))
    }

    /// Prometheus's HTTP API: `GET` a path; the `data` of a `"status": "success"` answer.
    pub fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let (body, v) = self.get_json(path_and_query)?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("{path_and_query} answered {body}"))
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A real Alertmanager with `config` as its alertmanager.yml; no cluster (gossip) port.
pub fn start_alertmanager(config: &str) -> Server {
    Server::start(
        "prometheus-alertmanager",
        "prometheus-alertmanager",
        "alertmanager.yml",
        config,
        "--storage.path",
        &["--cluster.listen-address="],
    )
}

/// The `amtool` binary on PATH (Debian package prometheus-alertmanager); panics if there is none.
pub fn amtool() -> PathBuf {
    bin_on_path("amtool", "prometheus-alertmanager")
}

/// `amtool check-config` (same Debian package as Alertmanager) on `config`; panics unless it passes.
pub fn amtool_check_config(dir: &Path, name: &str, config: &str) {
    let path = dir.join(name);
    fs::write(&path, config).expect("write config");
    let out = Command::new(amtool())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("run amtool: {e}; {INSTALL_HINT}"));
    assert!(
        out.status.success(),
        "amtool check-config rejects {name}:\n{config}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// The daemon under test
// ---------------------------------------------------------------------------

/// Bound for the daemon's own waits (start, metric conditions).
const DAEMON_WAIT: Duration = Duration::from_secs(60);

/// The real `npm-watchdog` binary running `run` with a config, its log appended to a file.
pub struct Daemon {
    child: Option<Child>,
    pub port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    npmrc: PathBuf,
}

impl Daemon {
    /// Start it and wait until `/readyz` answers. `npmrc` stands in for the user's npm config, so the
    /// daemon never reads the developer's own.
    pub fn start(config: &Path, port: u16, log: &Path, npmrc: &Path) -> Daemon {
        let mut d = Daemon {
            child: None,
            port,
            config: config.into(),
            log: log.into(),
            npmrc: npmrc.into(),
        };
        d.spawn();
        d
    }

    /// Start (again, after [`stop`](Self::stop)) with the same config, log and state.
    pub fn spawn(&mut self) {
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = Command::new(daemon_binary())
            .args(["--config", self.config.to_str().expect("utf-8 path"), "run"])
            .env("RUST_LOG", "info")
            .env("NPM_CONFIG_USERCONFIG", &self.npmrc)
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("STATE_DIRECTORY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start npm-watchdog");
        self.child = Some(child);
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        wait_until("npm-watchdog /readyz answers 200", DAEMON_WAIT, || {
            matches!(http("GET", &url, None, None), Ok((200, _))).then_some(())
        });
    }

    /// Send a signal (`HUP`, `TERM`, …) to the running daemon.
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("daemon running");
        let status = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGTERM, then wait for the exit; returns the status and how long the stop took.
    pub fn stop(&mut self) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("daemon running");
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let exit = wait_until(
            "npm-watchdog exits after SIGTERM",
            Duration::from_secs(15),
            || child.try_wait().expect("try_wait"),
        );
        (exit, started.elapsed())
    }

    pub fn metrics(&self) -> String {
        let (code, text) = http(
            "GET",
            &format!("http://127.0.0.1:{}/metrics", self.port),
            None,
            None,
        )
        .expect("GET /metrics");
        assert_eq!(code, 200);
        text
    }

    /// The value of the series whose line starts with `series` (name and labels, as exposed).
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_in(&self.metrics(), series)
    }

    /// Waits until `series` has exactly `value`, and returns how long that took.
    pub fn wait_metric(&self, series: &str, value: f64) -> Duration {
        let started = Instant::now();
        wait_until(&format!("{series} == {value}"), DAEMON_WAIT, || {
            (self.metric(series)? == value).then_some(())
        });
        started.elapsed()
    }

    /// Waits until the counter `series` reaches at least `value`.
    pub fn wait_counter(&self, series: &str, value: f64) {
        wait_until(&format!("{series} >= {value}"), DAEMON_WAIT, || {
            (self.metric(series)? >= value).then_some(())
        });
    }

    /// Runs a one-shot command of the same binary with the same config, while the daemon runs.
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(daemon_binary())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("RUST_LOG")
            .env("NPM_CONFIG_USERCONFIG", &self.npmrc)
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("STATE_DIRECTORY")
            .stdin(Stdio::null())
            .output()
            .expect("run npm-watchdog");
        (
            out.status
                .code()
                .expect("exit code (not killed by a signal)"),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The value of the series whose line starts with `series` (name and labels, as exposed).
pub fn metric_in(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------
// podman (Debian packages podman, runc, slirp4netns)
// ---------------------------------------------------------------------------

/// podman's global options for these hosts: runc (crun fails on hybrid cgroup hierarchies) and the
/// cgroupfs manager (no systemd to create scopes).
pub const PODMAN_GLOBAL: &[&str] = &["--runtime", "runc", "--cgroup-manager=cgroupfs"];

/// Panics (never skips) unless podman and what it runs containers with are installed.
pub fn require_podman() {
    bin_on_path("podman", "podman");
    bin_on_path("runc", "runc");
    bin_on_path("slirp4netns", "slirp4netns");
}

/// A `podman` command with [`PODMAN_GLOBAL`] and `args`.
pub fn podman_command<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut cmd = Command::new(bin_on_path("podman", "podman"));
    cmd.args(PODMAN_GLOBAL).args(args).stdin(Stdio::null());
    cmd
}

/// Runs podman with `args`, whatever its exit status.
pub fn podman<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    let mut cmd = podman_command(args);
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}; {INSTALL_HINT}"))
}

/// Runs podman with `args`; its stdout, or a panic with its stderr unless it exits 0.
pub fn podman_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = podman(args);
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    assert!(
        out.status.success(),
        "podman {} failed with {}\nstdout:\n{}\nstderr:\n{}",
        shown.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a test made in podman's storage, removed when it is dropped (also when the test fails):
/// containers first (forced, no stop grace), then volumes, then images, newest first.
#[derive(Default)]
pub struct PodmanCleanup {
    containers: Vec<String>,
    volumes: Vec<String>,
    images: Vec<String>,
}

impl PodmanCleanup {
    pub fn container(&mut self, name: &str) {
        self.containers.push(name.to_owned());
    }

    pub fn volume(&mut self, name: &str) {
        self.volumes.push(name.to_owned());
    }

    pub fn image(&mut self, name: &str) {
        self.images.push(name.to_owned());
    }
}

impl Drop for PodmanCleanup {
    fn drop(&mut self) {
        for c in self.containers.iter().rev() {
            let _ = podman(&["rm", "--force", "--time", "0", c.as_str()]);
        }
        for v in self.volumes.iter().rev() {
            let _ = podman(&["volume", "rm", "--force", v.as_str()]);
        }
        for i in self.images.iter().rev() {
            let _ = podman(&["rmi", "--force", i.as_str()]);
        }
    }
}

// ---------------------------------------------------------------------------
// A tmpfs of the test's own (needs root)
// ---------------------------------------------------------------------------

/// A tmpfs mounted on a folder for as long as this lives: a small one to fill up on purpose, a
/// read-only one that not even root can write. Unmounted on drop, also when the test panics (lazily
/// if a process still has a file open there). Drop it after whatever runs on it.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` (`size=1m`, `ro`, …) on `path`, creating the folder. Panics, never
    /// skips, when it cannot: mounting needs root, which the test command has.
    pub fn mount(path: &Path, options: &str) -> Tmpfs {
        fs::create_dir_all(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount (util-linux): {e}"));
        assert!(
            out.status.success(),
            "cannot mount a tmpfs ({options}) on {}: {}\nthis test mounts a file system of its own \
             and needs root (CAP_SYS_ADMIN): run the tests as root (see the README's Set up section)",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { path: path.into() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut cmd = Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(&self.path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !umount(false) && !umount(true) {
            eprintln!("could not unmount the tmpfs on {}", self.path.display());
        }
    }
}
