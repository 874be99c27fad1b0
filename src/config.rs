//! Configuration: built-in defaults, then the TOML file, then `NPM_WATCHDOG_<SECTION>__<KEY>` variables.
//!
//! Every struct denies unknown keys, so a typo is an error that names the key instead of a silently
//! ignored setting. Rules that span several keys (an email sink needs `from` and `to`, a username needs a
//! password file) are checked in [`Config::validate`] right after loading, so a daemon never starts
//! half-configured. Secrets never live here: only paths to files that hold them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

use crate::checks::Severity;

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
    pub server: ServerConfig,
    pub state: StateConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// `None`: the `registry=` line of the npm user config, else the public registry.
    pub url: Option<Url>,
    /// `None`: `$CREDENTIALS_DIRECTORY/npm-token`, else the npm user config's `_authToken` for the registry.
    pub token_file: Option<PathBuf>,
    pub timeout: HumanDuration,
    pub concurrency: usize,
    /// How many times a failed GET is tried again (408, 420, 429, 5xx, connection errors).
    pub retries: u32,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            url: None,
            token_file: None,
            timeout: HumanDuration::secs(10),
            concurrency: 16,
            retries: 3,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    pub users: Vec<String>,
    pub orgs: Vec<String>,
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub tokens: Schedule,
    pub packages: Schedule,
    pub org: Schedule,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            tokens: Schedule::Every(HumanDuration::secs(30)),
            packages: Schedule::Every(HumanDuration::secs(300)),
            org: Schedule::Every(HumanDuration::secs(900)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub bypass_token_max_age: HumanDuration,
    pub token_max_lifetime: HumanDuration,
    pub token_unused_after: HumanDuration,
    pub trusted_publishing_since: DateTime<Utc>,
    pub write_teams: Vec<String>,
    pub expected_owners: Vec<String>,
    pub retired_accounts: Vec<String>,
    pub blind_after: u32,
    pub allow_tokens: Vec<AllowToken>,
    pub expected_publishers: BTreeMap<String, ExpectedSource>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            bypass_token_max_age: HumanDuration::secs(24 * 3600),
            token_max_lifetime: HumanDuration::secs(90 * 86400),
            token_unused_after: HumanDuration::secs(30 * 86400),
            trusted_publishing_since: DateTime::<Utc>::from_timestamp(1_767_225_600, 0)
                .unwrap_or_default(), // 2026-01-01T00:00:00Z
            write_teams: Vec::new(),
            expected_owners: Vec::new(),
            retired_accounts: Vec::new(),
            blind_after: 3,
            allow_tokens: Vec::new(),
            expected_publishers: BTreeMap::new(),
        }
    }
}

/// Where a package is expected to be published from: `github:owner/repo:workflow.yml`,
/// `gitlab:group/project` (subgroups allowed) or `circleci:<org-id>/<project-id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedSource {
    /// `github`, `gitlab` or `circleci`: compared with `_npmUser.trustedPublisher.id`.
    pub provider: String,
    /// `owner/repo`, `group/project`, or `<org-id>/<project-id>`.
    pub path: String,
    /// The workflow file name (GitHub only), compared with the provenance statement's workflow.
    pub workflow: Option<String>,
}

impl fmt::Display for ExpectedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.provider, self.path)?;
        if let Some(w) = &self.workflow {
            write!(f, ":{w}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ExpectedSource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let usage = "expected github:owner/repo:workflow.yml, gitlab:group/project or circleci:<org-id>/<project-id>";
        let mut parts = text.splitn(3, ':');
        let provider = parts.next().unwrap_or("");
        let path = parts.next().unwrap_or("");
        let workflow = parts.next().map(str::to_string);
        let segments: Vec<&str> = path.split('/').collect();
        let ok_path = segments.len() >= 2 && segments.iter().all(|s| !s.is_empty());
        match provider {
            "github" if ok_path && segments.len() == 2 => {
                if let Some(w) = &workflow {
                    if w.contains('/') || !(w.ends_with(".yml") || w.ends_with(".yaml")) {
                        return Err(format!(
                            "`{text}`: the workflow is a file name ending .yml or .yaml"
                        ));
                    }
                }
            }
            "gitlab" if ok_path && workflow.is_none() => {}
            "circleci" if ok_path && segments.len() == 2 && workflow.is_none() => {}
            _ => return Err(format!("`{text}`: {usage}")),
        }
        Ok(ExpectedSource {
            provider: provider.to_string(),
            path: path.to_string(),
            workflow,
        })
    }
}

impl Serialize for ExpectedSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ExpectedSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A token that is known and accepted, matched by the start of its `key` (the revoke handle).
impl PolicyConfig {
    /// Whether an unexpired allowlist entry covers the token with this key.
    pub fn is_allowlisted(&self, key: &str, now: DateTime<Utc>) -> bool {
        self.allow_tokens
            .iter()
            .any(|a| !a.is_expired(now) && a.matches(key))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AllowToken {
    pub key_prefix: String,
    pub reason: String,
    /// The entry is honoured through the end of this day (UTC); after that the token is reported again.
    #[serde(default)]
    pub expires: Option<NaiveDate>,
    /// This is the daemon's own credential: its expiry is exported as
    /// `npm_watchdog_credential_expiry_timestamp_seconds`. (On npmjs.com the daemon also finds its own
    /// token without this, by the SHA-512 key.)
    #[serde(default, rename = "self", skip_serializing_if = "std::ops::Not::not")]
    pub own: bool,
}

impl AllowToken {
    /// The first instant at which the entry no longer applies.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires
            .and_then(|d| d.succ_opt())
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at().is_some_and(|t| now >= t)
    }

    pub fn matches(&self, key: &str) -> bool {
        key.len() >= self.key_prefix.len()
            && key[..self.key_prefix.len()].eq_ignore_ascii_case(&self.key_prefix)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub repeat_interval: HumanDuration,
    pub send_resolved: bool,
    /// Also write notifications to the log when other sinks exist (the log is always used when none do).
    pub log: bool,
    pub email: Vec<EmailSinkConfig>,
    pub webhook: Vec<WebhookSinkConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            repeat_interval: HumanDuration::secs(4 * 3600),
            send_resolved: true,
            log: false,
            email: Vec::new(),
            webhook: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSinkConfig {
    /// Label in metrics and logs; defaults to `email` (`email-2`, … for further sinks).
    #[serde(default)]
    pub name: Option<String>,
    /// `smtp://host:port` (no TLS), `smtp+starttls://host:port`, or `smtps://host:port` (implicit TLS).
    pub smtp_url: Url,
    pub from: String,
    #[serde(deserialize_with = "one_or_many")]
    pub to: Vec<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    #[serde(default = "default_sink_timeout")]
    pub timeout: HumanDuration,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    #[serde(default)]
    pub name: Option<String>,
    /// Chat webhooks carry their secret in the path, so this is redacted wherever it is shown.
    pub url: Url,
    /// File with the HMAC-SHA256 key for the `X-Npm-Watchdog-Signature` header.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    #[serde(default = "default_sink_timeout")]
    pub timeout: HumanDuration,
}

impl fmt::Debug for WebhookSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSinkConfig")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("secret_file", &self.secret_file)
            .field("min_severity", &self.min_severity)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn default_min_severity() -> Severity {
    Severity::Info
}

fn default_sink_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9858)),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// `None`: `$STATE_DIRECTORY/state.db` under systemd, else the user's state folder.
    pub path: Option<PathBuf>,
}

/// A duration written the human way (`"30s"`, `"24h"`, `"90d"`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    pub fn as_chrono(self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for HumanDuration {
    /// The largest unit that divides the value exactly (`90d`, `36h`, `90s`), so that what
    /// `config check` prints reads like what a user writes and parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, size) in [
            ("d", 86_400_000u128),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
        ] {
            if ms >= size && ms % size == 0 {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

fn parse_duration(text: &str) -> Result<HumanDuration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{text}` is not a duration like \"30s\", \"24h\" or \"90d\" ({e})")
    })?;
    if d.is_zero() {
        return Err(format!("`{text}`: the duration must be greater than zero"));
    }
    Ok(HumanDuration(d))
}

/// When a check group runs: a fixed period, or a 6-field cron expression (seconds first, UTC).
#[derive(Clone, PartialEq, Eq)]
pub enum Schedule {
    Every(HumanDuration),
    Cron(String),
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "{d}"),
            Schedule::Cron(c) => f.write_str(c),
        }
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Schedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.split_whitespace().count() > 1 {
            // Checked with the scheduler's own parser so that what loads is what runs.
            let probe = tokio_cron_scheduler::Job::new_async(text, |_, _| Box::pin(async {}));
            return match probe {
                Ok(_) => Ok(Schedule::Cron(text.to_string())),
                Err(_) => Err(format!(
                    "`{text}` is not a 6-field cron expression (sec min hour day month weekday)"
                )),
            };
        }
        parse_duration(text)
            .map(Schedule::Every)
            .map_err(|e| format!("{e}; or give a 6-field cron expression"))
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Show a URL without what may be a credential: user info, path and query.
pub fn redact_url(url: &Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    if url.path() != "/" || url.query().is_some() {
        shown.push_str("/<redacted>");
    }
    shown
}

/// A configuration that could not be loaded; the message names the file (or variable) and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {}: not found", .0.display())]
    NotFound(PathBuf),
    #[error("{0}")]
    Invalid(String),
}

/// The configuration as loaded, with where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The file read, if any (none means built-in defaults plus the environment).
    pub file: Option<PathBuf>,
}

impl Loaded {
    fn origin(&self) -> String {
        match &self.file {
            Some(p) => format!("config file {}", p.display()),
            None => "config (defaults and environment)".to_string(),
        }
    }
}

/// Load from `path`, or from [`DEFAULT_CONFIG_PATH`] if it exists, or from defaults alone.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    load_with_env(path, Env::prefixed(ENV_PREFIX).split("__"))
}

/// [`load`] with the environment provider given, so tests need not touch the process environment.
pub fn load_with_env(path: Option<&Path>, env: Env) -> Result<Loaded, ConfigError> {
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
        .validate()
        .map_err(|(key, msg)| ConfigError::Invalid(format!("{}: {key}: {msg}", loaded.origin())))?;
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
    ConfigError::Invalid(lines.join("\n"))
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

impl Config {
    /// Rules that span keys. Returns the key path and what is wrong.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
        if let Some(url) = &self.registry.url {
            if !matches!(url.scheme(), "http" | "https") {
                return bad("registry.url", "must be an http:// or https:// URL");
            }
        }
        if self.registry.concurrency == 0 {
            return bad("registry.concurrency", "must be at least 1");
        }
        if self.policy.blind_after == 0 {
            return bad("policy.blind_after", "must be at least 1");
        }
        for (i, a) in self.policy.allow_tokens.iter().enumerate() {
            let key = format!("policy.allow_tokens[{i}].key_prefix");
            if a.key_prefix.len() < 6 {
                return Err((
                    key,
                    "needs at least 6 characters so that it names one token".into(),
                ));
            }
            if !a.key_prefix.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err((
                    key,
                    "must be the start of a token key (letters and digits)".into(),
                ));
            }
            if a.reason.trim().is_empty() {
                return Err((
                    format!("policy.allow_tokens[{i}].reason"),
                    "must say why".into(),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, e) in self.alerts.email.iter().enumerate() {
            let key = |k: &str| format!("alerts.email[{i}].{k}");
            if !matches!(e.smtp_url.scheme(), "smtp" | "smtp+starttls" | "smtps") {
                return Err((
                    key("smtp_url"),
                    "scheme must be smtp, smtp+starttls or smtps".into(),
                ));
            }
            if e.smtp_url.host_str().is_none_or(str::is_empty) {
                return Err((key("smtp_url"), "needs a host".into()));
            }
            if !e.smtp_url.username().is_empty() || e.smtp_url.password().is_some() {
                return Err((
                    key("smtp_url"),
                    "must not carry credentials; use username and password_file".into(),
                ));
            }
            if e.from.parse::<lettre::message::Mailbox>().is_err() {
                return Err((key("from"), format!("`{}` is not an email address", e.from)));
            }
            if e.to.is_empty() {
                return Err((key("to"), "needs at least one address".into()));
            }
            for to in &e.to {
                if to.parse::<lettre::message::Mailbox>().is_err() {
                    return Err((key("to"), format!("`{to}` is not an email address")));
                }
            }
            if e.username.is_some() != e.password_file.is_some() {
                return Err((
                    key("password_file"),
                    "username and password_file go together".into(),
                ));
            }
            if !names.insert(self.alerts.email_name(i)) {
                return Err((key("name"), "another sink has this name".into()));
            }
        }
        for (i, w) in self.alerts.webhook.iter().enumerate() {
            if !matches!(w.url.scheme(), "http" | "https") {
                return Err((
                    format!("alerts.webhook[{i}].url"),
                    "must be an http:// or https:// URL".into(),
                ));
            }
            if !names.insert(self.alerts.webhook_name(i)) {
                return Err((
                    format!("alerts.webhook[{i}].name"),
                    "another sink has this name".into(),
                ));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, safe to print: webhook URLs are redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut value = match toml::Value::try_from(self) {
            Ok(v) => v,
            Err(e) => return format!("# cannot render: {e}\n"),
        };
        if let Some(hooks) = value
            .get_mut("alerts")
            .and_then(|a| a.get_mut("webhook"))
            .and_then(toml::Value::as_array_mut)
        {
            for (hook, cfg) in hooks.iter_mut().zip(&self.alerts.webhook) {
                if let Some(t) = hook.as_table_mut() {
                    t.insert("url".into(), toml::Value::String(redact_url(&cfg.url)));
                }
            }
        }
        toml::to_string_pretty(&value).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

impl AlertsConfig {
    fn numbered(kind: &str, name: &Option<String>, i: usize) -> String {
        match name {
            Some(n) => n.clone(),
            None if i == 0 => kind.to_string(),
            None => format!("{kind}-{}", i + 1),
        }
    }

    pub fn email_name(&self, i: usize) -> String {
        Self::numbered("email", &self.email[i].name, i)
    }

    pub fn webhook_name(&self, i: usize) -> String {
        Self::numbered("webhook", &self.webhook[i].name, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Loaded, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).expect("write config");
        load_with_env(
            Some(&path),
            Env::prefixed("NPM_WATCHDOG_TEST_UNUSED_").split("__"),
        )
        .map_err(|e| {
            // Make the message independent of the temporary folder's name.
            ConfigError::Invalid(e.to_string().replace(&path.display().to_string(), "F"))
        })
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
        assert_eq!(c.alerts.email_name(0), "email");
        let src = &c.policy.expected_publishers["@acme/a"];
        assert_eq!(
            (
                src.provider.as_str(),
                src.path.as_str(),
                src.workflow.as_deref()
            ),
            ("github", "acme/a", Some("release.yml"))
        );
        assert_eq!(c.alerts.webhook_name(0), "webhook");
    }

    /// Each invalid file and the exact error a user sees.
    #[test]
    fn invalid_files_and_their_errors() {
        let table: &[(&str, &str)] = &[
            (
                "[registry]\nurll = \"x\"\n",
                "config file F: registry.urll: unknown key (expected one of: url, token_file, timeout, concurrency, retries)",
            ),
            (
                "[nonsense]\n",
                "config file F: nonsense: unknown key (expected one of: registry, watch, schedule, policy, alerts, server, state)",
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
            let c = load(Some(&path)).map_err(|e| e.to_string())?.config;
            assert_eq!(c.schedule.tokens, Schedule::Every(HumanDuration::secs(2)));
            assert_eq!(c.policy.blind_after, 5);
            jail.set_env("NPM_WATCHDOG_POLICY__BLIND_AFTR", "5");
            let err = load(Some(&path)).expect_err("unknown env key").to_string();
            assert!(err.contains("NPM_WATCHDOG_POLICY__BLIND_AFTR"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = load(Some(Path::new("/nonexistent/npm-watchdog.toml"))).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "config file /nonexistent/npm-watchdog.toml: not found"
        );
    }

    #[test]
    fn allowlist_entry_lasts_through_its_day() {
        let a = AllowToken {
            key_prefix: "82e393".into(),
            reason: "r".into(),
            expires: NaiveDate::from_ymd_opt(2027, 1, 31),
            own: false,
        };
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&Utc)
        };
        assert!(!a.is_expired(t("2027-01-31T23:59:59Z")));
        assert!(a.is_expired(t("2027-02-01T00:00:00Z")));
        assert!(a.matches("82E393ffff"));
        assert!(!a.matches("82e39"));
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
