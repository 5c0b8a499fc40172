//! Arbitrary bytes as an npy file: parsing must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = movq::io::parse_npy::<f32>(std::path::Path::new("fuzz.npy"), data);
});
