//! `maintainers-changed`: a watched package's maintainers (owners) differ from the previous read. An
//! event: it fires once per distinct change and never resolves.
//!
//! Why: a maintainer can publish, change the package's settings and trust configuration, and add
//! further owners. Adding an owner is a classic takeover step, and removing the real ones locks the
//! team out; either should reach a human at once, even when the change was legitimate.
//!
//! Only packages present both in this read and in the previous one are compared: with no earlier
//! record (first read, or a package just added to the watch) there is nothing to compare against, and
//! reporting every owner as "added" would be noise. The subject key carries the new maintainer list,
//! so each distinct change is its own event and a later change fires again.

use std::collections::BTreeSet;

use super::command::{npm_or_withheld, Word};
use super::{CheckDef, Finding, Group, Severity, Snapshot, Source};
use crate::config::PolicyConfig;

pub const CHECK: CheckDef = CheckDef {
    id: "maintainers-changed",
    group: Group::Packages,
    source: Source::Packages,
    dod: &[],
    event: true,
    subject: Some("package"),
    evaluate,
};

fn evaluate(snap: &Snapshot, _policy: &PolicyConfig) -> Vec<Finding> {
    let (Some(set), Some(previous)) = (snap.packages, snap.previous_maintainers) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, p) in &set.packuments {
        let Some(before) = previous.get(name) else {
            continue;
        };
        let before: BTreeSet<&str> = before.iter().map(String::as_str).collect();
        let now_list = p.maintainer_names();
        let now: BTreeSet<&str> = now_list.iter().map(String::as_str).collect();
        if before == now {
            continue;
        }
        let added: Vec<&str> = now.difference(&before).copied().collect();
        let removed: Vec<&str> = before.difference(&now).copied().collect();
        let mut changes = Vec::new();
        if !added.is_empty() {
            changes.push(format!("added {}", added.join(", ")));
        }
        if !removed.is_empty() {
            changes.push(format!("removed {}", removed.join(", ")));
        }
        let current = if now_list.is_empty() {
            "none".to_string()
        } else {
            now_list.join(", ")
        };
        let mut fix = Vec::new();
        if !added.is_empty() {
            let cmds: Vec<String> = added
                .iter()
                .map(|u| {
                    npm_or_withheld(&[
                        Word::Lit("owner"),
                        Word::Lit("rm"),
                        Word::Name(u),
                        Word::Package(name),
                    ])
                })
                .collect();
            fix.push(format!(
                "If nobody on the team added {} on purpose, remove them at once ({}) and check what the package \
                 published since (publish-untrusted, publish-unexpected-source).",
                added.join(", "),
                cmds.join(", ")
            ));
        }
        if !removed.is_empty() {
            let cmds: Vec<String> = removed
                .iter()
                .map(|u| {
                    npm_or_withheld(&[
                        Word::Lit("owner"),
                        Word::Lit("add"),
                        Word::Name(u),
                        Word::Package(name),
                    ])
                })
                .collect();
            fix.push(format!(
                "If {} should still be a maintainer, add them back ({}) and find out who removed them.",
                removed.join(", "),
                cmds.join(", ")
            ));
        }
        fix.push(
            "Whoever changed it had owner rights: check that account's tokens and 2FA devices. If the change \
             was intended, nothing else to do; this event does not repeat."
                .into(),
        );
        out.push(Finding {
            check: CHECK.id.into(),
            subject_key: format!("{name}:{}", now_list.join(",")),
            subject: format!("maintainers of {name}"),
            severity: Severity::Warning,
            summary: format!(
                "The maintainers of {name} changed: {}. Now: {current}.",
                changes.join("; ")
            ),
            why: "A maintainer can publish the package, change its settings and trusted publisher, and add more \
                  owners. Adding an owner is a classic takeover step; removing the real ones locks the team out."
                .into(),
            fix: fix.join(" "),
            dod: CHECK.dod_box(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{keys, packages, run_on, subjects, watch_policy, Inputs};
    use super::*;
    use std::collections::BTreeMap;

    fn run(previous: Option<&BTreeMap<String, Vec<String>>>) -> Vec<Finding> {
        let set = packages();
        run_on(
            &CHECK,
            Inputs {
                packages: Some(&set),
                previous_maintainers: previous,
                ..Inputs::default()
            },
            &watch_policy(),
        )
    }

    fn prev(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(p, m)| (p.to_string(), m.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn first_read_reports_nothing() {
        assert!(run(None).is_empty());
        // A package with no earlier record (left-pad-acme) is not compared either.
        assert!(run(Some(&prev(&[("@acme/old", &["x"])]))).is_empty());
    }

    /// The stored list names a maintainer whose name is a shell command: the fix suggests no command
    /// that pastes it.
    #[test]
    fn a_maintainer_name_that_is_not_an_npm_name_gets_no_command() {
        let p = prev(&[("@acme/core", &["alice", "bob", "MAINT-$(id);rm -rf ~"])]);
        let got = run(Some(&p));
        let fix = &got[0].fix;
        assert!(fix.contains("is not a valid npm name"), "{fix}");
        assert!(!fix.contains("`npm owner add MAINT"), "{fix}");
    }

    #[test]
    fn same_set_in_another_order_is_no_change() {
        let p = prev(&[
            ("@acme/core", &["bob", "alice"]),
            ("@acme/cli", &["alice", "old-ci", "alice"]),
        ]);
        assert!(run(Some(&p)).is_empty());
    }

    #[test]
    fn added_and_removed_are_named_once_per_distinct_change() {
        let p = prev(&[
            ("@acme/core", &["alice", "carol"]),
            ("@acme/cli", &["alice", "old-ci"]),
            ("left-pad-acme", &["carol", "mallory"]),
        ]);
        let got = run(Some(&p));
        assert_eq!(
            subjects(&got),
            vec![
                ("maintainers of @acme/core".into(), Severity::Warning),
                ("maintainers of left-pad-acme".into(), Severity::Warning),
            ]
        );
        assert_eq!(
            keys(&got),
            vec!["@acme/core:alice,bob", "left-pad-acme:carol"]
        );
        assert_eq!(
            got[0].summary,
            "The maintainers of @acme/core changed: added bob; removed carol. Now: alice, bob."
        );
        assert!(
            got[0].fix.contains("`npm owner rm bob @acme/core`"),
            "{}",
            got[0].fix
        );
        assert!(
            got[0].fix.contains("`npm owner add carol @acme/core`"),
            "{}",
            got[0].fix
        );
        assert_eq!(
            got[1].summary,
            "The maintainers of left-pad-acme changed: removed mallory. Now: carol."
        );
        assert!(!got[1].fix.contains("owner rm"), "{}", got[1].fix);
        assert_eq!(got[0].dod, None);
        // Registered as an event: it fires once and never resolves.
        assert!(crate::checks::events().contains("maintainers-changed"));
    }
}
