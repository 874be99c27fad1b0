//! Alertmanager sink: findings become alerts in a Prometheus Alertmanager (`POST /api/v2/alerts`),
//! so they share its routing, grouping, silences, inhibitions and receivers with everything else.
//!
//! `[[alerts.alertmanager]]` takes `urls` (every instance of a cluster) and `resend_interval`
//! (default `1m`). Like Prometheus, the sink sends every alert to every instance, never
//! load-balanced, and each instance is its own sink in the outbox (`<name>@host:port` when there are
//! several): one instance down holds back neither the others nor the rest of the queue.
//!
//! Alertmanager keeps state, not events, so the sink mirrors what is firing:
//! - a FIRING notification posts the alert with `startsAt` = first seen and `endsAt` = now + 4 ×
//!   `resend_interval`;
//! - every `resend_interval` all active findings are posted again (the daemon hands them over after
//!   each cycle, see [`Mirror::firing`]), so an alert lives while the watchdog does and times out on its
//!   own if the watchdog dies (the `watchdog-blind` finding and Prometheus' `up` catch that);
//! - RESOLVED posts `endsAt` = the time it resolved, and repeats it for [`RESOLVED_RESEND`] in case an
//!   instance missed it;
//! - events (a token was created) are posted once and time out after 4 × `resend_interval`.
//!
//! Labels are the alert's identity: `alertname="NpmWatchdogFinding"`, `check`, `severity`,
//! `fingerprint` and the subject's own label (`token`, `package`, `team`, `user`, `secret`) holding
//! its subject key. Nothing that differs between two replicas watching the same account (host, pid, start time)
//! is a label, so Alertmanager merges what they both send into one alert. Annotations carry
//! `summary`, `description` (why and fix), `dod`, `subject` and `source`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use url::Url;

use super::http::Poster;
use super::{Message, Mirror, Notification, Sink, SinkConfig, SinkContext, SinkError, Status};
use crate::secret::SecretUrl;
use crate::config::types::{check, rule, HumanDuration, Invalid};

/// The `alertname` label of every alert this sink posts.
pub const ALERTNAME: &str = "NpmWatchdogFinding";
/// How long a resolved alert keeps being re-sent as resolved.
pub const RESOLVED_RESEND: Duration = Duration::from_secs(15 * 60);
/// An alert's `endsAt` is this many `resend_interval`s ahead, as Prometheus does: a missed resend or
/// two does not end it, a dead watchdog's alerts end on their own.
const LIFETIME_RESENDS: u32 = 4;

fn default_resend_interval() -> HumanDuration {
    HumanDuration::secs(60)
}

crate::sink_section! {
    /// `[[alerts.alertmanager]]`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct AlertmanagerSinkConfig {
        #[serde(default)]
        pub name: Option<String>,
        /// Every instance of the cluster (`http://am-1:9093`), each sent every alert. A path is kept as
        /// the route prefix (`http://proxy/alertmanager/`).
        pub urls: Vec<Url>,
        /// How often active findings are posted again; alerts end 4 × this after the last post.
        #[serde(default = "default_resend_interval")]
        pub resend_interval: HumanDuration,
        #[serde(default = "super::default_sink_timeout")]
        pub timeout: HumanDuration,
    }
}

impl AlertmanagerSinkConfig {
    /// `host:port` of an instance, as it appears in the sink's name.
    fn instance(url: &Url) -> String {
        match (url.host_str(), url.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => url.to_string(),
        }
    }
}

impl SinkConfig for AlertmanagerSinkConfig {
    /// Alertmanager groups alerts itself (`group_by` in its route): one alert per finding.
    fn groups(&self) -> bool {
        false
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn validate(&self) -> Result<(), Invalid> {
        let mut seen = std::collections::HashSet::new();
        let mut rules = vec![rule(
            "urls",
            self.urls.is_empty(),
            "needs at least one Alertmanager URL",
        )];
        for u in &self.urls {
            rules.extend([
                rule(
                    "urls",
                    !matches!(u.scheme(), "http" | "https") || u.host_str().is_none(),
                    format!("`{u}` is not an http:// or https:// URL"),
                ),
                rule(
                    "urls",
                    !u.username().is_empty() || u.password().is_some(),
                    "must not carry credentials",
                ),
                rule(
                    "urls",
                    !seen.insert(Self::instance(u)),
                    format!("{} is listed twice", Self::instance(u)),
                ),
            ]);
        }
        rules.push(rule(
            "resend_interval",
            self.resend_interval.0 < Duration::from_secs(1),
            "must be at least 1s",
        ));
        check(rules)
    }

    fn build(&self, name: String, ctx: &SinkContext) -> Result<Vec<Arc<dyn Sink>>, SinkError> {
        let many = self.urls.len() > 1;
        self.urls
            .iter()
            .map(|url| {
                let name = if many {
                    format!("{name}@{}", Self::instance(url))
                } else {
                    name.clone()
                };
                let sink = AlertmanagerSink::new(name, url, self, ctx)?;
                Ok(Arc::new(sink) as Arc<dyn Sink>)
            })
            .collect()
    }
}

/// What the sink keeps posting: the active findings, and those resolved lately with when.
#[derive(Debug, Default)]
struct Book {
    firing: BTreeMap<String, Notification>,
    resolved: BTreeMap<String, Notification>,
    last_refresh: Option<DateTime<Utc>>,
    /// The last refresh failed: logged once, and again when it recovers.
    failing: bool,
}

/// One Alertmanager instance.
#[derive(Debug)]
pub struct AlertmanagerSink {
    name: String,
    poster: Poster,
    resend: HumanDuration,
    ctx: SinkContext,
    book: Mutex<Book>,
}

impl AlertmanagerSink {
    pub fn new(
        name: String,
        base: &Url,
        cfg: &AlertmanagerSinkConfig,
        ctx: &SinkContext,
    ) -> Result<Self, SinkError> {
        let endpoint = api_url(base).map_err(|e| {
            SinkError::new(format!("alertmanager sink {name}: {base}: {e}"))
        })?;
        let poster = Poster::new("alertmanager", &name, &SecretUrl::new(endpoint), cfg.timeout)?;
        Ok(AlertmanagerSink {
            name,
            poster,
            resend: cfg.resend_interval,
            ctx: ctx.clone(),
            book: Mutex::new(Book::default()),
        })
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // The book is rebuilt from the next cycle's hand-over; a panic elsewhere cannot corrupt it.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How far ahead a firing alert's `endsAt` is put.
    fn lifetime(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.resend.0 * LIFETIME_RESENDS)
            .unwrap_or(chrono::Duration::minutes(4))
    }

    async fn post(&self, alerts: Vec<Value>) -> Result<(), SinkError> {
        let body = serde_json::to_vec(&alerts)
            .map_err(|e| self.poster.error(&format!("cannot encode the alerts: {e}")))?;
        let answer = self.poster.post(body, &[], &[]).await?;
        if answer.status.is_success() {
            return Ok(());
        }
        // 400 means Alertmanager could not take our alerts; sending them again will not change that.
        Err(self.poster.refused(&answer, true))
    }
}

#[async_trait::async_trait]
impl Sink for AlertmanagerSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// Alertmanager groups alerts itself: every notification is its own alert, all of a message in
    /// one post.
    async fn deliver(&self, m: &Message) -> Result<(), SinkError> {
        let now = Utc::now();
        let alerts = m
            .notes
            .iter()
            .map(|n| {
                let ends = match n.status {
                    Status::Firing => now + self.lifetime(),
                    Status::Resolved => n.at,
                };
                alert(n, ends, &self.ctx)
            })
            .collect();
        self.post(alerts).await?;
        let mut book = self.book();
        for n in &m.notes {
            let fp = n.fingerprint();
            match n.status {
                Status::Firing if !n.event && !n.test => {
                    book.resolved.remove(&fp);
                    book.firing.insert(fp, n.clone());
                }
                Status::Firing => {}
                Status::Resolved => {
                    book.firing.remove(&fp);
                    book.resolved.insert(fp, n.clone());
                }
            }
        }
        Ok(())
    }

    fn mirror(&self) -> Option<&dyn Mirror> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl Mirror for AlertmanagerSink {
    fn refresh_every(&self) -> Duration {
        self.resend.0
    }

    fn firing(&self, active: Vec<Notification>) {
        let mut book = self.book();
        book.firing = active
            .into_iter()
            .map(|n| (n.fingerprint(), n))
            .collect();
        let Book {
            firing, resolved, ..
        } = &mut *book;
        resolved.retain(|fp, _| !firing.contains_key(fp));
    }

    async fn refresh(&self, now: DateTime<Utc>) -> Result<(), SinkError> {
        let alerts = {
            let mut book = self.book();
            let due = book
                .last_refresh
                .is_none_or(|t| now - t >= chrono::Duration::from_std(self.resend.0).unwrap_or_default());
            if !due {
                return Ok(());
            }
            book.last_refresh = Some(now);
            let keep = chrono::Duration::from_std(RESOLVED_RESEND).unwrap_or_default();
            book.resolved.retain(|_, n| now - n.at < keep);
            let ends = now + self.lifetime();
            let mut alerts: Vec<Value> = book
                .firing
                .values()
                .map(|n| alert(n, ends, &self.ctx))
                .collect();
            alerts.extend(book.resolved.values().map(|n| alert(n, n.at, &self.ctx)));
            alerts
        };
        if alerts.is_empty() {
            return Ok(());
        }
        let result = self.post(alerts).await;
        let mut book = self.book();
        match &result {
            Ok(()) if book.failing => {
                book.failing = false;
                tracing::info!(sink = %self.name, "alertmanager reachable again; active alerts re-sent");
            }
            Ok(()) => {}
            Err(e) if !book.failing => {
                book.failing = true;
                tracing::warn!(
                    sink = %self.name,
                    error = %e,
                    "cannot re-send active alerts to alertmanager; trying every resend_interval"
                );
            }
            Err(_) => {}
        }
        result
    }
}

/// `<base>/api/v2/alerts`, keeping a route prefix in `base`.
fn api_url(base: &Url) -> Result<Url, url::ParseError> {
    let mut b = base.clone();
    if !b.path().ends_with('/') {
        let p = format!("{}/", b.path());
        b.set_path(&p);
    }
    b.join("api/v2/alerts")
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One postable alert (Alertmanager API v2).
pub fn alert(n: &Notification, ends: DateTime<Utc>, ctx: &SinkContext) -> Value {
    let f = &n.finding;
    let mut labels = BTreeMap::new();
    labels.insert("alertname", ALERTNAME.to_string());
    labels.insert("check", f.check.to_string());
    labels.insert("severity", f.severity.as_str().to_string());
    labels.insert("fingerprint", n.fingerprint());
    let subject_label = ctx.check(&f.check).and_then(|c| c.subject);
    if let Some(label) = subject_label {
        labels.insert(label, f.subject_key.clone());
    }
    let mut annotations = BTreeMap::new();
    annotations.insert("summary", f.summary.clone());
    annotations.insert("description", format!("{}\n\nFix: {}", f.why, f.fix));
    annotations.insert("subject", f.subject.clone());
    if let Some(d) = f.dod {
        annotations.insert("dod", d.as_str().to_string());
    }
    if !ctx.watched.is_empty() {
        annotations.insert("source", ctx.watched.clone());
    }
    let mut a = json!({
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(n.first_seen),
        "endsAt": rfc3339(ends),
    });
    if let Some(u) = &ctx.external_url {
        a["generatorURL"] = json!(u.as_str());
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::fixtures::note;

    fn config(urls: &[&str]) -> AlertmanagerSinkConfig {
        AlertmanagerSinkConfig {
            name: None,
            urls: urls.iter().map(|u| Url::parse(u).expect("url")).collect(),
            resend_interval: default_resend_interval(),
            timeout: HumanDuration::secs(2),
            min_severity: crate::finding::Severity::Info,
            checks: Vec::new(),
            exclude_checks: Vec::new(),
            repeat_interval: None,
            group_by: None,
            max_items: None,
            group_wait: None,
        }
    }

    #[test]
    fn alert_has_identity_labels_and_readable_annotations() {
        let n = note(Status::Firing, false);
        let ctx = crate::alerts::fixtures::context(
            "registry.npmjs.org: alice",
            Some("https://watchdog.example.com/"),
        );
        let ends = n.at + chrono::Duration::minutes(4);
        let a = alert(&n, ends, &ctx);
        assert_eq!(
            a["labels"],
            json!({
                "alertname": "NpmWatchdogFinding",
                "check": "token-bypass-2fa",
                "severity": "critical",
                "fingerprint": "token-bypass-2fa:82e3930f1c5a6a7f0d2b9c44e1f3a5b6",
                "token": "82e3930f1c5a6a7f0d2b9c44e1f3a5b6",
            })
        );
        assert_eq!(a["annotations"]["summary"], "A bypass-2FA token is 2d old.");
        assert_eq!(
            a["annotations"]["description"],
            "It publishes without 2FA.\n\nFix: Revoke it: `npm token revoke 82e393`."
        );
        assert_eq!(a["annotations"]["dod"], "D9");
        assert_eq!(a["annotations"]["source"], "registry.npmjs.org: alice");
        assert_eq!(a["startsAt"], "2026-11-26T12:00:00.000Z");
        assert_eq!(a["endsAt"], "2026-11-26T12:04:00.000Z");
        assert_eq!(a["generatorURL"], "https://watchdog.example.com/");
        let plain = alert(&n, ends, &SinkContext::default());
        assert!(plain.get("generatorURL").is_none());
    }

    #[test]
    fn api_url_keeps_a_route_prefix() {
        let u = |s: &str| api_url(&Url::parse(s).expect("url")).expect("join").to_string();
        assert_eq!(u("http://127.0.0.1:9093"), "http://127.0.0.1:9093/api/v2/alerts");
        assert_eq!(
            u("http://proxy.example/alertmanager"),
            "http://proxy.example/alertmanager/api/v2/alerts"
        );
        assert_eq!(
            u("http://proxy.example/alertmanager/"),
            "http://proxy.example/alertmanager/api/v2/alerts"
        );
    }

    #[test]
    fn each_instance_is_its_own_sink() {
        let one = config(&["http://127.0.0.1:9093"]);
        let sinks = one
            .build("am".into(), &SinkContext::default())
            .expect("build");
        assert_eq!(sinks.len(), 1);
        assert_eq!(sinks[0].name(), "am");
        let two = config(&["http://127.0.0.1:9093", "http://127.0.0.1:9094/"]);
        let names: Vec<String> = two
            .build("am".into(), &SinkContext::default())
            .expect("build")
            .iter()
            .map(|s| s.name().to_string())
            .collect();
        assert_eq!(names, vec!["am@127.0.0.1:9093", "am@127.0.0.1:9094"]);
    }

    #[test]
    fn invalid_url_lists_are_refused() {
        let table = [
            (config(&[]), "urls: needs at least one Alertmanager URL"),
            (
                config(&["ftp://127.0.0.1:9093"]),
                "urls: `ftp://127.0.0.1:9093/` is not an http:// or https:// URL",
            ),
            (
                config(&["http://127.0.0.1:9093", "http://127.0.0.1:9093/x"]),
                "urls: 127.0.0.1:9093 is listed twice",
            ),
            (
                config(&["http://u:p@127.0.0.1:9093"]),
                "urls: must not carry credentials",
            ),
        ];
        for (cfg, want) in table {
            assert_eq!(
                cfg.validate().expect_err(want).to_string(),
                want,
                "{cfg:?}"
            );
        }
        let mut fast = config(&["http://127.0.0.1:9093"]);
        fast.resend_interval = HumanDuration(Duration::from_millis(10));
        assert!(fast.validate().is_err());
    }

    #[test]
    fn the_book_follows_what_is_firing() {
        let sink = AlertmanagerSink::new(
            "am".into(),
            &Url::parse("http://127.0.0.1:9").expect("url"),
            &config(&["http://127.0.0.1:9"]),
            &SinkContext::default(),
        )
        .expect("sink");
        let n = note(Status::Firing, false);
        sink.firing(vec![n.clone()]);
        assert_eq!(sink.book().firing.len(), 1);
        sink.firing(Vec::new());
        assert!(sink.book().firing.is_empty());
    }
}
