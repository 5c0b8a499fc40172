//! Upstream `CausalConv3d` with non-cubic kernels in every pad mode, against the fixtures that
//! scripts/fixtures/causal_conv_noncubic.py made with the original Python code
//! (tests/fixtures/noncubic, golden file format). Each case runs twice:
//! - through the public API (`CausalConv3d::load` with a (kt, kh, kw) kernel) in f64: output
//!   shape equal to upstream's, rel-L2 within 1e-12 of `output.f64`;
//! - through `movq verify`'s runner (`verify_file`): f32 by the golden tolerance rule, f64 by
//!   rel-L2 < 1e-12.

use movq::PadMode;
use movq::io::{Loader, WeightFile};
use movq::metrics::distance;
use movq::model::conv::{CausalConv3d, ConvInput, Kernel3, TimeStep, causal_params_strided};
use movq::tensor::{Shape, Tensor};
use movq::verify::{CaseOutcome, F64_REL_L2, verify_file};
use serde_json::Value;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/noncubic")
}

fn meta(file: &WeightFile) -> Value {
    serde_json::from_str(&file.metadata()["meta"]).expect("meta is JSON")
}

fn kernel(cfg: &Value) -> Kernel3 {
    let k: Vec<usize> = cfg["kernel_size"]
        .as_array()
        .expect("a tuple kernel")
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    (k[0], k[1], k[2]).into()
}

fn pad_mode(cfg: &Value) -> PadMode {
    serde_json::from_value(cfg["pad_mode"].clone()).unwrap()
}

/// The case through the public API in f64.
fn run_f64(file: &WeightFile, cfg: &Value) -> Tensor<f64> {
    let loader = Loader::new(file, "").with_ignore(|n| n.starts_with("input.") || n.starts_with("output"));
    let (c_in, c_out) =
        (cfg["chan_in"].as_u64().unwrap() as usize, cfg["chan_out"].as_u64().unwrap() as usize);
    let (k, mode) = (kernel(cfg), pad_mode(cfg));
    let conv = match cfg.get("dilation").and_then(Value::as_u64) {
        None => CausalConv3d::<f64>::load(&loader.root(), c_in, c_out, k, mode).unwrap(),
        Some(dilation) => {
            let step = TimeStep { stride: 1, dilation: dilation as usize };
            let p = causal_params_strided(c_in, c_out, k, mode, step).unwrap();
            CausalConv3d::<f64>::load_params(&loader.root(), p).unwrap()
        }
    };
    loader.finish().expect("every weight used");
    let (dims, data) = file.read::<f64>("input.x").unwrap();
    let x = Tensor::from_vec(Shape::from_dims(&dims).unwrap(), data).unwrap();
    conv.forward(ConvInput::plain(&x), None).unwrap()
}

fn check(name: &str) {
    let path = dir().join(format!("{name}.safetensors"));
    let file = WeightFile::open(&path).unwrap();
    let m = meta(&file);
    assert_eq!(m["class"], "CausalConv3d");
    let cfg = &m["config"];
    let y = run_f64(&file, cfg);
    let (dims, want) = file.read::<f64>("output.f64").unwrap();
    assert_eq!(y.shape().dims().as_slice(), dims.as_slice(), "{name}: upstream's output shape");
    let d = distance(y.data(), &want);
    assert!(d.rel_l2 < F64_REL_L2, "{name} f64: rel-L2 {:.3e}", d.rel_l2);

    match verify_file(&path).unwrap_or_else(|e| panic!("{name}: {e}")) {
        CaseOutcome::Ran { runs, torch_f32, .. } => {
            assert_eq!(runs.len(), 2, "f32 and f64 both ran");
            for r in &runs {
                assert!(
                    r.pass,
                    "{name} {}: max_abs {:.3e} (tol {:.3e}), rel_l2 {:.3e} (tol {:.3e}); PyTorch f32: {:.3e} / {:.3e}",
                    r.precision, r.max_abs, r.tol_max_abs, r.rel_l2, r.tol_rel_l2, torch_f32.0, torch_f32.1
                );
            }
        }
        CaseOutcome::Skipped { reason, .. } => panic!("{name} was skipped: {reason}"),
    }
}

macro_rules! fixture_tests {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { check(stringify!($name)); })*
        const NAMED: &[&str] = &[$(stringify!($name)),*];
    };
}

fixture_tests!(
    constant_k133_t2,
    constant_k135_t1,
    constant_k313_t4,
    constant_k353_t3,
    first_k313_t4,
    first_k331_dil2_t4,
    first_k353_t1,
    first_k531_t3,
    first_k533_t3,
    reflect_k135_t3,
    reflect_k313_t1,
    reflect_k353_t2,
    reflect_k513_t3,
    reflect_k533_t4,
);

/// Every fixture has a test above, and together they cover what the fixtures are for: in each
/// pad mode at least two non-cubic kernels, one with kh != kw and one with a single-frame
/// input and one with 3x3 spatial taps (the Winograd path); kt = 1 where upstream allows it
/// ("constant", "reflect"); a "constant" case whose
/// output shape differs from its input's (the pad-order quirk).
#[test]
fn noncubic_fixtures_cover_every_pad_mode() {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "safetensors") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        assert!(NAMED.contains(&stem.as_str()), "fixture {stem} has no test in tests/noncubic.rs");
        let file = WeightFile::open(&path).unwrap();
        let m = meta(&file);
        let k = kernel(&m["config"]);
        let input_t = m["input_shape"][2].as_u64().unwrap();
        let shape_changes =
            m["input_shape"].as_array().unwrap()[2..] != m["output_shape"].as_array().unwrap()[2..];
        seen.push((pad_mode(&m["config"]), k, input_t, shape_changes));
    }
    assert_eq!(seen.len(), NAMED.len());
    for mode in [PadMode::First, PadMode::Constant, PadMode::Reflect] {
        let cases: Vec<_> = seen.iter().filter(|c| c.0 == mode).collect();
        let noncubic = |k: &Kernel3| !(k.t == k.h && k.h == k.w);
        assert!(cases.iter().filter(|c| noncubic(&c.1)).count() >= 2, "{mode:?}: two non-cubic kernels");
        assert!(cases.iter().any(|c| c.1.h != c.1.w), "{mode:?}: kh != kw");
        assert!(cases.iter().any(|c| c.2 == 1), "{mode:?}: a single-frame input");
        assert!(cases.iter().any(|c| c.1.h == 3 && c.1.w == 3 && c.1.t != 3), "{mode:?}: 3x3 spatial taps");
        if mode != PadMode::First {
            assert!(cases.iter().any(|c| c.1.t == 1), "{mode:?}: kt = 1");
        }
    }
    assert!(seen.iter().any(|c| c.0 == PadMode::Constant && c.3), "a constant case changes the shape");
}
