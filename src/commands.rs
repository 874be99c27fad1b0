//! The one-shot verbs: `tokens`, `audit`, `config check`, `notify-test`.
//!
//! Each returns what to print and the exit code instead of printing, so tests can read the output.
//! Exit codes: 0 all is well, 1 findings (or a failed sink), 2 the command could not run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::alerts::{self, Notification};
use crate::checks::{self, Finding, Severity, Snapshot};
use crate::config::Loaded;
use crate::metrics::Metrics;
use crate::registry::model::{Profile, Token};
use crate::runtime::Runtime;

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
    let snap = Snapshot {
        now,
        registry: &rt.registry,
        tokens: Some(&tokens),
        profile: Some(&profile),
        // One-shot commands have no memory of earlier runs, so nothing counts as newly created.
        seen_tokens: None,
        health: &[],
        packages: None,
        orgs: None,
        trust: None,
        previous_maintainers: None,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Fail,
    Unverified,
}

#[derive(Debug, Serialize)]
pub struct DodRow {
    pub id: &'static str,
    pub title: &'static str,
    pub status: Verdict,
    pub evidence: Vec<String>,
}

#[derive(Serialize)]
struct AuditReport<'a> {
    /// Bumped when a field changes meaning.
    schema: u32,
    registry: &'a str,
    account: Option<&'a str>,
    generated_at: DateTime<Utc>,
    result: &'static str,
    dod: &'a [DodRow],
    findings: &'a [Finding],
}

/// The Definition-of-Done rows this version can judge from the token list.
pub fn dod_rows(
    tokens: &[Token],
    findings: &[Finding],
    now: DateTime<Utc>,
    policy: &crate::config::PolicyConfig,
) -> Vec<DodRow> {
    let present: Vec<String> = checks::not_allowlisted(tokens, policy, now)
        .map(|t| {
            format!(
                "{} ({} {}, created {})",
                t.label(),
                t.kind.as_str(),
                t.access.as_str(),
                date(t.created)
            )
        })
        .collect();
    let d5 = DodRow {
        id: "D5",
        title: "every static npm token on the account is deleted",
        status: if present.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        evidence: if present.is_empty() {
            vec![format!("{} token(s) listed, all allowlisted", tokens.len())]
        } else {
            present
        },
    };
    let bypass: Vec<String> = findings
        .iter()
        .filter(|f| f.check == "token-bypass-2fa")
        .map(|f| format!("{}: {}", f.subject, f.summary))
        .collect();
    let d9 = DodRow {
        id: "D9",
        title: "the temporary bypass-2FA bulk-hardening token has been deleted",
        status: if bypass.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        evidence: if bypass.is_empty() {
            vec!["no bypass-2FA token on the account".into()]
        } else {
            bypass
        },
    };
    vec![d5, d9]
}

/// `npm-watchdog audit`: the DoD rows it can judge, then every finding.
pub async fn audit(rt: &Runtime, format: Format) -> Result<Outcome, CommandError> {
    let live = read_live(rt).await?;
    let mut findings = live.findings.clone();
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.check.cmp(&b.check)));
    let rows = dod_rows(&live.tokens, &findings, live.now, &rt.config.policy);
    let failed = rows.iter().any(|r| r.status == Verdict::Fail) || !findings.is_empty();
    let stdout = match format {
        Format::Json => {
            let report = AuditReport {
                schema: 1,
                registry: rt.registry.as_str(),
                account: live.profile.name.as_deref(),
                generated_at: live.now,
                result: if failed { "fail" } else { "pass" },
                dod: &rows,
                findings: &findings,
            };
            serde_json::to_string_pretty(&report).map_err(CommandError::from)? + "\n"
        }
        Format::Table => {
            let mut out = format!(
                "npm-watchdog audit of {} ({}) at {}\n\nDefinition of Done\n",
                live.profile.name.as_deref().unwrap_or("unknown account"),
                rt.registry,
                live.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            for r in &rows {
                let status = match r.status {
                    Verdict::Pass => "PASS",
                    Verdict::Fail => "FAIL",
                    Verdict::Unverified => "UNVERIFIED",
                };
                let _ = writeln!(out, "  {:<3} {:<10} {}", r.id, status, r.title);
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
    use crate::checks::fixtures;

    #[test]
    fn dod_rows_from_fixture_tokens() {
        let tokens = fixtures::tokens();
        let reg = fixtures::registry();
        let snap = Snapshot {
            now: fixtures::now(),
            registry: &reg,
            tokens: Some(&tokens),
            profile: None,
            seen_tokens: None,
            health: &[],
            packages: None,
            orgs: None,
            trust: None,
            previous_maintainers: None,
        };
        let (findings, _) = checks::run_group("tokens", &snap, &fixtures::policy());
        let rows = dod_rows(&tokens, &findings, fixtures::now(), &fixtures::policy());
        assert_eq!(rows[0].status, Verdict::Fail);
        assert_eq!(rows[0].evidence.len(), 4);
        assert!(
            rows[0].evidence[0].starts_with("token b5c1d2 (bulk-hardening) (granular read-write")
        );
        assert_eq!(rows[1].status, Verdict::Fail);
        assert_eq!(rows[1].evidence.len(), 2);
        let none = dod_rows(&tokens[..1], &[], fixtures::now(), &fixtures::policy());
        assert_eq!(
            (none[0].status, none[1].status),
            (Verdict::Pass, Verdict::Pass)
        );
        assert_eq!(
            none[0].evidence,
            vec!["1 token(s) listed, all allowlisted".to_string()]
        );
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
