//! `npm-watchdog notify-test`: one test message through every sink, each result reported. Exit 0 when
//! every sink delivered, 1 when one failed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::Utc;

use super::{CommandError, Outcome, EXIT_FINDINGS, EXIT_OK};
use crate::alerts::Notification;
use crate::runtime::Runtime;

/// `npm-watchdog notify-test`: one test message through every sink, each result reported.
pub async fn notify_test(rt: &Runtime) -> Result<Outcome, CommandError> {
    let sinks = rt.build_sinks().map_err(CommandError::from)?;
    let note = Notification::test(Utc::now());
    let mut out = String::new();
    let mut failed = 0;
    let mut results = BTreeMap::new();
    for t in &sinks {
        let s = &t.sink;
        let r = s.send(&note).await;
        if r.is_err() {
            failed += 1;
        }
        results.insert(s.name().to_string(), r);
    }
    for (name, r) in results {
        match r {
            Ok(()) => {
                let _ = writeln!(out, "{name}: ok");
            }
            Err(e) => {
                let _ = writeln!(out, "{name}: FAILED: {e}");
            }
        }
    }
    Ok(Outcome {
        code: if failed == 0 { EXIT_OK } else { EXIT_FINDINGS },
        stdout: out.into(),
    })
}
