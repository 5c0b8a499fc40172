"""Golden cases through Python: every whole-decoder case of ../shared/golden decoded by
movq.Decoder in f32 and f64 and compared with the PyTorch float64 reference, by the rule of
shared/golden/README.md (f32: at most 4x PyTorch float32's own error; f64: rel-L2 < 1e-12)."""

from __future__ import annotations

import numpy as np
import pytest

import movq
from conftest import GOLDEN_IGNORE, read_golden

# (case, decode mode): `module(z)` / `vae.decoder(z)` are whole-clip calls, `vae.decode(z)` the
# frame-batched one.
CASES = [
    ("movq_first_tct4_attn16", "whole"),
    ("newdec_postquant_addconv_zq12", "whole"),
    ("movq_constant_tct2", "whole"),
    ("movq_single_frame_t1", "whole"),
    ("movq_batch2_h4w6_t4", "whole"),
    ("movq_noresampconv", "whole"),
    ("movq_give_pre_end", "whole"),
    ("diffusers_decoder_whole_t3", "whole"),
    ("diffusers_vae_decode_t4", "chunked"),
]


def errors(y: np.ndarray, r: np.ndarray):
    d = y.astype(np.float64) - r
    return float(np.abs(d).max()), float(np.linalg.norm(d) / np.linalg.norm(r))


@pytest.mark.parametrize("name,mode", CASES)
@pytest.mark.parametrize("precision", ["f32", "f64"])
def test_golden_case(name, mode, precision):
    path, t, meta = read_golden(name)
    dec = movq.Decoder(path, ignore=GOLDEN_IGNORE, precision=precision, threads=2)
    y = dec.decode(t["input.z"], mode=mode)
    r = t["output.f64"]
    assert y.shape == r.shape
    assert y.dtype == (np.float32 if precision == "f32" else np.float64)
    max_abs, rel_l2 = errors(y, r)
    if precision == "f64":
        assert rel_l2 < 1e-12, f"{name} f64: rel_l2 {rel_l2:.3e}"
        return
    absmax = meta["output_f64_absmax"]
    lim_rel = 4 * max(meta["f32_rel_l2_err"], 1e-7)
    lim_abs = 4 * max(meta["f32_max_abs_err"], 1e-7 * max(1.0, absmax))
    assert rel_l2 <= lim_rel and max_abs <= lim_abs, (
        f"{name} f32: max_abs {max_abs:.3e} (limit {lim_abs:.3e}), rel_l2 {rel_l2:.3e} "
        f"(limit {lim_rel:.3e}); regenerate nothing: the references are PyTorch's"
    )


def test_bf16_emulated_is_the_decoders_own():
    """precision="bf16-emulated": a bf16-sized error against the f64 reference, and an f32
    decoder of the same process, decoding at the same time, stays at f32's error."""
    import threading

    name = "diffusers_decoder_whole_t3"
    path, t, _ = read_golden(name)
    bf = movq.Decoder(path, ignore=GOLDEN_IGNORE, precision="bf16-emulated", threads=1)
    f32 = movq.Decoder(path, ignore=GOLDEN_IGNORE, precision="f32", threads=1)
    assert (bf.precision, f32.precision) == ("bf16-emulated", "f32")
    z, r = t["input.z"], t["output.f64"]
    alone = f32.decode(z)
    out = {}

    def run(key, dec):
        out[key] = [dec.decode(z) for _ in range(2)]

    threads = [threading.Thread(target=run, args=(k, d)) for k, d in (("bf", bf), ("f32", f32))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert out["bf"][0].dtype == np.float32
    np.testing.assert_array_equal(out["bf"][0], out["bf"][1])
    for y in out["f32"]:
        np.testing.assert_array_equal(y, alone)
    rel_bf = errors(out["bf"][0], r)[1]
    rel_f32 = errors(alone, r)[1]
    assert rel_f32 < 1e-5, rel_f32
    assert 1e-3 < rel_bf < 5e-2, rel_bf


def test_bf16_mode_runs_or_names_why_not():
    """precision="bf16": where the CPU has bf16 dot products movq has a kernel for (ARM
    FEAT_BF16, x86 avx512_bf16) a bf16-sized error; elsewhere movq.UnsupportedError naming
    the missing feature and the alternative."""
    import platform

    name = "diffusers_decoder_whole_t3"
    path, t, _ = read_golden(name)
    try:
        dec = movq.Decoder(path, ignore=GOLDEN_IGNORE, precision="bf16", threads=1)
    except movq.UnsupportedError as e:
        x86 = platform.machine() in ("x86_64", "AMD64")
        assert ("avx512_bf16" if x86 else "FEAT_BF16") in str(e), str(e)
        assert "bf16-emulated" in str(e), str(e)
        return
    assert dec.precision == "bf16"
    z, r = t["input.z"], t["output.f64"]
    y = dec.decode(z).astype(np.float64)
    rel = float(np.linalg.norm(y - r) / np.linalg.norm(r))
    assert 1e-4 < rel < 5e-2, rel
