//! The in-process fake registry of the tests, as a standalone server for `scripts/bench-audit.sh`.
//!
//! It serves `N` packages owned by one user on `127.0.0.1`, accepts the fake's `TOKEN` (written to
//! `--token-file` when given), delays every response by a fixed latency, and runs until killed. Its
//! first line on stdout is the registry URL, the second the base URL of a small stats server on
//! another port (so that reading the counters is not registry traffic), the third what it serves:
//!
//! - `GET <stats>/-/bench/stats` → `{"requests", "bytes", "by_kind": {…}, "packages", "doc_bytes_min",
//!   "doc_bytes_max", "doc_bytes_mean", "latency_ms"}`: requests received and response body bytes
//!   served since start or the last reset, requests by kind (`packument`, `tokens`, `user`, …);
//! - `POST <stats>/-/bench/reset` sets the counters (and the recorded requests) back to zero.
//!
//! ```sh
//! cargo run --release --example fake_registry_server -- --packages 1000 --latency-ms 20
//! ```

use testkit::fake_registry;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Parser;
use serde_json::{json, Value};

use fake_registry::{FakeRegistry, TOKEN};

#[derive(Parser)]
#[command(about = "The tests' fake npm registry with many packages, for benchmarks")]
struct Args {
    /// Port of the registry on 127.0.0.1 (0: a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// How many packages the user owns.
    #[arg(long, default_value_t = 1000)]
    packages: usize,
    /// Versions per package.
    #[arg(long, default_value_t = 10)]
    versions: usize,
    /// Bytes of each package's readme.
    #[arg(long, default_value_t = 12288)]
    readme_bytes: usize,
    /// Delay added to every registry response, in milliseconds.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// The user whose package list (`GET /-/user/<user>/package`) names the packages.
    #[arg(long, default_value = "bench")]
    user: String,
    /// Package names are `<prefix><i>`.
    #[arg(long, default_value = "@bench/pkg-")]
    prefix: String,
    /// Write the token the registry accepts (the fake's `TOKEN`) to this file.
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// List this many tokens on the account, each named with `--token-name-bytes` bytes of hostile
    /// text (control and bidi characters, a forged log line): the hostile-names measurement.
    #[arg(long, default_value_t = 0)]
    hostile_tokens: usize,
    #[arg(long, default_value_t = 10_240)]
    token_name_bytes: usize,
}

/// A token named to forge lines and drive terminals, `bytes` long.
fn hostile_token(i: usize, bytes: usize) -> serde_json::Value {
    let head = format!("t{i}\n2026-12-04T00:00:00Z INFO all clear \u{1b}[2J\u{202e}");
    let name = format!("{head}{}", "x".repeat(bytes.saturating_sub(head.len())));
    json!({
        "name": name, "key": format!("{i:08x}{}", "e".repeat(24)), "token": "npm_ab...yz",
        "cidr": null, "bypass_2fa": i.is_multiple_of(10), "created": "2026-10-01T00:00:00.000Z",
        "expiry": null, "readonly": false,
        "permissions": [{"name": "package", "action": "write"}], "revoked": null
    })
}

struct Stats {
    fake: FakeRegistry,
    packages: usize,
    doc_min: usize,
    doc_max: usize,
    doc_mean: usize,
    latency_ms: u64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let fake = FakeRegistry::start_on("/", args.port).await;
    let names = fake.add_many_packages(
        &args.prefix,
        args.packages,
        args.versions,
        args.readme_bytes,
    );
    fake.set_user_packages(&args.user, names.iter().map(|n| (n.clone(), "write")));
    fake.set_username(&args.user);
    let mut profile = fake.with_state(|s| s.profile.clone());
    profile["name"] = json!(args.user);
    profile["email"] = json!(format!("{}@example.com", args.user));
    fake.set_profile(profile);
    fake.set_valid_tokens(vec![TOKEN.to_string()]);
    if args.hostile_tokens > 0 {
        fake.set_tokens(
            (0..args.hostile_tokens)
                .map(|i| hostile_token(i, args.token_name_bytes))
                .collect(),
        );
    }
    if let Some(path) = &args.token_file {
        std::fs::write(path, format!("{TOKEN}\n"))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    fake.set_latency(Duration::from_millis(args.latency_ms));

    let sizes: Vec<usize> =
        fake.with_state(|s| s.packuments.values().map(|p| p.body.len()).collect());
    let stats = Arc::new(Stats {
        packages: names.len(),
        doc_min: sizes.iter().copied().min().unwrap_or(0),
        doc_max: sizes.iter().copied().max().unwrap_or(0),
        doc_mean: sizes.iter().sum::<usize>() / sizes.len().max(1),
        latency_ms: args.latency_ms,
        fake,
    });

    let stats_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the stats server on 127.0.0.1:0");
    let stats_addr = stats_listener.local_addr().expect("stats address");
    let app = Router::new()
        .route("/-/bench/stats", get(read_stats))
        .route("/-/bench/reset", post(reset))
        .with_state(Arc::clone(&stats));

    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", stats.fake.url);
    let _ = writeln!(out, "http://{stats_addr}/");
    let _ = writeln!(
        out,
        "{} packages of user {}, {} versions and a {}-byte readme each: documents of {}-{} bytes (mean {}); latency {} ms",
        stats.packages,
        args.user,
        args.versions,
        args.readme_bytes,
        stats.doc_min,
        stats.doc_max,
        stats.doc_mean,
        stats.latency_ms
    );
    let _ = out.flush();
    drop(out);

    axum::serve(stats_listener, app)
        .await
        .expect("serve the stats endpoint");
}

/// What kind of registry request a path is, for the per-kind counts.
fn kind(path_and_query: &str) -> &'static str {
    let path = path_and_query.split('?').next().unwrap_or("");
    if path.starts_with("/-/npm/v1/tokens") {
        "tokens"
    } else if path.starts_with("/-/npm/v1/user") || path.starts_with("/-/whoami") {
        "profile"
    } else if path.starts_with("/-/npm/v1/attestations/") {
        "attestations"
    } else if path.starts_with("/-/user/") {
        "user"
    } else if path.starts_with("/-/package/") {
        "package"
    } else if path.starts_with("/-/") {
        "other"
    } else {
        "packument"
    }
}

fn json_reply(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn read_stats(State(st): State<Arc<Stats>>) -> Response {
    let (requests, bytes, by_kind) = st.fake.with_state(|s| {
        let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
        for r in &s.requests {
            *by_kind.entry(kind(&r.path_and_query)).or_default() += 1;
        }
        (s.requests_count, s.bytes_served, by_kind)
    });
    json_reply(&json!({
        "requests": requests,
        "bytes": bytes,
        "by_kind": by_kind,
        "packages": st.packages,
        "doc_bytes_min": st.doc_min,
        "doc_bytes_max": st.doc_max,
        "doc_bytes_mean": st.doc_mean,
        "latency_ms": st.latency_ms,
    }))
}

async fn reset(State(st): State<Arc<Stats>>) -> Response {
    st.fake.reset_counters();
    st.fake.clear_requests();
    json_reply(&json!({"reset": true}))
}
