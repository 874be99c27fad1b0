//! Slack sink: post each notification to a Slack incoming webhook, as a Block Kit message.
//!
//! `[[alerts.slack]]` takes `name` (optional), `url_file` (required) and `timeout` (default 10s), plus
//! the routing keys every sink has. An incoming-webhook URL is a credential: whoever holds it can post
//! to the channel. So it never sits in the configuration: `url_file` names a file holding it, read
//! again at every send (rotating the webhook needs no reload), and it is shown only redacted
//! (`https://hooks.slack.com/<redacted>`) in errors, logs and `Debug`. A missing, empty or malformed
//! file is a retryable error that names the file, never its content.
//!
//! The message: `text` is the line phones and notifications show (`[FIRING:critical] check: subject —
//! summary`); `blocks` lay out a header with the subject line, the summary, why it matters, the fix,
//! and a grid of fields (check, severity, subject, DoD box, first seen). A RESOLVED message says what
//! stopped being reported instead of why and how to fix it. Text from findings is escaped for Slack's
//! markup (`&`, `<`, `>`), so a token or package name cannot form a link or a mention, and every piece
//! is cut (with `…`) to Slack's limits so a long finding is shortened rather than refused.
//!
//! Delivery: Slack answers `200 ok`. `429` is retried after its `Retry-After`. `400`, `403`, `404` and
//! `410` carry a reason (`invalid_payload`, `action_prohibited`, `channel_not_found`,
//! `channel_is_archived`, `no_service`, …): the webhook was revoked or its channel is gone, and
//! sending again cannot succeed, so the outbox records the message as rejected with that reason and
//! moves on. `5xx` and network failures are retried.
//!
//! Pacing: Slack accepts about one message per second per webhook and answers bursts with `429`. The
//! sink posts one message at a time and starts a post no sooner than a second after the previous one
//! ended, so a cycle that queues many notifications drains steadily instead of being throttled.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use super::http::Poster;
use super::{message, Message, Notification, Sink, SinkConfig, SinkContext, SinkError, Status};
use crate::secret::{self, SecretUrl};
use crate::config::types::{check, rule, HumanDuration, Invalid};

/// Slack's limit for a header block's text.
const HEADER_MAX: usize = 150;
/// Slack's limit for a section block's text.
const SECTION_MAX: usize = 3000;
/// Slack's limit for one field of a section.
const FIELD_MAX: usize = 2000;
/// The fallback line is what a notification shows; Slack allows far more, nobody reads it.
const TEXT_MAX: usize = 3000;
/// Slack's documented rate for one incoming webhook: about one message per second.
const PACE: Duration = Duration::from_secs(1);

crate::sink_section! {
    /// `[[alerts.slack]]`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SlackSinkConfig {
        #[serde(default)]
        pub name: Option<String>,
        /// File holding the incoming-webhook URL, which is the secret.
        pub url_file: PathBuf,
        #[serde(default = "super::default_sink_timeout")]
        pub timeout: HumanDuration,
    }
}

impl SinkConfig for SlackSinkConfig {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn validate(&self) -> Result<(), Invalid> {
        check([rule(
            "url_file",
            self.url_file.as_os_str().is_empty(),
            "must name the file holding the webhook URL",
        )])
    }

    fn secret_files(&self) -> Vec<(&'static str, &Path)> {
        vec![("url_file", self.url_file.as_path())]
    }

    fn build(&self, name: String, _: &SinkContext) -> Result<Vec<Arc<dyn Sink>>, SinkError> {
        Ok(vec![Arc::new(SlackSink::new(name, self)?)])
    }
}

#[derive(Debug)]
pub struct SlackSink {
    name: String,
    url_file: PathBuf,
    timeout: HumanDuration,
    /// One client for whatever URL the file holds at each send, so connections are reused.
    client: reqwest::Client,
    /// When the last post ended. Held across a post, so this sink's posts go one at a time.
    last_post: Mutex<Option<Instant>>,
}

impl SlackSink {
    pub fn new(name: String, cfg: &SlackSinkConfig) -> Result<Self, SinkError> {
        let client = Poster::client("slack", &name, cfg.timeout)?;
        Ok(SlackSink {
            name,
            url_file: cfg.url_file.clone(),
            timeout: cfg.timeout,
            client,
            last_post: Mutex::new(None),
        })
    }

    fn fail(&self, what: &str) -> SinkError {
        SinkError::new(format!("slack sink {}: {what}", self.name))
    }

    /// The webhook URL as the file holds it now. Errors name the file, never what is in it.
    fn url(&self) -> Result<SecretUrl, SinkError> {
        let text = secret::read_text(&self.url_file, "url_file").map_err(|e| self.fail(&e))?;
        let shown = self.url_file.display();
        // The parse error names the problem only; the text may be the secret itself.
        let url = Url::parse(text.trim())
            .map_err(|e| self.fail(&format!("url_file {shown} does not hold a valid URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.fail(&format!(
                "url_file {shown} does not hold an http:// or https:// URL"
            )));
        }
        Ok(SecretUrl::new(url))
    }
}

#[async_trait::async_trait]
impl Sink for SlackSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, m: &Message) -> Result<(), SinkError> {
        let body = serde_json::to_vec(&message_payload(m))
            .map_err(|e| self.fail(&format!("cannot encode the message: {e}")))?;
        let mut last = self.last_post.lock().await;
        if let Some(t) = *last {
            tokio::time::sleep_until(t + PACE).await;
        }
        let url = self.url()?;
        let poster =
            Poster::with_client("slack", &self.name, &url, self.timeout, self.client.clone())?;
        let answer = poster.post(body, &[], &[]).await;
        // A failed post counts against Slack's rate too.
        *last = Some(Instant::now());
        let answer = answer?;
        if answer.status.is_success() {
            if answer.body.trim() != "ok" {
                tracing::warn!(
                    sink = %self.name,
                    answer = %super::http::snippet(&answer.body),
                    "the Slack webhook accepted the message with an unexpected answer"
                );
            }
            return Ok(());
        }
        // Slack's 4xx answers (a revoked webhook, an archived channel) cannot change by retrying.
        Err(poster.refused(&answer, true))
    }
}

/// The JSON posted to the webhook: the fallback `text` and the `blocks`.
pub fn payload(n: &Notification) -> Value {
    let f = &n.finding;
    let title = message::subject(n);
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": cut(&escape(&title), HEADER_MAX), "emoji": false },
    })];
    match n.status {
        Status::Firing => {
            // Slack refuses a section without text, and would refuse this message for good.
            if !f.summary.trim().is_empty() {
                blocks.push(section(&escape(&f.summary)));
            }
            blocks.push(section(&format!("*Why it matters:* {}", escape(&f.why))));
            blocks.push(section(&format!("*Fix:* {}", escape(&f.fix))));
        }
        Status::Resolved => {
            blocks.push(section(&format!(
                "Resolved: {} no longer reports {}{}.",
                escape(&f.check),
                escape(&f.subject),
                escape(&super::message::because(n))
            )));
            blocks.push(section(&format!("_It was:_ {}", escape(&f.summary))));
        }
    }
    let mut fields = vec![
        field("Check", &f.check),
        field("Severity", f.severity.as_str()),
        field("Subject", &f.subject),
    ];
    if let Some(d) = f.dod {
        fields.push(field("DoD box", d.as_str()));
    }
    fields.push(field(
        "First seen",
        &n.first_seen
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    ));
    blocks.push(json!({ "type": "section", "fields": fields }));
    json!({
        "text": cut(&escape(&format!("{title} — {}", f.summary)), TEXT_MAX),
        "blocks": blocks,
    })
}

/// Slack accepts at most 50 blocks in a message; a grouped message lists its findings in sections
/// of a few each, so it stays far below that.
const LIST_SECTIONS: usize = 40;

/// The JSON for a message: a notification on its own as [`payload`]; a group as a header, the
/// findings it carries (one line each, several to a section), "and N more" and where to see all.
pub fn message_payload(m: &Message) -> Value {
    if let Some(n) = m.only() {
        return payload(n);
    }
    let title = message::message_subject(m);
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": cut(&escape(&title), HEADER_MAX), "emoji": false },
    })];
    if m.status == Status::Resolved && m.still_active > 0 {
        blocks.push(section(&format!(
            "{} finding(s) of this group are still active.",
            m.still_active
        )));
    }
    let lines: Vec<String> = m
        .notes
        .iter()
        .map(|n| {
            let f = &n.finding;
            let what = match n.status {
                Status::Firing => escape(&f.fix),
                Status::Resolved => format!("resolved{}", escape(&message::because(n))),
            };
            // Each line is cut on its own, so one long name cannot push the others out.
            cut(
                &format!(
                    "• *{}* `{}` {} — {what}",
                    f.severity,
                    escape(&f.check),
                    escape(&f.subject)
                ),
                SECTION_MAX / 4,
            )
        })
        .collect();
    let mut shown = 0;
    let mut section_text = String::new();
    for line in &lines {
        if section_text.len() + line.len() + 1 > SECTION_MAX {
            if blocks.len() >= LIST_SECTIONS {
                break;
            }
            blocks.push(section(&section_text));
            section_text.clear();
        }
        section_text.push_str(line);
        section_text.push('\n');
        shown += 1;
    }
    if !section_text.is_empty() && blocks.len() < LIST_SECTIONS {
        blocks.push(section(&section_text));
    } else if !section_text.is_empty() {
        shown -= section_text.lines().count();
    }
    let more = m.total.saturating_sub(shown);
    if more > 0 {
        blocks.push(section(&format!("… and {more} more.")));
    }
    blocks.push(section(&escape(message::SEE_ALL)));
    json!({
        "text": cut(&escape(&title), TEXT_MAX),
        "blocks": blocks,
    })
}

/// A section block of already escaped text.
fn section(text: &str) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": cut(text, SECTION_MAX) } })
}

/// One field of the facts grid: the label in bold over the escaped value.
fn field(label: &str, value: &str) -> Value {
    json!({ "type": "mrkdwn", "text": cut(&format!("*{label}*\n{}", escape(value)), FIELD_MAX) })
}

/// Text for Slack's markup: the three characters Slack reserves for links, mentions and entities.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters, ending in `…` when shortened. An entity left half by the cut
/// (`&am`) is dropped whole, so Slack never shows a broken one.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    if let Some(i) = out.rfind('&') {
        // The longest entity `escape` writes is `&amp;`: a `&` this close to the end with no `;`
        // after it is one cut in half.
        if out.len() - i < "&amp;".len() && !out[i..].contains(';') {
            out.truncate(i);
        }
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::fixtures::note;

    #[test]
    fn a_group_stays_inside_slacks_limits_whatever_its_size_and_names() {
        use crate::alerts::fixtures::group_of;
        for (n, name_len) in [(2, 20), (50, 20), (500, 20), (50, 1_000_000)] {
            let m = group_of(n, |i| format!("package {i} {}", "x".repeat(name_len)));
            let p = message_payload(&m);
            let blocks = p["blocks"].as_array().expect("blocks");
            assert!(blocks.len() <= 50, "{n} x {name_len}: {} blocks", blocks.len());
            for b in blocks {
                let text = b["text"]["text"].as_str().unwrap_or("");
                let max = if b["type"] == "header" { HEADER_MAX } else { SECTION_MAX };
                assert!(text.chars().count() <= max, "{n} x {name_len}: {}", text.len());
            }
            assert!(p["text"].as_str().expect("text").chars().count() <= TEXT_MAX);
            let listed: usize = blocks
                .iter()
                .filter_map(|b| b["text"]["text"].as_str())
                .map(|t| t.matches("• ").count())
                .sum();
            let more = m.total - listed;
            let all = p.to_string();
            if more > 0 {
                assert!(all.contains(&format!("… and {more} more.")), "{n} x {name_len}");
            }
            assert!(serde_json::to_vec(&p).expect("json").len() < 200_000);
        }
        let hostile = group_of(2, |_| "<!channel> & <https://evil.example|click>".into());
        let all = message_payload(&hostile).to_string();
        assert!(!all.contains("<!channel>") && !all.contains("<https://evil"), "{all}");
    }

    fn texts(v: &Value) -> Vec<String> {
        v["blocks"]
            .as_array()
            .expect("blocks")
            .iter()
            .filter_map(|b| b["text"]["text"].as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn firing_has_fallback_header_summary_why_fix_and_facts() {
        let v = payload(&note(Status::Firing, false));
        assert_eq!(
            v["text"],
            "[FIRING:critical] token-bypass-2fa: token 82e393 (bulk-hardening) — A bypass-2FA token is 2d old."
        );
        assert_eq!(v["blocks"][0]["type"], "header");
        assert_eq!(v["blocks"][0]["text"]["type"], "plain_text");
        assert_eq!(
            texts(&v),
            vec![
                "[FIRING:critical] token-bypass-2fa: token 82e393 (bulk-hardening)",
                "A bypass-2FA token is 2d old.",
                "*Why it matters:* It publishes without 2FA.",
                "*Fix:* Revoke it: `npm token revoke 82e393`.",
            ]
        );
        let fields: Vec<&str> = v["blocks"][4]["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .map(|f| f["text"].as_str().expect("text"))
            .collect();
        assert_eq!(
            fields,
            vec![
                "*Check*\ntoken-bypass-2fa",
                "*Severity*\ncritical",
                "*Subject*\ntoken 82e393 (bulk-hardening)",
                "*DoD box*\nD9",
                "*First seen*\n2026-11-26T12:00:00Z",
            ]
        );
    }

    #[test]
    fn resolved_says_what_stopped_instead_of_the_fix() {
        let mut n = note(Status::Resolved, false);
        std::sync::Arc::make_mut(&mut n.finding).dod = None;
        let v = payload(&n);
        assert_eq!(
            texts(&v)[1..],
            [
                "Resolved: token-bypass-2fa no longer reports token 82e393 (bulk-hardening).",
                "_It was:_ A bypass-2FA token is 2d old.",
            ]
        );
        assert!(!v.to_string().contains("Fix:"), "{v}");
        let fields = v["blocks"][3]["fields"].as_array().expect("fields");
        assert_eq!(fields.len(), 4, "no DoD box field without a box");
    }

    #[test]
    fn markup_characters_from_findings_are_escaped() {
        let mut n = note(Status::Firing, false);
        std::sync::Arc::make_mut(&mut n.finding).subject = "package <!channel> & co".into();
        std::sync::Arc::make_mut(&mut n.finding).summary = "See <https://evil.example|here> & >quote".into();
        let v = payload(&n);
        let all = v.to_string();
        assert!(!all.contains("<!channel>"), "{all}");
        assert!(!all.contains("<https://evil"), "{all}");
        assert_eq!(
            texts(&v)[1],
            "See &lt;https://evil.example|here&gt; &amp; &gt;quote"
        );
        assert!(
            all.contains("*Subject*\\npackage &lt;!channel&gt; &amp; co"),
            "{all}"
        );
        // Slack decodes the three entities in plain text too.
        assert_eq!(
            texts(&v)[0],
            "[FIRING:critical] token-bypass-2fa: package &lt;!channel&gt; &amp; co"
        );
    }

    #[test]
    fn long_text_is_cut_to_slack_limits() {
        let mut n = note(Status::Firing, false);
        std::sync::Arc::make_mut(&mut n.finding).subject = "s".repeat(400);
        std::sync::Arc::make_mut(&mut n.finding).fix = "f".repeat(5000);
        let v = payload(&n);
        let t = texts(&v);
        assert_eq!(t[0].chars().count(), HEADER_MAX);
        assert!(t[0].ends_with('…'));
        assert_eq!(t[3].chars().count(), SECTION_MAX);
        assert!(t[3].starts_with("*Fix:* fff") && t[3].ends_with('…'));
    }

    #[test]
    fn an_empty_summary_leaves_out_its_section() {
        let mut n = note(Status::Firing, false);
        std::sync::Arc::make_mut(&mut n.finding).summary = " ".into();
        let t = texts(&payload(&n));
        assert_eq!(t.len(), 3, "{t:?}");
        assert!(t[1].starts_with("*Why it matters:*"), "{t:?}");
    }

    #[test]
    fn cut_never_leaves_half_an_entity() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("abcdef", 4), "abc…");
        let escaped = escape("ab&cd");
        assert_eq!(escaped, "ab&amp;cd");
        assert_eq!(cut(&escaped, 5), "ab…");
        assert_eq!(cut(&escaped, 8), "ab&amp;…");
        assert_eq!(cut("ééééé", 3), "éé…");
    }

    #[test]
    fn config_names_the_url_file_as_its_secret() {
        let cfg: SlackSinkConfig =
            toml::from_str("url_file = \"/etc/npm-watchdog/slack-url\"").expect("parse");
        assert_eq!(cfg.timeout, super::super::default_sink_timeout());
        assert_eq!(
            cfg.secret_files(),
            vec![("url_file", Path::new("/etc/npm-watchdog/slack-url"))]
        );
        assert!(toml::from_str::<SlackSinkConfig>("url = \"https://hooks.slack.com/x\"").is_err());
    }
}
