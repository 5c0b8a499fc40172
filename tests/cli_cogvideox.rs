//! `movq decode` on diffusers-format CogVideoX checkpoints: a model folder built from random
//! weights saved with diffusers names, sharded weights, latent layout and scaling flags.

mod common;

use movq::checkpoint::OpenOptions;
use movq::io::{WeightFile, read_latent, write_npy, write_tensors};
use movq::model::DecodeMode;
use movq::{Checkpoint, Shape, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn movq() -> Command {
    common::movq()
}

/// A tiny diffusers `AutoencoderKLCogVideoX` config (3 blocks: spatial x4, time x4).
const CONFIG: &str = r#"{"_class_name": "AutoencoderKLCogVideoX", "block_out_channels": [32, 32, 64],
    "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 32, "norm_eps": 1e-06,
    "temporal_compression_ratio": 4, "out_channels": 3, "in_channels": 3, "sample_height": 32,
    "sample_width": 48, "scaling_factor": 0.7}"#;

/// model/vae/{config.json, diffusion_pytorch_model.safetensors} and a latent z (1, 4, 5, 6, 7).
fn model_folder(root: &Path) -> (PathBuf, PathBuf) {
    let vae = root.join("model/vae");
    std::fs::create_dir_all(&vae).unwrap();
    std::fs::write(vae.join("config.json"), CONFIG).unwrap();
    let z = root.join("z.npy");
    let st = movq()
        .args(["random-weights", "--diffusers-names", "--seed", "3", "--config"])
        .arg(vae.join("config.json"))
        .arg("--output")
        .arg(vae.join("diffusion_pytorch_model.safetensors"))
        .args(["--latent-shape", "1,4,5,6,7", "--latent-out"])
        .arg(&z)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    (root.join("model"), z)
}

fn decode(args: &[&str], weights: &Path, latent: &Path, out: &Path) -> std::process::Output {
    movq()
        .arg("decode")
        .arg("--weights")
        .arg(weights)
        .arg("--latent")
        .arg(latent)
        .arg("--output")
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

fn expected(model: &Path, z: &Tensor<f32>, mode: &DecodeMode) -> Tensor<f32> {
    let ck = Checkpoint::open(model, &OpenOptions::default()).unwrap();
    ck.load::<f32>().unwrap().decode(z, mode).unwrap()
}

#[test]
fn cli_decodes_a_diffusers_model_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (model, z_path) = model_folder(dir.path());
    let names: Vec<String> = WeightFile::open(model.join("vae/diffusion_pytorch_model.safetensors"))
        .unwrap()
        .names()
        .map(String::from)
        .collect();
    assert!(names.iter().any(|n| n.starts_with("decoder.up_blocks.0.resnets.0.")), "diffusers names");
    let z: Tensor<f32> = read_latent(&z_path, None).unwrap();

    // Default mode for CogVideoX is chunked; --no-scale decodes the latent as is.
    let out = dir.path().join("out.npy");
    let st = decode(&["--no-scale"], &model, &z_path, &out);
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let y: Tensor<f32> = read_latent(&out, None).unwrap();
    assert_eq!(y.shape(), Shape::new(1, 3, 17, 24, 28));
    assert_eq!(y, expected(&model, &z, &DecodeMode::Chunked));

    // --latent-scaled divides by scaling_factor 0.7 first.
    let st = decode(&["--latent-scaled", "--mode", "whole"], &model, &z_path, &out);
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let mut z_div = z.clone();
    z_div.data_mut().iter_mut().for_each(|v| *v *= (1.0f64 / 0.7) as f32);
    assert_eq!(read_latent::<f32>(&out, None).unwrap(), expected(&model, &z_div, &DecodeMode::Whole));

    // Neither flag: refused with a message, exit code 2, nothing written.
    let out2 = dir.path().join("never.npy");
    let st = decode(&[], &model, &z_path, &out2);
    assert_eq!(st.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&st.stderr).contains("--latent-scaled"));
    assert!(!out2.exists());
}

#[test]
fn cli_reads_btchw_latents_and_sharded_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (model, z_path) = model_folder(dir.path());
    let z: Tensor<f32> = read_latent(&z_path, None).unwrap();
    let want = expected(&model, &z, &DecodeMode::Chunked);

    // The same latent stored (b, t, c, h, w).
    let s = z.shape();
    let mut btchw = vec![0f32; z.data().len()];
    let fl = s.h * s.w;
    for c in 0..s.c {
        for t in 0..s.d {
            btchw[(t * s.c + c) * fl..][..fl].copy_from_slice(&z.data()[(c * s.d + t) * fl..][..fl]);
        }
    }
    let zt = dir.path().join("z_btchw.npy");
    write_npy(&zt, &[1, s.d, s.c, s.h, s.w], &btchw).unwrap();

    // Weights split into two shards with an index, config.json beside them.
    let sharded = dir.path().join("sharded");
    std::fs::create_dir_all(&sharded).unwrap();
    std::fs::copy(model.join("vae/config.json"), sharded.join("config.json")).unwrap();
    let file = WeightFile::open(model.join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    let names: Vec<String> = file.names().map(String::from).collect();
    let mut index = serde_json::Map::new();
    for (k, part) in names.chunks(names.len() / 2 + 1).enumerate() {
        let shard = format!("diffusion_pytorch_model-0000{}-of-00002.safetensors", k + 1);
        let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = part
            .iter()
            .map(|n| {
                let (d, v) = file.read::<f32>(n).unwrap();
                (n.clone(), d, v)
            })
            .collect();
        let entries: Vec<(&str, &[usize], &[f32])> =
            tensors.iter().map(|(n, d, v)| (n.as_str(), d.as_slice(), v.as_slice())).collect();
        write_tensors(&sharded.join(&shard), &entries, &BTreeMap::new()).unwrap();
        for n in part {
            index.insert(n.clone(), serde_json::Value::String(shard.clone()));
        }
    }
    let index_json = serde_json::json!({"metadata": {}, "weight_map": index});
    std::fs::write(sharded.join("diffusion_pytorch_model.safetensors.index.json"), index_json.to_string())
        .unwrap();

    let out = dir.path().join("out.safetensors");
    let st = decode(&["--no-scale", "--layout", "btchw"], &sharded, &zt, &out);
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let (dims, y) = WeightFile::open(&out).unwrap().read::<f32>("sample").unwrap();
    assert_eq!(dims, want.shape().dims().to_vec());
    assert_eq!(y, want.data());

    // Shards that disagree are refused, not resolved by lookup order: a third shard holding a
    // (zeroed) copy of a tensor of the first, then an index entry naming a shard without it.
    let dup = names[0].clone();
    let (d, v) = file.read::<f32>(&dup).unwrap();
    let zeros = vec![0f32; v.len()];
    write_tensors(&sharded.join("extra.safetensors"), &[(dup.as_str(), &d, &zeros)], &BTreeMap::new())
        .unwrap();
    let mut with_extra = index.clone();
    with_extra.insert("zz.extra".into(), serde_json::Value::String("extra.safetensors".into()));
    let index_path = sharded.join("diffusion_pytorch_model.safetensors.index.json");
    std::fs::write(&index_path, serde_json::json!({ "weight_map": with_extra }).to_string()).unwrap();
    let st = decode(&["--no-scale", "--layout", "btchw"], &sharded, &zt, &out);
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(st.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("tensor `{dup}` is also in")), "{err}");
    std::fs::remove_file(sharded.join("extra.safetensors")).unwrap();
    let mut misplaced = index.clone();
    misplaced.insert(
        dup.clone(),
        serde_json::Value::String("diffusion_pytorch_model-00002-of-00002.safetensors".into()),
    );
    std::fs::write(&index_path, serde_json::json!({ "weight_map": misplaced }).to_string()).unwrap();
    let st = decode(&["--no-scale", "--layout", "btchw"], &sharded, &zt, &out);
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(st.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("weight_map entry `{dup}` names")) && err.contains("does not hold it"),
        "{err}"
    );
    // An index that leaves out a tensor of its shards, or has a key of another format.
    let mut partial = index.clone();
    partial.remove(&dup);
    std::fs::write(&index_path, serde_json::json!({ "weight_map": partial }).to_string()).unwrap();
    let st = decode(&["--no-scale", "--layout", "btchw"], &sharded, &zt, &out);
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(st.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("tensor `{dup}` of")) && err.contains("is not in the index's weight_map"),
        "{err}"
    );
    std::fs::write(&index_path, serde_json::json!({ "weight_map": index, "weigth_map": {} }).to_string())
        .unwrap();
    let st = decode(&["--no-scale", "--layout", "btchw"], &sharded, &zt, &out);
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(st.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown key `weigth_map`"), "{err}");
}

#[test]
fn cli_tiled_mode_matches_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let (model, z_path) = model_folder(dir.path());
    // sample 32 x 48 -> tiles of 16 x 24 px = 4 x 6 latents; z is 6 x 7, so it is tiled.
    let out = dir.path().join("tiled.npy");
    let st = decode(&["--no-scale", "--mode", "tiled"], &model, &z_path, &out);
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let z: Tensor<f32> = read_latent(&z_path, None).unwrap();
    let tc = movq::model::TileConfig::diffusers((32, 48), 4).unwrap();
    assert!(tc.splits(6, 7));
    assert_eq!(read_latent::<f32>(&out, None).unwrap(), expected(&model, &z, &DecodeMode::Tiled(tc)));
}

/// sat-format checkpoints name the decoder like upstream MOVQ under `decoder.` (spec 10.4) and
/// carry encoder and loss tensors, which are ignored.
#[test]
fn sat_named_checkpoint_loads_like_the_diffusers_one() {
    let dir = tempfile::tempdir().unwrap();
    let (model, z_path) = model_folder(dir.path());
    let diff = WeightFile::open(model.join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    let cfg = movq::checkpoint::read_config(&model.join("vae/config.json")).unwrap().config;
    // Rebuild the upstream names from the module tree: diffusers_key maps each to its diffusers name.
    let loader = movq::io::Loader::random(0);
    movq::Decoder::<f32>::load(&loader.root(), &movq::model::DecoderPlan::new(&cfg).unwrap()).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = loader
        .take_random()
        .into_iter()
        .map(|(name, _, _)| {
            let dkey =
                format!("decoder.{}", movq::checkpoint::diffusers::diffusers_key(&name, cfg.ch_mult.len()));
            let (d, v) = diff.read::<f32>(&dkey).unwrap();
            (format!("decoder.{name}"), d, v)
        })
        .collect();
    assert!(tensors.iter().any(|(n, _, _)| n.starts_with("decoder.up.2.block.0.conv1.")));
    tensors.push(("encoder.conv_in.conv.weight".into(), vec![2, 2], vec![0.0; 4]));
    tensors.push(("loss.logvar".into(), vec![1], vec![0.0]));
    let entries: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().map(|(n, d, v)| (n.as_str(), d.as_slice(), v.as_slice())).collect();
    let sat = dir.path().join("sat_vae.safetensors");
    write_tensors(&sat, &entries, &BTreeMap::new()).unwrap();

    let ck = Checkpoint::open(
        &sat,
        &OpenOptions { config: Some(&model.join("vae/config.json")), ..Default::default() },
    )
    .unwrap();
    assert_eq!((ck.naming, ck.prefix.as_str()), (movq::checkpoint::Naming::Upstream, "decoder."));
    let z: Tensor<f32> = read_latent(&z_path, None).unwrap();
    let y = ck.load::<f32>().unwrap().decode(&z, &DecodeMode::Chunked).unwrap();
    assert_eq!(y, expected(&model, &z, &DecodeMode::Chunked));

    // A decoder tensor too many is still an error naming it.
    tensors.push(("decoder.up.9.extra.weight".into(), vec![1], vec![0.0]));
    let entries: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().map(|(n, d, v)| (n.as_str(), d.as_slice(), v.as_slice())).collect();
    write_tensors(&sat, &entries, &BTreeMap::new()).unwrap();
    let ck = Checkpoint::open(
        &sat,
        &OpenOptions { config: Some(&model.join("vae/config.json")), ..Default::default() },
    )
    .unwrap();
    let err = ck.load::<f32>().err().unwrap().to_string();
    assert!(err.contains("decoder.up.9.extra.weight"), "{err}");
}

#[test]
fn cli_refuses_a_decode_over_the_memory_budget_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let (model, z_path) = model_folder(dir.path());
    let out = dir.path().join("o.npy");
    let st = decode(&["--no-scale", "--max-memory", "0.01"], &model, &z_path, &out);
    assert_eq!(st.status.code(), Some(2));
    let msg = String::from_utf8_lossy(&st.stderr);
    assert!(msg.contains("needs about") && msg.contains("--mode tiled") && msg.contains("--force"), "{msg}");
    assert!(!out.exists());
    let st = decode(&["--no-scale", "--max-memory", "0.01", "--force"], &model, &z_path, &out);
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    assert!(out.exists());
}
