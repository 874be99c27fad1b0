//! Trusted publishing and publishing access: `GET /-/package/<pkg>/trust` (behind 2FA) and
//! `POST /-/package/<pkg>/access` (the write-only "Require 2FA and disallow tokens" setting).
//!
//! The trust response shape is known from what the npm CLI reads, so it is read tolerantly: an entry
//! of a type this version does not know (npm keeps adding providers), or one with a missing or
//! unexpected field, is kept as an entry that is not understood ([`TrustConfig::not_understood`]),
//! never a failure of the whole list, and the scorecard says D2 cannot be judged for it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::http::{otp_headers, parse_json, BodyKind};
use super::{escape_package, FieldError, RegistryClient, RegistryError};
use crate::credential::Credential;

/// One trusted-publisher configuration (`GET /-/package/<pkg>/trust`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustConfig {
    pub id: Option<String>,
    /// `github`, `gitlab`, `circleci`, or a type this version does not know (shown, not rejected);
    /// `?` when the entry names none.
    pub kind: String,
    pub claims: Value,
    pub permissions: Vec<String>,
}

/// The claim each known provider's configuration must name to be understood.
const REQUIRED_CLAIM: [(&str, &str); 4] = [
    ("github", "repository"),
    ("gitlab", "project_path"),
    ("circleci", "oidc.circleci.com/org-id"),
    ("circleci", "oidc.circleci.com/project-id"),
];

impl TrustConfig {
    /// Why this entry cannot be judged, or `None` when its type is known and its claims have the
    /// shape that type has. Such an entry still counts as a configured trusted publisher (D1).
    pub fn not_understood(&self) -> Option<String> {
        if !matches!(self.kind.as_str(), "github" | "gitlab" | "circleci") {
            // The type is the registry's text, shown in the scorecard on a terminal: control
            // characters escaped, length bounded.
            let shown: String = self
                .kind
                .chars()
                .flat_map(char::escape_debug)
                .take(80)
                .collect();
            return Some(format!(
                "a trusted publisher of type `{shown}`, which this version of npm-watchdog does not know"
            ));
        }
        if !self.claims.is_object() {
            return Some(format!("a {} trusted publisher without claims", self.kind));
        }
        REQUIRED_CLAIM
            .iter()
            .filter(|(kind, _)| *kind == self.kind)
            .find(|(_, claim)| !self.claims[*claim].is_string())
            .map(|(kind, claim)| {
                format!("a {kind} trusted publisher whose `{claim}` claim is missing or not text")
            })
    }

    /// A short description: `github o/r release.yml env=prod`.
    pub fn describe(&self) -> String {
        let c = &self.claims;
        let s = |v: &Value| v.as_str().map(str::to_string);
        match self.kind.as_str() {
            "github" => format!(
                "github {} {}{}",
                s(&c["repository"]).unwrap_or_else(|| "?".into()),
                s(&c["workflow_ref"]["file"]).unwrap_or_else(|| "?".into()),
                s(&c["environment"])
                    .map(|e| format!(" environment={e}"))
                    .unwrap_or_default()
            ),
            "gitlab" => format!(
                "gitlab {} {}{}",
                s(&c["project_path"]).unwrap_or_else(|| "?".into()),
                s(&c["ci_config_ref_uri"]["file"]).unwrap_or_else(|| "?".into()),
                s(&c["environment"])
                    .map(|e| format!(" environment={e}"))
                    .unwrap_or_default()
            ),
            "circleci" => format!(
                "circleci org {} project {}{}",
                s(&c["oidc.circleci.com/org-id"]).unwrap_or_else(|| "?".into()),
                s(&c["oidc.circleci.com/project-id"]).unwrap_or_else(|| "?".into()),
                c["oidc.circleci.com/context-ids"]
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .map(|a| format!(" contexts={}", a.len()))
                    .unwrap_or_default()
            ),
            other => format!("{other} (id {})", self.id.as_deref().unwrap_or("?")),
        }
    }
}

pub fn parse_trust(value: &Value) -> Result<Vec<TrustConfig>, FieldError> {
    // The CLI accepts an array or a single object.
    let items: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![value],
        Value::Null => Vec::new(),
        other => {
            return Err(FieldError {
                field: "trust".into(),
                problem: format!("expected an array, found {other}"),
            })
        }
    };
    Ok(items.into_iter().map(parse_entry).collect())
}

/// One entry, as far as it can be read: what is missing or of another shape is left for
/// [`TrustConfig::not_understood`] to name, so one odd entry does not hide the others.
fn parse_entry(v: &Value) -> TrustConfig {
    let text = |v: &Value| v.as_str().map(str::to_string);
    let mut claims = v.get("claims").cloned().unwrap_or(Value::Null);
    // Some answers give `environment` beside `claims` rather than inside it.
    if let (Some(map), Some(env)) = (claims.as_object_mut(), v.get("environment")) {
        if env.is_string() && !map.contains_key("environment") {
            map.insert("environment".into(), env.clone());
        }
    }
    TrustConfig {
        id: v.get("id").and_then(text),
        kind: v.get("type").and_then(text).unwrap_or_else(|| "?".into()),
        claims,
        permissions: v
            .get("permissions")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(text).collect())
            .unwrap_or_default(),
    }
}

impl RegistryClient {
    /// `GET /-/package/<pkg>/trust`. npm puts this behind 2FA: without `otp` expect
    /// [`RegistryError::OtpRequired`], which means "unknown", never "none configured".
    pub async fn trust(
        &self,
        name: &str,
        cred: &Credential,
        otp: Option<&str>,
    ) -> Result<Vec<TrustConfig>, RegistryError> {
        const EP: &str = "trust";
        let url = self.endpoint_url(EP, &format!("/-/package/{}/trust", escape_package(name)))?;
        let reply = self
            .get(EP, url, Some(cred), otp_headers(otp), BodyKind::Api)
            .await?;
        let body = parse_json(EP, &reply.body)?;
        parse_trust(&body).map_err(|e| RegistryError::malformed(EP, e))
    }

    /// `POST /-/package/<pkg>/access` with "Require 2FA and disallow tokens". Never retried.
    pub async fn require_2fa_disallow_tokens(
        &self,
        name: &str,
        cred: &Credential,
        otp: Option<&str>,
    ) -> Result<(), RegistryError> {
        const EP: &str = "access";
        let url = self.endpoint_url(EP, &format!("/-/package/{}/access", escape_package(name)))?;
        /// Field order as npm sends it (a `json!` map would sort the keys).
        #[derive(serde::Serialize)]
        struct Body {
            publish_requires_tfa: bool,
            automation_token_overrides_tfa: bool,
        }
        let body = Body {
            publish_requires_tfa: true,
            automation_token_overrides_tfa: false,
        };
        self.post_json(EP, url, cred, otp, &body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn trust_configs_of_every_kind_including_unknown() {
        let v = json!([
            {"id": "t1", "type": "github", "claims": {"repository": "o/r", "workflow_ref": {"file": "release.yml"}, "environment": "prod"}, "permissions": ["createPackage"]},
            {"id": "t2", "type": "circleci", "claims": {"oidc.circleci.com/org-id": "o-1", "oidc.circleci.com/project-id": "p-1", "oidc.circleci.com/context-ids": ["c-1"]}},
            {"id": "t3", "type": "buildkite", "claims": {"organization_slug": "acme"}}
        ]);
        let t = parse_trust(&v).expect("parse");
        assert_eq!(t[0].describe(), "github o/r release.yml environment=prod");
        assert_eq!(t[1].describe(), "circleci org o-1 project p-1 contexts=1");
        assert_eq!(t[2].describe(), "buildkite (id t3)");
        assert_eq!(t[0].not_understood(), None);
        assert_eq!(t[1].not_understood(), None);
        assert_eq!(
            t[2].not_understood().as_deref(),
            Some("a trusted publisher of type `buildkite`, which this version of npm-watchdog does not know")
        );
        assert_eq!(
            parse_trust(&json!({"type": "gitlab", "claims": {}}))
                .expect("one")
                .len(),
            1
        );
        assert!(parse_trust(&json!("nonsense")).is_err());
    }

    /// A hostile type cannot write to the terminal: control characters are escaped, length bounded.
    #[test]
    fn an_unknown_type_is_shown_inert() {
        let t = parse_trust(&json!([{"type": format!("x\u{1b}[2J\n{}", "y".repeat(500))}]))
            .expect("a list");
        let why = t[0].not_understood().expect("not understood");
        assert!(!why.chars().any(char::is_control), "{why:?}");
        assert!(why.contains("x\\u{1b}[2J\\n"), "{why}");
        assert!(why.len() < 200, "{}", why.len());
    }

    /// One odd entry is one entry not understood; the others are read as usual.
    #[test]
    fn an_odd_entry_is_not_understood_and_the_others_stand() {
        let t = parse_trust(&json!([
            {"id": "x"},
            {"id": "y", "type": "github", "claims": "repo o/r"},
            {"id": "z", "type": "gitlab", "claims": {"project_path": 7}},
            {"id": "ok", "type": "github", "claims": {"repository": "o/r", "workflow_ref": {"file": "r.yml"}},
             "environment": "release"},
        ]))
        .expect("a list");
        let why: Vec<Option<String>> = t.iter().map(TrustConfig::not_understood).collect();
        assert_eq!(
            why,
            [
                Some("a trusted publisher of type `?`, which this version of npm-watchdog does not know".into()),
                Some("a github trusted publisher without claims".into()),
                Some("a gitlab trusted publisher whose `project_path` claim is missing or not text".into()),
                None,
            ]
        );
        assert_eq!(
            t[3].claims["environment"], "release",
            "environment beside claims is read"
        );
        assert_eq!(t[3].describe(), "github o/r r.yml environment=release");
    }
}
