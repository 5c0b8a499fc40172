//! Strict config files (issue 14): an unknown key names itself and the closest known key; a
//! value of the wrong type names the key, the expected type and what was found; an act_fn
//! or class movq does not implement is a named refusal. Each case was silently decoded with a
//! default before.

use movq::checkpoint::{Checkpoint, OpenOptions};
use movq::{DecoderConfig, Error};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture_folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints/diffusers_groups2")
}

/// Opens the diffusers fixture with its config.json edited by `edit`.
fn open_with(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Result<Checkpoint, Error> {
    let text = std::fs::read_to_string(fixture_folder().join("vae/config.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    edit(v.as_object_mut().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, v.to_string()).unwrap();
    Checkpoint::open(&fixture_folder(), &OpenOptions { config: Some(&cfg), ..Default::default() })
}

fn message(r: Result<Checkpoint, Error>) -> String {
    match r {
        Ok(_) => "opened".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unmodified_config_opens() {
    assert_eq!(message(open_with(|_| {})), "opened");
}

#[test]
fn diffusers_typo_names_the_closest_key() {
    let m = message(open_with(|o| {
        o.insert("norm-num-groups".into(), 2.into());
    }));
    assert!(m.contains("unknown key `norm-num-groups` (did you mean `norm_num_groups`?)"), "{m}");
    assert!(m.contains("config.json"), "names the file: {m}");
}

#[test]
fn scaling_factor_of_the_wrong_type_is_named() {
    for (value, found) in [
        (Value::from("0.5"), "the string \"0.5\""),
        (Value::from(true), "the boolean true"),
        (Value::Null, "null"),
    ] {
        let m = message(open_with(|o| {
            o.insert("scaling_factor".into(), value);
        }));
        assert!(m.contains(&format!("key `scaling_factor`: expected a number, found {found}")), "{m}");
    }
}

#[test]
fn bookkeeping_and_encoder_keys_are_accepted() {
    let m = message(open_with(|o| {
        o.insert("_name_or_path".into(), "THUDM/CogVideoX-2b".into());
        o.insert("_use_default_values".into(), Value::Array(vec!["shift_factor".into()]));
        o.insert("down_block_types".into(), Value::Array(vec!["CogVideoXDownBlock3D".into(); 4]));
        o.insert("use_quant_conv".into(), false.into());
        o.insert("shift_factor".into(), Value::Null);
    }));
    assert_eq!(m, "opened");
}

#[test]
fn unknown_act_fn_and_class_are_refused_by_name() {
    let m = message(open_with(|o| {
        o.insert("act_fn".into(), "tanh".into());
    }));
    assert!(m.contains("act_fn \"tanh\"") && m.contains("swish, silu, mish, gelu, relu"), "{m}");
    let m = message(open_with(|o| {
        o.insert("_class_name".into(), "AutoencoderKL".into());
    }));
    assert!(m.contains("movq decodes `AutoencoderKLCogVideoX` only"), "{m}");
    let m = message(open_with(|o| {
        o.insert("up_block_types".into(), Value::Array(vec!["UpDecoderBlock2D".into(); 4]));
    }));
    assert!(m.contains("up block type \"UpDecoderBlock2D\""), "{m}");
}

#[test]
fn norm_num_groups_must_divide_the_channels() {
    let m = message(open_with(|o| {
        o.insert("norm_num_groups".into(), 3.into());
    }));
    assert!(m.contains("3 groups") || m.contains("groups"), "{m}");
    assert_ne!(m, "opened");
}

#[test]
fn upstream_typo_names_the_closest_key() {
    let json = r#"{"ch": 32, "out_ch": 3, "ch_mult": [1, 2], "num_res_blocks": 0, "attn_resolutions": [],
        "resolution": 32, "z_channels": 4, "pad-mode": "constant"}"#;
    let m = DecoderConfig::from_json(json).unwrap_err().to_string();
    assert!(m.contains("unknown key `pad-mode` (did you mean `pad_mode`?)"), "{m}");
    let json = json.replace("\"pad-mode\": \"constant\"", "\"resolution_\": 3");
    let m = DecoderConfig::from_json(&json).unwrap_err().to_string();
    assert!(m.contains("did you mean `resolution`"), "{m}");
    let json = r#"{"ch": "32", "out_ch": 3, "num_res_blocks": 0, "attn_resolutions": [], "resolution": 32, "z_channels": 4}"#;
    let m = DecoderConfig::from_json(json).unwrap_err().to_string();
    assert!(m.contains("key `ch`: expected a non-negative integer, found the string \"32\""), "{m}");
}

#[test]
fn context_parallel_with_add_conv_is_refused() {
    let json = r#"{"class": "ContextParallelDecoder3D", "ch": 32, "out_ch": 3, "ch_mult": [1, 2], "num_res_blocks": 0,
        "attn_resolutions": [], "resolution": 32, "z_channels": 4, "add_conv": true}"#;
    let e = DecoderConfig::from_json(json).unwrap_err();
    assert!(matches!(&e, Error::Unsupported(m) if m.contains("add_conv")), "{e}");
}

#[test]
fn upstream_act_fn_is_case_insensitive_and_named_when_unknown() {
    let base = r#"{"ch": 32, "out_ch": 3, "ch_mult": [1, 2], "num_res_blocks": 0, "attn_resolutions": [],
        "resolution": 32, "z_channels": 4, "act_fn": "ACT"}"#;
    let c = DecoderConfig::from_json(&base.replace("ACT", "GELU")).unwrap();
    assert_eq!(c.act_fn, movq::kernels::Act::Gelu);
    let m = DecoderConfig::from_json(&base.replace("ACT", "tanh")).unwrap_err().to_string();
    assert!(m.contains("act_fn \"tanh\""), "{m}");
}

/// serde_json keeps the last of duplicate keys; a config naming one twice (here with two
/// different group counts, the last one valid) is refused, naming the key and the file.
#[test]
fn duplicate_config_keys_are_refused() {
    let text = std::fs::read_to_string(fixture_folder().join("vae/config.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let groups = v["norm_num_groups"].clone();
    let body = text.trim_end().strip_suffix('}').unwrap();
    let dup = format!("{body}, \"norm_num_groups\": 7, \"norm_num_groups\": {groups}}}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, dup).unwrap();
    let m = message(Checkpoint::open(
        &fixture_folder(),
        &OpenOptions { config: Some(&cfg), ..Default::default() },
    ));
    assert!(m.contains("key `norm_num_groups` appears twice"), "{m}");
    assert!(m.contains("config.json"), "names the file: {m}");
    // Upstream-named JSON through DecoderConfig::from_json too.
    let e = DecoderConfig::from_json(r#"{"ch": 64, "ch": 32}"#).unwrap_err().to_string();
    assert!(e.contains("key `ch` appears twice"), "{e}");
}
