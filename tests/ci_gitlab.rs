//! The GitLab reader (`[[ci.gitlab]]`) against the in-process fake (`testkit::fake_ci`): projects by path
//! and id, groups, `Link` pagination, environment scopes, the npm-token verdict on values, scoped
//! failures, rate limits, and above all that no value read ever shows up in what the read gives.

mod ci_support;
use testkit::fake_ci;

use std::sync::Arc;
use std::time::Duration;

use ci_support::Recorder;
use fake_ci::{token_file, FakeCi, Fault, GitlabVar, GITLAB_TOKEN};
use npm_watchdog::ci::gitlab::GitlabConfig;
use npm_watchdog::ci::Limits;
use npm_watchdog::ci::{Api, CiProviderConfig, CiSecret, SourceRead};
use tempfile::NamedTempFile;

struct Entry {
    cfg: GitlabConfig,
    _token: NamedTempFile,
    recorder: Recorder,
}

impl Entry {
    fn new(fake: &FakeCi, projects: &[&str], groups: &[&str]) -> Entry {
        let token = token_file(GITLAB_TOKEN);
        let cfg = GitlabConfig {
            token_file: token.path().to_path_buf(),
            api_url: fake.gitlab_url().parse().expect("api url"),
            projects: projects.iter().map(|p| p.to_string()).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        cfg.validate().expect("valid entry");
        Entry {
            cfg,
            _token: token,
            recorder: Recorder::default(),
        }
    }

    async fn read(&self) -> SourceRead {
        let limits = Limits {
            retries: 2,
            max_wait: Duration::from_secs(5),
            ..Limits::default()
        };
        let api = Api::new(
            "gitlab",
            &self.cfg,
            reqwest::Client::new(),
            limits,
            Arc::new(self.recorder.clone()),
        )
        .expect("api");
        self.cfg.read(&api).await
    }
}

fn units(read: &SourceRead) -> Vec<&str> {
    read.units.iter().map(|u| u.unit.as_str()).collect()
}

fn secrets<'a>(read: &'a SourceRead, unit: &str) -> &'a [CiSecret] {
    let u = read.units.iter().find(|u| u.unit == unit);
    &u.unwrap_or_else(|| panic!("no unit {unit} in {read:?}"))
        .secrets
}

fn keys(read: &SourceRead, unit: &str) -> Vec<String> {
    secrets(read, unit).iter().map(CiSecret::key).collect()
}

/// `(scope, what, label)` of each failure.
fn errors(read: &SourceRead) -> Vec<(String, String, &'static str)> {
    let e = read.errors.iter();
    e.map(|e| (e.scope.clone(), e.what.clone(), e.error.label()))
        .collect()
}

/// An npm access token's shape (`npm_` and 36 base62 characters), different for each `tag`.
fn npm_token(tag: char) -> String {
    format!("npm_{}{}", tag.to_string().repeat(4), "Q1w2E3r4".repeat(4))
}

/// Every way a read is shown or kept: its `Debug`, each error's `Display` and `Debug`, and the units
/// as the daemon stores them. None may hold any of `values`.
fn assert_no_values(read: &SourceRead, values: &[String]) {
    let mut shown = vec![format!("{read:?}")];
    for e in &read.errors {
        shown.push(e.error.to_string());
        shown.push(format!("{:?}", e.error));
        shown.push(e.what.clone());
    }
    for u in &read.units {
        shown.push(format!("{u:?}"));
        shown.push(serde_json::to_string(&u.secrets).expect("json"));
    }
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    testkit::secrets::assert_absent(&values, shown.iter().map(|t| ("a shown read", t)));
}

/// Values planted in `seed`, each distinct so a leak names itself.
fn planted() -> Vec<String> {
    vec![
        npm_token('A'),
        format!("//registry.npmjs.org/:_authToken={}", npm_token('B')),
        "planted-plain-value-GL-C".to_string(),
        "planted-masked-value-GL-D".to_string(),
        "planted-hidden-value-GL-E".to_string(),
        npm_token('F'),
        "planted-group-value-GL-G".to_string(),
        "@acme:registry=https://npm.pkg.github.com\n//npm.pkg.github.com/:_authToken = x-GL-H"
            .to_string(),
    ]
}

/// Projects `acme/widget` and `acme/sub/widget`, group `acme`, with the planted values.
async fn seed() -> (FakeCi, Vec<String>) {
    let fake = FakeCi::start().await;
    let v = planted();
    fake.add_gitlab_project_var("acme/widget", GitlabVar::new("NPM_TOKEN", &v[0]).masked());
    fake.add_gitlab_project_var(
        "acme/widget",
        GitlabVar::new("NPMRC", &v[1]).file().scope("production"),
    );
    fake.add_gitlab_project_var("acme/widget", GitlabVar::new("PLAIN", &v[2]));
    fake.add_gitlab_project_var(
        "acme/sub/widget",
        GitlabVar::new("MASKED", &v[3]).masked().protected(),
    );
    fake.add_gitlab_project_var("acme/sub/widget", GitlabVar::new("HIDDEN", &v[4]).hidden());
    fake.add_gitlab_group_var(
        "acme",
        GitlabVar::new("NPM_TOKEN", &v[5]).scope("production"),
    );
    fake.add_gitlab_group_var("acme", GitlabVar::new("NPM_TOKEN", &v[6]).scope("*"));
    fake.add_gitlab_group_var("acme", GitlabVar::new("NPMRC", &v[7]).raw());
    (fake, v)
}

#[tokio::test]
async fn projects_by_path_and_id_and_groups_are_read_with_their_places() {
    let (fake, values) = seed().await;
    fake.add_gitlab_project_var("acme/gadget", GitlabVar::new("BY_ID", "planted-by-id-GL-I"));
    let id = fake
        .gitlab_project_id("acme/gadget")
        .expect("id")
        .to_string();
    let entry = Entry::new(&fake, &["acme/widget", "acme/sub/widget", &id], &["acme"]);
    let read = entry.read().await;

    assert_eq!(errors(&read), []);
    let by_id = format!("gitlab:project:{id}");
    assert_eq!(
        units(&read),
        [
            "gitlab:project:acme/widget",
            "gitlab:project:acme/sub/widget",
            by_id.as_str(),
            "gitlab:group:acme",
        ]
    );
    assert_eq!(
        secrets(&read, "gitlab:project:acme/widget")[0],
        CiSecret {
            provider: "gitlab".into(),
            place: "gitlab:project:acme/widget".into(),
            place_desc: "GitLab CI/CD variables of project acme/widget".into(),
            name: "NPM_TOKEN".into(),
            environment_scope: None,
            updated_at: None,
            value_is_npm_token: true,
        }
    );
    assert_eq!(
        keys(&read, "gitlab:project:acme/sub/widget"),
        [
            "gitlab:project:acme/sub/widget#MASKED",
            "gitlab:project:acme/sub/widget#HIDDEN"
        ]
    );
    assert_eq!(keys(&read, &by_id), [format!("{by_id}#BY_ID")]);
    let group = secrets(&read, "gitlab:group:acme");
    assert!(group
        .iter()
        .all(|s| s.place_desc == "GitLab CI/CD variables of group acme"
            && s.place == "gitlab:group:acme"
            && s.provider == "gitlab"
            && s.updated_at.is_none()));
    let by_id_desc = &secrets(&read, &by_id)[0].place_desc;
    assert_eq!(
        by_id_desc,
        &format!("GitLab CI/CD variables of project {id}")
    );

    let paths: Vec<String> = fake
        .requests()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(
        paths,
        [
            "/gitlab/api/v4/projects/acme%2Fwidget/variables?per_page=100".to_string(),
            "/gitlab/api/v4/projects/acme%2Fsub%2Fwidget/variables?per_page=100".to_string(),
            format!("/gitlab/api/v4/projects/{id}/variables?per_page=100"),
            "/gitlab/api/v4/groups/acme/variables?per_page=100".to_string(),
        ]
    );
    for r in fake.requests() {
        assert_eq!(
            r.header("private-token"),
            Some(GITLAB_TOKEN),
            "{}",
            r.path_and_query
        );
        assert_eq!(r.header("authorization"), None);
    }
    let endpoints: Vec<String> = entry
        .recorder
        .seen()
        .into_iter()
        .map(|(p, e, o)| format!("{p} {e} {o}"))
        .collect();
    assert_eq!(
        endpoints,
        [
            "gitlab project_variables 200",
            "gitlab project_variables 200",
            "gitlab project_variables 200",
            "gitlab group_variables 200"
        ]
    );
    assert_no_values(&read, &values);
}

#[tokio::test]
async fn environment_scopes_tell_variables_of_one_key_apart() {
    let (fake, values) = seed().await;
    let entry = Entry::new(&fake, &["acme/widget"], &["acme"]);
    let read = entry.read().await;

    let scopes = |unit: &str| -> Vec<(String, Option<String>)> {
        secrets(&read, unit)
            .iter()
            .map(|s| (s.name.clone(), s.environment_scope.clone()))
            .collect()
    };
    assert_eq!(
        scopes("gitlab:project:acme/widget"),
        [
            ("NPM_TOKEN".to_string(), None),
            ("NPMRC".to_string(), Some("production".to_string())),
            ("PLAIN".to_string(), None),
        ]
    );
    assert_eq!(
        keys(&read, "gitlab:group:acme"),
        [
            "gitlab:group:acme#NPM_TOKEN@production",
            "gitlab:group:acme#NPM_TOKEN",
            "gitlab:group:acme#NPMRC",
        ]
    );
    assert_no_values(&read, &values);
}

#[tokio::test]
async fn npm_tokens_and_auth_token_lines_are_flagged_and_nothing_else() {
    let (fake, values) = seed().await;
    let entry = Entry::new(&fake, &["acme/widget", "acme/sub/widget"], &["acme"]);
    let read = entry.read().await;

    let flags: Vec<(String, bool)> = read
        .units
        .iter()
        .flat_map(|u| u.secrets.iter())
        .map(|s| (s.key(), s.value_is_npm_token))
        .collect();
    let want = [
        ("gitlab:project:acme/widget#NPM_TOKEN", true),
        ("gitlab:project:acme/widget#NPMRC@production", true),
        ("gitlab:project:acme/widget#PLAIN", false),
        ("gitlab:project:acme/sub/widget#MASKED", false),
        // Hidden: GitLab sends `null`, which says nothing.
        ("gitlab:project:acme/sub/widget#HIDDEN", false),
        ("gitlab:group:acme#NPM_TOKEN@production", true),
        ("gitlab:group:acme#NPM_TOKEN", false),
        ("gitlab:group:acme#NPMRC", true),
    ];
    let want: Vec<(String, bool)> = want.iter().map(|(k, f)| (k.to_string(), *f)).collect();
    assert_eq!(flags, want);
    assert_no_values(&read, &values);
}

#[tokio::test]
async fn every_linked_page_is_followed() {
    let fake = FakeCi::start().await;
    fake.set_gitlab_max_per_page(2);
    let mut values = Vec::new();
    for i in 0..5 {
        let value = format!("paged-value-{i}-GL");
        fake.add_gitlab_project_var("acme/sub/widget", GitlabVar::new(&format!("V{i}"), &value));
        values.push(value);
    }
    fake.add_gitlab_group_var("acme", GitlabVar::new("ONLY", "paged-value-group-GL"));
    values.push("paged-value-group-GL".into());
    let entry = Entry::new(&fake, &["acme/sub/widget"], &["acme"]);
    let read = entry.read().await;

    assert_eq!(errors(&read), []);
    let names: Vec<String> = secrets(&read, "gitlab:project:acme/sub/widget")
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(names, ["V0", "V1", "V2", "V3", "V4"]);
    assert_eq!(keys(&read, "gitlab:group:acme"), ["gitlab:group:acme#ONLY"]);
    let paths: Vec<String> = fake
        .requests_to("/gitlab/api/v4/projects/")
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(paths[2].ends_with("page=3"), "{paths:?}");
    assert_no_values(&read, &values);
}

#[tokio::test]
async fn a_forbidden_project_fails_only_its_scope() {
    let (fake, values) = seed().await;
    fake.deny_gitlab("acme/sub/widget", 403);
    let entry = Entry::new(&fake, &["acme/widget", "acme/sub/widget"], &["acme"]);
    let read = entry.read().await;

    assert_eq!(
        errors(&read),
        [(
            "gitlab:project:acme/sub/widget".to_string(),
            "GitLab CI/CD variables of project acme/sub/widget".to_string(),
            "forbidden"
        )]
    );
    assert_eq!(
        units(&read),
        ["gitlab:project:acme/widget", "gitlab:group:acme"]
    );
    let message = read.errors[0].error.to_string();
    assert!(
        message.starts_with("project_variables: 403 forbidden"),
        "{message}"
    );
    assert_no_values(&read, &values);
}

#[tokio::test]
async fn an_unknown_group_is_not_found() {
    let (fake, values) = seed().await;
    let entry = Entry::new(&fake, &["acme/widget"], &["nobody"]);
    let read = entry.read().await;
    assert_eq!(
        errors(&read),
        [(
            "gitlab:group:nobody".to_string(),
            "GitLab CI/CD variables of group nobody".to_string(),
            "not_found"
        )]
    );
    assert_eq!(units(&read), ["gitlab:project:acme/widget"]);
    assert_no_values(&read, &values);
}

#[tokio::test]
async fn a_refused_token_is_unauthorized_everywhere() {
    let (fake, values) = seed().await;
    fake.set_gitlab_token("some-other-token");
    let entry = Entry::new(&fake, &["acme/widget"], &["acme"]);
    let read = entry.read().await;
    assert!(read.units.is_empty());
    let labels: Vec<&str> = read.errors.iter().map(|e| e.error.label()).collect();
    assert_eq!(labels, ["unauthorized", "unauthorized"]);
    let mut secrets = values.clone();
    secrets.push(GITLAB_TOKEN.to_string());
    assert_no_values(&read, &secrets);
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn a_garbled_page_is_malformed_and_quotes_no_value() {
    let (fake, values) = seed().await;
    fake.set_gitlab_max_per_page(1);
    // Page one (holding a value) parses; page two is cut off mid-object.
    fake.push_fault(
        "/gitlab/api/v4/projects/acme%2Fwidget/variables?per_page=1&page=2",
        Fault::Garbage,
    );
    let entry = Entry::new(&fake, &["acme/widget"], &["acme"]);
    let read = entry.read().await;

    assert_eq!(
        errors(&read),
        [(
            "gitlab:project:acme/widget".to_string(),
            "GitLab CI/CD variables of project acme/widget".to_string(),
            "malformed"
        )]
    );
    assert_eq!(fake.pending_faults(), 0, "the fault was not reached");
    let message = read.errors[0].error.to_string();
    assert!(
        message.starts_with("project_variables: malformed answer: "),
        "{message}"
    );
    assert_eq!(units(&read), ["gitlab:group:acme"]);
    assert_no_values(&read, &values);
}

#[tokio::test]
async fn a_rate_limit_with_retry_after_is_waited_out() {
    let (fake, values) = seed().await;
    fake.push_fault(
        "/gitlab/api/v4/groups/acme/",
        Fault::RetryAfter {
            status: 429,
            secs: 1,
        },
    );
    let entry = Entry::new(&fake, &[], &["acme"]);
    let read = entry.read().await;

    assert_eq!(errors(&read), []);
    assert_eq!(keys(&read, "gitlab:group:acme").len(), 3);
    let tries = fake.requests_to("/gitlab/api/v4/groups/acme/");
    assert_eq!(tries.len(), 2);
    let waited = tries[1].at.duration_since(tries[0].at);
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    let outcomes: Vec<String> = entry
        .recorder
        .seen()
        .into_iter()
        .map(|(_, e, o)| format!("{e} {o}"))
        .collect();
    assert_eq!(outcomes, ["group_variables 429", "group_variables 200"]);
    assert_no_values(&read, &values);
}
