//! `torch.save` checkpoints written by real PyTorch (scripts/fixtures/torch_checkpoints.py)
//! against their safetensors twins: every tensor's name, dtype, shape and value bits.

mod common;

use movq::Error;
use movq::io::{Loader, WeightFile};
use safetensors::Dtype;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch").join(name)
}

/// Checks every tensor of `<name>.pt`, opened both mapped and from bytes, against
/// `<name>.safetensors`; returns the mapped file.
fn check_against_twin(name: &str) -> WeightFile {
    let pt = fixture(&format!("{name}.pt"));
    let twin = WeightFile::open(fixture(&format!("{name}.safetensors"))).unwrap();
    let mapped = WeightFile::open(&pt).unwrap();
    let owned = WeightFile::from_bytes(&pt, std::fs::read(&pt).unwrap()).unwrap();
    for file in [&mapped, &owned] {
        assert_eq!(
            file.names().collect::<Vec<_>>(),
            twin.names().collect::<Vec<_>>(),
            "{name}: tensor names"
        );
        assert!(file.metadata().is_empty());
        for t in twin.names() {
            let (want, got) = (twin.info(t).unwrap(), file.info(t).unwrap());
            assert_eq!((got.dtype, &got.shape), (want.dtype, &want.shape), "{name}: `{t}`");
            if matches!(want.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64) {
                let (shape, w) = twin.read::<f64>(t).unwrap();
                let (got_shape, g) = file.read::<f64>(t).unwrap();
                assert_eq!(got_shape, shape);
                // Every f16/bf16/f32 value is exact in f64, so equal bits mean equal stored values.
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&g), bits(&w), "{name}: `{t}` values");
                assert_eq!(file.read::<f32>(t).unwrap().1, twin.read::<f32>(t).unwrap().1);
            } else {
                let e = file.read::<f32>(t).unwrap_err();
                assert!(matches!(e, Error::UnsupportedDtype { ref name, .. } if name == t), "{e}");
            }
        }
    }
    mapped
}

#[test]
fn torch_plain_state_dict_reads_in_place() {
    let file = check_against_twin("plain");
    assert_eq!(
        file.names().collect::<Vec<_>>(),
        ["conv.bias", "conv.weight", "norm.bias", "norm.weight", "proj.weight"]
    );
    // torch aligns every storage to 64 bytes and the map is page-aligned: no copy needed.
    for n in ["conv.weight", "conv.bias", "proj.weight"] {
        let view = file.f32_view(n).unwrap_or_else(|| panic!("`{n}` must be viewable in place"));
        assert_eq!(view, &file.read::<f32>(n).unwrap().1[..]);
    }
}

#[test]
fn torch_wrappers_and_module_prefix_are_unwrapped() {
    for name in ["wrapped", "module_prefix", "nested", "protocol4"] {
        check_against_twin(name);
    }
}

#[test]
fn torch_half_bf16_f64_int_scalar_empty_and_parameter() {
    let file = check_against_twin("dtypes");
    assert_eq!(file.info("scalar").unwrap().shape, Vec::<usize>::new());
    assert_eq!(file.info("empty").unwrap().shape, vec![0, 3]);
    assert_eq!(file.info("i64").unwrap().dtype, Dtype::I64);
}

#[test]
fn torch_views_transposed_sliced_shared_and_expanded() {
    let file = check_against_twin("views");
    // The row slice shares `base`'s storage and is contiguous: served in place.
    assert!(file.f32_view("row_slice").is_some());
}

#[test]
fn torch_legacy_format_is_read() {
    let file = check_against_twin("legacy");
    assert_eq!(file.names().collect::<Vec<_>>(), ["h", "w", "w_t"]);
}

#[test]
fn torch_legacy_truncations_are_named() {
    let bytes = std::fs::read(fixture("legacy.pt")).unwrap();
    // Cut inside the last storage's data, inside its element count, and inside the pickles.
    let e = WeightFile::from_bytes("l.pt", bytes[..bytes.len() - 1].to_vec()).unwrap_err();
    assert!(matches!(e, Error::Truncated { ref what, .. } if what.starts_with("storage `")), "{e}");
    let e = WeightFile::from_bytes("l.pt", bytes[..bytes.len() - 8 - 4 * 2].to_vec()).unwrap_err();
    assert!(matches!(e, Error::Truncated { .. }), "{e}");
    let e = WeightFile::from_bytes("l.pt", bytes[..200].to_vec()).unwrap_err();
    assert!(matches!(e, Error::Pickle { ref reason, .. } if reason.contains("truncated pickle")), "{e}");
}

#[test]
fn torch_checkpoint_feeds_the_loader() {
    let file = std::sync::Arc::new(WeightFile::open(fixture("wrapped.pt")).unwrap());
    let loader = Loader::shared(file.clone(), "");
    let w = loader.root().pp("conv").get::<f32>("weight", &[3, 2, 1, 2, 2]).unwrap();
    assert!(matches!(w, movq::io::Param::Mapped { .. }), "an f32 weight of a torch file is used in place");
    assert_eq!(&w[..], &file.read::<f32>("conv.weight").unwrap().1[..]);
}

#[test]
fn torch_hostile_checkpoints_exit_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let plain = std::fs::read(fixture("plain.pt")).unwrap();
    let at = plain.windows(24).position(|w| w == b"collections\nOrderedDict\n").unwrap();
    let mut system = plain.clone();
    system[at..at + 24].copy_from_slice(b"os\nsystem\n..............");
    let cases: [(&str, &[u8], &str); 2] = [
        ("system.pt", &system, "global `os.system` is not allowed"),
        ("truncated.pt", &plain[..plain.len() - 30], "no end-of-central-directory record"),
    ];
    let z = dir.path().join("z.npy");
    movq::io::write_npy(&z, &[1, 4, 1, 2, 2], &[0.0f32; 16]).unwrap();
    for (name, bytes, expect) in cases {
        let pt = dir.path().join(name);
        std::fs::write(&pt, bytes).unwrap();
        let out = dir.path().join("out.npy");
        let st = common::movq()
            .args(["decode", "--quiet", "--weights"])
            .arg(&pt)
            .arg("--latent")
            .arg(&z)
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&st.stderr);
        assert_eq!(st.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(&*pt.to_string_lossy()) && err.contains(expect), "{name}: {err}");
        assert!(!out.exists());
    }
}
