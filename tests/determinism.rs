//! Output is bitwise identical whatever the rayon thread count.

mod common;

use movq::io::{Loader, WeightFile};
use movq::kernels::Float;
use movq::kernels::conv3d::{conv3d, conv3d_tiled};
use movq::kernels::params::ConvCall;
use movq::model::{DecoderConfig, PadMode};
use movq::tensor::{Shape, Tensor};
use movq::{Decoder, model::conv::causal_params};

/// Runs `f` in rayon pools of 1, 2 and 4 threads.
fn over_thread_counts<R: Send>(f: impl Fn() -> R + Sync) -> Vec<R> {
    [1, 2, 4]
        .iter()
        .map(|&n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(&f))
        .collect()
}

fn decode_golden<T: Float>(name: &str) -> Option<Vec<Vec<T>>> {
    let path = common::golden(name)?;
    let file = WeightFile::open(&path).unwrap();
    let opts = movq::checkpoint::OpenOptions { ignore: &["input.", "output"], ..Default::default() };
    let dec = movq::Checkpoint::open(&path, &opts).unwrap().load::<T>().unwrap();
    let (dims, z) = file.read::<T>("input.z").unwrap();
    let z = Tensor::from_vec(Shape::from_dims(&dims).unwrap(), z).unwrap();
    Some(over_thread_counts(|| dec.decode(&z, &movq::model::DecodeMode::Whole).unwrap().into_vec()))
}

fn assert_bitwise_equal<T: Float>(runs: &[Vec<T>]) {
    for (i, r) in runs.iter().enumerate().skip(1) {
        let same = r.iter().zip(&runs[0]).all(|(a, b)| a.to_f64().to_bits() == b.to_f64().to_bits());
        assert!(same, "run with thread setting #{i} differs from the 1-thread run");
    }
}

#[test]
fn decoder_bitwise_identical_across_threads_attention() {
    if let Some(runs) = decode_golden::<f32>("movq_first_tct4_attn16") {
        assert_bitwise_equal(&runs);
    }
    if let Some(runs) = decode_golden::<f64>("movq_first_tct4_attn16") {
        assert_bitwise_equal(&runs);
    }
}

#[test]
fn decoder_bitwise_identical_across_threads_add_conv_batch() {
    if let Some(runs) = decode_golden::<f32>("newdec_postquant_addconv_zq12") {
        assert_bitwise_equal(&runs);
    }
    if let Some(runs) = decode_golden::<f32>("movq_batch2_h4w6_t4") {
        assert_bitwise_equal(&runs);
    }
}

/// A conv large enough for several im2col tiles and for gemm to split work across threads.
#[test]
fn conv3d_multi_tile_bitwise_identical_across_threads() {
    let p = causal_params(64, 96, 3, PadMode::First).unwrap();
    let dims = (6, 40, 36);
    let x: Vec<f32> = (0..64 * 6 * 40 * 36usize).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    let w: Vec<f32> =
        (0..96 * 64 * 27usize).map(|i| ((i * 104729 % 997) as f32 / 997.0 - 0.5) * 0.05).collect();
    let b: Vec<f32> = (0..96).map(|i| i as f32 * 0.01).collect();
    let n_out = 96 * 6 * 40 * 36;
    assert!(
        movq::kernels::conv3d::tile_cols(&p, 4, 6 * 40 * 36) < 6 * 40 * 36,
        "the problem must span several tiles"
    );
    assert_bitwise_equal(&over_thread_counts(|| {
        let mut out = vec![0.0f32; n_out];
        conv3d(&mut out, &ConvCall { x: &x, dims, weight: &w, bias: &b, p: &p });
        out
    }));
    // The im2col path too, with its tiling.
    let cols = movq::kernels::conv3d::tile_cols(&p, 4, 6 * 40 * 36);
    assert_bitwise_equal(&over_thread_counts(|| {
        let mut out = vec![0.0f32; n_out];
        conv3d_tiled(&mut out, &ConvCall { x: &x, dims, weight: &w, bias: &b, p: &p }, cols);
        out
    }));
}

/// Chunked decoding (carried conv caches, per-batch norms) of a small CogVideoX-style decoder.
#[test]
fn chunked_decode_bitwise_identical_across_threads() {
    let cfg = DecoderConfig::from_json(
        r#"{"class": "CogVideoXDecoder3D", "ch": 32, "out_ch": 3, "ch_mult": [1, 1, 2], "num_res_blocks": 1,
            "attn_resolutions": [], "resolution": 64, "z_channels": 4}"#,
    )
    .unwrap();
    let loader = Loader::random(1);
    let dec = Decoder::<f32>::load(&loader.root(), &movq::model::DecoderPlan::new(&cfg).unwrap()).unwrap();
    let s = Shape::new(1, 4, 5, 6, 7);
    let z = Tensor::from_vec(s, movq::tensor::random_normal(&s.dims(), 2).unwrap()).unwrap();
    let mode = movq::model::DecodeMode::Chunked;
    assert_bitwise_equal(&over_thread_counts(|| dec.decode(&z, &mode).unwrap().into_vec()));
}
