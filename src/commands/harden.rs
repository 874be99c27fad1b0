//! `npm-watchdog harden --otp CODE [--dry-run]`: set "Require 2FA and disallow tokens" on every
//! watched package, one request each, recording each success in the state (the audit shows when).
//! The setting cannot be read back, so this record is the only evidence of it. A rejected OTP stops
//! the run (it would be rejected for the rest too) and the report lists what was and was not done.

use std::fmt::Write as _;

use chrono::Utc;

use super::{CommandError, Outcome, Session, EXIT_FINDINGS, EXIT_OK};
use crate::collect;
use crate::lock::StateLock;
use crate::registry::RegistryError;
use crate::runtime::Runtime;
use crate::state::State;

pub async fn harden(
    rt: &Runtime,
    otp: &str,
    dry_run: bool,
    write_token_file: Option<&std::path::Path>,
) -> Result<Outcome, CommandError> {
    let mut session = Session::open(rt)?;
    if !dry_run {
        // Before anything is asked of the registry: a run that cannot write changes nothing.
        session.with_write(write_token_file).map_err(|e| {
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
    let _state_lock = if dry_run {
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
            stdout: out.into(),
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
        match session
            .client
            .require_2fa_disallow_tokens(name, session.trust_cred(), otp)
            .await
        {
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
            // The credential itself may not write: every other package would be refused alike.
            Err(e @ (RegistryError::Forbidden { .. } | RegistryError::Unauthorized { .. })) => {
                stopped = Some(format!(
                    "{e}; changing a package's settings needs a credential that can write \
                     (npmjs.com refuses a read-only token)"
                ));
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
            "stopped: {why}; run again when that is fixed to finish:"
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
    Ok(Outcome {
        code,
        stdout: out.into(),
    })
}
