//! Arbitrary bytes as a safetensors file: parsing and reading every tensor must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use movq::io::WeightFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = WeightFile::from_bytes("fuzz.safetensors", data.to_vec()) {
        let names: Vec<String> = file.names().map(str::to_string).collect();
        for n in names {
            let _ = file.read::<f32>(&n);
        }
        let _ = movq::DecoderConfig::from_metadata(&file);
    }
});
