//! The small sections of the configuration: `[registry]`, `[watch]`, `[schedule]`, `[server]` and
//! `[state]`. Each struct denies unknown keys and validates what its types cannot say; keys in its
//! [`Invalid`] errors are relative to the section.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

use crate::settings::{parse_duration, HumanDuration, Invalid};

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

impl RegistryConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(url) = &self.url {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(Invalid::new("url", "must be an http:// or https:// URL"));
            }
        }
        if self.concurrency == 0 {
            return Err(Invalid::new("concurrency", "must be at least 1"));
        }
        Ok(())
    }
}

/// What is watched besides the account's tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Also watch the packages of the account the credential belongs to (as `/-/whoami` names it),
    /// so that a configuration that names nothing still watches the user's own packages.
    pub own_account: bool,
    pub users: Vec<String>,
    pub orgs: Vec<String>,
    pub packages: Vec<String>,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            own_account: true,
            users: Vec::new(),
            orgs: Vec::new(),
            packages: Vec::new(),
        }
    }
}

impl WatchConfig {
    /// Whether any package source is configured (the own account counts).
    pub fn any_packages(&self) -> bool {
        self.own_account
            || !(self.users.is_empty() && self.orgs.is_empty() && self.packages.is_empty())
    }

    /// One line for the start-up log and `config check`: what the packages group reads.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.own_account {
            parts.push("the packages of the credential's own account (watch.own_account)".into());
        }
        for (what, list) in [
            ("users", &self.users),
            ("orgs", &self.orgs),
            ("packages", &self.packages),
        ] {
            if !list.is_empty() {
                parts.push(format!("{what} {}", list.join(", ")));
            }
        }
        if parts.is_empty() {
            "tokens only (no package source: watch.own_account = false and no users, orgs or packages)".into()
        } else {
            format!("tokens, {}", parts.join("; "))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where people reach this daemon (behind a proxy, say): alerts link to its pages
    /// (Alertmanager's `generatorURL`). Unset: no link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_url: Option<Url>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9858)),
            external_url: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// `None`: `$STATE_DIRECTORY/state.db` under systemd, else the user's state folder.
    pub path: Option<PathBuf>,
}
