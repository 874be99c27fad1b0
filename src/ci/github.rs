//! GitHub Actions: `[[ci.github]]`. Reads, with a fine-grained token, the Actions secrets of each
//! repository in `repos`, the organisation secrets each can use, each environment's secrets, its
//! Dependabot secrets, and for each org in `orgs` the organisation's Actions and Dependabot secrets.
//! GitHub returns names and dates only, never values.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

use super::http::segment;
use super::{Api, Auth, CiError, CiSecret, CiProviderConfig, SourceRead};
use crate::config::types::{check, rule, Invalid};

pub const DEFAULT_API_URL: &str = "https://api.github.com";

fn default_api_url() -> Url {
    Url::parse(DEFAULT_API_URL).unwrap_or_else(|_| unreachable!("a constant URL"))
}

/// `[[ci.github]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// A fine-grained personal access token (or a GitHub App installation token) with read access to
    /// the repositories' "Secrets", "Environments" and "Dependabot secrets", and for `orgs` the
    /// organisation's "Secrets".
    pub token_file: PathBuf,
    /// GitHub Enterprise Server: `https://HOST/api/v3`.
    #[serde(default = "default_api_url")]
    pub api_url: Url,
    /// `owner/name`.
    #[serde(default)]
    pub repos: Vec<String>,
    #[serde(default)]
    pub orgs: Vec<String>,
}

#[async_trait::async_trait]
impl CiProviderConfig for GithubConfig {
    fn api_url(&self) -> &Url {
        &self.api_url
    }

    fn token_file(&self) -> &Path {
        &self.token_file
    }

    fn auth(&self) -> Auth {
        Auth::Bearer
    }

    fn extra_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("accept", "application/vnd.github+json"),
            ("x-github-api-version", "2022-11-28"),
        ]
    }

    fn validate(&self) -> Result<(), Invalid> {
        let bad_part = |p: &&str| p.trim().is_empty() || p.contains(char::is_whitespace);
        let mut rules = vec![rule(
            "repos",
            self.repos.is_empty() && self.orgs.is_empty(),
            "name at least one repository or org (orgs)",
        )];
        rules.extend(self.repos.iter().enumerate().map(|(i, r)| {
            let parts: Vec<&str> = r.split('/').collect();
            rule(
                format!("repos[{i}]"),
                parts.len() != 2 || parts.iter().any(bad_part),
                format!("`{r}` is not owner/name"),
            )
        }));
        rules.extend(self.orgs.iter().enumerate().map(|(i, o)| {
            rule(
                format!("orgs[{i}]"),
                o.trim().is_empty() || o.contains('/') || o.contains(char::is_whitespace),
                format!("`{o}` is not an organisation name"),
            )
        }));
        check(rules)
    }

    fn scopes(&self) -> Vec<String> {
        let repos = self
            .repos
            .iter()
            .map(|r| format!("github:{}", r.to_ascii_lowercase()));
        let orgs = self
            .orgs
            .iter()
            .map(|o| format!("github:org:{}", o.to_ascii_lowercase()));
        repos.chain(orgs).collect()
    }

    fn describe(&self) -> String {
        describe_lists(&[("repositories", &self.repos), ("orgs", &self.orgs)])
    }

    async fn read(&self, api: &Api) -> SourceRead {
        let mut out = SourceRead::default();
        for repo in &self.repos {
            read_repo(api, repo, &mut out).await;
        }
        for org in &self.orgs {
            let g = org.to_ascii_lowercase();
            let base = format!("orgs/{}", segment(org));
            for (endpoint, list, what) in [
                ("org_secrets", "actions", "Actions"),
                ("org_dependabot_secrets", "dependabot", "Dependabot"),
            ] {
                let unit = format!("github:org:{g}:{list}");
                let desc = format!("GitHub {what} secrets of organisation {org}");
                let path = format!("{base}/{list}/secrets");
                let read = secrets(api, endpoint, &path, &unit, &desc).await;
                out.unit(unit, desc, read);
            }
        }
        out
    }
}

/// Every list of one repository `owner/name`, each recorded on its own so that one refused list
/// leaves the others read.
async fn read_repo(api: &Api, repo: &str, out: &mut SourceRead) {
    let r = repo.to_ascii_lowercase();
    // `validate` guarantees `owner/name`; an entry that skipped it asks for an empty name, which
    // GitHub refuses, so it fails closed rather than reading something else.
    let (owner, name) = repo.split_once('/').unwrap_or((repo, ""));
    let base = format!("repos/{}/{}", segment(owner), segment(name));

    let unit = format!("github:{r}:actions");
    let desc = format!("GitHub Actions secrets of repository {repo}");
    let path = format!("{base}/actions/secrets");
    let read = secrets(api, "repo_secrets", &path, &unit, &desc).await;
    out.unit(unit, desc, read);

    // Organisation secrets this repository can use are placed under the organisation, so that the
    // same secret seen through several repositories (or through `orgs`) is one secret. The unit
    // stays the repository's: it is this repository's view that was read. A 404 (a repository
    // owned by a user has no organisation) is not taken for an empty list: it cannot be told from a
    // token that may not see the list, so it fails closed like any other error.
    let o = owner.to_ascii_lowercase();
    let place = format!("github:org:{o}:actions");
    let desc = format!("GitHub Actions secrets of organisation {owner}");
    let path = format!("{base}/actions/organization-secrets");
    let read = secrets(api, "repo_org_secrets", &path, &place, &desc).await;
    out.unit(
        format!("github:{r}:org-visible"),
        format!("{desc} visible to repository {repo}"),
        read,
    );

    let url = api.url(&format!("{base}/environments?per_page=100"));
    let environments = api
        .get_all_linked("environments", url, |page: EnvironmentsPage| {
            page.environments.into_iter().map(|e| e.name).collect()
        })
        .await;
    match environments {
        Ok(names) => {
            for env in names {
                let unit = format!("github:{r}:env:{env}");
                let desc = format!("GitHub secrets of environment {env} in repository {repo}");
                let path = format!("{base}/environments/{}/secrets", segment(&env));
                let read = secrets(api, "environment_secrets", &path, &unit, &desc).await;
                out.unit(unit, desc, read);
            }
        }
        // Without the names no environment's list can be asked for: the whole `env` scope stands
        // on what was stored before.
        Err(e) => out.fail(
            format!("github:{r}:env"),
            format!("GitHub environments of repository {repo}"),
            e,
        ),
    }

    let unit = format!("github:{r}:dependabot");
    let desc = format!("GitHub Dependabot secrets of repository {repo}");
    let path = format!("{base}/dependabot/secrets");
    let read = secrets(api, "repo_dependabot_secrets", &path, &unit, &desc).await;
    out.unit(unit, desc, read);
}

/// One secrets list, every page, each secret placed at `place`.
async fn secrets(
    api: &Api,
    endpoint: &'static str,
    path: &str,
    place: &str,
    desc: &str,
) -> Result<Vec<CiSecret>, CiError> {
    let url = api.url(&format!("{path}?per_page=100"));
    api.get_all_linked(endpoint, url, |page: SecretsPage| {
        page.into_secrets(place, desc)
    })
    .await
}

// The page shapes follow GitHub's published REST description (`actions-secret`,
// `organization-actions-secret`, `dependabot-secret`, `environment`). Only what is kept is
// declared: other fields (`total_count`, `created_at`, `visibility`, …) are ignored, so GitHub may
// add fields freely, while a missing list is an error that names it rather than an empty list.

/// A page of any secrets list.
#[derive(Debug, Deserialize)]
struct SecretsPage {
    secrets: Vec<SecretItem>,
}

#[derive(Debug, Deserialize)]
struct SecretItem {
    name: String,
    /// RFC 3339. Absent or `null` is tolerated; a date that is not one makes the page malformed.
    updated_at: Option<DateTime<Utc>>,
}

impl SecretsPage {
    fn into_secrets(self, place: &str, desc: &str) -> Vec<CiSecret> {
        self.secrets
            .into_iter()
            .map(|s| CiSecret {
                provider: "github".into(),
                place: place.to_string(),
                place_desc: desc.to_string(),
                name: s.name,
                environment_scope: None,
                updated_at: s.updated_at,
                value_is_npm_token: false,
            })
            .collect()
    }
}

/// A page of `repos/{owner}/{repo}/environments`.
#[derive(Debug, Deserialize)]
struct EnvironmentsPage {
    environments: Vec<EnvironmentItem>,
}

#[derive(Debug, Deserialize)]
struct EnvironmentItem {
    name: String,
}

/// `repositories a, b; orgs c` for the lists that are not empty.
pub(super) fn describe_lists(lists: &[(&str, &Vec<String>)]) -> String {
    lists
        .iter()
        .filter(|(_, l)| !l.is_empty())
        .map(|(what, l)| format!("{what} {}", l.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(json: &str) -> Result<SecretsPage, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn secrets_pages_keep_names_and_dates_and_ignore_the_rest() {
        let json = r#"{
            "total_count": 3,
            "secrets": [
                {"name": "NPM_TOKEN", "created_at": "2025-01-01T00:00:00Z",
                 "updated_at": "2025-02-03T04:05:06Z", "visibility": "selected",
                 "selected_repositories_url": "https://api.github.com/x", "new_field": {"a": 1}},
                {"name": "NO_DATE", "created_at": "2025-01-01T00:00:00Z"},
                {"name": "NULL_DATE", "updated_at": null}
            ],
            "unknown": true
        }"#;
        let place = "github:org:acme:actions";
        let desc = "GitHub Actions secrets of organisation Acme";
        let secrets = page(json).expect("parse").into_secrets(place, desc);
        let names: Vec<&str> = secrets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["NPM_TOKEN", "NO_DATE", "NULL_DATE"]);
        let when = DateTime::parse_from_rfc3339("2025-02-03T04:05:06Z").expect("date");
        assert_eq!(secrets[0].updated_at, Some(when.with_timezone(&Utc)));
        assert_eq!(secrets[1].updated_at, None);
        assert_eq!(secrets[2].updated_at, None);
        for s in &secrets {
            assert_eq!((s.provider.as_str(), s.place.as_str()), ("github", place));
            assert_eq!(s.place_desc, desc);
            assert_eq!(s.environment_scope, None);
            assert!(!s.value_is_npm_token);
        }
        assert_eq!(secrets[0].key(), "github:org:acme:actions#NPM_TOKEN");
    }

    #[test]
    fn total_count_is_optional_and_offsets_are_kept() {
        let json = r#"{"secrets": [{"name": "A", "updated_at": "2025-02-03T06:05:06+02:00"}]}"#;
        let secrets = page(json).expect("parse").into_secrets("p", "d");
        let when = DateTime::parse_from_rfc3339("2025-02-03T04:05:06Z").expect("date");
        assert_eq!(secrets[0].updated_at, Some(when.with_timezone(&Utc)));
        assert!(page(r#"{"secrets": []}"#)
            .expect("parse")
            .secrets
            .is_empty());
    }

    #[test]
    fn a_missing_list_or_a_bad_date_is_an_error_naming_it() {
        let e = page(r#"{"total_count": 1}"#).expect_err("no list");
        assert!(e.to_string().contains("missing field `secrets`"), "{e}");
        let e =
            page(r#"{"secrets": [{"updated_at": "2025-01-01T00:00:00Z"}]}"#).expect_err("no name");
        assert!(e.to_string().contains("missing field `name`"), "{e}");
        let e =
            page(r#"{"secrets": [{"name": "A", "updated_at": "yesterday"}]}"#).expect_err("date");
        assert!(e.is_data(), "{e}");
        let e =
            serde_json::from_str::<EnvironmentsPage>(r#"{"total_count": 0}"#).expect_err("no list");
        assert!(
            e.to_string().contains("missing field `environments`"),
            "{e}"
        );
    }

    #[test]
    fn environment_pages_give_names() {
        let json = r#"{"total_count": 2, "environments": [
            {"id": 1, "node_id": "EN_1", "name": "production", "protection_rules": [],
             "deployment_branch_policy": null},
            {"name": "prod eu"}
        ]}"#;
        let page: EnvironmentsPage = serde_json::from_str(json).expect("parse");
        let names: Vec<String> = page.environments.into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["production", "prod eu"]);
    }

    fn config(repos: &[&str], orgs: &[&str]) -> GithubConfig {
        GithubConfig {
            token_file: PathBuf::from("/run/npm-watchdog/github-token"),
            api_url: default_api_url(),
            repos: repos.iter().map(|r| r.to_string()).collect(),
            orgs: orgs.iter().map(|o| o.to_string()).collect(),
        }
    }

    #[test]
    fn validation_names_the_offending_entry() {
        let cases: &[(&[&str], &[&str], &str)] = &[
            (
                &[],
                &[],
                "repos: name at least one repository or org (orgs)",
            ),
            (&["acme"], &[], "repos[0]: `acme` is not owner/name"),
            (
                &["acme/widget", "a/b/c"],
                &[],
                "repos[1]: `a/b/c` is not owner/name",
            ),
            (&["acme/"], &[], "repos[0]: `acme/` is not owner/name"),
            (&["/widget"], &[], "repos[0]: `/widget` is not owner/name"),
            (
                &["acme/my widget"],
                &[],
                "repos[0]: `acme/my widget` is not owner/name",
            ),
            (&[], &[""], "orgs[0]: `` is not an organisation name"),
            (
                &["acme/widget"],
                &["acme", "acme/x"],
                "orgs[1]: `acme/x` is not an organisation name",
            ),
            (
                &[],
                &["ac me"],
                "orgs[0]: `ac me` is not an organisation name",
            ),
        ];
        for (repos, orgs, message) in cases {
            let e = config(repos, orgs).validate().expect_err(message);
            assert_eq!(e.to_string(), *message);
        }
        for (repos, orgs) in [
            (&["acme/widget"][..], &[][..]),
            (&[], &["acme"]),
            (&["Acme/Widget.js"], &["acme"]),
        ] {
            assert_eq!(config(repos, orgs).validate(), Ok(()));
        }
        let nested = crate::ci::CiConfig {
            github: vec![config(&["acme/widget"], &[]), config(&["x"], &[])],
            ..Default::default()
        };
        let e = nested.validate().expect_err("second entry");
        assert_eq!(
            e.to_string(),
            "ci.github[1].repos[0]: `x` is not owner/name"
        );
    }

    #[test]
    fn scopes_cover_every_unit_read() {
        let c = config(&["Acme/Widget"], &["Acme"]);
        assert_eq!(c.scopes(), ["github:acme/widget", "github:org:acme"]);
        for unit in [
            "github:acme/widget:actions",
            "github:acme/widget:org-visible",
            "github:acme/widget:env:prod eu",
            "github:acme/widget:dependabot",
        ] {
            assert!(crate::ci::covers(&c.scopes()[0], unit), "{unit}");
        }
        for unit in ["github:org:acme:actions", "github:org:acme:dependabot"] {
            assert!(crate::ci::covers(&c.scopes()[1], unit), "{unit}");
        }
    }
}
