//! Load and soak harness for `scripts/load.sh` and `scripts/soak.sh`: it prints figures, it is not a
//! test. Three subcommands, each its own process so that what is measured holds only what it should:
//!
//! - `registry`: the tests' fake registry (`testkit::fake_registry`) on `127.0.0.1`, listing `--tokens`
//!   account tokens of mixed kinds in pages of `--page-size`. Its first line on stdout is the registry
//!   URL, the second the base URL of a control server on another port: `POST <control>/churn/<k>`
//!   replaces `k` tokens with new ones (new keys), `GET <control>/stats` answers
//!   `{"requests", "tokens"}`. The requests it records are dropped every second, so a long run does not
//!   grow it. Runs until killed.
//! - `load`: `--clients` concurrent HTTP clients, each with its own keep-alive connection, GET one URL
//!   back to back for `--seconds`; prints requests, errors, throughput and p50/p99/max latency.
//!   With `--expect-tokens N` (for `/metrics`) what each body says about tokens and findings is
//!   tallied (the sum of `npm_watchdog_tokens`, the number of per-token and `findings` series, the
//!   findings and the critical ones): on a steady account every scrape should show the same view, the
//!   whole list of N tokens; a scrape that shows another is counted as `partial`, what the partial
//!   ones missed is printed on a second line (`partial no_token_series=… …`) and the views seen on
//!   further lines (`view … scrapes=…`).
//! - `soak`: a `Watchdog` built in-process over a state file, as `npm-watchdog run` builds it (no sink
//!   configured, so alerts go to the log; the outbox's delivery loop runs beside it), runs the token
//!   group `--cycles` times back to back against `--registry`; at the start, every `--every` cycles and
//!   at the end it prints its own RSS, the memory SQLite holds, open file descriptors and threads
//!   (from `/proc/self`), the size of the state database and its WAL, the row counts of its tables,
//!   and the cycle rate and durations.
//!   With `--churn K` it asks the registry's control server to replace K tokens before every cycle.
//!
//! ```sh
//! cargo run --release --example load_soak -- registry --tokens 1000 --token-file token
//! cargo run --release --example load_soak -- soak --registry http://127.0.0.1:PORT/ --token-file token \
//!     --state soak/state.db --cycles 10000 --every 1000
//! cargo run --release --example load_soak -- load --url http://127.0.0.1:9858/metrics --clients 4 --seconds 30
//! ```

use testkit::fake_registry;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path as AxPath, State as AxState};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{SecondsFormat, Utc};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use sha2::{Digest, Sha512};

use fake_registry::{FakeRegistry, TOKEN};
use npm_watchdog::checks::Group;
use npm_watchdog::config::Config;
use npm_watchdog::credential::Environment;
use npm_watchdog::daemon::Watchdog;
use npm_watchdog::metrics::Metrics;
use npm_watchdog::runtime::Runtime;
use npm_watchdog::state::State;

#[derive(Parser)]
#[command(
    about = "Load and soak harness: a fake registry with many tokens, an HTTP load generator, an in-process token-cycle soak"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the fake registry with many tokens until killed.
    Registry(RegistryArgs),
    /// GET one URL from concurrent clients and print latency figures.
    Load(LoadArgs),
    /// Run the token group in-process, back to back, and print resource figures.
    Soak(SoakArgs),
    /// Print the row counts of a state database (`soak` asks a child process, so that its own
    /// descriptors hold only what the watchdog opened).
    #[command(hide = true)]
    Rows {
        #[arg(long)]
        state: PathBuf,
    },
}

#[derive(Args)]
struct RegistryArgs {
    /// Port on 127.0.0.1 (0: a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Tokens on the account.
    #[arg(long, default_value_t = 100)]
    tokens: usize,
    /// Tokens per page of `GET /-/npm/v1/tokens`.
    #[arg(long, default_value_t = 100)]
    page_size: usize,
    /// Write the token the registry accepts to this file.
    #[arg(long)]
    token_file: PathBuf,
}

#[derive(Args)]
struct LoadArgs {
    /// The URL to GET (loopback only).
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 4)]
    clients: usize,
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Check that every body holds this many tokens (for `/metrics`).
    #[arg(long)]
    expect_tokens: Option<u64>,
    /// Per-request timeout in seconds (a request past it counts as an error).
    #[arg(long, default_value_t = 5)]
    timeout: u64,
}

#[derive(Args)]
struct SoakArgs {
    /// The registry URL (loopback only).
    #[arg(long)]
    registry: String,
    /// The file holding the token the registry accepts.
    #[arg(long)]
    token_file: PathBuf,
    /// The state database (created).
    #[arg(long)]
    state: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    cycles: u64,
    /// Print a row every this many cycles.
    #[arg(long, default_value_t = 1000)]
    every: u64,
    /// Replace this many tokens before every cycle (needs --control).
    #[arg(long, default_value_t = 0)]
    churn: usize,
    /// The registry's control URL (second line of `registry`'s output).
    #[arg(long)]
    control: Option<String>,
}

#[tokio::main]
async fn main() {
    match Cli::parse().cmd {
        Cmd::Registry(a) => registry(a).await,
        Cmd::Load(a) => load(a).await,
        Cmd::Soak(a) => soak(a).await,
        Cmd::Rows { state } => {
            let [seen, findings, outbox, pending] = row_counts(&state);
            println!("{seen} {findings} {outbox} {pending}");
        }
    }
}

fn loopback_only(url: &str) {
    let u = url::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let host = u.host_str().unwrap_or("");
    assert!(
        matches!(host, "127.0.0.1" | "localhost" | "[::1]"),
        "{url}: this harness talks to loopback only"
    );
}

// ---------------------------------------------------------------------------------------------------
// registry

/// The `i`-th token of generation `generation` (0 for the initial list): a spread of the kinds an
/// account holds: read-only with a CIDR list, publish tokens with and without expiry, a few bypass-2FA.
fn bench_token(i: usize, generation: u64) -> Value {
    let key = hex::encode(Sha512::digest(
        format!("load-soak token {i} generation {generation}").as_bytes(),
    ));
    let now = Utc::now();
    let created = now - chrono::Duration::hours(i as i64 + 1);
    let stamp = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    let (action, cidr, bypass, expiry) = match i % 10 {
        0 => (
            "write",
            Value::Null,
            true,
            Some(now + chrono::Duration::hours(12)),
        ),
        1..=3 => (
            "read",
            json!(["192.0.2.0/24"]),
            false,
            Some(now + chrono::Duration::days(30)),
        ),
        4..=6 => ("write", Value::Null, false, None),
        _ => (
            "write",
            json!(["198.51.100.7/32"]),
            false,
            Some(now + chrono::Duration::days(365)),
        ),
    };
    json!({
        "name": format!("bench-{i}"),
        "key": key,
        "token": "npm_ab...yz",
        "cidr": cidr,
        "bypass_2fa": bypass,
        "created": stamp(created),
        "updated": stamp(created),
        "expiry": expiry.map(stamp),
        "permissions": [{"name": "package", "action": action}],
        "revoked": null
    })
}

struct Control {
    fake: FakeRegistry,
    generation: AtomicU64,
    next_slot: AtomicU64,
}

async fn registry(a: RegistryArgs) {
    let fake = FakeRegistry::start_on("/", a.port).await;
    fake.set_tokens((0..a.tokens).map(|i| bench_token(i, 0)).collect());
    fake.set_page_size(a.page_size);
    fake.set_valid_tokens(vec![TOKEN.to_string()]);
    std::fs::write(&a.token_file, format!("{TOKEN}\n"))
        .unwrap_or_else(|e| panic!("write {}: {e}", a.token_file.display()));
    // Owner-only, as the daemon wants a secret file (else it warns at every start).
    std::fs::set_permissions(&a.token_file, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", a.token_file.display()));
    let control = Arc::new(Control {
        fake,
        generation: AtomicU64::new(0),
        next_slot: AtomicU64::new(0),
    });

    // Drop the recorded requests (the counters stay), so that hours of cycles do not grow this process.
    let c = Arc::clone(&control);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            c.fake.clear_requests();
        }
    });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the control server on 127.0.0.1:0");
    let control_addr = listener.local_addr().expect("control address");
    let app = Router::new()
        .route("/churn/{k}", post(churn))
        .route("/stats", get(stats))
        .with_state(Arc::clone(&control));
    println!("{}", control.fake.url);
    println!("http://{control_addr}/");
    println!(
        "{} tokens in pages of {}; control: POST /churn/<k>, GET /stats",
        a.tokens, a.page_size
    );
    axum::serve(listener, app)
        .await
        .expect("serve the control server");
}

fn json_reply(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// Replace `k` tokens, round the list, each with a new key (a token revoked, another created).
async fn churn(AxState(c): AxState<Arc<Control>>, AxPath(k): AxPath<usize>) -> Response {
    let generation = c.generation.fetch_add(1, Ordering::SeqCst) + 1;
    c.fake.with_state(|s| {
        let n = s.tokens.len();
        for _ in 0..k.min(n) {
            let slot = (c.next_slot.fetch_add(1, Ordering::SeqCst) as usize) % n;
            s.tokens[slot] = bench_token(slot, generation);
        }
    });
    json_reply(&json!({"generation": generation}))
}

async fn stats(AxState(c): AxState<Arc<Control>>) -> Response {
    let (requests, tokens) = c.fake.with_state(|s| (s.requests_count, s.tokens.len()));
    json_reply(&json!({"requests": requests, "tokens": tokens}))
}

// ---------------------------------------------------------------------------------------------------
// load

#[derive(Default)]
struct ClientResult {
    latencies: Vec<Duration>,
    errors: u64,
    bytes: u64,
    first_error: Option<String>,
    /// `/metrics` only: how many bodies showed each view.
    views: BTreeMap<View, u64>,
}

/// What a `/metrics` body says about tokens and findings. Between cycles of a steady account every
/// scrape shows the same view; one that differs saw a cycle half-way through replacing its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct View {
    /// Sum of `npm_watchdog_tokens`.
    tokens: u64,
    /// `npm_watchdog_token_created_timestamp_seconds` series.
    token_series: u64,
    /// `npm_watchdog_findings` series.
    finding_series: u64,
    /// Sum of `npm_watchdog_findings`, and of its `severity="critical"` series.
    findings: u64,
    critical: u64,
}

impl std::fmt::Display for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tokens={},token_series={},finding_series={},findings={},critical={}",
            self.tokens, self.token_series, self.finding_series, self.findings, self.critical
        )
    }
}

fn view(body: &str) -> View {
    let value = |line: &str| {
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    let mut v = View {
        tokens: 0,
        token_series: 0,
        finding_series: 0,
        findings: 0,
        critical: 0,
    };
    for line in body.lines() {
        if line.starts_with("npm_watchdog_tokens{") {
            v.tokens += value(line);
        } else if line.starts_with("npm_watchdog_token_created_timestamp_seconds{") {
            v.token_series += 1;
        } else if line.starts_with("npm_watchdog_findings{") {
            v.finding_series += 1;
            v.findings += value(line);
            if line.contains("severity=\"critical\"") {
                v.critical += value(line);
            }
        }
    }
    v
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

async fn load(a: LoadArgs) {
    loopback_only(&a.url);
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.clients.max(1) {
        let url = a.url.clone();
        let check = a.expect_tokens.is_some();
        let timeout = Duration::from_secs(a.timeout);
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(timeout)
                .pool_max_idle_per_host(1)
                .build()
                .expect("http client");
            let mut r = ClientResult::default();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let outcome = match client.get(&url).send().await {
                    Ok(resp) if resp.status().is_success() => resp
                        .text()
                        .await
                        .map_err(|e| format!("reading the body: {e}")),
                    Ok(resp) => Err(format!("status {}", resp.status())),
                    Err(e) => Err(e.to_string()),
                };
                let took = t0.elapsed();
                match outcome {
                    Ok(body) => {
                        r.latencies.push(took);
                        r.bytes += body.len() as u64;
                        if check {
                            *r.views.entry(view(&body)).or_default() += 1;
                        }
                    }
                    Err(e) => {
                        r.errors += 1;
                        r.first_error.get_or_insert(e);
                    }
                }
            }
            r
        }));
    }
    let mut all = ClientResult::default();
    for t in tasks {
        let r = t.await.expect("client task");
        all.latencies.extend(r.latencies);
        all.errors += r.errors;
        for (v, n) in r.views {
            *all.views.entry(v).or_default() += n;
        }
        all.bytes += r.bytes;
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
    }
    let wall = started.elapsed();
    all.latencies.sort();
    let ok = all.latencies.len() as u64;
    let requests = ok + all.errors;
    let mean = if ok > 0 {
        all.latencies.iter().sum::<Duration>() / ok as u32
    } else {
        Duration::ZERO
    };
    // The steady view is the most frequent one; every other one is a partial scrape.
    let mut views: Vec<(View, u64)> = all.views.into_iter().collect();
    views.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let partial: u64 = views.iter().skip(1).map(|(_, n)| n).sum();
    // One line of key=value pairs, for the scripts to pick apart.
    println!(
        "url={} clients={} seconds={:.1} requests={} errors={} partial={} rps={:.0} p50_ms={} p99_ms={} max_ms={} mean_ms={} body_bytes_mean={}",
        a.url,
        a.clients,
        wall.as_secs_f64(),
        requests,
        all.errors,
        if a.expect_tokens.is_some() { partial.to_string() } else { "-".into() },
        requests as f64 / wall.as_secs_f64(),
        ms(percentile(&all.latencies, 50.0)),
        ms(percentile(&all.latencies, 99.0)),
        ms(all.latencies.last().copied().unwrap_or_default()),
        ms(mean),
        all.bytes.checked_div(ok).unwrap_or(0),
    );
    if let Some(e) = all.first_error {
        eprintln!("load: first error: {e}");
    }
    if let (Some(n), Some((steady, _))) = (a.expect_tokens, views.first()) {
        if steady.tokens != n || steady.token_series != n {
            eprintln!("load: the most frequent view is not the whole token list of {n}: {steady}");
        }
        // What the partial scrapes missed.
        let (mut no_tokens, mut some_tokens, mut no_findings, mut other) = (0, 0, 0, 0);
        for (v, count) in views.iter().skip(1) {
            if v.token_series == 0 && v.tokens == 0 {
                no_tokens += count;
            } else if v.finding_series == 0 {
                no_findings += count;
            } else if v.token_series < steady.token_series || v.tokens < steady.tokens {
                some_tokens += count;
            } else {
                other += count;
            }
        }
        println!(
            "partial no_token_series={no_tokens} part_of_the_token_list={some_tokens} no_findings_series={no_findings} other={other}"
        );
        // The views seen, most frequent first (the first is the steady one).
        for (v, count) in views.iter().take(8) {
            println!("view {v} scrapes={count}");
        }
        if views.len() > 8 {
            println!("view (and {} more kinds)", views.len() - 8);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// soak

fn proc_status(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| {
            rest.trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Open file descriptors, not counting the one that reads the directory.
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(1)
        .saturating_sub(1)
}

/// Bytes SQLite has allocated in this process (its page cache included): the watchdog's connection
/// is the only one here.
fn sqlite_memory_used() -> i64 {
    // SAFETY: a read of SQLite's global memory counter; it takes no pointers and may be called at
    // any time, from any thread.
    unsafe { rusqlite::ffi::sqlite3_memory_used() }
}

/// What the open descriptors are, grouped: `socket 3, anon_inode:[eventpoll] 1, state.db 1, …`
/// (files by name, without their folder).
fn fd_kinds() -> String {
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for e in dir.flatten() {
            let Ok(target) = std::fs::read_link(e.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if t.starts_with("/proc/") && t.ends_with("/fd") {
                // The descriptor reading this directory.
                continue;
            }
            let kind = if t.starts_with("socket:") {
                "socket".to_string()
            } else if t.starts_with("pipe:") {
                "pipe".to_string()
            } else if t.starts_with("anon_inode:") || t.starts_with("/dev/") {
                t.into_owned()
            } else {
                target
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| t.into_owned())
            };
            *kinds.entry(kind).or_default() += 1;
        }
    }
    kinds
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Row counts of the tables that could grow, read by a child process: a second connection to the
/// same file in this process would keep a descriptor open after it closes (SQLite defers closing a
/// file while another connection of the process holds locks on it), which would muddle the count.
fn row_counts_child(db: &Path) -> [i64; 4] {
    let exe = std::env::current_exe().expect("own executable");
    let out = std::process::Command::new(exe)
        .arg("rows")
        .arg("--state")
        .arg(db)
        .output()
        .expect("run the row counter");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut n = text.split_whitespace().map(|v| v.parse().unwrap_or(-1));
    [(); 4].map(|_| n.next().unwrap_or(-1))
}

/// Row counts of the tables that could grow, through a read-only connection.
fn row_counts(db: &Path) -> [i64; 4] {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the state database read-only");
    let count = |sql: &str| {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))
            .unwrap_or(-1)
    };
    [
        count("SELECT COUNT(*) FROM seen_tokens"),
        count("SELECT COUNT(*) FROM findings"),
        count("SELECT COUNT(*) FROM outbox"),
        count("SELECT COUNT(*) FROM outbox WHERE delivered IS NULL"),
    ]
}

/// The value of the first series of `name` whose line holds every `labels` part.
fn metric_value(body: &str, name: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|p| l.contains(p)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

struct Row {
    cycle: u64,
    elapsed: Duration,
    rate: f64,
    durations: Vec<Duration>,
}

fn print_header() {
    println!(
        "{:>6} {:>8} {:>8} {:>9} {:>9} {:>10} {:>4} {:>4} {:>10} {:>10} {:>6} {:>8} {:>7} {:>7} {:>8} {:>8} {:>8}",
        "cycle", "elapsed", "cycles/s", "rss_kib", "hwm_kib", "sqlite_kib", "fds", "thr", "db_bytes", "wal_bytes",
        "seen", "findings", "outbox", "pending", "p50_ms", "p99_ms", "max_ms"
    );
}

fn print_row(db: &Path, r: &Row) {
    let (rss, hwm, fds, threads) = (
        proc_status("VmRSS"),
        proc_status("VmHWM"),
        open_fds(),
        proc_status("Threads"),
    );
    let db_bytes = file_size(db);
    let wal_bytes = file_size(&with_suffix(db, "-wal"));
    let [seen, findings, outbox, pending] = row_counts_child(db);
    let mut d = r.durations.clone();
    d.sort();
    let (p50, p99, max) = if d.is_empty() {
        ("-".to_string(), "-".to_string(), "-".to_string())
    } else {
        (
            ms(percentile(&d, 50.0)),
            ms(percentile(&d, 99.0)),
            ms(*d.last().expect("non-empty")),
        )
    };
    println!(
        "{:>6} {:>8.1} {:>8.1} {:>9} {:>9} {:>10} {:>4} {:>4} {:>10} {:>10} {:>6} {:>8} {:>7} {:>7} {:>8} {:>8} {:>8}",
        r.cycle,
        r.elapsed.as_secs_f64(),
        r.rate,
        rss,
        hwm,
        sqlite_memory_used() / 1024,
        fds,
        threads,
        db_bytes,
        wal_bytes,
        seen,
        findings,
        outbox,
        pending,
        p50,
        p99,
        max
    );
}

async fn soak(a: SoakArgs) {
    loopback_only(&a.registry);
    let mut cfg = Config::default();
    cfg.registry.url = Some(url::Url::parse(&a.registry).expect("registry url"));
    cfg.registry.token_file = Some(a.token_file.clone());
    // Tokens only: no package source, so the token group is the only active one.
    cfg.watch.own_account = false;
    cfg.state.path = Some(a.state.clone());
    let rt = Runtime::new(cfg, Environment::default()).expect("runtime");
    let state = State::open(&a.state).expect("open the state database");
    let wd = Arc::new(Watchdog::new(rt, state, Metrics::new()).expect("watchdog"));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let dispatcher = tokio::spawn(Arc::clone(wd.outbox()).run(stop_rx));
    let churner = match (&a.control, a.churn) {
        (_, 0) => None,
        (Some(c), k) => {
            loopback_only(c);
            let client = reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("http client");
            Some((client, format!("{}/churn/{k}", c.trim_end_matches('/'))))
        }
        (None, _) => panic!("--churn needs --control"),
    };

    println!(
        "soak: {} token cycles back to back, in-process (pid {}), state {}",
        a.cycles,
        std::process::id(),
        a.state.display()
    );
    // Both filled before the first row, so that recording a duration touches no new memory: the
    // harness's own bookkeeping must not show as growth (otherwise 16 bytes a cycle).
    let mut all = vec![Duration::MAX; a.cycles as usize];
    let mut block = vec![Duration::MAX; a.every as usize];
    let mut in_block = 0usize;
    println!("fds at start: {}", fd_kinds());
    print_header();
    let started = Instant::now();
    print_row(
        &a.state,
        &Row {
            cycle: 0,
            elapsed: Duration::ZERO,
            rate: 0.0,
            durations: Vec::new(),
        },
    );
    let mut block_start = Instant::now();
    let mut failed = 0u64;
    let mut first_failure: Option<String> = None;
    for i in 1..=a.cycles {
        if let Some((client, url)) = &churner {
            client
                .post(url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .expect("churn the registry's tokens");
        }
        let t0 = Instant::now();
        wd.run_group(Group::Tokens).await;
        let took = t0.elapsed();
        block[in_block] = took;
        in_block += 1;
        all[(i - 1) as usize] = took;
        let health = wd.state().group_health().expect("group health");
        if let Some(h) = health
            .iter()
            .find(|h| h.group == "tokens" && h.consecutive_failures > 0)
        {
            failed += 1;
            if first_failure.is_none() {
                first_failure = h.last_error.clone();
            }
        }
        if i % a.every == 0 || i == a.cycles {
            // Render the metrics as a scrape would, so the text encoder's path is soaked too.
            let _ = wd.metrics().render();
            let secs = block_start.elapsed().as_secs_f64();
            print_row(
                &a.state,
                &Row {
                    cycle: i,
                    elapsed: started.elapsed(),
                    rate: in_block as f64 / secs,
                    durations: block[..in_block].to_vec(),
                },
            );
            in_block = 0;
            block_start = Instant::now();
        }
    }
    let wall = started.elapsed();
    // Let the delivery loop finish what the last cycle queued.
    let _ = stop_tx.send(true);
    let _ = dispatcher.await;

    println!("fds at the end: {}", fd_kinds());
    let body = wd.metrics().render();
    all.sort();
    println!(
        "summary: cycles={} failed={} wall_s={:.1} cycles_per_s={:.1} cycle_p50_ms={} cycle_p99_ms={} cycle_max_ms={}",
        a.cycles,
        failed,
        wall.as_secs_f64(),
        a.cycles as f64 / wall.as_secs_f64(),
        ms(percentile(&all, 50.0)),
        ms(percentile(&all, 99.0)),
        ms(all.last().copied().unwrap_or_default()),
    );
    println!(
        "summary: tokens_gauge={} token_list_requests_200={} check_errors={} notifications_sent={} notification_queue={} findings_gauge={}",
        metric_sum(&body, "npm_watchdog_tokens"),
        metric_value(
            &body,
            "npm_watchdog_registry_requests_total{",
            &["endpoint=\"tokens\"", "code=\"200\""]
        ),
        metric_sum(&body, "npm_watchdog_check_errors_total"),
        metric_sum(&body, "npm_watchdog_notifications_total"),
        metric_sum(&body, "npm_watchdog_notification_queue"),
        metric_sum(&body, "npm_watchdog_findings"),
    );
    if let Some(e) = first_failure {
        println!("summary: first failure: {e}");
    }
}
