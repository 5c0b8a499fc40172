//! Strict loading rejects bad weight files with named errors, never a panic.

use movq::io::{Loader, WeightFile};
use movq::model::PadMode;
use movq::model::conv::CausalConv3d;
use movq::{Decoder, DecoderConfig, Error};
use safetensors::tensor::{Dtype, TensorView};
use std::path::{Path, PathBuf};

/// Writes tensors (name, dtype, shape) filled with small values; returns the path.
fn write(dir: &Path, file: &str, tensors: &[(&str, Dtype, Vec<usize>)]) -> PathBuf {
    let bufs: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, dt, shape)| vec![0u8; shape.iter().product::<usize>() * dt.bitsize() / 8])
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bufs)
        .map(|((n, dt, s), b)| (n.to_string(), TensorView::new(*dt, s.clone(), b).unwrap()))
        .collect();
    let path = dir.join(file);
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

fn good() -> Vec<(&'static str, Dtype, Vec<usize>)> {
    vec![("conv.weight", Dtype::F32, vec![4, 2, 3, 3, 3]), ("conv.bias", Dtype::F32, vec![4])]
}

/// Loads a CausalConv3d(2 -> 4, k=3) strictly from `path`.
fn load(path: &Path) -> movq::Result<()> {
    let file = WeightFile::open(path)?;
    let loader = Loader::new(&file, "");
    CausalConv3d::<f32>::load(&loader.root(), 2, 4, 3, PadMode::First)?;
    loader.finish()
}

#[test]
fn loader_accepts_good_file_in_f32_f16_bf16() {
    let dir = tempfile::tempdir().unwrap();
    load(&write(dir.path(), "ok.safetensors", &good())).unwrap();
    for dt in [Dtype::F16, Dtype::BF16, Dtype::F64] {
        let t: Vec<_> = good().into_iter().map(|(n, _, s)| (n, dt, s)).collect();
        load(&write(dir.path(), "half.safetensors", &t)).unwrap();
    }
}

#[test]
fn loader_rejects_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "t.safetensors", &good());
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 5, 8, 20, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        match load(&path) {
            // Cut inside the length field or the data: the file is shorter than it says.
            Err(Error::Truncated { path: p, needed, got, .. }) if !(8..=20).contains(&cut) => {
                assert_eq!(p, path);
                assert_eq!(got, cut as u64);
                assert!(needed > got);
            }
            // Cut inside the header: its length field points past the end.
            Err(Error::HeaderLength { path: p, file_len, .. }) if (8..=20).contains(&cut) => {
                assert_eq!((p, file_len), (path.clone(), cut as u64));
            }
            other => panic!("cut at {cut}: expected Truncated or HeaderLength, got {other:?}"),
        }
    }
}

#[test]
fn loader_rejects_wrong_shape_naming_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = good();
    t[0].2 = vec![4, 2, 3, 3, 1];
    match load(&write(dir.path(), "s.safetensors", &t)) {
        Err(Error::WeightShape { name, expected, got, .. }) => {
            assert_eq!(name, "conv.weight");
            assert_eq!(expected, vec![4, 2, 3, 3, 3]);
            assert_eq!(got, vec![4, 2, 3, 3, 1]);
        }
        other => panic!("expected WeightShape, got {other:?}"),
    }
}

#[test]
fn loader_rejects_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let t = vec![good().remove(0)];
    match load(&write(dir.path(), "m.safetensors", &t)) {
        Err(Error::MissingWeight { name, expected, .. }) => {
            assert_eq!(name, "conv.bias");
            assert_eq!(expected, vec![4]);
        }
        other => panic!("expected MissingWeight, got {other:?}"),
    }
}

#[test]
fn loader_rejects_unexpected_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = good();
    t.push(("conv.extra", Dtype::F32, vec![2]));
    match load(&write(dir.path(), "u.safetensors", &t)) {
        Err(Error::UnexpectedWeight { name, shape, .. }) => {
            assert_eq!(name, "conv.extra");
            assert_eq!(shape, vec![2]);
        }
        other => panic!("expected UnexpectedWeight, got {other:?}"),
    }
}

#[test]
fn loader_rejects_unsupported_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = good();
    t[1].1 = Dtype::I32;
    match load(&write(dir.path(), "d.safetensors", &t)) {
        Err(Error::UnsupportedDtype { name, dtype, .. }) => {
            assert_eq!(name, "conv.bias");
            assert_eq!(dtype, "I32");
        }
        other => panic!("expected UnsupportedDtype, got {other:?}"),
    }
}

#[test]
fn loader_prefix_ignores_other_keys_but_not_unexpected_ones_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let t = vec![
        ("decoder.conv.weight", Dtype::F32, vec![4, 2, 3, 3, 3]),
        ("decoder.conv.bias", Dtype::F32, vec![4]),
        ("encoder.whatever", Dtype::F32, vec![3]),
    ];
    let path = write(dir.path(), "p.safetensors", &t);
    let file = WeightFile::open(&path).unwrap();
    let loader = Loader::new(&file, "decoder.");
    CausalConv3d::<f32>::load(&loader.root(), 2, 4, 3, PadMode::First).unwrap();
    loader.finish().unwrap();
}

#[test]
fn decoder_rejects_latent_with_wrong_channels() {
    let cfg = DecoderConfig::from_json(
        r#"{"ch": 32, "out_ch": 3, "ch_mult": [1, 1], "num_res_blocks": 0, "attn_resolutions": [],
            "resolution": 16, "z_channels": 4}"#,
    )
    .unwrap();
    let loader = Loader::random(3);
    let dec = Decoder::<f32>::load(&loader.root(), &movq::model::DecoderPlan::new(&cfg).unwrap()).unwrap();
    let z = movq::Tensor::<f32>::zeros(movq::Shape::new(1, 5, 2, 2, 2)).unwrap();
    let whole = movq::model::DecodeMode::Whole;
    assert!(matches!(dec.decode(&z, &whole), Err(Error::LatentChannels { expected: 4, got: 5, .. })));
    let z = movq::Tensor::<f32>::zeros(movq::Shape::new(1, 4, 0, 2, 2)).unwrap();
    assert!(matches!(dec.decode(&z, &whole), Err(Error::ShapeMismatch { .. })));
}
