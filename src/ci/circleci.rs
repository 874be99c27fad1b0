//! CircleCI: `[[ci.circleci]]`. Reads, with a personal API token, the environment variables of
//! every context of the organisation `org_slug` and of each project in `projects`. CircleCI returns
//! names (and for project variables a masked value, `xxxx` and the last four characters, which is
//! not enough to classify and is not kept).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use super::github::describe_lists;
use super::http::segment;
use super::{Api, Auth, CiError, CiSecret, CiProviderConfig, SourceRead};
use crate::config::types::{check, rule, Invalid};

pub const DEFAULT_API_URL: &str = "https://circleci.com/api/v2";

fn default_api_url() -> Url {
    Url::parse(DEFAULT_API_URL).unwrap_or_else(|_| unreachable!("a constant URL"))
}

/// `[[ci.circleci]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircleciConfig {
    /// A personal API token of a user who can see the contexts and projects (sent as `Circle-Token`).
    pub token_file: PathBuf,
    #[serde(default = "default_api_url")]
    pub api_url: Url,
    /// `gh/acme`, `bb/acme` or `circleci/<org-id>`: the organisation whose contexts are read.
    #[serde(default)]
    pub org_slug: Option<String>,
    /// Project slugs: `gh/acme/widget`, `circleci/<org-id>/<project-id>`.
    #[serde(default)]
    pub projects: Vec<String>,
}

#[async_trait::async_trait]
impl CiProviderConfig for CircleciConfig {
    fn api_url(&self) -> &Url {
        &self.api_url
    }

    fn token_file(&self) -> &Path {
        &self.token_file
    }

    fn auth(&self) -> Auth {
        Auth::Header("circle-token")
    }

    fn validate(&self) -> Result<(), Invalid> {
        let slug_ok = |s: &str, n: usize| {
            let parts: Vec<&str> = s.split('/').collect();
            // `.` and `..` would be resolved away in the request path (`project/gh/../x/envvar`).
            parts.len() == n
                && parts.iter().all(|p| {
                    !p.trim().is_empty()
                        && !p.contains(char::is_whitespace)
                        && *p != "."
                        && *p != ".."
                })
        };
        let mut rules = vec![rule(
            "org_slug",
            self.org_slug.is_none() && self.projects.is_empty(),
            "name the organisation (org_slug) or at least one project",
        )];
        rules.extend(self.org_slug.iter().map(|o| {
            rule(
                "org_slug",
                !slug_ok(o, 2),
                format!("`{o}` is not an org slug such as gh/acme"),
            )
        }));
        rules.extend(self.projects.iter().enumerate().map(|(i, p)| {
            rule(
                format!("projects[{i}]"),
                !slug_ok(p, 3),
                format!("`{p}` is not a project slug such as gh/acme/widget"),
            )
        }));
        check(rules)
    }

    fn scopes(&self) -> Vec<String> {
        let org = self
            .org_slug
            .iter()
            .map(|o| format!("circleci:context:{o}"));
        let projects = self
            .projects
            .iter()
            .map(|p| format!("circleci:project:{p}"));
        org.chain(projects).collect()
    }

    fn describe(&self) -> String {
        let org: Vec<String> = self.org_slug.iter().cloned().collect();
        describe_lists(&[("contexts of", &org), ("projects", &self.projects)])
    }

    async fn read(&self, api: &Api) -> SourceRead {
        let mut out = SourceRead::default();
        if let Some(org) = &self.org_slug {
            read_contexts(api, org, &mut out).await;
        }
        for project in &self.projects {
            let place = format!("circleci:project:{project}");
            let desc = format!("CircleCI environment variables of project {project}");
            let read = get_all_paged::<ProjectVariable>(
                api,
                "project_variables",
                project_url(api, project),
            )
            .await
            .map(|vars| vars.into_iter().map(|v| v.secret(&place, &desc)).collect());
            out.unit(place, desc, read);
        }
        out
    }
}

// The answers below follow the description of CircleCI's API v2 (`https://circleci.com/api/v2`):
// every list is `{"items": [...], "next_page_token": "<opaque>" | null}`, and the next page is asked
// for with `page-token=<token>`. Fields not named here are ignored.

/// One page of a CircleCI list. `items` is required: an answer without it is not a list, and must not
/// read as an empty one.
#[derive(Debug, Deserialize)]
struct Page<T> {
    items: Vec<T>,
    #[serde(default)]
    next_page_token: Option<String>,
}

/// An item of `GET /context?owner-slug=…`.
#[derive(Debug, Deserialize)]
struct Context {
    id: String,
    name: String,
}

/// An item of `GET /context/{id}/environment-variable` (`context_id` is not needed).
#[derive(Debug, Deserialize)]
struct ContextVariable {
    variable: String,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    updated_at: Option<DateTime<Utc>>,
}

impl ContextVariable {
    fn secret(self, place: &str, place_desc: &str) -> CiSecret {
        CiSecret {
            provider: "circleci".into(),
            place: place.to_string(),
            place_desc: place_desc.to_string(),
            name: self.variable,
            environment_scope: None,
            updated_at: self.updated_at.or(self.created_at),
            value_is_npm_token: false,
        }
    }
}

/// An item of `GET /project/{project-slug}/envvar`. Its `value` (`xxxx` and the last four characters
/// of the real value) is deliberately not a field: it is skipped by the parser, never kept nor
/// classified.
#[derive(Debug, Deserialize)]
struct ProjectVariable {
    name: String,
    /// A project variable cannot be edited, only deleted and added again: its creation is its last
    /// change.
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
}

impl ProjectVariable {
    fn secret(self, place: &str, place_desc: &str) -> CiSecret {
        CiSecret {
            provider: "circleci".into(),
            place: place.to_string(),
            place_desc: place_desc.to_string(),
            name: self.name,
            environment_scope: None,
            updated_at: self.created_at,
            value_is_npm_token: false,
        }
    }
}

/// Every context of `org` and each one's variables: one unit per context. The context list failing
/// fails the whole `circleci:context:{org}` scope; one context's variables failing fails that unit.
async fn read_contexts(api: &Api, org: &str, out: &mut SourceRead) {
    let scope = format!("circleci:context:{org}");
    let mut url = api.url("context");
    url.query_pairs_mut().append_pair("owner-slug", org);
    let contexts = match get_all_paged::<Context>(api, "contexts", url).await {
        Ok(c) => c,
        Err(e) => {
            out.fail(scope, format!("CircleCI contexts of {org}"), e);
            return;
        }
    };
    for context in contexts {
        let place = format!("{scope}:{}", context.name);
        let desc = format!("CircleCI context {} of {org}", context.name);
        let url = api.url(&format!(
            "context/{}/environment-variable",
            segment(&context.id)
        ));
        let read = get_all_paged::<ContextVariable>(api, "context_variables", url)
            .await
            .map(|vars| vars.into_iter().map(|v| v.secret(&place, &desc)).collect());
        out.unit(place, desc, read);
    }
}

/// `project/{project-slug}/envvar`. CircleCI documents `project-slug` as `vcs/org/repo` with its
/// slashes, so the slug goes in as path segments, each escaped on its own.
fn project_url(api: &Api, project: &str) -> Url {
    let slug: Vec<String> = project.split('/').map(segment).collect();
    api.url(&format!("project/{}/envvar", slug.join("/")))
}

/// Every page of a list paginated by `next_page_token`. A token seen before, or more than
/// `max_pages` pages, is an error, never a silently shorter list.
async fn get_all_paged<T: DeserializeOwned>(
    api: &Api,
    endpoint: &'static str,
    first: Url,
) -> Result<Vec<T>, CiError> {
    let max_pages = api.limits().max_pages;
    let mut out = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut token: Option<String> = None;
    for _ in 0..max_pages {
        let mut url = first.clone();
        if let Some(t) = &token {
            url.query_pairs_mut().append_pair("page-token", t);
        }
        let (page, _) = api.get_json::<Page<T>>(endpoint, &url).await?;
        out.extend(page.items);
        match page.next_page_token.filter(|t| !t.is_empty()) {
            None => return Ok(out),
            Some(next) => {
                if !seen.insert(next.clone()) {
                    return Err(CiError::pagination(
                        endpoint,
                        "the next_page_token repeated a page token already followed",
                    ));
                }
                token = Some(next);
            }
        }
    }
    Err(CiError::pagination(
        endpoint,
        format!("more than {max_pages} pages"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(org: Option<&str>, projects: &[&str]) -> CircleciConfig {
        CircleciConfig {
            token_file: "/run/npm-watchdog/circleci-token".into(),
            api_url: default_api_url(),
            org_slug: org.map(str::to_string),
            projects: projects.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_context_page_is_read_with_unknown_fields_ignored() {
        let page: Page<Context> = serde_json::from_value(json!({
            "items": [
                {"id": "ctx-1", "name": "release", "created_at": "2025-01-01T00:00:00Z", "x": 1},
                {"id": "ctx-2", "name": "deploy"}
            ],
            "next_page_token": "abc",
            "extra": {"anything": true}
        }))
        .expect("parse");
        let names: Vec<(&str, &str)> = page
            .items
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str()))
            .collect();
        assert_eq!(names, [("ctx-1", "release"), ("ctx-2", "deploy")]);
        assert_eq!(page.next_page_token.as_deref(), Some("abc"));

        let last: Page<Context> =
            serde_json::from_value(json!({"items": [], "next_page_token": null})).expect("parse");
        assert!(last.items.is_empty() && last.next_page_token.is_none());
        // A body without `items` is not an empty list.
        assert!(serde_json::from_value::<Page<Context>>(json!({"next_page_token": null})).is_err());
    }

    #[test]
    fn context_variables_take_updated_at_else_created_at() {
        let page: Page<ContextVariable> = serde_json::from_value(json!({
            "items": [
                {"variable": "NPM_TOKEN", "created_at": "2024-01-01T00:00:00Z",
                 "updated_at": "2025-02-03T04:05:06.789Z", "context_id": "ctx-1"},
                {"variable": "ONLY_CREATED", "created_at": "2024-05-06T07:08:09Z"},
                {"variable": "NO_DATES", "updated_at": null}
            ],
            "next_page_token": null
        }))
        .expect("parse");
        let place = "circleci:context:gh/acme:release";
        let desc = "CircleCI context release of gh/acme";
        let secrets: Vec<CiSecret> = page
            .items
            .into_iter()
            .map(|v| v.secret(place, desc))
            .collect();
        let date = |s: &str| Some(s.parse::<DateTime<Utc>>().expect("date"));
        assert_eq!(
            secrets[0],
            CiSecret {
                provider: "circleci".into(),
                place: place.into(),
                place_desc: desc.into(),
                name: "NPM_TOKEN".into(),
                environment_scope: None,
                updated_at: date("2025-02-03T04:05:06.789Z"),
                value_is_npm_token: false,
            }
        );
        assert_eq!(
            secrets[0].key(),
            "circleci:context:gh/acme:release#NPM_TOKEN"
        );
        assert_eq!(secrets[1].updated_at, date("2024-05-06T07:08:09Z"));
        assert_eq!(secrets[2].updated_at, None);
    }

    #[test]
    fn a_project_variable_keeps_no_part_of_its_masked_value() {
        let page: Page<ProjectVariable> = serde_json::from_value(json!({
            "items": [
                {"name": "NPM_TOKEN", "value": "xxxxQ7zK", "created_at": "2025-03-01T00:00:00Z"},
                {"name": "OTHER", "value": "xxxx1234"}
            ],
            "next_page_token": null
        }))
        .expect("parse");
        let debug = format!("{page:?}");
        assert!(
            !debug.contains("Q7zK") && !debug.contains("xxxx"),
            "{debug}"
        );
        let place = "circleci:project:gh/acme/widget";
        let desc = "CircleCI environment variables of project gh/acme/widget";
        let secrets: Vec<CiSecret> = page
            .items
            .into_iter()
            .map(|v| v.secret(place, desc))
            .collect();
        assert_eq!(secrets[0].name, "NPM_TOKEN");
        assert_eq!(
            secrets[0].updated_at,
            Some("2025-03-01T00:00:00Z".parse().expect("date"))
        );
        assert_eq!(secrets[1].updated_at, None);
        assert!(secrets
            .iter()
            .all(|s| !s.value_is_npm_token && s.place_desc == desc));
        assert!(!format!("{secrets:?}").contains("Q7zK"));
    }

    #[test]
    fn a_date_that_is_not_rfc3339_is_malformed_not_dropped() {
        let bad = json!({"items": [{"variable": "X", "updated_at": "yesterday"}]});
        assert!(serde_json::from_value::<Page<ContextVariable>>(bad).is_err());
    }

    #[test]
    fn invalid_entries_are_named() {
        let cases: [(CircleciConfig, &str); 8] = [
            (
                config(None, &[]),
                "org_slug: name the organisation (org_slug) or at least one project",
            ),
            (
                config(Some("acme"), &[]),
                "org_slug: `acme` is not an org slug such as gh/acme",
            ),
            (
                config(Some("gh/acme/widget"), &[]),
                "org_slug: `gh/acme/widget` is not an org slug such as gh/acme",
            ),
            (
                config(Some("gh/ac me"), &[]),
                "org_slug: `gh/ac me` is not an org slug such as gh/acme",
            ),
            (
                config(Some("gh/.."), &[]),
                "org_slug: `gh/..` is not an org slug such as gh/acme",
            ),
            (
                config(None, &["gh/acme"]),
                "projects[0]: `gh/acme` is not a project slug such as gh/acme/widget",
            ),
            (
                config(Some("gh/acme"), &["gh/acme/widget", "gh//widget"]),
                "projects[1]: `gh//widget` is not a project slug such as gh/acme/widget",
            ),
            (
                config(None, &["gh/../widget"]),
                "projects[0]: `gh/../widget` is not a project slug such as gh/acme/widget",
            ),
        ];
        for (cfg, message) in cases {
            let err = cfg.validate().expect_err(message);
            assert_eq!(err.to_string(), message);
        }
        for ok in [
            config(Some("gh/acme"), &[]),
            config(None, &["gh/acme/widget"]),
            config(
                Some("circleci/8e3f"),
                &["circleci/8e3f/4a1b", "bb/acme/widget"],
            ),
        ] {
            assert_eq!(ok.validate(), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn scopes_and_description_follow_the_entry() {
        let cfg = config(Some("gh/acme"), &["gh/acme/widget", "gh/acme/gadget"]);
        assert_eq!(
            cfg.scopes(),
            [
                "circleci:context:gh/acme",
                "circleci:project:gh/acme/widget",
                "circleci:project:gh/acme/gadget"
            ]
        );
        assert_eq!(
            cfg.describe(),
            "contexts of gh/acme; projects gh/acme/widget, gh/acme/gadget"
        );
    }

    #[test]
    fn an_entry_parses_from_toml_with_the_default_api() {
        let cfg: CircleciConfig = toml::from_str(
            "token_file = \"/run/t\"\norg_slug = \"gh/acme\"\nprojects = [\"gh/acme/widget\"]\n",
        )
        .expect("parse");
        assert_eq!(cfg.api_url.as_str(), "https://circleci.com/api/v2");
        assert!(
            toml::from_str::<CircleciConfig>("token_file = \"/t\"\norg = \"x\"\n").is_err()
        );
    }
}
