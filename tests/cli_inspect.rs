//! `movq inspect` and config inference: for every decoder golden file, the config inferred from
//! its tensors (metadata removed) equals the config in its metadata.

mod common;

use movq::checkpoint::diffusers::config_from_diffusers;
use movq::io::{WeightFile, write_tensors};
use movq::model::DecoderConfig;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn movq() -> Command {
    common::movq()
}

/// The golden file's decoder tensors (no `input.` / `output.` tensors), in a file without metadata.
fn strip(golden: &Path, out: &Path) {
    let f = WeightFile::open(golden).unwrap();
    let mut tensors = Vec::new();
    for name in f.names() {
        if name.starts_with("input.") || name.starts_with("output") {
            continue;
        }
        let (shape, data) = f.read::<f32>(name).unwrap();
        tensors.push((name.to_string(), shape, data));
    }
    let entries: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())).collect();
    write_tensors(out, &entries, &BTreeMap::new()).unwrap();
}

fn inspect(args: &[&str], weights: &Path) -> (std::process::Output, Value) {
    let out = movq().arg("inspect").arg(weights).args(args).output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, v)
}

#[test]
fn inferred_config_equals_metadata_config_for_every_decoder_golden_file() {
    let Some(dir) = common::golden_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "safetensors") {
            continue;
        }
        let f = WeightFile::open(&path).unwrap();
        let meta: Value = serde_json::from_str(&f.metadata()["meta"]).unwrap();
        let class = meta["class"].as_str().unwrap();
        let mut cfg_json = meta["config"].clone();
        let expected = match class {
            "MOVQDecoder3D" | "NewDecoder3D" => {
                cfg_json.as_object_mut().unwrap().insert("class".into(), class.into());
                serde_json::from_value::<DecoderConfig>(cfg_json).unwrap()
            }
            "AutoencoderKLCogVideoX" => config_from_diffusers(&cfg_json).unwrap(),
            _ => continue,
        };
        let stripped = tmp.path().join(path.file_name().unwrap());
        strip(&path, &stripped);
        // What the weights cannot tell comes from flags, set to the metadata's values.
        let pad = format!("{:?}", expected.pad_mode).to_lowercase();
        let (res, tct) = (expected.resolution.to_string(), expected.temporal_compress_times.to_string());
        let args = ["--resolution", &res, "--pad-mode", &pad, "--temporal-compress-times", &tct];
        let (out, v) = inspect(&args, &stripped);
        assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        assert_eq!(v["config_source"], "inferred from tensor names and shapes");
        assert_eq!(v["loads"], true, "{}: {}", path.display(), v["load_error"]);
        let mut inferred: DecoderConfig = serde_json::from_value(v["config"].clone()).unwrap();
        let not_inferred: Vec<&str> =
            v["not_inferred"].as_array().unwrap().iter().map(|a| a["field"].as_str().unwrap()).collect();
        assert_eq!(
            not_inferred,
            [
                "resolution",
                "pad_mode",
                "temporal_compress_times",
                "give_pre_end",
                "norm_num_groups",
                "act_fn"
            ]
        );
        // Fields with no effect on the weights or the math: in_channels is unused, dropout is the
        // identity at inference; give_pre_end is listed as not inferred.
        inferred.in_channels = expected.in_channels;
        inferred.dropout = expected.dropout;
        inferred.give_pre_end = expected.give_pre_end;
        assert_eq!(inferred, expected, "{}", path.display());
        let tensors = f.names().filter(|n| !n.starts_with("input.") && !n.starts_with("output")).count();
        assert_eq!(v["decoder_tensors"], tensors);
        checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    // 6 MOVQDecoder3D, 1 NewDecoder3D, 2 diffusers files.
    assert_eq!(checked.len(), 9, "{checked:?}");
}

#[test]
fn inspect_reports_metadata_config_counts_and_what_was_assumed() {
    let Some(golden) = common::golden("movq_first_tct4_attn16") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let stripped = tmp.path().join("w.safetensors");
    strip(&golden, &stripped);
    let (out, v) = inspect(&[], &stripped);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let f = WeightFile::open(&stripped).unwrap();
    let params: u64 = f.names().map(|n| f.info(n).unwrap().shape.iter().product::<usize>() as u64).sum();
    assert_eq!(v["parameters"], params);
    assert_eq!(v["tensors"], f.names().count());
    assert_eq!(v["dtypes"]["F32"], f.names().count());
    assert_eq!(v["format"], "upstream");
    // No --resolution: a resolution is chosen that still puts attention on the same level.
    let res = v["not_inferred"][0]["value"].as_str().unwrap().parse::<usize>().unwrap();
    assert_eq!(v["config"]["resolution"], res);
    let cfg: DecoderConfig = serde_json::from_value(v["config"].clone()).unwrap();
    let opts = movq::checkpoint::OpenOptions { ignore: &["input.", "output"], ..Default::default() };
    let golden_plan = movq::Checkpoint::open(&golden, &opts).unwrap().plan;
    let plan = movq::model::DecoderPlan::new(&cfg).unwrap();
    for i in 0..plan.levels.len() {
        assert_eq!(plan.levels[i].attention, golden_plan.levels[i].attention, "level {i}");
    }
    assert_eq!(v["loads"], true);

    // The golden file itself: config from its metadata, nothing assumed.
    let (out, v) = inspect(&[], &golden);
    assert!(out.status.success());
    assert_eq!(v["config_source"], "safetensors metadata");
    assert_eq!(v["not_inferred"].as_array().unwrap().len(), 0);
    assert_eq!(&serde_json::from_value::<DecoderConfig>(v["config"].clone()).unwrap(), golden_plan.config());
}

#[test]
fn decode_without_any_config_uses_the_inferred_one() {
    let Some(golden) = common::golden("movq_batch2_h4w6_t4") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let stripped = tmp.path().join("w.safetensors");
    strip(&golden, &stripped);
    let out_path = tmp.path().join("y.npy");
    let st = movq()
        .args(["decode", "--quiet", "--resolution", "64", "--weights"])
        .arg(&stripped)
        .arg("--latent")
        .arg(&golden)
        .args(["--latent-key", "input.z", "--output"])
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let (shape, y) = movq::io::read_npy::<f32>(&out_path).unwrap();
    let (s64, y64) = WeightFile::open(&golden).unwrap().read::<f64>("output.f64").unwrap();
    assert_eq!(shape, s64);
    let num: f64 = y.iter().zip(&y64).map(|(&a, &b)| (a as f64 - b).powi(2)).sum();
    let den: f64 = y64.iter().map(|b| b * b).sum();
    assert!((num / den).sqrt() < 1e-5, "rel-L2 {}", (num / den).sqrt());
}

#[test]
fn inference_failure_names_the_missing_tensor_and_suggests_config() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path().join("w.safetensors");
    write_tensors::<f32>(
        &w,
        &[("up.0.block.0.conv1.conv.weight", &[32, 32, 3, 3, 3], &[0.0; 27 * 1024])],
        &BTreeMap::new(),
    )
    .unwrap();
    let (out, _) = inspect(&[], &w);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("conv_in.conv.weight") && err.contains("--config"), "{err}");
}
