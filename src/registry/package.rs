//! Typed views of packuments, trust configurations and org data.
//!
//! A full packument can be megabytes (every version's manifest); only what the checks need is kept:
//! per version `_npmUser` (with `trustedPublisher`), `dist.attestations` and the publish time, plus
//! `maintainers` and `dist-tags`. Everything else is skipped while parsing. Field shapes beyond what the
//! npm CLI reads are inferred from public packuments (`trustedPublisher` values other than GitHub's are
//! not documented), so all of it is optional and unknown fields are ignored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::model::FieldError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// `versions[v]._npmUser.trustedPublisher`: present when the version was published through OIDC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedPublisher {
    /// `github` is documented; `gitlab` and `circleci` are assumed by analogy.
    pub id: String,
    #[serde(
        default,
        rename = "oidcConfigId",
        skip_serializing_if = "Option::is_none"
    )]
    pub oidc_config_id: Option<String>,
}

/// One version as the publish checks see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    pub published: Option<DateTime<Utc>>,
    /// `_npmUser.name`: the account (or CI identity) that published.
    pub publisher: Option<String>,
    pub trusted_publisher: Option<TrustedPublisher>,
    /// `dist.attestations.provenance.predicateType`, when the version carries provenance.
    pub provenance: Option<String>,
    /// The version carries a `deprecated` message.
    #[serde(default)]
    pub deprecated: bool,
}

/// The slim packument kept in memory and in state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packument {
    pub name: String,
    pub dist_tags: BTreeMap<String, String>,
    pub maintainers: Vec<Person>,
    /// Sorted by publish time, oldest first (versions without a time first).
    pub versions: Vec<VersionInfo>,
    pub unpublished: bool,
}

impl Packument {
    pub fn latest(&self) -> Option<&VersionInfo> {
        let tag = self.dist_tags.get("latest")?;
        self.versions.iter().find(|v| &v.version == tag)
    }

    pub fn maintainer_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.maintainers.iter().map(|p| p.name.clone()).collect();
        names.sort();
        names.dedup();
        names
    }
}

#[derive(Deserialize)]
struct RawPackument {
    name: Option<String>,
    #[serde(rename = "dist-tags", default)]
    dist_tags: BTreeMap<String, String>,
    #[serde(default)]
    maintainers: Option<Vec<RawPerson>>,
    #[serde(default)]
    versions: BTreeMap<String, RawVersion>,
    #[serde(default)]
    time: BTreeMap<String, Value>,
}

/// Maintainers and `_npmUser` appear both as objects and, in old documents, as `"name <email>"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawPerson {
    Object {
        name: Option<String>,
        email: Option<String>,
    },
    Text(String),
}

impl RawPerson {
    fn into_person(self) -> Option<Person> {
        match self {
            RawPerson::Object {
                name: Some(name),
                email,
            } => Some(Person { name, email }),
            RawPerson::Object { name: None, .. } => None,
            RawPerson::Text(t) => {
                let (name, email) = match t.split_once('<') {
                    Some((n, rest)) => (
                        n.trim().to_string(),
                        Some(rest.trim_end_matches('>').trim().to_string()),
                    ),
                    None => (t.trim().to_string(), None),
                };
                (!name.is_empty()).then_some(Person { name, email })
            }
        }
    }
}

#[derive(Deserialize)]
struct RawVersion {
    #[serde(rename = "_npmUser")]
    npm_user: Option<RawNpmUser>,
    dist: Option<RawDist>,
    /// A message string when deprecated (some registries send `false` or `""` otherwise).
    deprecated: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawNpmUser {
    Object {
        name: Option<String>,
        #[serde(rename = "trustedPublisher")]
        trusted_publisher: Option<TrustedPublisher>,
    },
    Text(String),
}

#[derive(Deserialize)]
struct RawDist {
    attestations: Option<RawAttestations>,
}

#[derive(Deserialize)]
struct RawAttestations {
    provenance: Option<RawProvenance>,
}

#[derive(Deserialize)]
struct RawProvenance {
    #[serde(rename = "predicateType")]
    predicate_type: Option<String>,
}

/// Parse a full packument (as bytes, so the document is never kept as a JSON tree).
pub fn parse_packument(bytes: &[u8], requested: &str) -> Result<Packument, FieldError> {
    let raw: RawPackument = serde_json::from_slice(bytes).map_err(|e| FieldError {
        field: "packument".into(),
        problem: e.to_string(),
    })?;
    let name = raw.name.unwrap_or_else(|| requested.to_string());
    let unpublished = raw.time.get("unpublished").is_some_and(Value::is_object);
    let mut times = BTreeMap::new();
    for (k, v) in &raw.time {
        if let Some(s) = v.as_str() {
            let t = DateTime::parse_from_rfc3339(s).map_err(|e| FieldError {
                field: format!("time.{k}"),
                problem: format!("`{s}` is not an ISO 8601 time ({e})"),
            })?;
            times.insert(k.clone(), t.with_timezone(&Utc));
        }
    }
    let mut versions: Vec<VersionInfo> = raw
        .versions
        .into_iter()
        .map(|(version, v)| {
            let (publisher, trusted_publisher) = match v.npm_user {
                Some(RawNpmUser::Object {
                    name,
                    trusted_publisher,
                }) => (name, trusted_publisher),
                Some(RawNpmUser::Text(t)) => {
                    (RawPerson::Text(t).into_person().map(|p| p.name), None)
                }
                None => (None, None),
            };
            VersionInfo {
                published: times.get(&version).copied(),
                publisher,
                trusted_publisher,
                provenance: v
                    .dist
                    .and_then(|d| d.attestations)
                    .and_then(|a| a.provenance)
                    .and_then(|p| p.predicate_type),
                deprecated: match &v.deprecated {
                    Some(Value::String(m)) => !m.is_empty(),
                    Some(Value::Bool(b)) => *b,
                    _ => false,
                },
                version,
            }
        })
        .collect();
    versions.sort_by(|a, b| {
        a.published
            .cmp(&b.published)
            .then_with(|| a.version.cmp(&b.version))
    });
    Ok(Packument {
        name,
        dist_tags: raw.dist_tags,
        maintainers: raw
            .maintainers
            .unwrap_or_default()
            .into_iter()
            .filter_map(RawPerson::into_person)
            .collect(),
        versions,
        unpublished,
    })
}

/// The provenance statement's source, from `GET /-/npm/v1/attestations/<name>@<version>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenanceSource {
    /// `https://github.com/owner/repo` (GitHub) as the statement gives it.
    pub repository: Option<String>,
    /// `.github/workflows/release.yml` (GitHub).
    pub workflow_path: Option<String>,
}

/// Read the provenance statement out of an attestations reply:
/// `{attestations:[{predicateType, bundle:{dsseEnvelope:{payload: base64 in-toto statement}}}]}`.
/// Only the SLSA provenance attestation is read; `Ok(None)` when there is none. The statement's shape
/// below `predicate` is what npm's own provenance code writes for GitHub; other CI systems may lack it.
pub fn parse_provenance(value: &Value) -> Result<Option<ProvenanceSource>, FieldError> {
    use base64::Engine as _;
    let Some(list) = value.get("attestations").and_then(Value::as_array) else {
        return Err(FieldError {
            field: "attestations".into(),
            problem: "missing or not an array".into(),
        });
    };
    let Some(att) = list.iter().find(|a| {
        a.get("predicateType")
            .and_then(Value::as_str)
            .is_some_and(|t| t.starts_with("https://slsa.dev/provenance/"))
    }) else {
        return Ok(None);
    };
    let payload = att["bundle"]["dsseEnvelope"]["payload"]
        .as_str()
        .ok_or_else(|| FieldError {
            field: "attestations[].bundle.dsseEnvelope.payload".into(),
            problem: "missing".into(),
        })?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| FieldError {
            field: "attestations[].bundle.dsseEnvelope.payload".into(),
            problem: format!("not base64 ({e})"),
        })?;
    let statement: Value = serde_json::from_slice(&decoded).map_err(|e| FieldError {
        field: "attestations[].bundle.dsseEnvelope.payload".into(),
        problem: format!("not a JSON statement ({e})"),
    })?;
    let wf = &statement["predicate"]["buildDefinition"]["externalParameters"]["workflow"];
    Ok(Some(ProvenanceSource {
        repository: wf["repository"].as_str().map(str::to_string),
        workflow_path: wf["path"].as_str().map(str::to_string),
    }))
}

/// One trusted-publisher configuration (`GET /-/package/<pkg>/trust`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustConfig {
    pub id: Option<String>,
    /// `github`, `gitlab`, `circleci`, or a type this version does not know (shown, not rejected).
    pub kind: String,
    pub claims: Value,
    pub permissions: Vec<String>,
}

impl TrustConfig {
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
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let kind = v
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| FieldError {
                    field: format!("trust[{i}].type"),
                    problem: "missing".into(),
                })?
                .to_string();
            Ok(TrustConfig {
                id: v.get("id").and_then(Value::as_str).map(str::to_string),
                kind,
                claims: v.get("claims").cloned().unwrap_or(Value::Null),
                permissions: v
                    .get("permissions")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| p.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

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

/// The name escaping of package routes: only the first `/` becomes `%2f`; `@` stays.
pub fn escape_package(name: &str) -> String {
    name.replacen('/', "%2f", 1)
}

/// Org, team and user segments: leading `@` removed, then percent-encoded like `encodeURIComponent`.
pub fn escape_entity(name: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slim_packument_keeps_what_checks_need() {
        let doc = json!({
            "_id": "@acme/a", "_rev": "12-abc", "name": "@acme/a",
            "dist-tags": {"latest": "1.1.0"},
            "maintainers": [{"name": "alice", "email": "a@example.com"}, "bob <b@example.com>"],
            "time": {"created": "2025-01-01T00:00:00.000Z", "modified": "2026-03-01T00:00:00.000Z",
                     "1.0.0": "2025-01-01T00:00:00.000Z", "1.1.0": "2026-03-01T00:00:00.000Z"},
            "versions": {
                "1.0.0": {"name": "@acme/a", "version": "1.0.0", "readme": "x".repeat(1000),
                          "_npmUser": {"name": "alice", "email": "a@example.com"},
                          "dist": {"tarball": "t", "integrity": "sha512-x"}},
                "1.1.0": {"name": "@acme/a", "version": "1.1.0",
                          "_npmUser": {"name": "GitHub Actions", "email": "npm-oidc-no-reply@github.com",
                                       "trustedPublisher": {"id": "github", "oidcConfigId": "oidc:0b0e"}},
                          "dist": {"attestations": {"url": "https://registry.npmjs.org/-/npm/v1/attestations/@acme%2fa@1.1.0",
                                                    "provenance": {"predicateType": "https://slsa.dev/provenance/v1"}}}}
            }
        });
        let p = parse_packument(doc.to_string().as_bytes(), "@acme/a").expect("parse");
        assert_eq!(p.maintainer_names(), vec!["alice", "bob"]);
        assert_eq!(p.versions.len(), 2);
        assert_eq!(p.versions[0].publisher.as_deref(), Some("alice"));
        assert!(p.versions[0].trusted_publisher.is_none());
        let latest = p.latest().expect("latest");
        assert_eq!(
            latest.trusted_publisher.as_ref().map(|t| t.id.as_str()),
            Some("github")
        );
        assert_eq!(
            latest.provenance.as_deref(),
            Some("https://slsa.dev/provenance/v1")
        );
        assert!(!p.unpublished);
    }

    /// What is kept of a multi-megabyte document is a few hundred bytes per version.
    #[test]
    fn a_large_packument_is_kept_small() {
        let mut versions = serde_json::Map::new();
        let mut time = serde_json::Map::new();
        for i in 0..50 {
            let v = format!("1.0.{i}");
            time.insert(v.clone(), json!("2026-02-01T00:00:00.000Z"));
            versions.insert(
                v.clone(),
                json!({"name": "big", "version": v, "readme": "r".repeat(60_000),
                       "dependencies": {"a": "1"}, "_npmUser": {"name": "alice"}, "dist": {"tarball": "t"}}),
            );
        }
        let doc = json!({"name": "big", "readme": "x".repeat(2_000_000), "versions": versions, "time": time,
                         "dist-tags": {"latest": "1.0.49"}, "maintainers": [{"name": "alice"}]});
        let bytes = doc.to_string().into_bytes();
        assert!(bytes.len() > 5_000_000);
        let slim = parse_packument(&bytes, "big").expect("parse");
        let kept = serde_json::to_vec(&slim).expect("json").len();
        assert_eq!(slim.versions.len(), 50);
        assert!(kept < 10_000, "kept {kept} bytes of {}", bytes.len());
    }

    #[test]
    fn bad_time_names_the_field() {
        let err =
            parse_packument(br#"{"name":"a","time":{"1.0.0":"soon"}}"#, "a").expect_err("time");
        assert!(
            err.to_string().starts_with("time.1.0.0: `soon` is not"),
            "{err}"
        );
    }

    #[test]
    fn unpublished_package() {
        let p = parse_packument(
            br#"{"name":"gone","time":{"created":"2025-01-01T00:00:00Z","unpublished":{"time":"2025-02-01T00:00:00Z","versions":["1.0.0"]}}}"#,
            "gone",
        )
        .expect("parse");
        assert!(p.unpublished);
        assert!(p.versions.is_empty());
    }

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
        assert_eq!(
            parse_trust(&json!({"type": "gitlab", "claims": {}}))
                .expect("one")
                .len(),
            1
        );
        assert!(parse_trust(&json!([{"id": "x"}])).is_err());
    }

    #[test]
    fn provenance_statement_names_repository_and_workflow() {
        use base64::Engine as _;
        let statement = json!({"_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "pkg:npm/%40acme/a@1.1.0"}],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {"buildDefinition": {"externalParameters": {"workflow": {
                "repository": "https://github.com/acme/a", "path": ".github/workflows/release.yml", "ref": "refs/heads/main"}}}}});
        let payload = base64::engine::general_purpose::STANDARD.encode(statement.to_string());
        let reply = json!({"attestations": [
            {"predicateType": "https://github.com/npm/attestation/tree/main/specs/publish/v0.1", "bundle": {}},
            {"predicateType": "https://slsa.dev/provenance/v1", "bundle": {"dsseEnvelope": {"payload": payload, "signatures": []}}}
        ]});
        let src = parse_provenance(&reply)
            .expect("parse")
            .expect("provenance");
        assert_eq!(src.repository.as_deref(), Some("https://github.com/acme/a"));
        assert_eq!(
            src.workflow_path.as_deref(),
            Some(".github/workflows/release.yml")
        );
        assert_eq!(
            parse_provenance(&json!({"attestations": []})).expect("empty"),
            None
        );
        assert!(parse_provenance(&json!({})).is_err());
    }

    #[test]
    fn escaping_follows_the_cli() {
        assert_eq!(escape_package("@a/b"), "@a%2fb");
        assert_eq!(escape_package("plain"), "plain");
        assert_eq!(escape_entity("@myorg"), "myorg");
        assert_eq!(escape_entity("dev team"), "dev%20team");
    }
}
