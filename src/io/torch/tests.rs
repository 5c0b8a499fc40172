//! Hand-built pickles and archives: what torch writes, and what a hostile file could hold.

use super::zip::tests::build;
use crate::error::Error;
use crate::io::WeightFile;

/// A pickle under construction, one opcode at a time.
#[derive(Default, Clone)]
struct P(Vec<u8>);

impl P {
    fn new() -> Self {
        P(vec![0x80, 2])
    }
    fn op(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn s(self, text: &str) -> Self {
        let len = (text.len() as u32).to_le_bytes();
        self.op(b"X").op(&len).op(text.as_bytes())
    }
    fn int(self, v: i64) -> Self {
        match i32::try_from(v) {
            Ok(v) => self.op(b"J").op(&v.to_le_bytes()),
            Err(_) => self.op(&[0x8a, 8]).op(&v.to_le_bytes()),
        }
    }
    fn global(self, module: &str, name: &str) -> Self {
        self.op(b"c").op(module.as_bytes()).op(b"\n").op(name.as_bytes()).op(b"\n")
    }
    fn ints(self, v: &[i64]) -> Self {
        v.iter().fold(self.op(b"("), |p, &x| p.int(x)).op(b"t")
    }
    /// `_rebuild_tensor_v2(('storage', torch.<class>, key, 'cpu', numel), offset, size, stride,
    /// False, OrderedDict())`, as torch.save writes it.
    fn tensor(self, class: &str, key: &str, numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Self {
        let p =
            self.global("torch._utils", "_rebuild_tensor_v2").op(b"((").s("storage").global("torch", class);
        let p = p.s(key).s("cpu").int(numel).op(b"tQ").int(offset).ints(size).ints(stride);
        p.op(&[0x89]).global("collections", "OrderedDict").op(b")RtR")
    }
    fn stop(self) -> Vec<u8> {
        self.op(b".").0
    }
}

/// The f32 values 0, 1, ..., n-1 as little-endian bytes.
fn f32s(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
}

fn open(pkl: &[u8], storages: &[(&str, &[u8])]) -> crate::error::Result<WeightFile> {
    let names: Vec<String> = storages.iter().map(|(k, _)| format!("a/data/{k}")).collect();
    let mut entries: Vec<(&str, &[u8])> = vec![("a/data.pkl", pkl)];
    entries.extend(names.iter().zip(storages).map(|(n, (_, b))| (n.as_str(), *b)));
    WeightFile::from_bytes("t.pt", build(&entries, false))
}

fn pickle_reason(r: crate::error::Result<WeightFile>) -> String {
    match r {
        Err(Error::Pickle { reason, .. }) => reason,
        other => panic!("expected a Pickle error, got {other:?}"),
    }
}

/// `{name: tensor}` over storage "0" (six f32).
fn one_tensor(name: &str, size: &[i64], stride: &[i64], offset: i64) -> Vec<u8> {
    P::new().op(b"}").s(name).tensor("FloatStorage", "0", 6, offset, size, stride).op(b"s").stop()
}

#[test]
fn torch_state_dict_contiguous_and_strided() {
    let pkl = P::new()
        .op(b"}(")
        .s("w")
        .tensor("FloatStorage", "0", 6, 0, &[2, 3], &[3, 1])
        .s("t")
        .tensor("FloatStorage", "0", 6, 0, &[3, 2], &[1, 3])
        .s("tail")
        .tensor("FloatStorage", "0", 6, 4, &[2], &[1])
        .s("step")
        .int(7)
        .op(b"u")
        .stop();
    let f = open(&pkl, &[("0", &f32s(6))]).unwrap();
    assert_eq!(f.names().collect::<Vec<_>>(), ["t", "tail", "w"]);
    assert_eq!(f.read::<f32>("w").unwrap(), (vec![2, 3], vec![0., 1., 2., 3., 4., 5.]));
    assert_eq!(f.read::<f32>("t").unwrap(), (vec![3, 2], vec![0., 3., 1., 4., 2., 5.]));
    assert_eq!(f.read::<f32>("tail").unwrap().1, vec![4., 5.]);
}

/// A state dict setting one key twice (Python would keep the second) is refused, naming it.
#[test]
fn torch_repeated_state_dict_key_is_refused() {
    let pkl = P::new()
        .op(b"}(")
        .s("w")
        .tensor("FloatStorage", "0", 6, 0, &[2], &[1])
        .s("w")
        .tensor("FloatStorage", "0", 6, 4, &[2], &[1])
        .op(b"u")
        .stop();
    match open(&pkl, &[("0", &f32s(6))]) {
        Err(e @ Error::InvalidFile { .. }) => assert!(e.to_string().contains("sets tensor `w` twice"), "{e}"),
        other => panic!("expected InvalidFile, got {:?}", other.map(|f| f.names().count())),
    }
}

#[test]
fn torch_size_one_axis_with_any_stride_is_gathered() {
    // (1, 2, 2) with strides (i64::MAX, 1, 2): non-contiguous, and the size-1 axis's stride
    // must not matter (nor overflow).
    let f = open(&one_tensor("x", &[1, 2, 2], &[i64::MAX, 1, 2], 0), &[("0", &f32s(6))]).unwrap();
    assert_eq!(f.read::<f32>("x").unwrap().1, vec![0., 2., 1., 3.]);
}

#[test]
fn torch_wrappers_and_module_prefix() {
    let inner = |p: P| p.op(b"}(").s("module.a").tensor("FloatStorage", "0", 6, 0, &[6], &[1]).s("module.b");
    let pkl = inner(P::new().op(b"}").s("state_dict"))
        .tensor("FloatStorage", "0", 6, 0, &[1], &[1])
        .op(b"us")
        .stop();
    let f = open(&pkl, &[("0", &f32s(6))]).unwrap();
    assert_eq!(f.names().collect::<Vec<_>>(), ["a", "b"]);
    // One key without the prefix: nothing is stripped.
    let pkl = P::new()
        .op(b"}(")
        .s("module.a")
        .tensor("FloatStorage", "0", 6, 0, &[6], &[1])
        .s("b")
        .tensor("FloatStorage", "0", 6, 0, &[1], &[1])
        .op(b"u")
        .stop();
    let f = open(&pkl, &[("0", &f32s(6))]).unwrap();
    assert_eq!(f.names().collect::<Vec<_>>(), ["b", "module.a"]);
}

#[test]
fn torch_disallowed_globals_and_opcodes_are_named() {
    let r = pickle_reason(open(&P::new().global("os", "system").s("rm -rf /").op(b"\x85R").stop(), &[]));
    assert!(r.contains("global `os.system` is not allowed"), "{r}");
    let r = pickle_reason(open(&P::new().s("builtins").s("eval").op(&[0x93]).stop(), &[]));
    assert!(r.contains("global `builtins.eval` is not allowed"), "{r}");
    let r = pickle_reason(open(&P::new().global("torch", "ComplexFloatStorage").stop(), &[]));
    assert!(r.contains("unsupported dtype: storage class `torch.ComplexFloatStorage`"), "{r}");
    let r = pickle_reason(open(&P::new().op(b"}").op(&[0x81]).stop(), &[]));
    assert!(r.contains("opcode 0x81 is not allowed"), "{r}");
    // An allowed global called in a way no state dict is built.
    let r = pickle_reason(open(&P::new().global("torch", "FloatStorage").op(b")R").stop(), &[]));
    assert!(r.contains("is not a state-dict construction"), "{r}");
}

#[test]
fn torch_truncated_and_oversized_lengths_are_named() {
    let full = one_tensor("w", &[6], &[1], 0);
    for cut in [3, 10, full.len() / 2, full.len() - 1] {
        let r = pickle_reason(open(&full[..cut], &[("0", &f32s(6))]));
        let named = ["truncated pickle", "empty stack", "unterminated"].iter().any(|w| r.contains(w));
        assert!(named, "cut {cut}: {r}");
    }
    // A 4 GiB string length in a 10-byte pickle: refused before any allocation.
    let r = pickle_reason(open(&P::new().op(b"X\xff\xff\xff\xff").stop(), &[]));
    assert!(r.contains("needs 4294967295 bytes"), "{r}");
    let r = pickle_reason(open(&P::new().op(&[0x8d]).op(&u64::MAX.to_le_bytes()).stop(), &[]));
    assert!(r.contains("truncated pickle"), "{r}");
}

#[test]
fn torch_deep_nesting_and_cycles_are_bounded() {
    let r = pickle_reason(open(&P::new().op(&vec![b'('; 70_000]).stop(), &[]));
    assert!(r.contains("nested MARKs"), "{r}");
    let r = pickle_reason(open(&P::new().op(&vec![b']'; 70_000]).stop(), &[]));
    assert!(r.contains("stack deeper than"), "{r}");
    // A list holding itself, and a dict that is its own state_dict.
    let r = pickle_reason(open(&P::new().op(b"]q\x00h\x00a").stop(), &[]));
    assert!(r.contains("is a list, not a dict"), "{r}");
    let r = pickle_reason(open(&P::new().op(b"}q\x00").s("state_dict").op(b"h\x00s").stop(), &[]));
    assert!(r.contains("nested wrapper dicts"), "{r}");
    let r = pickle_reason(open(&P::new().op(b"h\x05").stop(), &[]));
    assert!(r.contains("memo key 5 is not set"), "{r}");
}

#[test]
fn torch_tensor_geometry_errors_name_the_tensor() {
    let storage = f32s(6);
    let e = open(&one_tensor("w", &[2, 3], &[3, 1], 1), &[("0", &storage)]).unwrap_err();
    assert!(matches!(e, Error::BadOffsets { ref name, .. } if name == "w"), "{e}");
    // The pickle says 6 elements, the entry holds 5.
    let e = open(&one_tensor("w", &[6], &[1], 0), &[("0", &f32s(5))]).unwrap_err();
    assert!(matches!(e, Error::ByteSize { ref name, needed: 24, got: 20, .. } if name == "w"), "{e}");
    let e = open(&one_tensor("w", &[6], &[1], 0), &[("1", &storage)]).unwrap_err();
    assert!(e.to_string().contains("tensor `w`: its storage `0` is not in the file"), "{e}");
    // A broadcast view of 2^40 elements over one stored float.
    let e = open(&one_tensor("w", &[1 << 40], &[0], 0), &[("0", &storage)]).unwrap_err();
    assert!(matches!(e, Error::TooLarge { ref what, .. } if what.contains("`w`")), "{e}");
    let r = pickle_reason(open(&one_tensor("w", &[-1], &[1], 0), &[("0", &storage)]));
    assert!(r.contains("tensor size holds a negative value"), "{r}");
    let r = pickle_reason(open(&one_tensor("w", &[2, 3], &[1], 0), &[("0", &storage)]));
    assert!(r.contains("differ in rank"), "{r}");
}

#[test]
fn torch_archive_level_errors() {
    let e = WeightFile::from_bytes("t.pt", build(&[("a/other", b"x")], false)).unwrap_err();
    assert!(matches!(e, Error::Zip { ref reason, .. } if reason.contains("no `<archive>/data.pkl`")), "{e}");
    let pkl = one_tensor("w", &[6], &[1], 0);
    let storage = f32s(6);
    let big = build(&[("a/data.pkl", &pkl), ("a/byteorder", b"big"), ("a/data/0", &storage)], false);
    let e = WeightFile::from_bytes("t.pt", big).unwrap_err();
    assert!(matches!(e, Error::Unsupported(ref m) if m.contains("byte order \"big\"")), "{e}");
    let little = build(&[("a/data.pkl", &pkl), ("a/byteorder", b"little"), ("a/data/0", &storage)], true);
    assert_eq!(WeightFile::from_bytes("t.pt", little).unwrap().read::<f32>("w").unwrap().1.len(), 6);
    // A dict without tensors or a known wrapper, and the pre-1.6 format's magic alone.
    let r = open(&P::new().op(b"}").s("ema").op(b"}s").stop(), &[]).unwrap_err();
    assert!(r.to_string().contains("no tensors in the saved dict (keys [\"ema\"])"), "{r}");
    let e =
        WeightFile::from_bytes("t.pt", b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.".to_vec());
    assert!(
        matches!(e, Err(Error::Pickle { ref reason, .. }) if reason.starts_with("the format version byte 0"))
    );
}

/// A sat-style `3d-vae.pt` (`{"state_dict": {"decoder.*", "encoder.*", "loss.*"}, "global_step"}`)
/// of a random tiny decoder opens through `Checkpoint` and decodes exactly like the weights it
/// was made from.
#[test]
#[cfg_attr(miri, ignore)]
fn torch_sat_checkpoint_decodes_like_its_weights() {
    use crate::checkpoint::{Checkpoint, Naming};
    use crate::io::Loader;
    use crate::model::{DecodeMode, Decoder, DecoderConfig};
    use crate::{Shape, Tensor};
    let json = r#"{"class": "MOVQDecoder3D", "ch": 32, "out_ch": 3, "ch_mult": [1, 2], "num_res_blocks": 1,
        "attn_resolutions": [4], "resolution": 8, "z_channels": 4, "zq_ch": 4, "add_conv": false,
        "pad_mode": "first", "temporal_compress_times": 2, "resamp_with_conv": true}"#;
    let cfg = DecoderConfig::from_json(json).unwrap();
    let random = Loader::random(11);
    let want_decoder =
        Decoder::<f32>::load(&random.root(), &crate::model::DecoderPlan::new(&cfg).unwrap()).unwrap();
    let mut made = random.take_random();
    made.push(("encoder.conv_in.weight".into(), vec![2], vec![1.0, 2.0]));
    made.push(("loss.logvar".into(), vec![], vec![0.5]));

    let mut pkl = P::new().op(b"}").s("state_dict").global("collections", "OrderedDict").op(b")R(");
    let mut storages = Vec::new();
    for (i, (name, shape, values)) in made.iter().enumerate() {
        let key = if name.starts_with("encoder.") || name.starts_with("loss.") {
            name.clone()
        } else {
            format!("decoder.{name}")
        };
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let mut stride = vec![1i64; dims.len()];
        for a in (0..dims.len().saturating_sub(1)).rev() {
            stride[a] = stride[a + 1] * dims[a + 1];
        }
        pkl = pkl.s(&key).tensor("FloatStorage", &i.to_string(), values.len() as i64, 0, &dims, &stride);
        storages.push((
            format!("3d-vae/data/{i}"),
            values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
        ));
    }
    let pkl = pkl.op(b"us").s("global_step").int(1000).op(b"s").stop();
    let mut entries: Vec<(&str, &[u8])> = vec![("3d-vae/data.pkl", &pkl), ("3d-vae/byteorder", b"little")];
    entries.extend(storages.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    let dir = tempfile::tempdir().unwrap();
    let (pt, cfg_path) = (dir.path().join("3d-vae.pt"), dir.path().join("config.json"));
    std::fs::write(&pt, build(&entries, false)).unwrap();
    std::fs::write(&cfg_path, json).unwrap();

    let opts = crate::checkpoint::OpenOptions { config: Some(&cfg_path), ..Default::default() };
    let ck = Checkpoint::open(&pt, &opts).unwrap();
    assert_eq!((ck.naming, ck.prefix.as_str()), (Naming::Upstream, "decoder."));
    let z = Tensor::from_vec(Shape::new(1, 4, 2, 3, 3), (0..72).map(|i| (i as f32 * 0.37).sin()).collect())
        .unwrap();
    let got = ck.load::<f32>().unwrap().decode(&z, &DecodeMode::Whole).unwrap();
    assert_eq!(got, want_decoder.decode(&z, &DecodeMode::Whole).unwrap());
}

#[test]
fn torch_many_keys_for_one_tensor_are_capped() {
    // One rank-64 tensor under 2^17 keys: a 2 MB pickle asking for 8 M shape entries.
    let mut p = P::new().op(b"}").s("k").tensor("FloatStorage", "0", 1, 0, &[1; 64], &[1; 64]).op(b"q\x01s");
    for i in 0..(1 << 17) {
        p = p.s(&format!("k{i}")).op(b"h\x01s");
    }
    let e = open(&p.stop(), &[("0", &f32s(1))]).unwrap_err();
    assert!(matches!(e, Error::TooLarge { ref reason, .. } if reason.contains("dimensions in all")), "{e}");
}
