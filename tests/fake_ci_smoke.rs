//! Smoke tests of the in-process fake CI providers (`testkit::fake_ci`): pagination, authentication,
//! CircleCI's value masking and the rate-limit faults, spoken to with plain reqwest.

use testkit::fake_ci;

use std::time::{Duration, UNIX_EPOCH};

use fake_ci::{FakeCi, Fault, GitlabVar, Visibility, DEFAULT_TIME as T};
use fake_ci::{CIRCLECI_TOKEN, GITHUB_TOKEN, GITLAB_TOKEN};
use reqwest::header::HeaderMap;
use serde_json::Value;

/// A value that must never appear in a CircleCI answer (only its last four characters).
const SECRET: &str = "not-a-real-secret-9Zq1";

type Headers<'a> = &'a [(&'a str, &'a str)];

/// GET `url` with these headers: status, headers, body text.
async fn fetch(url: &str, headers: Headers<'_>) -> (u16, HeaderMap, String) {
    let mut req = reqwest::Client::new().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let (status, h) = (resp.status().as_u16(), resp.headers().clone());
    (status, h, resp.text().await.expect("body"))
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).expect("JSON body")
}

async fn get_json(url: &str, headers: Headers<'_>) -> Value {
    json(&fetch(url, headers).await.2)
}

/// Status and the body's `message`.
async fn status_message(url: &str, headers: Headers<'_>) -> (u16, Value) {
    let (status, _, body) = fetch(url, headers).await;
    (status, json(&body)["message"].clone())
}

fn header(h: &HeaderMap, name: &str) -> String {
    let value = h.get(name).map(|v| v.to_str().unwrap());
    value.unwrap_or_default().to_string()
}

/// The values of the space-separated header `names`.
fn headers(h: &HeaderMap, names: &str) -> Vec<String> {
    names.split(' ').map(|n| header(h, n)).collect()
}

/// The `rel="next"` target of a `Link` header, if any.
fn next_link(h: &HeaderMap) -> Option<String> {
    header(h, "link").split(',').find_map(|part| {
        let (url, rel) = part.split_once(';')?;
        let url = url.trim().trim_start_matches('<').trim_end_matches('>');
        (rel.trim() == r#"rel="next""#).then(|| url.to_string())
    })
}

/// `key` of every item of an array (`<null>` for a null).
fn field(items: &Value, key: &str) -> Vec<String> {
    let name = |i: &Value| i[key].as_str().unwrap_or("<null>").to_string();
    items.as_array().expect("array").iter().map(name).collect()
}

/// Follows `Link: rel="next"` from `url`; returns the pages' bodies.
async fn walk_links(url: &str, auth: (&str, &str)) -> Vec<Value> {
    let (mut pages, mut next) = (Vec::new(), Some(url.to_string()));
    while let Some(url) = next {
        assert!(pages.len() < 20, "runaway pagination");
        let (status, h, body) = fetch(&url, &[auth]).await;
        assert_eq!(status, 200, "{url}");
        next = next_link(&h);
        pages.push(json(&body));
    }
    pages
}

/// The items of all pages, in order (`key` names the list in an object page; `None`: a bare array).
fn concat(pages: &[Value], key: Option<&str>) -> Value {
    let list = |p: &Value| key.map_or(p, |k| &p[k]).as_array().unwrap().clone();
    Value::Array(pages.iter().flat_map(list).collect())
}

/// Follows CircleCI's `next_page_token` from `base + path`; checks no body shows a real value.
async fn circle_list(base: &str, path: &str) -> Value {
    let (mut items, mut token) = (Vec::new(), None::<String>);
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &token {
            Some(t) => format!("{base}{path}{sep}page-token={t}"),
            None => format!("{base}{path}"),
        };
        let (status, _, body) = fetch(&url, &[("Circle-Token", CIRCLECI_TOKEN)]).await;
        assert_eq!(status, 200, "{url}");
        testkit::secrets::assert_absent(&[SECRET], [(&url, &body)]);
        let page = json(&body);
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return Value::Array(items),
        }
    }
}

fn retry_after(secs: u64) -> Fault {
    Fault::RetryAfter { status: 429, secs }
}

#[tokio::test]
async fn github_link_pagination_environments_and_org_visibility() {
    let ci = FakeCi::start().await;
    ci.add_github_repo("acme/widget", true);
    for i in 0..5 {
        ci.add_github_repo_secret("acme/widget", &format!("S{i}"), T, T);
    }
    ci.set_github_max_per_page(2);
    let (gh, bearer) = (ci.github_url(), format!("Bearer {GITHUB_TOKEN}"));
    let url = format!("{gh}/repos/acme/widget/actions/secrets");
    let pages = walk_links(&url, ("authorization", &bearer)).await;
    assert_eq!(pages.len(), 3);
    assert!(pages.iter().all(|p| p["total_count"] == 5));
    let names = field(&concat(&pages, Some("secrets")), "name");
    assert_eq!(names, ["S0", "S1", "S2", "S3", "S4"]);
    assert_eq!(ci.requests_count("/github/repos/acme/widget"), 3);
    let first = &ci.requests()[0];
    assert_eq!(first.header("Authorization"), Some(bearer.as_str()));
    ci.set_github_max_per_page(100);

    // An environment whose name needs escaping, read with the `token` scheme.
    ci.add_github_env_secret("acme/widget", "prod eu/1", "NPM_TOKEN", T, T);
    let token = format!("token {GITHUB_TOKEN}");
    let auth = [("authorization", token.as_str())];
    let envs = get_json(&format!("{gh}/repos/acme/widget/environments"), &auth).await;
    assert_eq!(field(&envs["environments"], "name"), ["prod eu/1"]);
    let url = format!("{gh}/repos/acme/widget/environments/prod%20eu%2F1/secrets");
    let env = get_json(&url, &auth).await;
    assert_eq!(field(&env["secrets"], "name"), ["NPM_TOKEN"]);

    // Org secrets: what the org lists, and what the private repo may see.
    ci.add_github_org_secret("acme", "ALL", Visibility::All, &[], T, T);
    ci.add_github_org_secret("acme", "PRIV", Visibility::Private, &[], T, T);
    ci.add_github_org_secret("acme", "SEL", Visibility::Selected, &["widget"], T, T);
    ci.add_github_org_secret("acme", "OTHER", Visibility::Selected, &["acme/x"], T, T);
    let org = get_json(&format!("{gh}/orgs/acme/actions/secrets"), &auth).await;
    assert_eq!(org["total_count"], 4);
    let visibility = field(&org["secrets"], "visibility");
    assert_eq!(visibility, ["all", "private", "selected", "selected"]);
    let sel = org["secrets"][2]["selected_repositories_url"].to_string();
    assert!(sel.ends_with("/github/orgs/acme/actions/secrets/SEL/repositories\""));
    let url = format!("{gh}/repos/acme/widget/actions/organization-secrets");
    let shared = get_json(&url, &auth).await;
    assert_eq!(field(&shared["secrets"], "name"), ["ALL", "PRIV", "SEL"]);
}

#[tokio::test]
async fn github_auth_denials_and_rate_limits() {
    let ci = FakeCi::start().await;
    ci.add_github_repo("acme/widget", false);
    ci.add_github_repo("acme/vault", true);
    ci.deny_github("/repos/acme/vault", 403);
    let url = |repo: &str| format!("{}/repos/acme/{repo}/actions/secrets", ci.github_url());
    let good = format!("Bearer {GITHUB_TOKEN}");
    let good = [("authorization", good.as_str())];

    let answer = status_message(&url("widget"), &[]).await;
    assert_eq!(answer, (401, "Bad credentials".into()));
    let wrong = [("authorization", "Bearer nope")];
    assert_eq!(fetch(&url("widget"), &wrong).await.0, 401);
    let answer = status_message(&url("missing"), &good).await;
    assert_eq!(answer, (404, "Not Found".into()));
    let answer = status_message(&url("vault"), &good).await;
    let forbidden = "Resource not accessible by personal access token";
    assert_eq!(answer, (403, forbidden.into()));

    // Primary limit, then a secondary one, then normal service; faults come before auth.
    let reset_in = Duration::from_secs(60);
    let status = 403;
    ci.push_fault("/github/repos", Fault::GithubRateLimit { reset_in, status });
    ci.push_fault("/github", retry_after(7));
    let (status, h, body) = fetch(&url("widget"), &[]).await;
    assert_eq!(status, 403);
    let names = "x-ratelimit-limit x-ratelimit-remaining x-ratelimit-used";
    assert_eq!(headers(&h, names), ["5000", "0", "5000"]);
    let reset: u64 = header(&h, "x-ratelimit-reset").parse().unwrap();
    let now = UNIX_EPOCH.elapsed().unwrap().as_secs();
    assert!((now + 55..=now + 65).contains(&reset), "{reset} vs {now}");
    assert!(body.contains("API rate limit exceeded"));
    let (status, h, body) = fetch(&url("widget"), &good).await;
    assert_eq!((status, header(&h, "retry-after").as_str()), (429, "7"));
    assert!(body.contains("secondary rate limit"));
    assert_eq!(fetch(&url("widget"), &good).await.0, 200);
    assert_eq!(ci.pending_faults(), 0);
}

#[tokio::test]
async fn circleci_tokens_masking_and_repeating_token() {
    let ci = FakeCi::start().await;
    for (name, value) in [("NPM_TOKEN", SECRET), ("A", "ab"), ("B", "bbbbbb")] {
        ci.add_circleci_project_var("gh/acme/widget", name, value, T);
    }
    let ctx = ci.add_circleci_context("gh/acme", "release", T);
    for v in ["V1", "V2", "V3"] {
        ci.add_circleci_context_var(&ctx, v, T, T);
    }
    ci.set_circleci_page_size(2);
    let base = ci.circleci_url();
    for slug in ["gh/acme/widget", "gh%2Facme%2Fwidget", "github/acme/widget"] {
        let vars = circle_list(&base, &format!("/project/{slug}/envvar")).await;
        assert_eq!(field(&vars, "name"), ["NPM_TOKEN", "A", "B"]);
        assert_eq!(field(&vars, "value"), ["xxxx9Zq1", "xxxxab", "xxxxbbbb"]);
    }
    let contexts = circle_list(&base, "/context?owner-slug=gh/acme").await;
    assert_eq!(field(&contexts, "id"), [ctx.as_str()]);
    let owner = ci.add_circleci_owner("gh/acme");
    let contexts = circle_list(&base, &format!("/context?owner-id={owner}")).await;
    assert_eq!(field(&contexts, "name"), ["release"]);
    let vars = circle_list(&base, &format!("/context/{ctx}/environment-variable")).await;
    assert_eq!(field(&vars, "variable"), ["V1", "V2", "V3"]);
    assert_eq!(field(&vars, "context_id"), [ctx.as_str(); 3]);

    // Auth and unknown things.
    let url = format!("{base}/context/{ctx}/environment-variable");
    let auth = [("Circle-Token", CIRCLECI_TOKEN)];
    let answer = status_message(&url, &[]).await;
    assert_eq!(answer, (401, "You must log in first.".into()));
    let answer = status_message(&format!("{base}/project/gh/acme/nope/envvar"), &auth).await;
    assert_eq!(answer, (404, "Not found.".into()));

    // A repeating token: one queued fault, then the knob keeps it up.
    ci.push_fault("/circleci/api/v2/context/", Fault::RepeatPageToken);
    let first = get_json(&url, &auth).await["next_page_token"].clone();
    let again = format!("{url}?page-token={}", first.as_str().unwrap());
    let normal = get_json(&again, &auth).await["next_page_token"].clone();
    assert!(normal.is_string() && normal != first, "{normal}");
    ci.set_circleci_repeat_page_token(true);
    for _ in 0..3 {
        assert_eq!(get_json(&again, &auth).await["next_page_token"], first);
    }

    ci.push_fault("/circleci", retry_after(3));
    let (status, h, _) = fetch(&url, &auth).await;
    assert_eq!((status, header(&h, "retry-after").as_str()), (429, "3"));
}

#[tokio::test]
async fn gitlab_pagination_auth_and_faults() {
    let ci = FakeCi::start().await;
    let id = ci.add_gitlab_project("acme/widget");
    for i in 0..5 {
        let var = GitlabVar::new(&format!("K{i}"), &format!("v{i}"));
        ci.add_gitlab_project_var("acme/widget", var);
    }
    ci.add_gitlab_project_var("acme/widget", GitlabVar::new("HID", "secret").hidden());
    let npm = GitlabVar::new("NPM_TOKEN", "x").protected().masked();
    ci.add_gitlab_group_var("acme/sub", npm);
    ci.add_gitlab_project("acme/locked");
    ci.deny_gitlab("acme/locked", 403);
    let (gl, auth) = (ci.gitlab_url(), ("PRIVATE-TOKEN", GITLAB_TOKEN));

    for target in ["acme%2Fwidget".to_string(), id.to_string()] {
        let url = format!("{gl}/projects/{target}/variables?per_page=2");
        let (_, h, _) = fetch(&url, &[auth]).await;
        let names = "x-total x-total-pages x-page x-per-page x-next-page x-prev-page";
        assert_eq!(headers(&h, names), ["6", "3", "1", "2", "2", ""]);
        let link = header(&h, "link");
        assert!(link.contains(r#"rel="last""#), "{link}");
        assert!(link.contains(r#"rel="first""#), "{link}");
        let pages = walk_links(&url, auth).await;
        assert_eq!(pages.len(), 3);
        let vars = concat(&pages, None);
        let values = field(&vars, "value").join(" ");
        assert_eq!(values, "v0 v1 v2 v3 v4 <null>");
        assert_eq!(vars[5]["hidden"], true);
    }
    let url = format!("{gl}/projects/{id}/variables?per_page=2&page=3");
    let (_, h, _) = fetch(&url, &[auth]).await;
    assert_eq!(headers(&h, "x-next-page x-prev-page"), ["", "2"]);

    let group = format!("{gl}/groups/acme%2Fsub/variables");
    let bearer = format!("Bearer {GITLAB_TOKEN}");
    let vars = get_json(&group, &[("authorization", &bearer)]).await;
    assert_eq!(field(&vars, "key"), ["NPM_TOKEN"]);
    assert_eq!(vars[0]["protected"], true);

    let answer = status_message(&group, &[]).await;
    assert_eq!(answer, (401, "401 Unauthorized".into()));
    let nope = format!("{gl}/projects/acme%2Fnope/variables");
    let answer = status_message(&nope, &[auth]).await;
    assert_eq!(answer, (404, "404 Project Not Found".into()));
    let locked = format!("{gl}/projects/acme%2Flocked/variables");
    let answer = status_message(&locked, &[auth]).await;
    assert_eq!(answer, (403, "403 Forbidden".into()));

    ci.push_fault("/gitlab/api/v4/groups", retry_after(30));
    ci.push_fault("/gitlab", Fault::Garbage);
    let (status, h, _) = fetch(&group, &[auth]).await;
    assert_eq!((status, header(&h, "retry-after").as_str()), (429, "30"));
    let (status, _, body) = fetch(&group, &[auth]).await;
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<Value>(&body).is_err());
    assert_eq!(ci.requests_count("/gitlab/api/v4/groups"), 4);
}
