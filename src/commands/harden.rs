//! `npm-watchdog harden [--otp CODE] [--dry-run]`: set "Require 2FA and disallow tokens" on every
//! watched package, one request at a time, paced by `registry.write_interval`, recording each success
//! in the state (the audit shows when). The setting cannot be read back, so this record is the only
//! evidence of it.
//!
//! A one-time code expires part-way through a long run: on a terminal the command asks for a fresh
//! one (or waits for web-based 2FA) and goes on with the package that was refused; off a terminal it
//! stops with [`EXIT_NEEDS_OTP`] and lists what was done and what remains. A run that leaves work
//! undone marks the state, and the next run skips the packages done since that run started, so running
//! again with a new code does only what remains.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::otp::{Attended, Otp, Stop, EXIT_NEEDS_OTP};
use super::{CommandError, Outcome, Session, EXIT_FINDINGS, EXIT_OK};
use crate::collect;
use crate::inert::show;
use crate::lock::StateLock;
use crate::registry::RegistryError;
use crate::runtime::Runtime;
use crate::state::State;

/// How `harden` runs.
pub struct HardenArgs<'a> {
    /// The one-time password to start with; without one, the first challenge is answered as any
    /// later one (asked on a terminal, a stop off one).
    pub otp: Option<&'a str>,
    pub attended: Attended,
    pub dry_run: bool,
    pub write_token_file: Option<&'a std::path::Path>,
}

/// Why a run stopped before the end.
enum Stopped {
    /// No one-time password could be had (off a terminal, or the user gave none).
    Otp(Stop),
    /// The credential may not write: every other package would be refused alike.
    Credential(String),
}

pub async fn harden(rt: &Runtime, args: HardenArgs<'_>) -> Result<Outcome, CommandError> {
    let mut session = Session::open(rt)?;
    if !args.dry_run {
        // Before anything is asked of the registry: a run that cannot write changes nothing.
        session.with_write(args.write_token_file).map_err(|e| {
            CommandError(format!(
                "harden needs a credential that can write, and none could be used ({}): {}",
                e.0,
                super::WRITE_CREDENTIAL_HINT
            ))
        })?;
    }
    // It records into the state, so not while a daemon (or another harden) works on it; taken before
    // the registry is asked anything, so a refused run has changed nothing. A dry run writes nothing
    // and needs no lock.
    let _state_lock = if args.dry_run {
        None
    } else {
        Some(StateLock::acquire(&rt.state_path).map_err(CommandError::from)?)
    };
    let found = collect::discover(&session.client, &rt.config.watch, &session.cred).await;
    if !found.errors.is_empty() {
        let lines: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(CommandError(format!(
            "cannot list the watched packages:\n  {}",
            lines.join("\n  ")
        )));
    }
    if found.packages.is_empty() {
        return Err(CommandError(
            "no package is watched: set watch.own_account, watch.users, watch.orgs or watch.packages"
                .into(),
        ));
    }
    let state = if args.dry_run {
        State::open_existing(&rt.state_path).transpose()
    } else {
        State::open(&rt.state_path).map(Some)
    }
    .map_err(CommandError::from)?;
    let resume = Resume::read(state.as_ref())?;
    let (skipped, todo): (Vec<&String>, Vec<&String>) = found
        .packages
        .iter()
        .partition(|p| resume.done(p).is_some());
    let mut out = String::new();
    // Package names come from the registry's listings: shown inert on the terminal.
    for name in &skipped {
        let at = resume.done(name).map(stamp).unwrap_or_default();
        let _ = writeln!(
            out,
            "skipped {}: done at {at} by the run that stopped before the end",
            show(name)
        );
    }
    let Some(state) = state.filter(|_| !args.dry_run) else {
        let _ = writeln!(
            out,
            "would set \"Require 2FA and disallow tokens\" on {} package(s) (POST /-/package/<name>/access):",
            todo.len()
        );
        for p in &todo {
            let _ = writeln!(out, "  {}", show(p));
        }
        return Ok(Outcome {
            code: EXIT_OK,
            stdout: out.into(),
        });
    };

    let started = Utc::now();
    let cred = session.trust_cred();
    let pace = rt.config.registry.write_interval.0;
    let mut otp = Otp::new(args.otp, args.attended);
    let mut last_write: Option<tokio::time::Instant> = None;
    let mut done = Vec::new();
    let mut failed = Vec::new();
    let mut not_done: Vec<&String> = Vec::new();
    let mut stopped = None;
    for name in todo {
        if stopped.is_some() {
            not_done.push(name);
            continue;
        }
        // The same package again after a fresh code; stops, failures and successes leave the loop.
        loop {
            if let Some(t) = last_write {
                tokio::time::sleep_until(t + pace).await;
            }
            last_write = Some(tokio::time::Instant::now());
            match session
                .client
                .require_2fa_disallow_tokens(name, cred, otp.code())
                .await
            {
                Ok(()) => {
                    otp.accepted();
                    state
                        .record_hardened(name, Utc::now())
                        .map_err(CommandError::from)?;
                    let _ = writeln!(out, "ok      {}", show(name));
                    done.push(name);
                }
                Err(RegistryError::OtpRequired { web, .. }) => {
                    match otp.renew(&session.client, cred, web.as_ref()).await {
                        Ok(()) => continue,
                        Err(stop) => {
                            stopped = Some(Stopped::Otp(stop));
                            not_done.push(name);
                        }
                    }
                }
                Err(e @ (RegistryError::Forbidden { .. } | RegistryError::Unauthorized { .. })) => {
                    stopped = Some(Stopped::Credential(format!(
                        "{e}; changing a package's settings needs a credential that can write \
                         (npmjs.com refuses a read-only token, and a token that bypasses 2FA \
                         may not change settings): {}",
                        super::WRITE_CREDENTIAL_HINT
                    )));
                    not_done.push(name);
                }
                Err(e) => {
                    let _ = writeln!(out, "FAILED  {}: {e}", show(name));
                    failed.push(name);
                }
            }
            break;
        }
    }
    let left = !failed.is_empty() || !not_done.is_empty();
    // What a run that left work undone did stays marked until a run finishes, so that each run
    // again does only what remains; the mark keeps the time the first unfinished run started.
    state
        .set_unfinished_harden(left.then(|| resume.since.unwrap_or(started)))
        .map_err(CommandError::from)?;
    let _ = writeln!(
        out,
        "\n{} of {} package(s) now require 2FA and disallow tokens ({} by this run, {} skipped as \
         done before); {} failed; {} not attempted",
        done.len() + skipped.len(),
        found.packages.len(),
        done.len(),
        skipped.len(),
        failed.len(),
        not_done.len()
    );
    let why = match &stopped {
        Some(Stopped::Otp(Stop(why)) | Stopped::Credential(why)) => Some(why),
        None => None,
    };
    if let Some(why) = why {
        let _ = writeln!(
            out,
            "stopped: {why}\nrun again when that is fixed: the packages done are skipped, these remain:"
        );
        for n in &not_done {
            let _ = writeln!(out, "  not done: {}", show(n));
        }
    }
    let code = match stopped {
        Some(Stopped::Otp(_)) => EXIT_NEEDS_OTP,
        _ if left => EXIT_FINDINGS,
        _ => EXIT_OK,
    };
    Ok(Outcome {
        code,
        stdout: out.into(),
    })
}

/// What an earlier run that stopped before the end left done.
struct Resume {
    since: Option<DateTime<Utc>>,
    hardened: std::collections::BTreeMap<String, DateTime<Utc>>,
}

impl Resume {
    fn read(state: Option<&State>) -> Result<Self, CommandError> {
        let Some(state) = state else {
            return Ok(Self {
                since: None,
                hardened: Default::default(),
            });
        };
        let since = state.unfinished_harden().map_err(CommandError::from)?;
        let hardened = if since.is_some() {
            state.hardened().map_err(CommandError::from)?
        } else {
            Default::default()
        };
        Ok(Self { since, hardened })
    }

    /// When the unfinished run (or one after it) set this package, if one did.
    fn done(&self, name: &str) -> Option<DateTime<Utc>> {
        let since = self.since?;
        self.hardened.get(name).copied().filter(|at| *at >= since)
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
