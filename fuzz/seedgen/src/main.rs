//! `seedgen <repository root> <output folder>`: writes `<output>/<target>/<name>` seed files for the
//! fuzz targets, from the project's own fixtures:
//!
//! - `token_list`: the checks' token page (`src/checks/fixtures/tokens.json`) and the pages the
//!   tests' fake registry serves for those tokens, two to a page, with every `urls.next` style.
//! - `packument`: each packument of `src/checks/fixtures/packuments.json` and documents built by the
//!   fake registry's `packument_doc` (GitHub, GitLab and token publishes; no versions).
//! - `provenance`: the fake registry's `attestation_reply` for each provenance entry of the checks'
//!   fixture, the same reply without its SLSA attestation, and each decoded in-toto statement (the
//!   target's second mode reads the input as the statement).
//! - `config`: `config/npm-watchdog.example.toml`, every TOML raw string in the configuration's
//!   tests (`src/config/*.rs`), and every file of their table of invalid files.
//!
//! A fixture that cannot be read is reported and skipped, so that one moved file costs its seeds only.

#[allow(dead_code, unused_imports)]
use testkit::fake_registry;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

use fake_registry::{
    attestation_reply, packument_doc, FakeRegistry, NextStyle, TOKEN, TOKENS_PATH,
};

struct Out {
    root: PathBuf,
    written: usize,
}

impl Out {
    fn write(&mut self, target: &str, name: &str, bytes: impl AsRef<[u8]>) {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        self.written += 1;
    }
}

fn read_json(repo: &Path, rel: &str) -> Option<Value> {
    let text = read_text(repo, rel)?;
    match serde_json::from_str(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("seedgen: {rel} is not JSON ({e}); skipped");
            None
        }
    }
}

fn read_text(repo: &Path, rel: &str) -> Option<String> {
    match fs::read_to_string(repo.join(rel)) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("seedgen: cannot read {rel} ({e}); skipped");
            None
        }
    }
}

/// `@acme/core` → `acme-core`, for file names.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, repo, out] = args.as_slice() else {
        eprintln!("usage: seedgen <repository root> <output folder>");
        std::process::exit(2);
    };
    let repo = Path::new(repo);
    let mut out = Out {
        root: PathBuf::from(out),
        written: 0,
    };
    token_pages(repo, &mut out).await;
    packuments(repo, &mut out);
    provenance(repo, &mut out);
    configs(repo, &mut out);
    println!(
        "seedgen: {} seed files in {}",
        out.written,
        out.root.display()
    );
}

async fn token_pages(repo: &Path, out: &mut Out) {
    let Some(page) = read_json(repo, "src/checks/fixtures/tokens.json") else {
        return;
    };
    out.write("token_list", "checks-tokens.json", page.to_string());
    let objects = page["objects"].as_array().cloned().unwrap_or_default();
    let registry = FakeRegistry::start().await;
    registry.set_tokens(objects);
    registry.set_page_size(2);
    let styles = [
        ("relative", NextStyle::Relative),
        ("absolute", NextStyle::Absolute),
        ("missing", NextStyle::Missing),
        ("no-next-key", NextStyle::NoNextKey),
        ("null", NextStyle::Null),
        ("empty", NextStyle::Empty),
    ];
    for (name, style) in styles {
        registry.set_next_style(style);
        registry.set_end_style(style);
        for page in [1, 3] {
            let path = format!("{TOKENS_PATH}?page={page}");
            match get(registry.addr, &path).await {
                Ok(body) => out.write("token_list", &format!("fake-{name}-page{page}.json"), body),
                Err(e) => eprintln!("seedgen: fake registry {path}: {e}; skipped"),
            }
        }
    }
    registry.set_tokens(Vec::new());
    registry.set_next_style(NextStyle::Null);
    registry.set_end_style(NextStyle::Null);
    match get(registry.addr, TOKENS_PATH).await {
        Ok(body) => out.write("token_list", "fake-empty-list.json", body),
        Err(e) => eprintln!("seedgen: fake registry {TOKENS_PATH}: {e}; skipped"),
    }
}

/// The body of `GET path` with the fake's credential (HTTP/1.0, so the answer is not chunked).
async fn get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<Vec<u8>> {
    let request = format!(
        "GET {path} HTTP/1.0\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN}\r\naccept: application/json\r\n\r\n"
    );
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr)?;
        stream.write_all(request.as_bytes())?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply)?;
        let start = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no end of headers"))?;
        if !reply.starts_with(b"HTTP/1.1 200") && !reply.starts_with(b"HTTP/1.0 200") {
            return Err(std::io::Error::other(
                String::from_utf8_lossy(&reply[..start]).into_owned(),
            ));
        }
        Ok(reply[start + 4..].to_vec())
    })
    .await
    .map_err(std::io::Error::other)?
}

fn packuments(repo: &Path, out: &mut Out) {
    if let Some(doc) = read_json(repo, "src/checks/fixtures/packuments.json") {
        for raw in doc["packuments"].as_array().into_iter().flatten() {
            let name = raw["name"].as_str().unwrap_or("unnamed");
            out.write(
                "packument",
                &format!("checks-{}.json", slug(name)),
                raw.to_string(),
            );
        }
    }
    let docs = [
        (
            "fake-mixed",
            packument_doc(
                "@acme/a",
                &[
                    ("1.0.0", "2025-06-01T10:00:00.000Z", None, "alice"),
                    (
                        "1.1.0",
                        "2026-01-10T09:00:00.000Z",
                        Some("github"),
                        "GitHub Actions",
                    ),
                    (
                        "1.2.0",
                        "2026-02-10T09:00:00.000Z",
                        Some("gitlab"),
                        "GitLab CI",
                    ),
                    (
                        "1.3.0",
                        "2026-03-10T09:00:00.000Z",
                        Some("circleci"),
                        "CircleCI",
                    ),
                ],
                &["alice", "bob"],
            ),
        ),
        (
            "fake-github",
            packument_doc(
                "left-pad-acme",
                &[(
                    "2.0.0",
                    "2026-04-01T12:00:00.000Z",
                    Some("github"),
                    "GitHub Actions",
                )],
                &["alice"],
            ),
        ),
        (
            "fake-no-versions",
            packument_doc("@acme/empty", &[], &["alice"]),
        ),
    ];
    for (name, doc) in docs {
        out.write("packument", &format!("{name}.json"), doc.to_string());
    }
}

fn provenance(repo: &Path, out: &mut Out) {
    let Some(doc) = read_json(repo, "src/checks/fixtures/packuments.json") else {
        return;
    };
    let entries = doc["provenance"].as_object().cloned().unwrap_or_default();
    for (spec, source) in entries {
        let Some((name, version)) = spec.rsplit_once('@') else {
            continue;
        };
        let repository = source["repository"].as_str().unwrap_or("");
        let workflow = source["workflow_path"].as_str().unwrap_or("");
        let reply = attestation_reply(name, version, repository, workflow);
        let stem = slug(&spec);
        out.write(
            "provenance",
            &format!("fake-{stem}.json"),
            reply.to_string(),
        );
        if let Some(list) = reply["attestations"].as_array() {
            for (i, att) in list.iter().enumerate() {
                let payload = att["bundle"]["dsseEnvelope"]["payload"]
                    .as_str()
                    .unwrap_or("");
                if let Ok(statement) = base64::engine::general_purpose::STANDARD.decode(payload) {
                    out.write(
                        "provenance",
                        &format!("fake-{stem}-statement{i}.json"),
                        statement,
                    );
                }
            }
            let publish_only: Vec<Value> = list
                .iter()
                .filter(|a| {
                    !a["predicateType"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("https://slsa.dev/provenance/"))
                })
                .cloned()
                .collect();
            let reply = serde_json::json!({ "attestations": publish_only });
            out.write(
                "provenance",
                &format!("fake-{stem}-publish-only.json"),
                reply.to_string(),
            );
        }
    }
}

fn configs(repo: &Path, out: &mut Out) {
    if let Some(example) = read_text(repo, "config/npm-watchdog.example.toml") {
        out.write("config", "example.toml", example);
    }
    let Ok(dir) = fs::read_dir(repo.join("src/config")) else {
        eprintln!("seedgen: cannot list src/config; skipped");
        return;
    };
    let mut files: Vec<PathBuf> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("config")
            .to_string();
        for (i, raw) in raw_strings(&text).into_iter().enumerate() {
            // TOML documents only: a table header on a line of its own.
            if raw.lines().any(|l| l.trim_start().starts_with('[')) {
                out.write("config", &format!("{stem}-raw{i}.toml"), raw);
            }
        }
        for (i, invalid) in invalid_table(&text).into_iter().enumerate() {
            out.write("config", &format!("{stem}-invalid{i}.toml"), invalid);
        }
    }
}

/// The contents of every `r#"…"#` literal in Rust source.
fn raw_strings(src: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = src;
    while let Some(start) = rest.find("r#\"") {
        let after = &rest[start + 3..];
        let Some(end) = after.find("\"#") else { break };
        found.push(after[..end].to_string());
        rest = &after[end + 2..];
    }
    found
}

/// The first string of each `("…", "…")` pair of the tests' table of invalid files
/// (`let table: &[(&str, &str)] = &[ … ];`).
fn invalid_table(src: &str) -> Vec<String> {
    let Some(start) = src.find("let table: &[(&str, &str)] = &[") else {
        return Vec::new();
    };
    let body = &src[start..];
    let body = &body[..body.find("\n        ];").unwrap_or(body.len())];
    let mut found = Vec::new();
    let mut chars = body.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '(' {
            continue;
        }
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().map(|(_, c)| *c) != Some('"') {
            continue;
        }
        chars.next();
        if let Some(s) = string_literal(&mut chars) {
            found.push(s);
        }
    }
    found
}

/// A Rust string literal's value, its opening quote already read; `None` if it does not end.
fn string_literal(chars: &mut impl Iterator<Item = (usize, char)>) -> Option<String> {
    let mut s = String::new();
    let mut continued = false;
    loop {
        let (_, c) = chars.next()?;
        if continued && c.is_whitespace() {
            continue;
        }
        continued = false;
        match c {
            '"' => return Some(s),
            '\\' => match chars.next()?.1 {
                'n' => s.push('\n'),
                't' => s.push('\t'),
                'r' => s.push('\r'),
                '0' => s.push('\0'),
                '\\' => s.push('\\'),
                '"' => s.push('"'),
                '\'' => s.push('\''),
                // A line continuation: the newline and the next line's indentation are dropped.
                '\n' => continued = true,
                'u' => {
                    let mut hex = String::new();
                    for (_, c) in chars.by_ref() {
                        match c {
                            '{' => {}
                            '}' => break,
                            c => hex.push(c),
                        }
                    }
                    s.extend(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32));
                }
                other => {
                    s.push('\\');
                    s.push(other);
                }
            },
            c => s.push(c),
        }
    }
}
