//! Email sink: one plain-text message per notification, sent with lettre over SMTP.
//!
//! The connection security comes from the URL scheme and nothing else, so a typo cannot silently
//! downgrade it:
//! - `smtp://host[:25]`: no TLS at all (a local relay, a test server);
//! - `smtp+starttls://host[:587]`: STARTTLS is required; lettre refuses to go on (and never sends
//!   credentials or mail) if the server does not upgrade the connection;
//! - `smtps://host[:465]`: implicit TLS from the first byte.
//!
//! The SMTP password is read from `password_file` at every send, so rotating it needs no restart.
//! The whole send (connect, TLS, AUTH, the message) is bounded by the sink's `timeout`: lettre's own
//! timeout only covers parts of it. Errors say what failed (connect, TLS, AUTH, timeout) and never
//! carry the password.
//!
//! A permanent (5xx) SMTP reply rejects the message for good (recorded, counted as `rejected`, not
//! retried); a transient (4xx) reply, a timeout or a connection failure is retried by the outbox.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use url::Url;

use super::{message, Sink, SinkConfig, SinkContext, SinkError};
use crate::secret;
use crate::config::types::{check, one_or_many, rule, HumanDuration, Invalid};

crate::sink_section! {
    /// `[[alerts.email]]`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct EmailSinkConfig {
        /// Label in metrics and logs; defaults to `email` (`email-2`, … for further sinks).
        #[serde(default)]
        pub name: Option<String>,
        /// `smtp://host:port` (no TLS), `smtp+starttls://host:port`, or `smtps://host:port`
        /// (implicit TLS).
        pub smtp_url: Url,
        pub from: String,
        #[serde(deserialize_with = "one_or_many")]
        pub to: Vec<String>,
        #[serde(default)]
        pub username: Option<String>,
        #[serde(default)]
        pub password_file: Option<PathBuf>,
        #[serde(default = "super::default_sink_timeout")]
        pub timeout: HumanDuration,
    }
}

impl SinkConfig for EmailSinkConfig {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn validate(&self) -> Result<(), Invalid> {
        let url = &self.smtp_url;
        let bad_to = self.to.iter().find(|t| t.parse::<Mailbox>().is_err());
        check([
            rule(
                "smtp_url",
                !matches!(url.scheme(), "smtp" | "smtp+starttls" | "smtps"),
                "scheme must be smtp, smtp+starttls or smtps",
            ),
            rule("smtp_url", url.host_str().is_none_or(str::is_empty), "needs a host"),
            rule(
                "smtp_url",
                !url.username().is_empty() || url.password().is_some(),
                "must not carry credentials; use username and password_file",
            ),
            rule(
                "from",
                self.from.parse::<Mailbox>().is_err(),
                format!("`{}` is not an email address", self.from),
            ),
            rule("to", self.to.is_empty(), "needs at least one address"),
            rule(
                "to",
                bad_to.is_some(),
                format!("`{}` is not an email address", bad_to.map_or("", String::as_str)),
            ),
            rule(
                "password_file",
                self.username.is_some() != self.password_file.is_some(),
                "username and password_file go together",
            ),
        ])
    }

    fn secret_files(&self) -> Vec<(&'static str, &Path)> {
        self.password_file
            .iter()
            .map(|p| ("password_file", p.as_path()))
            .collect()
    }

    fn build(&self, name: String, _: &SinkContext) -> Result<Vec<Arc<dyn Sink>>, SinkError> {
        Ok(vec![Arc::new(EmailSink::new(name, self)?)])
    }
}

const HEADER_CHECK: &str = "X-Npm-Watchdog-Check";
const HEADER_SEVERITY: &str = "X-Npm-Watchdog-Severity";
const HEADER_STATUS: &str = "X-Npm-Watchdog-Status";

/// How the connection to the SMTP server is protected, from the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// `smtp://`: no TLS.
    Plain,
    /// `smtp+starttls://`: STARTTLS required.
    StartTls,
    /// `smtps://`: implicit TLS.
    Implicit,
}

/// Where and how to connect, parsed from `smtp_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    security: Security,
    host: String,
    port: u16,
}

impl Endpoint {
    fn parse(url: &Url) -> Result<Self, String> {
        let (security, default_port) = match url.scheme() {
            "smtp" => (Security::Plain, 25),
            "smtp+starttls" => (Security::StartTls, 587),
            "smtps" => (Security::Implicit, 465),
            other => {
                return Err(format!(
                    "smtp_url scheme `{other}` is not one of smtp, smtp+starttls, smtps"
                ))
            }
        };
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            // lettre resolves `(host, port)`, which wants the address without brackets.
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err("smtp_url needs a host".into()),
        };
        Ok(Endpoint {
            security,
            host,
            port: url.port().unwrap_or(default_port),
        })
    }

    /// `smtp+starttls://mail.example.com:587`, for messages (the URL never holds credentials).
    fn shown(&self) -> String {
        let scheme = match self.security {
            Security::Plain => "smtp",
            Security::StartTls => "smtp+starttls",
            Security::Implicit => "smtps",
        };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Login for the SMTP server; the password itself stays in its file until a send needs it.
#[derive(Clone)]
struct Login {
    username: String,
    password_file: PathBuf,
}

pub struct EmailSink {
    name: String,
    endpoint: Endpoint,
    from: Mailbox,
    to: Vec<Mailbox>,
    login: Option<Login>,
    timeout: HumanDuration,
    /// Server, port, TLS parameters (with the root store loaded once) and timeout; credentials are
    /// added per send because the password may have been rotated.
    builder: AsyncSmtpTransportBuilder,
    /// Built once when no login is configured. (lettre's `pool` feature is off, so every send opens
    /// its own connection: nothing stale survives a mail server restart.)
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
}

impl fmt::Debug for EmailSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailSink")
            .field("name", &self.name)
            .field("server", &self.endpoint.shown())
            .field("from", &self.from.to_string())
            .field(
                "to",
                &self.to.iter().map(ToString::to_string).collect::<Vec<_>>(),
            )
            .field(
                "username",
                &self.login.as_ref().map(|l| l.username.as_str()),
            )
            .field(
                "password_file",
                &self.login.as_ref().map(|l| &l.password_file),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl EmailSink {
    pub fn new(name: String, cfg: &EmailSinkConfig) -> Result<Self, SinkError> {
        let fail = |what: String| SinkError::new(format!("email sink {name}: {what}"));
        let endpoint = Endpoint::parse(&cfg.smtp_url).map_err(&fail)?;
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| fail(format!("from `{}` is not an email address ({e})", cfg.from)))?;
        if cfg.to.is_empty() {
            return Err(fail("`to` needs at least one address".into()));
        }
        let to = cfg
            .to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>()
                    .map_err(|e| fail(format!("to `{t}` is not an email address ({e})")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let login = match (&cfg.username, &cfg.password_file) {
            (Some(username), Some(password_file)) => Some(Login {
                username: username.clone(),
                password_file: password_file.clone(),
            }),
            (None, None) => None,
            _ => return Err(fail("username and password_file go together".into())),
        };
        if login.is_some() && endpoint.security == Security::Plain && !is_loopback(&endpoint.host) {
            tracing::warn!(
                sink = %name,
                server = %endpoint.shown(),
                "SMTP credentials would cross the network without TLS; use smtp+starttls:// or smtps://"
            );
        }

        let tls = match endpoint.security {
            Security::Plain => Tls::None,
            Security::StartTls | Security::Implicit => {
                let params = TlsParameters::new(endpoint.host.clone()).map_err(|e| {
                    fail(format!("cannot set up TLS for {}: {e}", endpoint.shown()))
                })?;
                if endpoint.security == Security::StartTls {
                    Tls::Required(params)
                } else {
                    Tls::Wrapper(params)
                }
            }
        };
        let builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(endpoint.host.clone())
                .port(endpoint.port)
                .tls(tls)
                .timeout(Some(cfg.timeout.0));
        let transport = login.is_none().then(|| builder.clone().build());

        Ok(EmailSink {
            name,
            endpoint,
            from,
            to,
            login,
            timeout: cfg.timeout,
            builder,
            transport,
        })
    }

    /// The message for a notification: subject and body from [`message`], plus headers that mail
    /// filters can match on.
    fn build_message(&self, m: &super::Message) -> Result<Message, SinkError> {
        let checks: Vec<&str> = m.checks.keys().map(String::as_str).collect();
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(message::message_subject(m))
            .raw_header(header(HEADER_CHECK, &checks.join(", ")))
            .raw_header(header(HEADER_SEVERITY, m.severity().as_str()))
            .raw_header(header(HEADER_STATUS, m.status.as_str()));
        for to in &self.to {
            b = b.to(to.clone());
        }
        // Plain text first, HTML second: clients show the last part they can render, and the plain
        // part stays what filters, pagers' mail bridges and `mail` read.
        b.multipart(MultiPart::alternative_plain_html(
            message::message_body(m),
            message::message_html(m),
        ))
        .map_err(|e| self.error(format!("cannot build the message: {e}")))
    }

    fn error(&self, what: String) -> SinkError {
        SinkError::new(format!("email sink {}: {what}", self.name))
    }

    /// The transport for this send: the prebuilt one, or one with the password as it is now.
    fn transport(
        &self,
    ) -> Result<(AsyncSmtpTransport<Tokio1Executor>, Option<String>), SinkError> {
        match (&self.transport, &self.login) {
            (Some(t), _) => Ok((t.clone(), None)),
            (None, Some(login)) => {
                let password = secret::read_text(&login.password_file, "password_file")
                    .map_err(|e| self.error(e))?;
                let transport = self
                    .builder
                    .clone()
                    .credentials(Credentials::new(login.username.clone(), password.clone()))
                    .build();
                Ok((transport, Some(password)))
            }
            (None, None) => Ok((self.builder.clone().build(), None)),
        }
    }
}

#[async_trait::async_trait]
impl Sink for EmailSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, m: &super::Message) -> Result<(), SinkError> {
        let email = self.build_message(m)?;
        let (transport, password) = self.transport()?;
        let server = self.endpoint.shown();
        let outcome = tokio::time::timeout(self.timeout.0, transport.send(email)).await;
        match outcome {
            Ok(Ok(_response)) => Ok(()),
            Ok(Err(e)) => {
                let text = describe_smtp_error(
                    &e,
                    self.login.is_some(),
                    self.endpoint.security != Security::Plain,
                );
                let text = secret::scrub(&text, password.as_deref().as_slice());
                let what = format!("sending to {server} failed: {text}");
                // A 5xx reply is the server's final word on this message (a refused sender or
                // recipient, an oversized message, credentials it will not take): sending it again
                // cannot succeed. 4xx replies and connection trouble are worth another try.
                if e.is_permanent() {
                    Err(SinkError::rejected(self.error(what).message))
                } else {
                    Err(self.error(what))
                }
            }
            Err(_elapsed) => Err(self.error(format!(
                "sending to {server} timed out after {}",
                self.timeout
            ))),
        }
    }
}

fn header(name: &'static str, value: &str) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value.to_string())
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// What failed, in words an operator can act on, followed by lettre's own description.
fn describe_smtp_error(e: &lettre::transport::smtp::Error, with_login: bool, tls: bool) -> String {
    use std::error::Error as _;
    let detail = e.to_string();
    let io_kind = {
        let mut source = e.source();
        let mut kind = None;
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                kind = Some(io.kind());
                break;
            }
            source = s.source();
        }
        kind
    };
    let what = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_tls() {
        "TLS failed".to_string()
    } else if e.is_client() && detail.contains("STARTTLS") {
        "the server does not offer STARTTLS, which smtp+starttls:// requires, so nothing was sent"
            .to_string()
    } else if e.is_client() && detail.contains("authentication mechanism") {
        "the server offers no AUTH mechanism that lettre supports (PLAIN, LOGIN) on this \
         connection, so the credentials were not sent"
            .to_string()
    } else if let Some(code) = e.status() {
        match u16::from(code) {
            534 | 535 if with_login => "authentication rejected".to_string(),
            530 => "the server requires authentication".to_string(),
            c if e.is_transient() => format!("the server refused for now ({c})"),
            c => format!("the server refused ({c})"),
        }
    } else {
        match io_kind {
            Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_string(),
            // tokio-rustls reports handshake failures (bad certificate, a server that does not
            // speak TLS) as invalid data.
            Some(std::io::ErrorKind::InvalidData) if tls => "TLS failed".to_string(),
            Some(std::io::ErrorKind::TimedOut) => "timed out".to_string(),
            Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof) => {
                "the server closed the connection".to_string()
            }
            Some(_) => "network error".to_string(),
            None if e.is_response() => "unexpected reply from the server".to_string(),
            None => "SMTP error".to_string(),
        }
    };
    format!("{what} ({detail})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::fixtures::note;
    use crate::alerts::Status;
    use std::time::Duration;

    fn config(url: &str) -> EmailSinkConfig {
        EmailSinkConfig {
            name: None,
            smtp_url: Url::parse(url).expect("url"),
            from: "Watchdog <watchdog@example.com>".into(),
            to: vec!["sec@example.com".into(), "ops@example.com".into()],
            username: None,
            password_file: None,
            timeout: HumanDuration::secs(2),
            min_severity: crate::finding::Severity::Warning,
            checks: Vec::new(),
            exclude_checks: Vec::new(),
            repeat_interval: None,
            group_by: None,
            max_items: None,
            group_wait: None,
        }
    }

    #[test]
    fn schemes_choose_security_and_default_port() {
        let table = [
            ("smtp://mail.example.com", Security::Plain, 25),
            ("smtp://127.0.0.1:2525", Security::Plain, 2525),
            ("smtp+starttls://mail.example.com", Security::StartTls, 587),
            (
                "smtp+starttls://mail.example.com:2587",
                Security::StartTls,
                2587,
            ),
            ("smtps://mail.example.com", Security::Implicit, 465),
            ("smtps://mail.example.com:4650", Security::Implicit, 4650),
        ];
        for (url, security, port) in table {
            let e = Endpoint::parse(&Url::parse(url).expect("url")).expect(url);
            assert_eq!((e.security, e.port), (security, port), "{url}");
        }
        let v6 = Endpoint::parse(&Url::parse("smtp://[::1]:2525").expect("url")).expect("v6");
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.shown(), "smtp://[::1]:2525");
        let err = Endpoint::parse(&Url::parse("http://mail.example.com").expect("url"))
            .expect_err("http is not smtp");
        assert!(err.contains("`http`"), "{err}");
    }

    #[test]
    fn new_rejects_what_validation_would_and_does_not_panic() {
        let mut c = config("smtp://127.0.0.1:2525");
        c.from = "not an address".into();
        let err = EmailSink::new("email".into(), &c).expect_err("bad from");
        assert!(
            err.to_string()
                .contains("email sink email: from `not an address`"),
            "{err}"
        );

        let mut c = config("smtp://127.0.0.1:2525");
        c.username = Some("watchdog".into());
        let err = EmailSink::new("email".into(), &c).expect_err("username alone");
        assert!(err.to_string().contains("go together"), "{err}");

        let mut c = config("smtp://127.0.0.1:2525");
        c.to.clear();
        assert!(EmailSink::new("email".into(), &c).is_err());

        assert!(EmailSink::new("email".into(), &config("smtps://mail.example.com")).is_ok());
        assert!(
            EmailSink::new("email".into(), &config("smtp+starttls://mail.example.com")).is_ok()
        );
    }

    #[test]
    fn message_has_subject_recipients_filter_headers_and_body() {
        let sink = EmailSink::new("email".into(), &config("smtp://127.0.0.1:2525")).expect("sink");
        let raw = String::from_utf8(
            sink.build_message(&crate::alerts::Message::single(note(Status::Firing, false)))
                .expect("message")
                .formatted(),
        )
        .expect("utf-8");
        assert!(
            raw.contains(
                "Subject: [FIRING:critical] token-bypass-2fa: token 82e393 (bulk-hardening)\r\n"
            ),
            "{raw}"
        );
        assert!(
            raw.contains("From: Watchdog <watchdog@example.com>\r\n"),
            "{raw}"
        );
        assert!(
            raw.contains("sec@example.com") && raw.contains("ops@example.com"),
            "{raw}"
        );
        assert!(
            raw.contains("X-Npm-Watchdog-Check: token-bypass-2fa\r\n"),
            "{raw}"
        );
        assert!(
            raw.contains("X-Npm-Watchdog-Severity: critical\r\n"),
            "{raw}"
        );
        assert!(raw.contains("X-Npm-Watchdog-Status: firing\r\n"), "{raw}");
        assert!(
            raw.contains("Content-Type: text/plain; charset=utf-8\r\n"),
            "{raw}"
        );
        // Plain text first, then the same content as HTML, as alternatives of one message.
        let plain = raw
            .find("Content-Type: text/plain; charset=utf-8")
            .expect("plain part");
        let html = raw
            .find("Content-Type: text/html; charset=utf-8")
            .expect("html part");
        assert!(plain < html, "{raw}");
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("<strong>Fix:</strong>"), "{raw}");
        assert!(raw.contains("npm token revoke 82e393"), "{raw}");
    }

    #[test]
    fn debug_shows_where_but_no_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("smtp-password");
        std::fs::write(&p, "hunter2-very-secret").expect("write");
        let mut c = config("smtp+starttls://mail.example.com");
        c.username = Some("watchdog".into());
        c.password_file = Some(p.clone());
        let sink = EmailSink::new("email".into(), &c).expect("sink");
        let shown = format!("{sink:?}");
        assert!(
            shown.contains("smtp+starttls://mail.example.com:587"),
            "{shown}"
        );
        assert!(shown.contains("watchdog"), "{shown}");
        assert!(shown.contains(&p.display().to_string()), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[tokio::test]
    async fn closed_port_fails_fast_and_says_connection_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let sink = EmailSink::new("email".into(), &config(&format!("smtp://127.0.0.1:{port}")))
            .expect("sink");
        let started = std::time::Instant::now();
        let err = sink
            .send(&note(Status::Firing, false))
            .await
            .expect_err("nothing listens");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "email sink email: sending to smtp://127.0.0.1:{port} failed: connection refused"
            )),
            "{text}"
        );
    }

    #[tokio::test]
    async fn silent_server_is_cut_off_by_the_sink_timeout() {
        // Accepts the connection and never says a word: lettre waits for the greeting.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let mut c = config(&format!("smtp://127.0.0.1:{port}"));
        c.timeout = HumanDuration(Duration::from_millis(500));
        let sink = EmailSink::new("email".into(), &c).expect("sink");
        let started = std::time::Instant::now();
        let err = sink
            .send(&note(Status::Firing, false))
            .await
            .expect_err("silent server");
        let took = started.elapsed();
        hold.abort();
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(err.to_string().contains("timed out"), "{err}");
    }

    #[tokio::test]
    async fn unreadable_password_file_fails_before_connecting_and_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("nope");
        let mut c = config("smtp://127.0.0.1:9");
        c.username = Some("watchdog".into());
        c.password_file = Some(p.clone());
        let sink = EmailSink::new("email".into(), &c).expect("sink");
        let err = sink
            .send(&note(Status::Firing, false))
            .await
            .expect_err("no password file")
            .to_string();
        assert!(
            err.contains(&format!("cannot read password_file {}", p.display())),
            "{err}"
        );
    }
}
