//! Check groups: the checks that read the same sources run together, on the group's own schedule.

use std::fmt;

use crate::config::{Config, Schedule, ScheduleConfig};

/// A group of checks. Its name is the `check` label of `check_success`, `check_duration_seconds` and
/// `check_errors_total`, the key of its schedule, and what `watchdog-blind` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// The token list and the account's profile.
    Tokens,
    /// Packuments of the watched packages.
    Packages,
    /// Rosters and teams of the watched orgs.
    Org,
    /// The secrets CI providers hold (`[[ci.*]]`).
    Ci,
    /// Trusted-publisher configurations: behind 2FA, so read only by `audit --otp`, never scheduled.
    Trust,
    /// The daemon's own health: judged after every scheduled group's run, never scheduled itself.
    Health,
}

impl Group {
    /// The groups the daemon runs on a schedule, in the order the first cycle runs them.
    pub const SCHEDULED: [Group; 4] = [Group::Tokens, Group::Packages, Group::Org, Group::Ci];

    pub fn as_str(self) -> &'static str {
        match self {
            Group::Tokens => "tokens",
            Group::Packages => "packages",
            Group::Org => "org",
            Group::Ci => "ci",
            Group::Trust => "trust",
            Group::Health => "health",
        }
    }

    pub fn parse(name: &str) -> Option<Group> {
        [
            Group::Tokens,
            Group::Packages,
            Group::Org,
            Group::Ci,
            Group::Trust,
            Group::Health,
        ]
        .into_iter()
        .find(|g| g.as_str() == name)
    }

    /// `schedule.<name>`, for the groups the daemon schedules.
    pub fn schedule(self, s: &ScheduleConfig) -> Option<&Schedule> {
        match self {
            Group::Tokens => Some(&s.tokens),
            Group::Packages => Some(&s.packages),
            Group::Org => Some(&s.org),
            Group::Ci => Some(&s.ci),
            Group::Trust | Group::Health => None,
        }
    }

    /// Whether the configuration gives the group anything to read.
    pub fn is_watched(self, c: &Config) -> bool {
        let w = &c.watch;
        match self {
            Group::Tokens | Group::Health => true,
            Group::Packages | Group::Trust => w.any_packages(),
            Group::Org => !w.orgs.is_empty(),
            Group::Ci => !c.ci.is_empty(),
        }
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WatchConfig;

    #[test]
    fn names_parse_back_and_only_scheduled_groups_have_a_schedule() {
        let s = ScheduleConfig::default();
        for g in [
            Group::Tokens,
            Group::Packages,
            Group::Org,
            Group::Ci,
            Group::Trust,
            Group::Health,
        ] {
            assert_eq!(Group::parse(g.as_str()), Some(g));
            assert_eq!(
                g.schedule(&s).is_some(),
                Group::SCHEDULED.contains(&g),
                "{g}"
            );
        }
        assert_eq!(Group::parse("cI"), None);
    }

    #[test]
    fn what_is_watched() {
        let watching = |watch: WatchConfig| Config {
            watch,
            ..Config::default()
        };
        let none = watching(WatchConfig {
            own_account: false,
            ..WatchConfig::default()
        });
        assert!(Group::Tokens.is_watched(&none));
        assert!(!Group::Packages.is_watched(&none));
        assert!(!Group::Org.is_watched(&none));
        assert!(!Group::Ci.is_watched(&none));
        assert!(Group::Packages.is_watched(&Config::default()));
        let orgs = watching(WatchConfig {
            own_account: false,
            orgs: vec!["acme".into()],
            ..WatchConfig::default()
        });
        assert!(Group::Packages.is_watched(&orgs) && Group::Org.is_watched(&orgs));
        let mut ci = none;
        ci.ci.gitlab.push(crate::ci::gitlab::GitlabConfig {
            token_file: "/run/credentials/npm-watchdog/gitlab".into(),
            api_url: crate::ci::gitlab::DEFAULT_API_URL.parse().expect("url"),
            projects: vec!["acme/widget".into()],
            groups: vec![],
        });
        assert!(Group::Ci.is_watched(&ci));
    }
}
