//! The one-shot verbs, one file each: `tokens`, `audit`, `harden`, `config check`, `notify-test` and
//! `healthcheck`.
//!
//! Each returns what to print and the exit code instead of printing, so tests can read the output.
//! Exit codes: 0 all is well, 1 findings (or a failed sink, or work left undone), 2 the command could
//! not run, 3 an attended command stopped for a one-time password it could not get ([`otp`]). The verbs that read the registry share one `Session`: the credential and a client, set
//! up once.

mod audit;
mod config_check;
mod harden;
mod healthcheck;
mod notify_test;
mod otp;
mod table;
mod tokens;

use chrono::{DateTime, Utc};

pub use audit::{audit, AuditArgs};
pub use config_check::config_check;
pub use harden::{harden, HardenArgs};
pub use healthcheck::healthcheck;
pub use notify_test::notify_test;
pub use otp::{Attended, EXIT_NEEDS_OTP, WEB_2FA_WAIT};
pub use tokens::tokens;

use crate::checks::{self, Group, Snapshot};
use std::path::Path;

use crate::credential::{self, Credential, CredentialError};
use crate::finding::Finding;
use crate::registry::{Profile, RegistryClient, RegistryError, Token};
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
pub struct Outcome {
    pub code: i32,
    pub stdout: Stdout,
}

/// Standard output: text, or a document written straight to it, so that a large one (an audit of
/// 10,000 packages with a finding per version runs to 100 MB) is never held whole as a string.
pub enum Stdout {
    Text(String),
    Stream(WriteDocument),
}

/// Writes a document to the given output.
pub type WriteDocument = Box<dyn FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send>;

impl Stdout {
    /// Write it all to `out`, then flush.
    pub fn write_to(self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        match self {
            Stdout::Text(text) => out.write_all(text.as_bytes())?,
            Stdout::Stream(write) => write(out)?,
        }
        out.flush()
    }
}

impl From<String> for Stdout {
    fn from(text: String) -> Self {
        Stdout::Text(text)
    }
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stdout = match &self.stdout {
            Stdout::Text(t) => t.as_str(),
            Stdout::Stream(_) => "<streamed>",
        };
        f.debug_struct("Outcome")
            .field("code", &self.code)
            .field("stdout", &stdout)
            .finish()
    }
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

/// How to give an attended command the credential that can write, for its messages.
pub const WRITE_CREDENTIAL_HINT: &str = "give one with --write-token-file FILE (or \
    NPM_WATCHDOG_WRITE_TOKEN_FILE), or log in with `npm login` so that your npm user config holds \
    your own session; it is used for this run only and never stored";

/// What a verb that reads the registry needs, set up once: the configuration, the credential as it
/// is now, and a client (one-shot commands export no metrics, so it observes nothing).
struct Session<'a> {
    rt: &'a Runtime,
    /// The read credential (the daemon's own).
    cred: Credential,
    /// The write credential of an attended run, when one was given or found.
    write: Option<Credential>,
    client: RegistryClient,
}

/// What the token group sees right now, without the daemon's state.
struct LiveTokens {
    /// Every token listed, expired ones included (npmjs.com keeps listing them).
    tokens: Vec<Token>,
    /// The ones the checks and the scorecard judge: not past their expiry.
    live: Vec<Token>,
    profile: Profile,
    /// The registry key of the credential (npmjs.com lists the token under it).
    own_key: String,
    findings: Vec<Finding>,
    now: DateTime<Utc>,
}

impl<'a> Session<'a> {
    fn open(rt: &'a Runtime) -> Result<Self, CommandError> {
        Ok(Self {
            rt,
            cred: rt.credential().map_err(CommandError::from)?,
            write: None,
            client: rt.client(()).map_err(CommandError::from)?,
        })
    }

    /// With the write credential of an attended run (see [`credential::resolve_write`]); why none
    /// could be had is the error.
    fn with_write(&mut self, file: Option<&Path>) -> Result<(), CommandError> {
        match credential::resolve_write(file, &self.rt.registry, &self.rt.env) {
            Ok(c) => {
                self.write = Some(c);
                Ok(())
            }
            Err(CredentialError::NotFound { nerf, where_ }) => Err(CommandError(format!(
                "no --write-token-file was given, and the npm user config{where_} holds no \
                 session for {nerf}"
            ))),
            Err(e) => Err(CommandError::from(e)),
        }
    }

    /// The credential trust reads go out with: the write credential when there is one (npmjs.com
    /// refuses trust reads to a read-only token), else the read credential.
    fn trust_cred(&self) -> &Credential {
        self.write.as_ref().unwrap_or(&self.cred)
    }

    /// A registry error; when the registry refused the credential, it says where the credential came
    /// from, since that is the file to fix (a token file, a systemd credential, the npm user config).
    fn registry_error(&self, e: &RegistryError) -> CommandError {
        if e.refuses_credential() {
            CommandError(format!("{e} (credential: {})", self.cred.source))
        } else {
            CommandError::from(e)
        }
    }

    async fn read_tokens(&self) -> Result<LiveTokens, CommandError> {
        let (tokens, profile) = tokio::join!(
            self.client.list_tokens(&self.cred),
            self.client.profile(&self.cred)
        );
        let tokens = tokens.map_err(|e| self.registry_error(&e))?;
        let profile = profile.map_err(|e| self.registry_error(&e))?;
        let now = Utc::now();
        let own_key = self.cred.registry_key();
        // One-shot commands have no memory of earlier runs (`seen_tokens` stays `None`), so nothing
        // counts as newly created.
        let live = checks::live_tokens(&tokens, now);
        let snap = Snapshot {
            tokens: Some(&live),
            profile: Some(&profile),
            own_key: Some(&own_key),
            ..Snapshot::new(now, &self.rt.registry)
        };
        let (findings, _) = checks::run_group(Group::Tokens, &snap, &self.rt.config.policy);
        Ok(LiveTokens {
            tokens,
            live,
            profile,
            own_key,
            findings,
            now,
        })
    }
}
