//! Package lists, orgs and teams: `GET /-/user/<u>/package`, `/-/org/<o>/package`, the org roster,
//! its teams and each team's packages, with the views the org checks read.
//!
//! Unlike the npm CLI nothing here falls back from an org or team route to the user route on a 404:
//! a missing org is an error for that org, never someone else's package list. The value shapes
//! (`"read"`/`"write"`, `["org:team"]`) are inferred from how the CLI prints them, so other values
//! are kept as given.

use std::collections::BTreeMap;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::http::{parse_json, BodyKind};
use super::{FieldError, RegistryClient, RegistryError};
use crate::credential::Credential;

/// `{ "<name>": "read" | "write" }` maps (package lists, collaborators, team packages, rosters).
pub fn parse_string_map(value: &Value, what: &str) -> Result<BTreeMap<String, String>, FieldError> {
    let obj = value.as_object().ok_or_else(|| FieldError {
        field: what.into(),
        problem: format!("expected an object, found {value}"),
    })?;
    obj.iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) => Ok((k.clone(), s.to_string())),
            None => Err(FieldError {
                field: format!("{what}.{k}"),
                problem: format!("expected a string, found {v}"),
            }),
        })
        .collect()
}

/// `["org:team", …]` or `["user", …]` lists.
pub fn parse_string_list(value: &Value, what: &str) -> Result<Vec<String>, FieldError> {
    let arr = value.as_array().ok_or_else(|| FieldError {
        field: what.into(),
        problem: format!("expected an array, found {value}"),
    })?;
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str().map(str::to_string).ok_or_else(|| FieldError {
                field: format!("{what}[{i}]"),
                problem: format!("expected a string, found {v}"),
            })
        })
        .collect()
}

/// An org as the org checks see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgView {
    pub org: String,
    /// user → `owner` | `admin` | `developer`.
    pub roster: BTreeMap<String, String>,
    pub teams: Vec<TeamView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamView {
    /// The team name without the org (`developers`).
    pub name: String,
    /// package → `read` | `write` (other values kept as given).
    pub packages: BTreeMap<String, String>,
}

/// Org, team and user segments: leading `@` removed, then percent-encoded like `encodeURIComponent`.
pub(super) fn escape_entity(name: &str) -> String {
    let name = name.strip_prefix('@').unwrap_or(name);
    let mut out = String::new();
    for b in name.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'~'
            | b'*'
            | b'\''
            | b'('
            | b')' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl RegistryClient {
    /// `GET /-/user/<user>/package`: packages a user can access, with `read` or `write`.
    pub async fn user_packages(
        &self,
        user: &str,
        cred: &Credential,
    ) -> Result<BTreeMap<String, String>, RegistryError> {
        self.string_map(
            "user_packages",
            &format!("/-/user/{}/package", escape_entity(user)),
            cred,
        )
        .await
    }

    /// `GET /-/org/<org>/package`. Unlike the npm CLI this never falls back to the user route on a 404:
    /// a missing org is an error for that org, not someone else's package list.
    pub async fn org_packages(
        &self,
        org: &str,
        cred: &Credential,
    ) -> Result<BTreeMap<String, String>, RegistryError> {
        self.string_map(
            "org_packages",
            &format!("/-/org/{}/package", escape_entity(org)),
            cred,
        )
        .await
    }

    /// `GET /-/org/<org>/user`: member → `owner` | `admin` | `developer`.
    pub async fn org_roster(
        &self,
        org: &str,
        cred: &Credential,
    ) -> Result<BTreeMap<String, String>, RegistryError> {
        self.string_map(
            "org_roster",
            &format!("/-/org/{}/user", escape_entity(org)),
            cred,
        )
        .await
    }

    /// `GET /-/org/<org>/team?format=cli`: team names, without the `org:` prefix.
    pub async fn org_teams(
        &self,
        org: &str,
        cred: &Credential,
    ) -> Result<Vec<String>, RegistryError> {
        const EP: &str = "org_teams";
        let url = self.endpoint_url(
            EP,
            &format!("/-/org/{}/team?format=cli", escape_entity(org)),
        )?;
        let body = self.get_json(EP, url, Some(cred)).await?;
        let list =
            parse_string_list(&body, "teams").map_err(|e| RegistryError::malformed(EP, e))?;
        Ok(list
            .into_iter()
            .map(|t| {
                t.trim_start_matches('@')
                    .split_once(':')
                    .map_or(t.clone(), |(_, team)| team.to_string())
            })
            .collect())
    }

    /// `GET /-/team/<org>/<team>/package`: package → `read` | `write`.
    pub async fn team_packages(
        &self,
        org: &str,
        team: &str,
        cred: &Credential,
    ) -> Result<BTreeMap<String, String>, RegistryError> {
        self.string_map(
            "team_packages",
            &format!(
                "/-/team/{}/{}/package",
                escape_entity(org),
                escape_entity(team)
            ),
            cred,
        )
        .await
    }

    async fn string_map(
        &self,
        endpoint: &'static str,
        path: &str,
        cred: &Credential,
    ) -> Result<BTreeMap<String, String>, RegistryError> {
        let url = self.endpoint_url(endpoint, path)?;
        let reply = self
            .get(endpoint, url, Some(cred), HeaderMap::new(), BodyKind::Api)
            .await?;
        // Straight into the map: a package list of a large account or org is the longest API
        // answer, and a JSON tree of it would cost several times the body. The tree is built only
        // when that fails, to name what is wrong.
        if let Ok(map) = serde_json::from_slice::<BTreeMap<String, String>>(&reply.body) {
            return Ok(map);
        }
        let body = parse_json(endpoint, &reply.body)?;
        parse_string_map(&body, endpoint).map_err(|e| RegistryError::malformed(endpoint, e))
    }
}
