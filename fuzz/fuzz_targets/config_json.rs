//! Arbitrary text as a decoder config: parsing, validation and shape arithmetic must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cfg) = movq::DecoderConfig::from_json(text) {
        for l in 0..cfg.levels() {
            let _ = (cfg.compress_time(l), cfg.has_attention(l));
        }
        let _ = cfg.output_shape(movq::Shape::new(1, cfg.zq_ch(), 3, 4, 5));
    }
});
