//! Fast kernels vs scalar twins and tiny decodes, f32 vs f64 (see harness::decode_tiny).
#![no_main]

// Each target uses one harness of the shared module.
#[allow(dead_code)]
#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::decode_tiny(data));
