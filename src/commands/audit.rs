//! `npm-watchdog audit`: the Definition of Done (D1-D9) with its evidence, then every finding.
//!
//! It reads what the daemon reads (tokens, the watched packages, orgs) and, with `--otp`, the trust
//! configurations, which the registry keeps behind 2FA, and the CI providers' secrets when `[[ci.*]]`
//! names some. Nothing it could not read counts as a pass: a registry read that fails stops the audit
//! (exit 2), and what cannot be read at all (a CI list included) is UNVERIFIED.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{CommandError, Format, Outcome, Session, Stdout, EXIT_FINDINGS, EXIT_OK};
use crate::checks::{self, Group, PackageSet, Snapshot, TrustStatus};
use crate::ci::{self, CiInventory};
use crate::collect;
use crate::dod::{self, DodRow, Verdict};
use crate::finding::Finding;
use crate::registry::{OrgView, RegistryError, TrustConfig};
use crate::runtime::Runtime;
use crate::state::State;

#[derive(Serialize)]
struct AuditReport {
    /// Bumped when a field changes meaning.
    schema: u32,
    registry: String,
    account: Option<String>,
    generated_at: DateTime<Utc>,
    /// `fail` when any box FAILs or any finding exists; UNVERIFIED boxes do not fail the audit.
    result: &'static str,
    packages: Vec<String>,
    dod: Vec<DodRow>,
    findings: Vec<Finding>,
}

/// Read trust configs, which the registry keeps behind 2FA. The first package is the probe, read
/// while the packuments are (see [`read_watched`]): one EOTP without a code says so for all, and the
/// rest are not asked. Then the others, at most `registry.concurrency` at a time; once a code is
/// rejected (one-time codes expire), the reads not yet sent are not sent.
async fn read_trust(
    session: &Session<'_>,
    names: impl Iterator<Item = &String>,
    probe: Option<TrustStatus>,
    otp: Option<&str>,
) -> BTreeMap<String, TrustStatus> {
    let names: Vec<String> = names.cloned().collect();
    let (Some(first), Some(probe)) = (names.first(), probe) else {
        return BTreeMap::new();
    };
    let refused = Arc::new(AtomicBool::new(matches!(probe, TrustStatus::NeedsOtp)));
    // Every package starts as not read, so one whose read never finishes (a panicked task) keeps
    // D1 and D2 from passing.
    let mut out: BTreeMap<String, TrustStatus> = names
        .iter()
        .map(|n| {
            (
                n.clone(),
                TrustStatus::Failed("the read did not finish".into()),
            )
        })
        .collect();
    out.insert(first.clone(), probe);
    let reads = names.into_iter().skip(1).map(|name| {
        let client = session.client.clone();
        let cred = session.trust_cred().clone();
        let otp = otp.map(str::to_string);
        let refused = Arc::clone(&refused);
        async move {
            if refused.load(Ordering::Relaxed) {
                return (name, TrustStatus::NeedsOtp);
            }
            let status = trust_status(client.trust(&name, &cred, otp.as_deref()).await);
            if matches!(status, TrustStatus::NeedsOtp) {
                refused.store(true, Ordering::Relaxed);
            }
            (name, status)
        }
    });
    let concurrency = session.rt.config.registry.concurrency;
    collect::bounded(reads, concurrency, |joined| {
        if let Ok((name, status)) = joined {
            out.insert(name, status);
        }
    })
    .await;
    out
}

fn trust_status(read: Result<Vec<TrustConfig>, RegistryError>) -> TrustStatus {
    match read {
        Ok(cfgs) => TrustStatus::Read(cfgs),
        Err(RegistryError::OtpRequired { .. }) => TrustStatus::NeedsOtp,
        // Not a verdict: the credential may not read trust. Say which permission is missing.
        Err(e @ RegistryError::Forbidden { .. }) => TrustStatus::Failed(format!(
            "{e}; reading trust configurations needs a credential that can write (npmjs.com \
             refuses a read-only token): {}",
            super::WRITE_CREDENTIAL_HINT
        )),
        Err(e) => TrustStatus::Failed(e.to_string()),
    }
}

/// What the package and org groups read for the audit.
struct Watched {
    packages: Option<PackageSet>,
    orgs: Option<Vec<OrgView>>,
    /// The first package's trust configuration, read beside the packuments.
    trust_probe: Option<TrustStatus>,
    errors: Vec<collect::ReadError>,
}

/// The watched packages (with the trust probe) and orgs, side by side: they do not depend on each
/// other, so the audit waits for the longest of them rather than for their sum.
async fn read_watched(session: &Session<'_>, otp: Option<&str>) -> Watched {
    let cfg = &session.rt.config;
    let packages = async {
        if !Group::Packages.is_watched(cfg) {
            return (None, None, Vec::new());
        }
        let found = collect::discover(&session.client, &cfg.watch, &session.cred).await;
        let probe = async {
            match found.packages.first() {
                Some(name) => Some(trust_status(
                    session.client.trust(name, session.trust_cred(), otp).await,
                )),
                None => None,
            }
        };
        let (nothing_stored, no_provenance) = (BTreeMap::new(), BTreeMap::new());
        let (read, probe) = tokio::join!(
            collect::read_packages(
                &session.client,
                &found.packages,
                &session.cred,
                &nothing_stored,
                &no_provenance,
                cfg.registry.concurrency,
                cfg.policy.trusted_publishing_since,
            ),
            probe
        );
        let mut errors = found.errors;
        errors.extend(read.errors);
        (Some(read.set), probe, errors)
    };
    let orgs = async {
        if !Group::Org.is_watched(cfg) {
            return (None, Vec::new());
        }
        let read = collect::read_orgs(
            &session.client,
            &cfg.watch.orgs,
            &session.cred,
            &BTreeMap::new(),
        )
        .await;
        (Some(read.views), read.errors)
    };
    let ((packages, trust_probe, mut errors), (orgs, org_errors)) = tokio::join!(packages, orgs);
    errors.extend(org_errors);
    Watched {
        packages,
        orgs,
        trust_probe,
        errors,
    }
}

/// The configured CI providers, when there are any. Unlike a registry read, a CI list that cannot be
/// read does not stop the audit: D3 shows it as UNVERIFIED, naming the list and why, and what was
/// read is still judged.
async fn read_ci(rt: &Runtime) -> Result<Option<CiInventory>, CommandError> {
    if !Group::Ci.is_watched(&rt.config) {
        return Ok(None);
    }
    let http = rt.ci_http().map_err(|e| CommandError(e.to_string()))?;
    let entries = ci::read_all(&rt.config.ci, &http, rt.ci_limits(), Arc::new(())).await;
    Ok(Some(ci::assemble(entries, &BTreeMap::new()).inventory))
}

pub async fn audit(
    rt: &Runtime,
    format: Format,
    otp: Option<&str>,
    write_token_file: Option<&std::path::Path>,
) -> Result<Outcome, CommandError> {
    let mut session = Session::open(rt)?;
    if otp.is_some() {
        // Trust reads need a credential that can write; without one they go out with the read
        // credential, and a refusal says what is missing. A named file that cannot be read is an
        // error: the user asked for it.
        if let Err(e) = session.with_write(write_token_file) {
            if write_token_file.is_some() {
                return Err(e);
            }
        }
    }
    let cfg = &rt.config;
    let (live, watched, ci) = tokio::join!(
        session.read_tokens(),
        read_watched(&session, otp),
        read_ci(rt)
    );
    let live = live?;
    let ci = ci?;
    let Watched {
        packages,
        orgs,
        trust_probe,
        errors,
    } = watched;
    if !errors.is_empty() {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Err(CommandError(format!(
            "the audit could not read everything it needs:\n  {}",
            lines.join("\n  ")
        )));
    }
    let trust = match &packages {
        Some(p) if !p.packuments.is_empty() => {
            Some(read_trust(&session, p.packuments.keys(), trust_probe, otp).await)
        }
        _ => None,
    };
    // Without an OTP and with the registry refusing, there is nothing to judge: leave D1/D2 unverified.
    let trust =
        trust.filter(|t| otp.is_some() || t.values().any(|s| matches!(s, TrustStatus::Read(_))));
    let snap = Snapshot {
        tokens: Some(&live.live),
        profile: Some(&live.profile),
        own_key: Some(&live.own_key),
        packages: packages.as_ref(),
        orgs: orgs.as_deref(),
        trust: trust.as_ref(),
        ci: ci.as_ref(),
        ..Snapshot::new(live.now, &rt.registry)
    };
    let mut findings = live.findings.clone();
    for group in [Group::Packages, Group::Org, Group::Trust, Group::Ci] {
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
        tokens: &live.live,
        own_key: Some(&live.own_key),
        findings: &findings,
        packages: packages.as_ref(),
        orgs: orgs.as_deref(),
        trust: trust.as_ref(),
        hardened: &hardened,
        ci: ci.as_ref(),
    });
    let failed = rows.iter().any(|r| r.status == Verdict::Fail) || !findings.is_empty();
    let stdout = match format {
        Format::Json => {
            let report = AuditReport {
                schema: 1,
                registry: rt.registry.to_string(),
                account: live.profile.name.clone(),
                generated_at: live.now,
                result: if failed { "fail" } else { "pass" },
                packages: packages
                    .as_ref()
                    .map(|p| p.packuments.keys().cloned().collect())
                    .unwrap_or_default(),
                dod: rows,
                findings,
            };
            // The packages' slim copies are no longer needed while the report is written.
            drop(packages);
            Stdout::Stream(Box::new(move |out: &mut dyn std::io::Write| {
                serde_json::to_writer_pretty(&mut *out, &report)?;
                out.write_all(b"\n")
            }))
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
            Stdout::Text(out)
        }
    };
    Ok(Outcome {
        code: if failed { EXIT_FINDINGS } else { EXIT_OK },
        stdout,
    })
}
