"""kernels/gluon_attention.py: the rotated-copies loop in Gluon, softmax overlapped with p.v.

Gluon has no interpreter: on CPU these compile it for sm_90 and read the compiled code (the
overlap is there, no spills); its numbers are checked only on a Hopper GPU.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sama_rt.kernels import anchor_attention_ref
from sama_rt.kernels.gluon_attention import (
    GLUON_CONFIGS,
    GLUON_FP8_CONFIGS,
    GluonConfig,
    launch_gluon_attention,
    parse_gluon_config,
)

from .test_anchor_attention import ATOL, _explicit_attention, _inputs

ROOT = Path(__file__).resolve().parents[2]

on_hopper = pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)),
    reason="Gluon kernels run only compiled, here for Hopper (warpgroup MMA, TMA): needs an sm_90 GPU",
)

_COMPILE = """
import json, re, sys
sys.path.insert(0, "benchmarks")
from kernel_sass import sass_stats
from sama_rt.kernels.gluon_attention import GLUON_CONFIGS, GLUON_FP8_CONFIGS, compile_gluon_attention
lazy = tuple(c for c in GLUON_CONFIGS if c.endswith(" lazy"))
for fp8, configs in ((False, GLUON_CONFIGS[:2] + lazy), (True, GLUON_FP8_CONFIGS)):
    for config in configs:
        compiled = compile_gluon_attention(config, fp8=fp8)
        waits = re.findall(r"wgmma.wait_group.sync.aligned\\s+(\\d+)", compiled.asm["ptx"])
        print(json.dumps({"config": config, "fp8": fp8, "waits": waits, "shared": compiled.metadata.shared,
                          **sass_stats(compiled.asm["cubin"])}))
"""


def test_compiles_for_hopper_with_the_softmax_overlapped():
    """Compiled for sm_90 (no GPU needed; in a fresh process, since nothing compiles under
    TRITON_INTERPRET=1): warpgroup MMAs, no register spills, within Hopper's 227 KiB of
    shared memory, and a wait that leaves one MMA group in flight (the loop waits for the
    q.k alone and runs its softmax while the p.v computes); the other waits are the first
    tile's, the loop's end and the last p.v (in whatever order the compiler lays the loop's
    blocks out in the text). The FP8 form's configs alike, with e4m3 MMAs (QGMMA). The
    " lazy" configs keep the accumulators' rescale in a branch off the common path."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _COMPILE], capture_output=True, text=True, env=env, timeout=900,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    lazy = [c for c in GLUON_CONFIGS if c.endswith(" lazy")]
    assert lazy and [r["config"] for r in rows] == list(GLUON_CONFIGS[:2]) + lazy + list(GLUON_FP8_CONFIGS)
    for r in rows:
        assert r["tensor_core"].startswith("QGMMA" if r["fp8"] else "HGMMA"), r
        assert r["spill_instructions"] == 0 and r["shared"] <= 227 * 1024, r
        assert sorted(r["waits"]) == ["0", "0", "0", "1"], r
        # the accumulators' rescale off the loop's common path only where it is lazy
        assert (r["hot_path"]["FMUL"] <= 4) == r["config"].endswith(" lazy"), r


def test_config_names():
    assert parse_gluon_config("128x64 w8 s2") == GluonConfig(128, 64, 8, 2, lazy_rescale=False)
    assert parse_gluon_config("128x64 w8 s2 lazy") == GluonConfig(128, 64, 8, 2, lazy_rescale=True)
    with pytest.raises(ValueError, match="rescales at every tile"):
        parse_gluon_config("128x64 w8 s2 lazy", fp8=True)
    for config in GLUON_CONFIGS:
        parse_gluon_config(config)
    with pytest.raises(ValueError, match="not a Gluon attention config"):
        parse_gluon_config("128x64 w8")
    with pytest.raises(ValueError, match="multiple of 16"):
        parse_gluon_config("64x64 w8 s2")  # 8 warps of 16 rows need 128
    for config in GLUON_FP8_CONFIGS:
        parse_gluon_config(config, fp8=True)
    with pytest.raises(ValueError, match="32, 64 or 128 keys"):
        parse_gluon_config("128x16 w8 s2", fp8=True)  # e4m3 products reduce over >= 32 keys


# The cases and checks of the GPU tests, shared with tests/kernels/test_gluon_ws_attention.py
# (the warp-specialised form): each takes the kernel's launcher.
REFERENCE_CASES = [
    pytest.param(1, 2, 3, 2, 1, 1, torch.bfloat16, id="N6-A2-bf16"),  # one key tile, partial: no loop iteration
    pytest.param(2, 5, 7, 65, 1, 2, torch.bfloat16, id="N70-A65-bf16"),  # a partial last key tile
    pytest.param(2, 6, 8, 0, 2, 1, torch.bfloat16, id="N96-A0-B2-bf16"),  # full tiles, no anchors
    pytest.param(3, 9, 10, 1, 1, 2, torch.float16, id="N270-A1-fp16"),  # several tiles of every config
]
FP8_CASES = [
    pytest.param(2, 5, 7, 65, 1, 2, torch.bfloat16, id="N70-A65-bf16"),  # a partial last key tile
    pytest.param(3, 9, 10, 1, 2, 1, torch.float16, id="N270-A1-B2-fp16"),  # several tiles and key scales
]


def check_matches_the_reference(launch, config, frames, height, width, num_anchor, batch, heads, dtype):
    """The tolerance rule of the other kernel tests: error vs the float32 reference within twice
    torch's in the same dtype, plus a small atol."""
    q, k, v, cos, sin = _inputs(frames, height, width, num_anchor, batch, heads, 128, dtype, seed=21)
    q, k, v, cos, sin = (t.cuda() for t in (q, k, v, cos, sin))
    got = launch(q, k, v, cos, sin, num_anchor, 128**-0.5, config)
    want = anchor_attention_ref(q.float(), k.float(), v.float(), cos, sin, num_anchor)
    torch_err = (_explicit_attention(q, k, v, cos, sin, num_anchor).float() - want).abs().max().item()
    assert got.shape == q.shape and got.dtype == dtype
    assert (got.float() - want).abs().max().item() <= 2 * torch_err + ATOL[dtype]


def check_lazy_rescaling_follows_maxima_that_keep_growing(launch, config):
    """Keys whose magnitude grows along the sequence make the rows' maxima grow past the
    slack again and again (the rescale branch taken late) and by less in between: the
    tolerance rule still holds (as for the Triton loops, tests/kernels/test_rotated_copies.py)."""
    q, k, v, cos, sin = _inputs(3, 9, 10, 3, 1, 2, 128, torch.bfloat16, seed=23)
    ramp = torch.linspace(0.2, 4.0, k.shape[1], device=k.device)[None, :, None, None]
    k, q = (k.float() * ramp).bfloat16(), (q.float() * 2).bfloat16()
    q, k, v, cos, sin = (t.cuda() for t in (q, k, v, cos, sin))
    got = launch(q, k, v, cos, sin, 3, 128**-0.5, config)
    want = anchor_attention_ref(q.float(), k.float(), v.float(), cos, sin, 3)
    torch_err = (_explicit_attention(q, k, v, cos, sin, 3).float() - want).abs().max().item()
    assert (got.float() - want).abs().max().item() <= 2 * torch_err + ATOL[torch.bfloat16]


def check_fp8_matches_the_triton_fp8_loop(launch, config, frames, height, width, num_anchor, batch, heads, dtype):
    """The FP8 form: within the e4m3 bound of the other FP8 tests (2**-4 max|v|), and the same
    quantized operands as kernels/fp8_copies.py's Triton loop, so within a quarter of that
    bound of its output: the two differ only in summation order, and so in which way some p
    round to e4m3 (a wrong layout or scale is off by the whole bound or more)."""
    from sama_rt.kernels import anchor_attention

    q, k, v, cos, sin = _inputs(frames, height, width, num_anchor, batch, heads, 128, dtype, seed=22)
    q, k, v, cos, sin = (t.cuda() for t in (q, k, v, cos, sin))
    got = launch(q, k, v, cos, sin, num_anchor, 128**-0.5, config, fp8=True)
    want = anchor_attention_ref(q.float(), k.float(), v.float(), cos, sin, num_anchor)
    bound = 2**-4 * v.abs().max().item()
    assert got.shape == q.shape and got.dtype == dtype
    assert (got.float() - want).abs().max().item() <= bound
    triton_fp8 = anchor_attention(q, k, v, cos, sin, num_anchor, precision="fp8", keys="copies")
    assert (got.float() - triton_fp8.float()).abs().max().item() <= bound / 4


@on_hopper
@pytest.mark.parametrize("config", GLUON_CONFIGS)
@pytest.mark.parametrize("frames,height,width,num_anchor,batch,heads,dtype", REFERENCE_CASES)
def test_matches_the_reference(config, frames, height, width, num_anchor, batch, heads, dtype):
    check_matches_the_reference(launch_gluon_attention, config, frames, height, width, num_anchor, batch, heads,
                                dtype)


@on_hopper
@pytest.mark.parametrize("config", [c for c in GLUON_CONFIGS if c.endswith(" lazy")])
def test_lazy_rescaling_follows_maxima_that_keep_growing(config):
    check_lazy_rescaling_follows_maxima_that_keep_growing(launch_gluon_attention, config)


@on_hopper
@pytest.mark.parametrize("config", GLUON_FP8_CONFIGS)
@pytest.mark.parametrize("frames,height,width,num_anchor,batch,heads,dtype", FP8_CASES)
def test_fp8_matches_the_triton_fp8_loop(config, frames, height, width, num_anchor, batch, heads, dtype):
    check_fp8_matches_the_triton_fp8_loop(launch_gluon_attention, config, frames, height, width, num_anchor, batch,
                                          heads, dtype)


def test_16_bit_inputs_only():
    q, k, v, cos, sin = _inputs(1, 3, 5, 1, 1, 1, 128, torch.float32)
    with pytest.raises(ValueError, match="16-bit inputs"):
        launch_gluon_attention(q, k, v, cos, sin, 1, 128**-0.5)


def test_reached_through_anchor_attention_only_where_it_can_run():
    """`anchor_attention(..., keys="copies", language="gluon")` is the public way in: a clear
    error off Hopper (no interpreter) and for the variants the Gluon kernel does not have."""
    from sama_rt.kernels import anchor_attention

    q, k, v, cos, sin = _inputs(1, 3, 5, 1, 1, 1, 128, torch.float16)
    if not (torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)):
        with pytest.raises(ValueError, match="runs only compiled, for a Hopper GPU"):
            anchor_attention(q, k, v, cos, sin, 1, keys="copies", language="gluon")
    with pytest.raises(ValueError, match=r"keys='copies' \(native or fp8\)"):
        anchor_attention(q, k, v, cos, sin, 1, keys="once", language="gluon")
    with pytest.raises(ValueError, match=r"keys='copies' \(native or fp8\)"):
        anchor_attention(q, k, v, cos, sin, 1, precision="fp8", keys="in-loop", language="gluon")
    with pytest.raises(ValueError, match="valid: triton, gluon, gluon-ws"):
        anchor_attention(q, k, v, cos, sin, 1, language="cuda")
