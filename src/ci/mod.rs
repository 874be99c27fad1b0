//! CI secrets: what GitHub Actions, CircleCI and GitLab CI hold for the places the configuration
//! names (repositories, environments, organisations, contexts, projects, groups), read through their
//! APIs so that an npm token put back into CI is seen (Definition-of-Done box D3).
//!
//! Only names and dates are kept. GitLab's API also returns each variable's value: the provider file
//! looks at it once, while the answer is parsed, to say whether it looks like an npm token
//! ([`looks_like_npm_token`]), and keeps only that yes or no. No value is stored, logged, put into a
//! finding, a metric or `Debug` output.
//!
//! Each provider is one file with its `[[ci.<kind>]]` section, which implements [`CiProviderConfig`],
//! and one line in `ci_kinds!` below; `http` is the shared client (authentication, pagination,
//! rate limits, capped bodies, errors). What a read gives is a list of [`UnitRead`]s, one per list
//! the API answers (the Actions secrets of a repository, one context's variables, …), and a
//! [`ScopeError`] for each list or group of lists that could not be read. The daemon stores each
//! unit's last complete list and, for a scope that failed, uses the stored units under it, so a
//! provider error can neither resolve a finding nor make one up.

mod error;
pub(crate) mod http;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

pub use error::CiError;
pub use http::{Api, CiObserver, Limits};

use crate::config::types::{check, rule, Invalid};

/// Expands the provider list: the modules, [`CiConfig`] with one array per kind, and
/// [`CiConfig::entries`].
macro_rules! ci_kinds {
    ($($kind:ident => $config:ident),+ $(,)?) => {
        $(pub mod $kind;)+

        /// `[ci]`: one array of entries per provider kind.
        #[derive(Debug, Clone, Default, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct CiConfig {
            $(pub $kind: Vec<$kind::$config>,)+
        }

        impl CiConfig {
            /// Every configured entry, in the order of the list above.
            pub fn entries(&self) -> Vec<CiEntry<'_>> {
                let mut out = Vec::new();
                $(
                    for (index, config) in self.$kind.iter().enumerate() {
                        out.push(CiEntry {
                            kind: stringify!($kind),
                            index,
                            config: config as &dyn CiProviderConfig,
                        });
                    }
                )+
                out
            }
        }
    };
}

// The provider list: `<module> => <its config section>`. Each line declares the module, adds the
// `[[ci.<module>]]` array to [`CiConfig`], and makes its entries read by the daemon and `audit`.
ci_kinds! {
    github => GithubConfig,
    circleci => CircleciConfig,
    gitlab => GitlabConfig,
}

/// How a provider wants its token sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <token>` (GitHub).
    Bearer,
    /// The token as the whole value of this header (`Circle-Token`, `PRIVATE-TOKEN`).
    Header(&'static str),
}

/// One `[[ci.<kind>]]` entry, as its provider file defines it.
#[async_trait::async_trait]
pub trait CiProviderConfig: fmt::Debug + Send + Sync {
    /// Where the API lives (`api_url`).
    fn api_url(&self) -> &Url;
    /// The file that holds the API token (`token_file`).
    fn token_file(&self) -> &Path;
    fn auth(&self) -> Auth;
    /// Headers every request of this provider carries besides the token (`Accept`, API version).
    fn extra_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Rules the types cannot express. Keys are relative to the entry (`repos[0]`).
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
    /// Scopes (see [`covers`]) covering everything the entry reads, one per configured place. When the
    /// entry cannot be read at all (its token file is missing), each is a failed scope.
    fn scopes(&self) -> Vec<String>;
    /// What the entry reads, for logs and the scorecard (`GitHub repositories acme/widget; org acme`).
    fn describe(&self) -> String;
    /// Read every list the entry names.
    async fn read(&self, api: &Api) -> SourceRead;
}

/// A configured entry with where it sits in the configuration.
pub struct CiEntry<'a> {
    pub kind: &'static str,
    pub index: usize,
    pub config: &'a dyn CiProviderConfig,
}

impl CiEntry<'_> {
    /// `ci.github[0]`.
    pub fn key(&self) -> String {
        format!("ci.{}[{}]", self.kind, self.index)
    }
}

impl CiConfig {
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// Each entry's own rules, named in full (`ci.github[0].repos[1]`).
    pub fn validate(&self) -> Result<(), Invalid> {
        for e in self.entries() {
            let url = e.config.api_url();
            // The token goes in a header from `token_file`; a URL is printed by `config check` and
            // logged at start, so it must not carry a credential of its own.
            check([
                rule(
                    "api_url",
                    !url.username().is_empty() || url.password().is_some(),
                    "must not carry a user or password: the token comes from token_file",
                ),
                rule(
                    "api_url",
                    !matches!(url.scheme(), "https" | "http"),
                    format!("must be an http:// or https:// URL, not {}:", url.scheme()),
                ),
            ])
            .map_err(|i| i.under(&e.key()))?;
            e.config.validate().map_err(|i| i.under(&e.key()))?;
        }
        Ok(())
    }

    /// The token files, by key, for `config check` and the file-mode warnings.
    pub fn secret_files(&self) -> Vec<(String, PathBuf)> {
        self.entries()
            .iter()
            .map(|e| {
                (
                    format!("{}.token_file", e.key()),
                    e.config.token_file().to_path_buf(),
                )
            })
            .collect()
    }
}

/// One secret (or variable) a CI provider holds. Never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiSecret {
    /// `github`, `circleci` or `gitlab`.
    pub provider: String,
    /// Where it lives, as findings and `policy.allow_ci_secrets` name it:
    /// `github:acme/widget:actions`, `github:acme/widget:env:production`, `github:org:acme:actions`,
    /// `circleci:context:gh/acme:release`, `circleci:project:gh/acme/widget`,
    /// `gitlab:project:acme/widget`, `gitlab:group:acme`.
    pub place: String,
    /// The same for people: `GitHub Actions secrets of repository acme/widget`.
    pub place_desc: String,
    pub name: String,
    /// GitLab's `environment_scope` when it is not `*`: the same key may exist once per scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_scope: Option<String>,
    /// When it was last changed: GitHub and CircleCI contexts say so; a CircleCI project variable
    /// cannot be edited, only replaced, so its creation time is its last change; GitLab does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// GitLab only: the value looked like an npm token or an `_authToken=` line when it was read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub value_is_npm_token: bool,
}

impl CiSecret {
    /// Identity across reads and places that show the same secret (an org secret listed for each
    /// repository that can use it is one secret): the finding's subject key.
    pub fn key(&self) -> String {
        match &self.environment_scope {
            Some(scope) => format!("{}#{}@{}", self.place, self.name, scope),
            None => format!("{}#{}", self.place, self.name),
        }
    }
}

/// One list as a provider answered it, whole (every page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitRead {
    /// Stable key of the list (`github:acme/widget:actions`); what the daemon stores it under.
    pub unit: String,
    pub secrets: Vec<CiSecret>,
}

/// A list, or a group of lists under a prefix, that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeError {
    /// The units this failure covers ([`covers`]; `github:acme/widget:env` when the environments
    /// could not be listed): the stored units under it stand in for it.
    pub scope: String,
    /// `GitHub environments of repository acme/widget`.
    pub what: String,
    pub error: CiError,
}

/// What reading one entry gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceRead {
    pub units: Vec<UnitRead>,
    pub errors: Vec<ScopeError>,
}

impl SourceRead {
    /// Record the outcome of reading one unit.
    pub fn unit(
        &mut self,
        unit: String,
        what: impl Into<String>,
        read: Result<Vec<CiSecret>, CiError>,
    ) {
        match read {
            Ok(secrets) => self.units.push(UnitRead { unit, secrets }),
            Err(error) => self.errors.push(ScopeError {
                scope: unit,
                what: what.into(),
                error,
            }),
        }
    }

    pub fn fail(&mut self, scope: String, what: impl Into<String>, error: CiError) {
        self.errors.push(ScopeError {
            scope,
            what: what.into(),
            error,
        });
    }
}

/// What one provider entry gave, with what it is.
#[derive(Debug, Clone)]
pub struct EntryRead {
    /// `ci.github[0]`.
    pub key: String,
    pub kind: &'static str,
    /// [`CiProviderConfig::describe`].
    pub describe: String,
    pub read: SourceRead,
}

/// Everything the `ci` group saw: the secrets of every unit (read now, or the last complete copy of
/// a unit that could not be read now) and what could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CiInventory {
    pub secrets: Vec<CiSecret>,
    /// Lists read completely this time, per provider kind.
    pub units_read: BTreeMap<String, usize>,
    /// What could not be read this time (`ci.github[0]: GitHub environments of acme/widget: …`).
    pub unread: Vec<String>,
}

impl CiInventory {
    /// Everything was read this time: only then may D3 pass.
    pub fn complete(&self) -> bool {
        self.unread.is_empty()
    }
}

/// Read every configured entry, side by side. Each entry's token file is read now (so a rotated
/// token is picked up without a reload); a file that cannot be read fails every scope of its entry.
pub async fn read_all(
    config: &CiConfig,
    client: &reqwest::Client,
    limits: http::Limits,
    observer: Arc<dyn CiObserver>,
) -> Vec<EntryRead> {
    let reads = config.entries().into_iter().map(|e| {
        let observer = Arc::clone(&observer);
        async move {
            let read = match Api::new(e.kind, e.config, client.clone(), limits, observer) {
                Ok(api) => e.config.read(&api).await,
                Err(error) => {
                    let mut r = SourceRead::default();
                    for scope in e.config.scopes() {
                        r.fail(scope, "its API token", error.clone());
                    }
                    r
                }
            };
            EntryRead {
                key: e.key(),
                kind: e.kind,
                describe: e.config.describe(),
                read,
            }
        }
    });
    futures_util::future::join_all(reads).await
}

/// A `ci` read put together with the stored lists: what the checks see and what to store.
#[derive(Debug, Default)]
pub struct Assembled {
    pub inventory: CiInventory,
    /// The units read now: what the caller should store.
    pub fresh: Vec<(String, Vec<CiSecret>)>,
    /// Stored units that stand in for a scope that could not be read now: what the caller keeps.
    pub held: BTreeSet<String>,
    /// One per failed scope: `ci.github[0]: GitHub environments of repository acme/widget` and why.
    pub errors: Vec<(String, CiError)>,
}

/// Put the entries' reads together. A failed scope is represented by the stored units it covers,
/// so the secrets they held stay in view (their findings neither resolve nor change) until the
/// scope can be read again; the inventory says it is incomplete, so D3 cannot pass.
pub fn assemble(entries: Vec<EntryRead>, stored: &BTreeMap<String, Vec<CiSecret>>) -> Assembled {
    let mut out = Assembled::default();
    let mut scopes = Vec::new();
    for e in entries {
        for u in e.read.units {
            *out.inventory
                .units_read
                .entry(e.kind.to_string())
                .or_default() += 1;
            out.fresh.push((u.unit, u.secrets));
        }
        for err in e.read.errors {
            let what = format!("{}: {}", e.key, err.what);
            let line = format!("{what}: {}", err.error);
            // One cause can fail several scopes (an unreadable token fails every place of its
            // entry): said and counted once.
            if !out.inventory.unread.contains(&line) {
                out.inventory.unread.push(line);
                out.errors.push((what, err.error));
            }
            scopes.push(err.scope);
        }
    }
    for (unit, secrets) in stored {
        let read_now = out.fresh.iter().any(|(u, _)| u == unit);
        if !read_now && scopes.iter().any(|s| covers(s, unit)) {
            out.held.insert(unit.clone());
            out.inventory.secrets.extend(secrets.iter().cloned());
        }
    }
    for (_, secrets) in &out.fresh {
        out.inventory.secrets.extend(secrets.iter().cloned());
    }
    out
}

/// Whether a failed `scope` covers the list `unit`: the unit itself, or one below it
/// (`github:acme/widget` covers `github:acme/widget:env:prod` but not `github:acme/widget-2:actions`).
pub fn covers(scope: &str, unit: &str) -> bool {
    unit == scope
        || unit
            .strip_prefix(scope)
            .is_some_and(|rest| rest.starts_with(':'))
}

static NPM_TOKEN_VALUE: LazyLock<regex::Regex> = LazyLock::new(|| {
    // An npm access token (`npm_` and 36 base62 characters), anywhere in the value, or an npmrc
    // line that sets `_authToken` (of any registry).
    regex::Regex::new(r"(?:^|[^A-Za-z0-9])npm_[A-Za-z0-9]{36}(?:$|[^A-Za-z0-9])|_authToken\s*=")
        .unwrap_or_else(|_| unreachable!("the pattern is a constant"))
});

/// Whether a CI variable's value looks like an npm token or an npmrc `_authToken=` line. The
/// caller drops the value right after.
pub fn looks_like_npm_token(value: &str) -> bool {
    NPM_TOKEN_VALUE.is_match(value)
}

/// Deserializes a variable's `value` into only [`looks_like_npm_token`] of it: the string lives for
/// the length of this call. `null` (a hidden GitLab variable) is `false`.
pub fn classify_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let value: Option<String> = Option::deserialize(d)?;
    Ok(value.as_deref().is_some_and(looks_like_npm_token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npm_token_values_are_recognised() {
        let token = format!("npm_{}", "aB3".repeat(12));
        for yes in [
            token.clone(),
            format!("  {token}\n"),
            format!("//registry.npmjs.org/:_authToken={token}"),
            "//npm.pkg.github.com/:_authToken = ${NODE_AUTH_TOKEN}".to_string(),
            format!("export NPM_TOKEN=\"{token}\""),
        ] {
            assert!(looks_like_npm_token(&yes), "{yes}");
        }
        for no in [
            String::new(),
            "npm_short".to_string(),
            format!("{token}X"),
            format!("x{token}"),
            "ghp_0123456789abcdefghijklmnopqrstuvwxyz".to_string(),
            "authToken".to_string(),
        ] {
            assert!(!looks_like_npm_token(&no), "{no}");
        }
    }

    #[test]
    fn a_value_is_kept_only_as_its_verdict() {
        #[derive(Deserialize, Debug)]
        struct Var {
            key: String,
            #[serde(rename = "value", deserialize_with = "classify_value", default)]
            npm: bool,
        }
        let token = format!("npm_{}", "Zz9".repeat(12));
        let v: Var = serde_json::from_value(serde_json::json!({"key": "DEPLOY", "value": token}))
            .expect("parse");
        assert!(v.npm);
        assert_eq!(v.key, "DEPLOY");
        assert!(!format!("{v:?}").contains(&token));
        let hidden: Var =
            serde_json::from_value(serde_json::json!({"key": "X", "value": null})).expect("parse");
        assert!(!hidden.npm);
    }

    #[test]
    fn scopes_cover_their_own_units_only() {
        assert!(covers("github:acme/widget", "github:acme/widget"));
        assert!(covers("github:acme/widget", "github:acme/widget:env:prod"));
        assert!(covers(
            "github:acme/widget:env",
            "github:acme/widget:env:prod"
        ));
        assert!(!covers(
            "github:acme/widget",
            "github:acme/widget-2:actions"
        ));
        assert!(!covers(
            "github:acme/widget:env",
            "github:acme/widget:actions"
        ));
    }

    fn secret(place: &str, name: &str) -> CiSecret {
        CiSecret {
            provider: place.split(':').next().unwrap_or("").into(),
            place: place.into(),
            place_desc: format!("the list {place}"),
            name: name.into(),
            environment_scope: None,
            updated_at: None,
            value_is_npm_token: false,
        }
    }

    #[test]
    fn a_failed_scope_is_held_by_its_stored_units_and_only_those() {
        let stored = BTreeMap::from([
            (
                "github:acme/a:actions".to_string(),
                vec![secret("github:acme/a:actions", "NPM_TOKEN")],
            ),
            (
                "github:acme/a:env:prod".to_string(),
                vec![secret("github:acme/a:env:prod", "OLD")],
            ),
            (
                "github:acme/b:actions".to_string(),
                vec![secret("github:acme/b:actions", "GONE")],
            ),
            (
                "gitlab:project:x".to_string(),
                vec![secret("gitlab:project:x", "REMOVED_FROM_CONFIG")],
            ),
        ]);
        let mut read = SourceRead::default();
        read.unit(
            "github:acme/a:actions".into(),
            "actions of a",
            Ok(vec![secret("github:acme/a:actions", "NPM_TOKEN")]),
        );
        read.fail(
            "github:acme/a:env".into(),
            "GitHub environments of repository acme/a",
            CiError::Forbidden {
                endpoint: "environments",
                detail: String::new(),
            },
        );
        // acme/b was read and its list is now empty: GONE is gone.
        read.unit("github:acme/b:actions".into(), "actions of b", Ok(vec![]));
        let got = assemble(
            vec![EntryRead {
                key: "ci.github[0]".into(),
                kind: "github",
                describe: String::new(),
                read,
            }],
            &stored,
        );
        let names: Vec<&str> = got
            .inventory
            .secrets
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["OLD", "NPM_TOKEN"]);
        assert_eq!(
            got.held,
            BTreeSet::from(["github:acme/a:env:prod".to_string()])
        );
        assert_eq!(got.fresh.len(), 2);
        assert!(!got.inventory.complete());
        assert_eq!(got.inventory.units_read.get("github"), Some(&2));
        assert_eq!(
            got.inventory.unread,
            ["ci.github[0]: GitHub environments of repository acme/a: environments: 403 forbidden (the token lacks the permission to read this)"]
        );
    }

    /// A token file that cannot be read fails every scope of its entry, naming the file; nothing is
    /// requested and nothing is taken as "no secrets".
    #[tokio::test]
    async fn an_unreadable_token_file_fails_every_scope_of_its_entry() {
        let mut config = CiConfig::default();
        config.github.push(github::GithubConfig {
            token_file: "/nonexistent/github-token".into(),
            api_url: "http://127.0.0.1:9/".parse().expect("url"),
            repos: vec!["acme/widget".into()],
            orgs: vec!["acme".into()],
        });
        let entries = read_all(
            &config,
            &reqwest::Client::new(),
            http::Limits::default(),
            Arc::new(()),
        )
        .await;
        let got = assemble(entries, &BTreeMap::new());
        assert!(got.fresh.is_empty());
        assert_eq!(
            got.inventory.unread,
            ["ci.github[0]: its API token: cannot read token_file /nonexistent/github-token: No such file or directory (os error 2)"]
        );
        // Both places of the entry stand on what was stored for them.
        let stored = BTreeMap::from([
            (
                "github:acme/widget:actions".to_string(),
                vec![secret("github:acme/widget:actions", "NPM_TOKEN")],
            ),
            (
                "github:org:acme:actions".to_string(),
                vec![secret("github:org:acme:actions", "X")],
            ),
        ]);
        let entries = read_all(
            &config,
            &reqwest::Client::new(),
            http::Limits::default(),
            Arc::new(()),
        )
        .await;
        assert_eq!(assemble(entries, &stored).held.len(), 2);
        assert!(got.errors.iter().all(|(_, e)| e.label() == "credential"));
    }

    #[test]
    fn keys_tell_environment_scopes_apart() {
        let mut s = CiSecret {
            provider: "gitlab".into(),
            place: "gitlab:project:acme/widget".into(),
            place_desc: "GitLab CI/CD variables of project acme/widget".into(),
            name: "NPM_TOKEN".into(),
            environment_scope: None,
            updated_at: None,
            value_is_npm_token: false,
        };
        assert_eq!(s.key(), "gitlab:project:acme/widget#NPM_TOKEN");
        s.environment_scope = Some("production".into());
        assert_eq!(s.key(), "gitlab:project:acme/widget#NPM_TOKEN@production");
    }
}
