//! Packuments and provenance: `GET /<pkg>` (the full document, conditional on its ETag) and
//! `GET /-/npm/v1/attestations/<pkg>@<version>`, with the slim view the checks read.
//!
//! A full packument can be megabytes (every version's manifest); only what the checks need is kept:
//! per version `_npmUser` (with `trustedPublisher`), `dist.attestations` and the publish time, plus
//! `maintainers` and `dist-tags`. Everything else is skipped while parsing. Field shapes beyond what the
//! npm CLI reads are inferred from public packuments (`trustedPublisher` values other than GitHub's are
//! not documented), so all of it is optional and unknown fields are ignored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::http::BodyKind;
use super::{escape_package, FieldError, RegistryClient, RegistryError};
use crate::credential::Credential;

/// A packument fetch: unchanged since the stored ETag, or a fresh slim copy.
#[derive(Debug)]
pub enum Fetched {
    NotModified,
    Fresh {
        packument: Packument,
        etag: Option<String>,
        /// Size of the full document as received.
        bytes: usize,
    },
}

/// A maintainer, by account name: no check reads the e-mail address, so it is not kept (copies
/// stored with one still read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub name: String,
}

/// `versions[v]._npmUser.trustedPublisher`: present when the version was published through OIDC.
/// Only `id` is kept (`oidcConfigId` is read by no check; copies stored with it still read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedPublisher {
    /// `github` is documented; `gitlab` and `circleci` are assumed by analogy.
    pub id: String,
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
    /// `dist-tags.latest`: no check reads another tag. Stored as the one-entry `dist_tags` map that
    /// earlier versions wrote (a one-entry `BTreeMap` allocates room for eleven), so state files stay
    /// readable both ways.
    #[serde(rename = "dist_tags", with = "latest_tag")]
    pub latest_tag: Option<String>,
    pub maintainers: Vec<Person>,
    /// Sorted by publish time, oldest first (versions without a time first).
    pub versions: Vec<VersionInfo>,
    pub unpublished: bool,
    /// Versions published at or before this time were left out (all but the latest), because no
    /// check looks at them: a package with hundreds of old releases costs what its recent ones do.
    /// `None`: every version is here (and copies stored before this field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_since: Option<DateTime<Utc>>,
}

impl Packument {
    /// Whether this copy holds every version published after `since` (a stored copy slimmed with a
    /// later cutoff does not, after `policy.trusted_publishing_since` moved earlier).
    pub fn covers(&self, since: DateTime<Utc>) -> bool {
        self.kept_since.is_none_or(|kept| kept <= since)
    }

    pub fn latest(&self) -> Option<&VersionInfo> {
        let tag = self.latest_tag.as_deref()?;
        self.versions.iter().find(|v| v.version == tag)
    }

    pub fn maintainer_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.maintainers.iter().map(|p| p.name.clone()).collect();
        names.sort();
        names.dedup();
        names
    }
}

/// `{"latest": "<version>"}` on disk, `Some(version)` in memory.
mod latest_tag {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(tag: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(tag.iter().map(|v| ("latest", v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(BTreeMap::<String, String>::deserialize(d)?.remove("latest"))
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
    Object { name: Option<String> },
    Text(String),
}

impl RawPerson {
    fn into_person(self) -> Option<Person> {
        match self {
            RawPerson::Object { name: Some(name) } => Some(Person { name }),
            RawPerson::Object { name: None } => None,
            RawPerson::Text(t) => {
                // `name <email> (url)`: the name is what comes before the address.
                let name = t.split(['<', '(']).next().unwrap_or("").trim().to_string();
                (!name.is_empty()).then_some(Person { name })
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

/// Parse a full packument (as bytes, straight into the slim view: the document is never kept as a
/// JSON tree, and what the checks do not read is skipped while parsing). Every version is kept.
pub fn parse_packument(bytes: &[u8], requested: &str) -> Result<Packument, FieldError> {
    parse(bytes, requested, None)
}

/// [`parse_packument`]; with `since`, only the latest version and those published after it are kept.
fn parse(
    bytes: &[u8],
    requested: &str,
    since: Option<DateTime<Utc>>,
) -> Result<Packument, FieldError> {
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
    let latest_tag = raw.dist_tags.get("latest").cloned();
    let wanted = |version: &String| match since {
        None => true,
        Some(since) => {
            latest_tag.as_ref() == Some(version) || times.get(version).is_some_and(|t| *t > since)
        }
    };
    let mut versions: Vec<VersionInfo> = raw
        .versions
        .into_iter()
        .filter(|(version, _)| wanted(version))
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
    // Filtered collections start with room for four: trimmed, as these copies live for the cycle
    // and thousands of them are held at once.
    versions.shrink_to_fit();
    let mut maintainers: Vec<Person> = raw
        .maintainers
        .unwrap_or_default()
        .into_iter()
        .filter_map(RawPerson::into_person)
        .collect();
    maintainers.shrink_to_fit();
    Ok(Packument {
        name,
        latest_tag,
        kept_since: since,
        maintainers,
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

impl RegistryClient {
    /// `GET /<pkg>` (the full document), conditional on `etag` when one is stored; every version kept.
    pub async fn packument(
        &self,
        name: &str,
        cred: Option<&Credential>,
        etag: Option<&str>,
    ) -> Result<Fetched, RegistryError> {
        self.packument_since(name, cred, etag, None).await
    }

    /// [`Self::packument`], keeping only the latest version and those published after `since`
    /// (when given): no check looks at older ones.
    pub async fn packument_since(
        &self,
        name: &str,
        cred: Option<&Credential>,
        etag: Option<&str>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Fetched, RegistryError> {
        const EP: &str = "packument";
        let url = self.endpoint_url(EP, &format!("/{}", escape_package(name)))?;
        let mut headers = HeaderMap::new();
        if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(t).ok()) {
            headers.insert(IF_NONE_MATCH, tag);
        }
        let reply = self
            .get(EP, url, cred, headers, BodyKind::Packument)
            .await?;
        if reply.status == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        let packument =
            parse(&reply.body, name, since).map_err(|e| RegistryError::malformed(EP, e))?;
        Ok(Fetched::Fresh {
            packument,
            etag: reply
                .headers
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            bytes: reply.body.len(),
        })
    }

    /// The repository and workflow named by a version's provenance statement, if it has one.
    pub async fn provenance_source(
        &self,
        name: &str,
        version: &str,
        cred: Option<&Credential>,
    ) -> Result<Option<ProvenanceSource>, RegistryError> {
        const EP: &str = "attestations";
        let url = self.endpoint_url(
            EP,
            &format!("/-/npm/v1/attestations/{}@{version}", escape_package(name)),
        )?;
        let body = match self.get_json(EP, url, cred).await {
            Ok(b) => b,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        parse_provenance(&body).map_err(|e| RegistryError::malformed(EP, e))
    }
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

    /// A slim copy stored by an earlier version (every dist-tag kept) still reads, and what is
    /// stored now reads back the same.
    #[test]
    fn stored_copies_read_across_versions() {
        let old = json!({
            "name": "a", "dist_tags": {"latest": "1.1.0", "next": "2.0.0-rc.1"},
            "maintainers": [{"name": "alice", "email": "a@example.com"}], "unpublished": false,
            "versions": [{"version": "1.1.0", "published": "2026-03-01T00:00:00Z", "publisher": "ci",
                          "trusted_publisher": {"id": "github", "oidcConfigId": "oidc:0b0e"},
                          "provenance": null, "deprecated": false}]
        });
        let p: Packument = serde_json::from_value(old).expect("old format");
        assert_eq!(p.latest_tag.as_deref(), Some("1.1.0"));
        assert_eq!(p.latest().map(|v| v.version.as_str()), Some("1.1.0"));
        assert_eq!(p.maintainer_names(), vec!["alice"]);
        assert_eq!(
            p.latest().and_then(|v| v.trusted_publisher.as_ref()),
            Some(&TrustedPublisher {
                id: "github".into()
            })
        );
        let stored = serde_json::to_value(&p).expect("json");
        assert_eq!(stored["dist_tags"], json!({"latest": "1.1.0"}));
        assert_eq!(
            serde_json::from_value::<Packument>(stored).expect("new format"),
            p
        );
        let untagged = Packument {
            latest_tag: None,
            ..p
        };
        let stored = serde_json::to_value(&untagged).expect("json");
        assert_eq!(stored["dist_tags"], json!({}));
        assert_eq!(
            serde_json::from_value::<Packument>(stored).expect("no tag"),
            untagged
        );
    }

    /// With a cutoff, only the latest version and later ones are kept, and the copy says so.
    #[test]
    fn a_cutoff_keeps_the_latest_and_later_versions_only() {
        let mut versions = serde_json::Map::new();
        let mut time = serde_json::Map::new();
        for (v, t) in [
            ("1.0.0", "2025-01-01T00:00:00.000Z"),
            ("1.1.0", "2025-06-01T00:00:00.000Z"),
            ("2.0.0-rc.1", "2026-03-01T00:00:00.000Z"),
            ("1.2.0", "2025-12-31T23:59:59.000Z"),
        ] {
            time.insert(v.into(), json!(t));
            versions.insert(v.into(), json!({"_npmUser": {"name": "alice"}}));
        }
        versions.insert("0.0.1".into(), json!({"_npmUser": {"name": "alice"}}));
        let doc = json!({"name": "a", "dist-tags": {"latest": "1.2.0", "next": "2.0.0-rc.1"},
                         "time": time, "versions": versions});
        let cutoff = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let p = parse(doc.to_string().as_bytes(), "a", Some(cutoff)).expect("parse");
        let kept: Vec<&str> = p.versions.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(kept, vec!["1.2.0", "2.0.0-rc.1"]);
        assert_eq!(p.latest().map(|v| v.version.as_str()), Some("1.2.0"));
        assert_eq!(p.kept_since, Some(cutoff));
        assert!(p.covers(cutoff));
        assert!(p.covers(cutoff + chrono::Duration::days(1)));
        assert!(!p.covers(cutoff - chrono::Duration::days(1)));
        // Stored and read back, it still says what it left out.
        let back: Packument =
            serde_json::from_slice(&serde_json::to_vec(&p).expect("json")).expect("read back");
        assert_eq!(back, p);
        // Without a cutoff every version is kept, and the copy covers any cutoff.
        let all = parse_packument(doc.to_string().as_bytes(), "a").expect("parse");
        assert_eq!(all.versions.len(), 5);
        assert!(all.covers(DateTime::<Utc>::MIN_UTC));
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
}
