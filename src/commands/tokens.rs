//! `npm-watchdog tokens`: every token of the account with its risk, the daemon's own marked.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::table::{date, table};
use super::{CommandError, Format, Outcome, Session, EXIT_OK};
use crate::checks;
use crate::finding::{Finding, Severity};
use crate::runtime::Runtime;

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
    /// The daemon's own credential.
    own: bool,
    /// Past its expiry: still listed by the registry, but it can no longer be used.
    expired: bool,
    risk: Option<Severity>,
    findings: Vec<&'a str>,
}

pub async fn tokens(rt: &Runtime, format: Format) -> Result<Outcome, CommandError> {
    let live = Session::open(rt)?.read_tokens().await?;
    let policy = &rt.config.policy;
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
                allowlisted: policy.is_allowlisted(&t.key, live.now),
                own: checks::is_own_token(t, Some(&live.own_key), policy),
                expired: t.is_expired(live.now),
                risk: mine.iter().map(|f| f.severity).max(),
                findings: mine.iter().map(|f| &*f.check).collect(),
            }
        })
        .collect();
    let stdout = match format {
        Format::Json => serde_json::to_string_pretty(&rows).map_err(CommandError::from)? + "\n",
        Format::Table if rows.is_empty() => "No tokens on the account.\n".to_string(),
        Format::Table => {
            let body: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let mut risk = match (r.risk, r.allowlisted, r.expired) {
                        (Some(s), _, _) => format!("{s}: {}", r.findings.join(", ")),
                        (None, _, true) => "expired (still listed, cannot be used)".into(),
                        (None, true, false) => "allowlisted".into(),
                        (None, false, false) => "-".into(),
                    };
                    if r.own {
                        risk.push_str(" (npm-watchdog's own credential)");
                    }
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
    };
    Ok(Outcome {
        code: EXIT_OK,
        stdout: stdout.into(),
    })
}
