//! The fuzz harnesses, shared by the cargo-fuzz targets in `fuzz_targets/` and by
//! `tests/fuzz_corpus.rs`, which replays the committed corpus under an ordinary `cargo test`.
//! Each harness must not panic on any input; the structured one (`decode_tiny`) also asserts
//! that fast kernels agree with their scalar twins.

use arbitrary::{Result, Unstructured};
use movq::checkpoint::{InferHints, Naming, OpenOptions, infer_config};
use movq::io::{Loader, WeightFile};
use movq::kernels::attention::{AttentionParams, attention_tile};
use movq::kernels::conv3d::conv3d_tiled;
use movq::kernels::params::ConvCall;
use movq::kernels::winograd::conv3d_winograd;
use movq::kernels::{Act, Float, reference};
use movq::model::{DecodeMode, DecoderPlan};
use movq::testing::{CONV_RAW, ConvProblem, conv_problem};
use movq::{Checkpoint, Decoder, DecoderConfig, Shape, Tensor};
use std::collections::BTreeMap;

/// Arbitrary bytes as a safetensors file: parsing and reading every tensor must not panic.
pub fn safetensors_header(data: &[u8]) {
    if let Ok(file) = WeightFile::from_bytes("fuzz.safetensors", data.to_vec()) {
        let names: Vec<String> = file.names().map(str::to_string).collect();
        for n in names {
            let _ = file.read::<f32>(&n);
            let _ = file.f32_view(&n);
        }
        let _ = Checkpoint::from_bytes("fuzz.safetensors", data.to_vec(), &OpenOptions::default());
        // Config inference reads names and shapes from strangers' files; a config it finds
        // must load strictly or fail with an error.
        let shapes: BTreeMap<String, Vec<usize>> =
            file.names().filter_map(|n| Some((n.to_string(), file.info(n)?.shape.clone()))).collect();
        for naming in [Naming::Upstream, Naming::Diffusers] {
            if let Ok(found) = infer_config(&shapes, naming, &InferHints::default())
                && naming == Naming::Upstream
            {
                let loader = Loader::new(&file, "");
                let _ = DecoderPlan::new(&found.config)
                    .and_then(|plan| Decoder::<f32>::load(&loader.root(), &plan))
                    .and_then(|_| loader.finish());
            }
        }
    }
}

/// Arbitrary bytes as a `torch.save` checkpoint: parsing and reading every tensor must not
/// panic. Input starting with `PK` or with the legacy format's magic-number pickle is taken as
/// the whole file; any other input as its `data.pkl`, zipped here beside four 256-byte storages
/// `data/0`..`data/3`, so mutations reach the pickle machine without first having to keep a ZIP
/// valid.
pub fn torch_pickle(data: &[u8]) {
    let whole = data.starts_with(b"PK") || data.starts_with(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46");
    let bytes = if whole { data.to_vec() } else { torch_zip(data) };
    if let Ok(file) = WeightFile::from_bytes("fuzz.pt", bytes) {
        let names: Vec<String> = file.names().map(str::to_string).collect();
        for n in names {
            let _ = file.read::<f32>(&n);
            if let Some(v) = file.f32_view(&n) {
                assert_eq!(v.len(), file.info(&n).unwrap().shape.iter().product::<usize>());
            }
        }
    }
}

/// A ZIP of STORED entries `a/data.pkl` = `pkl` and `a/data/0`..`a/data/3` (256 bytes each).
pub fn torch_zip(pkl: &[u8]) -> Vec<u8> {
    let storage: Vec<u8> = (0..=255u8).collect();
    let entries: [(&str, &[u8]); 5] = [
        ("a/data.pkl", pkl),
        ("a/data/0", &storage),
        ("a/data/1", &storage),
        ("a/data/2", &storage),
        ("a/data/3", &storage),
    ];
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, body) in entries {
        let offset = out.len() as u32;
        let mut fixed = Vec::new();
        fixed.extend_from_slice(&[0; 10]); // versions, flags, method 0 (stored), time, date
        fixed.extend_from_slice(&[0; 4]); // CRC-32, which the reader does not check
        fixed.extend_from_slice(&(body.len() as u32).to_le_bytes());
        fixed.extend_from_slice(&(body.len() as u32).to_le_bytes());
        fixed.extend_from_slice(&(name.len() as u16).to_le_bytes());
        fixed.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&fixed);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(body);
        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&[20, 0]);
        central.extend_from_slice(&fixed);
        central.extend_from_slice(&[0; 10]); // comment length, disk, attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0\x05\0\x05\0");
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// Arbitrary bytes as an npy file: parsing must not panic.
pub fn npy_parse(data: &[u8]) {
    let _ = movq::io::parse_npy::<f32>(std::path::Path::new("fuzz.npy"), data);
}

const FOOTPRINT: movq::model::memory::Footprint =
    movq::model::memory::Footprint { elem: 4, weight_bytes: 0, keep_output: false, held_transform_bytes: 0 };

/// Arbitrary text as a decoder config: parsing, validation and shape arithmetic must not panic.
pub fn config_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(plan) = DecoderConfig::from_json(text).and_then(|cfg| DecoderPlan::new(&cfg)) {
        for dims in [(1, 3, 4, 5), (2, 1, 1, 1), (1, 1 << 20, 1 << 20, 1 << 20), (usize::MAX, 1, 1, 1)] {
            let z = Shape::new(dims.0, plan.modules.zq_ch, dims.1, dims.2, dims.3);
            let _ = plan.output_shape(z);
            let _ = plan.flops(z);
            let _ = movq::model::memory::estimate_peak_bytes(&plan, z, &DecodeMode::Chunked, &FOOTPRINT);
        }
    }
}

/// `n` values in [-8, 8) on a 1/4096 grid: finite, and exact in f32 and f64.
fn floats(u: &mut Unstructured, n: usize) -> Result<Vec<f32>> {
    (0..n).map(|_| Ok(u.arbitrary::<i16>()? as f32 / 4096.0)).collect()
}

fn close(fast: f64, slow: f64, scale: f64, tol: f64, what: &str) {
    assert!((fast - slow).abs() <= tol * (1.0 + scale), "{what}: fast {fast} vs scalar {slow}");
}

fn elementwise(u: &mut Unstructured) -> Result<()> {
    let n = u.int_in_range(0..=300)?;
    let x = floats(u, n)?;
    let abs: f64 = x.iter().map(|v| v.abs() as f64).sum();
    let (m, rm) = (f32::sum_f64(&x), reference::sum_f64(&x));
    close(m, rm, abs, 1e-12, "sum_f64");
    let mean = rm / n.max(1) as f64;
    let (v, rv) = (f32::sum_sq_dev_f64(&x, mean), reference::sum_sq_dev_f64(&x, mean));
    close(v, rv, rv, 1e-12, "sum_sq_dev_f64");
    let (a, b) = (u.arbitrary::<i8>()? as f32 / 16.0, u.arbitrary::<i8>()? as f32 / 16.0);
    let modulation = if u.arbitrary()? { Some((floats(u, n)?, floats(u, n)?)) } else { None };
    let act = *u.choose(&[Act::Identity, Act::Silu, Act::Relu, Act::Gelu, Act::Mish])?;
    let m = modulation.as_ref().map(|(s, t)| (s.as_slice(), t.as_slice()));
    let (mut fast, mut slow) = (x.clone(), x.clone());
    f32::norm_apply(&mut fast, a, b, m, act);
    reference::norm_apply(&mut slow, a, b, m, act);
    for (f, s) in fast.iter().zip(&slow) {
        close(*f as f64, *s as f64, s.abs() as f64, 2e-6, "norm_apply");
    }
    Ok(())
}

fn conv(u: &mut Unstructured) -> Result<()> {
    let mut raw = [0usize; CONV_RAW];
    for r in raw.iter_mut() {
        *r = u.arbitrary::<u8>()? as usize;
    }
    let ConvProblem { p, dims } = conv_problem(raw, 6);
    let (d, h, w) = p.out_dims(dims.0, dims.1, dims.2).expect("valid by construction");
    let x = floats(u, p.c_in * dims.0 * dims.1 * dims.2)?;
    let wt = floats(u, p.c_out * p.k_len())?;
    let b = floats(u, p.c_out)?;
    let mut slow = vec![f32::NAN; p.c_out * d * h * w];
    reference::conv3d(&mut slow, &ConvCall { x: &x, dims, weight: &wt, bias: &b, p: &p });
    // |w| |x| summed over the taps bounds each output; f32 rounding is relative to it.
    let scale = 64.0 * p.k_len() as f64;
    let cols = u.int_in_range(1..=64)?;
    let mut fast = vec![f32::NAN; slow.len()];
    conv3d_tiled(&mut fast, &ConvCall { x: &x, dims, weight: &wt, bias: &b, p: &p }, cols);
    for (f, s) in fast.iter().zip(&slow) {
        close(*f as f64, *s as f64, scale, 1e-5, "conv3d im2col");
    }
    if p.has_3x3_taps() {
        fast.fill(f32::NAN);
        conv3d_winograd(
            &mut fast,
            &ConvCall { x: &x, dims, weight: &wt, bias: &b, p: &p },
            &Default::default(),
        );
        for (f, s) in fast.iter().zip(&slow) {
            close(*f as f64, *s as f64, scale, 1e-5, "conv3d winograd");
        }
    }
    Ok(())
}

fn attention(u: &mut Unstructured) -> Result<()> {
    let c = u.int_in_range(1..=8)?;
    let n = u.int_in_range(1..=80)?;
    let p = AttentionParams { c, n_tokens: n, ch_stride: n, scale: 1.0 / (c as f64).sqrt() };
    let (q, k, v) = (floats(u, c * n)?, floats(u, c * n)?, floats(u, c * n)?);
    let mut slow = vec![0.0f32; n * c];
    reference::attention(&mut slow, &q, &k, &v, &p);
    let i0 = u.int_in_range(0..=n - 1)?;
    let tq = (n - i0).min(movq::kernels::attention::TILE_Q);
    let mut fast = vec![f32::NAN; tq * c];
    attention_tile(&mut fast, &q, &k, &v, i0, &p);
    for (f, s) in fast.iter().zip(&slow[i0 * c..]) {
        close(*f as f64, *s as f64, 8.0, 1e-5, "attention");
    }
    Ok(())
}

fn decode(u: &mut Unstructured) -> Result<()> {
    let levels = u.int_in_range(1..=3)?;
    let ch_mult: Vec<usize> = (0..levels).map(|_| u.int_in_range(1..=2)).collect::<Result<_>>()?;
    let z_channels = u.int_in_range(1..=6)?;
    let new = u.arbitrary::<bool>()?;
    let post_quant_conv = new && u.arbitrary()?;
    let zq_ch = if post_quant_conv { u.int_in_range(1..=6)? } else { z_channels };
    let resolution = [4usize, 8, 16][u.int_in_range(0..=2)?];
    let attn: Vec<usize> = [4usize, 8, 16].into_iter().filter(|_| u.arbitrary().unwrap_or(false)).collect();
    let pad_mode = ["first", "constant", "reflect"][u.int_in_range(0..=2)?];
    let tct = [1usize, 2, 4][u.int_in_range(0..=2)?];
    let cfg = serde_json::json!({
        "class": if new { "NewDecoder3D" } else { "MOVQDecoder3D" },
        "ch": 32, "out_ch": u.int_in_range(1..=3)?, "ch_mult": ch_mult,
        "num_res_blocks": u.int_in_range(0..=1)?, "attn_resolutions": attn, "resolution": resolution,
        "z_channels": z_channels, "zq_ch": zq_ch, "add_conv": u.arbitrary::<bool>()?,
        "pad_mode": pad_mode, "temporal_compress_times": tct,
        "resamp_with_conv": u.arbitrary::<bool>()?, "give_pre_end": u.arbitrary::<bool>()?,
        "post_quant_conv": post_quant_conv,
    });
    let Ok(cfg) = DecoderConfig::from_json(&cfg.to_string()) else { return Ok(()) };
    let Ok(plan) = DecoderPlan::new(&cfg) else { return Ok(()) };
    let seed = u.arbitrary::<u64>()?;
    let shape = Shape::new(
        u.int_in_range(1..=2)?,
        cfg.zq_ch(),
        u.int_in_range(1..=4)?,
        u.int_in_range(1..=5)?,
        u.int_in_range(1..=5)?,
    );
    // A random base under the fuzzer's values: constant or near-constant latents make every
    // GroupNorm divide rounding noise by sqrt(eps), and f32 then differs from f64 by percents
    // with any kernels (regress_give_pre_end_1x1: 5.4e-2 fast, 8.3e-2 with MOVQ_ISA=scalar
    // MOVQ_CONV=im2col), which says nothing about the kernels.
    let mut rng = movq::tensor::SplitMix64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let delta = floats(u, shape.numel().unwrap())?;
    let z: Vec<f32> = delta.iter().map(|d| rng.uniform() + d / 8.0).collect();
    let z32 = Tensor::from_vec(shape, z).unwrap();
    let z64 = Tensor::from_vec(shape, z32.data().iter().map(|&v| v as f64).collect()).unwrap();
    let mode = if u.arbitrary()? { DecodeMode::Chunked } else { DecodeMode::Whole };
    let d32 = Decoder::<f32>::load(&Loader::random(seed).root(), &plan).unwrap();
    let d64 = Decoder::<f64>::load(&Loader::random(seed).root(), &plan).unwrap();
    let y32 = match d32.decode(&z32, &mode) {
        // Chunked decoding is refused, by design, for configs whose convs are not causal-cacheable.
        Err(movq::Error::Unsupported(_)) if mode == DecodeMode::Chunked => return Ok(()),
        r => r.unwrap(),
    };
    let y64 = d64.decode(&z64, &mode).unwrap();
    // Chunks follow the per-chunk frame accounting (spec 11.1), so a chunked decode of an even T
    // can have fewer frames than a whole one (regress_frames_shape: 10 vs 13).
    let want = d32.decoded_shape(shape, &mode).unwrap();
    if mode == DecodeMode::Whole {
        assert_eq!(want, plan.output_shape(shape).unwrap());
    }
    assert_eq!(y32.shape(), want, "{mode:?} decode of z {shape} with {cfg:?}");
    assert_eq!(y64.shape(), want);
    let a: Vec<f64> = y32.data().iter().map(|&v| v as f64).collect();
    assert!(a.iter().all(|v| v.is_finite()), "non-finite f32 output for {cfg:?}");
    // A wrong index, pad or tap gives errors of the order of the output. Over the committed
    // corpus (1,390 inputs) err / max(peak, 1) is at most 2.9e-4 here and 4.6e-4 with
    // MOVQ_ISA=scalar MOVQ_CONV=im2col: the f32 rounding GroupNorm amplifies on tiny frames.
    let peak = y64.data().iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = a.iter().zip(y64.data()).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        err <= 1e-2 * peak.max(1.0),
        "f32 vs f64 max error {err:e} (peak {peak:e}) for {cfg:?} z {shape}"
    );
    Ok(())
}

/// The structured target: the first byte picks a kernel comparison or a tiny decode.
pub fn decode_tiny(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = match u.int_in_range(0u8..=3) {
        Ok(0) => elementwise(&mut u),
        Ok(1) => conv(&mut u),
        Ok(2) => attention(&mut u),
        Ok(_) => decode(&mut u),
        Err(_) => Ok(()),
    };
}
