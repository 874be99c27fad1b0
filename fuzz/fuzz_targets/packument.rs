//! The packument parser: the input is the body of `GET /<package>` as `parse_packument` reads it,
//! straight into the slim view. On success the slim view is used the way the checks and the state
//! use it: `latest()`, `maintainer_names()`, and the stored copy (JSON, as the state keeps it), which
//! must read back equal to what was parsed. Errors are expected; a panic is a crash.

#![no_main]

use libfuzzer_sys::fuzz_target;
use npm_watchdog::registry::{parse_packument, Packument};

fuzz_target!(|data: &[u8]| {
    let Ok(packument) = parse_packument(data, "@fuzz/package") else {
        return;
    };
    let _ = packument.latest();
    let _ = packument.maintainer_names();
    let stored = serde_json::to_string(&packument).expect("a slim packument serializes");
    let read_back: Packument = serde_json::from_str(&stored).expect("its stored copy reads back");
    assert_eq!(
        read_back, packument,
        "the stored copy differs from the parsed packument"
    );
});
