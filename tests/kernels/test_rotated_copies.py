"""kernels/rotated_copies.py: the keys-once flat loop alone, over rotated copies of q and k
and a copy of v.

Interpreted on CPU, compiled on a Hopper GPU (these check the arithmetic); and compiled ahead
of time for sm_90 on any machine to check the shape that Triton warp-specialises (off: wrong on
the H100, see the module).
"""
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sama_rt.kernels import anchor_attention_ref
from sama_rt.kernels.rotated_copies import value_copy

from .test_anchor_attention import ATOL, CASES, INTERPRETED, _explicit_attention, _inputs

kernel_module = importlib.import_module("sama_rt.kernels.anchor_attention")

needs_kernel = pytest.mark.skipif(
    not INTERPRETED and not (torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)),
    reason="needs TRITON_INTERPRET=1 or a Hopper GPU (tensor-memory-accelerator loads)",
)


def _run(q, k, v, cos, sin, num_anchor, config_name):
    head_dim = q.shape[-1]
    return kernel_module._launch(q, k, v, cos, sin, num_anchor, head_dim**-0.5,
                                 kernel_module.AttentionPrecision.NATIVE, keys=kernel_module.KeyRotation.ONCE,
                                 config=kernel_module.parse_config_name(config_name))


@needs_kernel
@pytest.mark.parametrize("frames,height,width,num_anchor,batch,heads,head_dim,dtype",
                         [c for c in CASES if c.values[6] == 128])
def test_matches_the_reference(frames, height, width, num_anchor, batch, heads, head_dim, dtype):
    """One loop over all 2N keys with the tail masked in every tile, q rotated by the pre-pass
    and rounded to the input dtype before its dot (as SDPA on pre-rotated q sees it): the
    tolerance rule of the other kernel tests. 16-key tiles cross the source/target boundary
    and the end of the copies (N = 18 or 70)."""
    q, k, v, cos, sin = _inputs(frames, height, width, num_anchor, batch, heads, head_dim, dtype, seed=11)
    config = "16x16 w4 s1 split flat tma copies" if INTERPRETED else "128x64 w4 s2 split flat tma copies"
    got = _run(q, k, v, cos, sin, num_anchor, config)
    want = anchor_attention_ref(q.float(), k.float(), v.float(), cos, sin, num_anchor)
    torch_err = (_explicit_attention(q, k, v, cos, sin, num_anchor).float() - want).abs().max().item()
    assert got.shape == q.shape and got.dtype == dtype
    assert (got.float() - want).abs().max().item() <= 2 * torch_err + ATOL[dtype]


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lazy_rescaling_follows_maxima_that_keep_growing(dtype):
    """The loop rescales its accumulators only when a row's maximum has grown by more than
    RESCALE_SLACK (log2 units) since the last rescale. Keys whose magnitude grows along the
    sequence make the maxima grow past that again and again (with 16-key tiles, the rescale
    branch is taken in 6-9 of the 9 tiles of each query tile, late ones included), and tiles
    in between grow them by less (the branch skipped): the output must still meet the
    tolerance rule. (16-bit inputs: with logits this large, float32's own error passes the
    fp32 atol whether the loop rescales lazily or at every tile.)"""
    q, k, v, cos, sin = _inputs(2, 5, 7, 3, 1, 2, 128, dtype, seed=13)
    ramp = torch.linspace(0.2, 4.0, k.shape[1], device=k.device)[None, :, None, None]
    k = (k.float() * ramp).to(dtype)
    q = (q.float() * 2).to(dtype)
    config = "16x16 w4 s1 split flat tma copies" if INTERPRETED else "128x64 w4 s2 split flat tma copies"
    got = _run(q, k, v, cos, sin, 3, config)
    want = anchor_attention_ref(q.float(), k.float(), v.float(), cos, sin, 3)
    torch_err = (_explicit_attention(q, k, v, cos, sin, 3).float() - want).abs().max().item()
    assert (got.float() - want).abs().max().item() <= 2 * torch_err + ATOL[dtype]


@needs_kernel
def test_anchor_queries_get_the_mean_of_v():
    q, k, v, cos, sin = _inputs(2, 3, 3, 65, 2, 2, 128, torch.float32, seed=12)
    got = _run(q, k, v, cos, sin, 65, "16x16 w4 s1 split flat tma copies" if INTERPRETED else
               "128x64 w4 s2 split flat tma copies")
    torch.testing.assert_close(got[:, 18:18 + 65], v.mean(dim=1, keepdim=True).expand(-1, 65, -1, -1))


def test_value_copy_is_one_contiguous_sequence_per_head():
    """Source rows then target rows, no anchors, [B * heads, 2N, D] and contiguous, with
    batch 1 too (where a reshape of a transposed tensor returns a strided view)."""
    v = torch.randn(1, 2 * 5 + 3, 2, 8)
    copy = value_copy(v, 5, 3)
    assert copy.shape == (2, 10, 8) and copy.is_contiguous()
    torch.testing.assert_close(copy[1], torch.cat([v[0, :5, 1], v[0, 8:, 1]]))


def test_configs_name_and_need_the_tma_loop():
    for config in kernel_module.ROTATED_COPIES_CONFIGS:
        name = kernel_module.config_name(config)
        assert name.endswith(" flat tma copies") and kernel_module.parse_config_name(name).kwargs == config.kwargs
    q, k, v, cos, sin = _inputs(1, 3, 5, 1, 1, 1, 48, torch.float32)
    with pytest.raises(ValueError, match="form of the TMA loop"):
        _run(q, k, v, cos, sin, 1, "16x16 w4 s1 split flat copies")
    q, k, v, cos, sin = _inputs(1, 3, 5, 1, 1, 1, 48, torch.float32)
    with pytest.raises(ValueError, match="power-of-two head_dim"):
        _run(q, k, v, cos, sin, 1, "16x16 w4 s1 split flat tma copies")


_COMPILE = """
from sama_rt.kernels.rotated_copies import compile_rotated_copies
for ws in (True, False):
    compiled = compile_rotated_copies(128, 128, 4, 2, warp_specialize=ws)
    print(ws, compiled.metadata.num_warps, compiled.metadata.shared)
"""


_COMPILE_PLAIN = """
import json, sys
sys.path.insert(0, "benchmarks")
from kernel_sass import sass_stats
from sama_rt.kernels.anchor_attention import ROTATED_COPIES_CONFIGS
from sama_rt.kernels.rotated_copies import compile_rotated_copies
for c in ROTATED_COPIES_CONFIGS:
    compiled = compile_rotated_copies(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)
    print(json.dumps(sass_stats(compiled.asm["cubin"])))
"""


def test_plain_loop_leaves_mask_and_rescale_off_its_common_path():
    """Compiled for sm_90 (a fresh process: nothing compiles under TRITON_INTERPRET=1), every
    listed config: no spills, and the loop's common path has neither the key mask (FSEL: only
    the tail tile masks) nor the accumulator rescale (FMUL: lazy, in a branch); the logit
    scale rides in the exp2's multiply-add (FFMA)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _COMPILE_PLAIN], capture_output=True, text=True, env=env,
                          timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == len(kernel_module.ROTATED_COPIES_CONFIGS)
    for r in rows:
        assert r["spill_instructions"] == 0, r
        assert r["hot_path"]["FSEL"] == 0 and r["hot_path"]["FMUL"] == 0 and r["hot_path"]["FFMA"] > 0, r
        assert r["hot_path_instructions"] < r["loop_instructions"], r


def test_triton_warp_specialises_it_for_hopper():
    """Compiled for sm_90 (no GPU needed), the loop marked warp_specialize becomes a producer
    and two consumer warpgroups: 4 warps in, 12 out, within Hopper's 227 KiB of shared
    memory; unmarked (the default), it stays 4 warps. (In a fresh process: under
    TRITON_INTERPRET=1 the kernels here cannot be compiled.)"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _COMPILE], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line.split() for line in done.stdout.splitlines()]
    assert [(ws, warps) for ws, warps, _ in lines] == [("True", "12"), ("False", "4")]
    assert all(int(shared) <= 227 * 1024 for _, _, shared in lines)
