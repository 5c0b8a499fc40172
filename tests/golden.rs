//! Every golden case of a supported class, in f32 (tolerance rule of the golden README) and
//! f64 (rel-L2 < 1e-12), one test per case.

mod common;

use movq::io::WeightFile;
use movq::verify::{CaseOutcome, SUPPORTED_CLASSES, verify_file};

fn check(name: &str) {
    let Some(path) = common::golden(name) else { return };
    match verify_file(&path).unwrap_or_else(|e| panic!("{name}: {e}")) {
        CaseOutcome::Ran { runs, torch_f32, .. } => {
            for r in &runs {
                assert!(
                    r.pass,
                    "{name} {}: max_abs {:.3e} (tol {:.3e}), rel_l2 {:.3e} (tol {:.3e}); PyTorch f32: {:.3e} / {:.3e}. \
                     HINT: run `movq verify ../shared/golden/{name}.safetensors` for the table",
                    r.precision, r.max_abs, r.tol_max_abs, r.rel_l2, r.tol_rel_l2, torch_f32.0, torch_f32.1
                );
            }
            assert_eq!(runs.len(), 2, "f32 and f64 both ran");
        }
        CaseOutcome::Skipped { reason, .. } => panic!("{name} was skipped: {reason}"),
    }
}

macro_rules! golden_tests {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { check(stringify!($name)); })*
        const NAMED: &[&str] = &[$(stringify!($name)),*];
    };
}

golden_tests!(
    attnblock2d,
    causalconv3d_constant,
    causalconv3d_first,
    causalconv3d_reflect,
    causalconv3d_reflect_t1,
    diffusers_decoder_whole_t3,
    diffusers_vae_decode_t4,
    movq_batch2_h4w6_t4,
    movq_constant_tct2,
    movq_first_tct4_attn16,
    movq_give_pre_end,
    movq_noresampconv,
    movq_single_frame_t1,
    newdec_postquant_addconv_zq12,
    resnetblock3d_32to64,
    spatialnorm3d_addconv_tf3_tz1,
    spatialnorm3d_addconv_tf6_tz3,
    spatialnorm3d_tf1_tz1,
    spatialnorm3d_tf5_tz3,
    upsample3d_ct_t1,
    upsample3d_ct_t3,
    upsample3d_noct_t1,
    upsample3d_noct_t3,
);

/// A golden file of a supported class that is not in the list above would go untested.
#[test]
fn golden_every_supported_case_is_tested() {
    let Some(dir) = common::golden_dir() else { return };
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "safetensors") {
            continue;
        }
        let file = WeightFile::open(&path).unwrap();
        let meta: serde_json::Value = serde_json::from_str(&file.metadata()["meta"]).unwrap();
        let class = meta["class"].as_str().unwrap();
        let stem = path.file_stem().unwrap().to_str().unwrap();
        if SUPPORTED_CLASSES.contains(&class) {
            assert!(NAMED.contains(&stem), "golden case {stem} ({class}) has no test in tests/golden.rs");
        }
    }
}
