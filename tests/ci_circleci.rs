//! The CircleCI reader (`[[ci.circleci]]`) against the in-process fake (`testkit::fake_ci`): contexts and
//! project variables, `next_page_token` pagination and its guards, rate limits, scoped failures, and
//! that no part of a project variable's value is kept.

mod ci_support;
use testkit::fake_ci;

use std::sync::Arc;
use std::time::Duration;

use ci_support::Recorder;
use fake_ci::{token_file, FakeCi, Fault, CIRCLECI_TOKEN, DEFAULT_TIME as T};
use npm_watchdog::ci::circleci::CircleciConfig;
use npm_watchdog::ci::Limits;
use npm_watchdog::ci::{Api, CiProviderConfig, CiSecret, SourceRead};
use tempfile::NamedTempFile;

/// An entry against the fake, its token file (kept alive by the caller) and its observer.
struct Entry {
    cfg: CircleciConfig,
    _token: NamedTempFile,
    recorder: Recorder,
    limits: Limits,
}

impl Entry {
    fn new(fake: &FakeCi, org: Option<&str>, projects: &[&str]) -> Entry {
        let token = token_file(CIRCLECI_TOKEN);
        let cfg = CircleciConfig {
            token_file: token.path().to_path_buf(),
            api_url: fake.circleci_url().parse().expect("api url"),
            org_slug: org.map(str::to_string),
            projects: projects.iter().map(|p| p.to_string()).collect(),
        };
        cfg.validate().expect("valid entry");
        Entry {
            cfg,
            _token: token,
            recorder: Recorder::default(),
            limits: Limits {
                retries: 2,
                max_wait: Duration::from_secs(5),
                ..Limits::default()
            },
        }
    }

    async fn read(&self) -> SourceRead {
        let api = Api::new(
            "circleci",
            &self.cfg,
            reqwest::Client::new(),
            self.limits,
            Arc::new(self.recorder.clone()),
        )
        .expect("api");
        self.cfg.read(&api).await
    }
}

fn units(read: &SourceRead) -> Vec<&str> {
    read.units.iter().map(|u| u.unit.as_str()).collect()
}

fn names(read: &SourceRead, unit: &str) -> Vec<String> {
    let u = read.units.iter().find(|u| u.unit == unit);
    let u = u.unwrap_or_else(|| panic!("no unit {unit} in {read:?}"));
    u.secrets.iter().map(|s| s.name.clone()).collect()
}

/// `(scope, what, label)` of each failure.
fn errors(read: &SourceRead) -> Vec<(String, String, &'static str)> {
    let e = read.errors.iter();
    e.map(|e| (e.scope.clone(), e.what.clone(), e.error.label()))
        .collect()
}

fn date(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    Some(s.parse().expect("date"))
}

/// `gh/acme` with contexts `release` (two variables) and `deploy` (one), and project
/// `gh/acme/widget` with two variables.
async fn acme() -> FakeCi {
    let fake = FakeCi::start().await;
    let release = fake.add_circleci_context("gh/acme", "release", T);
    fake.add_circleci_context_var(&release, "NPM_TOKEN", T, "2025-03-04T05:06:07Z");
    fake.add_circleci_context_var(&release, "GH_TOKEN", "2024-02-02T00:00:00Z", T);
    let deploy = fake.add_circleci_context("gh/acme", "deploy", T);
    fake.add_circleci_context_var(&deploy, "AWS_KEY", T, T);
    fake.add_circleci_project_var("gh/acme/widget", "NPM_TOKEN", "planted-CC-7Kq2", T);
    fake.add_circleci_project_var("gh/acme/widget", "SLACK_HOOK", "planted-CC-9Wx4", T);
    fake
}

#[tokio::test]
async fn contexts_and_project_variables_are_read_with_their_places() {
    let fake = acme().await;
    fake.add_circleci_project("gh/acme/empty");
    let entry = Entry::new(&fake, Some("gh/acme"), &["gh/acme/widget", "gh/acme/empty"]);
    let read = entry.read().await;

    assert_eq!(errors(&read), []);
    assert_eq!(
        units(&read),
        [
            "circleci:context:gh/acme:release",
            "circleci:context:gh/acme:deploy",
            "circleci:project:gh/acme/widget",
            "circleci:project:gh/acme/empty",
        ]
    );
    assert_eq!(
        read.units[0].secrets,
        [
            CiSecret {
                provider: "circleci".into(),
                place: "circleci:context:gh/acme:release".into(),
                place_desc: "CircleCI context release of gh/acme".into(),
                name: "NPM_TOKEN".into(),
                environment_scope: None,
                updated_at: date("2025-03-04T05:06:07Z"),
                value_is_npm_token: false,
            },
            CiSecret {
                provider: "circleci".into(),
                place: "circleci:context:gh/acme:release".into(),
                place_desc: "CircleCI context release of gh/acme".into(),
                name: "GH_TOKEN".into(),
                environment_scope: None,
                updated_at: date(T),
                value_is_npm_token: false,
            },
        ]
    );
    assert_eq!(names(&read, "circleci:context:gh/acme:deploy"), ["AWS_KEY"]);
    let widget = &read.units[2].secrets;
    assert_eq!(
        widget.iter().map(|s| s.key()).collect::<Vec<_>>(),
        [
            "circleci:project:gh/acme/widget#NPM_TOKEN",
            "circleci:project:gh/acme/widget#SLACK_HOOK"
        ]
    );
    assert!(widget.iter().all(|s| s.provider == "circleci"
        && s.place_desc == "CircleCI environment variables of project gh/acme/widget"
        && !s.value_is_npm_token
        && s.environment_scope.is_none()));
    assert!(read.units[3].secrets.is_empty());

    // The owner slug is query-escaped; the project slug goes with its slashes.
    let paths: Vec<String> = fake
        .requests()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(paths[0], "/circleci/api/v2/context?owner-slug=gh%2Facme");
    assert!(paths.contains(&"/circleci/api/v2/project/gh/acme/widget/envvar".to_string()));
    assert_eq!(paths.len(), 5, "{paths:?}");
    for r in fake.requests() {
        assert_eq!(
            r.header("circle-token"),
            Some(CIRCLECI_TOKEN),
            "{}",
            r.path_and_query
        );
        assert_eq!(r.header("authorization"), None);
    }
    let endpoints: Vec<(String, String, String)> = entry.recorder.seen();
    let e = |endpoint: &str| {
        (
            "circleci".to_string(),
            endpoint.to_string(),
            "200".to_string(),
        )
    };
    assert_eq!(
        endpoints,
        [
            e("contexts"),
            e("context_variables"),
            e("context_variables"),
            e("project_variables"),
            e("project_variables")
        ]
    );
}

#[tokio::test]
async fn every_page_is_followed() {
    let fake = FakeCi::start().await;
    fake.set_circleci_page_size(2);
    let mut contexts = Vec::new();
    for c in 0..3 {
        let id = fake.add_circleci_context("gh/acme", &format!("ctx{c}"), T);
        for v in 0..5 {
            fake.add_circleci_context_var(&id, &format!("C{c}_V{v}"), T, T);
        }
        contexts.push(id);
    }
    for v in 0..5 {
        fake.add_circleci_project_var("gh/acme/widget", &format!("P{v}"), "x-value-1", T);
    }
    let entry = Entry::new(&fake, Some("gh/acme"), &["gh/acme/widget"]);
    let read = entry.read().await;

    assert_eq!(errors(&read), []);
    assert_eq!(
        units(&read),
        [
            "circleci:context:gh/acme:ctx0",
            "circleci:context:gh/acme:ctx1",
            "circleci:context:gh/acme:ctx2",
            "circleci:project:gh/acme/widget",
        ]
    );
    for c in 0..3 {
        let want: Vec<String> = (0..5).map(|v| format!("C{c}_V{v}")).collect();
        assert_eq!(
            names(&read, &format!("circleci:context:gh/acme:ctx{c}")),
            want
        );
    }
    let want: Vec<String> = (0..5).map(|v| format!("P{v}")).collect();
    assert_eq!(names(&read, "circleci:project:gh/acme/widget"), want);
    // 2 pages of contexts, 3 of each context's variables, 3 of the project's.
    assert_eq!(fake.requests_count("/circleci/api/v2/context?"), 2);
    assert_eq!(
        fake.requests_count(&format!("/circleci/api/v2/context/{}", contexts[0])),
        3
    );
    assert_eq!(fake.requests_count("/circleci/api/v2/project/"), 3);
    let paged = fake.requests_to("/circleci/api/v2/project/");
    assert!(
        paged[1].path_and_query.contains("/envvar?page-token="),
        "{}",
        paged[1].path_and_query
    );
}

#[tokio::test]
async fn a_repeated_page_token_fails_the_list_after_two_requests() {
    let fake = acme().await;
    fake.set_circleci_repeat_page_token(true);
    let entry = Entry::new(&fake, Some("gh/acme"), &["gh/acme/widget"]);
    let read = entry.read().await;

    assert_eq!(units(&read), Vec::<&str>::new());
    assert_eq!(
        errors(&read),
        [
            (
                "circleci:context:gh/acme".to_string(),
                "CircleCI contexts of gh/acme".to_string(),
                "pagination"
            ),
            (
                "circleci:project:gh/acme/widget".to_string(),
                "CircleCI environment variables of project gh/acme/widget".to_string(),
                "pagination"
            ),
        ]
    );
    let message = read.errors[0].error.to_string();
    assert!(
        message.starts_with("contexts: ") && message.contains("repeated"),
        "{message}"
    );
    // The first answer's token is followed once; its repetition stops the list.
    assert_eq!(fake.requests_count("/circleci/api/v2/context?"), 2);
    assert_eq!(fake.requests_count("/circleci/api/v2/project/"), 2);
    assert_eq!(fake.requests().len(), 4);
}

#[tokio::test]
async fn a_single_repeated_token_is_caught_too() {
    let fake = acme().await;
    fake.set_circleci_page_size(1);
    // The second page of the project's list repeats its own token.
    fake.push_fault(
        "/circleci/api/v2/project/gh/acme/widget/envvar?page-token=",
        Fault::RepeatPageToken,
    );
    let entry = Entry::new(&fake, None, &["gh/acme/widget"]);
    let read = entry.read().await;
    assert_eq!(
        errors(&read),
        [(
            "circleci:project:gh/acme/widget".to_string(),
            "CircleCI environment variables of project gh/acme/widget".to_string(),
            "pagination"
        )]
    );
    // Page one (no token) names T1; the answer to T1 names T1 again: stop there.
    assert_eq!(fake.requests_count("/circleci/api/v2/project/"), 2);
}

#[tokio::test]
async fn more_pages_than_allowed_is_an_error_not_a_short_list() {
    let fake = acme().await;
    fake.set_circleci_page_size(1);
    let mut entry = Entry::new(&fake, None, &["gh/acme/widget"]);
    entry.limits.max_pages = 1;
    let read = entry.read().await;
    assert_eq!(units(&read), Vec::<&str>::new());
    assert_eq!(read.errors.len(), 1);
    assert_eq!(read.errors[0].error.label(), "pagination");
    assert_eq!(
        read.errors[0].error.to_string(),
        "project_variables: more than 1 pages"
    );
    assert_eq!(fake.requests_count("/circleci/api/v2/project/"), 1);

    // Two pages fit in two.
    entry.limits.max_pages = 2;
    let read = entry.read().await;
    assert_eq!(errors(&read), []);
    assert_eq!(
        names(&read, "circleci:project:gh/acme/widget"),
        ["NPM_TOKEN", "SLACK_HOOK"]
    );
}

#[tokio::test]
async fn a_rate_limit_with_retry_after_is_waited_out() {
    let fake = acme().await;
    fake.push_fault(
        "/circleci/api/v2/context?",
        Fault::RetryAfter {
            status: 429,
            secs: 1,
        },
    );
    let entry = Entry::new(&fake, Some("gh/acme"), &[]);
    let read = entry.read().await;

    assert_eq!(errors(&read), []);
    assert_eq!(
        names(&read, "circleci:context:gh/acme:release"),
        ["NPM_TOKEN", "GH_TOKEN"]
    );
    let tries = fake.requests_to("/circleci/api/v2/context?");
    assert_eq!(tries.len(), 2);
    let waited = tries[1].at.duration_since(tries[0].at);
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    let outcomes: Vec<String> = entry
        .recorder
        .seen()
        .into_iter()
        .map(|(_, e, o)| format!("{e} {o}"))
        .collect();
    assert_eq!(outcomes[..2], ["contexts 429", "contexts 200"]);
}

#[tokio::test]
async fn contexts_that_cannot_be_listed_fail_only_their_scope() {
    let fake = acme().await;
    fake.deny_circleci("/context?owner-slug=gh/acme", 404);
    let entry = Entry::new(&fake, Some("gh/acme"), &["gh/acme/widget"]);
    let read = entry.read().await;

    assert_eq!(
        errors(&read),
        [(
            "circleci:context:gh/acme".to_string(),
            "CircleCI contexts of gh/acme".to_string(),
            "not_found"
        )]
    );
    assert_eq!(units(&read), ["circleci:project:gh/acme/widget"]);
    assert_eq!(
        names(&read, "circleci:project:gh/acme/widget"),
        ["NPM_TOKEN", "SLACK_HOOK"]
    );
    assert_eq!(fake.requests_count("/circleci/api/v2/context"), 1);
}

#[tokio::test]
async fn one_context_or_project_failing_fails_only_that_unit() {
    let fake = acme().await;
    let ids: Vec<String> =
        fake.with_state(|s| s.circleci.contexts.iter().map(|c| c.id.clone()).collect());
    fake.deny_circleci(&format!("/context/{}", ids[0]), 403);
    let entry = Entry::new(
        &fake,
        Some("gh/acme"),
        &["gh/acme/missing", "gh/acme/widget"],
    );
    let read = entry.read().await;

    assert_eq!(
        errors(&read),
        [
            (
                "circleci:context:gh/acme:release".to_string(),
                "CircleCI context release of gh/acme".to_string(),
                "forbidden"
            ),
            (
                "circleci:project:gh/acme/missing".to_string(),
                "CircleCI environment variables of project gh/acme/missing".to_string(),
                "not_found"
            ),
        ]
    );
    assert_eq!(
        units(&read),
        [
            "circleci:context:gh/acme:deploy",
            "circleci:project:gh/acme/widget"
        ]
    );
}

#[tokio::test]
async fn a_refused_token_is_unauthorized_everywhere() {
    let fake = acme().await;
    fake.set_circleci_token("some-other-token");
    let entry = Entry::new(&fake, Some("gh/acme"), &["gh/acme/widget"]);
    let read = entry.read().await;
    assert!(read.units.is_empty());
    let labels: Vec<&str> = read.errors.iter().map(|e| e.error.label()).collect();
    assert_eq!(labels, ["unauthorized", "unauthorized"]);
    for e in &read.errors {
        testkit::secrets::assert_absent(
            &[CIRCLECI_TOKEN],
            [
                ("the error", e.error.to_string()),
                ("the error's Debug", format!("{:?}", e.error)),
            ],
        );
    }
    // 401 is not retried.
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn no_part_of_a_project_value_is_kept() {
    let fake = FakeCi::start().await;
    let value = "planted-circle-value-Zr8M";
    fake.add_circleci_project_var("gh/acme/widget", "NPM_TOKEN", value, T);
    let masked = fake.with_state(|s| s.circleci.projects["gh/acme/widget"][0].masked());
    assert_eq!(masked, "xxxxZr8M");
    let entry = Entry::new(&fake, None, &["gh/acme/widget"]);
    let read = entry.read().await;

    assert_eq!(
        names(&read, "circleci:project:gh/acme/widget"),
        ["NPM_TOKEN"]
    );
    testkit::secrets::assert_absent(
        &[value, masked.as_str(), "Zr8M", CIRCLECI_TOKEN],
        [("the read's Debug", format!("{read:?}"))],
    );
    let stored = serde_json::to_string(&read.units[0].secrets).expect("json");
    testkit::secrets::assert_absent(&["Zr8M"], [("the unit's secrets as JSON", stored)]);
}
