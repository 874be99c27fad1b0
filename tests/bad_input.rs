//! Token files as people really leave them: empty, blank, saved with CRLF line endings, with trailing
//! spaces or tabs, with a second line. `npm-watchdog tokens` runs against the fake registry, which
//! accepts only the exact token, and each test checks what the user sees: the exit code, the message
//! (naming the file), what the registry was sent, and that no token value is ever printed.

use testkit::fake_registry;
use testkit::test_config;

use std::path::Path;
use std::process::{Output, Stdio};

use fake_registry::{FakeRegistry, TOKEN};
use serde_json::json;
use test_config::TestConfig;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_npm-watchdog");

/// A second, different token value (the registry does not accept it); it must never be printed.
const OTHER: &str = "npm_SecondLineTokenNeverShown0123456789";

/// A fake registry listing one token, and a config whose `registry.token_file` is `<dir>/token`.
async fn setup() -> (FakeRegistry, tempfile::TempDir) {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(vec![json!({
        "name": "laptop", "key": "abcdef12121212121212", "token": "npm_ab...yz", "cidr": null,
        "bypass_2fa": false, "created": "2026-11-26T00:00:00.000Z", "expiry": null,
        "permissions": [{"name": "package", "action": "read"}], "revoked": null
    })]);
    reg.set_profile(json!({"name": "alice", "tfa": {"mode": "auth-and-writes", "pending": false}}));
    let dir = tempfile::tempdir().expect("tempdir");
    TestConfig::new(
        &reg.url,
        &dir.path().join("token"),
        &dir.path().join("state.db"),
    )
    .no_retries()
    .write(&dir.path().join("config.toml"));
    (reg, dir)
}

/// Writes `content` as the token file, runs `npm-watchdog tokens`, and checks that neither token
/// value appears anywhere in what it printed.
async fn tokens_with(reg: &FakeRegistry, dir: &Path, content: &[u8]) -> Output {
    std::fs::write(dir.join("token"), content).expect("token file");
    reg.clear_requests();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .arg("tokens")
        .env("NPM_CONFIG_USERCONFIG", dir.join("no-npmrc"))
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run npm-watchdog");
    let all = format!("{}{}", stdout(&out), stderr(&out));
    testkit::secrets::assert_absent(
        &[TOKEN, OTHER],
        [(format!("the output for the token file {content:?}"), &all)],
    );
    out
}

/// The `authorization` header of every request the registry got.
fn bearers(reg: &FakeRegistry) -> Vec<String> {
    reg.requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_owned))
        .collect()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_or_blank_token_file_is_refused_naming_the_file() {
    let (reg, dir) = setup().await;
    let file = dir.path().join("token");
    for content in [
        "",
        "\n",
        "   \t  \n\n",
        "\r\n\r\n",
        "# the watchdog's npm token\n",
    ] {
        let out = tokens_with(&reg, dir.path(), content.as_bytes()).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "token file {content:?}: {err}");
        assert_eq!(
            err.trim_end(),
            format!("npm-watchdog: credential file {}: empty", file.display()),
            "token file {content:?}"
        );
        assert!(stdout(&out).is_empty(), "token file {content:?}");
        assert!(
            reg.requests().is_empty(),
            "token file {content:?}: the registry was called without a credential: {:?}",
            bearers(&reg)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn crlf_and_trailing_spaces_or_tabs_are_trimmed_and_the_token_works() {
    let (reg, dir) = setup().await;
    // `//127.0.0.1:<port>/`, the key prefix of the registry's auth lines.
    let nerf = reg.url.trim_start_matches("http:");
    let cases = [
        format!("{TOKEN}\r\n"),
        format!("{TOKEN}\r"),
        format!("{TOKEN}  \n"),
        format!("{TOKEN}\t\n"),
        format!("{TOKEN} \t \r\n"),
        format!("  \t{TOKEN}\n"),
        format!("\r\n{TOKEN}\r\n"),
        // An npmrc line copied from a Windows machine.
        format!("{nerf}:_authToken={TOKEN} \r\n"),
    ];
    for content in cases {
        let out = tokens_with(&reg, dir.path(), content.as_bytes()).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "token file {content:?}: {}",
            stderr(&out)
        );
        assert!(
            stdout(&out).contains("laptop"),
            "token file {content:?}: {}",
            stdout(&out)
        );
        let sent = bearers(&reg);
        assert!(
            !sent.is_empty() && sent.iter().all(|b| *b == format!("Bearer {TOKEN}")),
            "token file {content:?}: the registry was not sent exactly the token (a stray byte?)"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_file_with_two_lines_uses_the_first_and_never_shows_either() {
    let (reg, dir) = setup().await;
    // The first line that is not blank or a `#` comment is the token: it is used, and a second
    // line is never sent anywhere.
    for content in [
        format!("{TOKEN}\n{OTHER}\n"),
        format!("{TOKEN}\r\n{OTHER}\r\n"),
        format!("# rotated 2026-11-26\n{TOKEN}\n{OTHER}\n"),
    ] {
        let out = tokens_with(&reg, dir.path(), content.as_bytes()).await;
        assert_eq!(out.status.code(), Some(0), "{content:?}: {}", stderr(&out));
        assert!(stdout(&out).contains("laptop"), "{}", stdout(&out));
        let sent = bearers(&reg);
        assert!(
            !sent.is_empty() && sent.iter().all(|b| *b == format!("Bearer {TOKEN}")),
            "{content:?}: the registry was not sent exactly the first line"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_credential_is_reported_with_the_file_it_came_from() {
    let (reg, dir) = setup().await;
    let file = dir.path().join("token");
    // A stale token on the first line, the right one below it: the first line is what is used, the
    // registry refuses it, and the error must say where the rejected credential came from (it may
    // come from the token file, a systemd credential or the npm user config), so the user knows
    // which file to fix.
    let out = tokens_with(&reg, dir.path(), format!("{OTHER}\n{TOKEN}\n").as_bytes()).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert!(err.contains("unauthorized (401)"), "{err}");
    assert!(
        err.contains(&file.display().to_string()),
        "the registry rejected the credential, but the error does not name the token file it was \
         read from ({}), so the user cannot tell which file to fix:\n{err}",
        file.display()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_file_saved_with_a_utf8_bom_is_read_or_refused_naming_the_file() {
    let (reg, dir) = setup().await;
    // Some Windows editors, and Windows PowerShell's `-Encoding utf8`, write a byte-order mark first.
    let out = tokens_with(&reg, dir.path(), format!("\u{feff}{TOKEN}\r\n").as_bytes()).await;
    let sent_bom = reg
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization"))
        .any(|b| b.contains('\u{feff}') || b.len() != format!("Bearer {TOKEN}").len());
    let err = stderr(&out);
    assert!(
        !sent_bom,
        "a token file that starts with a UTF-8 byte-order mark should be read as the token (or be \
         refused, naming the file); instead the mark was sent to the registry as part of the token, \
         which refused it:\n{err}"
    );
    let file = dir.path().join("token");
    if out.status.success() {
        assert!(stdout(&out).contains("laptop"), "{}", stdout(&out));
    } else {
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(&file.display().to_string()), "{err}");
    }
}
