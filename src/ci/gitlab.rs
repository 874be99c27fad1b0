//! GitLab CI: `[[ci.gitlab]]`. Reads the CI/CD variables of each project in `projects` and each group
//! in `groups`. GitLab's answers hold the variables' values: each is looked at once, while parsing,
//! to say whether it looks like an npm token ([`super::classify_value`]), and dropped.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use url::Url;

use super::github::describe_lists;
use super::http::segment;
use super::{Api, Auth, CiSecret, CiProviderConfig, SourceRead};
use crate::config::types::{check, rule, Invalid};

pub const DEFAULT_API_URL: &str = "https://gitlab.com/api/v4";

fn default_api_url() -> Url {
    Url::parse(DEFAULT_API_URL).unwrap_or_else(|_| unreachable!("a constant URL"))
}

/// `[[ci.gitlab]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitlabConfig {
    /// A personal, project or group access token with the `read_api` scope and the Maintainer role
    /// (reading CI/CD variables needs it), sent as `PRIVATE-TOKEN`.
    pub token_file: PathBuf,
    /// Self-managed GitLab: `https://HOST/api/v4`.
    #[serde(default = "default_api_url")]
    pub api_url: Url,
    /// Full paths (`acme/widget`, `acme/sub/widget`) or numeric ids.
    #[serde(default)]
    pub projects: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[async_trait::async_trait]
impl CiProviderConfig for GitlabConfig {
    fn api_url(&self) -> &Url {
        &self.api_url
    }

    fn token_file(&self) -> &Path {
        &self.token_file
    }

    fn auth(&self) -> Auth {
        Auth::Header("private-token")
    }

    fn validate(&self) -> Result<(), Invalid> {
        // `.` and `..` would be resolved away in the request path (`projects/../variables`).
        let bad = |p: &str| {
            p.trim().is_empty()
                || p.contains(char::is_whitespace)
                || p.starts_with('/')
                || p.ends_with('/')
                || p == "."
                || p == ".."
        };
        let mut rules = vec![rule(
            "projects",
            self.projects.is_empty() && self.groups.is_empty(),
            "name at least one project or group (groups)",
        )];
        for (key, list) in [("projects", &self.projects), ("groups", &self.groups)] {
            rules.extend(list.iter().enumerate().map(|(i, p)| {
                rule(
                    format!("{key}[{i}]"),
                    bad(p),
                    format!("`{p}` is not a full path or numeric id"),
                )
            }));
        }
        check(rules)
    }

    fn scopes(&self) -> Vec<String> {
        let projects = self.projects.iter().map(|p| format!("gitlab:project:{p}"));
        let groups = self.groups.iter().map(|g| format!("gitlab:group:{g}"));
        projects.chain(groups).collect()
    }

    fn describe(&self) -> String {
        describe_lists(&[("projects", &self.projects), ("groups", &self.groups)])
    }

    async fn read(&self, api: &Api) -> SourceRead {
        let mut out = SourceRead::default();
        for (kind, list, endpoint) in [
            (Kind::Project, &self.projects, "project_variables"),
            (Kind::Group, &self.groups, "group_variables"),
        ] {
            for id in list {
                let place = format!("gitlab:{}:{id}", kind.word());
                let desc = format!("GitLab CI/CD variables of {} {id}", kind.word());
                let url = api.url(&format!(
                    "{}/{}/variables?per_page=100",
                    kind.path(),
                    segment(id)
                ));
                let read = api
                    .get_all_linked(endpoint, url, |page: Vec<Variable>| page)
                    .await
                    .map(|vars| vars.into_iter().map(|v| v.secret(&place, &desc)).collect());
                out.unit(place, desc, read);
            }
        }
        out
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Project,
    Group,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Project => "project",
            Kind::Group => "group",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Kind::Project => "projects",
            Kind::Group => "groups",
        }
    }
}

/// An item of `GET /projects/:id/variables` or `GET /groups/:id/variables` (a JSON array, paginated
/// with `Link`), as GitLab's REST API v4 describes it: `{variable_type, key, value, protected,
/// masked, hidden, raw, environment_scope, description}`. Only what is needed is read; the rest is
/// skipped by the parser.
///
/// `value` is never a field: [`super::classify_value`] looks at it while it is parsed and leaves
/// only whether it looks like an npm token. So `Debug` shows no value, as there is none to show.
#[derive(Debug, Deserialize)]
struct Variable {
    key: String,
    /// `*` (every environment) or an environment name or pattern; groups on GitLab Free leave it out.
    #[serde(default)]
    environment_scope: Option<String>,
    /// `null` for a hidden variable: then `false`.
    #[serde(rename = "value", default, deserialize_with = "super::classify_value")]
    value_is_npm_token: bool,
}

impl Variable {
    fn secret(self, place: &str, place_desc: &str) -> CiSecret {
        CiSecret {
            provider: "gitlab".into(),
            place: place.to_string(),
            place_desc: place_desc.to_string(),
            name: self.key,
            environment_scope: self.environment_scope.filter(|s| s != "*"),
            updated_at: None,
            value_is_npm_token: self.value_is_npm_token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The shape of an npm access token (`npm_` and 36 base62 characters); not a real one.
    fn npm_token() -> String {
        format!("npm_{}", "Gl7".repeat(12))
    }

    fn config(projects: &[&str], groups: &[&str]) -> GitlabConfig {
        GitlabConfig {
            token_file: "/run/npm-watchdog/gitlab-token".into(),
            api_url: default_api_url(),
            projects: projects.iter().map(|p| p.to_string()).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn variables_keep_only_the_verdict_on_their_value() {
        let token = npm_token();
        let npmrc = "//registry.npmjs.org/:_authToken=plain-value-GL-1";
        let plain = "just-a-plain-value-GL-2";
        let body = json!([
            {"variable_type": "env_var", "key": "NPM_TOKEN", "value": token, "protected": true,
             "masked": true, "hidden": false, "raw": false, "environment_scope": "*",
             "description": null},
            {"key": "NPMRC", "value": npmrc, "environment_scope": "production", "variable_type": "file"},
            {"key": "PLAIN", "value": plain},
            {"key": "HIDDEN", "value": null, "masked": true, "hidden": true},
            {"key": "NO_VALUE_FIELD", "environment_scope": "review/*"}
        ]);
        let parsed: Vec<Variable> = serde_json::from_value(body).expect("parse");
        let debug = format!("{parsed:?}");
        for value in [token.as_str(), npmrc, plain, "_authToken"] {
            assert!(!debug.contains(value), "{value} in {debug}");
        }
        let verdicts: Vec<(&str, bool)> = parsed
            .iter()
            .map(|v| (v.key.as_str(), v.value_is_npm_token))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("NPM_TOKEN", true),
                ("NPMRC", true),
                ("PLAIN", false),
                ("HIDDEN", false),
                ("NO_VALUE_FIELD", false)
            ]
        );

        let place = "gitlab:project:acme/widget";
        let desc = "GitLab CI/CD variables of project acme/widget";
        let secrets: Vec<CiSecret> = parsed.into_iter().map(|v| v.secret(place, desc)).collect();
        assert_eq!(
            secrets[0],
            CiSecret {
                provider: "gitlab".into(),
                place: place.into(),
                place_desc: desc.into(),
                name: "NPM_TOKEN".into(),
                environment_scope: None,
                updated_at: None,
                value_is_npm_token: true,
            }
        );
        let scopes: Vec<Option<&str>> = secrets
            .iter()
            .map(|s| s.environment_scope.as_deref())
            .collect();
        assert_eq!(
            scopes,
            [None, Some("production"), None, None, Some("review/*")]
        );
        assert_eq!(
            secrets[1].key(),
            "gitlab:project:acme/widget#NPMRC@production"
        );
    }

    #[test]
    fn invalid_entries_are_named() {
        let cases: [(GitlabConfig, &str); 7] = [
            (
                config(&[], &[]),
                "projects: name at least one project or group (groups)",
            ),
            (
                config(&[""], &[]),
                "projects[0]: `` is not a full path or numeric id",
            ),
            (
                config(&["acme/widget", "acme/my widget"], &[]),
                "projects[1]: `acme/my widget` is not a full path or numeric id",
            ),
            (
                config(&["/acme/widget"], &[]),
                "projects[0]: `/acme/widget` is not a full path or numeric id",
            ),
            (
                config(&[], &["acme/"]),
                "groups[0]: `acme/` is not a full path or numeric id",
            ),
            (
                config(&["acme/widget"], &["acme", ".."]),
                "groups[1]: `..` is not a full path or numeric id",
            ),
            (
                config(&["."], &[]),
                "projects[0]: `.` is not a full path or numeric id",
            ),
        ];
        for (cfg, message) in cases {
            let err = cfg.validate().expect_err(message);
            assert_eq!(err.to_string(), message);
        }
        for ok in [
            config(&["acme/widget", "acme/sub/widget", "42"], &[]),
            config(&[], &["acme", "acme/sub"]),
        ] {
            assert_eq!(ok.validate(), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn scopes_and_description_follow_the_entry() {
        let cfg = config(&["acme/widget", "42"], &["acme"]);
        assert_eq!(
            cfg.scopes(),
            [
                "gitlab:project:acme/widget",
                "gitlab:project:42",
                "gitlab:group:acme"
            ]
        );
        assert_eq!(cfg.describe(), "projects acme/widget, 42; groups acme");
    }
}
