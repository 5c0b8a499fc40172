"""movq's errors as Python exceptions: the class per variant, the engine's message, and the
bindings' own refusals (dtype, layout, device, arguments)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import movq
from conftest import GOLDEN_IGNORE, read_golden


def test_hierarchy():
    for cls in (
        movq.CheckpointError,
        movq.ConfigError,
        movq.LatentError,
        movq.ResourceError,
        movq.MovqIOError,
        movq.UnsupportedError,
    ):
        assert issubclass(cls, movq.MovqError)
    assert issubclass(movq.LatentError, ValueError)
    assert issubclass(movq.MovqIOError, OSError)
    assert issubclass(movq.ResourceError, MemoryError)


def test_latent_errors_carry_movq_messages(movq_golden):
    dec, z, _ = movq_golden
    bad = np.zeros((1, 5, 3, 4, 4), np.float32)
    with pytest.raises(movq.LatentError) as e:
        dec.decode(bad)
    assert e.value.variant == "LatentChannels"
    assert str(e.value) == "latent z (1, 5, 3, 4, 4) has 5 channels, the decoder takes 8 (z_channels)"

    with pytest.raises(movq.LatentError) as e:
        dec.decode(z[0])
    assert e.value.variant == "LatentRank"
    assert str(e.value) == (
        f"<array>: latent `array` has shape {list(z[0].shape)}; expected rank 5 (b, c, t, h, w)"
    )

    with pytest.raises(movq.LatentError) as e:
        dec.decode(z[:, :, :0])
    assert e.value.variant == "EmptyLatent"


def test_nonfinite_latent_is_refused_or_warned(movq_golden):
    dec, z, _ = movq_golden
    z = z.copy()
    z[0, 1, 0, 2, 3] = np.nan
    z[1, 0, 0, 0, 0] = np.inf
    with pytest.raises(movq.LatentError) as e:
        dec.decode(z)
    assert e.value.variant == "NonFiniteLatent"
    assert str(e.value) == (
        "<array>: the latent has 2 NaN or infinite values (first at (b, c, t, h, w) = (0, 1, 0, 2, 3))"
    )
    # Let in, the NaN reaches the output, which is refused in turn (NonFiniteOutputError)
    # unless the decoder allows non-finite output too.
    with pytest.warns(RuntimeWarning, match="decoding anyway"):
        with pytest.raises(movq.NonFiniteOutputError, match="the latent itself holds 2 non-finite"):
            dec.decode(z, allow_nonfinite=True)
    path, _, _ = read_golden("movq_batch2_h4w6_t4")
    lenient = movq.Decoder(path, ignore=GOLDEN_IGNORE, threads=2, allow_nonfinite_output=True)
    with pytest.warns(RuntimeWarning, match="decoding anyway"):
        y = lenient.decode(z, allow_nonfinite=True)
    assert np.isnan(y).any()


def test_unsupported_dtypes_layouts_and_arguments(movq_golden):
    dec, z, _ = movq_golden
    for bad in (z.astype(np.int64), z.astype(np.complex64)):
        with pytest.raises(movq.LatentError, match=f"dtype {bad.dtype}; movq takes float32"):
            dec.decode(bad)
    with pytest.raises(movq.LatentError, match="builtins.list; pass a numpy array"):
        dec.decode(z.tolist())
    with pytest.raises(movq.LatentError, match="unknown latent layout"):
        dec.decode(z, layout="bthwc")
    with pytest.raises(movq.ConfigError, match="unknown decode mode"):
        dec.decode(z, mode="fast")
    with pytest.raises(movq.ConfigError, match="use mode \"tiled\""):
        dec.decode(z, mode="whole", tile=((2, 2), (1, 1), (4, 4), (12, 12)))
    with pytest.raises(movq.ConfigError) as e:
        dec.decode(z, tile=((2, 2), (0, 1), (4, 4), (12, 12)))
    assert e.value.variant == "InvalidConfig" and "zero size" in str(e.value)
    with pytest.raises(movq.ConfigError, match="precision"):
        movq.Decoder(dec.paths[0], ignore=GOLDEN_IGNORE, precision="f16")
    with pytest.raises(movq.ConfigError, match="threads=0"):
        movq.Decoder(dec.paths[0], ignore=GOLDEN_IGNORE, threads=0)


def test_torch_dtype_and_device():
    torch = pytest.importorskip("torch")
    path, t, _ = read_golden("movq_single_frame_t1")
    dec = movq.Decoder(path, ignore=GOLDEN_IGNORE, threads=1)
    with pytest.raises(movq.LatentError, match="dtype torch.int32"):
        dec.decode(torch.zeros(1, 8, 1, 8, 8, dtype=torch.int32))
    with pytest.raises(movq.LatentError, match="is on meta"):
        dec.decode(torch.zeros(1, 8, 1, 8, 8, device="meta"))


def test_memory_budget(movq_golden):
    dec, z, _ = movq_golden
    with pytest.raises(movq.ResourceError) as e:
        dec.decode(z, max_memory=1e-6)
    assert e.value.variant == "OverMemoryBudget"
    assert str(e.value).startswith("this decode needs about")


def test_checkpoint_errors(tmp_path):
    path, _, _ = read_golden("movq_single_frame_t1")
    with pytest.raises(movq.MovqIOError) as e:
        movq.Decoder(tmp_path / "missing.safetensors")
    assert e.value.variant == "Io" and isinstance(e.value, OSError)
    cut = tmp_path / "cut.safetensors"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(movq.CheckpointError) as e:
        movq.Decoder(cut)
    assert e.value.variant == "Truncated"
    assert str(e.value).startswith(f"{cut}: truncated file:")
    # A golden file is its own checkpoint: its input/output tensors are not weights ...
    whole = tmp_path / "golden.safetensors"
    shutil.copy(path, whole)
    movq.Decoder(whole, threads=1)
    # ... but loading stays strict: any other tensor the model does not use is an error.
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(path), "np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    tensors["extra.weight"] = np.zeros(3, np.float32)
    extra = tmp_path / "extra.safetensors"
    save_file(tensors, str(extra), metadata=metadata)
    with pytest.raises(movq.CheckpointError) as e:
        movq.Decoder(extra)
    assert e.value.variant == "UnexpectedWeight" and "extra.weight" in str(e.value)


@pytest.mark.parametrize("var,value", [("MOVQ_ISA", "avx-512"), ("MOVQ_CONV", "winograd6")])
def test_unknown_env_values_are_config_errors(var, value):
    # The variables are read once per process: a fresh interpreter with the bad value set.
    import os
    import subprocess
    import sys

    path, t, _ = read_golden("movq_single_frame_t1")
    code = (
        "import sys, numpy as np, movq\n"
        f"dec = movq.Decoder({str(path)!r}, ignore={GOLDEN_IGNORE!r}, threads=1)\n"
        "try:\n"
        f"    dec.decode(np.zeros({tuple(t['input.z'].shape)!r}, np.float32))\n"
        "except movq.ConfigError as e:\n"
        "    print(e.variant, e)\n"
        "    sys.exit(0)\n"
        "sys.exit('decoded despite the bad value')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MOVQ_ISA", "MOVQ_CONV")}
    env[var] = value
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("InvalidEnv ") and f"{var}=" in r.stdout and "is not one of" in r.stdout, r.stdout
