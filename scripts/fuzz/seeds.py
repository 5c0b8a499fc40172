"""Writes the seed inputs of fuzz/corpus/<target>/seed_* (pure Python, no dependencies).

The fuzzer grows the corpus from these; `tests/fuzz_corpus.rs` replays all of it. Rerun only to
regenerate the seeds: python3 scripts/fuzz/seeds.py
"""
import json, os, random, struct, sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fuzz", "corpus")
golden = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "golden")


def put(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed_" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I32": 4, "U8": 1}


def safetensors(tensors, meta=None):
    header, off = {}, 0
    if meta:
        header["__metadata__"] = meta
    for name, dtype, shape in tensors:
        n = SIZES[dtype]
        for s in shape:
            n *= s
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(random.randrange(256) for _ in range(off))


def npy(descr, shape, version=1, data=None):
    n = {"<f4": 4, "<f8": 8, "<f2": 2, "|u1": 1}.get(descr, 4)
    for s in shape:
        n *= s
    tup = "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    h = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, tup)
    pre = 10 if version == 1 else 12
    h += " " * (-(pre + len(h) + 1) % 64) + "\n"
    ln = struct.pack("<H", len(h)) if version == 1 else struct.pack("<I", len(h))
    body = data if data is not None else bytes(random.randrange(256) for _ in range(n))
    return b"\x93NUMPY" + bytes([version, 0]) + ln + h.encode() + body


random.seed(0)
conv = [("conv_in.weight", "F32", [32, 4, 3, 3, 3]), ("conv_in.bias", "F32", [32])]
put("safetensors_header", "conv_f32", safetensors([("conv.weight", "F32", [2, 2, 1, 1, 1]), ("conv.bias", "F32", [2])]))
put("safetensors_header", "mixed_dtypes", safetensors([("a", "F16", [3]), ("b", "BF16", [2, 2]), ("c", "F64", [1]), ("d", "I32", [2])]))
put("safetensors_header", "metadata", safetensors([("x", "F32", [1, 4, 1, 2, 2])], {"config": json.dumps({"ch": 32, "out_ch": 3, "ch_mult": [1], "num_res_blocks": 0, "attn_resolutions": [], "resolution": 8, "z_channels": 4})}))
put("safetensors_header", "empty", safetensors([]))
put("safetensors_header", "zero_dim", safetensors([("z", "F32", [0, 3])]))
put("safetensors_header", "upstream_names", safetensors([("conv_in.weight", "F16", [32, 4, 1, 1, 1]), ("conv_in.bias", "F16", [32]), ("conv_out.weight", "F16", [3, 32, 1, 1, 1]), ("conv_out.bias", "F16", [3]), ("norm_out.norm_layer.weight", "F16", [32]), ("norm_out.norm_layer.bias", "F16", [32]), ("norm_out.conv_y.weight", "F16", [32, 4, 1, 1, 1]), ("norm_out.conv_b.weight", "F16", [32, 4, 1, 1, 1])]))
put("safetensors_header", "diffusers_names", safetensors([("decoder.conv_in.conv.weight", "F16", [32, 4, 1, 1, 1]), ("decoder.up_blocks.0.resnets.0.norm1.norm_layer.weight", "F16", [32])]))
put("safetensors_header", "overlap", safetensors([("a", "F32", [2])])[:-4] + b"\0" * 4)
put("safetensors_header", "truncated", safetensors(conv)[:200])
put("safetensors_header", "bad_json", struct.pack("<Q", 8) + b'{"a": [}')
put("safetensors_header", "huge_len", struct.pack("<Q", 1 << 62) + b"{}")

for i, (descr, shape) in enumerate([("<f4", [1, 4, 2, 3, 3]), ("<f8", [2, 2]), ("<f2", [5]), ("|u1", [3, 4, 3]), ("<f4", [0, 4]), ("<i8", [2]), ("<f4", [])]):
    put("npy_parse", "v1_%d" % i, npy(descr, shape))
put("npy_parse", "v2", npy("<f4", [1, 2, 3], version=2))
put("npy_parse", "v3", npy("<f8", [4], version=3))
put("npy_parse", "fortran", npy("<f4", [2, 2]).replace(b"False", b"True "))
put("npy_parse", "truncated", npy("<f4", [8, 8])[:100])
put("npy_parse", "huge_shape", npy("<f4", [1 << 40, 1 << 30], data=b""))

configs = {}
if os.path.isdir(golden):
    for f in sorted(os.listdir(golden)):
        if f.endswith(".safetensors"):
            with open(os.path.join(golden, f), "rb") as fh:
                n = struct.unpack("<Q", fh.read(8))[0]
                meta = json.loads(json.loads(fh.read(n)).get("__metadata__", {}).get("meta", "{}"))
            if isinstance(meta.get("config"), dict):
                cfg = dict(meta["config"])
                if meta.get("class") in ("MOVQDecoder3D", "NewDecoder3D"):
                    cfg["class"] = meta["class"]
                configs[f[:-12]] = json.dumps(cfg)
for name, text in sorted(configs.items()):
    put("config_json", name, text)
tiny = {"ch": 32, "out_ch": 3, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8], "resolution": 16, "z_channels": 4}
put("config_json", "tiny", json.dumps(tiny))
put("config_json", "newdec", json.dumps({**tiny, "class": "NewDecoder3D", "post_quant_conv": True, "zq_ch": 6, "add_conv": True}))
put("config_json", "cogvideox", json.dumps({**tiny, "class": "CogVideoXDecoder3D", "pad_mode": "constant", "temporal_compress_times": 2}))
put("config_json", "huge", json.dumps({**tiny, "ch": 1 << 40, "ch_mult": [1 << 30] * 3}))
put("config_json", "empty_mult", json.dumps({**tiny, "ch_mult": []}))
put("config_json", "tct3", json.dumps({**tiny, "temporal_compress_times": 3}))

for i in range(24):
    put("decode_tiny", "%02d" % i, bytes([i % 4]) + bytes(random.randrange(256) for _ in range(random.choice([64, 256, 1024, 4096]))))
print("wrote seeds to", os.path.normpath(root))
