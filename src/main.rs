//! The `npm-watchdog` binary: parse the command line, set up logging, load the configuration, call the
//! library. Exit codes: 0 fine, 1 findings (or a failed sink), 2 could not run, 3 stopped for a
//! one-time password.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use npm_watchdog::commands::{self, Format, Outcome, EXIT_CANNOT_RUN};
use npm_watchdog::daemon::{self, Signals};
use npm_watchdog::runtime::ConfigInput;
use npm_watchdog::secret::PermissionPolicy;

#[derive(Parser)]
#[command(
    name = "npm-watchdog",
    version,
    about = "Keeps an npm account hardened: alerts when a static or stale bypass-2FA token appears",
    long_about = "Keeps an npm account at its hardened state. On a schedule it lists the account's tokens and \
                  checks its packages, publishes, trusted publishers, teams and CI secrets; it alerts by email, \
                  webhook, PagerDuty, Slack or Alertmanager (the log when none is configured) when a static \
                  token, a stale bypass-2FA token, a team with write access or an untrusted publish appears, \
                  and exports Prometheus metrics.\n\n\
                  Configuration: --config PATH, else /etc/npm-watchdog/config.toml if it exists, else built-in \
                  defaults; NPM_WATCHDOG_<SECTION>__<KEY> variables override both. The daemon reads it again \
                  on SIGHUP.\n\
                  Exit codes: 0 fine, 1 findings, 2 could not run, 3 `audit` or `harden` stopped for a \
                  one-time password it could not ask for (no terminal) and lists what remains."
)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log line format on standard error. The level comes from RUST_LOG (default: info for `run`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: check on schedule, alert, serve /metrics, /healthz and /readyz; SIGHUP reloads the configuration.
    Run {
        /// Refuse to start (exit 2) when a secret file (the token's, a sink's) can be opened by group
        /// or others; without it that is a warning in the log.
        #[arg(long)]
        strict: bool,
    },
    /// List the account's tokens with their risk.
    Tokens {
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Score the account against the Definition of Done (D1-D9) and list every finding (exit 1 on findings).
    Audit {
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// A one-time password, to read the packages' trusted-publisher configurations (behind 2FA).
        /// On a terminal one is asked for when needed; off one, without it trust stays UNVERIFIED,
        /// and when it expires part-way the audit exits 3.
        #[arg(long, value_name = "CODE")]
        otp: Option<String>,
        /// A file holding a token that can write, for the trust reads of this run only (npmjs.com
        /// refuses them to a read-only token). Default: your own session in the npm user config.
        #[arg(long, value_name = "FILE", env = "NPM_WATCHDOG_WRITE_TOKEN_FILE")]
        write_token_file: Option<PathBuf>,
    },
    /// Set "Require 2FA and disallow tokens" on every watched package (attended: asks for one-time
    /// passwords on a terminal; off one, exit 3 when a code is needed and lists what remains).
    Harden {
        /// A one-time password to start with. When it expires part-way, a fresh one is asked for on
        /// a terminal; off a terminal the run stops (exit 3) and a second run does only what remains.
        #[arg(long, value_name = "CODE")]
        otp: Option<String>,
        /// Print what would be changed and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// A file holding a token that can write, for this run only (the daemon's own credential
        /// should be read-only). Default: your own session in the npm user config (`npm login`).
        #[arg(long, value_name = "FILE", env = "NPM_WATCHDOG_WRITE_TOKEN_FILE")]
        write_token_file: Option<PathBuf>,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Send a test notification through every configured sink and report each result.
    NotifyTest,
    /// Ask the running daemon's /healthz (exit 0 healthy, 1 not): a container HEALTHCHECK without curl.
    Healthcheck,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the effective configuration with secrets redacted; exit 2 if it cannot be used.
    Check {
        /// Report a secret file that group or others can open as a problem (exit 2), as `run --strict`
        /// would refuse it; without it that is a warning.
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_tracing(format: LogFormat, default_level: &str) {
    // The scheduler crate logs its own start-up at info; only its warnings matter to an operator.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default_level},tokio_cron_scheduler=warn"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn print(outcome: Outcome) -> ExitCode {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if let Err(e) = outcome.stdout.write_to(&mut out) {
        return fail(format!("cannot write to standard output: {e}"));
    }
    ExitCode::from(outcome.code as u8)
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("npm-watchdog: {message}");
    ExitCode::from(EXIT_CANNOT_RUN as u8)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Run { .. });
    init_tracing(cli.log_format, if daemon { "info" } else { "warn" });

    let source = ConfigInput::from_process(cli.config);
    let (loaded, runtime) = match source.load() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let secrets = |strict: bool| {
        if strict {
            PermissionPolicy::Strict
        } else {
            PermissionPolicy::Warn
        }
    };
    let as_format = |f: OutputFormat| match f {
        OutputFormat::Table => Format::Table,
        OutputFormat::Json => Format::Json,
    };
    match cli.command {
        Command::Run { strict } => {
            if loaded.file.is_none() {
                tracing::info!("no config file: using built-in defaults, the npm user config and the environment");
            }
            match daemon::run(source, runtime, Signals::install(), secrets(strict)).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Tokens { format } => match commands::tokens(&runtime, as_format(format)).await {
            Ok(o) => print(o),
            Err(e) => fail(e),
        },
        Command::Audit {
            format,
            otp,
            write_token_file,
        } => {
            let args = commands::AuditArgs {
                format: as_format(format),
                otp: otp.as_deref(),
                attended: commands::Attended::detect(),
                write_token_file: write_token_file.as_deref(),
            };
            match commands::audit(&runtime, args).await {
                Ok(o) => print(o),
                Err(e) => fail(e),
            }
        }
        Command::Harden {
            otp,
            dry_run,
            write_token_file,
        } => {
            let args = commands::HardenArgs {
                otp: otp.as_deref(),
                attended: commands::Attended::detect(),
                dry_run,
                write_token_file: write_token_file.as_deref(),
            };
            match commands::harden(&runtime, args).await {
                Ok(o) => print(o),
                Err(e) => fail(e),
            }
        }
        Command::Config {
            action: ConfigAction::Check { strict },
        } => print(commands::config_check(&loaded, &runtime, secrets(strict))),
        Command::Healthcheck => print(commands::healthcheck(&runtime).await),
        Command::NotifyTest => match commands::notify_test(&runtime).await {
            Ok(o) => print(o),
            Err(e) => fail(e),
        },
    }
}
