//! The provenance (attestations) parser, two ways per input:
//! 1. the input is the body of `GET /-/npm/v1/attestations/<pkg>@<version>`, read as JSON the way the
//!    client reads it and given to `parse_provenance`;
//! 2. the input is the decoded in-toto statement, wrapped (base64) in a well-formed SLSA provenance
//!    attestation, so that the statement parser is reached without the fuzzer having to find base64.
//!
//! Errors are expected; a panic is a crash.

#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use npm_watchdog::registry::parse_provenance;
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = serde_json::from_slice::<Value>(data) {
        let _ = parse_provenance(&reply);
    }
    let payload = base64::engine::general_purpose::STANDARD.encode(data);
    let wrapped = json!({"attestations": [{
        "predicateType": "https://slsa.dev/provenance/v1",
        "bundle": {"dsseEnvelope": {"payload": payload, "payloadType": "application/vnd.in-toto+json"}},
    }]});
    let _ = parse_provenance(&wrapped);
});
