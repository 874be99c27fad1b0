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

use super::otp::{Attended, Otp, Stop, EXIT_NEEDS_OTP};
use super::{CommandError, Format, Outcome, Session, Stdout, EXIT_FINDINGS, EXIT_OK};
use crate::checks::{self, Group, PackageSet, Snapshot, TrustStatus};
use crate::ci::{self, CiInventory};
use crate::collect;
use crate::dod::{self, DodRow, Verdict};
use crate::finding::Finding;
use crate::inert;
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
    /// Why the trust reads stopped before the end (no fresh one-time password could be had); the
    /// packages not read are UNVERIFIED in D1/D2.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped: Option<String>,
}

/// Read trust configs, which the registry keeps behind 2FA, in rounds: every package not read yet,
/// at most `registry.concurrency` at a time, with the current code. The first package is the probe,
/// read while the packuments are (see [`read_watched`]); when it is challenged the others are not
/// asked with the same code. Once a code is refused (one-time codes expire), the reads not yet sent
/// are not sent; a fresh code is got ([`Otp::renew`]: asked on a terminal) and the refused and
/// unsent ones are read in the next round. When no code can be had, they stay `NeedsOtp` and the
/// stop says why.
async fn read_trust(
    session: &Session<'_>,
    names: impl Iterator<Item = &String>,
    probe: Option<TrustRead>,
    otp: &mut Otp,
) -> (BTreeMap<String, TrustStatus>, Option<Stop>) {
    let names: Vec<String> = names.cloned().collect();
    let (Some(first), Some(probe)) = (names.first(), probe) else {
        return (BTreeMap::new(), None);
    };
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
    let cred = session.trust_cred();
    let mut challenge = None;
    let mut pending: Vec<String> = match probe {
        Err(RegistryError::OtpRequired { web, .. }) => {
            challenge = Some(web);
            names.clone()
        }
        read => {
            otp.accepted_if(read.is_ok());
            out.insert(first.clone(), trust_status(read));
            names[1..].to_vec()
        }
    };
    loop {
        if let Some(web) = challenge.take() {
            // Without a code and without a terminal to ask for one there is nothing to renew: the
            // scorecard says what is needed, and that is not a stop.
            if !otp.has_code() && !otp.can_ask() {
                mark_needs_otp(&mut out, &pending);
                return (out, None);
            }
            if let Err(stop) = otp.renew(&session.client, cred, web.as_ref()).await {
                mark_needs_otp(&mut out, &pending);
                return (out, Some(stop));
            }
        }
        if pending.is_empty() {
            return (out, None);
        }
        let refused = Arc::new(AtomicBool::new(false));
        let reads = std::mem::take(&mut pending).into_iter().map(|name| {
            let client = session.client.clone();
            let cred = cred.clone();
            let code = otp.code().map(str::to_string);
            let refused = Arc::clone(&refused);
            async move {
                if refused.load(Ordering::Relaxed) {
                    return (name, None);
                }
                let read = client.trust(&name, &cred, code.as_deref()).await;
                if matches!(read, Err(RegistryError::OtpRequired { .. })) {
                    refused.store(true, Ordering::Relaxed);
                }
                (name, Some(read))
            }
        });
        let mut web = None;
        let mut any_read = false;
        collect::bounded(reads, session.rt.config.registry.concurrency, |joined| {
            match joined {
                // Refused, or not sent because another was: read again with a fresh code.
                Ok((name, None)) => pending.push(name),
                Ok((name, Some(Err(RegistryError::OtpRequired { web: w, .. })))) => {
                    web = web.take().or(w);
                    pending.push(name);
                }
                Ok((name, Some(read))) => {
                    any_read |= read.is_ok();
                    out.insert(name, trust_status(read));
                }
                Err(_) => {}
            }
        })
        .await;
        otp.accepted_if(any_read);
        if !pending.is_empty() {
            challenge = Some(web);
        }
    }
}

/// The result of one trust read, before it is judged.
type TrustRead = Result<Vec<TrustConfig>, RegistryError>;

fn mark_needs_otp(out: &mut BTreeMap<String, TrustStatus>, names: &[String]) {
    for n in names {
        out.insert(n.clone(), TrustStatus::NeedsOtp);
    }
}

fn trust_status(read: TrustRead) -> TrustStatus {
    match read {
        Ok(cfgs) => TrustStatus::Read(cfgs),
        Err(RegistryError::OtpRequired { .. }) => TrustStatus::NeedsOtp,
        // Not a verdict: the credential may not read trust. Say which permission is missing.
        Err(e @ RegistryError::Forbidden { .. }) => TrustStatus::Failed(format!(
            "{e}; reading trust configurations needs the write credential (npmjs.com refuses a \
             read-only token): {}",
            super::WRITE_CREDENTIAL_HINT
        )),
        Err(e @ RegistryError::Unauthorized { .. }) => TrustStatus::Failed(format!(
            "{e}; reading trust configurations needs your own npm login session as the write \
             credential (npmjs.com refuses granular tokens there, bypass-2FA or not): {}",
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
    trust_probe: Option<TrustRead>,
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
                Some(name) => Some(session.client.trust(name, session.trust_cred(), otp).await),
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

/// How `audit` runs.
pub struct AuditArgs<'a> {
    pub format: Format,
    /// The one-time password for the trust reads; on a terminal one is asked for when needed.
    pub otp: Option<&'a str>,
    pub attended: Attended,
    pub write_token_file: Option<&'a std::path::Path>,
}

pub async fn audit(rt: &Runtime, args: AuditArgs<'_>) -> Result<Outcome, CommandError> {
    let AuditArgs {
        format,
        otp,
        attended,
        write_token_file,
    } = args;
    let mut session = Session::open(rt)?;
    let mut otp = Otp::new(otp, attended);
    if otp.has_code() || otp.can_ask() {
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
        read_watched(&session, otp.code()),
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
    let (trust, stop) = match &packages {
        Some(p) if !p.packuments.is_empty() => {
            let (t, stop) = read_trust(&session, p.packuments.keys(), trust_probe, &mut otp).await;
            (Some(t), stop)
        }
        _ => (None, None),
    };
    // Without a code and with the registry refusing, there is nothing to judge: leave D1/D2 unverified.
    let trust =
        trust.filter(|t| otp.has_code() || t.values().any(|s| matches!(s, TrustStatus::Read(_))));
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
    let not_read = trust.as_ref().map_or(0, |t| {
        t.values()
            .filter(|s| matches!(s, TrustStatus::NeedsOtp))
            .count()
    });
    let stopped = stop.map(|Stop(why)| {
        format!(
            "reading trust configurations stopped: {why}; {not_read} package(s) were not read \
             (UNVERIFIED in D1 and D2)"
        )
    });
    let code = match (&stopped, failed) {
        (Some(_), _) => EXIT_NEEDS_OTP,
        (None, true) => EXIT_FINDINGS,
        (None, false) => EXIT_OK,
    };
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
                stopped,
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
                // Evidence names packages, tokens and accounts: shown inert, one line each.
                for e in &r.evidence {
                    let _ = writeln!(
                        out,
                        "                 - {}",
                        inert::show_at_most(e, inert::TEXT_CHARS)
                    );
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
            if let Some(why) = stopped {
                let _ = writeln!(out, "\n{why}");
            }
            Stdout::Text(out)
        }
    };
    Ok(Outcome { code, stdout })
}
