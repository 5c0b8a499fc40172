//! Arbitrary text as a decoder config (see harness::config_json).
#![no_main]

// Each target uses one harness of the shared module.
#[allow(dead_code)]
#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::config_json(data));
