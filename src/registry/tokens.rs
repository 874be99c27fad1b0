//! Tokens and the account: `GET /-/npm/v1/tokens` (paginated), `GET /-/npm/v1/user` and
//! `GET /-/whoami`, with the typed views of what they return.
//!
//! The token list differs between npmjs.com classic tokens, npmjs.com granular tokens and Verdaccio
//! (`cidr_whitelist` vs `cidr`, `expiry` vs `expires`, `readonly` vs `permissions`). Most granular fields
//! are known only from a posted CLI output, not from a published schema, so every field except `key` is
//! optional and unknown fields are ignored. What is present must have the right type: a `created` that is
//! not a date is an error naming the field, never a silently dropped value.
//!
//! A page is parsed without a JSON tree of it: `objects` is split into the raw text of each object
//! (borrowed from the body), and each is parsed on its own into the typed view, so that an error
//! still names `objects[i]` while a long page costs little more than its body.

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::http::BodyKind;
use super::{FieldError, RegistryClient, RegistryError};
use crate::credential::Credential;

/// Upper bound on token-list pages, against a registry whose `next` links go round in circles.
pub const MAX_TOKEN_PAGES: usize = 1000;

/// Raw token object as the registry sends it. All optional: see the module comment.
#[derive(Debug, Deserialize)]
struct RawToken {
    key: Option<String>,
    name: Option<String>,
    description: Option<String>,
    created: Option<String>,
    updated: Option<String>,
    accessed: Option<String>,
    /// Granular tokens (npmjs.com).
    expiry: Option<String>,
    /// Some servers and the create response use `expires`.
    expires: Option<String>,
    readonly: Option<bool>,
    /// Classic tokens.
    cidr_whitelist: Option<Vec<String>>,
    /// Granular tokens and Verdaccio.
    cidr: Option<Vec<String>>,
    bypass_2fa: Option<bool>,
    permissions: Option<Vec<RawPermission>>,
    scopes: Option<Vec<RawScope>>,
    /// Revocation time on granular tokens; a revoked token cannot be used, so it is skipped.
    revoked: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct RawPermission {
    action: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawScope {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// What a token may do. `Unknown` is treated like `Write` by every check: an unreadable grant is not a safe one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    ReadOnly,
    ReadWrite,
    Unknown,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::ReadOnly => "read-only",
            Access::ReadWrite => "read-write",
            Access::Unknown => "unknown",
        }
    }

    pub fn can_write(self) -> bool {
        self != Access::ReadOnly
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenKind {
    /// Legacy token objects (also what Verdaccio lists).
    Classic,
    /// Granular access tokens: carry permissions, scopes, expiry or the bypass-2FA flag.
    Granular,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Classic => "classic",
            TokenKind::Granular => "granular",
        }
    }
}

/// One token of the account. Holds no secret: `key` is the revoke handle, not the credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub key: String,
    /// Shortest unique key prefix of at least 6 characters, as `npm token list` shows it.
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub kind: TokenKind,
    pub access: Access,
    pub bypass_2fa: bool,
    pub cidr: Vec<String>,
    pub created: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
    pub accessed: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    /// `package:<name>`, `scope:<name>` … as the registry lists them.
    pub scopes: Vec<String>,
}

impl Token {
    /// Past its expiry at `now`. npmjs.com keeps listing a token after it expires; it can no longer
    /// be used, so it is not live (docs/NPM-CONTRACT.md).
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    /// `token 82e393 (bulk-hardening)`: how alerts name a token. The name is whatever its creator
    /// typed: shown inert ([`crate::inert::show`]).
    pub fn label(&self) -> String {
        let id = crate::inert::show(&self.id);
        match &self.name {
            Some(n) if !n.is_empty() => format!("token {id} ({})", crate::inert::show(n)),
            _ => format!("token {id}"),
        }
    }
}

fn parse_time(field: String, value: Option<String>) -> Result<Option<DateTime<Utc>>, FieldError> {
    match value.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| FieldError {
                field,
                problem: format!("`{s}` is not an ISO 8601 time ({e})"),
            }),
    }
}

/// Parse one page's `objects` array given as JSON values (the checks' fixtures); `offset` is the
/// index of its first object in the whole list. The client reads pages with [`parse_page`].
#[cfg(test)]
pub fn parse_tokens(objects: &[Value], offset: usize) -> Result<Vec<Token>, FieldError> {
    objects
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            let index = offset + i;
            serde_json::from_value(v.clone())
                .map_err(|e| object_error(index, e))
                .and_then(|raw| token_from_raw(raw, index))
                .transpose()
        })
        .collect()
}

fn object_error(index: usize, e: serde_json::Error) -> FieldError {
    FieldError {
        field: format!("objects[{index}]"),
        problem: e.to_string(),
    }
}

/// One page of the token list as read: the tokens on it and the link to the next page.
#[derive(Debug)]
pub(super) struct Page {
    pub(super) tokens: Vec<Token>,
    pub(super) next: Option<String>,
}

/// The page as sent, with each object left as raw text for [`parse_page`] to parse one by one.
#[derive(Deserialize)]
struct RawPage<'a> {
    #[serde(borrow, default)]
    objects: Option<&'a RawValue>,
    /// A small object (`{next, prev}`), kept as a tree so that a `next` of the wrong type can be
    /// shown. `Some(Null)` for `"urls": null`, which is present (and has no `next`), not missing.
    #[serde(default, deserialize_with = "present")]
    urls: Option<Value>,
}

/// Whatever value is there, `null` included, as `Some`; an absent key stays `None` (the default).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Parse one page of `GET /-/npm/v1/tokens`; `offset` is the index of its first object in the whole
/// list. Errors are the problem alone; the caller adds the endpoint and the page number.
pub(super) fn parse_page(body: &[u8], offset: usize) -> Result<Page, String> {
    // serde would read a struct from an array too, by position; a page is an object.
    if body.trim_ascii_start().starts_with(b"[") {
        return Err("not a token-list page (an array, not an object)".into());
    }
    let raw: RawPage = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            format!("not a token-list page ({e})")
        } else {
            format!("body is not JSON ({e})")
        }
    })?;
    let objects: Vec<&RawValue> = raw
        .objects
        .and_then(|o| serde_json::from_str(o.get()).ok())
        .ok_or_else(|| "`objects` is missing or not an array".to_string())?;
    let mut tokens = Vec::with_capacity(objects.len());
    for (i, object) in objects.into_iter().enumerate() {
        let index = offset + i;
        let raw: RawToken =
            serde_json::from_str(object.get()).map_err(|e| object_error(index, e).to_string())?;
        if let Some(token) = token_from_raw(raw, index).map_err(|e| e.to_string())? {
            tokens.push(token);
        }
    }
    // npm throws when `urls` is missing; a daemon that met one would rather say so than guess.
    let urls = raw.urls.ok_or_else(|| "`urls` is missing".to_string())?;
    let next = match urls.get("next") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(format!("`urls.next` should be a string, found {other}")),
    };
    Ok(Page { tokens, next })
}

/// The typed token from its raw object; `Ok(None)` for a revoked token.
fn token_from_raw(raw: RawToken, index: usize) -> Result<Option<Token>, FieldError> {
    let at = |f: &str| format!("objects[{index}].{f}");
    if raw.revoked.as_ref().is_some_and(|r| !r.is_null()) {
        return Ok(None);
    }
    let key = match raw.key {
        Some(k) if !k.is_empty() => k,
        _ => {
            return Err(FieldError {
                field: at("key"),
                problem: "missing: every token needs its key".into(),
            })
        }
    };
    let permissions = raw.permissions.unwrap_or_default();
    let granular = raw.expiry.is_some()
        || raw.bypass_2fa.is_some()
        || !permissions.is_empty()
        || raw.scopes.is_some();
    let access = if raw.readonly == Some(true) {
        Access::ReadOnly
    } else if !permissions.is_empty() {
        if permissions
            .iter()
            .any(|p| p.action.as_deref() != Some("read"))
        {
            // "write", or an action this version does not know: assume it can write.
            Access::ReadWrite
        } else {
            Access::ReadOnly
        }
    } else if raw.readonly == Some(false) {
        Access::ReadWrite
    } else {
        Access::Unknown
    };
    let mut cidr = raw.cidr_whitelist.unwrap_or_default();
    cidr.extend(raw.cidr.unwrap_or_default());
    let expiry_field = if raw.expiry.is_some() {
        "expiry"
    } else {
        "expires"
    };
    Ok(Some(Token {
        id: key.clone(),
        key,
        name: raw.name,
        description: raw.description,
        kind: if granular {
            TokenKind::Granular
        } else {
            TokenKind::Classic
        },
        access,
        bypass_2fa: raw.bypass_2fa.unwrap_or(false),
        cidr,
        created: parse_time(at("created"), raw.created)?,
        updated: parse_time(at("updated"), raw.updated)?,
        accessed: parse_time(at("accessed"), raw.accessed)?,
        expires: parse_time(at(expiry_field), raw.expiry.or(raw.expires))?,
        scopes: raw
            .scopes
            .unwrap_or_default()
            .into_iter()
            .map(|s| match (s.kind, s.name) {
                (Some(k), Some(n)) => format!("{k}:{n}"),
                (None, Some(n)) => n,
                (Some(k), None) => k,
                (None, None) => String::new(),
            })
            .collect(),
    }))
}

/// Give each token the id `npm token list` shows: the shortest prefix of at least 6 characters that no
/// other key shares, else the whole key.
pub fn assign_ids(tokens: &mut [Token]) {
    let keys: Vec<String> = tokens.iter().map(|t| t.key.clone()).collect();
    for t in tokens.iter_mut() {
        // Prefixes end at character boundaries: a key is whatever text the registry sent, and
        // cutting it by bytes could split a character (found by fuzzing).
        let ends = t
            .key
            .char_indices()
            .map(|(i, _)| i)
            .skip(6)
            .chain(std::iter::once(t.key.len()));
        let mut id = t.key.as_str();
        for end in ends {
            id = t.key.get(..end).unwrap_or(&t.key);
            if !keys.iter().any(|k| k != &t.key && k.starts_with(id)) {
                break;
            }
        }
        t.id = id.to_string();
    }
}

/// Account two-factor mode as `npm profile get` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TfaMode {
    Disabled,
    /// Enrolment started but not finished: the CLI counts it as disabled, and so do we.
    Pending,
    AuthOnly,
    AuthAndWrites,
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub name: Option<String>,
    pub tfa: TfaMode,
}

#[derive(Debug, Deserialize)]
struct RawProfile {
    name: Option<String>,
    tfa: Option<Value>,
}

pub fn parse_profile(value: &Value) -> Result<Profile, FieldError> {
    let raw: RawProfile = serde_json::from_value(value.clone()).map_err(|e| FieldError {
        field: "profile".into(),
        problem: e.to_string(),
    })?;
    let tfa = match raw.tfa {
        None | Some(Value::Null) | Some(Value::Bool(false)) => TfaMode::Disabled,
        Some(Value::Object(o)) => {
            if o.get("pending").and_then(Value::as_bool).unwrap_or(false) {
                TfaMode::Pending
            } else {
                match o.get("mode").and_then(Value::as_str) {
                    Some("auth-only") => TfaMode::AuthOnly,
                    Some("auth-and-writes") => TfaMode::AuthAndWrites,
                    Some(other) => TfaMode::Other(other.to_string()),
                    None => {
                        return Err(FieldError {
                            field: "tfa.mode".into(),
                            problem: "missing".into(),
                        })
                    }
                }
            }
        }
        Some(other) => {
            return Err(FieldError {
                field: "tfa".into(),
                problem: format!("expected null, false or an object, found {other}"),
            })
        }
    };
    Ok(Profile {
        name: raw.name,
        tfa,
    })
}

impl RegistryClient {
    /// `GET /-/npm/v1/tokens`, following `urls.next` across pages.
    pub async fn list_tokens(&self, cred: &Credential) -> Result<Vec<Token>, RegistryError> {
        const EP: &str = "tokens";
        let malformed = |detail: String| RegistryError::Malformed {
            endpoint: EP,
            detail,
        };
        let mut url = self.resolve("/-/npm/v1/tokens").map_err(malformed)?;
        let mut tokens = Vec::new();
        let mut visited = std::collections::HashSet::new();
        for page in 0.. {
            if page >= MAX_TOKEN_PAGES {
                return Err(malformed(format!(
                    "more than {MAX_TOKEN_PAGES} pages; stopping in case `urls.next` loops"
                )));
            }
            if !visited.insert(url.clone()) {
                return Err(malformed(format!(
                    "page {} links back to a page already read",
                    page
                )));
            }
            let reply = self
                .get(EP, url.clone(), Some(cred), HeaderMap::new(), BodyKind::Api)
                .await?;
            let parsed = parse_page(&reply.body, tokens.len())
                .map_err(|e| malformed(format!("page {}: {e}", page + 1)))?;
            tokens.extend(parsed.tokens);
            let Some(next) = parsed.next else { break };
            let next_url = self.resolve(&next).map_err(malformed)?;
            if next_url.origin() != self.base.origin() {
                // npm would not send the credential to another origin either.
                return Err(malformed(format!(
                    "page {}: `urls.next` points away from the registry ({})",
                    page + 1,
                    crate::secret::redact_url(&next_url)
                )));
            }
            url = next_url;
        }
        assign_ids(&mut tokens);
        Ok(tokens)
    }

    /// `GET /-/npm/v1/user`.
    pub async fn profile(&self, cred: &Credential) -> Result<Profile, RegistryError> {
        const EP: &str = "profile";
        let url = self.endpoint_url(EP, "/-/npm/v1/user")?;
        let body = self.get_json(EP, url, Some(cred)).await?;
        parse_profile(&body).map_err(|e| RegistryError::malformed(EP, e))
    }

    /// `GET /-/whoami`.
    pub async fn whoami(&self, cred: &Credential) -> Result<String, RegistryError> {
        const EP: &str = "whoami";
        let url = self.endpoint_url(EP, "/-/whoami")?;
        let body = self.get_json(EP, url, Some(cred)).await?;
        body.get("username")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(RegistryError::Malformed {
                endpoint: EP,
                detail: "`username` is missing: the credential is not recognised".into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classic_granular_and_verdaccio_objects_parse() {
        let objects = vec![
            // Classic (npm-profile README shape).
            json!({"token":"npm_ab…","key":"aaaaaa111","cidr_whitelist":["10.0.0.0/8"],"readonly":false,
                   "created":"2025-01-01T00:00:00.000Z","updated":"2025-01-01T00:00:00.000Z"}),
            // Granular (npm/cli#9443 shape) plus a field nobody knows yet.
            json!({"name":"bulk-hardening","description":"one day","key":"bbbbbb222","token":"npm_NYn6...jCq0",
                   "expiry":"2026-02-01T00:00:00.000Z","cidr":null,"bypass_2fa":true,"revoked":null,
                   "created":"2026-01-01T00:00:00.000Z","updated":"2026-01-01T00:00:00.000Z",
                   "accessed":"2026-01-02T00:00:00.000Z","permissions":[{"name":"package","action":"write"}],
                   "scopes":[{"name":"@acme/a","type":"package"}],"publish_policy":"stage_only"}),
            // Verdaccio 6.
            json!({"user":"alice","token":"abcde...vwxyz","key":"cccccc333","cidr":[],"readonly":true,
                   "created":"2026-11-26T03:00:00.123Z"}),
        ];
        let mut t = parse_tokens(&objects, 0).expect("parse");
        assign_ids(&mut t);
        assert_eq!(t.len(), 3);
        assert_eq!(
            (t[0].kind, t[0].access),
            (TokenKind::Classic, Access::ReadWrite)
        );
        assert_eq!(t[0].cidr, vec!["10.0.0.0/8"]);
        assert_eq!(
            (t[1].kind, t[1].access),
            (TokenKind::Granular, Access::ReadWrite)
        );
        assert!(t[1].bypass_2fa);
        assert_eq!(
            t[1].expires.map(|e| e.to_rfc3339()),
            Some("2026-02-01T00:00:00+00:00".into())
        );
        assert_eq!(t[1].scopes, vec!["package:@acme/a"]);
        assert_eq!(t[1].label(), "token bbbbbb (bulk-hardening)");
        assert_eq!(
            (t[2].kind, t[2].access),
            (TokenKind::Classic, Access::ReadOnly)
        );
        assert!(t[2].cidr.is_empty());
        assert_eq!(t[2].label(), "token cccccc");
    }

    #[test]
    fn missing_key_names_the_field() {
        let err =
            parse_tokens(&[json!({"key":"aaaaaaa"}), json!({"name":"x"})], 20).expect_err("no key");
        assert_eq!(
            err.to_string(),
            "objects[21].key: missing: every token needs its key"
        );
    }

    #[test]
    fn bad_date_and_bad_type_name_the_field() {
        let err =
            parse_tokens(&[json!({"key":"a1b2c3d4","created":"last week"})], 0).expect_err("date");
        assert!(
            err.to_string()
                .starts_with("objects[0].created: `last week` is not"),
            "{err}"
        );
        let err = parse_tokens(&[json!({"key":"a1b2c3d4","readonly":"yes"})], 0).expect_err("type");
        assert!(
            err.to_string().starts_with("objects[0]: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn revoked_tokens_are_skipped_and_unknown_grants_count_as_write() {
        let t = parse_tokens(
            &[
                json!({"key":"aaaaaa1","revoked":"2026-01-01T00:00:00Z"}),
                json!({"key":"bbbbbb1"}),
                json!({"key":"cccccc1","permissions":[{"name":"org","action":"admin"}]}),
            ],
            0,
        )
        .expect("parse");
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].access, Access::Unknown);
        assert!(t[0].access.can_write());
        assert_eq!(t[1].access, Access::ReadWrite);
    }

    #[test]
    fn ids_are_the_shortest_unique_prefix_of_at_least_six() {
        let mut t = parse_tokens(
            &[
                json!({"key":"abcdef1234"}),
                json!({"key":"abcdef1299"}),
                json!({"key":"zzzzzzzzzz"}),
                json!({"key":"abc"}),
            ],
            0,
        )
        .expect("parse");
        assign_ids(&mut t);
        let ids: Vec<&str> = t.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, vec!["abcdef123", "abcdef129", "zzzzzz", "abc"]);
    }

    /// Keys are text from the registry: ids are cut at character boundaries, never inside one
    /// (a key with a multi-byte character used to panic the token list; found by fuzzing).
    #[test]
    fn ids_of_non_ascii_keys_are_cut_at_character_boundaries() {
        let mut t = parse_tokens(
            &[
                json!({"key":"aaaaaé"}),
                json!({"key":"aaaaaéb"}),
                json!({"key":"aaaaaéc"}),
                json!({"key":"4f1c 🚀 x"}),
            ],
            0,
        )
        .expect("parse");
        assign_ids(&mut t);
        let ids: Vec<&str> = t.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, vec!["aaaaaé", "aaaaaéb", "aaaaaéc", "4f1c 🚀"]);
    }

    /// A page is parsed object by object from its raw text: errors still name the object by its
    /// index in the whole list, unknown fields are ignored, and `urls` keeps npm's rules.
    #[test]
    fn pages_parse_straight_into_tokens() {
        let body = br#"{"objects":[{"key":"aaaaaa111","readonly":true,"someday":{"x":[1,2]}},
                                    {"key":"bbbbbb222","revoked":"2026-01-01T00:00:00Z"}],
                        "urls":{"next":"/-/npm/v1/tokens?page=2"},"total":2}"#;
        let page = parse_page(body, 0).expect("page");
        assert_eq!(page.tokens.len(), 1);
        assert_eq!(page.tokens[0].access, Access::ReadOnly);
        assert_eq!(page.next.as_deref(), Some("/-/npm/v1/tokens?page=2"));

        let err = |body: &str, offset| parse_page(body.as_bytes(), offset).expect_err(body);
        assert_eq!(
            err(r#"{"objects":[{"key":"a1"},{"name":"x"}],"urls":{}}"#, 20),
            "objects[21].key: missing: every token needs its key"
        );
        assert!(
            err(
                r#"{"objects":[{"key":"a1","readonly":"yes"}],"urls":{}}"#,
                0
            )
            .starts_with("objects[0]: invalid type: string \"yes\", expected a boolean"),
            "type error names the object"
        );
        assert_eq!(
            err(r#"{"objects":null,"urls":{}}"#, 0),
            "`objects` is missing or not an array"
        );
        assert_eq!(err(r#"{"objects":[]}"#, 0), "`urls` is missing");
        assert!(err("{not json", 0).starts_with("body is not JSON"));
        assert!(err("[1]", 0).starts_with("not a token-list page"));
        // `"urls": null` is there (with no next), as `{}` is: the list ends.
        let page = parse_page(br#"{"objects":[],"urls":null}"#, 0).expect("null urls");
        assert!(page.tokens.is_empty() && page.next.is_none());
    }

    #[test]
    fn profile_tfa_modes() {
        let mode = |v: Value| {
            parse_profile(&json!({"name":"a","tfa":v}))
                .expect("profile")
                .tfa
        };
        assert_eq!(mode(json!(false)), TfaMode::Disabled);
        assert_eq!(mode(Value::Null), TfaMode::Disabled);
        assert_eq!(
            mode(json!({"mode":"auth-only","pending":false})),
            TfaMode::AuthOnly
        );
        assert_eq!(
            mode(json!({"mode":"auth-and-writes"})),
            TfaMode::AuthAndWrites
        );
        assert_eq!(
            mode(json!({"mode":"auth-and-writes","pending":true})),
            TfaMode::Pending
        );
        assert!(parse_profile(&json!({"tfa":"on"})).is_err());
    }
}
