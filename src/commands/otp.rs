//! One-time passwords for the attended commands (`audit` reading trust, `harden`).
//!
//! A TOTP code lives about 30 seconds and the registry wants one with every request, so a run over a
//! few hundred packages outlives the code it started with. When the registry challenges again, a run
//! on a terminal asks for a fresh code (or, when the registry offers web-based 2FA, shows the URL to
//! confirm at and polls until it is confirmed), as the npm CLI does; a run off a terminal cannot ask,
//! so it stops, and the command says what was done and what remains ([`EXIT_NEEDS_OTP`]).

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::credential::Credential;
use crate::registry::{RegistryClient, WebChallenge, WebPoll};

/// Exit code of an attended command stopped for a one-time password it could not get: off a
/// terminal, a code was needed (or the one given expired) before the work was done.
pub const EXIT_NEEDS_OTP: i32 = 3;

/// How long a web-based 2FA confirmation is waited for before the command stops.
pub const WEB_2FA_WAIT: Duration = Duration::from_secs(300);

/// How many fresh codes in a row may be refused before the command stops asking.
const MAX_REFUSED: u32 = 3;

/// Whether the command can ask its user for a code: standard input and standard error (where the
/// question goes) are both terminals. The npm CLI asks only in the same case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attended {
    Terminal,
    No,
}

impl Attended {
    pub fn detect() -> Self {
        if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            Attended::Terminal
        } else {
            Attended::No
        }
    }
}

/// Why a command stopped asking the registry: printed with what was done and what remains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop(pub String);

/// The code the next request goes out with, and how to get another.
pub struct Otp {
    code: Option<String>,
    attended: Attended,
    /// The current code came from the user (or the browser) and no request has accepted it yet.
    untried: bool,
    /// Fresh codes refused in a row.
    refused: u32,
}

impl std::fmt::Debug for Otp {
    /// The code is a credential for a few seconds: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Otp")
            .field("code", &self.code.as_ref().map(|_| "<redacted>"))
            .field("attended", &self.attended)
            .finish()
    }
}

impl Otp {
    pub fn new(code: Option<&str>, attended: Attended) -> Self {
        Self {
            code: code.map(|c| c.trim().to_string()).filter(|c| !c.is_empty()),
            attended,
            untried: code.is_some(),
            refused: 0,
        }
    }

    /// The code to send, if there is one yet.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// Whether a code was given or obtained at some point.
    pub fn has_code(&self) -> bool {
        self.code.is_some()
    }

    /// Whether a fresh code can be asked for (on a terminal).
    pub fn can_ask(&self) -> bool {
        self.attended == Attended::Terminal
    }

    /// A request went through with the current code.
    pub fn accepted(&mut self) {
        self.untried = false;
        self.refused = 0;
    }

    /// [`Self::accepted`] when `ok`.
    pub fn accepted_if(&mut self, ok: bool) {
        if ok {
            self.accepted();
        }
    }

    /// The registry challenged a request sent with the current code (or with none): get another,
    /// or say why the command must stop. `web` is the challenge's web-2FA offer, if any; the poll
    /// goes out with `cred`, the credential the challenged request used.
    pub async fn renew(
        &mut self,
        client: &RegistryClient,
        cred: &Credential,
        web: Option<&WebChallenge>,
    ) -> Result<(), Stop> {
        let had = self.code.is_some();
        if self.untried && had {
            self.refused += 1;
        }
        if self.attended == Attended::No {
            let why = if had {
                "the registry refused the one-time password (one-time codes expire after about 30 \
                 seconds)"
            } else {
                "the registry asks for a one-time password"
            };
            return Err(Stop(match web {
                Some(w) => format!(
                    "{why} and offers web-based 2FA, which needs a terminal: open {} in a browser \
                     to confirm (the command would then poll {}), or run again on a terminal or \
                     with --otp and a fresh code",
                    w.auth_url, w.done_url
                ),
                None => format!(
                    "{why}, and there is no terminal to ask for another: run again with --otp and \
                     a fresh code, or on a terminal"
                ),
            }));
        }
        if self.refused >= MAX_REFUSED {
            return Err(Stop(format!(
                "{MAX_REFUSED} one-time passwords in a row were refused"
            )));
        }
        let fresh = match web {
            Some(w) => web_code(client, cred, w).await?,
            None => ask(if had {
                "The one-time password was refused or has expired. Enter a fresh one (empty to stop): "
            } else {
                "This operation needs a one-time password. Enter one (empty to stop): "
            })
            .await?,
        };
        self.code = Some(fresh);
        self.untried = true;
        Ok(())
    }
}

/// Ask on the terminal; an empty answer or the end of input stops.
async fn ask(question: &'static str) -> Result<String, Stop> {
    let answer = tokio::task::spawn_blocking(move || {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(question.as_bytes());
        let _ = err.flush();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    })
    .await;
    match answer {
        Ok(Ok(line)) if !line.trim().is_empty() => Ok(line.trim().to_string()),
        Ok(Ok(_)) => Err(Stop("no one-time password was given".into())),
        Ok(Err(e)) => Err(Stop(format!("cannot read a one-time password: {e}"))),
        Err(e) => Err(Stop(format!("cannot read a one-time password: {e}"))),
    }
}

/// Web-based 2FA on a terminal: show where to confirm, then poll until the registry hands out the
/// code, for at most [`WEB_2FA_WAIT`].
async fn web_code(
    client: &RegistryClient,
    cred: &Credential,
    challenge: &WebChallenge,
) -> Result<String, Stop> {
    eprintln!(
        "Authenticate your account at:\n{}\nWaiting for the confirmation (at most {} minutes)...",
        challenge.auth_url,
        WEB_2FA_WAIT.as_secs() / 60
    );
    let deadline = Instant::now() + WEB_2FA_WAIT;
    loop {
        match client.web_auth_poll(challenge, cred).await {
            Ok(WebPoll::Done(code)) => return Ok(code),
            Ok(WebPoll::Pending(wait)) => {
                if Instant::now() + wait > deadline {
                    return Err(Stop(format!(
                        "web-based 2FA was not confirmed within {} minutes",
                        WEB_2FA_WAIT.as_secs() / 60
                    )));
                }
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(Stop(format!("web-based 2FA failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_is_never_in_debug_output() {
        let otp = Otp::new(Some(" 123456 "), Attended::No);
        assert_eq!(otp.code(), Some("123456"));
        assert!(!format!("{otp:?}").contains("123456"));
    }

    #[tokio::test]
    async fn off_a_terminal_a_challenge_stops_and_says_why() {
        let client = RegistryClient::new(
            url::Url::parse("http://127.0.0.1:9/").expect("url"),
            Duration::from_secs(1),
            crate::registry::RetryPolicy::default(),
            (),
        )
        .expect("client");
        let cred = Credential::new(
            "tok".to_string().into(),
            crate::credential::Source::TokenFile("token".into()),
        );
        let mut none = Otp::new(None, Attended::No);
        let stop = none.renew(&client, &cred, None).await.expect_err("stops");
        assert!(stop.0.contains("asks for a one-time password"), "{stop:?}");
        let mut given = Otp::new(Some("123456"), Attended::No);
        let web = WebChallenge {
            auth_url: "https://www.example.test/auth/abc".into(),
            done_url: "http://127.0.0.1:9/-/done/abc".into(),
        };
        let stop = given
            .renew(&client, &cred, Some(&web))
            .await
            .expect_err("stops");
        assert!(stop.0.contains("refused the one-time password"), "{stop:?}");
        assert!(
            stop.0.contains("https://www.example.test/auth/abc"),
            "{stop:?}"
        );
        assert!(stop.0.contains("http://127.0.0.1:9/-/done/abc"), "{stop:?}");
    }
}
