//! Every metric the daemon exports, in one struct with its own Prometheus registry.
//!
//! Names follow Prometheus conventions (`_total` counters, `_seconds`, `_timestamp_seconds`) and are part
//! of the product's contract: dashboards and alert rules depend on them. Label values are token id
//! prefixes and names, check group names (`check` on the per-group series), check ids (`findings`),
//! sink names, package names and fixed error reasons, never a secret. The registry client reports its
//! requests through the [`Observer`] trait, which this struct implements.

use std::sync::{Arc, RwLock, RwLockWriteGuard};

use chrono::{DateTime, Utc};
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::checks::{Group, PackageSet};
use crate::fetch::Reason;
use crate::finding::Severity;
use crate::registry::{Observer, Token};

mod delivery;
mod package_series;

pub use delivery::Delivery;

use package_series::PackageSeries;

const NS: &str = "npm_watchdog";

/// The labels of the per-group families (`check_success`, `check_last_success_timestamp_seconds`,
/// `check_duration_seconds`, and `check_errors_total` before its `reason`). `group` names the check
/// group; `check` carries the same value and is deprecated: elsewhere (`findings`) `check` is a check
/// id, so one word had two meanings. It is kept for one release so that existing queries go on
/// working (CHANGELOG.md).
const GROUP_LABELS: &[&str] = &["check", "group"];

/// The metrics, set through methods named for what happened (a cycle ran, a notification was
/// sent), so that each family's label set is written in this file only.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    tokens: IntGaugeVec,
    token_created: GaugeVec,
    token_expiry: GaugeVec,
    findings: IntGaugeVec,
    check_success: IntGaugeVec,
    check_last_success: GaugeVec,
    check_duration: GaugeVec,
    check_errors: IntCounterVec,
    registry_requests: IntCounterVec,
    ci_requests: IntCounterVec,
    ci_secrets: IntGaugeVec,
    notifications: IntCounterVec,
    notified_findings: IntCounterVec,
    notification_queue: IntGaugeVec,
    package_latest_trusted: PackageSeries,
    credential_expiry: GaugeVec,
    build_info: IntGaugeVec,
    up_since: Gauge,
    config_reload_ok: IntGauge,
    config_reload_success: Gauge,
    state_write_errors: IntCounter,
    /// Replacing a family (reset, then set every series) is many steps; a scrape between them would
    /// see no tokens, or half of them, which reads as "all clear". Replacements take this for writing
    /// and `render` for reading, so a scrape sees the old set or the new one, never a mix.
    replacing: Arc<RwLock<()>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NS)
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let token_labels = ["token", "name", "access", "bypass_2fa"];
        // Names, help texts and labels are constants, so these constructors cannot fail at run time;
        // `register` can only fail on a duplicate name, which the unit test below rules out.
        let m = Self {
            tokens: IntGaugeVec::new(
                opts(
                    "tokens",
                    "Tokens on the account, by access, bypass-2FA flag and state (live, or expired but still listed).",
                ),
                &["access", "bypass_2fa", "state"],
            )
            .expect("static metric"),
            token_created: GaugeVec::new(
                opts(
                    "token_created_timestamp_seconds",
                    "When each token on the account was created.",
                ),
                &token_labels,
            )
            .expect("static metric"),
            token_expiry: GaugeVec::new(
                opts(
                    "token_expiry_timestamp_seconds",
                    "When each token expires (tokens with an expiry only).",
                ),
                &token_labels,
            )
            .expect("static metric"),
            findings: IntGaugeVec::new(
                opts("findings", "Active findings by check and severity."),
                &["check", "severity"],
            )
            .expect("static metric"),
            check_success: IntGaugeVec::new(
                opts(
                    "check_success",
                    "1 if the check group's last run read all its sources, else 0.",
                ),
                GROUP_LABELS,
            )
            .expect("static metric"),
            check_last_success: GaugeVec::new(
                opts(
                    "check_last_success_timestamp_seconds",
                    "When the check group last ran successfully.",
                ),
                GROUP_LABELS,
            )
            .expect("static metric"),
            check_duration: GaugeVec::new(
                opts(
                    "check_duration_seconds",
                    "How long the check group's last run took.",
                ),
                GROUP_LABELS,
            )
            .expect("static metric"),
            check_errors: IntCounterVec::new(
                opts(
                    "check_errors_total",
                    "Sources a check group could not read, by group and reason (unreachable, unauthorized, otp_required, malformed, credential, state …).",
                ),
                &["check", "group", "reason"],
            )
            .expect("static metric"),
            registry_requests: IntCounterVec::new(
                opts(
                    "registry_requests_total",
                    "Requests made to the registry, by endpoint and status code.",
                ),
                &["endpoint", "code"],
            )
            .expect("static metric"),
            ci_requests: IntCounterVec::new(
                opts(
                    "ci_requests_total",
                    "Requests made to the CI providers' APIs, by provider, endpoint and status code.",
                ),
                &["provider", "endpoint", "code"],
            )
            .expect("static metric"),
            ci_secrets: IntGaugeVec::new(
                opts(
                    "ci_secrets",
                    "Secrets the configured CI providers hold, by provider, as of the last ci run (lists that could not be read count as last read).",
                ),
                &["provider"],
            )
            .expect("static metric"),
            notifications: IntCounterVec::new(
                opts(
                    "notifications_total",
                    "Notification attempts (a grouped message counts once) by sink and outcome (sent, failed: retried later, rejected: refused for good by the receiver, reduced: refused, then accepted in a reduced form, dropped: the sink was removed).",
                ),
                &["sink", "outcome"],
            )
            .expect("static metric"),
            notified_findings: IntCounterVec::new(
                opts(
                    "notified_findings_total",
                    "Findings carried by the notifications a sink accepted (a grouped notification carries several), by sink.",
                ),
                &["sink"],
            )
            .expect("static metric"),
            notification_queue: IntGaugeVec::new(
                opts(
                    "notification_queue",
                    "Notifications (grouped messages) waiting in the outbox, by sink.",
                ),
                &["sink"],
            )
            .expect("static metric"),
            package_latest_trusted: PackageSeries::new(),
            credential_expiry: GaugeVec::new(
                opts(
                    "credential_expiry_timestamp_seconds",
                    "When the daemon's own npm token expires (only when the registry lists it with an expiry).",
                ),
                &["token"],
            )
            .expect("static metric"),
            build_info: IntGaugeVec::new(
                opts(
                    "build_info",
                    "Always 1; the version label says which build runs.",
                ),
                &["version"],
            )
            .expect("static metric"),
            up_since: Gauge::with_opts(opts(
                "start_time_seconds",
                "When the daemon started, in seconds since the epoch.",
            ))
            .expect("static metric"),
            config_reload_ok: IntGauge::with_opts(opts(
                "config_last_reload_successful",
                "1 if the last configuration (re)load succeeded, else 0.",
            ))
            .expect("static metric"),
            config_reload_success: Gauge::with_opts(opts(
                "config_last_reload_success_timestamp_seconds",
                "When the configuration was last loaded successfully (at start or on SIGHUP).",
            ))
            .expect("static metric"),
            state_write_errors: IntCounter::with_opts(opts(
                "state_write_errors_total",
                "Cycles whose outcome could not be written to the state database (nothing of them was kept).",
            ))
            .expect("static metric"),
            registry,
            replacing: Arc::default(),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.tokens.clone()),
            Box::new(m.token_created.clone()),
            Box::new(m.token_expiry.clone()),
            Box::new(m.findings.clone()),
            Box::new(m.check_success.clone()),
            Box::new(m.check_last_success.clone()),
            Box::new(m.check_duration.clone()),
            Box::new(m.check_errors.clone()),
            Box::new(m.registry_requests.clone()),
            Box::new(m.ci_requests.clone()),
            Box::new(m.ci_secrets.clone()),
            Box::new(m.notifications.clone()),
            Box::new(m.notified_findings.clone()),
            Box::new(m.notification_queue.clone()),
            Box::new(m.package_latest_trusted.clone()),
            Box::new(m.credential_expiry.clone()),
            Box::new(m.build_info.clone()),
            Box::new(m.up_since.clone()),
            Box::new(m.state_write_errors.clone()),
            Box::new(m.config_reload_ok.clone()),
            Box::new(m.config_reload_success.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric names are unique");
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let now = Utc::now();
        m.up_since.set(now.timestamp() as f64);
        // The configuration was loaded before the metrics exist.
        m.config_reloaded(true, now);
        m
    }

    /// The text exposition format served at `/metrics`.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        let families = {
            // A poisoned lock only means a replacement panicked half-way; serving what is there
            // beats serving nothing.
            let _steady = self.replacing.read().unwrap_or_else(|e| e.into_inner());
            self.registry.gather()
        };
        if let Err(e) = encoder.encode(&families, &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        // The text is UTF-8 (names and label values are Rust strings); taking the buffer as it is
        // spares a copy of a scrape that is 700 KB at 10,000 packages.
        String::from_utf8(buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    fn replacing(&self) -> RwLockWriteGuard<'_, ()> {
        self.replacing.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace the per-token series with the current list, so revoked tokens disappear. A token
    /// past its expiry at `now` is counted as `state="expired"`: npmjs.com still lists it, but it
    /// can no longer be used.
    pub fn set_tokens(&self, tokens: &[Token], now: DateTime<Utc>) {
        let _swap = self.replacing();
        self.tokens.reset();
        self.token_created.reset();
        self.token_expiry.reset();
        for access in ["read-only", "read-write", "unknown"] {
            for bypass in ["true", "false"] {
                for state in ["live", "expired"] {
                    self.tokens
                        .with_label_values(&[access, bypass, state])
                        .set(0);
                }
            }
        }
        for t in tokens {
            let bypass = if t.bypass_2fa { "true" } else { "false" };
            let state = if t.is_expired(now) { "expired" } else { "live" };
            self.tokens
                .with_label_values(&[t.access.as_str(), bypass, state])
                .inc();
            // A name is whatever the token's creator typed: bounded (and escaped) like any name
            // shown, so 10,000 tokens with 10 KB names cannot make /metrics hundreds of megabytes.
            let name = crate::inert::show(t.name.as_deref().unwrap_or(""));
            let labels = [t.id.as_str(), &name, t.access.as_str(), bypass];
            if let Some(c) = t.created {
                self.token_created
                    .with_label_values(&labels)
                    .set(c.timestamp() as f64);
            }
            if let Some(e) = t.expires {
                self.token_expiry
                    .with_label_values(&labels)
                    .set(e.timestamp() as f64);
            }
        }
    }

    /// The daemon's own token's expiry, if it is in the list and has one.
    pub fn set_own_token(&self, own: Option<&Token>) {
        let _swap = self.replacing();
        self.credential_expiry.reset();
        if let Some((t, e)) = own.and_then(|t| t.expires.map(|e| (t, e))) {
            self.credential_expiry
                .with_label_values(&[t.id.as_str()])
                .set(e.timestamp() as f64);
        }
    }

    /// `ci_secrets{provider}`: a series for every configured provider kind, 0 when it holds none.
    pub fn set_ci_secrets(&self, kinds: &[&str], secrets: &[crate::ci::CiSecret]) {
        let _swap = self.replacing();
        self.ci_secrets.reset();
        for kind in kinds {
            self.ci_secrets.with_label_values(&[kind]).set(0);
        }
        for s in secrets {
            self.ci_secrets
                .with_label_values(&[s.provider.as_str()])
                .inc();
        }
    }

    /// One series per watched package (packages no longer watched disappear); none when `per_package`
    /// is off (`server.package_series`).
    pub fn set_packages(&self, packages: &PackageSet, per_package: bool) {
        let mut values = self.package_latest_trusted.values();
        if !per_package {
            values.clear();
            return;
        }
        values.retain(|name, _| packages.packuments.contains_key(name));
        for (name, p) in &packages.packuments {
            let trusted = p.latest().is_some_and(|v| v.trusted_publisher.is_some());
            match values.get_mut(name) {
                Some(v) => *v = trusted,
                None => {
                    values.insert(name.clone(), trusted);
                }
            }
        }
    }

    /// Set `findings{check,severity}` from active counts, with zeros for every known check so that
    /// dashboards and `> 0` rules see a series even when all is well.
    pub fn set_findings(&self, counts: &[(String, Severity, i64)]) {
        let _swap = self.replacing();
        self.findings.reset();
        for def in crate::checks::all() {
            for sev in Severity::ALL {
                self.findings
                    .with_label_values(&[def.id, sev.as_str()])
                    .set(0);
            }
        }
        for (check, sev, n) in counts {
            self.findings
                .with_label_values(&[check.as_str(), sev.as_str()])
                .set(*n);
        }
    }

    /// The outcome of one run of a group: `check_success`, and `check_last_success_timestamp_seconds`
    /// when it read everything.
    pub fn group_ran(&self, group: Group, ok: bool, at: DateTime<Utc>) {
        self.check_success
            .with_label_values(&[group.as_str(), group.as_str()])
            .set(i64::from(ok));
        if ok {
            self.check_last_success
                .with_label_values(&[group.as_str(), group.as_str()])
                .set(at.timestamp() as f64);
        }
    }

    /// One source the group could not read.
    pub fn group_error(&self, group: Group, reason: Reason) {
        self.check_errors
            .with_label_values(&[group.as_str(), group.as_str(), reason.as_str()])
            .inc();
    }

    /// A configuration (re)load: `config_last_reload_successful`, and the success time.
    /// How long the last run of `group` took.
    pub fn group_duration(&self, group: Group, took: std::time::Duration) {
        self.check_duration
            .with_label_values(&[group.as_str(), group.as_str()])
            .set(took.as_secs_f64());
    }

    /// A cycle could not be recorded in the state database.
    pub fn state_write_failed(&self) {
        self.state_write_errors.inc();
    }

    /// One delivery attempt of a notification to `sink`, by how it ended.
    pub fn notification(&self, sink: &str, outcome: Delivery) {
        self.notifications
            .with_label_values(&[sink, outcome.as_str()])
            .inc();
    }

    /// `sink` accepted a notification carrying `findings` findings.
    pub fn notified(&self, sink: &str, findings: usize) {
        self.notified_findings
            .with_label_values(&[sink])
            .inc_by(findings as u64);
    }

    /// `notification_queue{sink}` for every configured sink: its undelivered rows, zero when none.
    pub fn set_queues<'a>(&self, sinks: impl IntoIterator<Item = (&'a str, i64)>) {
        let _whole = self.replacing();
        self.notification_queue.reset();
        for (sink, n) in sinks {
            self.notification_queue.with_label_values(&[sink]).set(n);
        }
    }

    pub fn config_reloaded(&self, ok: bool, at: DateTime<Utc>) {
        self.config_reload_ok.set(i64::from(ok));
        if ok {
            self.config_reload_success.set(at.timestamp() as f64);
        }
    }
}

impl crate::ci::CiObserver for Metrics {
    fn request(&self, provider: &str, endpoint: &str, outcome: &str) {
        self.ci_requests
            .with_label_values(&[provider, endpoint, outcome])
            .inc();
    }
}

impl Observer for Metrics {
    fn request(&self, endpoint: &str, outcome: &str) {
        self.registry_requests
            .with_label_values(&[endpoint, outcome])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_families_render_with_prefix_and_help() {
        let m = Metrics::new();
        m.registry_requests
            .with_label_values(&["tokens", "200"])
            .inc();
        m.group_ran(Group::Tokens, true, Utc::now());
        m.set_findings(&[]);
        let text = m.render();
        for name in [
            "npm_watchdog_build_info",
            "npm_watchdog_registry_requests_total",
            "npm_watchdog_check_success",
            "npm_watchdog_findings",
            "npm_watchdog_config_last_reload_successful",
            "npm_watchdog_config_last_reload_success_timestamp_seconds",
        ] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} missing:\n{text}"
            );
        }
        assert!(
            text.contains("npm_watchdog_findings{check=\"token-present\",severity=\"critical\"} 0")
        );
    }

    /// The sum of `npm_watchdog_tokens` and the number of per-token series in one scrape.
    fn token_view(text: &str) -> (i64, usize) {
        let sum = text
            .lines()
            .filter(|l| l.starts_with("npm_watchdog_tokens{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
            .sum();
        let series = text
            .lines()
            .filter(|l| l.starts_with("npm_watchdog_token_created_timestamp_seconds{"))
            .count();
        (sum, series)
    }

    #[test]
    fn a_scrape_during_a_replacement_sees_the_whole_list() {
        let objects: Vec<serde_json::Value> = (0..200)
            .map(|i| {
                serde_json::json!({
                    "key": format!("{i:04}abcdef"),
                    "token": format!("{i:04}ab"),
                    "created": "2026-01-01T00:00:00.000Z",
                })
            })
            .collect();
        let mut tokens = crate::registry::parse_tokens(&objects, 0).expect("token fixture");
        crate::registry::assign_ids(&mut tokens);
        let m = Metrics::new();
        m.set_tokens(&tokens, Utc::now());
        let writer = {
            let m = m.clone();
            let tokens = tokens.clone();
            std::thread::spawn(move || {
                for _ in 0..300 {
                    m.set_tokens(&tokens, Utc::now());
                }
            })
        };
        let mut scrapes = 0;
        while !writer.is_finished() || scrapes < 50 {
            assert_eq!(token_view(&m.render()), (200, 200), "scrape {scrapes}");
            scrapes += 1;
        }
        writer.join().expect("writer thread");
    }

    /// 10,000 tokens named with 10 KB each (and control characters): each token's series stays a
    /// few hundred bytes, so /metrics stays a few megabytes.
    #[test]
    fn hostile_token_names_are_bounded_labels() {
        let mut tokens = crate::checks::fixtures::tokens();
        let template = tokens.remove(0);
        let tokens: Vec<Token> = (0..10_000)
            .map(|i| {
                let mut t = template.clone();
                t.id = format!("{i:06x}");
                t.key = format!("{i:06x}{}", "0".repeat(26));
                t.name = Some(format!("n{i}\n{}", "x".repeat(10_000)));
                t
            })
            .collect();
        let m = Metrics::new();
        m.set_tokens(&tokens, Utc::now());
        let text = m.render();
        assert!(text.len() < 10 << 20, "{} bytes", text.len());
        let line = text
            .lines()
            .find(|l| l.starts_with("npm_watchdog_token_created_timestamp_seconds{"))
            .expect("a token series");
        assert!(line.len() < 600, "{line}");
        assert!(line.contains("\\\\n"), "the newline shown escaped: {line}");
    }

    #[test]
    fn package_series_follow_the_watched_packages() {
        let set = |names: &[&str]| {
            let mut set = PackageSet::default();
            for name in names {
                let doc = serde_json::json!({"name": name, "dist-tags": {"latest": "1.0.0"},
                    "versions": {"1.0.0": {"_npmUser": {"name": "ci", "trustedPublisher": {"id": "github"}}}}});
                let p = crate::registry::parse_packument(doc.to_string().as_bytes(), name)
                    .expect("packument");
                set.packuments.insert(name.to_string(), Arc::new(p));
            }
            set
        };
        let series = |m: &Metrics| -> Vec<String> {
            m.render()
                .lines()
                .filter(|l| l.starts_with("npm_watchdog_package_latest_trusted_publish{"))
                .map(str::to_string)
                .collect()
        };
        let m = Metrics::new();
        m.set_packages(&set(&["a", "b"]), true);
        m.set_packages(&set(&["b", "c"]), true);
        assert_eq!(
            series(&m),
            vec![
                "npm_watchdog_package_latest_trusted_publish{package=\"b\"} 1",
                "npm_watchdog_package_latest_trusted_publish{package=\"c\"} 1",
            ]
        );
        m.set_packages(&set(&["b", "c"]), false);
        assert!(series(&m).is_empty());
        m.set_packages(&set(&["c"]), true);
        assert_eq!(
            series(&m),
            vec!["npm_watchdog_package_latest_trusted_publish{package=\"c\"} 1"]
        );
    }
}
