//! Unknown values of `MOVQ_ISA` / `MOVQ_CONV` are a named error from the library itself (not
//! only from the CLI): a library or Python caller with `MOVQ_ISA=avx-512` would otherwise get
//! the detected ISA silently. The variables are read once per process, so each case runs in a
//! child process of this test binary.

mod common;

use movq::io::Loader;
use movq::model::{DecodeMode, DecoderConfig, DecoderPlan};
use movq::tensor::{Shape, Tensor};
use movq::{Decoder, Error};

const CHILD: &str = "MOVQ_ENV_CHECK_CHILD";

/// In the child: a tiny decode must fail with `InvalidEnv` naming the variable in `CHILD`.
#[test]
fn child_decode_refuses_env() {
    let Ok(var) = std::env::var(CHILD) else { return };
    let cfg = DecoderConfig::from_json(
        r#"{"class": "MOVQDecoder3D", "ch": 32, "out_ch": 3, "ch_mult": [1, 2], "num_res_blocks": 0,
            "attn_resolutions": [], "resolution": 32, "z_channels": 4, "temporal_compress_times": 2}"#,
    )
    .unwrap();
    let dec = Decoder::<f32>::load(&Loader::random(1).root(), &DecoderPlan::new(&cfg).unwrap()).unwrap();
    let s = Shape::new(1, 4, 3, 3, 3);
    let z = Tensor::from_vec(s, movq::tensor::random_normal(&s.dims(), 2).unwrap()).unwrap();
    let e = dec.decode(&z, &DecodeMode::Whole).expect_err("decode with an unknown env value");
    match &e {
        Error::InvalidEnv { var: v, .. } => assert_eq!(*v, var, "{e}"),
        other => panic!("expected InvalidEnv for {var}, got {other}"),
    }
    assert!(e.to_string().contains("is not one of"), "{e}");
    println!("CHILD_SAW_INVALID_ENV {var}");
}

fn run_child(var: &str, value: &str) {
    let out = common::this_test_binary()
        .args(["child_decode_refuses_env", "--exact", "--nocapture", "--test-threads=1"])
        .env_remove("MOVQ_ISA")
        .env_remove("MOVQ_CONV")
        .env(CHILD, var)
        .env(var, value)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains(&format!("CHILD_SAW_INVALID_ENV {var}")),
        "the child did not run the check:\n{stdout}"
    );
}

#[test]
fn library_decode_refuses_unknown_isa() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    run_child("MOVQ_ISA", "avx-512");
}

#[test]
fn library_decode_refuses_unknown_conv() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    run_child("MOVQ_CONV", "winograd6");
}

#[test]
fn known_values_pass_the_check() {
    // The suite's own environment (CI runs it once more with MOVQ_ISA=scalar) passes.
    if std::env::var(CHILD).is_err() {
        movq::kernels::check_env().expect("the test environment's own MOVQ_* values are valid");
    }
}
