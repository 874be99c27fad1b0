//! `npm-watchdog config check`: the effective configuration (redacted), where each open setting came
//! from, what is watched, and whether the files it names can be read. Secrets are never printed, only
//! their paths. A secret file that group or others may open is a `# WARNING` line (exit unchanged), or
//! under `--strict` a problem, as `run --strict` would refuse it. Exit 0 when the daemon could start
//! with it, 2 when not.

use std::fmt::Write as _;

use super::{Outcome, EXIT_CANNOT_RUN, EXIT_OK};
use crate::alerts::SinkContext;
use crate::config::Loaded;
use crate::runtime::Runtime;
use crate::secret::PermissionPolicy;

pub fn config_check(loaded: &Loaded, rt: &Runtime, secrets: PermissionPolicy) -> Outcome {
    let mut out = String::new();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let _ = writeln!(
        out,
        "# config file: {}",
        loaded.file.as_ref().map_or(
            "none (built-in defaults and environment)".to_string(),
            |p| p.display().to_string()
        )
    );
    let _ = writeln!(out, "# registry: {} ({})", rt.registry, rt.registry_origin);
    match rt.credential() {
        Ok(c) => {
            let _ = writeln!(out, "# credential: {}", c.source);
        }
        Err(e) => {
            let _ = writeln!(out, "# credential: ERROR: {e}");
            problems.push(e.to_string());
        }
    }
    let _ = writeln!(
        out,
        "# state: {} ({})",
        rt.state_path.display(),
        rt.state_origin
    );
    let cfg = &rt.config;
    let _ = writeln!(out, "# watching: {}", cfg.watch.describe());
    for entry in cfg.ci.entries() {
        let _ = writeln!(
            out,
            "# ci: {} at {}: {}",
            entry.key(),
            entry.config.api_url(),
            entry.config.describe()
        );
    }
    for (key, path) in rt.config_secret_files() {
        match std::fs::read(&path) {
            Ok(b) if b.iter().all(u8::is_ascii_whitespace) => {
                problems.push(format!("{key}: {} is empty", path.display()))
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("{key}: {}: {}", path.display(), e.kind())),
        }
    }
    for too_open in rt.secret_files_too_open() {
        match secrets {
            PermissionPolicy::Warn => warnings.push(too_open.to_string()),
            PermissionPolicy::Strict => problems.push(too_open.to_string()),
        }
    }
    // Only the names and routes are shown, so where alerts say they come from does not matter here.
    let sinks: Vec<String> = match cfg.alerts.build_sinks(&SinkContext::default()) {
        Ok(s) => s
            .iter()
            .map(|t| format!("{} ({})", t.sink.name(), t.route.describe()))
            .collect(),
        Err(e) => {
            problems.push(format!("alerts: {e}"));
            Vec::new()
        }
    };
    let _ = writeln!(out, "# sinks: {}", sinks.join(", "));
    out.push('\n');
    out.push_str(&cfg.to_redacted_toml());
    for w in &warnings {
        let _ = writeln!(out, "# WARNING: {w}");
    }
    for p in &problems {
        let _ = writeln!(out, "# PROBLEM: {p}");
    }
    Outcome {
        code: if problems.is_empty() {
            EXIT_OK
        } else {
            EXIT_CANNOT_RUN
        },
        stdout: out.into(),
    }
}
