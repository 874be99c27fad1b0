//! `[[ci.github]]` reads against the in-process fake GitHub API (`testkit::fake_ci`): every list kind
//! with its units and places, pagination, escaping, org secrets seen through several repositories,
//! failures confined to their own lists, rate limits, retries, headers, metrics and token hygiene.
//! Page parsing and `validate()` are unit-tested in `src/ci/github.rs`.

mod ci_support;
use testkit::fake_ci;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ci_support::Recorder;
use fake_ci::{token_file, FakeCi, Fault, Visibility, DEFAULT_TIME as T, GITHUB_TOKEN};
use npm_watchdog::ci::github::GithubConfig;
use npm_watchdog::ci::Limits;
use npm_watchdog::ci::{covers, Api, CiObserver, CiProviderConfig, SourceRead};
use tempfile::NamedTempFile;
use url::Url;

/// Retries and waits small enough for tests, large enough for a 2 s reset.
fn fast() -> Limits {
    Limits {
        retries: 2,
        max_wait: Duration::from_secs(5),
        ..Limits::default()
    }
}

/// A fake GitHub, a token file holding its token (mode 0600) and what the client reported.
struct Github {
    fake: FakeCi,
    token: NamedTempFile,
    recorder: Arc<Recorder>,
}

impl Github {
    async fn start() -> Github {
        let token = token_file(GITHUB_TOKEN);
        Github {
            fake: FakeCi::start().await,
            token,
            recorder: Arc::default(),
        }
    }

    fn config(&self, repos: &[&str], orgs: &[&str]) -> GithubConfig {
        GithubConfig {
            token_file: self.token.path().to_path_buf(),
            api_url: Url::parse(&self.fake.github_url()).expect("api url"),
            repos: repos.iter().map(|r| r.to_string()).collect(),
            orgs: orgs.iter().map(|o| o.to_string()).collect(),
        }
    }

    fn api(&self, cfg: &GithubConfig, limits: Limits) -> Api {
        let observer: Arc<dyn CiObserver> = self.recorder.clone();
        Api::new("github", cfg, reqwest::Client::new(), limits, observer).expect("api")
    }

    /// Reads the entry and checks that nothing it gave holds the token.
    async fn read_with(&self, repos: &[&str], orgs: &[&str], limits: Limits) -> SourceRead {
        let cfg = self.config(repos, orgs);
        assert_eq!(cfg.validate(), Ok(()));
        let api = self.api(&cfg, limits);
        let read = cfg.read(&api).await;
        let mut shown = vec![
            ("the API's Debug", format!("{api:?}")),
            ("the read's Debug", format!("{read:?}")),
        ];
        for e in &read.errors {
            shown.push(("an error", e.error.to_string()));
            shown.push(("an error's Debug", format!("{e:?}")));
        }
        testkit::secrets::assert_absent(&[GITHUB_TOKEN], shown);
        read
    }

    async fn read(&self, repos: &[&str], orgs: &[&str]) -> SourceRead {
        self.read_with(repos, orgs, fast()).await
    }
}

/// Each unit with the names of its secrets.
fn units(read: &SourceRead) -> Vec<(String, Vec<String>)> {
    let listed =
        |u: &npm_watchdog::ci::UnitRead| u.secrets.iter().map(|s| s.name.clone()).collect();
    read.units
        .iter()
        .map(|u| (u.unit.clone(), listed(u)))
        .collect()
}

fn unit_keys(read: &SourceRead) -> Vec<&str> {
    read.units.iter().map(|u| u.unit.as_str()).collect()
}

/// Each failed scope with its error's label.
fn errors(read: &SourceRead) -> Vec<(&str, &'static str)> {
    read.errors
        .iter()
        .map(|e| (e.scope.as_str(), e.error.label()))
        .collect()
}

fn assert_no_errors(read: &SourceRead) {
    assert!(read.errors.is_empty(), "{:?}", read.errors);
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|n| n.to_string()).collect()
}

fn time(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("date")
        .with_timezone(&Utc)
}

const SECRETS: &str = "/github/repos/acme/widget/actions/secrets";

// ---------------------------------------------------------------------------------------------------
// What is read

#[tokio::test]
async fn every_list_kind_is_read_with_its_units_and_places() {
    let gh = Github::start().await;
    let f = &gh.fake;
    f.add_github_repo("acme/widget", true);
    f.add_github_repo_secret("acme/widget", "NPM_TOKEN", T, "2025-03-04T05:06:07Z");
    f.add_github_org_secret("acme", "ORG_NPM", Visibility::Private, &[], T, T);
    f.add_github_env_secret("acme/widget", "production", "DEPLOY", T, T);
    f.add_github_dependabot_secret("acme/widget", "DEP", T, T);
    f.add_github_org_dependabot_secret("acme", "ORG_DEP", Visibility::All, &[], T, T);

    // Configured in another case than GitHub's: keys are lower-cased, descriptions keep it.
    let read = gh.read(&["Acme/Widget"], &["ACME"]).await;
    assert_no_errors(&read);
    let expected = [
        ("github:acme/widget:actions", "NPM_TOKEN"),
        ("github:acme/widget:org-visible", "ORG_NPM"),
        ("github:acme/widget:env:production", "DEPLOY"),
        ("github:acme/widget:dependabot", "DEP"),
        ("github:org:acme:actions", "ORG_NPM"),
        ("github:org:acme:dependabot", "ORG_DEP"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(u, n)| (u.to_string(), names(&[*n])))
        .collect();
    assert_eq!(units(&read), expected);

    let placed: Vec<(&str, &str)> = read
        .units
        .iter()
        .flat_map(|u| &u.secrets)
        .map(|s| (s.place.as_str(), s.place_desc.as_str()))
        .collect();
    let org_actions = "GitHub Actions secrets of organisation";
    let acme = format!("{org_actions} Acme");
    let big_acme = format!("{org_actions} ACME");
    assert_eq!(
        placed,
        [
            (
                "github:acme/widget:actions",
                "GitHub Actions secrets of repository Acme/Widget"
            ),
            ("github:org:acme:actions", acme.as_str()),
            (
                "github:acme/widget:env:production",
                "GitHub secrets of environment production in repository Acme/Widget"
            ),
            (
                "github:acme/widget:dependabot",
                "GitHub Dependabot secrets of repository Acme/Widget"
            ),
            ("github:org:acme:actions", big_acme.as_str()),
            (
                "github:org:acme:dependabot",
                "GitHub Dependabot secrets of organisation ACME"
            ),
        ]
    );
    for s in read.units.iter().flat_map(|u| &u.secrets) {
        assert_eq!(s.provider, "github");
        assert_eq!(s.environment_scope, None);
        assert!(!s.value_is_npm_token);
    }
    let npm = &read.units[0].secrets[0];
    assert_eq!(npm.updated_at, Some(time("2025-03-04T05:06:07Z")));
    assert_eq!(npm.key(), "github:acme/widget:actions#NPM_TOKEN");
    // The org secret read through the repository and through `orgs` is one secret.
    assert_eq!(
        read.units[1].secrets[0].key(),
        read.units[4].secrets[0].key()
    );

    let paths: Vec<String> = f.requests().into_iter().map(|r| r.path_and_query).collect();
    assert_eq!(
        paths,
        [
            "/github/repos/Acme/Widget/actions/secrets?per_page=100",
            "/github/repos/Acme/Widget/actions/organization-secrets?per_page=100",
            "/github/repos/Acme/Widget/environments?per_page=100",
            "/github/repos/Acme/Widget/environments/production/secrets?per_page=100",
            "/github/repos/Acme/Widget/dependabot/secrets?per_page=100",
            "/github/orgs/ACME/actions/secrets?per_page=100",
            "/github/orgs/ACME/dependabot/secrets?per_page=100",
        ]
    );
}

#[tokio::test]
async fn every_page_of_a_list_is_read() {
    let gh = Github::start().await;
    let f = &gh.fake;
    for i in 0..5 {
        f.add_github_repo_secret("acme/widget", &format!("S{i}"), T, T);
    }
    for env in ["e1", "e2", "e3"] {
        f.add_github_environment("acme/widget", env);
    }
    f.set_github_max_per_page(2);

    let read = gh.read(&["acme/widget"], &[]).await;
    assert_no_errors(&read);
    assert_eq!(
        units(&read)[0],
        (
            "github:acme/widget:actions".to_string(),
            names(&["S0", "S1", "S2", "S3", "S4"])
        )
    );
    let paths: Vec<String> = f
        .requests_to(SECRETS)
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(
        paths,
        [
            format!("{SECRETS}?per_page=100"),
            format!("{SECRETS}?per_page=100&page=2"),
            format!("{SECRETS}?per_page=100&page=3"),
        ]
    );
    // The environment list is paginated too: all three are read.
    assert_eq!(
        f.requests_count("/github/repos/acme/widget/environments?"),
        2
    );
    assert_eq!(
        unit_keys(&read),
        [
            "github:acme/widget:actions",
            "github:acme/widget:org-visible",
            "github:acme/widget:env:e1",
            "github:acme/widget:env:e2",
            "github:acme/widget:env:e3",
            "github:acme/widget:dependabot",
        ]
    );
}

#[tokio::test]
async fn environment_names_are_escaped_as_one_segment() {
    let gh = Github::start().await;
    gh.fake
        .add_github_env_secret("acme/widget", "prod eu", "NPM_TOKEN", T, T);

    let read = gh.read(&["acme/widget"], &[]).await;
    assert_no_errors(&read);
    let unit = read
        .units
        .iter()
        .find(|u| u.unit == "github:acme/widget:env:prod eu")
        .expect("environment unit");
    assert_eq!(unit.secrets.len(), 1);
    assert_eq!(unit.secrets[0].name, "NPM_TOKEN");
    assert_eq!(
        unit.secrets[0].place_desc,
        "GitHub secrets of environment prod eu in repository acme/widget"
    );
    let asked = gh
        .fake
        .requests_count("/github/repos/acme/widget/environments/prod%20eu/secrets?per_page=100");
    assert_eq!(asked, 1);
}

#[tokio::test]
async fn an_org_secret_seen_through_two_repositories_is_one_secret() {
    let gh = Github::start().await;
    let f = &gh.fake;
    f.add_github_repo("acme/widget", false);
    f.add_github_repo("acme/gadget", false);
    f.add_github_org_secret("acme", "SHARED", Visibility::All, &[], T, T);
    f.add_github_org_secret(
        "acme",
        "ONLY_GADGET",
        Visibility::Selected,
        &["gadget"],
        T,
        T,
    );

    let read = gh.read(&["acme/widget", "acme/gadget"], &[]).await;
    assert_no_errors(&read);
    let visible: Vec<_> = units(&read)
        .into_iter()
        .filter(|(u, _)| u.ends_with(":org-visible"))
        .collect();
    assert_eq!(
        visible,
        [
            (
                "github:acme/widget:org-visible".to_string(),
                names(&["SHARED"])
            ),
            (
                "github:acme/gadget:org-visible".to_string(),
                names(&["SHARED", "ONLY_GADGET"])
            ),
        ]
    );
    let keys: Vec<String> = read
        .units
        .iter()
        .filter(|u| u.unit.ends_with(":org-visible"))
        .flat_map(|u| u.secrets.iter().map(|s| s.key()))
        .collect();
    assert_eq!(
        keys,
        [
            "github:org:acme:actions#SHARED",
            "github:org:acme:actions#SHARED",
            "github:org:acme:actions#ONLY_GADGET",
        ]
    );
}

// ---------------------------------------------------------------------------------------------------
// Failures stay with their lists

#[tokio::test]
async fn a_forbidden_repository_fails_only_its_own_lists() {
    let gh = Github::start().await;
    let f = &gh.fake;
    f.add_github_repo("acme/vault", true);
    f.add_github_repo_secret("acme/widget", "NPM_TOKEN", T, T);
    f.deny_github("/repos/acme/vault", 403);

    let read = gh.read(&["acme/vault", "acme/widget"], &[]).await;
    assert_eq!(
        errors(&read),
        [
            ("github:acme/vault:actions", "forbidden"),
            ("github:acme/vault:org-visible", "forbidden"),
            ("github:acme/vault:env", "forbidden"),
            ("github:acme/vault:dependabot", "forbidden"),
        ]
    );
    let whats: Vec<&str> = read.errors.iter().map(|e| e.what.as_str()).collect();
    assert_eq!(
        whats,
        [
            "GitHub Actions secrets of repository acme/vault",
            "GitHub Actions secrets of organisation acme visible to repository acme/vault",
            "GitHub environments of repository acme/vault",
            "GitHub Dependabot secrets of repository acme/vault",
        ]
    );
    let message = read.errors[0].error.to_string();
    assert_eq!(
        message,
        "repo_secrets: 403 forbidden: Resource not accessible by personal access token \
         (the token lacks the permission to read this)"
    );
    assert!(read
        .errors
        .iter()
        .all(|e| covers("github:acme/vault", &e.scope)));
    assert_eq!(
        unit_keys(&read),
        [
            "github:acme/widget:actions",
            "github:acme/widget:org-visible",
            "github:acme/widget:dependabot",
        ]
    );
    assert_eq!(read.units[0].secrets[0].name, "NPM_TOKEN");
}

#[tokio::test]
async fn unlisted_environments_fail_the_environment_scope_only() {
    let gh = Github::start().await;
    gh.fake
        .add_github_env_secret("acme/widget", "prod", "X", T, T);
    gh.fake.deny_github("/repos/acme/widget/environments", 403);

    let read = gh.read(&["acme/widget"], &[]).await;
    assert_eq!(errors(&read), [("github:acme/widget:env", "forbidden")]);
    assert_eq!(
        read.errors[0].what,
        "GitHub environments of repository acme/widget"
    );
    assert!(covers(&read.errors[0].scope, "github:acme/widget:env:prod"));
    assert!(!covers(&read.errors[0].scope, "github:acme/widget:actions"));
    assert_eq!(
        unit_keys(&read),
        [
            "github:acme/widget:actions",
            "github:acme/widget:org-visible",
            "github:acme/widget:dependabot",
        ]
    );
    assert_eq!(
        gh.fake
            .requests_count("/github/repos/acme/widget/environments/"),
        0
    );
}

#[tokio::test]
async fn a_missing_org_secret_list_fails_closed() {
    // A repository owned by a user: GitHub may answer 404 for the organisation secrets it can see.
    let gh = Github::start().await;
    gh.fake.add_github_repo("alice/dots", false);
    gh.fake
        .deny_github("/repos/alice/dots/actions/organization-secrets", 404);

    let read = gh.read(&["alice/dots"], &[]).await;
    assert_eq!(
        errors(&read),
        [("github:alice/dots:org-visible", "not_found")]
    );
    assert_eq!(
        unit_keys(&read),
        ["github:alice/dots:actions", "github:alice/dots:dependabot"]
    );
}

#[tokio::test]
async fn a_refused_token_fails_every_list() {
    let gh = Github::start().await;
    gh.fake.add_github_repo("acme/widget", false);
    gh.fake.add_github_org("acme");
    gh.fake.set_github_token("another-token-entirely");

    let read = gh.read(&["acme/widget"], &["acme"]).await;
    assert!(read.units.is_empty(), "{:?}", read.units);
    let scopes: Vec<(&str, &str)> = errors(&read);
    assert_eq!(
        scopes,
        [
            ("github:acme/widget:actions", "unauthorized"),
            ("github:acme/widget:org-visible", "unauthorized"),
            ("github:acme/widget:env", "unauthorized"),
            ("github:acme/widget:dependabot", "unauthorized"),
            ("github:org:acme:actions", "unauthorized"),
            ("github:org:acme:dependabot", "unauthorized"),
        ]
    );
    let message = read.errors[4].error.to_string();
    assert!(
        message.starts_with("org_secrets: 401 unauthorized"),
        "{message}"
    );
    // Not retried: one request per list.
    assert_eq!(gh.fake.requests().len(), 6);
}

#[tokio::test]
async fn a_garbled_answer_is_malformed_and_not_retried() {
    let gh = Github::start().await;
    gh.fake
        .add_github_repo_secret("acme/widget", "NPM_TOKEN", T, T);
    gh.fake.push_fault(SECRETS, Fault::Garbage);

    let read = gh.read(&["acme/widget"], &[]).await;
    assert_eq!(errors(&read), [("github:acme/widget:actions", "malformed")]);
    let message = read.errors[0].error.to_string();
    assert!(
        message.starts_with("repo_secrets: malformed answer"),
        "{message}"
    );
    assert_eq!(gh.fake.requests_count(SECRETS), 1);
    let rest = [
        "github:acme/widget:org-visible",
        "github:acme/widget:dependabot",
    ];
    assert_eq!(unit_keys(&read), rest);
}

// ---------------------------------------------------------------------------------------------------
// Rate limits and retries

#[tokio::test]
async fn the_primary_rate_limit_is_waited_out() {
    let gh = Github::start().await;
    gh.fake
        .add_github_repo_secret("acme/widget", "NPM_TOKEN", T, T);
    let reset_in = Duration::from_secs(2);
    gh.fake.push_fault(
        SECRETS,
        Fault::GithubRateLimit {
            reset_in,
            status: 403,
        },
    );

    let read = gh.read(&["acme/widget"], &[]).await;
    assert_no_errors(&read);
    assert_eq!(gh.fake.requests_count(SECRETS), 2);
    let gap = second_request_gap(&gh.fake, SECRETS);
    assert!(gap >= Duration::from_secs(1), "asked again after {gap:?}");
    assert_eq!(units(&read)[0].1, names(&["NPM_TOKEN"]));
}

/// How long after the first request to `prefix` the second one came (the fake's arrival times).
fn second_request_gap(fake: &FakeCi, prefix: &str) -> Duration {
    let at: Vec<_> = fake.requests_to(prefix).iter().map(|r| r.at).collect();
    at[1].duration_since(at[0])
}

#[tokio::test]
async fn a_reset_beyond_max_wait_fails_at_once() {
    let gh = Github::start().await;
    gh.fake
        .add_github_repo_secret("acme/widget", "NPM_TOKEN", T, T);
    let reset_in = Duration::from_secs(30);
    gh.fake.push_fault(
        SECRETS,
        Fault::GithubRateLimit {
            reset_in,
            status: 403,
        },
    );
    let limits = Limits {
        max_wait: Duration::from_secs(1),
        ..fast()
    };

    let read = gh.read_with(&["acme/widget"], &[], limits).await;
    assert_eq!(
        errors(&read),
        [("github:acme/widget:actions", "rate_limited")]
    );
    let message = read.errors[0].error.to_string();
    assert!(
        message.starts_with(
            "repo_secrets: rate limited (403) after 1 attempt(s); the limit resets in "
        ),
        "{message}"
    );
    assert_eq!(gh.fake.requests_count(SECRETS), 1);
    let rest = [
        "github:acme/widget:org-visible",
        "github:acme/widget:dependabot",
    ];
    assert_eq!(unit_keys(&read), rest);
}

#[tokio::test]
async fn a_secondary_rate_limit_is_waited_out() {
    let gh = Github::start().await;
    gh.fake
        .add_github_repo_secret("acme/widget", "NPM_TOKEN", T, T);
    gh.fake.push_fault(
        SECRETS,
        Fault::RetryAfter {
            status: 403,
            secs: 1,
        },
    );

    let read = gh.read(&["acme/widget"], &[]).await;
    assert_no_errors(&read);
    assert_eq!(gh.fake.requests_count(SECRETS), 2);
    let gap = second_request_gap(&gh.fake, SECRETS);
    assert!(gap >= Duration::from_secs(1), "asked again after {gap:?}");
    assert_eq!(units(&read)[0].1, names(&["NPM_TOKEN"]));
}

#[tokio::test]
async fn a_bad_gateway_is_retried() {
    let gh = Github::start().await;
    gh.fake
        .add_github_repo_secret("acme/widget", "NPM_TOKEN", T, T);
    gh.fake.push_fault(SECRETS, Fault::Status(502));

    let read = gh.read(&["acme/widget"], &[]).await;
    assert_no_errors(&read);
    assert_eq!(units(&read)[0].1, names(&["NPM_TOKEN"]));
    assert_eq!(gh.fake.requests_count(SECRETS), 2);
    let outcomes: Vec<String> = gh
        .recorder
        .seen()
        .into_iter()
        .filter(|(_, endpoint, _)| endpoint == "repo_secrets")
        .map(|(_, _, outcome)| outcome)
        .collect();
    assert_eq!(outcomes, ["502", "200"]);
}

// ---------------------------------------------------------------------------------------------------
// Requests, metrics, token hygiene

#[tokio::test]
async fn requests_carry_githubs_headers_and_are_observed() {
    let gh = Github::start().await;
    gh.fake.add_github_environment("acme/widget", "production");
    gh.fake.add_github_org("acme");

    let read = gh.read(&["acme/widget"], &["acme"]).await;
    assert_no_errors(&read);
    let requests = gh.fake.requests();
    assert_eq!(requests.len(), 7);
    let bearer = format!("Bearer {GITHUB_TOKEN}");
    for r in &requests {
        assert_eq!(r.method, "GET");
        assert_eq!(r.header("authorization"), Some(bearer.as_str()), "{r:?}");
        assert_eq!(r.header("accept"), Some("application/vnd.github+json"));
        assert_eq!(r.header("x-github-api-version"), Some("2022-11-28"));
    }
    let seen = gh.recorder.seen();
    let expected: Vec<(String, String, String)> = [
        "repo_secrets",
        "repo_org_secrets",
        "environments",
        "environment_secrets",
        "repo_dependabot_secrets",
        "org_secrets",
        "org_dependabot_secrets",
    ]
    .iter()
    .map(|e| ("github".into(), e.to_string(), "200".into()))
    .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn the_token_is_never_shown() {
    let gh = Github::start().await;
    gh.fake.add_github_repo("acme/widget", false);
    gh.fake.deny_github("/repos/acme/widget/dependabot", 403);
    gh.fake.push_fault(SECRETS, Fault::Garbage);
    gh.fake.push_faults(
        "/github/repos/acme/widget/environments",
        Fault::Status(500),
        3,
    );
    let limits = Limits {
        max_wait: Duration::from_secs(1),
        ..fast()
    };
    let reset_in = Duration::from_secs(60);
    let rate_limit = Fault::GithubRateLimit {
        reset_in,
        status: 429,
    };
    gh.fake.push_fault("/github/orgs/acme/actions", rate_limit);

    // `read_with` checks the Api's Debug, the read's Debug and every error's Display and Debug.
    let read = gh.read_with(&["acme/widget"], &["acme"], limits).await;
    assert_eq!(
        errors(&read),
        [
            ("github:acme/widget:actions", "malformed"),
            ("github:acme/widget:env", "server_error"),
            ("github:acme/widget:dependabot", "forbidden"),
            ("github:org:acme:actions", "rate_limited"),
            ("github:org:acme:dependabot", "not_found"),
        ]
    );
}
