//! How a notification reads: the subject line, the plain-text body and the webhook JSON.
//!
//! Everything here is built from the finding alone, which by construction holds token key prefixes
//! and names but never a token value.

use chrono::{DateTime, Utc};
use serde::Serialize;

use std::collections::BTreeMap;

use super::{Message, Notification, SinkContext, Status};

/// `[FIRING:critical] token-bypass-2fa: token 82e393 (bulk-hardening)`, `[RESOLVED] token-present: …`.
pub fn subject(n: &Notification) -> String {
    let state = match (n.status, n.reminder) {
        (Status::Resolved, _) => "[RESOLVED]".to_string(),
        (Status::Firing, false) => format!("[FIRING:{}]", n.finding.severity),
        (Status::Firing, true) => format!("[FIRING:{}] (reminder)", n.finding.severity),
    };
    let test = if n.test { "[TEST] " } else { "" };
    format!("{test}{state} {}: {}", n.finding.check, n.finding.subject)
}

/// The plain-text body of an email or a log entry.
pub fn body(n: &Notification) -> String {
    let f = &n.finding;
    let mut out = String::new();
    match n.status {
        Status::Firing => {
            out.push_str(&format!("{}\n\n", f.summary));
            out.push_str(&format!("Why it matters: {}\n\n", f.why));
            out.push_str(&format!("Fix: {}\n\n", f.fix));
        }
        Status::Resolved => {
            out.push_str(&format!(
                "Resolved: {} no longer reports {}{}.\n\nIt was: {}\n\n",
                f.check,
                f.subject,
                because(n),
                f.summary
            ));
        }
    }
    out.push_str(&format!("Check:       {}\n", f.check));
    out.push_str(&format!("Subject:     {}\n", f.subject));
    out.push_str(&format!("Severity:    {}\n", f.severity));
    if let Some(d) = &f.dod {
        out.push_str(&format!("DoD box:     {d}\n"));
    }
    out.push_str(&format!("First seen:  {}\n", rfc3339(n.first_seen)));
    out.push_str(&format!("State since: {}\n", rfc3339(n.at)));
    out.push_str(&format!("Fingerprint: {}\n", n.fingerprint()));
    out.push_str("\n-- npm-watchdog\n");
    out
}

/// The HTML part of an email: the same content as [`body`], laid out for a phone's mail client
/// (one column, no images, no external resources, inline styles only).
pub fn html(n: &Notification) -> String {
    let f = &n.finding;
    let mut out = html_head(&subject(n));
    match n.status {
        Status::Firing => {
            out.push_str(&format!("<p>{}</p>\n", escape(&f.summary)));
            out.push_str(&format!(
                "<p><strong>Why it matters:</strong> {}</p>\n",
                escape(&f.why)
            ));
            out.push_str(&format!(
                "<p><strong>Fix:</strong> {}</p>\n",
                escape(&f.fix)
            ));
        }
        Status::Resolved => {
            out.push_str(&format!(
                "<p>Resolved: {} no longer reports {}{}.</p>\n<p>It was: {}</p>\n",
                escape(&f.check),
                escape(&f.subject),
                escape(&because(n)),
                escape(&f.summary)
            ));
        }
    }
    out.push_str("<table style=\"border-collapse: collapse;\">\n");
    let mut row = |k: &str, v: &str| {
        out.push_str(&format!(
            "<tr><td style=\"padding: 0.2em 1em 0.2em 0; color: #555;\">{k}</td><td>{}</td></tr>\n",
            escape(v)
        ));
    };
    row("Check", &f.check);
    row("Subject", &f.subject);
    row("Severity", f.severity.as_str());
    if let Some(d) = &f.dod {
        row("DoD box", d.as_str());
    }
    row("First seen", &rfc3339(n.first_seen));
    row("State since", &rfc3339(n.at));
    row("Fingerprint", &n.fingerprint());
    out.push_str("</table>\n<p style=\"color: #777;\">-- npm-watchdog</p>\n</body></html>\n");
    out
}

/// The start of an email's HTML part, up to its title: one column, no images, no external
/// resources, inline styles only.
fn html_head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head>\n\
         <body style=\"font-family: sans-serif; line-height: 1.4; max-width: 40em; margin: 0 auto; padding: 1em;\">\n\
         <h2 style=\"font-size: 1.1em;\">{}</h2>\n",
        escape(title)
    )
}

/// Text as HTML: the five characters that could open markup or end an attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `: the token expired on …` when a RESOLVED has a reason of its own, else nothing.
pub fn because(n: &Notification) -> String {
    n.resolution
        .as_deref()
        .map_or(String::new(), |r| format!(": {r}"))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// One notification in a webhook message's `findings` (documented in docs/ALERTING.md).
#[derive(Debug, Serialize)]
pub struct WebhookPayload<'a> {
    pub status: &'static str,
    pub reminder: bool,
    pub event: bool,
    pub test: bool,
    pub check: &'a str,
    pub severity: &'static str,
    pub subject: &'a str,
    pub fingerprint: String,
    pub summary: &'a str,
    pub why: &'a str,
    pub fix: &'a str,
    pub dod: Option<&'static str>,
    pub first_seen: String,
    pub at: String,
    pub title: String,
    /// Why a RESOLVED came, when it has a reason of its own (a token that expired).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<&'a str>,
}

pub fn webhook_payload(n: &Notification) -> WebhookPayload<'_> {
    let f = &n.finding;
    WebhookPayload {
        status: n.status.as_str(),
        reminder: n.reminder,
        event: n.event,
        test: n.test,
        check: &f.check,
        severity: f.severity.as_str(),
        subject: &f.subject,
        fingerprint: n.fingerprint(),
        summary: &f.summary,
        why: &f.why,
        fix: &f.fix,
        dod: f.dod.map(|d| d.as_str()),
        first_seen: rfc3339(n.first_seen),
        at: rfc3339(n.at),
        title: subject(n),
        resolution: n.resolution.as_deref(),
    }
}

// ---------------------------------------------------------------------------------------------
// Messages: a group of notifications (see `group.rs`). A message that is exactly one notification
// reads as that notification always has.

/// `[FIRING:critical] 4 findings on token 6ce2dc (ci): token-created, token-present, …`, or
/// `[FIRING:warning] 212 findings (group=packages): trusted-publisher-missing (212)`.
pub fn message_subject(m: &Message) -> String {
    if let Some(n) = m.only() {
        return subject(n);
    }
    let state = match (m.status, m.reminder) {
        (Status::Resolved, _) => "[RESOLVED]".to_string(),
        (Status::Firing, false) => format!("[FIRING:{}]", m.severity()),
        (Status::Firing, true) => format!("[FIRING:{}] (reminder)", m.severity()),
    };
    let test = if m.is_test() { "[TEST] " } else { "" };
    let first = m.notes.first().map(|n| n.finding.subject.as_str());
    let one_subject =
        m.omitted() == 0 && first.is_some_and(|s| m.notes.iter().all(|n| n.finding.subject == s));
    let about = match (one_subject, first) {
        (true, Some(s)) => format!(" on {s}"),
        _ if !m.key_text().is_empty() => format!(" ({})", m.key_text()),
        _ => String::new(),
    };
    let checks: Vec<String> = m
        .checks
        .iter()
        .map(|(c, n)| {
            if *n > 1 {
                format!("{c} ({n})")
            } else {
                c.clone()
            }
        })
        .collect();
    format!(
        "{test}{state} {} finding{}{about}: {}",
        m.total,
        if m.total == 1 { "" } else { "s" },
        checks.join(", ")
    )
}

/// Where to see every finding, for the end of a message that could not carry them all.
pub const SEE_ALL: &str =
    "Every active finding: `npm-watchdog audit` (or `--format json`), and the \
     daemon's /metrics (npm_watchdog_findings).";

/// The plain-text body of a message: each notification it carries, then how many more.
pub fn message_body(m: &Message) -> String {
    if let Some(n) = m.only() {
        return body(n);
    }
    let mut out = String::new();
    let what = match (m.status, m.reminder) {
        (Status::Resolved, _) => "resolved",
        (Status::Firing, false) => "firing",
        (Status::Firing, true) => "still firing",
    };
    out.push_str(&format!("{} finding(s) {what}", m.total));
    if !m.key_text().is_empty() {
        out.push_str(&format!(" ({})", m.key_text()));
    }
    out.push_str(".\n");
    if m.status == Status::Resolved && m.still_active > 0 {
        out.push_str(&format!(
            "{} finding(s) of this group are still active.\n",
            m.still_active
        ));
    }
    for n in &m.notes {
        let f = &n.finding;
        out.push_str(&format!("\n[{}] {}: {}\n", f.severity, f.check, f.subject));
        match n.status {
            Status::Firing => {
                out.push_str(&format!("    {}\n", f.summary));
                out.push_str(&format!("    Fix: {}\n", f.fix));
            }
            Status::Resolved => {
                out.push_str(&format!(
                    "    Resolved{}. It was: {}\n",
                    because(n),
                    f.summary
                ));
            }
        }
        out.push_str(&format!("    First seen: {}\n", rfc3339(n.first_seen)));
        out.push_str(&format!("    Fingerprint: {}\n", n.fingerprint()));
    }
    if m.omitted() > 0 {
        out.push_str(&format!("\n... and {} more.\n", m.omitted()));
    }
    out.push_str(&format!("\n{SEE_ALL}\n\n-- npm-watchdog\n"));
    out
}

/// The HTML part of a message: the same content as [`message_body`].
pub fn message_html(m: &Message) -> String {
    if let Some(n) = m.only() {
        return html(n);
    }
    let mut out = html_head(&message_subject(m));
    if m.status == Status::Resolved && m.still_active > 0 {
        out.push_str(&format!(
            "<p>{} finding(s) of this group are still active.</p>\n",
            m.still_active
        ));
    }
    out.push_str("<ul style=\"padding-left: 1.2em;\">\n");
    for n in &m.notes {
        let f = &n.finding;
        out.push_str(&format!(
            "<li><strong>[{}] {}</strong>: {}<br>",
            escape(f.severity.as_str()),
            escape(&f.check),
            escape(&f.subject)
        ));
        match n.status {
            Status::Firing => out.push_str(&format!(
                "{}<br><strong>Fix:</strong> {}",
                escape(&f.summary),
                escape(&f.fix)
            )),
            Status::Resolved => out.push_str(&format!(
                "Resolved{}. It was: {}",
                escape(&because(n)),
                escape(&f.summary)
            )),
        }
        out.push_str(&format!(
            "<br><span style=\"color: #777;\">{}</span></li>\n",
            escape(&n.fingerprint())
        ));
    }
    out.push_str("</ul>\n");
    if m.omitted() > 0 {
        out.push_str(&format!("<p>... and {} more.</p>\n", m.omitted()));
    }
    out.push_str(&format!(
        "<p>{}</p>\n<p style=\"color: #777;\">-- npm-watchdog</p>\n</body></html>\n",
        escape(SEE_ALL)
    ));
    out
}

/// Webhook body, schema version 2 (documented in docs/ALERTING.md): one message with every
/// notification it carries as `findings`, the group key and the counts.
#[derive(Debug, Serialize)]
pub struct WebhookMessage<'a> {
    pub version: &'static str,
    pub status: &'static str,
    pub reminder: bool,
    pub test: bool,
    pub title: String,
    /// The group key (`{"group": "tokens"}`); `null` when the message is not grouped.
    pub group_key: Option<&'a BTreeMap<String, String>>,
    pub severity: &'static str,
    pub total: usize,
    /// Notifications counted in `total` but not listed (past `max_items`).
    pub omitted: usize,
    pub checks: &'a BTreeMap<String, usize>,
    pub severities: BTreeMap<&'static str, usize>,
    /// For `resolved`: findings of the same group still active.
    pub still_active: usize,
    pub findings: Vec<WebhookPayload<'a>>,
}

pub fn webhook_message(m: &Message) -> WebhookMessage<'_> {
    WebhookMessage {
        version: "2",
        status: m.status.as_str(),
        reminder: m.reminder,
        test: m.is_test(),
        title: message_subject(m),
        group_key: m.key.as_ref(),
        severity: m.severity().as_str(),
        total: m.total,
        omitted: m.omitted(),
        checks: &m.checks,
        severities: m.severities.iter().map(|(s, n)| (s.as_str(), *n)).collect(),
        still_active: m.still_active,
        findings: m.notes.iter().map(webhook_payload).collect(),
    }
}

/// The npmjs.com page of the package a finding is about, for checks whose subject is a package
/// (tokens, teams and users have no public page that works for whoever is paged).
pub fn npm_page(n: &Notification, ctx: &SinkContext) -> Option<String> {
    let def = ctx.check(&n.finding.check)?;
    if def.subject != Some("package") {
        return None;
    }
    let name = package_name(&n.finding.subject_key)?;
    Some(format!("https://www.npmjs.com/package/{name}"))
}

/// The package name at the start of a package check's subject key (`name@version`, `name:detail`
/// or `name`). A name never holds `:`, and holds `@` only as a scope's first character, so it ends
/// at the first of either past that. `None` when what is left is not a URL-safe npm name.
fn package_name(key: &str) -> Option<&str> {
    let end = key
        .char_indices()
        .skip(1)
        .find(|(_, c)| matches!(c, ':' | '@'))
        .map_or(key.len(), |(i, _)| i);
    let name = &key[..end];
    // A leading dot would let `..` walk out of `/package/`; npm refuses such names anyway.
    let part = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
    };
    let ok = match name.strip_prefix('@') {
        Some(scoped) => scoped
            .split_once('/')
            .is_some_and(|(scope, bare)| part(scope) && part(bare)),
        None => part(name),
    };
    // 214 characters is npm's limit; anything longer did not come from the registry.
    (ok && name.len() <= 214).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::fixtures::note;

    #[test]
    fn a_group_is_titled_by_its_count_and_checks_and_lists_up_to_max_items() {
        use crate::alerts::fixtures::group_of;
        let one = group_of(1, |_| "package @acme/a".into());
        assert_eq!(message_subject(&one), subject(&one.notes[0]));
        assert_eq!(message_body(&one), body(&one.notes[0]));

        let same = group_of(3, |_| "package @acme/a".into());
        assert_eq!(
            message_subject(&same),
            "[FIRING:critical] 3 findings on package @acme/a: trusted-publisher-missing (3)"
        );
        let many = group_of(500, |i| format!("package @acme/p{i}"));
        assert_eq!(
            message_subject(&many),
            "[FIRING:critical] 500 findings (group=packages): trusted-publisher-missing (500)"
        );
        let text = message_body(&many);
        assert_eq!(text.matches("Fingerprint: ").count(), 50);
        assert!(text.contains("\n... and 450 more.\n"), "{text}");
        assert!(text.contains("npm-watchdog audit"));
        let page = message_html(&many);
        assert_eq!(page.matches("<li>").count(), 50);
        assert!(page.contains("... and 450 more."));
        let hook = serde_json::to_value(webhook_message(&many)).expect("json");
        assert_eq!(hook["total"], 500);
        assert_eq!(hook["omitted"], 450);
        assert_eq!(hook["findings"].as_array().map(Vec::len), Some(50));
        assert_eq!(hook["findings"][0]["severity"], "critical", "highest first");
        assert_eq!(hook["group_key"]["group"], "packages");
    }

    #[test]
    fn a_group_escapes_markup_in_every_name() {
        let m = crate::alerts::fixtures::group_of(2, |i| format!("<script>alert({i})</script>"));
        let page = message_html(&m);
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(0)&lt;/script&gt;"));
    }

    #[test]
    fn subjects_name_state_severity_check_and_subject() {
        assert_eq!(
            subject(&note(Status::Firing, false)),
            "[FIRING:critical] token-bypass-2fa: token 82e393 (bulk-hardening)"
        );
        assert_eq!(
            subject(&note(Status::Resolved, false)),
            "[RESOLVED] token-bypass-2fa: token 82e393 (bulk-hardening)"
        );
        assert!(subject(&note(Status::Firing, true)).contains("(reminder)"));
    }

    #[test]
    fn body_has_what_why_and_fix() {
        let b = body(&note(Status::Firing, false));
        assert!(b.starts_with("A bypass-2FA token is 2d old.\n\nWhy it matters: "));
        assert!(b.contains("Fix: Revoke it: `npm token revoke 82e393`."));
        assert!(b.contains("DoD box:     D9"));
        assert!(b.contains("Fingerprint: token-bypass-2fa:82e3930f1c5a6a7f0d2b9c44e1f3a5b6\n"));
    }

    #[test]
    fn a_resolution_says_why_in_every_rendering() {
        let plain = note(Status::Resolved, false);
        assert!(body(&plain).starts_with(
            "Resolved: token-bypass-2fa no longer reports token 82e393 (bulk-hardening).\n"
        ));
        let v = serde_json::to_value(webhook_payload(&plain)).expect("json");
        assert!(v.get("resolution").is_none(), "{v}");

        let mut expired = plain;
        expired.resolution = Some("the token expired on 2026-12-01 00:00 UTC".into());
        assert!(body(&expired).starts_with(
            "Resolved: token-bypass-2fa no longer reports token 82e393 (bulk-hardening): the token \
             expired on 2026-12-01 00:00 UTC.\n"
        ));
        assert!(
            html(&expired).contains("(bulk-hardening): the token expired on 2026-12-01 00:00 UTC.")
        );
        let v = serde_json::to_value(webhook_payload(&expired)).expect("json");
        assert_eq!(v["resolution"], "the token expired on 2026-12-01 00:00 UTC");
    }

    #[test]
    fn html_has_the_same_content_escaped() {
        let mut n = note(Status::Firing, false);
        std::sync::Arc::make_mut(&mut n.finding).summary =
            "A <script>alert(1)</script> & \"quotes\"".into();
        let h = html(&n);
        assert!(h.contains("A &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quotes&quot;"));
        assert!(!h.contains("<script>"));
        assert!(h.contains("<strong>Fix:</strong> Revoke it: `npm token revoke 82e393`."));
        assert!(h.contains("<td>D9</td>"));
        assert!(h.contains("token-bypass-2fa:82e3930f1c5a6a7f0d2b9c44e1f3a5b6"));
        assert!(html(&note(Status::Resolved, false))
            .contains("<p>Resolved: token-bypass-2fa no longer reports"));
    }

    #[test]
    fn webhook_payload_is_stable() {
        let m = Message::single(note(Status::Resolved, false));
        let whole = serde_json::to_value(webhook_message(&m)).expect("json");
        assert_eq!(whole["version"], "2");
        assert_eq!(whole["total"], 1);
        assert_eq!(whole["group_key"], serde_json::Value::Null);
        let v = &whole["findings"][0];
        assert_eq!(v["status"], "resolved");
        assert_eq!(v["severity"], "critical");
        assert_eq!(
            v["fingerprint"],
            "token-bypass-2fa:82e3930f1c5a6a7f0d2b9c44e1f3a5b6"
        );
        assert_eq!(v["first_seen"], "2026-11-26T12:00:00Z");
    }

    #[test]
    fn npm_page_links_package_findings_only() {
        // check, subject key, the package whose page is linked ("-": no link).
        let table = [
            "publish-untrusted          left-pad@1.3.0                 left-pad",
            "publish-untrusted          @acme/core@1.2.1               @acme/core",
            "publish-unexpected-source  @acme/core@2.0.0-rc.1+build.5  @acme/core",
            "maintainers-changed        @acme/core:alice,bob           @acme/core",
            "maintainers-changed        left-pad:alice@example         left-pad",
            "trusted-publisher-unbound  @acme/widget:2f1c0e8a-77d1     @acme/widget",
            "trusted-publisher-missing  @acme/widget                   @acme/widget",
            "trusted-publisher-missing  Legacy_Name.js                 Legacy_Name.js",
            // Not a package subject: no link, whatever the key looks like.
            "token-present              82e3930f1c5a6a7f0d2b9c44e1f3a5b6  -",
            "token-created              left-pad@1.0.0                 -",
            "team-write-access          acme:developers                -",
            "account-2fa                alice                          -",
            "watchdog-blind             packages                       -",
            "notify-test                notify-test                    -",
            // Keys that cannot hold a package name give no link rather than a wrong one.
            "publish-untrusted          @1.0.0                         -",
            "publish-untrusted          @acme@1.0.0                    -",
            "publish-untrusted          @acme/@1.0.0                   -",
            "publish-untrusted          a/b@1.0.0                      -",
            "publish-untrusted          ../../evil@1.0.0               -",
            "publish-untrusted          ..@1.0.0                       -",
            "publish-untrusted          @acme/..@1.0.0                 -",
            "trusted-publisher-missing  x?y=1                          -",
            "trusted-publisher-missing  x#frag                         -",
            "maintainers-changed        :alice                         -",
        ];
        let page = |check: &str, key: &str| {
            let mut n = note(Status::Firing, false);
            std::sync::Arc::make_mut(&mut n.finding).check = check.to_string().into();
            std::sync::Arc::make_mut(&mut n.finding).subject_key = key.into();
            npm_page(&n, &crate::alerts::fixtures::context("", None))
        };
        for row in table {
            let cols: Vec<&str> = row.split_whitespace().collect();
            let [check, key, want] = cols[..] else {
                panic!("bad row {row}");
            };
            let want = (want != "-").then(|| format!("https://www.npmjs.com/package/{want}"));
            assert_eq!(page(check, key), want, "{row}");
        }
        assert_eq!(page("trusted-publisher-missing", ""), None);
        assert_eq!(page("trusted-publisher-missing", "sp ace"), None);
        assert_eq!(
            page("trusted-publisher-missing", &"a".repeat(214)).map(|u| u.len()),
            Some(244)
        );
        assert_eq!(page("trusted-publisher-missing", &"a".repeat(215)), None);
    }
}
