//! `RegistryClient` against the in-process fake registry: pagination, retries, error classification,
//! metrics, body caps and credential hygiene. Token-object parsing itself is unit-tested in
//! `registry/tokens.rs`.

mod client_support;
use testkit::fake_registry;

use std::time::{Duration, Instant};

use client_support::{
    assert_secret_absent, client, client_with, cred, cred_with, fast_retry, metric_line, text,
};
use fake_registry::{
    escaped_entity, escaped_name, packument_doc_padded, FakeRegistry, Fault, NextStyle, TOKEN,
    TOKENS_PATH,
};
use npm_watchdog::registry::{BodyLimits, Fetched, RegistryClient, RegistryError, RetryPolicy};
use npm_watchdog::registry::{TfaMode, Token, TokenKind};
use serde_json::{json, Value};

/// A classic token object; key prefixes differ in the first six characters.
fn token_obj(i: usize) -> Value {
    json!({
        "token": format!("npm_{i:02}…"),
        "key": key_of(i),
        "name": format!("token-{i}"),
        "created": "2026-01-01T00:00:00.000Z",
        "updated": "2026-01-01T00:00:00.000Z",
        "readonly": false,
        "cidr_whitelist": null,
    })
}

fn key_of(i: usize) -> String {
    format!("{:06x}{}", 0xa00000 + i, "0".repeat(122))
}

fn tokens(n: usize) -> Vec<Value> {
    (0..n).map(token_obj).collect()
}

fn keys(t: &[Token]) -> Vec<String> {
    t.iter().map(|t| t.key.clone()).collect()
}

fn paths(reg: &FakeRegistry) -> Vec<String> {
    reg.requests()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect()
}

/// A 7-token list in pages of 3 (3 pages).
async fn three_page_registry(style: NextStyle) -> FakeRegistry {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(tokens(7));
    reg.set_page_size(3);
    reg.set_next_style(style);
    reg
}

const PAGE_PATHS: [&str; 3] = [
    "/-/npm/v1/tokens",
    "/-/npm/v1/tokens?page=2",
    "/-/npm/v1/tokens?page=3",
];

// ---------------------------------------------------------------------------------------------------
// Pagination

#[tokio::test]
async fn three_pages_with_relative_next() {
    let reg = three_page_registry(NextStyle::Relative).await;
    let (c, metrics) = client(&reg.url);
    let list = c.list_tokens(&cred()).await.expect("token list");
    assert_eq!(keys(&list), (0..7).map(key_of).collect::<Vec<_>>());
    assert_eq!(list[0].id, "a00000");
    assert_eq!(list[6].label(), "token a00006 (token-6)");
    assert!(list.iter().all(|t| t.kind == TokenKind::Classic));
    assert_eq!(paths(&reg), PAGE_PATHS);
    for r in reg.requests() {
        assert_eq!(r.method, "GET");
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(r.header("accept"), Some("application/json"));
        assert_eq!(
            r.header("npm-otp"),
            None,
            "an unattended client has no OTP to send"
        );
        assert!(
            r.header("user-agent")
                .unwrap_or("")
                .starts_with("npm-watchdog/"),
            "{r:?}"
        );
    }
    assert_eq!(metric_line(&metrics, "tokens", "200"), Some(3));
}

#[tokio::test]
async fn three_pages_with_absolute_next() {
    let reg = three_page_registry(NextStyle::Absolute).await;
    let (c, _) = client(&reg.url);
    let list = c.list_tokens(&cred()).await.expect("token list");
    assert_eq!(list.len(), 7);
    assert_eq!(paths(&reg), PAGE_PATHS);
}

#[tokio::test]
async fn next_null_empty_or_absent_ends_the_list() {
    for end in [NextStyle::Null, NextStyle::Empty, NextStyle::NoNextKey] {
        let reg = three_page_registry(NextStyle::Relative).await;
        reg.set_end_style(end);
        let (c, _) = client(&reg.url);
        let list = c
            .list_tokens(&cred())
            .await
            .unwrap_or_else(|e| panic!("{end:?}: {e}"));
        assert_eq!(list.len(), 7, "{end:?}");
        assert_eq!(paths(&reg), PAGE_PATHS, "{end:?}");
    }
    // A single page that ends at once.
    let reg = FakeRegistry::start().await;
    reg.set_tokens(tokens(2));
    reg.set_end_style(NextStyle::Empty);
    let (c, _) = client(&reg.url);
    assert_eq!(c.list_tokens(&cred()).await.expect("one page").len(), 2);
    assert_eq!(paths(&reg), ["/-/npm/v1/tokens"]);
}

#[tokio::test]
async fn empty_account_is_an_empty_list_not_an_error() {
    let reg = FakeRegistry::start().await;
    let (c, _) = client(&reg.url);
    assert!(c.list_tokens(&cred()).await.expect("empty list").is_empty());
}

#[tokio::test]
async fn missing_urls_is_malformed() {
    // On the last page, after two good ones.
    let reg = three_page_registry(NextStyle::Relative).await;
    reg.set_end_style(NextStyle::Missing);
    let (c, _) = client(&reg.url);
    let err = c.list_tokens(&cred()).await.expect_err("no urls");
    assert_eq!(err.label(), "malformed");
    assert_eq!(
        text(&err),
        "tokens: malformed response: page 3: `urls` is missing"
    );
    // On the first page.
    let reg = three_page_registry(NextStyle::Missing).await;
    let (c, _) = client(&reg.url);
    let err = c.list_tokens(&cred()).await.expect_err("no urls");
    assert_eq!(
        text(&err),
        "tokens: malformed response: page 1: `urls` is missing"
    );
    assert_eq!(reg.requests().len(), 1);
}

#[tokio::test]
async fn next_that_loops_back_is_an_error() {
    // Page 1 links to itself.
    let reg = FakeRegistry::start().await;
    reg.set_tokens(tokens(2));
    reg.set_next_override(Some(TOKENS_PATH.to_string()));
    let (c, _) = client(&reg.url);
    let err = c.list_tokens(&cred()).await.expect_err("loop");
    assert_eq!(err.label(), "malformed");
    assert!(
        text(&err).contains("page 1 links back to a page already read"),
        "{err}"
    );
    assert_eq!(reg.requests().len(), 1);

    // Page 2 links to itself, written as an absolute URL this time.
    let reg = FakeRegistry::start().await;
    reg.set_tokens(tokens(2));
    reg.set_next_override(Some(reg.url_for("/-/npm/v1/tokens?page=2")));
    let (c, _) = client(&reg.url);
    let err = c.list_tokens(&cred()).await.expect_err("loop");
    assert!(text(&err).contains("page 2 links back"), "{err}");
    assert_eq!(paths(&reg), ["/-/npm/v1/tokens", "/-/npm/v1/tokens?page=2"]);
}

#[tokio::test]
async fn endless_distinct_pages_stop_at_the_page_cap() {
    let reg = FakeRegistry::start().await;
    reg.set_min_pages(usize::MAX);
    let (c, _) = client(&reg.url);
    let err = c.list_tokens(&cred()).await.expect_err("endless");
    assert_eq!(err.label(), "malformed");
    assert!(text(&err).contains("more than 1000 pages"), "{err}");
    assert_eq!(
        reg.requests().len(),
        npm_watchdog::registry::MAX_TOKEN_PAGES
    );
}

#[tokio::test]
async fn next_to_another_origin_is_refused_and_gets_no_credential() {
    let other = FakeRegistry::start().await;
    let reg = FakeRegistry::start().await;
    reg.set_tokens(tokens(2));
    let (c, _) = client(&reg.url);
    let cases = [
        // Another port on the same host.
        other.url_for("/-/npm/v1/tokens?page=2"),
        // Same port, other host name (origin differs: localhost is not 127.0.0.1).
        format!("http://localhost:{}/-/npm/v1/tokens?page=2", reg.port()),
        // Same host and port, other scheme.
        format!("https://127.0.0.1:{}/-/npm/v1/tokens?page=2", reg.port()),
    ];
    for next in cases {
        reg.clear_requests();
        reg.set_next_override(Some(next.clone()));
        let err = c.list_tokens(&cred()).await.expect_err("off-origin next");
        assert_eq!(err.label(), "malformed", "{next}");
        let msg = text(&err);
        assert!(
            msg.contains("page 1: `urls.next` points away from the registry"),
            "{msg}"
        );
        // Only the origin is named, never the path and query of the link.
        assert!(!msg.contains("page=2"), "{msg}");
        assert_eq!(reg.requests().len(), 1, "{next}");
    }
    let err = {
        reg.set_next_override(Some(other.url_for("/-/npm/v1/tokens?page=2")));
        c.list_tokens(&cred()).await.expect_err("off-origin")
    };
    assert!(
        text(&err).contains(&format!("(http://127.0.0.1:{}/<redacted>)", other.port())),
        "{err}"
    );
    assert!(
        other.requests().is_empty(),
        "the other origin was contacted: {:?}",
        other.requests()
    );
}

/// npm-registry-fetch treats a `next` as absolute only when it parses as a URL on its own
/// (`urlIsValid(uri)`, `new URL(uri)`), and otherwise appends it to the registry URL. A relative link
/// whose query holds a URL (unencoded `://` is legal in a query) is therefore relative.
#[tokio::test]
async fn relative_next_with_a_url_in_its_query_is_followed() {
    let reg = three_page_registry(NextStyle::Relative).await;
    reg.set_next_override(Some(
        "/-/npm/v1/tokens?page={next}&from=https://registry.example/".to_string(),
    ));
    let (c, _) = client(&reg.url);
    let list = c.list_tokens(&cred()).await.expect("token list");
    assert_eq!(list.len(), 7);
    assert_eq!(
        paths(&reg),
        [
            "/-/npm/v1/tokens",
            "/-/npm/v1/tokens?page=2&from=https://registry.example/",
            "/-/npm/v1/tokens?page=3&from=https://registry.example/"
        ]
    );
}

#[tokio::test]
async fn redirect_is_not_followed_and_gets_no_credential() {
    let other = FakeRegistry::start().await;
    let reg = FakeRegistry::start().await;
    reg.push_fault(TOKENS_PATH, Fault::Redirect(other.url_for(TOKENS_PATH)));
    let (c, _) = client(&reg.url);
    let err = c.list_tokens(&cred()).await.expect_err("redirect");
    assert_eq!(err.label(), "unexpected_status");
    assert!(text(&err).contains("unexpected status 302"), "{err}");
    assert!(other.requests().is_empty());
    assert_eq!(reg.requests().len(), 1);
}

#[tokio::test]
async fn registry_under_a_path_prefix() {
    for style in [NextStyle::Relative, NextStyle::Absolute] {
        let reg = FakeRegistry::start_at("/npm/").await;
        assert!(reg.url.ends_with("/npm/"), "{}", reg.url);
        reg.set_tokens(tokens(7));
        reg.set_page_size(3);
        reg.set_next_style(style);
        // The configured URL with and without its trailing slash.
        for url in [reg.url.clone(), reg.url.trim_end_matches('/').to_string()] {
            reg.clear_requests();
            let (c, _) = client(&url);
            let list = c
                .list_tokens(&cred())
                .await
                .unwrap_or_else(|e| panic!("{style:?} {url}: {e}"));
            assert_eq!(list.len(), 7);
            assert_eq!(
                paths(&reg),
                [
                    "/npm/-/npm/v1/tokens",
                    "/npm/-/npm/v1/tokens?page=2",
                    "/npm/-/npm/v1/tokens?page=3"
                ],
                "{style:?} {url}"
            );
            assert_eq!(c.whoami(&cred()).await.expect("whoami"), "alice");
            assert_eq!(
                reg.requests()
                    .last()
                    .map(|r| r.path_and_query.clone())
                    .as_deref(),
                Some("/npm/-/whoami")
            );
        }
    }
}

#[tokio::test]
async fn a_token_without_key_on_page_two_names_its_global_index() {
    let reg = FakeRegistry::start().await;
    let mut list = tokens(7);
    list[4].as_object_mut().expect("object").remove("key");
    reg.set_tokens(list);
    reg.set_page_size(3);
    let (c, _) = client(&reg.url);
    let err = c.list_tokens(&cred()).await.expect_err("no key");
    assert_eq!(err.label(), "malformed");
    assert_eq!(
        text(&err),
        "tokens: malformed response: page 2: objects[4].key: missing: every token needs its key"
    );
}

#[tokio::test]
async fn malformed_bodies_name_the_problem() {
    let cases = [
        ("{not json", "body is not JSON"),
        (
            r#"{"urls":{}}"#,
            "page 1: `objects` is missing or not an array",
        ),
        (
            r#"{"objects":{},"urls":{}}"#,
            "page 1: `objects` is missing or not an array",
        ),
        (
            r#"{"objects":[],"urls":{"next":7}}"#,
            "page 1: `urls.next` should be a string, found 7",
        ),
        (
            r#"{"objects":[{"key":"abcdef1","created":"yesterday"}],"urls":{}}"#,
            "objects[0].created: `yesterday` is not",
        ),
    ];
    for (body, expected) in cases {
        let reg = FakeRegistry::start().await;
        reg.push_fault(TOKENS_PATH, Fault::Malformed(body.to_string()));
        let (c, _) = client(&reg.url);
        let err = c.list_tokens(&cred()).await.expect_err(body);
        assert_eq!(err.label(), "malformed", "{body}");
        assert!(text(&err).contains(expected), "{body}: {err}");
        assert_eq!(reg.requests().len(), 1, "a malformed answer is not retried");
    }
    // whoami and profile.
    let reg = FakeRegistry::start().await;
    let (c, _) = client(&reg.url);
    reg.push_fault("/-/whoami", Fault::Malformed("{}".into()));
    let err = c.whoami(&cred()).await.expect_err("no username");
    assert_eq!(
        text(&err),
        "whoami: malformed response: `username` is missing: the credential is not recognised"
    );
    reg.set_profile(json!({"name": "alice", "tfa": "on"}));
    let err = c.profile(&cred()).await.expect_err("bad tfa");
    assert_eq!(err.label(), "malformed");
    assert!(
        text(&err)
            .starts_with("profile: malformed response: tfa: expected null, false or an object"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------------
// Retries

#[tokio::test]
async fn rate_limit_with_retry_after_seconds_is_honoured() {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(tokens(1));
    reg.push_fault(
        TOKENS_PATH,
        Fault::RateLimited {
            retry_after: Some("1".into()),
        },
    );
    let (c, metrics) = client(&reg.url);
    let list = c.list_tokens(&cred()).await.expect("after the retry");
    assert_eq!(list.len(), 1);
    let reqs = reg.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_millis(900),
        "retried after {gap:?}, before the 1 s Retry-After"
    );
    assert_eq!(metric_line(&metrics, "tokens", "429"), Some(1));
    assert_eq!(metric_line(&metrics, "tokens", "200"), Some(1));
}

#[tokio::test]
async fn rate_limit_with_retry_after_date_is_honoured() {
    let reg = FakeRegistry::start().await;
    let when = std::time::SystemTime::now() + Duration::from_secs(2);
    reg.push_fault(
        TOKENS_PATH,
        Fault::RateLimited {
            retry_after: Some(httpdate::fmt_http_date(when)),
        },
    );
    let (c, _) = client(&reg.url);
    c.list_tokens(&cred()).await.expect("after the retry");
    let reqs = reg.requests();
    assert_eq!(reqs.len(), 2);
    // The date has one-second resolution, so the wait is between 1 and 2 s.
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");
}

#[tokio::test]
async fn retry_after_beyond_the_cap_is_cut_to_the_cap() {
    let reg = FakeRegistry::start().await;
    reg.push_fault(
        TOKENS_PATH,
        Fault::RateLimited {
            retry_after: Some("3600".into()),
        },
    );
    let retry = RetryPolicy {
        retry_after_cap: Duration::from_millis(300),
        ..fast_retry()
    };
    let (c, _) = client_with(&reg.url, retry, Duration::from_secs(5));
    let started = Instant::now();
    c.list_tokens(&cred()).await.expect("after the retry");
    let reqs = reg.requests();
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_millis(250),
        "retried after {gap:?}, before the cap"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited the full hour?"
    );
}

#[tokio::test]
async fn persistent_rate_limit_is_rate_limited_after_all_attempts() {
    let reg = FakeRegistry::start().await;
    reg.push_faults("/-/whoami", Fault::RateLimited { retry_after: None }, 10);
    let (c, metrics) = client(&reg.url);
    let err = c.whoami(&cred()).await.expect_err("rate limited");
    assert_eq!(err.label(), "rate_limited");
    assert_eq!(text(&err), "whoami: rate limited (429) after 4 attempts");
    assert_eq!(reg.requests().len(), 4);
    assert_eq!(metric_line(&metrics, "whoami", "429"), Some(4));
}

#[tokio::test]
async fn server_error_then_success() {
    let reg = three_page_registry(NextStyle::Relative).await;
    // The 500 hits page 2, and the retry asks for page 2 again, not page 1.
    reg.push_fault("/-/npm/v1/tokens?page=2", Fault::Status(500));
    let (c, metrics) = client(&reg.url);
    let list = c.list_tokens(&cred()).await.expect("after the retry");
    assert_eq!(list.len(), 7);
    assert_eq!(
        paths(&reg),
        [
            "/-/npm/v1/tokens",
            "/-/npm/v1/tokens?page=2",
            "/-/npm/v1/tokens?page=2",
            "/-/npm/v1/tokens?page=3"
        ]
    );
    assert_eq!(metric_line(&metrics, "tokens", "500"), Some(1));
    assert_eq!(metric_line(&metrics, "tokens", "200"), Some(3));
}

#[tokio::test]
async fn persistent_503_is_a_server_error_after_retries_plus_one_attempts() {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(tokens(1));
    reg.push_faults(TOKENS_PATH, Fault::Status(503), 10);
    let (c, metrics) = client(&reg.url);
    let err = c.list_tokens(&cred()).await.expect_err("503");
    assert_eq!(err.label(), "server_error");
    assert!(
        matches!(
            err,
            RegistryError::Server {
                status: 503,
                attempts: 4,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        text(&err),
        "tokens: server error (503) after 4 attempts: Service Unavailable"
    );
    assert_eq!(reg.requests().len(), 4);
    assert_eq!(reg.pending_faults(), 6);
    assert_eq!(metric_line(&metrics, "tokens", "503"), Some(4));
}

#[tokio::test]
async fn npm_retryable_statuses_are_retried_and_others_are_not() {
    let reg = FakeRegistry::start().await;
    for code in [408, 420, 502, 504] {
        reg.push_fault("/-/whoami", Fault::Status(code));
    }
    let (c, metrics) = client_with(
        &reg.url,
        RetryPolicy {
            retries: 4,
            ..fast_retry()
        },
        Duration::from_secs(5),
    );
    assert_eq!(
        c.whoami(&cred()).await.expect("after four retries"),
        "alice"
    );
    assert_eq!(reg.requests().len(), 5);
    for code in ["408", "420", "502", "504", "200"] {
        assert_eq!(metric_line(&metrics, "whoami", code), Some(1), "{code}");
    }
    reg.clear_requests();
    reg.push_fault("/-/whoami", Fault::Status(418));
    let err = c.whoami(&cred()).await.expect_err("418");
    assert_eq!(err.label(), "unexpected_status");
    assert_eq!(text(&err), "whoami: unexpected status 418: I'm a teapot");
    assert_eq!(reg.requests().len(), 1);
}

#[tokio::test]
async fn slow_answer_times_out_and_is_retried() {
    let reg = FakeRegistry::start().await;
    reg.push_fault("/-/whoami", Fault::Delay(Duration::from_secs(3)));
    let (c, metrics) = client_with(&reg.url, fast_retry(), Duration::from_millis(300));
    assert_eq!(c.whoami(&cred()).await.expect("after the retry"), "alice");
    assert_eq!(reg.requests().len(), 2);
    assert_eq!(metric_line(&metrics, "whoami", "timeout"), Some(1));
    assert_eq!(metric_line(&metrics, "whoami", "200"), Some(1));
}

#[tokio::test]
async fn dropped_connection_is_retried() {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(tokens(1));
    reg.push_fault(TOKENS_PATH, Fault::Drop);
    let (c, metrics) = client(&reg.url);
    assert_eq!(
        c.list_tokens(&cred()).await.expect("after the retry").len(),
        1
    );
    assert_eq!(reg.requests().len(), 2);
    assert_eq!(metric_line(&metrics, "tokens", "error"), Some(1));
    assert_eq!(metric_line(&metrics, "tokens", "200"), Some(1));
}

#[tokio::test]
async fn persistently_dropped_connection_is_unreachable() {
    let reg = FakeRegistry::start().await;
    reg.push_faults(TOKENS_PATH, Fault::Drop, 10);
    let (c, _) = client(&reg.url);
    let err = c.list_tokens(&cred()).await.expect_err("dropped");
    assert_eq!(err.label(), "unreachable");
    assert!(
        text(&err).starts_with("tokens: cannot reach the registry after 4 attempts: "),
        "{err}"
    );
    assert_eq!(reg.requests().len(), 4);
}

/// The module documentation promises retries on connection errors; a 200 whose body breaks off is one.
#[tokio::test]
async fn truncated_body_is_retried() {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(tokens(1));
    reg.push_fault(TOKENS_PATH, Fault::TruncatedBody);
    let (c, _) = client(&reg.url);
    let list = c.list_tokens(&cred()).await.expect("after the retry");
    assert_eq!(list.len(), 1);
    assert_eq!(reg.requests().len(), 2);
}

#[tokio::test]
async fn truncated_body_is_an_error_not_an_empty_list() {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(tokens(1));
    reg.push_faults(TOKENS_PATH, Fault::TruncatedBody, 10);
    let (c, _) = client(&reg.url);
    let err = c.list_tokens(&cred()).await.expect_err("truncated");
    assert_eq!(err.label(), "unreachable", "{err:?}");
    assert!(text(&err).contains("reading the response failed"), "{err}");
}

#[tokio::test]
async fn stopped_registry_is_unreachable_and_recovers_after_restart() {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(tokens(2));
    let (c, metrics) = client(&reg.url);
    // A pooled keep-alive connection exists before the outage.
    assert_eq!(c.list_tokens(&cred()).await.expect("before").len(), 2);
    reg.stop().await;
    reg.clear_requests();
    let err = c.list_tokens(&cred()).await.expect_err("outage");
    assert_eq!(err.label(), "unreachable");
    assert!(
        matches!(err, RegistryError::Network { attempts: 4, .. }),
        "{err:?}"
    );
    let msg = text(&err);
    assert!(
        msg.starts_with("tokens: cannot reach the registry after 4 attempts: connection failed"),
        "{msg}"
    );
    assert!(reg.requests().is_empty());
    assert_eq!(metric_line(&metrics, "tokens", "error"), Some(4));
    reg.restart().await;
    assert_eq!(
        c.list_tokens(&cred()).await.expect("after restart").len(),
        2
    );
}

// ---------------------------------------------------------------------------------------------------
// Authentication failures: classified like npm-registry-fetch, never retried

#[tokio::test]
async fn otp_in_www_authenticate_is_otp_required_and_not_retried() {
    let reg = FakeRegistry::start().await;
    reg.push_faults(TOKENS_PATH, Fault::Otp, 5);
    let (c, metrics) = client(&reg.url);
    let err = c.list_tokens(&cred()).await.expect_err("otp");
    assert_eq!(err.label(), "otp_required");
    assert!(text(&err).contains("EOTP"), "{err}");
    assert_eq!(reg.requests().len(), 1);
    assert_eq!(reg.requests()[0].header("npm-otp"), None);
    assert_eq!(metric_line(&metrics, "tokens", "401"), Some(1));
}

#[tokio::test]
async fn otp_in_the_body_is_otp_required_and_not_retried() {
    let reg = FakeRegistry::start().await;
    reg.push_faults("/-/npm/v1/user", Fault::OtpBody, 5);
    let (c, _) = client(&reg.url);
    let err = c.profile(&cred()).await.expect_err("otp");
    assert_eq!(err.label(), "otp_required");
    assert_eq!(reg.requests().len(), 1);
}

#[tokio::test]
async fn ip_block_is_ip_blocked() {
    let reg = FakeRegistry::start().await;
    reg.push_faults(TOKENS_PATH, Fault::IpBlocked, 5);
    let (c, _) = client(&reg.url);
    let err = c.list_tokens(&cred()).await.expect_err("ip");
    assert_eq!(err.label(), "ip_blocked");
    assert!(text(&err).contains("EAUTHIP"), "{err}");
    assert_eq!(reg.requests().len(), 1);
}

#[tokio::test]
async fn bad_token_is_unauthorized_with_the_registry_words() {
    let reg = FakeRegistry::start().await;
    let wrong = "npm_WrongTokenValue9876543210zyxwvu";
    let (c, _) = client(&reg.url);
    let err = c
        .list_tokens(&cred_with(wrong))
        .await
        .expect_err("bad token");
    assert_eq!(err.label(), "unauthorized");
    assert_secret_absent(&err, wrong);
    assert_eq!(
        err.to_string(),
        "tokens: unauthorized (401): the credential was rejected: bad token"
    );
    assert_eq!(reg.requests().len(), 1);
    assert_eq!(
        reg.requests()[0].header("authorization"),
        Some(format!("Bearer {wrong}").as_str())
    );
    // A rotated credential is accepted once the registry knows it.
    reg.set_valid_tokens(vec![wrong.to_string()]);
    c.list_tokens(&cred_with(wrong)).await.expect("now valid");
}

#[tokio::test]
async fn forbidden_and_not_found_are_not_retried() {
    let reg = FakeRegistry::start().await;
    reg.push_fault("/-/whoami", Fault::Status(403));
    reg.push_fault("/-/npm/v1/user", Fault::Status(404));
    let (c, _) = client(&reg.url);
    let err = c.whoami(&cred()).await.expect_err("403");
    assert_eq!(err.label(), "forbidden");
    assert_eq!(text(&err), "whoami: forbidden (403): Forbidden");
    let err = c.profile(&cred()).await.expect_err("404");
    assert_eq!(err.label(), "not_found");
    assert_eq!(reg.requests().len(), 2);
}

// ---------------------------------------------------------------------------------------------------
// Profile, whoami, metrics, credential hygiene

#[tokio::test]
async fn profile_and_whoami_parse() {
    let reg = FakeRegistry::start().await;
    reg.set_username("bob");
    let (c, _) = client(&reg.url);
    assert_eq!(c.whoami(&cred()).await.expect("whoami"), "bob");
    let p = c.profile(&cred()).await.expect("profile");
    assert_eq!(p.name.as_deref(), Some("alice"));
    assert_eq!(p.tfa, TfaMode::AuthAndWrites);
    reg.set_profile(json!({"name": "bob", "tfa": {"mode": "auth-only", "pending": true}, "cidr_whitelist": null}));
    assert_eq!(
        c.profile(&cred()).await.expect("profile").tfa,
        TfaMode::Pending
    );
    reg.set_profile(json!({"name": "bob", "tfa": false}));
    assert_eq!(
        c.profile(&cred()).await.expect("profile").tfa,
        TfaMode::Disabled
    );
    assert_eq!(
        paths(&reg),
        [
            "/-/whoami",
            "/-/npm/v1/user",
            "/-/npm/v1/user",
            "/-/npm/v1/user"
        ]
    );
    for r in reg.requests() {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
}

#[tokio::test]
async fn metrics_count_requests_per_endpoint_and_code() {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(tokens(1));
    reg.push_fault(
        TOKENS_PATH,
        Fault::RateLimited {
            retry_after: Some("0".into()),
        },
    );
    reg.push_fault("/-/npm/v1/user", Fault::Status(502));
    reg.push_fault("/-/whoami", Fault::Otp);
    let (c, metrics) = client(&reg.url);
    c.list_tokens(&cred()).await.expect("tokens");
    c.profile(&cred()).await.expect("profile");
    c.whoami(&cred()).await.expect_err("otp");
    let text = metrics.render();
    for line in [
        r#"npm_watchdog_registry_requests_total{code="429",endpoint="tokens"} 1"#,
        r#"npm_watchdog_registry_requests_total{code="200",endpoint="tokens"} 1"#,
        r#"npm_watchdog_registry_requests_total{code="502",endpoint="profile"} 1"#,
        r#"npm_watchdog_registry_requests_total{code="200",endpoint="profile"} 1"#,
        r#"npm_watchdog_registry_requests_total{code="401",endpoint="whoami"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    testkit::secrets::assert_absent(&[TOKEN], [("/metrics", &text)]);
}

#[tokio::test]
async fn the_credential_never_appears_in_errors() {
    let other = FakeRegistry::start().await;
    let reg = FakeRegistry::start().await;
    reg.set_tokens(tokens(4));
    reg.set_page_size(2);
    let (c, _) = client(&reg.url);
    let mut errors = Vec::new();
    for fault in [
        Fault::Otp,
        Fault::OtpBody,
        Fault::IpBlocked,
        Fault::Status(403),
        Fault::Status(404),
        Fault::Status(418),
        Fault::Malformed("{oops".into()),
        Fault::Redirect(other.url_for(TOKENS_PATH)),
    ] {
        reg.push_fault(TOKENS_PATH, fault);
        errors.push(c.list_tokens(&cred()).await.expect_err("fault"));
    }
    reg.push_faults(TOKENS_PATH, Fault::Status(500), 4);
    errors.push(c.list_tokens(&cred()).await.expect_err("500"));
    reg.push_faults(TOKENS_PATH, Fault::Drop, 4);
    errors.push(c.list_tokens(&cred()).await.expect_err("drop"));
    // A next link that carries the credential in its query must not echo it either.
    reg.set_next_override(Some(format!("{}-/npm/v1/tokens?token={TOKEN}", other.url)));
    errors.push(c.list_tokens(&cred()).await.expect_err("off-origin"));
    reg.set_next_override(None);
    reg.stop().await;
    errors.push(c.list_tokens(&cred()).await.expect_err("stopped"));
    assert_eq!(errors.len(), 12);
    for err in &errors {
        assert_secret_absent(err, TOKEN);
    }
    // But it was sent where it belongs.
    assert!(reg
        .requests()
        .iter()
        .all(|r| r.header("authorization") == Some(&format!("Bearer {TOKEN}"))));
    assert!(other.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------------
// The fake itself

#[tokio::test]
async fn fake_registry_answers_like_verdaccio_without_credentials() {
    let reg = FakeRegistry::start().await;
    let http = reqwest::Client::new();
    let resp = http
        .get(reg.url_for(TOKENS_PATH))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"error": "no credentials provided"})
    );
    let resp = http
        .get(reg.url_for("/-/nope"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(escaped_name("@a/b"), "@a%2fb");
    assert_eq!(escaped_name("@a/b/c"), "@a%2fb/c");
    assert_eq!(escaped_name("lodash"), "lodash");
    assert_eq!(escaped_entity("@myorg"), "myorg");
    assert_eq!(escaped_entity("my org:x"), "my%20org%3Ax");
}

// ------------------------------------------------------------------------------------------------
// Body caps: registry.max_body for API answers, registry.max_packument for packuments

/// The issue's answer: a 50 MB token list.
const HUGE: usize = 50_000_000;

/// How an undeclared answer past the default `registry.max_body` is reported.
const CUT_AT_THE_CAP: &str =
    "tokens: the answer is larger than registry.max_body (4 MiB) and was not read \
     past it; raise registry.max_body if the registry's answers are really this large";

/// A client with the given caps (the fake's fast retries otherwise).
fn capped_client(url: &str, api: u64, packument: u64) -> RegistryClient {
    client(url)
        .0
        .with_body_limits(BodyLimits { api, packument })
}

/// Less than `body` reached the sockets. A client that reads a body whole makes the server write
/// all of it; one that stops and closes the connection leaves the rest unwritten. What was written
/// is what the client read plus what the socket buffers took meanwhile (on loopback up to tens of
/// MiB, as the receive buffer grows while the client reads fast), so `body` must be larger than
/// that for the test to tell the two apart.
fn assert_not_read_whole(reg: &FakeRegistry, body: usize) -> u64 {
    let wire = reg.wire_bytes();
    assert!(
        wire < body as u64,
        "{wire} bytes written of a {body}-byte body: the client read it whole"
    );
    wire
}

#[tokio::test]
async fn a_declared_answer_over_max_body_fails_before_it_is_read() {
    let reg = FakeRegistry::start().await;
    reg.push_fault(
        TOKENS_PATH,
        Fault::Oversized {
            bytes: HUGE,
            declared: true,
        },
    );
    // The default caps, as a client built without a configuration has them.
    let (c, metrics) = client(&reg.url);
    let err = c.list_tokens(&cred()).await.expect_err("too large");
    assert_eq!(err.label(), "too_large");
    assert!(
        matches!(
            err,
            RegistryError::TooLarge {
                endpoint: "tokens",
                key: "registry.max_body",
                limit: 4194304,
                declared: Some(50_000_000),
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        text(&err),
        "tokens: the answer is larger than registry.max_body (4 MiB; the registry declared 47.7 MiB) \
         and was not read; raise registry.max_body if the registry's answers are really this large"
    );
    // Not retried: the same answer would come again.
    assert_eq!(reg.requests().len(), 1);
    assert_eq!(metric_line(&metrics, "tokens", "200"), Some(1));
    assert_not_read_whole(&reg, HUGE);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).expect("compress");
    enc.finish().expect("compress")
}

/// The client asks for gzip (a packument is several times smaller compressed) and reads it.
#[tokio::test]
async fn a_gzipped_answer_is_read() {
    let reg = FakeRegistry::start().await;
    let page = json!({
        "objects": [{"key": "abcdef0123456789", "token": "npm_ab...yz", "name": "laptop"}],
        "urls": {"next": null}
    });
    reg.push_fault(
        TOKENS_PATH,
        Fault::Gzipped(gzip(page.to_string().as_bytes())),
    );
    let (c, _) = client(&reg.url);
    let tokens = c.list_tokens(&cred()).await.expect("read");
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].name.as_deref(), Some("laptop"));
    let asked = reg.requests()[0]
        .headers
        .get("accept-encoding")
        .cloned()
        .unwrap_or_default();
    assert!(asked.contains("gzip"), "accept-encoding: {asked:?}");
}

/// A small compressed answer that inflates past the cap (a "zip bomb") is cut at the cap of what it
/// inflates to, not of what came over the wire.
#[tokio::test]
async fn a_gzipped_answer_is_capped_by_what_it_inflates_to() {
    let reg = FakeRegistry::start().await;
    let bomb = gzip(&fake_registry::oversized_body(10_000_000));
    assert!(bomb.len() < 1_000_000, "{} compressed bytes", bomb.len());
    reg.push_fault(TOKENS_PATH, Fault::Gzipped(bomb));
    let (c, _) = client(&reg.url);
    let err = c.list_tokens(&cred()).await.expect_err("too large");
    assert_eq!(err.label(), "too_large");
    assert_eq!(text(&err), CUT_AT_THE_CAP);
}

#[tokio::test]
async fn an_undeclared_answer_over_max_body_is_read_only_to_the_cap() {
    let reg = FakeRegistry::start().await;
    reg.push_fault(
        TOKENS_PATH,
        Fault::Oversized {
            bytes: HUGE,
            declared: false,
        },
    );
    let (c, _) = client(&reg.url);
    let err = c.list_tokens(&cred()).await.expect_err("too large");
    assert_eq!(err.label(), "too_large");
    assert_eq!(text(&err), CUT_AT_THE_CAP);
    assert_eq!(reg.requests().len(), 1);
    assert_not_read_whole(&reg, HUGE);
}

/// With a small cap the client stops near it: the socket buffers had little time to grow.
#[tokio::test]
async fn reading_stops_near_the_cap() {
    let reg = FakeRegistry::start().await;
    reg.push_fault(
        TOKENS_PATH,
        Fault::Oversized {
            bytes: HUGE,
            declared: false,
        },
    );
    let c = capped_client(&reg.url, 64 << 10, 1 << 20);
    let err = c.list_tokens(&cred()).await.expect_err("too large");
    assert_eq!(err.label(), "too_large");
    let wire = assert_not_read_whole(&reg, HUGE);
    assert!(wire < 16 << 20, "{wire} bytes written for a 64 KiB cap");
}

/// An oversized later page fails the whole list: the tokens of the pages before it are not
/// returned as if they were all.
#[tokio::test]
async fn an_oversized_later_page_fails_the_list_not_truncates_it() {
    let reg = three_page_registry(NextStyle::Relative).await;
    reg.push_fault(
        "/-/npm/v1/tokens?page=2",
        Fault::Oversized {
            bytes: 300 << 10,
            declared: false,
        },
    );
    let c = capped_client(&reg.url, 256 << 10, 1 << 20);
    let err = c.list_tokens(&cred()).await.expect_err("page 2 too large");
    assert!(
        matches!(
            err,
            RegistryError::TooLarge {
                key: "registry.max_body",
                limit: 262144,
                declared: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(paths(&reg), ["/-/npm/v1/tokens", "/-/npm/v1/tokens?page=2"]);
    // Just under the cap is read and parsed as usual (the padding is an unknown field).
    let reg = FakeRegistry::start().await;
    reg.push_fault(
        TOKENS_PATH,
        Fault::Oversized {
            bytes: 256 << 10,
            declared: false,
        },
    );
    let c = capped_client(&reg.url, 256 << 10, 1 << 20);
    assert!(c.list_tokens(&cred()).await.expect("at the cap").is_empty());
}

#[tokio::test]
async fn every_api_answer_is_capped() {
    let reg = FakeRegistry::start().await;
    reg.set_user_packages("alice", [("a", "write")]);
    let c = capped_client(&reg.url, 64 << 10, 1 << 20);
    let oversized = Fault::Oversized {
        bytes: 1 << 20,
        declared: false,
    };
    reg.push_fault("/-/whoami", oversized.clone());
    reg.push_fault("/-/npm/v1/user", oversized.clone());
    reg.push_fault("/-/user/alice/package", oversized.clone());
    let errors = [
        c.whoami(&cred()).await.map(|_| ()),
        c.profile(&cred()).await.map(|_| ()),
        c.user_packages("alice", &cred()).await.map(|_| ()),
    ];
    for (err, endpoint) in errors
        .into_iter()
        .zip(["whoami", "profile", "user_packages"])
    {
        let err = err.expect_err(endpoint);
        assert_eq!(err.label(), "too_large", "{endpoint}");
        assert!(
            text(&err).starts_with(&format!(
                "{endpoint}: the answer is larger than registry.max_body (64 KiB)"
            )),
            "{err}"
        );
    }
}

/// Packuments have their own, larger cap: a document over registry.max_body is read, one over
/// registry.max_packument is not.
#[tokio::test]
async fn packuments_are_capped_by_max_packument() {
    let reg = FakeRegistry::start().await;
    let doc = packument_doc_padded(
        "big",
        &[("1.0.0", "2026-02-01T00:00:00.000Z", None, "alice")],
        &["alice"],
        600 << 10,
    );
    reg.add_packument("big", doc);
    let c = capped_client(&reg.url, 64 << 10, 1 << 20);
    match c
        .packument("big", None, None)
        .await
        .expect("under max_packument")
    {
        Fetched::Fresh {
            packument, bytes, ..
        } => {
            assert_eq!(packument.versions.len(), 1);
            assert!(bytes > 600 << 10, "{bytes}");
        }
        other => panic!("expected a fresh packument, got {other:?}"),
    }
    let c = capped_client(&reg.url, 64 << 10, 512 << 10);
    let err = c.packument("big", None, None).await.expect_err("over");
    assert_eq!(err.label(), "too_large");
    assert!(
        text(&err).starts_with(
            "packument: the answer is larger than registry.max_packument (512 KiB; the registry declared"
        ),
        "{err}"
    );
}

/// An error answer is read only as far as its message: a huge one still gives its status.
#[tokio::test]
async fn a_huge_error_answer_is_classified_from_its_start() {
    let reg = FakeRegistry::start().await;
    let body = format!(
        "{{\"error\":\"forbidden here\",\"pad\":\"{}\"}}",
        "x".repeat(HUGE)
    );
    reg.push_fault(
        TOKENS_PATH,
        Fault::Custom {
            status: 403,
            headers: Vec::new(),
            body,
        },
    );
    let (c, _) = client(&reg.url);
    let err = c.list_tokens(&cred()).await.expect_err("forbidden");
    assert_eq!(err.label(), "forbidden");
    assert_not_read_whole(&reg, HUGE);
}

/// The client's timeouts for the slow-answer tests: one second to connect, one second of silence,
/// one second beyond what the answer's size needs at 64 KiB/s.
fn one_second_timeouts() -> npm_watchdog::registry::Timeouts {
    npm_watchdog::registry::Timeouts {
        connect: Duration::from_secs(1),
        idle: Duration::from_secs(1),
        answer: Duration::from_secs(1),
        min_throughput: 64 << 10,
    }
}

/// An answer that keeps coming, slowly, is read whole even when it takes longer than
/// `registry.timeout`: the overall cap grows with what the answer may weigh.
#[tokio::test]
async fn a_slow_answer_that_keeps_coming_is_read() {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(tokens(12));
    reg.set_page_size(100);
    reg.push_fault(
        TOKENS_PATH,
        Fault::Slow {
            bytes_per_sec: 2_000,
        },
    );
    let (c, metrics) = client(&reg.url);
    let c = c.with_timeouts(one_second_timeouts()).expect("client");
    let started = Instant::now();
    let list = c
        .list_tokens(&cred())
        .await
        .expect("a slow page is still a page");
    let took = started.elapsed();
    assert_eq!(list.len(), 12);
    assert!(
        took > Duration::from_secs(1),
        "premise: the answer took longer than registry.timeout ({took:?})"
    );
    assert_eq!(metric_line(&metrics, "tokens", "200"), Some(1));
    assert_eq!(metric_line(&metrics, "tokens", "timeout"), None);
}

/// Headers, then silence: the connection is dropped after `registry.idle_timeout`, counted as a
/// timeout, and the read fails (never an empty list).
#[tokio::test]
async fn an_answer_that_stalls_is_dropped_after_the_idle_timeout() {
    let reg = FakeRegistry::start().await;
    reg.set_tokens(tokens(3));
    reg.push_faults(TOKENS_PATH, Fault::Stall, 2);
    let retry = RetryPolicy {
        retries: 1,
        ..fast_retry()
    };
    let (c, metrics) = client_with(&reg.url, retry, Duration::from_secs(30));
    let c = c.with_timeouts(one_second_timeouts()).expect("client");
    let err = tokio::time::timeout(Duration::from_secs(60), c.list_tokens(&cred()))
        .await
        .expect("a stalled answer must not hang the read")
        .expect_err("stalled twice");
    assert_eq!(err.label(), "unreachable", "{err}");
    assert!(text(&err).contains("after 2 attempts"), "{err}");
    assert_eq!(metric_line(&metrics, "tokens", "timeout"), Some(2));

    // The next answer is whole again: read.
    assert_eq!(c.list_tokens(&cred()).await.expect("whole").len(), 3);
}
