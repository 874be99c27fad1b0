//! The one-shot verbs: `tokens`, `audit`, `config check`, `notify-test`.
//!
//! Each returns what to print and the exit code instead of printing, so tests can read the output.
//! Exit codes: 0 all is well, 1 findings (or a failed sink), 2 the command could not run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::alerts::{self, Notification};
use crate::checks::{self, Finding, Severity, Snapshot, TrustStatus};
use crate::collect;
use crate::config::Loaded;
use crate::credential::Credential;
use crate::dod::{self, DodRow, Verdict};
use crate::metrics::Metrics;
use crate::registry::model::{Profile, Token};
use crate::registry::{RegistryClient, RegistryError};
use crate::runtime::Runtime;
use crate::state::State;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FINDINGS: i32 = 1;
pub const EXIT_CANNOT_RUN: i32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// What a command prints on standard output, and how it exits.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
}

/// A command that could not run; printed on standard error, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(pub String);

impl CommandError {
    fn from<E: std::fmt::Display>(e: E) -> Self {
        Self(e.to_string())
    }
}

/// What the token group sees right now, without the daemon's state.
struct Live {
    tokens: Vec<Token>,
    profile: Profile,
    findings: Vec<Finding>,
    now: DateTime<Utc>,
}

async fn read_live(rt: &Runtime) -> Result<Live, CommandError> {
    let cred = rt.credential().map_err(CommandError::from)?;
    let client = rt.client(Metrics::new()).map_err(CommandError::from)?;
    let (tokens, profile) = tokio::join!(client.list_tokens(&cred), client.profile(&cred));
    let tokens = tokens.map_err(CommandError::from)?;
    let profile = profile.map_err(CommandError::from)?;
    let now = Utc::now();
    // One-shot commands have no memory of earlier runs (`seen_tokens` stays `None`), so nothing
    // counts as newly created.
    let snap = Snapshot {
        tokens: Some(&tokens),
        profile: Some(&profile),
        ..Snapshot::new(now, &rt.registry)
    };
    let (findings, _) = checks::run_group("tokens", &snap, &rt.config.policy);
    Ok(Live {
        tokens,
        profile,
        findings,
        now,
    })
}

fn date(t: Option<DateTime<Utc>>) -> String {
    t.map_or("-".to_string(), |t| t.format("%Y-%m-%d").to_string())
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{:<w$}  ", c, w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

#[derive(Serialize)]
struct TokenRow<'a> {
    id: &'a str,
    key: &'a str,
    name: Option<&'a str>,
    kind: &'static str,
    access: &'static str,
    bypass_2fa: bool,
    cidr: &'a [String],
    created: Option<DateTime<Utc>>,
    expires: Option<DateTime<Utc>>,
    last_used: Option<DateTime<Utc>>,
    allowlisted: bool,
    risk: Option<Severity>,
    findings: Vec<&'a str>,
}

/// `npm-watchdog tokens`: every token with its risk.
pub async fn tokens(rt: &Runtime, format: Format) -> Result<Outcome, CommandError> {
    let live = read_live(rt).await?;
    let rows: Vec<TokenRow> = live
        .tokens
        .iter()
        .map(|t| {
            let mine: Vec<&Finding> = live
                .findings
                .iter()
                .filter(|f| f.subject_key == t.key)
                .collect();
            TokenRow {
                id: &t.id,
                key: &t.key,
                name: t.name.as_deref(),
                kind: t.kind.as_str(),
                access: t.access.as_str(),
                bypass_2fa: t.bypass_2fa,
                cidr: &t.cidr,
                created: t.created,
                expires: t.expires,
                last_used: t.accessed,
                allowlisted: rt.config.policy.is_allowlisted(&t.key, live.now),
                risk: mine.iter().map(|f| f.severity).max(),
                findings: mine.iter().map(|f| f.check.as_str()).collect(),
            }
        })
        .collect();
    let stdout = match format {
        Format::Json => serde_json::to_string_pretty(&rows).map_err(CommandError::from)? + "\n",
        Format::Table => {
            if rows.is_empty() {
                "No tokens on the account.\n".to_string()
            } else {
                let body: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        let risk = match (r.risk, r.allowlisted) {
                            (Some(s), _) => format!("{s}: {}", r.findings.join(", ")),
                            (None, true) => "allowlisted".into(),
                            (None, false) => "-".into(),
                        };
                        vec![
                            r.id.to_string(),
                            r.name.unwrap_or("-").to_string(),
                            r.kind.to_string(),
                            r.access.to_string(),
                            if r.bypass_2fa { "yes" } else { "no" }.to_string(),
                            date(r.created),
                            date(r.expires),
                            date(r.last_used),
                            risk,
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID",
                        "NAME",
                        "KIND",
                        "ACCESS",
                        "BYPASS-2FA",
                        "CREATED",
                        "EXPIRES",
                        "LAST USED",
                        "RISK",
                    ],
                    &body,
                )
            }
        }
    };
    Ok(Outcome {
        code: EXIT_OK,
        stdout,
    })
}

#[derive(Serialize)]
struct AuditReport<'a> {
    /// Bumped when a field changes meaning.
    schema: u32,
    registry: &'a str,
    account: Option<&'a str>,
    generated_at: DateTime<Utc>,
    /// `fail` when any box FAILs or any finding exists; UNVERIFIED boxes do not fail the audit.
    result: &'static str,
    packages: Vec<&'a str>,
    dod: &'a [DodRow],
    findings: &'a [Finding],
}

/// Read trust configs: without an OTP only the first package is tried (the registry normally demands
/// one, and one EOTP says so for all); with one, every package, stopping at the first rejected OTP.
async fn read_trust(
    client: &RegistryClient,
    cred: &Credential,
    names: impl Iterator<Item = &String>,
    otp: Option<&str>,
) -> BTreeMap<String, TrustStatus> {
    let mut out = BTreeMap::new();
    let mut otp_refused = false;
    for name in names {
        if otp_refused {
            out.insert(name.clone(), TrustStatus::NeedsOtp);
            continue;
        }
        let status = match client.trust(name, cred, otp).await {
            Ok(cfgs) => TrustStatus::Read(cfgs),
            Err(RegistryError::OtpRequired { .. }) => {
                otp_refused = true;
                TrustStatus::NeedsOtp
            }
            Err(e) => TrustStatus::Failed(e.to_string()),
        };
        out.insert(name.clone(), status);
    }
    out
}

/// `npm-watchdog audit`: the Definition of Done (D1-D9) with evidence, then every finding.
pub async fn audit(
    rt: &Runtime,
    format: Format,
    otp: Option<&str>,
) -> Result<Outcome, CommandError> {
    let live = read_live(rt).await?;
    let cred = rt.credential().map_err(CommandError::from)?;
    let client = rt.client(Metrics::new()).map_err(CommandError::from)?;
    let cfg = &rt.config;
    let watching =
        !(cfg.watch.users.is_empty() && cfg.watch.orgs.is_empty() && cfg.watch.packages.is_empty());
    let mut errors = Vec::new();
    let packages = if watching {
        let found = collect::discover(&client, &cfg.watch, &cred).await;
        errors.extend(found.errors);
        let read = collect::read_packages(
            &client,
            &found.packages,
            &cred,
            None,
            cfg.registry.concurrency,
            cfg.policy.trusted_publishing_since,
        )
        .await
        .map_err(CommandError::from)?;
        errors.extend(read.errors);
        Some(read.set)
    } else {
        None
    };
    let orgs = if cfg.watch.orgs.is_empty() {
        None
    } else {
        let (views, errs) = collect::read_orgs(&client, &cfg.watch.orgs, &cred, None)
            .await
            .map_err(CommandError::from)?;
        errors.extend(errs);
        Some(views)
    };
    if !errors.is_empty() {
        return Err(CommandError(format!(
            "the audit could not read everything it needs:\n  {}",
            errors.join("\n  ")
        )));
    }
    let trust = match &packages {
        Some(p) if !p.packuments.is_empty() => {
            Some(read_trust(&client, &cred, p.packuments.keys(), otp).await)
        }
        _ => None,
    };
    // Without an OTP and with the registry refusing, there is nothing to judge: leave D1/D2 unverified.
    let trust =
        trust.filter(|t| otp.is_some() || t.values().any(|s| matches!(s, TrustStatus::Read(_))));
    let snap = Snapshot {
        tokens: Some(&live.tokens),
        profile: Some(&live.profile),
        packages: packages.as_ref(),
        orgs: orgs.as_deref(),
        trust: trust.as_ref(),
        ..Snapshot::new(live.now, &rt.registry)
    };
    let mut findings = live.findings.clone();
    for group in ["packages", "org", "trust"] {
        findings.extend(checks::run_group(group, &snap, &cfg.policy).0);
    }
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.check.cmp(&b.check)));
    let hardened = match State::open_existing(&rt.state_path) {
        Some(Ok(state)) => state.hardened().map_err(CommandError::from)?,
        Some(Err(e)) => return Err(CommandError::from(e)),
        None => BTreeMap::new(),
    };
    let rows = dod::scorecard(&dod::Input {
        now: live.now,
        policy: &cfg.policy,
        tokens: &live.tokens,
        findings: &findings,
        packages: packages.as_ref(),
        orgs: orgs.as_deref(),
        trust: trust.as_ref(),
        hardened: &hardened,
    });
    let failed = rows.iter().any(|r| r.status == Verdict::Fail) || !findings.is_empty();
    let stdout = match format {
        Format::Json => {
            let report = AuditReport {
                schema: 1,
                registry: rt.registry.as_str(),
                account: live.profile.name.as_deref(),
                generated_at: live.now,
                result: if failed { "fail" } else { "pass" },
                packages: packages
                    .as_ref()
                    .map(|p| p.packuments.keys().map(String::as_str).collect())
                    .unwrap_or_default(),
                dod: &rows,
                findings: &findings,
            };
            serde_json::to_string_pretty(&report).map_err(CommandError::from)? + "\n"
        }
        Format::Table => {
            let mut out = format!(
                "npm-watchdog audit of {} ({}) at {}\n",
                live.profile.name.as_deref().unwrap_or("unknown account"),
                rt.registry,
                live.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            if let Some(p) = &packages {
                let _ = writeln!(out, "{} package(s) watched", p.packuments.len());
            }
            out.push_str("\nDefinition of Done\n");
            for r in &rows {
                let _ = writeln!(out, "  {:<3} {:<10} {}", r.id, r.status.as_str(), r.title);
                for e in &r.evidence {
                    let _ = writeln!(out, "                 - {e}");
                }
            }
            let _ = writeln!(out, "\nFindings ({})", findings.len());
            if findings.is_empty() {
                out.push_str("  none\n");
            }
            for f in &findings {
                let _ = writeln!(out, "  [{}] {}: {}", f.severity, f.check, f.subject);
                let _ = writeln!(out, "      {}", f.summary);
                let _ = writeln!(out, "      fix: {}", f.fix);
            }
            out
        }
    };
    Ok(Outcome {
        code: if failed { EXIT_FINDINGS } else { EXIT_OK },
        stdout,
    })
}

/// `npm-watchdog harden --otp CODE [--dry-run]`: set "Require 2FA and disallow tokens" on every
/// watched package, one request each, recording each success in the state. A rejected OTP stops the
/// run (it would be rejected for the rest too) and the report lists what was and was not done.
pub async fn harden(rt: &Runtime, otp: &str, dry_run: bool) -> Result<Outcome, CommandError> {
    let cred = rt.credential().map_err(CommandError::from)?;
    let client = rt.client(Metrics::new()).map_err(CommandError::from)?;
    let found = collect::discover(&client, &rt.config.watch, &cred).await;
    if !found.errors.is_empty() {
        return Err(CommandError(format!(
            "cannot list the watched packages:\n  {}",
            found.errors.join("\n  ")
        )));
    }
    if found.packages.is_empty() {
        return Err(CommandError(
            "no package is watched: set watch.users, watch.orgs or watch.packages".into(),
        ));
    }
    let mut out = String::new();
    if dry_run {
        let _ = writeln!(
            out,
            "would set \"Require 2FA and disallow tokens\" on {} package(s) (POST /-/package/<name>/access):",
            found.packages.len()
        );
        for p in &found.packages {
            let _ = writeln!(out, "  {p}");
        }
        return Ok(Outcome {
            code: EXIT_OK,
            stdout: out,
        });
    }
    let state = State::open(&rt.state_path).map_err(CommandError::from)?;
    let mut done = Vec::new();
    let mut failed = Vec::new();
    let mut not_done = Vec::new();
    let mut stopped = None;
    for name in &found.packages {
        if stopped.is_some() {
            not_done.push(name.clone());
            continue;
        }
        match client.require_2fa_disallow_tokens(name, &cred, otp).await {
            Ok(()) => {
                state
                    .record_hardened(name, Utc::now())
                    .map_err(CommandError::from)?;
                let _ = writeln!(out, "ok      {name}");
                done.push(name.clone());
            }
            Err(RegistryError::OtpRequired { .. }) => {
                stopped = Some("the one-time password was rejected or has expired".to_string());
                not_done.push(name.clone());
            }
            Err(e) => {
                let _ = writeln!(out, "FAILED  {name}: {e}");
                failed.push(name.clone());
            }
        }
    }
    let _ = writeln!(
        out,
        "\n{} of {} package(s) now require 2FA and disallow tokens; {} failed; {} not attempted",
        done.len(),
        found.packages.len(),
        failed.len(),
        not_done.len()
    );
    if let Some(why) = stopped {
        let _ = writeln!(
            out,
            "stopped: {why}; run again with a fresh code to finish:"
        );
        for n in &not_done {
            let _ = writeln!(out, "  not done: {n}");
        }
    }
    let code = if failed.is_empty() && not_done.is_empty() {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    };
    Ok(Outcome { code, stdout: out })
}

/// `npm-watchdog config check`: the effective configuration (redacted), where each open setting came
/// from, and whether the files it names can be read. Secrets are never printed, only their paths.
pub fn config_check(loaded: &Loaded, rt: &Runtime) -> Outcome {
    let mut out = String::new();
    let mut problems = Vec::new();
    let _ = writeln!(
        out,
        "# config file: {}",
        loaded.file.as_ref().map_or(
            "none (built-in defaults and environment)".to_string(),
            |p| p.display().to_string()
        )
    );
    let _ = writeln!(out, "# registry: {} ({})", rt.registry, rt.registry_origin);
    match rt.credential() {
        Ok(c) => {
            let _ = writeln!(out, "# credential: {}", c.source);
        }
        Err(e) => {
            let _ = writeln!(out, "# credential: ERROR: {e}");
            problems.push(e.to_string());
        }
    }
    let _ = writeln!(
        out,
        "# state: {} ({})",
        rt.state_path.display(),
        rt.state_origin
    );
    let cfg = &rt.config;
    let mut secret_files = Vec::new();
    for (i, e) in cfg.alerts.email.iter().enumerate() {
        if let Some(p) = &e.password_file {
            secret_files.push((format!("alerts.email[{i}].password_file"), p.clone()));
        }
    }
    for (i, w) in cfg.alerts.webhook.iter().enumerate() {
        if let Some(p) = &w.secret_file {
            secret_files.push((format!("alerts.webhook[{i}].secret_file"), p.clone()));
        }
    }
    for (key, path) in secret_files {
        match std::fs::read(&path) {
            Ok(b) if b.iter().all(u8::is_ascii_whitespace) => {
                problems.push(format!("{key}: {} is empty", path.display()))
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("{key}: {}: {}", path.display(), e.kind())),
        }
    }
    let sinks: Vec<String> = match alerts::build_sinks(&cfg.alerts) {
        Ok(s) => s
            .iter()
            .map(|s| format!("{} (min {})", s.name(), s.min_severity()))
            .collect(),
        Err(e) => {
            problems.push(format!("alerts: {e}"));
            Vec::new()
        }
    };
    let _ = writeln!(out, "# sinks: {}", sinks.join(", "));
    out.push('\n');
    out.push_str(&cfg.to_redacted_toml());
    for p in &problems {
        let _ = writeln!(out, "# PROBLEM: {p}");
    }
    Outcome {
        code: if problems.is_empty() {
            EXIT_OK
        } else {
            EXIT_CANNOT_RUN
        },
        stdout: out,
    }
}

/// `npm-watchdog healthcheck`: ask the running daemon's `/healthz` (for container health checks, so the
/// image needs no curl). A wildcard listen address is reached on loopback.
pub async fn healthcheck(rt: &Runtime) -> Outcome {
    let mut addr = rt.config.server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!("http://{addr}/healthz");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .no_proxy()
        .build();
    let result = match client {
        Ok(c) => c.get(&url).send().await.map(|r| r.status()),
        Err(e) => Err(e),
    };
    match result {
        Ok(status) if status.is_success() => Outcome {
            code: EXIT_OK,
            stdout: format!("ok: {url} answered {}\n", status.as_u16()),
        },
        Ok(status) => Outcome {
            code: EXIT_FINDINGS,
            stdout: format!("unhealthy: {url} answered {}\n", status.as_u16()),
        },
        Err(e) => Outcome {
            code: EXIT_FINDINGS,
            stdout: format!(
                "unhealthy: {url}: {}\n",
                if e.is_timeout() {
                    "timed out".to_string()
                } else {
                    "no answer".to_string()
                }
            ),
        },
    }
}

/// `npm-watchdog notify-test`: one test message through every sink, each result reported.
pub async fn notify_test(rt: &Runtime) -> Result<Outcome, CommandError> {
    let sinks = alerts::build_sinks(&rt.config.alerts).map_err(CommandError::from)?;
    let note = Notification::test(Utc::now());
    let mut out = String::new();
    let mut failed = 0;
    let mut results = BTreeMap::new();
    for s in &sinks {
        let r = s.send(&note).await;
        if r.is_err() {
            failed += 1;
        }
        results.insert(s.name().to_string(), r);
    }
    for (name, r) in results {
        match r {
            Ok(()) => {
                let _ = writeln!(out, "{name}: ok");
            }
            Err(e) => {
                let _ = writeln!(out, "{name}: FAILED: {e}");
            }
        }
    }
    Ok(Outcome {
        code: if failed == 0 { EXIT_OK } else { EXIT_FINDINGS },
        stdout: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
