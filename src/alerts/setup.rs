//! `[alerts]` as a whole: the rules that span its sections (names unique across sinks, routes that
//! name real checks, grouping keys only where a sink groups) and building the configured sinks.

use std::sync::Arc;

use super::{group, log, route, AlertsConfig, GroupDim, Route, SinkContext, SinkError, Target};
use crate::config::types::{check, rule, Invalid};

impl AlertsConfig {
    /// Each entry's own rules, names unique across all sinks, and routes that name one of
    /// `known_checks` (handed in by the layer that knows the checks).
    pub fn validate(&self, known_checks: &[&str]) -> Result<(), Invalid> {
        let mut names = std::collections::HashSet::new();
        for e in self.entries() {
            e.config.validate().map_err(|i| i.under(&e.key()))?;
            check([rule(
                "name",
                !names.insert(e.name()),
                "another sink has this name",
            )])
            .map_err(|i| i.under(&e.key()))?;
            e.config
                .route()
                .validate(known_checks)
                .map_err(|i| i.under(&e.key()))?;
            let route::GroupOverrides {
                by,
                max_items,
                wait,
            } = e.config.group_overrides();
            check([
                rule(
                    "group_by",
                    by.is_some() && !e.config.groups(),
                    "this sink is not grouped: it sends one alert per finding and its receiver \
                     groups them (set group_by there)",
                ),
                rule(
                    "max_items",
                    max_items.is_some() && !e.config.groups(),
                    "this sink is not grouped: it sends one alert per finding",
                ),
                rule(
                    "group_wait",
                    wait.is_some() && !e.config.groups(),
                    "this sink is not grouped: it sends one alert per finding and its receiver \
                     groups them (set group_wait there)",
                ),
                rule("max_items", max_items == Some(0), "must be at least 1"),
                rule(
                    "group_wait",
                    wait.is_some_and(|w| w.0 > group::MAX_GROUP_WAIT),
                    "must be at most 1h: a longer hold delays every new finding's alert as long",
                ),
                rule(
                    "group_by",
                    by.as_ref().is_some_and(|b| has_repeats(b)),
                    "names a dimension twice",
                ),
            ])
            .map_err(|i| i.under(&e.key()))?;
        }
        check([
            rule("max_items", self.max_items == 0, "must be at least 1"),
            rule(
                "group_wait",
                self.group_wait.0 > group::MAX_GROUP_WAIT,
                "must be at most 1h: a longer hold delays every new finding's alert as long",
            ),
            rule(
                "group_by",
                has_repeats(&self.group_by),
                "names a dimension twice",
            ),
        ])
        .map_err(|i| i.under("alerts"))
    }

    /// Build the sinks the configuration asks for, each with its route. With no other sink the log
    /// is used, so a finding is never silently dropped.
    pub fn build_sinks(&self, ctx: &SinkContext) -> Result<Vec<Target>, SinkError> {
        let mut targets = Vec::new();
        for e in self.entries() {
            let route = e.config.route();
            let o = e.config.group_overrides();
            let grouping = e.config.groups().then(|| group::GroupSettings {
                by: o.by.unwrap_or_else(|| self.group_by.clone()),
                max_items: o.max_items.unwrap_or(self.max_items),
                wait: o.wait.unwrap_or(self.group_wait).0,
            });
            for sink in e.config.build(e.name(), ctx)? {
                targets.push(Target {
                    sink,
                    route: route.clone(),
                    grouping: grouping.clone(),
                });
            }
        }
        // The log is grouped too, so a first run over thousands of findings is not thousands of
        // lines; each finding a message carries is still a line of its own.
        if targets.is_empty() || self.log {
            targets.push(Target {
                sink: Arc::new(log::LogSink),
                route: Route::default(),
                // The log is a record, not a pager: it is never held.
                grouping: Some(group::GroupSettings {
                    by: self.group_by.clone(),
                    max_items: self.max_items,
                    wait: std::time::Duration::ZERO,
                }),
            });
        }
        Ok(targets)
    }
}

fn has_repeats(by: &[GroupDim]) -> bool {
    let mut seen = std::collections::HashSet::new();
    by.iter().any(|d| !seen.insert(*d))
}
