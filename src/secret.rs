//! Redaction in one place: how a secret-bearing URL is shown, how a secret file is read, and how a
//! secret is scrubbed out of text that came from elsewhere (a server's reply, a library's error).
//!
//! Secrets never sit in the configuration itself, only paths to files that hold them; the one
//! exception is a webhook URL, since chat webhooks carry their secret in the path. Such a URL is a
//! [`SecretUrl`], which shows itself redacted in `Debug`, `Display` and when serialized, so `config
//! check`, logs and errors cannot print it by accident.
//!
//! A secret file that users other than its owner may open is reported ([`too_open`]), as ssh does for
//! a private key: a warning by default, an error under `--strict` ([`PermissionPolicy`]).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

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

/// A URL whose path or query may hold a secret. Shown only as [`redact_url`] shows it; the sink that
/// sends to it reads the real one with [`SecretUrl::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(Url);

impl SecretUrl {
    pub fn new(url: Url) -> Self {
        Self(url)
    }

    /// Only the sink that sends to this URL calls this.
    pub fn expose(&self) -> &Url {
        &self.0
    }

    pub fn scheme(&self) -> &str {
        self.0.scheme()
    }

    /// Replace every spelling of this URL's secret parts in `text` (a library or a receiver may echo
    /// the full URL, its path or its query).
    pub fn scrub(&self, text: &str) -> String {
        let url = &self.0;
        let mut out = text.replace(url.as_str(), &redact_url(url));
        let path = url.path();
        if path.len() > 1 {
            out = out.replace(path, "/<redacted>");
        }
        if let Some(q) = url.query().filter(|q| !q.is_empty()) {
            out = out.replace(q, "<redacted>");
        }
        out
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Serialized redacted: the only reason to serialize a configuration is to show it.
impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        // The parse error names the problem, never the value, which may be the secret itself.
        Url::parse(&text)
            .map(SecretUrl)
            .map_err(|e| serde::de::Error::custom(format!("not a valid URL ({e})")))
    }
}

/// Read a secret file: its content without one trailing newline (what an editor or `echo` adds,
/// not part of the secret). `key` is the config key that names the file; errors name the key and the
/// file, never the content.
pub fn read_bytes(path: &Path, key: &str) -> Result<Vec<u8>, String> {
    let mut bytes =
        std::fs::read(path).map_err(|e| format!("cannot read {key} {}: {e}", path.display()))?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(format!("{key} {} is empty", path.display()));
    }
    Ok(bytes)
}

/// [`read_bytes`] for a secret that must be text (a password).
pub fn read_text(path: &Path, key: &str) -> Result<String, String> {
    String::from_utf8(read_bytes(path, key)?)
        .map_err(|_| format!("cannot read {key} {}: not UTF-8 text", path.display()))
}

/// Defence in depth: no server reply or library message should hold a secret, but if one ever does,
/// it does not reach logs or the outbox. Secrets shorter than 4 bytes are not searched for:
/// replacing them would garble ordinary words of the message.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| s.len() >= 4)
        .fold(text.to_string(), |out, s| out.replace(s, "<redacted>"))
}

/// Where systemd puts the `LoadCredential=` copies of system services (one folder per unit, which the
/// service sees as `$CREDENTIALS_DIRECTORY`).
const SYSTEMD_CREDENTIALS: &str = "/run/credentials";

/// What a secret file that group or others may open means to `run` and `config check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PermissionPolicy {
    /// Say so (a log line, a `config check` warning) and go on: the default, so an upgrade does not
    /// stop a daemon that ran yesterday.
    #[default]
    Warn,
    /// `--strict`: `run` refuses to start, `config check` reports a problem (exit 2).
    Strict,
}

impl PermissionPolicy {
    /// Under [`PermissionPolicy::Strict`], any too-open file is an error.
    pub fn check(self, found: Vec<TooOpen>) -> Result<(), SecretsTooOpen> {
        match self {
            PermissionPolicy::Strict if !found.is_empty() => Err(SecretsTooOpen(found)),
            _ => Ok(()),
        }
    }
}

/// A secret file that users other than its owner may open. Names the file and the key that names
/// it, never the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooOpen {
    /// The config key that names the file (`registry.token_file`, `alerts.email[0].password_file`),
    /// or where the file was found (`npm user config`).
    pub key: String,
    pub path: PathBuf,
    /// The permission bits (`0o644`).
    pub mode: u32,
    /// The bits of `mode` that make it too open.
    pub open: u32,
}

impl fmt::Display for TooOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match (self.open & 0o070 != 0, self.open & 0o007 != 0) {
            (true, true) => "group and others",
            (true, false) => "group",
            _ => "others",
        };
        let what = match (self.open & 0o044 != 0, self.open & 0o022 != 0) {
            (true, true) => "readable and writable",
            (true, false) => "readable",
            (false, true) => "writable",
            (false, false) => "executable",
        };
        write!(
            f,
            "{}: {} is {what} by {who} (mode {:04o}); chmod go-rwx it",
            self.key,
            self.path.display(),
            self.mode
        )
    }
}

/// `run --strict` found secret files that group or others may open.
#[derive(Debug, thiserror::Error)]
#[error("refusing to start (--strict): {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct SecretsTooOpen(pub Vec<TooOpen>);

/// The bits of `mode` that let someone other than the file's owner open a secret file; 0 when none.
///
/// The rule is the file's mode only: any group or other bit is too open. The owner is not checked
/// (a file owned by another account is a setup ssh would refuse too, but reading the mode is enough
/// to catch the common mistake, a token file left at the umask's 0644). One exception: a systemd
/// credential (`systemd_credential`) may show group read. systemd writes each `LoadCredential=` copy
/// 0400, owned by root, and gives the service's user read access with a POSIX ACL entry; `stat`
/// shows an ACL's mask in the group bits, so the normal copy reads 0440 although no group can read
/// it. Nobody but systemd writes that folder, so other group bits, and any other bit, still count.
pub fn open_bits(mode: u32, systemd_credential: bool) -> u32 {
    let allowed = if systemd_credential { 0o040 } else { 0 };
    mode & 0o077 & !allowed
}

/// Whether `path` is a copy systemd made for `LoadCredential=`: inside this service's
/// `$CREDENTIALS_DIRECTORY`, or (for `config check` run from a shell) under systemd's folder for them.
fn is_systemd_credential(path: &Path, credentials_directory: Option<&Path>) -> bool {
    credentials_directory.is_some_and(|d| path.starts_with(d))
        || path.starts_with(SYSTEMD_CREDENTIALS)
}

/// Inspect the mode of the secret file at `path`, named by `key` (links are followed: the file read
/// is what counts). `None` when only its owner may open it, and also when it cannot be inspected: a
/// missing or unreadable file is reported where it is read, with the reason.
pub fn too_open(key: &str, path: &Path, credentials_directory: Option<&Path>) -> Option<TooOpen> {
    let mode = file_mode(path)?;
    let open = open_bits(mode, is_systemd_credential(path, credentials_directory));
    (open != 0).then(|| TooOpen {
        key: key.to_string(),
        path: path.to_path_buf(),
        mode,
        open,
    })
}

#[cfg(unix)]
fn file_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// Elsewhere there are no mode bits to read.
#[cfg(not(unix))]
fn file_mode(_path: &Path) -> Option<u32> {
    None
}

/// One warning log line per too-open file: the key, the path and the mode, never the content.
pub fn log_too_open(found: &[TooOpen]) {
    for t in found {
        tracing::warn!(
            key = %t.key,
            path = %t.path.display(),
            mode = %format_args!("{:04o}", t.mode),
            "{t}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_url_never_shows_its_path_or_query() {
        let url = SecretUrl::new(
            Url::parse("https://hooks.example.com/services/T0/B0/PATHSECRET?token=QSECRET")
                .expect("url"),
        );
        for shown in [
            format!("{url}"),
            format!("{url:?}"),
            serde_json::to_string(&url).expect("json"),
        ] {
            assert!(!shown.contains("SECRET"), "{shown}");
            assert!(
                shown.contains("https://hooks.example.com/<redacted>"),
                "{shown}"
            );
        }
        let text = format!(
            "echo {} and /services/T0/B0/PATHSECRET and token=QSECRET",
            url.expose()
        );
        assert!(!url.scrub(&text).contains("SECRET"));
    }

    #[test]
    fn a_bad_secret_url_is_refused_without_echoing_it() {
        let err = serde_json::from_str::<SecretUrl>("\"hooks.example.com/PATHSECRET\"")
            .expect_err("no scheme")
            .to_string();
        assert!(!err.contains("PATHSECRET"), "{err}");
        assert!(err.contains("not a valid URL"), "{err}");
    }

    #[test]
    fn secret_files_lose_one_newline_and_errors_name_the_file_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("hook-secret");
        std::fs::write(&p, "k3y-material\n").expect("write");
        assert_eq!(
            read_bytes(&p, "secret_file").expect("read"),
            b"k3y-material"
        );
        std::fs::write(&p, "k3y\n\n").expect("write");
        assert_eq!(read_bytes(&p, "secret_file").expect("read"), b"k3y\n");
        std::fs::write(&p, "s3cret\r\n").expect("write");
        assert_eq!(read_text(&p, "password_file").expect("read"), "s3cret");
        std::fs::write(&p, "\r\n").expect("write");
        assert_eq!(
            read_bytes(&p, "secret_file").expect_err("empty"),
            format!("secret_file {} is empty", p.display())
        );
        std::fs::write(&p, [0xff, 0xfe, b'x']).expect("write");
        let err = read_text(&p, "password_file").expect_err("not utf-8");
        assert!(err.contains(&p.display().to_string()), "{err}");
        let missing = dir.path().join("missing");
        let err = read_bytes(&missing, "secret_file").expect_err("missing");
        assert!(
            err.starts_with(&format!("cannot read secret_file {}: ", missing.display())),
            "{err}"
        );
    }

    #[test]
    fn scrub_hides_secrets_but_not_every_letter() {
        assert_eq!(
            scrub("535 bad hunter2x", &["hunter2x"]),
            "535 bad <redacted>"
        );
        assert_eq!(scrub("535 bad", &["a"]), "535 bad");
        assert_eq!(scrub("535 bad", &[]), "535 bad");
    }

    #[cfg(unix)]
    fn with_mode(dir: &Path, name: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, "s3cret\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    #[cfg(unix)]
    #[test]
    fn only_files_the_owner_alone_may_open_pass() {
        // The mode is inspected, not tried: running as root (who can open anything) changes nothing.
        let dir = tempfile::tempdir().expect("tempdir");
        for mode in [0o600, 0o400] {
            let p = with_mode(dir.path(), &format!("ok-{mode:o}"), mode);
            assert_eq!(too_open("registry.token_file", &p, None), None, "{mode:o}");
        }
        let p = with_mode(dir.path(), "group", 0o640);
        let found = too_open("registry.token_file", &p, None).expect("0640 warns");
        assert_eq!((found.mode, found.open), (0o640, 0o040));
        assert_eq!(
            found.to_string(),
            format!(
                "registry.token_file: {} is readable by group (mode 0640); chmod go-rwx it",
                p.display()
            )
        );
        let p = with_mode(dir.path(), "world", 0o644);
        let found = too_open("alerts.email[0].password_file", &p, None).expect("0644 warns");
        assert_eq!(
            found.to_string(),
            format!(
                "alerts.email[0].password_file: {} is readable by group and others (mode 0644); chmod go-rwx it",
                p.display()
            )
        );
        let p = with_mode(dir.path(), "writable", 0o602);
        assert!(too_open("k", &p, None)
            .expect("0602 warns")
            .to_string()
            .contains("is writable by others (mode 0602)"));
        assert_eq!(too_open("k", &dir.path().join("missing"), None), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_systemd_credential_may_show_its_acl_as_group_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let creds = dir.path().join("credentials");
        std::fs::create_dir(&creds).expect("mkdir");
        // What `stat` shows for systemd's copy: 0400 plus an ACL for the service user (mask r--).
        let p = with_mode(&creds, "npm-token", 0o440);
        assert_eq!(too_open("k", &p, Some(&creds)), None);
        assert!(
            too_open("k", &p, None).is_some(),
            "outside the folder 0440 warns"
        );
        let p = with_mode(&creds, "webhook-secret", 0o444);
        let found = too_open("k", &p, Some(&creds)).expect("others may read");
        assert_eq!(found.open, 0o004);
        assert!(found
            .to_string()
            .contains("is readable by others (mode 0444)"));
        assert_eq!(open_bits(0o440, true), 0);
        assert_eq!(open_bits(0o460, true), 0o020);
        assert_eq!(open_bits(0o440, false), 0o040);
    }

    #[test]
    fn strict_turns_a_too_open_file_into_an_error() {
        let found = vec![TooOpen {
            key: "registry.token_file".into(),
            path: "/etc/npm-watchdog/npm-token".into(),
            mode: 0o644,
            open: 0o044,
        }];
        assert!(PermissionPolicy::Warn.check(found.clone()).is_ok());
        assert!(PermissionPolicy::Strict.check(Vec::new()).is_ok());
        assert_eq!(
            PermissionPolicy::Strict
                .check(found)
                .expect_err("strict")
                .to_string(),
            "refusing to start (--strict): registry.token_file: /etc/npm-watchdog/npm-token is readable by group and others (mode 0644); chmod go-rwx it"
        );
    }
}
