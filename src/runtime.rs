//! The configuration in force at run time: what `config` loaded, with what it leaves open settled
//! against the machine (which registry, where the state lives, the credential) and the clients and
//! sinks built from it. Shared by the daemon and the one-shot commands. [`ConfigInput`] remembers how
//! the configuration was found, so a reload reads it the same way.
//!
//! It is not part of `config/` on purpose: `config` is loaded and validated below the checks, the
//! sinks and the registry client, and this module builds all three.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use url::Url;

use crate::alerts::{CheckFacts, SinkContext, SinkError, Target};
use crate::checks;
use crate::config::{self, Config, ConfigError, Loaded, DEFAULT_REGISTRY};
use crate::credential::{self, Credential, CredentialError, Environment, Npmrc};
use crate::registry::{Observer, RegistryClient, RegistryError, RetryPolicy};
use crate::secret::{self, TooOpen};

/// Where the configuration comes from: the `--config` path (else the default file, if it exists) and
/// the process environment (variables that override keys, the npm user config, systemd's folders).
#[derive(Debug, Clone)]
pub struct ConfigInput {
    pub config_path: Option<PathBuf>,
    pub env: Environment,
}

/// A configuration that cannot be used. Its message is what `config check` prints.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
}

impl ConfigInput {
    pub fn from_process(config_path: Option<PathBuf>) -> Self {
        Self {
            config_path,
            env: Environment::from_process(),
        }
    }

    /// Read the configuration and settle what it leaves open.
    pub fn load(&self) -> Result<(Loaded, Runtime), LoadError> {
        let loaded = config::load(self.config_path.as_deref(), &checks::ids())?;
        let rt = Runtime::new(loaded.config.clone(), self.env.clone())?;
        Ok((loaded, rt))
    }
}

/// What sinks may say about each check, by id.
pub fn check_facts() -> BTreeMap<&'static str, CheckFacts> {
    checks::all()
        .iter()
        .map(|c| {
            let facts = CheckFacts {
                group: c.group.as_str(),
                subject: c.subject,
            };
            (c.id, facts)
        })
        .collect()
}

/// Where a setting's value came from, for the start-up summary and `config check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Config,
    NpmUserConfig(PathBuf),
    SystemdStateDirectory,
    UserStateFolder,
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Config => f.write_str("from the config"),
            Origin::NpmUserConfig(p) => write!(f, "from the npm user config {}", p.display()),
            Origin::SystemdStateDirectory => f.write_str("in systemd's StateDirectory"),
            Origin::UserStateFolder => f.write_str("in the user's state folder"),
            Origin::Default => f.write_str("built-in default"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Runtime {
    pub config: Config,
    pub env: Environment,
    pub registry: Url,
    pub registry_origin: Origin,
    pub state_path: PathBuf,
    pub state_origin: Origin,
}

impl Runtime {
    pub fn new(config: Config, env: Environment) -> Result<Self, CredentialError> {
        let (registry, registry_origin) = match &config.registry.url {
            Some(u) => (u.clone(), Origin::Config),
            None => {
                let from_rc = match env.npmrc_path().filter(|p| p.exists()) {
                    Some(p) => Npmrc::load(&p)?
                        .registry()
                        .map(|u| (u, Origin::NpmUserConfig(p))),
                    None => None,
                };
                match from_rc {
                    Some(found) => found,
                    None => (
                        Url::parse(DEFAULT_REGISTRY).expect("DEFAULT_REGISTRY is a valid URL"),
                        Origin::Default,
                    ),
                }
            }
        };
        // A registry URL without a trailing slash would lose its last path segment when joined.
        let registry = if registry.path().ends_with('/') {
            registry
        } else {
            let mut r = registry;
            let p = format!("{}/", r.path());
            r.set_path(&p);
            r
        };
        let (state_path, state_origin) = match (
            &config.state.path,
            &env.state_directory,
            &env.user_state_dir,
        ) {
            (Some(p), _, _) => (p.clone(), Origin::Config),
            (None, Some(d), _) => (d.join("state.db"), Origin::SystemdStateDirectory),
            (None, None, Some(d)) => (
                d.join("npm-watchdog").join("state.db"),
                Origin::UserStateFolder,
            ),
            (None, None, None) => (PathBuf::from("npm-watchdog-state.db"), Origin::Default),
        };
        Ok(Self {
            config,
            env,
            registry,
            registry_origin,
            state_path,
            state_origin,
        })
    }

    /// What sinks say about where alerts come from: the registry's host and the watched accounts,
    /// built from configuration only, so two replicas with the same configuration say the same.
    pub fn sink_context(&self) -> SinkContext {
        let w = &self.config.watch;
        let mut who: Vec<String> = Vec::new();
        if w.own_account {
            who.push("the credential's account".into());
        }
        who.extend(w.users.iter().cloned());
        who.extend(w.orgs.iter().map(|o| format!("org {o}")));
        if who.is_empty() && !w.packages.is_empty() {
            who.push(format!("{} package(s)", w.packages.len()));
        }
        let host = self.registry.host_str().unwrap_or("registry");
        let watched = if who.is_empty() {
            host.to_string()
        } else {
            format!("{host}: {}", who.join(", "))
        };
        SinkContext {
            watched,
            external_url: self.config.server.external_url.clone(),
            checks: check_facts(),
        }
    }

    /// The configured sinks with their routes.
    pub fn build_sinks(&self) -> Result<Vec<Target>, SinkError> {
        self.config.alerts.build_sinks(&self.sink_context())
    }

    /// Read the credential afresh (it may have been rotated since the last cycle).
    pub fn credential(&self) -> Result<Credential, CredentialError> {
        credential::resolve(
            self.config.registry.token_file.as_deref(),
            &self.registry,
            &self.env,
        )
    }

    /// The secret files that group or others may open: the file the credential comes from (token
    /// file, systemd credential or npm user config) and every file a sink or CI provider reads a
    /// secret from. A
    /// file that cannot be read is left out: the credential or `config check` reports that.
    pub fn secret_files_too_open(&self) -> Vec<TooOpen> {
        let creds = self.env.credentials_directory.as_deref();
        let mut found = Vec::new();
        if let Ok(c) = self.credential() {
            let (key, path) = c.source.file();
            found.extend(secret::too_open(key, path, creds));
        }
        for (key, path) in self.config_secret_files() {
            found.extend(secret::too_open(&key, &path, creds));
        }
        found
    }

    /// Every secret file the configuration names besides the credential, by key: each sink's
    /// (`alerts.email[0].password_file`) and each CI provider's token (`ci.github[0].token_file`).
    pub fn config_secret_files(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        for entry in self.config.alerts.entries() {
            for (key, path) in entry.config.secret_files() {
                out.push((format!("{}.{key}", entry.key()), path.to_path_buf()));
            }
        }
        out.extend(self.config.ci.secret_files());
        out
    }

    pub fn client(
        &self,
        observer: impl Observer + 'static,
    ) -> Result<RegistryClient, RegistryError> {
        RegistryClient::new(
            self.registry.clone(),
            self.config.registry.timeout.0,
            RetryPolicy {
                retries: self.config.registry.retries,
                ..RetryPolicy::default()
            },
            observer,
        )?
        .with_timeouts(self.config.registry.timeouts())
        .map(|c| c.with_body_limits(self.config.registry.body_limits()))
    }

    /// The HTTP client for the CI providers' APIs, with the registry's timeouts and no redirects (a
    /// redirect could carry the token to another host).
    pub fn ci_http(&self) -> Result<reqwest::Client, crate::ci::CiError> {
        self.config
            .registry
            .timeouts()
            .client()
            .map_err(|e| crate::ci::CiError::Network {
                endpoint: "client",
                attempts: 0,
                detail: e.to_string(),
            })
    }

    /// What one CI read may cost: the registry's body cap and retries.
    pub fn ci_limits(&self) -> crate::ci::http::Limits {
        crate::ci::http::Limits {
            max_body: self.config.registry.max_body.0,
            retries: self.config.registry.retries,
            timeouts: self.config.registry.timeouts(),
            ..crate::ci::http::Limits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_config_takes_registry_from_npmrc_and_state_from_user_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rc = dir.path().join("npmrc");
        std::fs::write(&rc, "registry=http://127.0.0.1:4873\n").expect("write");
        let env = Environment {
            npm_userconfig: Some(rc.clone()),
            user_state_dir: Some(dir.path().join("state")),
            ..Environment::default()
        };
        let rt = Runtime::new(Config::default(), env).expect("runtime");
        assert_eq!(rt.registry.as_str(), "http://127.0.0.1:4873/");
        assert_eq!(rt.registry_origin, Origin::NpmUserConfig(rc));
        assert_eq!(
            rt.state_path,
            dir.path().join("state/npm-watchdog/state.db")
        );
    }

    #[test]
    fn systemd_state_directory_wins_over_user_folder() {
        let env = Environment {
            state_directory: Some("/var/lib/npm-watchdog".into()),
            user_state_dir: Some("/home/x/.local/state".into()),
            ..Environment::default()
        };
        let rt = Runtime::new(Config::default(), env).expect("runtime");
        assert_eq!(
            rt.state_path,
            PathBuf::from("/var/lib/npm-watchdog/state.db")
        );
        assert_eq!(rt.registry.as_str(), DEFAULT_REGISTRY);
    }

    #[test]
    fn a_route_naming_an_unknown_check_is_a_config_error_listing_the_real_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            "[[alerts.webhook]]\nurl = \"https://example.com/a\"\nexclude_checks = [\"token-presnt\"]\n",
        )
        .expect("write");
        let source = ConfigInput {
            config_path: Some(file.clone()),
            env: Environment::default(),
        };
        let Err(err) = source.load() else {
            panic!("a route naming an unknown check was accepted");
        };
        let err = err.to_string();
        let known: Vec<&str> = checks::all().iter().map(|c| c.id).collect();
        assert_eq!(
            err,
            format!(
                "config file {}: alerts.webhook[0].exclude_checks: unknown check `token-presnt` (expected one of: {})",
                file.display(),
                known.join(", ")
            )
        );
        std::fs::write(
            &file,
            "[[alerts.webhook]]\nurl = \"https://example.com/a\"\nchecks = [\"token-created\"]\n",
        )
        .expect("write");
        assert!(source.load().is_ok());
    }
}
