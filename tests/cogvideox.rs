//! CogVideoX decoding modes (spec 10-11): chunked decoding with carried conv caches, the
//! diffusers frame rule, tiled decoding with its blend, streaming.

mod common;

use movq::Decoder;
use movq::io::{Loader, WeightFile};
use movq::kernels::params::TimePad;
use movq::model::conv::{CausalConv3d, ConvCache, ConvInput, causal_params};
use movq::model::{DecodeMode, DecoderClass, DecoderConfig, PadMode, TileConfig};
use movq::ops::blend::blend_tiles;
use movq::tensor::{Region, Shape, Tensor, random_normal};

/// A small CogVideoX-style decoder: 3 levels (spatial x4), both upsamplers compress time.
fn tiny_config() -> DecoderConfig {
    DecoderConfig::from_json(
        r#"{"class": "CogVideoXDecoder3D", "ch": 32, "out_ch": 3, "ch_mult": [1, 1, 2], "num_res_blocks": 1,
            "attn_resolutions": [], "resolution": 64, "z_channels": 4, "temporal_compress_times": 4}"#,
    )
    .unwrap()
}

fn tiny_decoder() -> Decoder<f32> {
    let loader = Loader::random(7);
    Decoder::load(&loader.root(), &movq::model::DecoderPlan::new(&tiny_config()).unwrap()).unwrap()
}

fn latent(shape: Shape, seed: u64) -> Tensor<f32> {
    Tensor::from_vec(shape, random_normal(&shape.dims(), seed).unwrap()).unwrap()
}

fn max_abs_diff(a: &Tensor<f32>, b: &Tensor<f32>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.data().iter().zip(b.data()).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, f64::max)
}

#[test]
fn causal_conv_chunk_by_chunk_with_caches_equals_whole() {
    let loader = Loader::random(3);
    let p = causal_params(8, 16, 3, PadMode::First).unwrap();
    assert_eq!(p.time_pad, TimePad::ReplicateFirst);
    let conv = CausalConv3d::<f32>::load_params(&loader.root().pp("c"), p).unwrap();
    let x = latent(Shape::new(2, 8, 9, 5, 7), 11);
    let whole = conv.forward(ConvInput::plain(&x), None).unwrap();
    // Uneven chunks, including a single frame after the first chunk.
    for cuts in [vec![0, 3, 5, 7, 9], vec![0, 1, 2, 9], vec![0, 4, 5, 9]] {
        let mut cache = ConvCache::default();
        let mut out = Tensor::zeros(whole.shape()).unwrap();
        for w in cuts.windows(2) {
            let chunk = x.crop(&Region { d: w[0]..w[1], ..Region::all(x.shape()) }).unwrap();
            let y = conv.forward(ConvInput::plain(&chunk), Some(&mut cache)).unwrap();
            assert_eq!(cache.frames().unwrap().shape().d, 2, "cache holds k_d - 1 frames");
            out.paste(&y, (w[0], 0, 0)).unwrap();
        }
        assert_eq!(out, whole, "chunks {cuts:?}");
    }
}

#[test]
fn chunked_equals_whole_for_up_to_three_latent_frames() {
    let dec = tiny_decoder();
    for t in 1..=3 {
        let z = latent(Shape::new(1, 4, t, 3, 5), 20 + t as u64);
        let whole = dec.decode(&z, &DecodeMode::Whole).unwrap();
        let chunked = dec.decode(&z, &DecodeMode::Chunked).unwrap();
        assert_eq!(chunked, whole, "T = {t}: one batch is a whole-clip call");
    }
}

#[test]
fn chunked_differs_from_whole_for_thirteen_latent_frames() {
    let dec = tiny_decoder();
    let z = latent(Shape::new(1, 4, 13, 2, 2), 5);
    let whole = dec.decode(&z, &DecodeMode::Whole).unwrap();
    let chunked = dec.decode(&z, &DecodeMode::Chunked).unwrap();
    // Both give 49 frames (9 + 6 x 8) at the same positions ...
    assert_eq!(whole.shape(), Shape::new(1, 3, 49, 8, 8));
    assert_eq!(chunked.shape(), whole.shape());
    // ... and the first batch's 9 frames already differ, through GroupNorm's temporal extent (spec 11.4).
    let first = |y: &Tensor<f32>| y.crop(&Region { d: 0..9, h: 0..8, w: 0..8 }).unwrap();
    let scale = whole.data().iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    assert!(max_abs_diff(&first(&chunked), &first(&whole)) > 1e-3 * scale);
    assert!(max_abs_diff(&chunked, &whole) > 1e-2 * scale);
}

#[test]
fn diffusers_rule_even_t_doubles_every_frame() {
    let dec = tiny_decoder();
    let z = latent(Shape::new(1, 4, 2, 2, 2), 9);
    assert_eq!(dec.decode(&z, &DecodeMode::Whole).unwrap().shape().d, 8);
    let movq = DecoderConfig { class: DecoderClass::MovqDecoder3d, ..tiny_config() };
    assert_eq!(movq::model::DecoderPlan::new(&movq).unwrap().output_shape(z.shape()).unwrap().d, 5);
    // Chunked: 12 latents -> 6 batches of 2 -> 48 frames; 13 -> 49.
    assert_eq!(dec.decoded_shape(Shape::new(1, 4, 12, 2, 2), &DecodeMode::Chunked).unwrap().d, 48);
    assert_eq!(dec.decoded_shape(Shape::new(1, 4, 13, 2, 2), &DecodeMode::Chunked).unwrap().d, 49);
}

/// The golden `vae.decode` case also stores the whole-clip decode of its even-T input: the
/// diffusers frame rule in whole mode, within the golden tolerance rule.
#[test]
fn diffusers_whole_even_t_matches_golden_output_whole() {
    let Some(path) = common::golden("diffusers_vae_decode_t4") else { return };
    let file = WeightFile::open(&path).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&file.metadata()["meta"]).unwrap();
    let cfg = movq::checkpoint::diffusers::config_from_diffusers(&meta["config"]).unwrap();
    let levels = cfg.ch_mult.len();
    let loader = Loader::new(&file, "decoder.")
        .with_ignore(|n| n.starts_with("input.") || n.starts_with("output"))
        .with_rename(move |p| movq::checkpoint::diffusers::diffusers_key(p, levels));
    let dec = Decoder::<f32>::load(&loader.root(), &movq::model::DecoderPlan::new(&cfg).unwrap()).unwrap();
    loader.finish().unwrap();
    let (dims, z) = file.read::<f32>("input.z").unwrap();
    let z = Tensor::from_vec(Shape::from_dims(&dims).unwrap(), z).unwrap();
    let y = dec.decode(&z, &DecodeMode::Whole).unwrap();
    let (_, r64) = file.read::<f64>("output_whole.f64").unwrap();
    let (_, r32) = file.read::<f64>("output_whole.f32").unwrap();
    let dist = |a: &[f64]| {
        let (mut m, mut d2, mut n2) = (0.0f64, 0.0, 0.0);
        for (x, r) in a.iter().zip(&r64) {
            m = m.max((x - r).abs());
            d2 += (x - r) * (x - r);
            n2 += r * r;
        }
        (m, (d2 / n2).sqrt())
    };
    let y64: Vec<f64> = y.data().iter().map(|&v| v as f64).collect();
    assert_eq!(y64.len(), r64.len());
    let (ours, torch) = (dist(&y64), dist(&r32));
    assert!(
        ours.0 <= 4.0 * torch.0.max(1e-7) && ours.1 <= 4.0 * torch.1.max(1e-7),
        "{ours:?} vs torch {torch:?}"
    );
}

#[test]
fn stream_hands_out_each_batch_in_order() {
    let dec = tiny_decoder();
    let z = latent(Shape::new(2, 4, 7, 3, 2), 13);
    let mut seen = Vec::new();
    let mut out = Tensor::zeros(dec.decoded_shape(z.shape(), &DecodeMode::Chunked).unwrap()).unwrap();
    dec.decode_stream(&z, &DecodeMode::Chunked, &mut |_| Ok(()), |first, frames| {
        seen.push((first, frames.shape().d));
        out.paste(&frames, (first, 0, 0))
    })
    .unwrap();
    assert_eq!(seen, vec![(0, 9), (9, 8), (17, 8)]);
    assert_eq!(out, dec.decode(&z, &DecodeMode::Chunked).unwrap());
}

/// Straightforward rendering of the blend formula of spec 11.3 on plain nested vectors:
/// copies of the tiles, blended in place in row-major order, cropped and concatenated.
fn reference_blend(tiles: &[Vec<Tensor<f32>>], tc: &TileConfig) -> (Vec<usize>, Vec<f32>) {
    // tile[i][j] as [n*c*d][h][w]
    let mut t: Vec<Vec<Vec<Vec<Vec<f32>>>>> = tiles
        .iter()
        .map(|row| {
            row.iter()
                .map(|x| {
                    let s = x.shape();
                    (0..s.n * s.c * s.d)
                        .map(|p| (0..s.h).map(|y| x.data()[(p * s.h + y) * s.w..][..s.w].to_vec()).collect())
                        .collect()
                })
                .collect()
        })
        .collect();
    for i in 0..t.len() {
        for j in 0..t[i].len() {
            if i > 0 {
                let above = t[i - 1][j].clone();
                let cur = &mut t[i][j];
                let e = tc.blend.0.min(above[0].len()).min(cur[0].len());
                for p in 0..cur.len() {
                    for y in 0..e {
                        for x in 0..cur[p][y].len() {
                            let a = above[p][above[p].len() - e + y][x];
                            let r = y as f64 / e as f64;
                            cur[p][y][x] = a * (1.0 - r) as f32 + cur[p][y][x] * r as f32;
                        }
                    }
                }
            }
            if j > 0 {
                let left = t[i][j - 1].clone();
                let cur = &mut t[i][j];
                let e = tc.blend.1.min(left[0][0].len()).min(cur[0][0].len());
                for p in 0..cur.len() {
                    for y in 0..cur[p].len() {
                        for x in 0..e {
                            let lw = left[p][y].len();
                            let r = x as f64 / e as f64;
                            cur[p][y][x] =
                                left[p][y][lw - e + x] * (1.0 - r) as f32 + cur[p][y][x] * r as f32;
                        }
                    }
                }
            }
        }
    }
    let planes = t[0][0].len();
    let mut rows_out: Vec<Vec<Vec<f32>>> = vec![Vec::new(); planes]; // [plane][row] = full-width row
    for row in &t {
        let kh = row[0][0].len().min(tc.keep.0);
        for p in 0..planes {
            for y in 0..kh {
                let mut line = Vec::new();
                for tile in row {
                    let kw = tile[p][y].len().min(tc.keep.1);
                    line.extend_from_slice(&tile[p][y][..kw]);
                }
                rows_out[p].push(line);
            }
        }
    }
    let (h, w) = (rows_out[0].len(), rows_out[0][0].len());
    (vec![planes, h, w], rows_out.into_iter().flatten().flatten().collect())
}

#[test]
fn tiled_output_equals_straightforward_blend_of_independent_tiles() {
    let dec = tiny_decoder();
    // Latent 11 x 13 with tiles 6 x 7 and strides 4 x 5: 3 x 3 tiles, ragged last row/column;
    // blends 5 x 6 px, kept 14 x 16 px (decoder upsamples by 4).
    let tc = TileConfig { tile_latent: (6, 7), stride_latent: (4, 5), blend: (5, 6), keep: (14, 16) };
    let z = latent(Shape::new(1, 4, 5, 11, 13), 17);
    let y = dec.decode(&z, &DecodeMode::Tiled(tc.clone())).unwrap();
    let s = z.shape();
    let mut tiles = Vec::new();
    for i in (0..s.h).step_by(4) {
        let mut row = Vec::new();
        for j in (0..s.w).step_by(5) {
            let r = Region { d: 0..s.d, h: i..(i + 6).min(s.h), w: j..(j + 7).min(s.w) };
            row.push(dec.decode(&z.crop(&r).unwrap(), &DecodeMode::Chunked).unwrap());
        }
        tiles.push(row);
    }
    assert_eq!((tiles.len(), tiles[0].len()), (3, 3));
    let (dims, reference) = reference_blend(&tiles, &tc);
    // Rows: 14 + 14 + 3 * 4; columns: 16 + 16 + 3 * 4.
    assert_eq!(dims, vec![3 * 17, 40, 44]);
    assert_eq!(y.shape(), Shape::new(1, 3, 17, 40, 44));
    assert_eq!(y.data(), reference.as_slice());
    // The library's own blend on the same tiles agrees too, and differs from an untiled decode.
    assert_eq!(blend_tiles(tiles, tc.blend, tc.keep).unwrap(), y);
    let untiled = dec.decode(&z, &DecodeMode::Chunked).unwrap();
    let untiled = untiled.crop(&Region { d: 0..17, h: 0..40, w: 0..44 }).unwrap();
    assert!(max_abs_diff(&untiled, &y) > 1e-3);
}

#[test]
fn tile_config_diffusers_defaults_spec_11_3() {
    let tc = TileConfig::diffusers((480, 720), 8).unwrap();
    assert_eq!(
        tc,
        TileConfig { tile_latent: (30, 45), stride_latent: (25, 36), blend: (40, 72), keep: (200, 288) }
    );
}

#[test]
fn progress_error_stops_the_decode_after_that_stage() {
    let dec = tiny_decoder();
    let z = latent(Shape::new(1, 4, 5, 2, 2), 17);
    for mode in [DecodeMode::Whole, DecodeMode::Chunked] {
        let (mut stages, mut written) = (0, 0);
        let r = dec.decode_stream(
            &z,
            &mode,
            &mut |_| {
                stages += 1;
                if stages == 2 { Err(movq::Error::Interrupted("test".into())) } else { Ok(()) }
            },
            |_, _| {
                written += 1;
                Ok(())
            },
        );
        assert!(matches!(r, Err(movq::Error::Interrupted(ref m)) if m == "test"), "{mode:?}: {r:?}");
        assert_eq!(
            (stages, written),
            (2, 0),
            "{mode:?}: no stage runs after the error, no frame is handed out"
        );
    }
}

/// Serialises the tests that set or depend on the process-wide weight-cache switch.
static WEIGHT_CACHE_SWITCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Keeping the Winograd weight transforms across chunks changes nothing: the same decoder
/// decodes bitwise alike with the cache (filled on the first chunk) and without it (the
/// setting is process-wide; any other test running meanwhile gets the same values either way).
#[test]
fn weight_transform_cache_changes_no_bit() {
    use movq::kernels::params::set_weight_cache;
    let _switch = WEIGHT_CACHE_SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let z = latent(Shape::new(1, 4, 7, 3, 5), 21);
    let cached = tiny_decoder();
    set_weight_cache(true);
    let first = cached.decode(&z, &DecodeMode::Chunked).unwrap();
    let again = cached.decode(&z, &DecodeMode::Chunked).unwrap();
    set_weight_cache(false);
    let fresh = tiny_decoder().decode(&z, &DecodeMode::Chunked).unwrap();
    set_weight_cache(true);
    assert_eq!(first, again);
    assert_eq!(first, fresh);
}

/// A decode of a single decoder call keeps no weight transforms (nothing would reuse them);
/// one of several calls keeps them for the later calls, and they stay with the decoder.
#[test]
fn weight_transforms_are_kept_only_for_later_calls() {
    let _switch = WEIGHT_CACHE_SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let dec = tiny_decoder();
    let one_batch = latent(Shape::new(1, 4, 3, 3, 5), 31);
    let a = dec.decode(&one_batch, &DecodeMode::Chunked).unwrap();
    assert_eq!(dec.weight_cache_bytes(), 0, "one chunk: one call");
    let tc = TileConfig { tile_latent: (2, 3), stride_latent: (2, 3), blend: (1, 1), keep: (8, 12) };
    dec.decode(&one_batch, &DecodeMode::Tiled(tc)).unwrap();
    assert!(dec.weight_cache_bytes() > 0, "tiles: several calls");
    let many = latent(Shape::new(1, 4, 7, 3, 5), 32);
    let fresh = tiny_decoder();
    let b = fresh.decode(&many, &DecodeMode::Chunked).unwrap();
    let kept = fresh.weight_cache_bytes();
    // Every causal conv has 3x3x3 taps here: 16/9 of their f32 weights.
    assert!(kept > 0, "three chunks");
    // Kept transforms are used by a later single-call decode and change nothing.
    assert_eq!(fresh.decode(&one_batch, &DecodeMode::Chunked).unwrap(), a);
    assert_eq!(fresh.weight_cache_bytes(), kept);
    assert_eq!(tiny_decoder().decode(&many, &DecodeMode::Chunked).unwrap(), b);
}

/// The last chunk of a clip carries no frames out, and a chunk after it is refused instead of
/// being decoded as a clip's first.
#[test]
fn last_chunk_carries_nothing_and_refuses_a_further_chunk() {
    let loader = Loader::random(3);
    let conv = CausalConv3d::<f32>::load_params(
        &loader.root().pp("c"),
        causal_params(4, 8, 3, PadMode::First).unwrap(),
    )
    .unwrap();
    let x = latent(Shape::new(1, 4, 6, 5, 7), 12);
    let whole = conv.forward(ConvInput::plain(&x), None).unwrap();
    let (a, b) = (
        x.crop(&Region { d: 0..4, ..Region::all(x.shape()) }).unwrap(),
        x.crop(&Region { d: 4..6, ..Region::all(x.shape()) }).unwrap(),
    );
    let mut cache = ConvCache::default();
    let ya = conv.forward(ConvInput::plain(&a), Some(&mut cache)).unwrap();
    cache.last_chunk(true, true);
    let yb = conv.forward(ConvInput::plain(&b), Some(&mut cache)).unwrap();
    assert!(cache.frames().is_none(), "nothing carried out of the last chunk");
    let mut out = Tensor::zeros(whole.shape()).unwrap();
    out.paste(&ya, (0, 0, 0)).unwrap();
    out.paste(&yb, (4, 0, 0)).unwrap();
    assert_eq!(out, whole);
    let err = conv.forward(ConvInput::plain(&b), Some(&mut cache)).unwrap_err();
    assert!(matches!(err, movq::Error::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("after the clip's last"), "{err}");
    // A single-chunk clip: first and last at once.
    let mut cache = ConvCache::default();
    cache.last_chunk(true, true);
    assert_eq!(conv.forward(ConvInput::plain(&x), Some(&mut cache)).unwrap(), whole);
    assert!(cache.frames().is_none());
}
