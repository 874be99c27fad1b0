//! The daemon's own npm credential, and the npm user config it may come from.
//!
//! Looked up in this order: `registry.token_file`; `$CREDENTIALS_DIRECTORY/npm-token` (systemd
//! `LoadCredential=`); the npm user config (`NPM_CONFIG_USERCONFIG`, else `~/.npmrc`), the
//! `//host[:port]/path/:_authToken=` line for the registry. It is read again before every cycle so a
//! rotated credential is picked up without a restart. The token itself lives in a [`SecretString`]: it is
//! never in `Debug` output, logs, metrics or errors.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha512};
use url::Url;

/// The parts of the process environment that decide where credentials are found.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub credentials_directory: Option<PathBuf>,
    pub npm_userconfig: Option<PathBuf>,
    pub home: Option<PathBuf>,
    /// systemd's `StateDirectory=` folder.
    pub state_directory: Option<PathBuf>,
    /// The user's state folder (`$XDG_STATE_HOME`, else `~/.local/state`).
    pub user_state_dir: Option<PathBuf>,
}

impl Environment {
    pub fn from_process() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            credentials_directory: var("CREDENTIALS_DIRECTORY"),
            npm_userconfig: var("NPM_CONFIG_USERCONFIG").or_else(|| var("npm_config_userconfig")),
            home: dirs::home_dir(),
            // systemd may list several folders separated by ':'; the first is ours.
            state_directory: std::env::var("STATE_DIRECTORY")
                .ok()
                .and_then(|v| v.split(':').next().map(PathBuf::from))
                .filter(|p| !p.as_os_str().is_empty()),
            user_state_dir: dirs::state_dir(),
        }
    }

    /// The npm user config file, whether or not it exists.
    pub fn npmrc_path(&self) -> Option<PathBuf> {
        self.npm_userconfig
            .clone()
            .or_else(|| self.home.as_ref().map(|h| h.join(".npmrc")))
    }
}

/// Where the credential was found; safe to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    TokenFile(PathBuf),
    SystemdCredential(PathBuf),
    Npmrc { path: PathBuf, key: String },
}

impl Source {
    /// The file the token was read from, and what names it, for the permission check: an npm user
    /// config holding `_authToken` is a secret file as much as a token file is.
    pub fn file(&self) -> (&'static str, &Path) {
        match self {
            Source::TokenFile(p) => ("registry.token_file", p),
            Source::SystemdCredential(p) => ("systemd credential npm-token", p),
            Source::Npmrc { path, .. } => ("npm user config", path),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::TokenFile(p) => write!(f, "token file {}", p.display()),
            Source::SystemdCredential(p) => write!(f, "systemd credential {}", p.display()),
            Source::Npmrc { path, key } => write!(f, "npm user config {} ({key})", path.display()),
        }
    }
}

#[derive(Clone)]
pub struct Credential {
    token: SecretString,
    pub source: Source,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("token", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

impl Credential {
    pub fn new(token: SecretString, source: Source) -> Self {
        Self { token, source }
    }

    /// Only the registry client calls this, to build the `authorization` header.
    pub fn expose(&self) -> &str {
        self.token.expose_secret()
    }

    /// npmjs.com lists a token under the SHA-512 of its value, so this finds our own entry there.
    /// (Verdaccio's keys are random, so there it matches nothing.)
    pub fn registry_key(&self) -> String {
        hex::encode(Sha512::digest(self.token.expose_secret().as_bytes()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("credential file {}: {reason}", .path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("credential file {}: empty", .0.display())]
    Empty(PathBuf),
    #[error("npm user config {}: {reason}", .path.display())]
    Npmrc { path: PathBuf, reason: String },
    #[error(
        "no npm credential: set registry.token_file, provide the systemd credential `npm-token`, \
         or add `{nerf}:_authToken=…` to the npm user config{where_}"
    )]
    NotFound { nerf: String, where_: String },
}

/// The credential of an attended command that reads trust or changes settings (`audit --otp`,
/// `harden`), for that run only: `file` when given (`--write-token-file`), else the user's own
/// session in the npm user config (`npm login`). Never the daemon's own token file or systemd
/// credential, which should be read-only.
pub fn resolve_write(
    file: Option<&Path>,
    registry: &Url,
    env: &Environment,
) -> Result<Credential, CredentialError> {
    if let Some(path) = file {
        return read_token_file(path).map(|t| Credential::new(t, Source::TokenFile(path.into())));
    }
    let session_only = Environment {
        credentials_directory: None,
        ..env.clone()
    };
    resolve(None, registry, &session_only)
}

/// Read the credential the configured way. Called before every cycle.
pub fn resolve(
    token_file: Option<&Path>,
    registry: &Url,
    env: &Environment,
) -> Result<Credential, CredentialError> {
    if let Some(path) = token_file {
        return read_token_file(path).map(|t| Credential::new(t, Source::TokenFile(path.into())));
    }
    if let Some(dir) = &env.credentials_directory {
        let path = dir.join("npm-token");
        if path.exists() {
            return read_token_file(&path)
                .map(|t| Credential::new(t, Source::SystemdCredential(path)));
        }
    }
    let nerf = nerf_dart(registry);
    let npmrc_path = env.npmrc_path();
    if let Some(path) = npmrc_path.as_ref().filter(|p| p.exists()) {
        let rc = Npmrc::load(path)?;
        let key = format!("{nerf}:_authToken");
        if let Some(token) = rc.get(&key) {
            if token.is_empty() {
                return Err(CredentialError::Npmrc {
                    path: path.clone(),
                    reason: format!("`{key}` is empty"),
                });
            }
            return Ok(Credential::new(
                SecretString::from(token.to_string()),
                Source::Npmrc {
                    path: path.clone(),
                    key,
                },
            ));
        }
    }
    Err(CredentialError::NotFound {
        nerf,
        where_: npmrc_path
            .map(|p| format!(" ({})", p.display()))
            .unwrap_or_default(),
    })
}

fn read_token_file(path: &Path) -> Result<SecretString, CredentialError> {
    let text = std::fs::read_to_string(path).map_err(|e| CredentialError::Unreadable {
        path: path.into(),
        reason: e.kind().to_string(),
    })?;
    // Editors on some systems start a UTF-8 file with a byte-order mark; it is not part of the token.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    // A file may hold just the token, or an npmrc-style `…:_authToken=` line copied from elsewhere.
    let token = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.rsplit_once("_authToken=").map_or(l, |(_, t)| t).trim())
        .unwrap_or("");
    if token.is_empty() {
        return Err(CredentialError::Empty(path.into()));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CredentialError::Unreadable {
            path: path.into(),
            reason: "the token contains whitespace or control characters".into(),
        });
    }
    Ok(SecretString::from(token.to_string()))
}

/// npm's "nerf dart" of a registry URL: `//host[:port]/path/`, the key prefix of its auth lines.
pub fn nerf_dart(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    // Like `new URL('.', url)`: the folder of the path.
    let path = url.path();
    let folder = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    };
    format!("//{host}{port}{folder}")
}

/// The `key=value` lines of an npm user config, with `${VAR}` expanded as npm does.
#[derive(Default)]
pub struct Npmrc {
    values: HashMap<String, String>,
}

impl fmt::Debug for Npmrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&String> = self.values.keys().collect();
        f.debug_struct("Npmrc").field("keys", &keys).finish()
    }
}

impl Npmrc {
    pub fn load(path: &Path) -> Result<Self, CredentialError> {
        let text = std::fs::read_to_string(path).map_err(|e| CredentialError::Npmrc {
            path: path.into(),
            reason: e.kind().to_string(),
        })?;
        Self::parse(&text).map_err(|reason| CredentialError::Npmrc {
            path: path.into(),
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut values = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(v);
            let v = expand_env(v).map_err(|var| {
                format!("line {}: `${{{var}}}` is not set in the environment", n + 1)
            })?;
            values.insert(k.trim().to_string(), v);
        }
        Ok(Self { values })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The `registry=` setting, if it is a valid URL.
    pub fn registry(&self) -> Option<Url> {
        self.get("registry").and_then(|r| Url::parse(r).ok())
    }
}

fn expand_env(value: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let var = &after[..end];
        out.push_str(&std::env::var(var).map_err(|_| var.to_string())?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "npm_SuperSecretValue0123456789";

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    #[test]
    fn nerf_darts_match_npm() {
        assert_eq!(
            nerf_dart(&url("https://registry.npmjs.org/")),
            "//registry.npmjs.org/"
        );
        assert_eq!(
            nerf_dart(&url("http://127.0.0.1:4873/")),
            "//127.0.0.1:4873/"
        );
        assert_eq!(
            nerf_dart(&url("https://r.example.com:443/npm/")),
            "//r.example.com/npm/"
        );
        assert_eq!(
            nerf_dart(&url("https://r.example.com/npm")),
            "//r.example.com/"
        );
    }

    #[test]
    fn token_file_wins_and_is_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("tok");
        std::fs::write(&f, format!("\n{SECRET}\n")).expect("write");
        let c = resolve(
            Some(&f),
            &url("https://registry.npmjs.org/"),
            &Environment::default(),
        )
        .expect("resolve");
        assert_eq!(c.expose(), SECRET);
        assert_eq!(c.source, Source::TokenFile(f));
        assert!(!format!("{c:?}").contains(SECRET));
    }

    #[test]
    fn empty_or_missing_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("tok");
        std::fs::write(&f, "  \n").expect("write");
        let reg = url("https://registry.npmjs.org/");
        let err = resolve(Some(&f), &reg, &Environment::default()).expect_err("empty");
        assert_eq!(
            err.to_string(),
            format!("credential file {}: empty", f.display())
        );
        let missing = dir.path().join("nope");
        let err = resolve(Some(&missing), &reg, &Environment::default()).expect_err("missing");
        assert_eq!(
            err.to_string(),
            format!("credential file {}: entity not found", missing.display())
        );
    }

    #[test]
    fn systemd_credential_then_npmrc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).expect("mkdir");
        let rc = dir.path().join("npmrc");
        std::fs::write(
            &rc,
            format!("registry=http://127.0.0.1:4873/\n//127.0.0.1:4873/:_authToken=\"{SECRET}\"\n//other/:_authToken=x\n"),
        )
        .expect("write");
        let env = Environment {
            credentials_directory: Some(creds.clone()),
            npm_userconfig: Some(rc.clone()),
            ..Environment::default()
        };
        let reg = url("http://127.0.0.1:4873/");
        let c = resolve(None, &reg, &env).expect("npmrc");
        assert_eq!(c.expose(), SECRET);
        assert_eq!(
            c.source.to_string(),
            format!(
                "npm user config {} (//127.0.0.1:4873/:_authToken)",
                rc.display()
            )
        );
        std::fs::write(creds.join("npm-token"), "from-systemd").expect("write");
        let c = resolve(None, &reg, &env).expect("systemd");
        assert_eq!(c.expose(), "from-systemd");
        let err = resolve(
            None,
            &url("http://127.0.0.1:9999/"),
            &Environment {
                credentials_directory: None,
                ..env
            },
        )
        .expect_err("no line for that registry");
        assert!(
            err.to_string().contains("//127.0.0.1:9999/:_authToken"),
            "{err}"
        );
        assert!(!err.to_string().contains(SECRET));
    }

    #[test]
    fn npmrc_expands_environment_and_reports_unset_variables() {
        let rc = Npmrc::parse("//r/:_authToken=${PATH}\n").expect("parse");
        assert_eq!(
            rc.get("//r/:_authToken"),
            std::env::var("PATH").ok().as_deref()
        );
        let err = Npmrc::parse("; comment\n//r/:_authToken=${NPM_WATCHDOG_SURELY_UNSET_VAR}\n")
            .expect_err("unset");
        assert_eq!(
            err,
            "line 2: `${NPM_WATCHDOG_SURELY_UNSET_VAR}` is not set in the environment"
        );
    }

    #[test]
    fn own_key_is_sha512_hex() {
        let c = Credential::new(
            SecretString::from("abc".to_string()),
            Source::TokenFile("x".into()),
        );
        assert!(c.registry_key().starts_with("ddaf35a193617aba"));
    }
}
