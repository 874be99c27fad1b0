//! Configuration: built-in defaults, then the TOML file, then `NPM_WATCHDOG_<SECTION>__<KEY>` variables.
//!
//! Every struct denies unknown keys, so a typo is an error that names the key instead of a silently
//! ignored setting. Each section validates what its types cannot say (an email sink needs `from` and
//! `to`, a username needs a password file) right after loading, so a daemon never starts
//! half-configured. Secrets never live here: only paths to files that hold them (a webhook URL, which
//! may carry one, is a [`SecretUrl`](crate::secret::SecretUrl) that never shows itself).
//!
//! The sections live beside this file (`sections`, `policy`); `[alerts]` is defined by the sink
//! list in [`crate::alerts`], so that a sink's section lives in the sink's own file; `[ci]` likewise
//! by the provider list in [`crate::ci`].

mod policy;
mod sections;
pub mod types;

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use crate::alerts::AlertsConfig;
pub use crate::ci::CiConfig;
pub use policy::{AllowCiSecret, AllowToken, ExpectedSource, PolicyConfig};
pub use sections::{
    HumanSize, RegistryConfig, Schedule, ScheduleConfig, ServerConfig, StateConfig, WatchConfig,
};
pub use types::{HumanDuration, Invalid};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/npm-watchdog/config.toml";
/// Prefix of the environment variables that override file keys; sections are split on `__`.
pub const ENV_PREFIX: &str = "NPM_WATCHDOG_";
/// The public npm registry, used when neither the config nor the npm user config names one.
pub const DEFAULT_REGISTRY: &str = "https://registry.npmjs.org/";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub registry: RegistryConfig,
    pub watch: WatchConfig,
    pub schedule: ScheduleConfig,
    pub policy: PolicyConfig,
    pub alerts: AlertsConfig,
    pub ci: CiConfig,
    pub server: ServerConfig,
    pub state: StateConfig,
}

impl Config {
    /// Every rule of every section, in one place; the error names the key with its section
    /// (`policy.blind_after`). `known_checks` are the check ids routes may name: the checks sit
    /// above the configuration, so their ids are handed in.
    pub fn validate(&self, known_checks: &[&str]) -> Result<(), Invalid> {
        self.registry.validate().map_err(|e| e.under("registry"))?;
        self.policy.validate().map_err(|e| e.under("policy"))?;
        // The alerts and ci sections name their keys in full (`alerts.email[0].to`).
        self.alerts.validate(known_checks)?;
        self.ci.validate()
    }

    /// The effective configuration as TOML, safe to print: secret-bearing values serialize redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// A configuration that could not be loaded; the message names the file (or variable) and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {}: not found", .0.display())]
    NotFound(PathBuf),
    /// What figment could not read or deserialize: one line per problem, each naming where and which key.
    #[error("{0}")]
    Unreadable(String),
    /// A rule of a section is broken.
    #[error("{origin}: {invalid}")]
    Invalid { origin: String, invalid: Invalid },
}

/// The configuration as loaded, with where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The file read, if any (none means built-in defaults plus the environment).
    pub file: Option<PathBuf>,
}

impl Loaded {
    pub fn origin(&self) -> String {
        match &self.file {
            Some(p) => format!("config file {}", p.display()),
            None => "config (defaults and environment)".to_string(),
        }
    }
}

/// Load from `path`, or from [`DEFAULT_CONFIG_PATH`] if it exists, or from defaults alone, and
/// check every rule ([`Config::validate`]).
pub fn load(path: Option<&Path>, known_checks: &[&str]) -> Result<Loaded, ConfigError> {
    load_with_env(path, Env::prefixed(ENV_PREFIX).split("__"), known_checks)
}

/// [`load`] with the environment provider given, so tests need not touch the process environment.
pub fn load_with_env(
    path: Option<&Path>,
    env: Env,
    known_checks: &[&str],
) -> Result<Loaded, ConfigError> {
    let file = match path {
        Some(p) if !p.exists() => return Err(ConfigError::NotFound(p.to_path_buf())),
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()),
    };
    let mut figment = Figment::new();
    if let Some(f) = &file {
        figment = figment.merge(Toml::file_exact(f));
    }
    figment = figment.merge(env);
    let config: Config = figment.extract().map_err(|e| describe_figment(&e))?;
    let loaded = Loaded { config, file };
    loaded
        .config
        .validate(known_checks)
        .map_err(|invalid| ConfigError::Invalid {
            origin: loaded.origin(),
            invalid,
        })?;
    Ok(loaded)
}

/// `alerts.email.0.to` as a TOML user writes it: `alerts.email[0].to`.
fn key_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// Turn figment's errors into one line each that says where (file or variable) and which key.
fn describe_figment(err: &figment::Error) -> ConfigError {
    let lines: Vec<String> = err.clone().into_iter().map(|e| describe_one(&e)).collect();
    ConfigError::Unreadable(lines.join("\n"))
}

fn describe_one(e: &figment::Error) -> String {
    use figment::error::Kind;
    let mut path = e.path.clone();
    let message = match &e.kind {
        Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            if expected.is_empty() {
                "unknown key".to_string()
            } else {
                format!("unknown key (expected one of: {})", expected.join(", "))
            }
        }
        Kind::MissingField(field) => {
            if path.last().map(String::as_str) != Some(field.as_ref()) {
                path.push(field.to_string());
            }
            "missing required key".to_string()
        }
        Kind::InvalidType(actual, expected) => format!("expected {expected}, found {actual}"),
        Kind::InvalidValue(actual, expected) => format!("expected {expected}, found {actual}"),
        Kind::InvalidLength(len, expected) => format!("expected {expected}, found length {len}"),
        Kind::UnknownVariant(v, expected) => {
            format!(
                "unknown value `{v}` (expected one of: {})",
                expected.join(", ")
            )
        }
        Kind::Message(m) => m.clone(),
        other => other.to_string(),
    };
    let key = key_path(&path);
    let origin = match &e.metadata {
        Some(md) => match &md.source {
            Some(figment::Source::File(f)) => format!("config file {}", f.display()),
            _ if key.is_empty() => md.name.to_string(),
            _ => format!(
                "environment variable {ENV_PREFIX}{}",
                path.join("__").to_ascii_uppercase()
            ),
        },
        None => "config".to_string(),
    };
    if key.is_empty() {
        format!("{origin}: {message}")
    } else {
        format!("{origin}: {key}: {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::NaiveDate;
    use std::time::Duration;

    use crate::finding::Severity;

    /// Load `text` as a config file; an error is the message a user sees, with the temporary
    /// folder's name replaced by `F`.
    fn load_text(text: &str) -> Result<Loaded, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).expect("write config");
        load_with_env(
            Some(&path),
            Env::prefixed("NPM_WATCHDOG_TEST_UNUSED_").split("__"),
            &crate::checks::ids(),
        )
        .map_err(|e| e.to_string().replace(&path.display().to_string(), "F"))
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = load_text("").expect("empty config loads").config;
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:9858");
        assert_eq!(c.schedule.tokens, Schedule::Every(HumanDuration::secs(30)));
        assert_eq!(c.policy.bypass_token_max_age, HumanDuration::secs(86400));
        assert_eq!(c.policy.token_max_lifetime, HumanDuration::secs(90 * 86400));
        assert_eq!(c.policy.blind_after, 3);
        assert_eq!(
            c.policy.trusted_publishing_since.to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        assert!(c.alerts.send_resolved);
        assert_eq!(c.registry.concurrency, 16);
        assert!(c.watch.own_account);
        assert_eq!(c.policy.token_max_lifetime.to_string(), "90d");
        assert_eq!(
            HumanDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert_eq!(HumanDuration::secs(5400).to_string(), "90m");
    }

    #[test]
    fn design_example_loads() {
        let c = load_text(
            r#"
[registry]
url = "https://registry.npmjs.org/"
token_file = "/run/credentials/npm-watchdog.service/npm-token"
timeout = "10s"
concurrency = 16
[watch]
users = []
orgs = ["acme"]
packages = ["@acme/a"]
[schedule]
tokens = "30s"
packages = "0 */5 * * * *"
org = "15m"
[policy]
bypass_token_max_age = "24h"
token_max_lifetime = "90d"
token_unused_after = "30d"
trusted_publishing_since = "2026-01-01T00:00:00Z"
write_teams = ["release-admins"]
blind_after = 3
allow_tokens = [{ key_prefix = "82e393", reason = "watchdog read-only credential", expires = "2027-01-31" }]
[policy.expected_publishers]
"@acme/a" = "github:acme/a:release.yml"
[alerts]
repeat_interval = "4h"
send_resolved = true
[[alerts.email]]
smtp_url = "smtp+starttls://mail.example.com:587"
from = "watchdog@example.com"
to = ["sec@example.com"]
username = "watchdog"
password_file = "/run/credentials/x/smtp"
min_severity = "warning"
[[alerts.webhook]]
url = "https://hooks.example.com/services/T000/B000/XXXX"
secret_file = "/run/credentials/x/hook"
[server]
listen = "127.0.0.1:9858"
[state]
path = "/var/lib/npm-watchdog/state.db"
"#,
        )
        .expect("design example loads")
        .config;
        assert_eq!(c.schedule.packages, Schedule::Cron("0 */5 * * * *".into()));
        assert_eq!(
            c.policy.allow_tokens[0].expires,
            NaiveDate::from_ymd_opt(2027, 1, 31)
        );
        assert_eq!(c.alerts.email[0].min_severity, Severity::Warning);
        assert_eq!(c.alerts.entries()[0].name(), "email");
        let src = &c.policy.expected_publishers["@acme/a"];
        assert_eq!(
            (
                src.provider.as_str(),
                src.path.as_str(),
                src.workflow.as_deref()
            ),
            ("github", "acme/a", Some("release.yml"))
        );
        assert_eq!(c.alerts.entries()[1].name(), "webhook");
    }

    /// Each invalid file and the exact error a user sees.
    #[test]
    fn invalid_files_and_their_errors() {
        let table: &[(&str, &str)] = &[
            (
                "[registry]\nurll = \"x\"\n",
                "config file F: registry.urll: unknown key (expected one of: url, token_file, timeout, connect_timeout, idle_timeout, min_throughput, concurrency, retries, max_body, max_packument, write_interval)",
            ),
            (
                "[nonsense]\n",
                "config file F: nonsense: unknown key (expected one of: registry, watch, schedule, policy, alerts, ci, server, state)",
            ),
            (
                "[registry]\ntimeout = \"ten seconds\"\n",
                "config file F: registry.timeout: `ten seconds` is not a duration like \"30s\", \"24h\" or \"90d\" (expected number at 0)",
            ),
            (
                "[registry]\ntimeout = \"0s\"\n",
                "config file F: registry.timeout: `0s`: the duration must be greater than zero",
            ),
            (
                "[registry]\nconcurrency = \"many\"\n",
                "config file F: registry.concurrency: expected usize, found string \"many\"",
            ),
            (
                "[registry]\nurl = \"not a url\"\n",
                "config file F: registry.url: relative URL without a base: \"not a url\"",
            ),
            (
                "[registry]\nurl = \"ftp://example.com/\"\n",
                "config file F: registry.url: must be an http:// or https:// URL",
            ),
            (
                "[registry]\nconcurrency = 0\n",
                "config file F: registry.concurrency: must be at least 1",
            ),
            (
                "[registry]\nidle_timeout = \"0s\"\n",
                "config file F: registry.idle_timeout: `0s`: the duration must be greater than zero",
            ),
            (
                "[registry]\nmin_throughput = 0\n",
                "config file F: registry.min_throughput: must be greater than zero",
            ),
            (
                "[registry]\nmax_body = \"lots\"\n",
                "config file F: registry.max_body: `lots` is not a size like \"4MiB\", \"512KiB\" or 1048576 (couldn't parse",
            ),
            (
                "[registry]\nmax_body = 0\n",
                "config file F: registry.max_body: must be greater than zero",
            ),
            (
                "[registry]\nmax_packument = -1\n",
                "config file F: registry.max_packument: -1: a size cannot be negative",
            ),
            (
                "[watch]\nown_account = \"yes\"\n",
                "config file F: watch.own_account: expected a boolean, found string \"yes\"",
            ),
            (
                "[schedule]\ntokens = \"* * *\"\n",
                "config file F: schedule.tokens: `* * *` is not a 6-field cron expression (sec min hour day month weekday)",
            ),
            (
                "[policy]\nblind_after = 0\n",
                "config file F: policy.blind_after: must be at least 1",
            ),
            (
                "[policy]\ntrusted_publishing_since = \"yesterday\"\n",
                "config file F: policy.trusted_publishing_since: input contains invalid characters",
            ),
            (
                "[policy]\nallow_tokens = [{ key_prefix = \"82e\", reason = \"x\" }]\n",
                "config file F: policy.allow_tokens[0].key_prefix: needs at least 6 characters so that it names one token",
            ),
            (
                "[policy]\nallow_tokens = [{ key_prefix = \"82e393\", reason = \"\" }]\n",
                "config file F: policy.allow_tokens[0].reason: must say why",
            ),
            (
                "[policy]\nallow_tokens = [{ key_prefix = \"82e393\" }]\n",
                "config file F: policy.allow_tokens[0].reason: missing required key",
            ),
            (
                "[[alerts.email]]\nsmtp_url = \"smtp://127.0.0.1:25\"\nto = [\"a@example.com\"]\n",
                "config file F: alerts.email[0].from: missing required key",
            ),
            (
                "[[alerts.email]]\nsmtp_url = \"smtp://127.0.0.1:25\"\nfrom = \"w@example.com\"\n",
                "config file F: alerts.email[0].to: missing required key",
            ),
            (
                "[[alerts.email]]\nsmtp_url = \"http://127.0.0.1:25\"\nfrom = \"w@example.com\"\nto = \"a@example.com\"\n",
                "config file F: alerts.email[0].smtp_url: scheme must be smtp, smtp+starttls or smtps",
            ),
            (
                "[[alerts.email]]\nsmtp_url = \"smtp://u:p@127.0.0.1:25\"\nfrom = \"w@example.com\"\nto = \"a@example.com\"\n",
                "config file F: alerts.email[0].smtp_url: must not carry credentials; use username and password_file",
            ),
            (
                "[[alerts.email]]\nsmtp_url = \"smtp://127.0.0.1:25\"\nfrom = \"not an address\"\nto = \"a@example.com\"\n",
                "config file F: alerts.email[0].from: `not an address` is not an email address",
            ),
            (
                "[[alerts.email]]\nsmtp_url = \"smtp://127.0.0.1:25\"\nfrom = \"w@example.com\"\nto = []\n",
                "config file F: alerts.email[0].to: needs at least one address",
            ),
            (
                "[[alerts.email]]\nsmtp_url = \"smtp://127.0.0.1:25\"\nfrom = \"w@example.com\"\nto = \"a@example.com\"\nusername = \"w\"\n",
                "config file F: alerts.email[0].password_file: username and password_file go together",
            ),
            (
                "[[alerts.email]]\nsmtp_url = \"smtp://127.0.0.1:25\"\nfrom = \"w@example.com\"\nto = \"a@example.com\"\nmin_severity = \"urgent\"\n",
                "config file F: alerts.email[0].min_severity: unknown value `urgent` (expected one of: info, warning, critical)",
            ),
            (
                "[[alerts.webhook]]\nurl = \"ftp://example.com/x\"\n",
                "config file F: alerts.webhook[0].url: must be an http:// or https:// URL",
            ),
            (
                "[[alerts.webhook]]\nurl = \"https://example.com/a\"\n[[alerts.webhook]]\nurl = \"https://example.com/b\"\nname = \"webhook\"\n",
                "config file F: alerts.webhook[1].name: another sink has this name",
            ),
            (
                "[[alerts.email]]\nsmtp_url = \"smtp://127.0.0.1:25\"\nfrom = \"w@example.com\"\nto = \"a@example.com\"\nrepeat_interval = \"0s\"\n",
                "config file F: alerts.email[0].repeat_interval: `0s`: the duration must be greater than zero",
            ),
            (
                "[[alerts.webhook]]\nurl = \"https://example.com/a\"\nroute = \"x\"\n",
                "config file F: alerts.webhook[0].route: unknown key (expected one of: name, url, secret_file, timeout, min_severity, checks, exclude_checks, repeat_interval, group_by, max_items, group_wait)",
            ),
            (
                "[alerts]\ngroup_by = [\"team\"]\n",
                "config file F: alerts.group_by[0]: unknown value `team` (expected one of: group, check, severity, finding)",
            ),
            (
                "[alerts]\ngroup_by = [\"check\", \"check\"]\n",
                "config file F: alerts.group_by: names a dimension twice",
            ),
            (
                "[alerts]\nmax_items = 0\n",
                "config file F: alerts.max_items: must be at least 1",
            ),
            (
                "[[alerts.slack]]\nurl_file = \"/run/slack\"\nmax_items = 0\n",
                "config file F: alerts.slack[0].max_items: must be at least 1",
            ),
            (
                "[[alerts.alertmanager]]\nurls = [\"http://127.0.0.1:9093\"]\ngroup_by = [\"check\"]\n",
                "config file F: alerts.alertmanager[0].group_by: this sink is not grouped: it sends one alert per finding and its receiver groups them (set group_by there)",
            ),
            (
                "[[alerts.alertmanager]]\nurls = [\"http://127.0.0.1:9093\"]\ngroup_wait = \"30s\"\n",
                "config file F: alerts.alertmanager[0].group_wait: this sink is not grouped: it sends one alert per finding and its receiver groups them (set group_wait there)",
            ),
            (
                "[alerts]\ngroup_wait = \"2h\"\n",
                "config file F: alerts.group_wait: must be at most 1h: a longer hold delays every new finding's alert as long",
            ),
            (
                "[[alerts.webhook]]\nurl = \"https://hooks.example.com/x\"\ngroup_wait = \"61m\"\n",
                "config file F: alerts.webhook[0].group_wait: must be at most 1h: a longer hold delays every new finding's alert as long",
            ),
            (
                "[[alerts.alertmanager]]\nurls = []\n",
                "config file F: alerts.alertmanager[0].urls: needs at least one Alertmanager URL",
            ),
            (
                "[[alerts.alertmanager]]\nurls = [\"http://127.0.0.1:9093\", \"http://127.0.0.1:9093/\"]\n",
                "config file F: alerts.alertmanager[0].urls: 127.0.0.1:9093 is listed twice",
            ),
            (
                "[policy.expected_publishers]\n\"@acme/a\" = \"bitbucket:acme/a\"\n",
                "config file F: policy.expected_publishers.@acme/a: `bitbucket:acme/a`: expected github:owner/repo:workflow.yml, gitlab:group/project or circleci:<org-id>/<project-id>",
            ),
            (
                "[policy.expected_publishers]\n\"@acme/a\" = \"github:acme/a:.github/workflows/release.yml\"\n",
                "config file F: policy.expected_publishers.@acme/a: `github:acme/a:.github/workflows/release.yml`: the workflow is a file name ending .yml or .yaml",
            ),
            (
                "[server]\nlisten = \"localhost\"\n",
                "config file F: server.listen: invalid socket address syntax",
            ),
            ("[registry\n", "config file F: TOML parse error"),
            (
                "[[ci.github]]\ntoken_file = \"/t\"\nrepos = [\"acme\"]\n",
                "config file F: ci.github[0].repos[0]: `acme` is not owner/name",
            ),
            (
                "[[ci.github]]\ntoken_file = \"/t\"\n",
                "config file F: ci.github[0].repos: name at least one repository or org (orgs)",
            ),
            (
                "[[ci.github]]\nrepos = [\"acme/widget\"]\n",
                "config file F: ci.github[0].token_file: missing required key",
            ),
            (
                "[[ci.circleci]]\ntoken_file = \"/t\"\norg_slug = \"acme\"\n",
                "config file F: ci.circleci[0].org_slug: `acme` is not an org slug such as gh/acme",
            ),
            (
                "[[ci.gitlab]]\ntoken_file = \"/t\"\nproject = [\"acme/widget\"]\n",
                "config file F: ci.gitlab[0].project: unknown key (expected one of: token_file, api_url, projects, groups)",
            ),
            (
                "[[ci.gitlab]]\ntoken_file = \"/t\"\napi_url = \"gitlab.example\"\nprojects = [\"1\"]\n",
                "config file F: ci.gitlab[0].api_url: relative URL without a base",
            ),
            (
                "[[ci.github]]\ntoken_file = \"/t\"\napi_url = \"https://bot:hunter2@github.example.com/api/v3\"\nrepos = [\"a/b\"]\n",
                "config file F: ci.github[0].api_url: must not carry a user or password: the token comes from token_file",
            ),
            (
                "[[ci.gitlab]]\ntoken_file = \"/t\"\napi_url = \"ftp://gitlab.example.com/\"\nprojects = [\"1\"]\n",
                "config file F: ci.gitlab[0].api_url: must be an http:// or https:// URL, not ftp:",
            ),
            (
                "[policy]\nci_secret_names = [\"NPM_(TOKEN\"]\n",
                "config file F: policy.ci_secret_names[0]: `NPM_(TOKEN` is not a regular expression: error: unclosed group",
            ),
            (
                "[[policy.allow_ci_secrets]]\nplace = \"acme/widget\"\nname = \"NPM_TOKEN\"\nreason = \"r\"\n",
                "config file F: policy.allow_ci_secrets[0].place: `acme/widget` is not a place as findings name it",
            ),
            (
                "[[policy.allow_ci_secrets]]\nplace = \"gitlab:group:acme\"\nname = \"NPM_TOKEN\"\nreason = \" \"\n",
                "config file F: policy.allow_ci_secrets[0].reason: must say why",
            ),
        ];
        let mut failures = Vec::new();
        for (text, want) in table {
            match load_text(text) {
                Ok(_) => failures.push(format!("loaded but should fail:\n{text}")),
                Err(e) => {
                    let got = e.to_string();
                    if !got.starts_with(want) {
                        failures.push(format!("for:\n{text}\n  want: {want}\n  got:  {got}"));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
    fn environment_overrides_file_and_names_the_variable_on_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[schedule]\ntokens = \"30s\"\n").expect("write");
        figment::Jail::expect_with(|jail| {
            jail.set_env("NPM_WATCHDOG_SCHEDULE__TOKENS", "2s");
            jail.set_env("NPM_WATCHDOG_POLICY__BLIND_AFTER", "5");
            let c = load(Some(&path), &[]).map_err(|e| e.to_string())?.config;
            assert_eq!(c.schedule.tokens, Schedule::Every(HumanDuration::secs(2)));
            assert_eq!(c.policy.blind_after, 5);
            jail.set_env("NPM_WATCHDOG_POLICY__BLIND_AFTR", "5");
            let err = load(Some(&path), &[])
                .expect_err("unknown env key")
                .to_string();
            assert!(err.contains("NPM_WATCHDOG_POLICY__BLIND_AFTR"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err =
            load(Some(Path::new("/nonexistent/npm-watchdog.toml")), &[]).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "config file /nonexistent/npm-watchdog.toml: not found"
        );
    }

    #[test]
    fn redacted_output_hides_webhook_path_and_debug_too() {
        let c = load_text(
            "[[alerts.webhook]]\nurl = \"https://hooks.example.com/services/T0/B0/SECRETPART\"\n",
        )
        .expect("loads")
        .config;
        let shown = c.to_redacted_toml();
        assert!(!shown.contains("SECRETPART"), "{shown}");
        assert!(
            shown.contains("https://hooks.example.com/<redacted>"),
            "{shown}"
        );
        assert!(!format!("{c:?}").contains("SECRETPART"));
    }
}
