//! The small sections of the configuration: `[registry]`, `[watch]`, `[schedule]`, `[server]` and
//! `[state]`. Each struct denies unknown keys and validates what its types cannot say; keys in its
//! [`Invalid`] errors are relative to the section.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

use crate::config::types::{check, parse_duration, rule, HumanDuration, Invalid};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// `None`: the `registry=` line of the npm user config, else the public registry.
    pub url: Option<Url>,
    /// `None`: `$CREDENTIALS_DIRECTORY/npm-token`, else the npm user config's `_authToken` for the registry.
    pub token_file: Option<PathBuf>,
    /// How long an answer may take beyond what its size needs at `min_throughput`: a request's
    /// whole time is capped at `timeout` + its body cap / `min_throughput`.
    pub timeout: HumanDuration,
    /// How long connecting may take.
    pub connect_timeout: HumanDuration,
    /// How long an answer may send nothing, before its headers or between two parts of its body;
    /// a connection that stalls is dropped then and counted as `timeout`.
    pub idle_timeout: HumanDuration,
    /// The slowest transfer a whole answer is given time for, per second (sizes the overall cap).
    pub min_throughput: HumanSize,
    pub concurrency: usize,
    /// How many times a failed GET is tried again (408, 420, 429, 5xx, connection errors).
    pub retries: u32,
    /// The largest API answer read (token-list pages, profile, whoami, listings, trust,
    /// provenance); a larger one fails its read instead of being held in memory.
    pub max_body: HumanSize,
    /// The largest packument read; a larger one fails that package's read.
    pub max_packument: HumanSize,
    /// The pause between two writes of an attended command (`harden`): writes go one at a time, so
    /// a run over hundreds of packages does not look like a burst to the registry.
    pub write_interval: HumanDuration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        // The client's own defaults, so that a client built without a configuration caps alike.
        let limits = crate::registry::BodyLimits::default();
        Self {
            url: None,
            token_file: None,
            timeout: HumanDuration::secs(10),
            connect_timeout: HumanDuration::secs(10),
            idle_timeout: HumanDuration::secs(30),
            min_throughput: HumanSize(64 << 10),
            concurrency: 16,
            retries: 3,
            max_body: HumanSize(limits.api),
            max_packument: HumanSize(limits.packument),
            write_interval: HumanDuration(std::time::Duration::from_millis(250)),
        }
    }
}

impl RegistryConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        let not_http = |u: &url::Url| !matches!(u.scheme(), "http" | "https");
        check([
            rule(
                "url",
                self.url.as_ref().is_some_and(not_http),
                "must be an http:// or https:// URL",
            ),
            rule("concurrency", self.concurrency == 0, "must be at least 1"),
            rule(
                "min_throughput",
                self.min_throughput.0 == 0,
                "must be greater than zero",
            ),
            rule(
                "max_body",
                self.max_body.0 == 0,
                "must be greater than zero",
            ),
            rule(
                "max_packument",
                self.max_packument.0 == 0,
                "must be greater than zero",
            ),
        ])
    }

    /// The HTTP timeouts of the registry and CI clients.
    pub fn timeouts(&self) -> crate::fetch::Timeouts {
        crate::fetch::Timeouts {
            connect: self.connect_timeout.0,
            idle: self.idle_timeout.0,
            answer: self.timeout.0,
            min_throughput: self.min_throughput.0,
        }
    }

    /// The registry client's body caps.
    pub fn body_limits(&self) -> crate::registry::BodyLimits {
        crate::registry::BodyLimits {
            api: self.max_body.0,
            packument: self.max_packument.0,
        }
    }
}

/// A size in bytes written the human way: `"4MiB"`, `"512KiB"`, `"1.5GB"`, or a whole number of
/// bytes (`4194304`, as a number or a string). `KiB`, `MiB`, `GiB` are powers of 1024; `kB`, `MB`,
/// `GB` powers of 1000 (parsed by the `bytesize` crate).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanSize(pub u64);

impl fmt::Debug for HumanSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for HumanSize {
    /// The largest unit that divides the value exactly (`4MiB`, `100MB`, `1500B`), so that what
    /// `config check` prints reads like what a user writes and parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 6] = [
            ("GiB", 1 << 30),
            ("GB", 1_000_000_000),
            ("MiB", 1 << 20),
            ("MB", 1_000_000),
            ("KiB", 1 << 10),
            ("kB", 1000),
        ];
        for (unit, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl std::str::FromStr for HumanSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| HumanSize(b.0))
            .map_err(|e| {
                format!("`{text}` is not a size like \"4MiB\", \"512KiB\" or 1048576 ({e})")
            })
    }
}

impl Serialize for HumanSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HumanSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"4MiB\" or a whole number of bytes")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<HumanSize, E> {
                Ok(HumanSize(v))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<HumanSize, E> {
                u64::try_from(v)
                    .map(HumanSize)
                    .map_err(|_| E::custom(format!("{v}: a size cannot be negative")))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HumanSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
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
    /// The CI providers' secrets (`[[ci.*]]`); the group runs only when one is configured.
    pub ci: Schedule,
    /// The longest one run of a group may take, all requests and retries included; a run past it is
    /// stopped and counts as failed. Bounds a registry that answers forever (a `next` link that never
    /// ends, a drip-fed body) so the group is not held for hours.
    pub max_run: HumanDuration,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            tokens: Schedule::Every(HumanDuration::secs(30)),
            packages: Schedule::Every(HumanDuration::secs(300)),
            org: Schedule::Every(HumanDuration::secs(900)),
            ci: Schedule::Every(HumanDuration::secs(900)),
            max_run: HumanDuration::secs(600),
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
    /// Export `npm_watchdog_package_latest_trusted_publish` per watched package. A scope of 10,000
    /// packages makes 10,000 series; users who alert on findings rather than graph packages turn it off.
    pub package_series: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9858)),
            external_url: None,
            package_series: true,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// `None`: `$STATE_DIRECTORY/state.db` under systemd, else the user's state folder.
    pub path: Option<PathBuf>,
}

/// `[registry]`'s byte sizes.
#[cfg(test)]
mod registry_tests {
    use super::*;

    #[test]
    fn sizes_parse_human_and_plain_and_print_back_the_same() {
        for (text, bytes, printed) in [
            ("4MiB", 4 << 20, "4MiB"),
            ("4 MiB", 4 << 20, "4MiB"),
            ("512KiB", 512 << 10, "512KiB"),
            ("128mib", 128 << 20, "128MiB"),
            ("1.5GiB", 3 << 29, "1536MiB"),
            ("4MB", 4_000_000, "4MB"),
            ("4194304", 4 << 20, "4MiB"),
            ("1500", 1500, "1500B"),
        ] {
            let size: HumanSize = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(size.0, bytes, "{text}");
            assert_eq!(size.to_string(), printed, "{text}");
            assert_eq!(printed.parse::<HumanSize>().ok(), Some(size), "{printed}");
        }
        let err = "lots".parse::<HumanSize>().expect_err("not a size");
        assert!(err.starts_with("`lots` is not a size like"), "{err}");
        assert!("-1MiB".parse::<HumanSize>().is_err());
    }

    #[test]
    fn body_caps_default_to_the_clients_and_must_be_positive() {
        let c = RegistryConfig::default();
        assert_eq!(c.body_limits(), crate::registry::BodyLimits::default());
        assert_eq!(c.max_body.to_string(), "4MiB");
        assert_eq!(c.max_packument.to_string(), "128MiB");
        let zero = RegistryConfig {
            max_packument: HumanSize(0),
            ..RegistryConfig::default()
        };
        assert_eq!(
            zero.validate().expect_err("zero").to_string(),
            "max_packument: must be greater than zero"
        );
    }
}
