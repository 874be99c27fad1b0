//! `RegistryClient`'s package, org, team, packument, provenance, trust and access calls against the
//! in-process fake registry: what goes on the wire (escaping, headers, bodies, retries) and what comes
//! back (the slim packument, typed errors, metrics). Parsing details are unit-tested in
//! `registry/package.rs`.

mod client_support;
use testkit::fake_registry;

use std::time::{Duration, Instant};

use client_support::{assert_secret_absent, client, cred, cred_with, metric_line, text};
use fake_registry::{packument_doc, packument_doc_padded, FakeRegistry, Fault, TOKEN};
use npm_watchdog::registry::{Fetched, RegistryError};
use serde_json::{json, Value};

const OTP: &str = "123456";
const SLSA_V1: &str = "https://slsa.dev/provenance/v1";

fn paths(reg: &FakeRegistry) -> Vec<String> {
    reg.requests()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect()
}

/// `@acme/a`: 1.0.0 published by alice with a token, 1.1.0 by GitHub Actions through OIDC.
fn acme_a_doc() -> Value {
    packument_doc(
        "@acme/a",
        &[
            ("1.0.0", "2025-01-01T00:00:00.000Z", None, "alice"),
            (
                "1.1.0",
                "2026-03-01T12:00:00.000Z",
                Some("github"),
                "GitHub Actions",
            ),
        ],
        &["bob", "alice"],
    )
}

fn fresh(f: Fetched) -> (npm_watchdog::registry::Packument, Option<String>, usize) {
    match f {
        Fetched::Fresh {
            packument,
            etag,
            bytes,
        } => (packument, etag, bytes),
        Fetched::NotModified => panic!("expected a fresh packument, got NotModified"),
    }
}

#[tokio::test]
async fn scoped_packument_is_escaped_on_the_wire_and_parsed_slim() {
    let reg = FakeRegistry::start().await;
    reg.add_packument("@acme/a", acme_a_doc());
    let (c, _) = client(&reg.url);

    let (p, etag, bytes) = fresh(
        c.packument("@acme/a", Some(&cred()), None)
            .await
            .expect("packument"),
    );

    let reqs = reg.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].path_and_query, "/@acme%2fa");
    assert_eq!(reqs[0].header("accept"), Some("application/json"));
    assert_eq!(reqs[0].header("if-none-match"), None);

    assert_eq!(etag, reg.packument_etag("@acme/a"));
    assert_eq!(
        bytes,
        serde_json::to_vec(&reg.packument("@acme/a").unwrap())
            .unwrap()
            .len()
    );
    assert_eq!(p.name, "@acme/a");
    assert_eq!(p.maintainer_names(), vec!["alice", "bob"]);
    assert_eq!(
        p.maintainers[0].name, "bob",
        "maintainers keep their order (the address is not kept)"
    );
    assert_eq!(p.latest_tag.as_deref(), Some("1.1.0"));
    assert!(!p.unpublished);

    let versions: Vec<&str> = p.versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(versions, vec!["1.0.0", "1.1.0"], "oldest first");
    let old = &p.versions[0];
    assert_eq!(old.publisher.as_deref(), Some("alice"));
    assert!(old.trusted_publisher.is_none());
    assert!(old.provenance.is_none());
    assert_eq!(
        old.published.map(|t| t.to_rfc3339()),
        Some("2025-01-01T00:00:00+00:00".to_string())
    );

    let latest = p.latest().expect("latest");
    assert_eq!(latest.version, "1.1.0");
    assert_eq!(latest.publisher.as_deref(), Some("GitHub Actions"));
    let tp = latest
        .trusted_publisher
        .as_ref()
        .expect("trusted publisher");
    assert_eq!(tp.id, "github");
    assert_eq!(latest.provenance.as_deref(), Some(SLSA_V1));
    assert!(!latest.deprecated);
}

#[tokio::test]
async fn unscoped_packument_path_is_plain() {
    let reg = FakeRegistry::start().await;
    reg.add_packument(
        "left-pad",
        packument_doc(
            "left-pad",
            &[("1.3.0", "2018-04-09T00:00:00.000Z", None, "stevemao")],
            &["stevemao"],
        ),
    );
    let (c, _) = client(&reg.url);
    let (p, _, _) = fresh(c.packument("left-pad", None, None).await.expect("fetch"));
    assert_eq!(paths(&reg), vec!["/left-pad"]);
    assert_eq!(reg.requests()[0].header("authorization"), None);
    assert_eq!(p.latest().map(|v| v.version.as_str()), Some("1.3.0"));
}

#[tokio::test]
async fn packument_under_a_path_prefix() {
    let reg = FakeRegistry::start_at("/npm/").await;
    reg.add_packument("@acme/a", acme_a_doc());
    let (c, _) = client(&reg.url);
    let (p, _, _) = fresh(c.packument("@acme/a", None, None).await.expect("fetch"));
    assert_eq!(paths(&reg), vec!["/npm/@acme%2fa"]);
    assert_eq!(p.name, "@acme/a");
}

#[tokio::test]
async fn fake_serves_both_escape_cases_and_records_what_was_sent() {
    let reg = FakeRegistry::start().await;
    reg.add_packument("@acme/a", acme_a_doc());
    let http = reqwest::Client::new();
    for path in ["@acme%2fa", "@acme%2Fa"] {
        let r = http.get(reg.url_for(path)).send().await.expect("get");
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers().get("etag").is_some());
    }
    // An unescaped slash is another route: 404.
    let r = http.get(reg.url_for("@acme/a")).send().await.expect("get");
    assert_eq!(r.status(), 404);
    assert_eq!(paths(&reg), vec!["/@acme%2fa", "/@acme%2Fa", "/@acme/a"]);
    let missing = http.get(reg.url_for("nope")).send().await.expect("get");
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.expect("json"),
        json!({"error": "Not found"})
    );
}

#[tokio::test]
async fn etag_round_trip() {
    let reg = FakeRegistry::start().await;
    reg.add_packument("@acme/a", acme_a_doc());
    let (c, metrics) = client(&reg.url);

    let (_, etag, _) = fresh(c.packument("@acme/a", None, None).await.expect("first"));
    let etag = etag.expect("an ETag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "quoted: {etag}"
    );

    let second = c
        .packument("@acme/a", None, Some(&etag))
        .await
        .expect("second");
    assert!(matches!(second, Fetched::NotModified), "{second:?}");
    let reqs = reg.requests();
    assert_eq!(reqs[1].header("if-none-match"), Some(etag.as_str()));
    assert_eq!(metric_line(&metrics, "packument", "304"), Some(1));

    // A new version changes the document and its ETag.
    let mut doc = acme_a_doc();
    doc["dist-tags"]["latest"] = json!("1.2.0");
    doc["versions"]["1.2.0"] = json!({"name": "@acme/a", "version": "1.2.0",
        "_npmUser": {"name": "mallory", "email": "m@example.com"}, "dist": {}});
    doc["time"]["1.2.0"] = json!("2026-04-01T00:00:00.000Z");
    reg.add_packument("@acme/a", doc);

    let (p, new_etag, _) = fresh(
        c.packument("@acme/a", None, Some(&etag))
            .await
            .expect("third"),
    );
    let new_etag = new_etag.expect("an ETag");
    assert_ne!(new_etag, etag);
    assert_eq!(Some(new_etag.clone()), reg.packument_etag("@acme/a"));
    let latest = p.latest().expect("latest");
    assert_eq!(latest.version, "1.2.0");
    assert_eq!(latest.publisher.as_deref(), Some("mallory"));
    assert!(latest.trusted_publisher.is_none());
    assert_eq!(metric_line(&metrics, "packument", "200"), Some(2));

    // And the new one is honoured in turn.
    let fourth = c
        .packument("@acme/a", None, Some(&new_etag))
        .await
        .expect("fourth");
    assert!(matches!(fourth, Fetched::NotModified));
}

#[tokio::test]
async fn private_packument_needs_the_credential() {
    let reg = FakeRegistry::start().await;
    reg.set_packument_private("@acme/secret", true);
    reg.add_packument(
        "@acme/secret",
        packument_doc(
            "@acme/secret",
            &[("0.1.0", "2026-01-01T00:00:00.000Z", None, "alice")],
            &["alice"],
        ),
    );
    let (c, _) = client(&reg.url);

    let err = c
        .packument("@acme/secret", None, None)
        .await
        .expect_err("anonymous");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    assert_eq!(err.label(), "unauthorized");

    let wrong = "npm_WrongTokenWrongTokenWrongToken000000";
    let err = c
        .packument("@acme/secret", Some(&cred_with(wrong)), None)
        .await
        .expect_err("wrong token");
    assert_secret_absent(&err, wrong);
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");

    let (p, _, _) = fresh(
        c.packument("@acme/secret", Some(&cred()), None)
            .await
            .expect("with the token"),
    );
    assert_eq!(p.name, "@acme/secret");
    let last = reg.requests().pop().expect("request");
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // Flipping it public lets anyone read it.
    reg.set_packument_private("@acme/secret", false);
    assert!(c.packument("@acme/secret", None, None).await.is_ok());
}

#[tokio::test]
async fn missing_packument_is_not_found() {
    let reg = FakeRegistry::start().await;
    let (c, _) = client(&reg.url);
    let err = c
        .packument("@acme/none", Some(&cred()), None)
        .await
        .expect_err("404");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    assert_eq!(
        text(&err),
        "packument: not found (404): Not found",
        "the registry's words, no token"
    );
    assert_eq!(reg.requests().len(), 1, "a 404 is not retried");
}

#[tokio::test]
async fn multi_megabyte_packument() {
    let reg = FakeRegistry::start().await;
    let size = 4 << 20;
    let doc = packument_doc_padded(
        "big",
        &[
            ("1.0.0", "2025-01-01T00:00:00.000Z", None, "alice"),
            (
                "2.0.0",
                "2025-06-01T00:00:00.000Z",
                Some("github"),
                "GitHub Actions",
            ),
        ],
        &["alice"],
        size,
    );
    reg.add_packument("big", doc);
    let (c, _) = client(&reg.url);
    let (p, _, bytes) = fresh(c.packument("big", None, None).await.expect("fetch"));
    assert!(bytes > size, "{bytes}");
    assert_eq!(p.versions.len(), 2);
    assert_eq!(
        p.latest().and_then(|v| v.provenance.as_deref()),
        Some(SLSA_V1)
    );
    assert!(reg.bytes_served() >= bytes as u64);
}

#[tokio::test]
async fn org_packages_unknown_org_is_not_found_and_never_falls_back() {
    let reg = FakeRegistry::start().await;
    // npm would fall back to this on a 404; the client must not.
    reg.set_user_packages("ghost", [("ghost-pkg", "write")]);
    let (c, _) = client(&reg.url);

    let err = c
        .org_packages("@ghost", &cred())
        .await
        .expect_err("unknown org");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    assert_eq!(err.label(), "not_found");
    assert_eq!(text(&err), "org_packages: not found (404): Not found");
    assert_eq!(paths(&reg), vec!["/-/org/ghost/package"]);
    assert!(reg.requests_to("/-/user/").is_empty());
}

#[tokio::test]
async fn org_packages_user_packages_and_roster() {
    let reg = FakeRegistry::start().await;
    reg.set_org_packages("acme", [("@acme/a", "write"), ("@acme/b", "read")]);
    reg.set_org_roster(
        "@acme",
        [("alice", "owner"), ("bob", "admin"), ("carol", "developer")],
    );
    reg.set_user_packages("alice", [("left-pad", "write"), ("@acme/a", "write")]);
    let (c, _) = client(&reg.url);

    let pkgs = c
        .org_packages("@acme", &cred())
        .await
        .expect("org packages");
    assert_eq!(pkgs.get("@acme/a").map(String::as_str), Some("write"));
    assert_eq!(pkgs.get("@acme/b").map(String::as_str), Some("read"));
    assert_eq!(pkgs.len(), 2);

    let roster = c.org_roster("acme", &cred()).await.expect("roster");
    assert_eq!(roster.get("alice").map(String::as_str), Some("owner"));
    assert_eq!(roster.get("bob").map(String::as_str), Some("admin"));
    assert_eq!(roster.get("carol").map(String::as_str), Some("developer"));

    let mine = c.user_packages("alice", &cred()).await.expect("user");
    assert_eq!(mine.len(), 2);
    assert_eq!(mine.get("left-pad").map(String::as_str), Some("write"));

    assert_eq!(
        paths(&reg),
        vec![
            "/-/org/acme/package",
            "/-/org/acme/user",
            "/-/user/alice/package"
        ]
    );
    for r in reg.requests() {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }

    // Unknown user and unknown org roster: typed 404s.
    let err = c.user_packages("nobody", &cred()).await.expect_err("404");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    let err = c.org_roster("ghost", &cred()).await.expect_err("404");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn lists_need_the_credential() {
    let reg = FakeRegistry::start().await;
    reg.set_org_packages("acme", [("@acme/a", "write")]);
    let (c, _) = client(&reg.url);
    let wrong = "npm_NotTheRightOneNotTheRightOne00000000";
    let err = c
        .org_packages("acme", &cred_with(wrong))
        .await
        .expect_err("401");
    assert_secret_absent(&err, wrong);
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "org_packages: unauthorized (401): the credential was rejected: bad token"
    );
}

#[tokio::test]
async fn org_teams_strip_the_org_prefix() {
    let reg = FakeRegistry::start().await;
    reg.set_org_teams("acme", &["developers", "release team"]);
    let (c, _) = client(&reg.url);

    let teams = c.org_teams("@acme", &cred()).await.expect("teams");
    assert_eq!(teams, vec!["developers", "release team"]);
    assert_eq!(paths(&reg), vec!["/-/org/acme/team?format=cli"]);

    // What went over the wire still carries the prefix.
    let raw: Value = reqwest::Client::new()
        .get(reg.url_for("/-/org/acme/team?format=cli"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(raw, json!(["acme:developers", "acme:release team"]));

    let err = c.org_teams("ghost", &cred()).await.expect_err("404");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn team_packages_escape_the_team_segment() {
    let reg = FakeRegistry::start().await;
    reg.set_team_packages(
        "@acme",
        "release team",
        [("@acme/a", "write"), ("@acme/docs", "read")],
    );
    let (c, _) = client(&reg.url);

    let pkgs = c
        .team_packages("@acme", "release team", &cred())
        .await
        .expect("team packages");
    assert_eq!(pkgs.get("@acme/a").map(String::as_str), Some("write"));
    assert_eq!(pkgs.get("@acme/docs").map(String::as_str), Some("read"));
    assert_eq!(paths(&reg), vec!["/-/team/acme/release%20team/package"]);

    // The team shows up in the org's team list too.
    assert_eq!(
        c.org_teams("acme", &cred()).await.expect("teams"),
        vec!["release team"]
    );

    let err = c
        .team_packages("acme", "nope", &cred())
        .await
        .expect_err("unknown team");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    assert!(reg.requests_to("/-/user/").is_empty(), "no user fallback");
}

fn github_trust() -> Value {
    json!([{
        "id": "tid-1",
        "type": "github",
        "claims": {"repository": "acme/a", "workflow_ref": {"file": "release.yml"}, "environment": "prod"},
        "permissions": ["createPackage"]
    }])
}

#[tokio::test]
async fn trust_without_otp_is_otp_required() {
    let reg = FakeRegistry::start().await;
    reg.add_packument("@acme/a", acme_a_doc());
    reg.set_trust("@acme/a", github_trust());
    reg.set_valid_otps(vec![OTP]);
    let (c, metrics) = client(&reg.url);

    let err = c.trust("@acme/a", &cred(), None).await.expect_err("EOTP");
    assert!(
        matches!(
            err,
            RegistryError::OtpRequired {
                endpoint: "trust",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.label(), "otp_required");
    let _ = text(&err);

    let reqs = reg.requests();
    assert_eq!(reqs.len(), 1, "a 401 is not retried");
    assert_eq!(reqs[0].path_and_query, "/-/package/@acme%2fa/trust");
    assert_eq!(reqs[0].header("npm-otp"), None);
    assert_eq!(reqs[0].header("npm-auth-type"), None);
    assert_eq!(metric_line(&metrics, "trust", "401"), Some(1));
}

#[tokio::test]
async fn trust_with_otp_parses_configs_and_sends_npm_headers() {
    let reg = FakeRegistry::start().await;
    reg.add_packument("@acme/a", acme_a_doc());
    reg.set_trust("@acme/a", github_trust());
    reg.set_valid_otps(vec![OTP]);
    let (c, metrics) = client(&reg.url);

    let configs = c.trust("@acme/a", &cred(), Some(OTP)).await.expect("trust");
    assert_eq!(configs.len(), 1);
    assert_eq!(configs[0].id.as_deref(), Some("tid-1"));
    assert_eq!(configs[0].kind, "github");
    assert_eq!(configs[0].permissions, vec!["createPackage"]);
    assert_eq!(
        configs[0].describe(),
        "github acme/a release.yml environment=prod"
    );

    let r = reg.requests().pop().expect("request");
    assert_eq!(r.method, "GET");
    assert_eq!(r.path_and_query, "/-/package/@acme%2fa/trust");
    assert_eq!(r.header("npm-otp"), Some(OTP));
    assert_eq!(r.header("npm-auth-type"), Some("legacy"));
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(metric_line(&metrics, "trust", "200"), Some(1));

    // A package with a packument but no configuration: an empty list, not an error.
    reg.add_packument(
        "plain",
        packument_doc(
            "plain",
            &[("1.0.0", "2025-01-01T00:00:00.000Z", None, "alice")],
            &["alice"],
        ),
    );
    assert!(c
        .trust("plain", &cred(), Some(OTP))
        .await
        .expect("empty")
        .is_empty());

    // A wrong code is the same challenge as none.
    let err = c
        .trust("@acme/a", &cred(), Some("000000"))
        .await
        .expect_err("wrong otp");
    assert_eq!(err.label(), "otp_required");
}

#[tokio::test]
async fn trust_with_an_expired_otp_is_otp_required() {
    let reg = FakeRegistry::start().await;
    reg.set_trust("@acme/a", github_trust());
    reg.set_valid_otps(vec![OTP]);
    reg.otp_uses_left(Some(1));
    let (c, _) = client(&reg.url);

    assert_eq!(
        c.trust("@acme/a", &cred(), Some(OTP))
            .await
            .expect("first use")
            .len(),
        1
    );
    assert_eq!(reg.remaining_otp_uses(), Some(0));
    let err = c
        .trust("@acme/a", &cred(), Some(OTP))
        .await
        .expect_err("expired");
    assert!(matches!(err, RegistryError::OtpRequired { .. }), "{err:?}");
    assert_eq!(reg.requests_to("/-/package/").len(), 2);
}

#[tokio::test]
async fn access_post_body_headers_and_record() {
    let reg = FakeRegistry::start().await;
    reg.add_packument("@acme/a", acme_a_doc());
    reg.set_valid_otps(vec![OTP]);
    let (c, metrics) = client(&reg.url);

    c.require_2fa_disallow_tokens("@acme/a", &cred(), Some(OTP))
        .await
        .expect("access");

    let reqs = reg.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path_and_query, "/-/package/@acme%2fa/access");
    // Exactly these two keys and values, compact JSON (the byte order is checked separately below).
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).expect("JSON body"),
        json!({"publish_requires_tfa": true, "automation_token_overrides_tfa": false})
    );
    assert!(
        !r.body.contains(' ') && !r.body.contains('\n'),
        "{}",
        r.body
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("npm-otp"), Some(OTP));
    assert_eq!(r.header("npm-auth-type"), Some("legacy"));
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        reg.access_posts(),
        vec![(
            "@acme/a".to_string(),
            json!({"publish_requires_tfa": true, "automation_token_overrides_tfa": false})
        )]
    );
    assert_eq!(metric_line(&metrics, "access", "200"), Some(1));
}

/// npm (libnpmaccess) writes `{publish_requires_tfa, automation_token_overrides_tfa}` in that order.
/// Registries do not care about key order, so this is cosmetic, but the brief asks for the exact body.
#[tokio::test]
async fn access_post_body_bytes_match_npm() {
    let reg = FakeRegistry::start().await;
    reg.add_packument("@acme/a", acme_a_doc());
    reg.set_valid_otps(vec![OTP]);
    let (c, _) = client(&reg.url);
    c.require_2fa_disallow_tokens("@acme/a", &cred(), Some(OTP))
        .await
        .expect("access");
    assert_eq!(
        reg.requests()[0].body,
        r#"{"publish_requires_tfa":true,"automation_token_overrides_tfa":false}"#
    );
}

#[tokio::test]
async fn access_post_is_never_retried() {
    let reg = FakeRegistry::start().await;
    reg.add_packument("@acme/a", acme_a_doc());
    reg.set_valid_otps(vec![OTP]);
    let (c, metrics) = client(&reg.url);

    reg.push_faults("/-/package/@acme%2fa/access", Fault::Status(500), 3);
    let err = c
        .require_2fa_disallow_tokens("@acme/a", &cred(), Some(OTP))
        .await
        .expect_err("500");
    assert!(
        matches!(
            err,
            RegistryError::Server {
                status: 500,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.label(), "server_error");
    let _ = text(&err);
    assert_eq!(reg.requests().len(), 1, "exactly one POST");
    assert_eq!(reg.pending_faults(), 2);
    assert!(reg.access_posts().is_empty());
    assert_eq!(metric_line(&metrics, "access", "500"), Some(1));

    // 429 and a dropped connection are not retried either.
    reg.clear_faults();
    reg.clear_requests();
    reg.push_fault(
        "/-/package/",
        Fault::RateLimited {
            retry_after: Some("0".into()),
        },
    );
    let err = c
        .require_2fa_disallow_tokens("@acme/a", &cred(), Some(OTP))
        .await
        .expect_err("429");
    assert_eq!(err.label(), "rate_limited");
    reg.push_fault("/-/package/", Fault::Drop);
    let err = c
        .require_2fa_disallow_tokens("@acme/a", &cred(), Some(OTP))
        .await
        .expect_err("dropped");
    assert_eq!(err.label(), "unreachable");
    let _ = text(&err);
    assert_eq!(reg.requests().len(), 2);
}

#[tokio::test]
async fn access_post_otp_and_unknown_package() {
    let reg = FakeRegistry::start().await;
    reg.add_packument("@acme/a", acme_a_doc());
    reg.set_valid_otps(vec![OTP]);
    let (c, _) = client(&reg.url);

    let err = c
        .require_2fa_disallow_tokens("@acme/a", &cred(), Some("999999"))
        .await
        .expect_err("wrong otp");
    assert!(
        matches!(
            err,
            RegistryError::OtpRequired {
                endpoint: "access",
                ..
            }
        ),
        "{err:?}"
    );
    let err = c
        .require_2fa_disallow_tokens("@acme/none", &cred(), Some(OTP))
        .await
        .expect_err("unknown");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    assert_eq!(reg.requests().len(), 2);
    assert!(reg.access_posts().is_empty());
}

#[tokio::test]
async fn provenance_source_reads_repository_and_workflow() {
    let reg = FakeRegistry::start().await;
    reg.set_attestation(
        "left-pad",
        "1.3.0",
        "https://github.com/stevemao/left-pad",
        ".github/workflows/release.yml",
    );
    let (c, metrics) = client(&reg.url);

    let src = c
        .provenance_source("left-pad", "1.3.0", None)
        .await
        .expect("provenance")
        .expect("some");
    assert_eq!(
        src.repository.as_deref(),
        Some("https://github.com/stevemao/left-pad")
    );
    assert_eq!(
        src.workflow_path.as_deref(),
        Some(".github/workflows/release.yml")
    );
    assert_eq!(paths(&reg), vec!["/-/npm/v1/attestations/left-pad@1.3.0"]);

    // No attestation: Ok(None), not an error.
    assert_eq!(
        c.provenance_source("left-pad", "1.2.0", Some(&cred()))
            .await
            .expect("404 is none"),
        None
    );
    assert_eq!(metric_line(&metrics, "attestations", "200"), Some(1));
    assert_eq!(metric_line(&metrics, "attestations", "404"), Some(1));

    // A server error is an error, never "no provenance".
    reg.push_faults("/-/npm/v1/attestations/", Fault::Status(503), 4);
    let err = c
        .provenance_source("left-pad", "1.3.0", None)
        .await
        .expect_err("503");
    assert_eq!(err.label(), "server_error");
}

/// npm fetches the attestation at `dist.attestations.url` re-based onto the registry, i.e.
/// `/-/npm/v1/attestations/@acme%2fa@1.1.0` (API reference §6); the fake, like that URL, only knows the
/// escaped form, so an unescaped request finds nothing and the client reports "no provenance".
#[tokio::test]
async fn provenance_source_escapes_a_scoped_name() {
    let reg = FakeRegistry::start().await;
    reg.set_attestation(
        "@acme/a",
        "1.1.0",
        "https://github.com/acme/a",
        ".github/workflows/release.yml",
    );
    let (c, _) = client(&reg.url);

    let got = c.provenance_source("@acme/a", "1.1.0", None).await;
    assert_eq!(
        paths(&reg),
        vec!["/-/npm/v1/attestations/@acme%2fa@1.1.0"],
        "the attestation URL npm builds (dist.attestations.url) escapes the slash"
    );
    let src = got.expect("provenance").expect("some");
    assert_eq!(src.repository.as_deref(), Some("https://github.com/acme/a"));
}

#[tokio::test]
async fn per_endpoint_metric_labels() {
    let reg = FakeRegistry::start().await;
    reg.add_packument("@acme/a", acme_a_doc());
    reg.set_attestation("@acme/a", "1.1.0", "https://github.com/acme/a", "x.yml");
    reg.set_trust("@acme/a", github_trust());
    reg.set_valid_otps(vec![OTP]);
    reg.set_org_packages("acme", [("@acme/a", "write")]);
    reg.set_org_roster("acme", [("alice", "owner")]);
    reg.set_team_packages("acme", "devs", [("@acme/a", "write")]);
    reg.set_user_packages("alice", [("@acme/a", "write")]);
    let (c, metrics) = client(&reg.url);
    let k = cred();

    c.packument("@acme/a", Some(&k), None)
        .await
        .expect("packument");
    c.trust("@acme/a", &k, Some(OTP)).await.expect("trust");
    c.require_2fa_disallow_tokens("@acme/a", &k, Some(OTP))
        .await
        .expect("access");
    c.org_packages("acme", &k).await.expect("org packages");
    c.org_roster("acme", &k).await.expect("roster");
    c.org_teams("acme", &k).await.expect("teams");
    c.team_packages("acme", "devs", &k).await.expect("team");
    c.user_packages("alice", &k).await.expect("user");
    let _ = c.provenance_source("left-pad", "1.0.0", None).await;

    for endpoint in [
        "packument",
        "trust",
        "access",
        "org_packages",
        "org_roster",
        "org_teams",
        "team_packages",
        "user_packages",
    ] {
        assert_eq!(
            metric_line(&metrics, endpoint, "200"),
            Some(1),
            "{endpoint} in:\n{}",
            metrics.render()
        );
    }
    assert_eq!(metric_line(&metrics, "attestations", "404"), Some(1));
    testkit::secrets::assert_absent(&[TOKEN], [("/metrics", metrics.render())]);
}

#[tokio::test]
async fn token_never_appears_in_error_text() {
    let reg = FakeRegistry::start().await;
    reg.set_packument_private("@acme/p", true);
    reg.add_packument("@acme/p", acme_a_doc());
    reg.set_trust("@acme/p", github_trust());
    reg.set_valid_otps(vec![OTP]);
    let (c, _) = client(&reg.url);
    let secret = "npm_SuperSecretValueThatMustNotLeak000000";
    let k = cred_with(secret);

    let mut errors = vec![
        c.packument("@acme/p", Some(&k), None)
            .await
            .expect_err("401"),
        c.org_packages("acme", &k).await.expect_err("401"),
        c.team_packages("acme", "devs", &k).await.expect_err("401"),
        c.trust("@acme/p", &k, Some(OTP)).await.expect_err("401"),
        c.require_2fa_disallow_tokens("@acme/p", &k, Some(OTP))
            .await
            .expect_err("401"),
    ];
    // Errors the registry explains in its own words, and ones it does not explain at all.
    reg.set_valid_tokens(vec![secret.to_string()]);
    reg.push_fault(
        "/-/org/",
        Fault::Custom {
            status: 403,
            headers: vec![],
            body: r#"{"error":"forbidden for this token"}"#.into(),
        },
    );
    errors.push(c.org_roster("acme", &k).await.expect_err("403"));
    reg.push_fault("/-/package/", Fault::Malformed("{not json".into()));
    errors.push(
        c.trust("@acme/p", &k, Some(OTP))
            .await
            .expect_err("bad json"),
    );
    reg.push_faults("/@acme", Fault::Status(502), 4);
    errors.push(
        c.packument("@acme/p", Some(&k), None)
            .await
            .expect_err("502"),
    );
    reg.stop().await;
    errors.push(c.org_teams("acme", &k).await.expect_err("down"));

    let labels: Vec<&str> = errors.iter().map(RegistryError::label).collect();
    assert_eq!(
        labels,
        vec![
            "unauthorized",
            "unauthorized",
            "unauthorized",
            "unauthorized",
            "unauthorized",
            "forbidden",
            "malformed",
            "server_error",
            "unreachable"
        ]
    );
    for e in &errors {
        assert_secret_absent(e, secret);
    }
}

#[tokio::test]
async fn fake_benchmark_helpers() {
    let reg = FakeRegistry::start().await;
    let t0 = Instant::now();
    let names = reg.add_many_packages("@bench/p-", 1000, 3, 256);
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "add_many_packages took {:?}",
        t0.elapsed()
    );
    assert_eq!(names.len(), 1000);
    assert_eq!(names[0], "@bench/p-0");
    assert_eq!(names[999], "@bench/p-999");

    let (c, _) = client(&reg.url);
    reg.reset_counters();
    let (p, _, bytes) = fresh(c.packument(&names[7], None, None).await.expect("fetch"));
    assert_eq!(p.versions.len(), 3);
    assert_eq!(p.maintainer_names(), vec!["alice", "bob"]);
    let latest = p.latest().expect("latest");
    assert_eq!(latest.version, "1.2.0");
    assert!(latest.trusted_publisher.is_some());
    assert!(p.versions[0].trusted_publisher.is_none());
    assert_eq!(reg.requests_count(), 1);
    assert_eq!(reg.bytes_served(), bytes as u64);

    // The attestation is served for the last version (fetched directly, so this test does not
    // depend on the client's escaping).
    let raw: Value = reqwest::Client::new()
        .get(reg.url_for("/-/npm/v1/attestations/@bench%2fp-7@1.2.0"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let src = npm_watchdog::registry::parse_provenance(&raw)
        .expect("parse")
        .expect("provenance");
    assert_eq!(
        src.repository.as_deref(),
        Some("https://github.com/bench/p-7")
    );

    reg.set_latency(Duration::from_millis(150));
    let t = Instant::now();
    assert!(c.packument(&names[8], None, None).await.is_ok());
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    reg.set_latency(Duration::ZERO);
    assert_eq!(reg.requests_count(), 3);
    assert!(reg.bytes_served() > bytes as u64);
}
