"""kernels/fp8_copies.py: the FP8 loop over e4m3 copies of the rotated q and k and of v.

Interpreted on CPU (e4m3 dots work in Triton's interpreter), compiled on a Hopper GPU; and
compiled ahead of time for sm_90 on any machine, to read what the loop became.
"""
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sama_rt.kernels import anchor_attention, anchor_attention_ref, rope_tables
from sama_rt.kernels.fp8_copies import QUANTIZE_BLOCK, fp8_copies
from sama_rt.models.rope import apply_rope, sequence_rope_tables

from .test_anchor_attention import DEVICE, INTERPRETED, _inputs

kernel_module = importlib.import_module("sama_rt.kernels.anchor_attention")
ROOT = Path(__file__).resolve().parents[2]
LOG2E = 1.4426950408889634

needs_kernel = pytest.mark.skipif(
    not INTERPRETED and not (torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)),
    reason="needs TRITON_INTERPRET=1 or a Hopper GPU (tensor-memory-accelerator loads, e4m3 dots)",
)


def _fp8_copies(q, k, v, cos, sin, num_anchor, config=None):
    return kernel_module._launch(q, k, v, cos, sin, num_anchor, q.shape[-1]**-0.5, kernel_module.AttentionPrecision.FP8,
                                 keys=kernel_module.KeyRotation.COPIES,
                                 config=None if config is None else kernel_module.parse_config_name(config))


@needs_kernel
@pytest.mark.parametrize("frames,height,width,num_anchor,batch,dtype", [
    pytest.param(2, 3, 3, 65, 2, torch.float16, id="N18-A65-B2-fp16"),
    pytest.param(2, 5, 7, 0, 1, torch.float32, id="N70-A0-fp32"),  # partial last key tile
    pytest.param(1, 3, 5, 1, 2, torch.bfloat16, id="N15-A1-B2-bf16"),  # odd N
    pytest.param(3, 5, 9, 2, 1, torch.bfloat16, id="N135-A2-bf16"),  # 3 key-scale blocks of the copy
])
def test_error_within_e4m3_rounding_and_really_quantized(frames, height, width, num_anchor, batch, dtype):
    """The bound of the in-loop FP8 kernel's test: e4m3 keeps 3 mantissa bits, so every
    operand of q.k and p.v carries up to 2**-4 relative error and each output, a weighted mean
    of v rows, stays within one such rounding of max|v|. And it must really be quantized: well
    above the native kernel's error. Its rms error is that of the in-loop FP8 kernel's to
    within a third (same roundings; the key scales here are per 128 rows of the rotated
    copy, there per 128 positions from a bound), not some other approximation."""
    q, k, v, cos, sin = _inputs(frames, height, width, num_anchor, batch, 2, 128, dtype, seed=16)
    oracle = anchor_attention_ref(q.float(), k.float(), v.float(), cos, sin, num_anchor).float()
    out = _fp8_copies(q, k, v, cos, sin, num_anchor)
    assert out.shape == q.shape and out.dtype == dtype
    err = (out.float() - oracle).abs().max().item()
    assert err <= 2**-4 * v.abs().max().item(), err
    native_err = (anchor_attention(q, k, v, cos, sin, num_anchor).float() - oracle).abs().max().item()
    assert err > 4 * native_err
    in_loop = anchor_attention(q, k, v, cos, sin, num_anchor, precision="fp8").float()
    rms, in_loop_rms = ((x - oracle).pow(2).mean().sqrt().item() for x in (out.float(), in_loop))
    assert rms <= 4 / 3 * in_loop_rms, (rms, in_loop_rms)


@needs_kernel
def test_lazy_rescaling_keeps_p_within_e4m3():
    """The loop moves its reference maximum (and rescales) only when a row's maximum has
    doubled since the last move; p is taken at 224 p so that it reaches at most 448. Keys
    whose magnitude grows along the sequence make the maxima grow past that again and again,
    and by less in between. The logits grow large here, and e4m3's relative rounding of q and
    k becomes an absolute error in them, so neither FP8 kernel stays within the 2**-4 max|v|
    of the other tests (both ~0.3 against 0.24): the copies kernel must match the in-loop FP8
    kernel's error, which rescales at every tile, to within a third (max and rms)."""
    q, k, v, cos, sin = _inputs(2, 5, 7, 3, 1, 2, 128, torch.float16, seed=20)
    ramp = torch.linspace(0.2, 4.0, k.shape[1], device=k.device)[None, :, None, None]
    k = (k.float() * ramp).half()
    oracle = anchor_attention_ref(q.float(), k.float(), v.float(), cos, sin, 3).float()
    out = _fp8_copies(q, k, v, cos, sin, 3).float()
    in_loop = anchor_attention(q, k, v, cos, sin, 3, precision="fp8").float()
    for measure in (lambda x: (x - oracle).abs().max().item(), lambda x: (x - oracle).pow(2).mean().sqrt().item()):
        assert measure(out) <= 4 / 3 * measure(in_loop), (measure(out), measure(in_loop))


@needs_kernel
def test_strided_views_of_a_fused_qkv_tensor():
    """q, k, v sliced out of one [B, L, 3, heads, D] projection: the pre-passes read the
    strided rows and write the same copies as from contiguous tensors, so the outputs match
    bit for bit."""
    num_anchor, heads = 2, 2
    seq_len = 2 * 15 + num_anchor
    qkv = torch.randn(2, seq_len, 3, heads, 128, generator=torch.Generator().manual_seed(19)).to(DEVICE,
                                                                                                torch.float16)
    q, k, v = qkv.unbind(2)
    assert not q.is_contiguous()
    cos, sin = rope_tables(1, 3, 5, 128, device=DEVICE)
    out = _fp8_copies(q, k, v, cos, sin, num_anchor)
    assert torch.equal(out, _fp8_copies(q.contiguous(), k.contiguous(), v.contiguous(), cos, sin, num_anchor))


@needs_kernel
def test_anchor_queries_get_the_mean_of_v():
    q, k, v, cos, sin = _inputs(2, 3, 3, 65, 2, 2, 128, torch.float32, seed=17)
    got = _fp8_copies(q, k, v, cos, sin, 65)
    torch.testing.assert_close(got[:, 18:18 + 65], v.mean(dim=1, keepdim=True).expand(-1, 65, -1, -1))


@needs_kernel
def test_pre_passes_quantize_rotated_rows_with_their_own_scales():
    """q: per row, the softmax scale times log2(e) folded in; k: per 128 rows of the rotated
    copy; v: per channel, transposed, rows padded to 16 bytes. Each scale maps its largest
    |value| onto 448, every value is its e4m3 rounding, and the anchor rows take no part."""
    num_anchor, scale = 3, 128**-0.5
    q, k, v, cos, sin = _inputs(3, 5, 9, num_anchor, 2, 1, 128, torch.float32, seed=18)
    num_video = cos.shape[0]  # 135 positions: 270 rows of the copy, key-scale blocks of 128, 128, 14
    k = k * torch.logspace(-2, 1, k.shape[1], device=k.device)[None, :, None, None]  # magnitudes vary
    for t in (q, k, v):
        t[:, num_video:num_video + num_anchor] = 1e4  # anchors must not reach any scale
    (q8, k8, vt8), (q_scale, k_scale, v_scale), keys_pad = fp8_copies(q, k, v, cos, sin, num_anchor, scale)
    assert keys_pad == 272 and vt8.shape == (2, 128, 272) and k_scale.shape == (2, 3)

    cos_l, sin_l = sequence_rope_tables(cos, sin, num_anchor)
    video = torch.cat([torch.arange(num_video), torch.arange(num_video + num_anchor, k.shape[1])]).to(k.device)

    def copy_of(x):  # rotated video rows as [B * heads, 2N, D], [even | odd] channels
        rotated = apply_rope(x.float(), cos_l, sin_l)[:, video]
        return torch.cat([rotated[..., 0::2], rotated[..., 1::2]], dim=-1).transpose(1, 2).reshape(2, 2 * num_video, 128)

    q_want = copy_of(q) * scale * LOG2E
    torch.testing.assert_close(q_scale * 448, q_want.abs().amax(dim=-1), rtol=1e-6, atol=0)
    e4m3 = torch.float8_e4m3fn
    assert torch.equal(q8.float(), (q_want / q_scale[..., None]).clamp(-448, 448).to(e4m3).float())
    k_want = copy_of(k)
    block_max = torch.nn.functional.pad(k_want.abs().amax(dim=-1), (0, 3 * 128 - 270)).view(2, 3, 128).amax(dim=-1)
    torch.testing.assert_close(k_scale * 448, block_max, rtol=1e-6, atol=0)
    per_row = k_scale.repeat_interleave(128, dim=1)[:, :270, None]
    assert torch.equal(k8.float(), (k_want / per_row).clamp(-448, 448).to(e4m3).float())
    v_video = v.float()[:, video].transpose(1, 2).reshape(2, 2 * num_video, 128)
    torch.testing.assert_close(v_scale * 448, v_video.abs().amax(dim=1), rtol=1e-6, atol=0)
    v_want = (v_video / v_scale[:, None, :]).clamp(-448, 448).to(e4m3).float().transpose(1, 2)
    assert torch.equal(vt8[..., :270].float(), v_want)
    assert QUANTIZE_BLOCK % 16 == 0


@needs_kernel
def test_rejects_what_the_loop_cannot_take():
    q, k, v, cos, sin = _inputs(1, 3, 5, 1, 1, 1, 48, torch.float16)
    with pytest.raises(ValueError, match="power-of-two head_dim >= 32"):
        _fp8_copies(q, k, v, cos, sin, 1)
    q, k, v, cos, sin = _inputs(1, 3, 5, 1, 1, 1, 128, torch.float16)
    with pytest.raises(ValueError, match="key tile must be 32, 64 or 128 keys"):
        _fp8_copies(q, k, v, cos, sin, 1, config="16x16 w4 s1 split flat tma copies")


def test_configs_are_named_copies_configs_with_fp8_key_tiles():
    for config in kernel_module.FP8_COPIES_CONFIGS:
        name = kernel_module.config_name(config)
        assert name.endswith(" flat tma copies") and kernel_module.parse_config_name(name).kwargs == config.kwargs
        assert kernel_module.FP8_KEY_BLOCK.value % config.kwargs["BLOCK_N"] == 0 and config.kwargs["BLOCK_N"] >= 32


_COMPILE = """
import json, re, sys
sys.path.insert(0, "benchmarks")
from kernel_sass import sass_stats
from sama_rt.kernels.anchor_attention import FP8_COPIES_CONFIGS
from sama_rt.kernels.fp8_copies import compile_fp8_copies
for c in FP8_COPIES_CONFIGS:
    compiled = compile_fp8_copies(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)
    ptx = compiled.asm["ptx"]
    print(json.dumps({"shared": compiled.metadata.shared, "widened": len(re.findall(r"cvt\\.f32\\.(?:bf16|f16)", ptx)),
                      "to_e4m3": len(re.findall(r"cvt\\.rn\\.satfinite\\.e4m3x2\\.f32", ptx)),
                      **sass_stats(compiled.asm["cubin"])}))
"""


def test_compiles_for_hopper_to_fp8_warpgroup_mmas_without_spills():
    """Every listed config, compiled for sm_90 (no GPU needed; in a fresh process, since
    nothing compiles under TRITON_INTERPRET=1): e4m3 warpgroup MMAs (QGMMA), no register
    spills, within Hopper's 227 KiB of shared memory, no 16-bit value widened anywhere (the
    copies arrive as e4m3) and p narrowed to e4m3 with saturation. The loop's common path
    has no key mask (FSEL) and no accumulator rescale (FMUL): both live in branches."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _COMPILE], capture_output=True, text=True, env=env, timeout=900,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == len(kernel_module.FP8_COPIES_CONFIGS)
    for r in rows:
        assert r["tensor_core"].startswith("QGMMA") and "HGMMA" not in r["tensor_core"], r
        assert r["spill_instructions"] == 0 and r["shared"] <= 227 * 1024, r
        assert r["widened"] == 0 and r["to_e4m3"] > 0, r
        assert r["hot_path"]["FSEL"] == 0 and r["hot_path"]["FMUL"] <= 4, r
        assert r["hot_path_instructions"] < r["loop_instructions"], r


@needs_kernel
def test_error_benchmark_compares_both_fp8_kernels(capsys):
    """benchmarks/fp8_attention_error.py (the docs' FP8 error table): both FP8 kernels a few
    per cent of the output's rms away from the bf16 kernel, which itself is far closer to the
    float32 reference."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_fp8_attention_error", ROOT / "benchmarks/fp8_attention_error.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--frames", "1", "--height", "3", "--width", "5", "--seeds", "1", "--json"]) == 0
    rows = {(r["variant"], r["against"]): r for r in json.loads(capsys.readouterr().out)}
    native = rows[("bf16", "fp32 reference")]["rms_relative"]
    for variant in ("fp8 in-loop", "fp8 copies"):
        row = rows[(variant, "bf16 kernel")]
        assert 10 * native < row["rms_relative"] < 0.1 and 0.99 < row["cosine"] < 1, row
