//! The configuration file, through the path a user's file takes: the input is written to a file and
//! loaded with `config::load_with_env` (figment: defaults, the TOML file, an environment provider whose
//! prefix matches no variable), which deserializes it strictly and runs every section's validation.
//! Then what `config check` does with the outcome: the redacted TOML of a loaded configuration, or
//! the message of the error. Errors are expected; a panic is a crash.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use figment::providers::Env;
use libfuzzer_sys::fuzz_target;
use npm_watchdog::config;

/// One file per fuzzing process, overwritten for each input.
fn input_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!(
            "npm-watchdog-fuzz-config-{}.toml",
            std::process::id()
        ))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = input_path();
    std::fs::write(path, data).expect("write the input file");
    let env = Env::prefixed("NPM_WATCHDOG_FUZZ_UNUSED_").split("__");
    match config::load_with_env(Some(path), env) {
        Ok(loaded) => {
            let _ = loaded.config.to_redacted_toml();
            let _ = loaded.origin();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
