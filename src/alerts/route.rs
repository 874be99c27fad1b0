//! Routing: which findings a sink is told about, and how often it is reminded of one still active.
//!
//! Every `[[alerts.<kind>]]` section takes the same routing keys (`min_severity`, `checks`,
//! `exclude_checks`, `repeat_interval`) and grouping keys (`group_by`, `max_items`). A sink file declares its section with [`sink_section!`],
//! which adds those keys to the sink's own, so they are spelled, defaulted and checked the same way
//! everywhere and an unknown key is still refused.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::types::{check, rule, HumanDuration, Invalid};
use crate::finding::{Finding, Severity};

/// Adds the routing keys to a sink's section struct and implements [`Routed`] for it. The struct
/// keeps its own derives and attributes (it must be `#[serde(deny_unknown_fields)]`).
#[macro_export]
macro_rules! sink_section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            /// Findings below this severity are not sent to this sink.
            #[serde(default = "crate::alerts::route::default_min_severity")]
            pub min_severity: $crate::finding::Severity,
            /// Only these checks (all when empty).
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub checks: Vec<String>,
            /// Never these checks.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub exclude_checks: Vec<String>,
            /// Overrides `alerts.repeat_interval` for this sink.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub repeat_interval: Option<$crate::config::types::HumanDuration>,
            /// Overrides `alerts.group_by` for this sink.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub group_by: Option<Vec<$crate::alerts::group::GroupDim>>,
            /// Overrides `alerts.max_items` for this sink.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub max_items: Option<usize>,
            /// Overrides `alerts.group_wait` for this sink.
            #[serde(
                default,
                skip_serializing_if = "Option::is_none",
                deserialize_with = "crate::config::types::opt_zero_or_duration"
            )]
            pub group_wait: Option<$crate::config::types::HumanDuration>,
        }

        impl $crate::alerts::route::Routed for $name {
            fn route(&self) -> $crate::alerts::route::Route {
                $crate::alerts::route::Route {
                    min_severity: self.min_severity,
                    checks: self.checks.clone(),
                    exclude_checks: self.exclude_checks.clone(),
                    repeat_interval: self.repeat_interval,
                }
            }

            fn group_overrides(&self) -> $crate::alerts::route::GroupOverrides {
                $crate::alerts::route::GroupOverrides {
                    by: self.group_by.clone(),
                    max_items: self.max_items,
                    wait: self.group_wait,
                }
            }
        }
    };
}

pub(crate) fn default_min_severity() -> Severity {
    Severity::Info
}

/// A section that carries the routing keys (implemented by [`sink_section!`]).
pub trait Routed {
    fn route(&self) -> Route;
    /// The section's own `group_by`, `max_items` and `group_wait`, when it sets them.
    fn group_overrides(&self) -> GroupOverrides;
}

/// What a sink's section sets of the grouping keys (`None`: `[alerts]`'s value applies).
#[derive(Debug, Clone, Default)]
pub struct GroupOverrides {
    pub by: Option<Vec<crate::alerts::group::GroupDim>>,
    pub max_items: Option<usize>,
    pub wait: Option<crate::config::types::HumanDuration>,
}

/// What one sink wants to hear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub min_severity: Severity,
    pub checks: Vec<String>,
    pub exclude_checks: Vec<String>,
    pub repeat_interval: Option<HumanDuration>,
}

impl Default for Route {
    /// Everything, reminded at `alerts.repeat_interval`: the log sink's route.
    fn default() -> Self {
        Route {
            min_severity: default_min_severity(),
            checks: Vec::new(),
            exclude_checks: Vec::new(),
            repeat_interval: None,
        }
    }
}

impl Route {
    /// Whether this sink is told about `f` at all.
    pub fn wants(&self, f: &Finding) -> bool {
        self.wants_kind(&f.check, f.severity)
    }

    /// Whether this sink is told about findings of `check` at `severity`: routes look at nothing else.
    pub fn wants_kind(&self, check: &str, severity: Severity) -> bool {
        severity >= self.min_severity
            && (self.checks.is_empty() || self.checks.iter().any(|c| c == check))
            && !self.exclude_checks.iter().any(|c| c == check)
    }

    /// Whether a finding first seen at `first_seen`, last looked at `last_seen`, is due a reminder
    /// `now`. Reminders fall on a fixed grid (`first_seen` + k × interval), so each sink keeps its own
    /// rhythm without the state having to remember when each sink was last told; a daemon that was
    /// down across several grid points sends one reminder, not a burst.
    pub fn reminder_due(
        &self,
        default: HumanDuration,
        first_seen: DateTime<Utc>,
        last_seen: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> bool {
        let every = self.repeat_interval.unwrap_or(default).0.as_millis().max(1);
        let step = |t: DateTime<Utc>| (t - first_seen).num_milliseconds().max(0) as u128 / every;
        step(now) > step(last_seen)
    }

    /// `min warning; checks token-created; except token-unused; reminders every 1h`, for `config check`.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("min {}", self.min_severity)];
        if !self.checks.is_empty() {
            parts.push(format!("checks {}", self.checks.join(", ")));
        }
        if !self.exclude_checks.is_empty() {
            parts.push(format!("except {}", self.exclude_checks.join(", ")));
        }
        if let Some(r) = self.repeat_interval {
            parts.push(format!("reminders every {r}"));
        }
        parts.join("; ")
    }

    /// The check ids must exist. `known` lists every check id; keys are relative to the section.
    pub fn validate(&self, known: &[&str]) -> Result<(), Invalid> {
        let unknown = |list: &[String]| {
            list.iter()
                .find(|c| !known.contains(&c.as_str()))
                .map(|bad| {
                    format!(
                        "unknown check `{bad}` (expected one of: {})",
                        known.join(", ")
                    )
                })
        };
        check(
            [
                ("checks", &self.checks),
                ("exclude_checks", &self.exclude_checks),
            ]
            .into_iter()
            .map(|(key, list)| {
                let bad = unknown(list);
                rule(key, bad.is_some(), bad.unwrap_or_default())
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::fixtures::note;
    use crate::alerts::Status;

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T00:00:00Z")
            .expect("t")
            .with_timezone(&Utc)
            + chrono::Duration::hours(h)
    }

    #[test]
    fn wants_filters_by_severity_and_check_lists() {
        let f = note(Status::Firing, false).finding; // token-bypass-2fa, critical
        let all = Route::default();
        assert!(all.wants(&f));
        let only_other = Route {
            checks: vec!["token-present".into()],
            ..Route::default()
        };
        assert!(!only_other.wants(&f));
        let only_this = Route {
            checks: vec!["token-bypass-2fa".into()],
            ..Route::default()
        };
        assert!(only_this.wants(&f));
        let excluded = Route {
            exclude_checks: vec!["token-bypass-2fa".into()],
            ..Route::default()
        };
        assert!(!excluded.wants(&f));
        let mut info = (*f).clone();
        info.severity = Severity::Info;
        let warn = Route {
            min_severity: Severity::Warning,
            ..Route::default()
        };
        assert!(!warn.wants(&info));
        assert!(warn.wants(&f));
    }

    #[test]
    fn reminders_fall_on_a_grid_from_first_seen() {
        let four = HumanDuration::secs(4 * 3600);
        let r = Route::default();
        assert!(!r.reminder_due(four, t(0), t(0), t(1)));
        assert!(!r.reminder_due(four, t(0), t(1), t(3)));
        assert!(r.reminder_due(four, t(0), t(3), t(4)));
        assert!(!r.reminder_due(four, t(0), t(4), t(5)));
        // Down from 5h to 17h: three grid points passed, one reminder is due.
        assert!(r.reminder_due(four, t(0), t(5), t(17)));
        let hourly = Route {
            repeat_interval: Some(HumanDuration::secs(3600)),
            ..Route::default()
        };
        assert!(hourly.reminder_due(four, t(0), t(1), t(2)));
    }

    #[test]
    fn unknown_check_ids_are_refused_with_the_known_ones() {
        let r = Route {
            exclude_checks: vec!["token-presnt".into()],
            ..Route::default()
        };
        let err = r
            .validate(&["token-present", "token-created"])
            .expect_err("typo");
        assert_eq!(
            err.to_string(),
            "exclude_checks: unknown check `token-presnt` (expected one of: token-present, token-created)"
        );
        assert!(Route::default().validate(&["token-present"]).is_ok());
    }
}
