//! `[policy]`: what the checks judge against: ages and lifetimes, the trusted-publishing cutoff, who
//! may hold write or ownership, retired accounts, the token allowlist and expected publishers, and
//! which CI secrets count as npm tokens.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::types::{check, rule, HumanDuration, Invalid};

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
    /// Regular expressions (Rust `regex` syntax) a CI secret's name is matched against; a match is
    /// an npm token kept in CI (`ci-npm-secret`). Write `(?i)` for case-insensitive.
    pub ci_secret_names: Vec<String>,
    pub allow_ci_secrets: Vec<AllowCiSecret>,
}

/// The default `policy.ci_secret_names`: `NODE_AUTH_TOKEN` (what `actions/setup-node` writes into
/// the npmrc), and any name that says both "npm" and "token" (`NPM_TOKEN`, `NPM_AUTH_TOKEN`,
/// `NPM_CONFIG__AUTHTOKEN`, `PUBLISH_NPM_TOKEN`, …).
pub const DEFAULT_CI_SECRET_NAMES: [&str; 2] =
    [r"(?i)^NODE_AUTH_TOKEN$", r"(?i)npm.*token|token.*npm"];

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
            ci_secret_names: DEFAULT_CI_SECRET_NAMES.map(String::from).to_vec(),
            allow_ci_secrets: Vec::new(),
        }
    }
}

impl PolicyConfig {
    /// Whether an unexpired allowlist entry covers the token with this key.
    pub fn is_allowlisted(&self, key: &str, now: DateTime<Utc>) -> bool {
        self.allow_tokens
            .iter()
            .any(|a| !a.is_expired(now) && a.matches(key))
    }

    /// The section's rules in the order a user reads its keys; each allowlist entry has its own
    /// table, its keys put under the list's (`allow_tokens[0].reason`).
    pub fn validate(&self) -> Result<(), Invalid> {
        check([rule(
            "blind_after",
            self.blind_after == 0,
            "must be at least 1",
        )])?;
        for (i, a) in self.allow_tokens.iter().enumerate() {
            a.validate()
                .map_err(|e| e.under(&format!("allow_tokens[{i}]")))?;
        }
        check(self.ci_secret_names.iter().enumerate().map(|(i, p)| {
            let error = regex::Regex::new(p).err();
            rule(
                format!("ci_secret_names[{i}]"),
                error.is_some(),
                format!(
                    "`{p}` is not a regular expression: {}",
                    error.map_or(String::new(), |e| regex_reason(&e.to_string()).to_string())
                ),
            )
        }))?;
        for (i, a) in self.allow_ci_secrets.iter().enumerate() {
            a.validate()
                .map_err(|e| e.under(&format!("allow_ci_secrets[{i}]")))?;
        }
        Ok(())
    }

    /// The compiled `ci_secret_names` (validated at load, so none fails here; one that did would be
    /// left out, never match everything).
    pub fn ci_secret_patterns(&self) -> Vec<regex::Regex> {
        self.ci_secret_names
            .iter()
            .filter_map(|p| regex::Regex::new(p).ok())
            .collect()
    }

    /// The unexpired allowlist entry for a CI secret at `place` named `name`, if any.
    pub fn ci_allowlisted(&self, place: &str, name: &str, now: DateTime<Utc>) -> bool {
        self.allow_ci_secrets
            .iter()
            .any(|a| !a.is_expired(now) && a.place.eq_ignore_ascii_case(place) && a.name == name)
    }
}

/// The regex crate's message ends with its reason (`error: unclosed group`) under a drawing of the
/// pattern: keep the reason.
fn regex_reason(text: &str) -> &str {
    text.lines().last().unwrap_or(text).trim()
}

/// A CI secret that is known and accepted, by its place (as the finding names it:
/// `github:acme/widget:actions`) and name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AllowCiSecret {
    pub place: String,
    pub name: String,
    pub reason: String,
    /// Honoured through the end of this day (UTC); after that the secret is reported again.
    #[serde(default)]
    pub expires: Option<NaiveDate>,
}

impl AllowCiSecret {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        expiry(self.expires).is_some_and(|t| now >= t)
    }

    fn validate(&self) -> Result<(), Invalid> {
        let providers = ["github:", "circleci:", "gitlab:"];
        check([
            rule(
                "place",
                !providers.iter().any(|p| self.place.starts_with(p)),
                format!(
                    "`{}` is not a place as findings name it (github:owner/repo:actions, circleci:project:gh/acme/widget, gitlab:project:acme/widget, …)",
                    self.place
                ),
            ),
            rule("name", self.name.trim().is_empty(), "must name the secret"),
            rule("reason", self.reason.trim().is_empty(), "must say why"),
        ])
    }
}

/// The first instant an entry that lasts through `day` (UTC) no longer applies.
fn expiry(day: Option<NaiveDate>) -> Option<DateTime<Utc>> {
    day.and_then(|d| d.succ_opt())
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// A token that is known and accepted, matched by the start of its `key` (the revoke handle).
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
        expiry(self.expires)
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at().is_some_and(|t| now >= t)
    }

    pub fn matches(&self, key: &str) -> bool {
        key.len() >= self.key_prefix.len()
            && key[..self.key_prefix.len()].eq_ignore_ascii_case(&self.key_prefix)
    }

    fn validate(&self) -> Result<(), Invalid> {
        check([
            rule(
                "key_prefix",
                self.key_prefix.len() < 6,
                "needs at least 6 characters so that it names one token",
            ),
            rule(
                "key_prefix",
                !self.key_prefix.chars().all(|c| c.is_ascii_alphanumeric()),
                "must be the start of a token key (letters and digits)",
            ),
            rule("reason", self.reason.trim().is_empty(), "must say why"),
        ])
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
