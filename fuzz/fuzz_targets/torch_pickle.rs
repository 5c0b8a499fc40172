//! Arbitrary bytes as a torch.save checkpoint or its data.pkl (see harness::torch_pickle).
#![no_main]

// Each target uses one harness of the shared module.
#[allow(dead_code)]
#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::torch_pickle(data));
