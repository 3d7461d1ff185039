"""Anchor-attention Triton kernel vs plain torch.

Runs compiled on a CUDA device, otherwise in the Triton CPU interpreter (tests/conftest.py
sets TRITON_INTERPRET=1 before anything imports the kernels). Shapes are tiny: the
interpreter executes every tile op in numpy.
"""
from __future__ import annotations

import importlib
import os
import re

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from sama_rt.kernels import AttentionPrecision, anchor_attention, anchor_attention_ref, rope_tables
from sama_rt.kernels.anchor_attention import _to_e4m3
from sama_rt.models.rope import apply_rope, sequence_rope_tables

kernel_module = importlib.import_module("sama_rt.kernels.anchor_attention")
INTERPRETED = kernel_module._INTERPRETED
DEVICE = "cpu" if INTERPRETED else "cuda"

pytestmark = pytest.mark.skipif(
    not INTERPRETED and not torch.cuda.is_available(),
    reason="needs a CUDA device or TRITON_INTERPRET=1 set before sama_rt.kernels is imported",
)

# Error allowed on top of "2x plain torch's error in the same dtype": fp32 has no rounding to
# speak of in torch's path (its error is ~0), so the kernel's own fp32 summation-order error
# (~1e-6) needs room; fp16/bf16 get half an fp16 ulp at 0.5.
ATOL = {torch.float32: 1e-5, torch.float16: 1e-4, torch.bfloat16: 1e-4}


def _skip_fp8_without_support():
    if not INTERPRETED and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("float8 e4m3 needs compute capability 8.9 or newer")


def _inputs(frames, height, width, num_anchor, batch, heads, head_dim, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    num_video = frames * height * width
    seq_len = 2 * num_video + num_anchor
    q, k, v = (torch.randn(batch, seq_len, heads, head_dim, generator=gen).to(DEVICE, dtype) for _ in range(3))
    cos, sin = rope_tables(frames, height, width, head_dim, device=DEVICE)
    return q, k, v, cos, sin


def _explicit_attention(q, k, v, cos, sin, num_anchor, scale=None):
    """Attention over the WHOLE sequence (anchor keys included as real keys) with explicitly
    rotated q/k, anchor rows zeroed by the zero table rows. Computed in q's dtype."""
    cos_l, sin_l = sequence_rope_tables(cos, sin, num_anchor)
    qr, kr = apply_rope(q, cos_l, sin_l), apply_rope(k, cos_l, sin_l)
    out = F.scaled_dot_product_attention(qr.transpose(1, 2), kr.transpose(1, 2), v.transpose(1, 2), scale=scale)
    return out.transpose(1, 2)


CASES = [
    # frames, height, width, anchors, batch, heads, head_dim, dtype
    pytest.param(1, 3, 5, 0, 1, 2, 48, torch.float32, id="N15-A0-d48-fp32"),
    pytest.param(1, 3, 5, 1, 2, 1, 48, torch.float16, id="N15-A1-B2-d48-fp16"),
    pytest.param(2, 3, 3, 65, 1, 2, 128, torch.float32, id="N18-A65-d128-fp32"),
    pytest.param(2, 3, 3, 65, 2, 1, 128, torch.float16, id="N18-A65-B2-d128-fp16"),
    pytest.param(1, 3, 5, 65, 1, 1, 96, torch.float16, id="N15-A65-d96-fp16"),
    # bf16, the production dtype. The interpreter's bf16 dot is broken; the kernel then runs
    # its dots in float32 on operands rounded to bf16 (_to_dot_dtype), which is the
    # tensor-core arithmetic: so these cases check the bf16 kernel's numerics on CPU too.
    pytest.param(2, 3, 3, 1, 1, 2, 128, torch.bfloat16, id="N18-A1-d128-bf16"),
    pytest.param(1, 3, 5, 0, 2, 1, 48, torch.bfloat16, id="N15-A0-B2-d48-bf16"),
    pytest.param(2, 5, 7, 65, 1, 2, 128, torch.bfloat16, id="N70-A65-d128-bf16"),
]


@pytest.mark.parametrize("frames,height,width,num_anchor,batch,heads,head_dim,dtype", CASES)
def test_matches_reference_and_plain_sdpa(frames, height, width, num_anchor, batch, heads, head_dim, dtype):
    q, k, v, cos, sin = _inputs(frames, height, width, num_anchor, batch, heads, head_dim, dtype)
    out = anchor_attention(q, k, v, cos, sin, num_anchor)
    assert out.shape == q.shape and out.dtype == dtype

    # fp32 oracle on the same (already rounded) inputs.
    oracle = anchor_attention_ref(q.float(), k.float(), v.float(), cos, sin, num_anchor).float()
    # Plain torch in the kernel's dtype: SDPA over all L keys with explicitly rotated q/k.
    torch_same_dtype = _explicit_attention(q, k, v, cos, sin, num_anchor).float()
    kernel_err = (out.float() - oracle).abs().max().item()
    torch_err = (torch_same_dtype - oracle).abs().max().item()
    # Tolerance rule: kernel error vs an fp32 reference <= 2x plain torch's error in the same
    # dtype + a small atol (see ATOL).
    assert kernel_err <= 2 * torch_err + ATOL[dtype], (kernel_err, torch_err)
    # The reference path in the kernel's dtype must satisfy the same rule.
    ref_err = (anchor_attention_ref(q, k, v, cos, sin, num_anchor).float() - oracle).abs().max().item()
    assert ref_err <= 2 * torch_err + ATOL[dtype]


@pytest.mark.parametrize("keys", ["in-loop", "once"])
def test_lazy_rescaling_follows_maxima_that_keep_growing(keys):
    """The native loops rescale their accumulators only when a row's maximum has grown by
    more than RESCALE_SLACK since the last rescale. Keys whose magnitude grows along the
    sequence (source and target alike) make the maxima grow past that in later steps too,
    and by less in between: the tolerance rule still holds."""
    q, k, v, cos, sin = _inputs(2, 5, 7, 3, 1, 2, 48, torch.float16, seed=14)
    num_video = cos.shape[0]
    ramp = torch.linspace(0.2, 4.0, num_video, device=k.device)
    ramp = torch.cat([ramp, torch.ones(3, device=k.device), ramp])[None, :, None, None]
    k = (k.float() * ramp).half()
    q = (q.float() * 2).half()
    got = anchor_attention(q, k, v, cos, sin, 3, keys=keys)
    want = anchor_attention_ref(q.float(), k.float(), v.float(), cos, sin, 3)
    torch_err = (_explicit_attention(q, k, v, cos, sin, 3).float() - want).abs().max().item()
    assert (got.float() - want).abs().max().item() <= 2 * torch_err + ATOL[torch.float16]


def test_reference_matches_explicit_float64_softmax():
    q, k, v, cos, sin = _inputs(1, 3, 5, 3, 1, 2, 48, torch.float32, seed=1)
    cos_l, sin_l = sequence_rope_tables(cos, sin, 3)
    qr, kr = apply_rope(q, cos_l, sin_l).double(), apply_rope(k, cos_l, sin_l).double()
    logits = torch.einsum("bqhd,bkhd->bhqk", qr, kr) * 48**-0.5
    expected = torch.einsum("bhqk,bkhd->bqhd", logits.softmax(-1), v.double())
    # float32 attention vs float64: a few float32 ulps.
    torch.testing.assert_close(anchor_attention_ref(q, k, v, cos, sin, 3).double(), expected, rtol=0, atol=1e-6)


def test_anchor_rows_of_q_and_k_are_ignored():
    num_anchor = 5
    q, k, v, cos, sin = _inputs(1, 3, 5, num_anchor, 1, 2, 48, torch.float16, seed=2)
    n = cos.shape[0]
    clean = anchor_attention(q, k, v, cos, sin, num_anchor)
    q_bad, k_bad = q.clone(), k.clone()
    q_bad[:, n : n + num_anchor] = 100.0
    k_bad[:, n : n + num_anchor] = -100.0
    # The kernel never reads those rows: bit-identical output.
    assert torch.equal(anchor_attention(q_bad, k_bad, v, cos, sin, num_anchor), clean)


def test_anchor_queries_output_mean_of_all_values():
    num_anchor = 33  # more than one BLOCK_N tile of anchors in the interpreter config
    q, k, v, cos, sin = _inputs(1, 3, 3, num_anchor, 2, 2, 48, torch.float32, seed=3)
    n = cos.shape[0]
    out = anchor_attention(q, k, v, cos, sin, num_anchor)
    expected = v.mean(dim=1, keepdim=True).expand(-1, num_anchor, -1, -1)
    # A float32 mean over 51 rows: summation order only.
    torch.testing.assert_close(out[:, n : n + num_anchor], expected, rtol=0, atol=1e-6)


def test_explicit_scale():
    q, k, v, cos, sin = _inputs(1, 3, 5, 4, 1, 1, 48, torch.float32, seed=4)
    out = anchor_attention(q, k, v, cos, sin, 4, scale=0.3)
    expected = anchor_attention_ref(q, k, v, cos, sin, 4, scale=0.3)
    assert not torch.allclose(expected, anchor_attention_ref(q, k, v, cos, sin, 4), atol=1e-3)
    # fp32 kernel vs fp32 reference: summation order only.
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_strided_views_of_a_fused_qkv_tensor():
    """q, k, v sliced out of one [B, L, 3, heads, D] projection (non-contiguous rows)."""
    frames, height, width, num_anchor, heads, head_dim = 1, 3, 5, 2, 2, 48
    seq_len = 2 * frames * height * width + num_anchor
    gen = torch.Generator().manual_seed(5)
    qkv = torch.randn(1, seq_len, 3, heads, head_dim, generator=gen).to(DEVICE, torch.float16)
    q, k, v = qkv.unbind(2)
    assert not q.is_contiguous()
    cos, sin = rope_tables(frames, height, width, head_dim, device=DEVICE)
    out = anchor_attention(q, k, v, cos, sin, num_anchor)
    expected = anchor_attention(q.contiguous(), k.contiguous(), v.contiguous(), cos, sin, num_anchor)
    assert torch.equal(out, expected)


def test_rejects_inputs_that_break_the_contract():
    q, k, v, cos, sin = _inputs(1, 3, 5, 2, 1, 1, 48, torch.float32)
    with pytest.raises(ValueError, match="2 \\* N"):
        anchor_attention(q, k, v, cos, sin, 3)
    with pytest.raises(ValueError, match="cos/sin"):
        anchor_attention(q, k, v, cos[:, :8], sin[:, :8], 2)
    with pytest.raises(ValueError, match="valid: native, fp8"):
        anchor_attention(q, k, v, cos, sin, 2, precision="int4")
    with pytest.raises(ValueError, match="share one of"):
        anchor_attention(q, k.half(), v, cos, sin, 2)


@pytest.mark.parametrize("frames,height,width,num_anchor,head_dim,dtype", [
    (1, 3, 5, 1, 48, torch.float16), (2, 3, 3, 65, 128, torch.float16),
    (2, 9, 15, 65, 48, torch.float16),  # 3 key blocks
    (2, 3, 3, 65, 128, torch.bfloat16),
])
def test_fp8_error_within_e4m3_rounding(frames, height, width, num_anchor, head_dim, dtype):
    _skip_fp8_without_support()
    q, k, v, cos, sin = _inputs(frames, height, width, num_anchor, 1, 2, head_dim, dtype, seed=6)
    oracle = anchor_attention_ref(q.float(), k.float(), v.float(), cos, sin, num_anchor).float()
    out = anchor_attention(q, k, v, cos, sin, num_anchor, precision=AttentionPrecision.FP8)
    assert out.dtype == dtype
    err = (out.float() - oracle).abs().max().item()
    # e4m3 keeps 3 mantissa bits: rounding step 2**-3, so every operand of q.k and p.v carries
    # up to 2**-4 relative error. Each output is a weighted mean of v rows, so the result must
    # stay within one such rounding of the largest |v| (measured: about a quarter of it).
    assert err <= 2**-4 * v.abs().max().item(), err
    # ... and it must really be quantized (not silently the native 16-bit path).
    native_err = (anchor_attention(q, k, v, cos, sin, num_anchor).float() - oracle).abs().max().item()
    assert err > 4 * native_err


def test_fp8_scales_bound_the_rotated_keys_and_ignore_anchor_rows():
    num_anchor, block = 3, kernel_module.FP8_KEY_BLOCK.value
    q, k, v, cos, sin = _inputs(2, 9, 15, num_anchor, 2, 3, 48, torch.float32, seed=8)
    num_video = cos.shape[0]  # 270 positions: blocks of 128, 128 and a partial 14
    k = k * torch.logspace(-2, 1, k.shape[1], device=k.device)[None, :, None, None]  # magnitudes vary along the sequence
    k_scale, v_scale = kernel_module.fp8_scales(k, v, num_video, num_anchor)
    assert k_scale.shape == (2 * 3, 3) and v_scale.shape == (2 * 3, 48)
    cos_l, sin_l = sequence_rope_tables(cos, sin, num_anchor)
    rotated = apply_rope(k, cos_l, sin_l).abs().amax(dim=-1)  # [B, L, heads]
    # Source and target rows of the same positions share a scale.
    per_position = torch.maximum(rotated[:, :num_video], rotated[:, num_video + num_anchor:])
    for b in range(3):
        largest = per_position[:, b * block:(b + 1) * block].amax(dim=1).flatten()  # [B * heads]
        assert (largest <= k_scale[:, b] * 448).all()
        # ... and the bound is at most 2x loose: some rotated channel of the largest pair
        # is at least its norm / sqrt(2) >= max|k| / sqrt(2).
        assert (largest >= k_scale[:, b] * 448 / 2 * (1 - 1e-6)).all()
    video_v = torch.cat([v[:, :num_video], v[:, num_video + num_anchor:]], dim=1)
    torch.testing.assert_close(v_scale * 448, video_v.abs().amax(dim=1).reshape(6, 48), rtol=1e-6, atol=0)
    # Anchor rows take no part: huge anchor values change neither scale.
    k2, v2 = k.clone(), v.clone()
    k2[:, num_video:num_video + num_anchor] = 1e4
    v2[:, num_video:num_video + num_anchor] = 1e4
    assert all(torch.equal(a, b) for a, b in zip(kernel_module.fp8_scales(k2, v2, num_video, num_anchor), (k_scale, v_scale)))


@triton.jit
def _to_e4m3_roundtrip(X, Y, N: tl.constexpr, ROUND_IN_FP32: tl.constexpr):
    offs = tl.arange(0, N)
    y = _to_e4m3(tl.load(X + offs), ROUND_IN_FP32)
    tl.store(Y + offs, y.to(tl.float32))


def test_fp8_cast_matches_torch_including_carries_ties_and_subnormals():
    _skip_fp8_without_support()
    # Values that round across a power of two (1.97 -> 2), exact ties, fp8 subnormals, and
    # values beyond the e4m3 range (saturate to +-448).
    special = torch.tensor([1.97, -7.99, 1.0625, 1.1875, 0.0039, -0.0107, 2.0**-10, 500.0, -1e4, 0.0, 448.0, 3.3])
    x = torch.cat([special, torch.randn(500, generator=torch.Generator().manual_seed(7)) * 30])
    x = torch.cat([x, torch.zeros(512 - x.numel())]).to(DEVICE)
    y = torch.empty_like(x)
    _to_e4m3_roundtrip[(1,)](x, y, 512, ROUND_IN_FP32=INTERPRETED)
    expected = x.clamp(-448, 448).to(torch.float8_e4m3fn).float()
    assert torch.equal(y, expected)


def test_torch_op_schema_fake_and_dispatch():
    q, k, v, cos, sin = _inputs(1, 3, 5, 1, 1, 2, 48, torch.float16)
    # opcheck: schema, fake-tensor impl vs real impl (shapes, strides, dtype), autograd
    # registration and AOT dispatch.
    for keys in ("in-loop", "once"):
        torch.library.opcheck(torch.ops.sama_rt.anchor_attention.default, (q, k, v, cos, sin, 1, 48**-0.5, "native", keys))


def test_fake_and_meta_tensors_give_shape_and_dtype():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q = torch.empty(2, 31, 3, 48, dtype=torch.bfloat16)
        table = torch.empty(15, 24)
        out = anchor_attention(q, q, q, table, table, 1)
    assert out.shape == (2, 31, 3, 48) and out.dtype == torch.bfloat16
    meta = torch.empty(1, 40, 2, 128, dtype=torch.float16, device="meta")
    table = torch.empty(18, 64, device="meta")
    out = anchor_attention(meta, meta, meta, table, table, 4)
    assert out.device.type == "meta" and out.shape == (1, 40, 2, 128) and out.dtype == torch.float16


def test_grid_has_one_anchor_program_only_when_there_are_anchors():
    assert kernel_module.grid_size(2, 40, 20280, 65, 128) == (317 + 1, 80)
    assert kernel_module.grid_size(1, 2, 15, 0, 16) == (2, 2)


def test_padded_dims_cover_supported_head_dims():
    assert kernel_module.padded_dims(128, fp8=False) == (64, 128)
    assert kernel_module.padded_dims(96, fp8=False) == (64, 128)
    assert kernel_module.padded_dims(48, fp8=False) == (32, 64)
    assert kernel_module.padded_dims(48, fp8=True) == (32, 64)


@pytest.mark.parametrize("frames,height,width,num_anchor,batch,heads,head_dim,dtype", CASES)
@pytest.mark.parametrize("precision", ["native", "fp8"])
def test_strided_and_split_loads_give_identical_results(frames, height, width, num_anchor, batch, heads, head_dim,
                                                         dtype, precision):
    """The two ways of reading q/k channel pairs (autotune candidates) load the same values
    and run the same arithmetic: outputs are bit-identical."""
    if precision == "fp8":
        _skip_fp8_without_support()
    q, k, v, cos, sin = _inputs(frames, height, width, num_anchor, batch, heads, head_dim, dtype)
    scale, prec = head_dim**-0.5, AttentionPrecision.parse(precision)
    block_n = 32 if precision == "fp8" and not INTERPRETED else 16
    outs = [
        kernel_module._launch(q, k, v, cos, sin, num_anchor, scale, prec,
                              config=kernel_module._config(16 if INTERPRETED else 64, block_n, 4, 1, split_loads=split))
        for split in (False, True)
    ]
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)


@pytest.mark.parametrize("capability,fp8,rotated_keys", [
    ((9, 0), False, False), ((9, 0), True, False), ((9, 0), False, True), ((8, 9), False, False),
    ((8, 9), True, False), ((8, 9), False, True), ((8, 0), False, False)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_autotune_candidates_per_architecture(monkeypatch, capability, fp8, rotated_keys, dtype):
    """Which configs the autotuner may try: the list made for the GPU's architecture and
    where the keys are rotated (SASS checked, see benchmarks/kernel_sass.py) or, for float32
    inputs, the float32 list; fp8 only with BLOCK_N >= 32, and just the first under
    SAMA_RT_AUTOTUNE=0. Pure config selection: no kernel runs here."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.delenv("SAMA_RT_AUTOTUNE", raising=False)  # the GPU test runs set it
    v = torch.empty(2, 7, 3, 128, dtype=dtype)  # TMA-fit: aligned, 16-byte strides
    args = {"Q": torch.empty(1, dtype=dtype), "V": v, "stride_vb": v.stride(0), "stride_vl": v.stride(1),
            "stride_vh": v.stride(2)}
    configs = [c for configs in kernel_module._CONFIG_LISTS.values() for c in configs]
    chosen = kernel_module._prune_configs(configs, args, FP8=fp8, ROTATED_KEYS=rotated_keys, HEAD_DIM=128)
    if dtype == torch.float32:
        expected = kernel_module.FLOAT32_CONFIGS
    elif capability >= (9, 0):
        expected = kernel_module.ROTATED_KEYS_HOPPER_CONFIGS if rotated_keys else kernel_module.HOPPER_CONFIGS
    else:
        expected = kernel_module.AMPERE_CONFIGS
    assert chosen == [c for c in expected if not fp8 or c.kwargs["BLOCK_N"] >= 32] and chosen
    assert all(c.kwargs["SPLIT_LOADS"] is False for c in chosen) or capability >= (9, 0) or dtype == torch.float32
    monkeypatch.setenv("SAMA_RT_AUTOTUNE", "0")
    assert kernel_module._prune_configs(configs, args, FP8=fp8, ROTATED_KEYS=rotated_keys, HEAD_DIM=128) == chosen[:1]


@pytest.mark.parametrize("head_dim,view,fits", [
    (128, "contiguous", True), (96, "contiguous", False), (48, "contiguous", False),
    (128, "fused qkv", True), (128, "odd row stride", False)])
def test_tma_configs_only_where_descriptors_can_describe_v(monkeypatch, head_dim, view, fits):
    """TMA_KEYS candidates need a power-of-two head_dim and V's base and strides in 16-byte
    multiples (what a tensor descriptor takes); elsewhere the autotuner never sees them."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.delenv("SAMA_RT_AUTOTUNE", raising=False)
    if view == "contiguous":
        v = torch.empty(2, 9, 4, head_dim, dtype=torch.bfloat16)
    elif view == "fused qkv":  # v as the last third of a [B, L, 3 * heads * D] projection
        v = torch.empty(2, 9, 3 * 4 * head_dim, dtype=torch.bfloat16)[..., 2 * 4 * head_dim:].unflatten(-1, (4, head_dim))
    else:  # rows 4 * 128 + 3 elements apart: not a 16-byte multiple
        v = torch.empty(2, 9, 4 * head_dim + 3, dtype=torch.bfloat16)[..., : 4 * head_dim].unflatten(-1, (4, head_dim))
    args = {"Q": v, "V": v, "stride_vb": v.stride(0), "stride_vl": v.stride(1), "stride_vh": v.stride(2)}
    configs = kernel_module.ROTATED_KEYS_HOPPER_CONFIGS
    chosen = kernel_module._prune_configs(list(configs), args, FP8=False, ROTATED_KEYS=True, HEAD_DIM=head_dim)
    tma = [c for c in configs if c.kwargs["TMA_KEYS"]]
    assert tma and all((c in chosen) == fits for c in tma)
    assert all(c in chosen for c in configs if not c.kwargs["TMA_KEYS"])
    monkeypatch.setenv("SAMA_RT_ATTENTION_TMA", "0")  # the switch that keeps them out everywhere
    chosen = kernel_module._prune_configs(list(configs), args, FP8=False, ROTATED_KEYS=True, HEAD_DIM=head_dim)
    assert chosen == [c for c in configs if not c.kwargs["TMA_KEYS"]]


def test_tuned_config_names_the_configuration_that_ran():
    q, k, v, cos, sin = _inputs(1, 3, 5, 2, 1, 1, 48, torch.float32)
    anchor_attention(q, k, v, cos, sin, 2)
    if INTERPRETED:
        assert kernel_module.tuned_config() == "16x16 w4 s1 split"  # INTERPRETER_CONFIG
    else:  # one of the float32 list, whichever the autotuner chose
        assert re.fullmatch(r"(64|128)x(16|32) w[48] s[234] (split|strided)( flat)?", kernel_module.tuned_config())


def test_autotune_timings_report_what_the_autotuner_measured():
    """The benchmarks' view of the autotuner: one entry per candidate it timed, by config name;
    nothing when it timed nothing (the interpreter's single config, or a shape tuned before)."""
    assert kernel_module.config_name(kernel_module._config(128, 64, 8, 3, split_loads=True, flat_keys=True)) \
        == "128x64 w8 s3 split flat"
    q, k, v, cos, sin = _inputs(1, 3, 7, 2, 1, 1, 48, torch.float16, seed=8)
    timings = kernel_module.autotune_timings(lambda: anchor_attention(q, k, v, cos, sin, 2, keys="once"))
    if INTERPRETED:
        assert timings == {}  # the interpreter has a single config: nothing to time
    else:
        hopper = torch.cuda.get_device_capability() >= (9, 0)
        if os.environ.get("SAMA_RT_AUTOTUNE") == "0":
            # One candidate left by pruning, the list's first: the autotuner still times it.
            first = (kernel_module.ROTATED_KEYS_HOPPER_CONFIGS if hopper else kernel_module.AMPERE_CONFIGS)[0]
            assert set(timings) <= {kernel_module.config_name(first)}
        elif hopper:  # head_dim 48: no tensor descriptors (TMA_KEYS) for it
            names = {kernel_module.config_name(c) for c in kernel_module.ROTATED_KEYS_HOPPER_CONFIGS
                     if not c.kwargs["TMA_KEYS"]}
            assert set(timings) == names and any(ms for ms in timings.values())
    assert kernel_module.autotune_timings(lambda: anchor_attention(q, k, v, cos, sin, 2, keys="once")) == {}


@pytest.mark.parametrize("frames,height,width,num_anchor,batch,heads,head_dim,dtype", CASES)
def test_keys_rotated_once_give_the_same_outputs(frames, height, width, num_anchor, batch, heads, head_dim, dtype):
    """Rotating the keys once into a copy moves the rotation, not its arithmetic: the same
    float32 rotation rounded to k's dtype feeds the same dots. Bit-identical in the
    interpreter (same tile config); compiled, the autotuner may give the variant other tiles,
    so there it must meet the reference tolerance of the other tests."""
    q, k, v, cos, sin = _inputs(frames, height, width, num_anchor, batch, heads, head_dim, dtype, seed=4)
    once = anchor_attention(q, k, v, cos, sin, num_anchor, keys="once")
    in_loop = anchor_attention(q, k, v, cos, sin, num_anchor, keys="in-loop")
    if INTERPRETED:
        torch.testing.assert_close(once, in_loop, atol=0, rtol=0)
    else:
        want = anchor_attention_ref(q.float(), k.float(), v.float(), cos, sin, num_anchor)
        torch_err = (_explicit_attention(q, k, v, cos, sin, num_anchor).float() - want).abs().max().item()
        assert (once.float() - want).abs().max().item() <= 2 * torch_err + ATOL[dtype]


@pytest.mark.parametrize("frames,height,width,num_anchor,batch,heads,head_dim,dtype", CASES)
def test_flat_key_loop_matches_the_reference(frames, height, width, num_anchor, batch, heads, head_dim, dtype):
    """FLAT_KEYS (an autotune candidate for keys rotated once) runs the copy's 2N rows as one
    key sequence, tiles crossing from source to target rows, one full-width dot per tile:
    other tiles and summation order than the position loop, so the reference tolerance
    rule, not bit-equality. 16-key tiles here split N = 15 or 18 mid-row-block."""
    q, k, v, cos, sin = _inputs(frames, height, width, num_anchor, batch, heads, head_dim, dtype, seed=7)
    config = kernel_module._config(16 if INTERPRETED else 64, 16 if INTERPRETED else 32, 4, 1,
                                   split_loads=True, flat_keys=True)
    got = kernel_module._launch(q, k, v, cos, sin, num_anchor, head_dim**-0.5, AttentionPrecision.NATIVE,
                                keys=kernel_module.KeyRotation.ONCE, config=config)
    want = anchor_attention_ref(q.float(), k.float(), v.float(), cos, sin, num_anchor)
    torch_err = (_explicit_attention(q, k, v, cos, sin, num_anchor).float() - want).abs().max().item()
    assert (got.float() - want).abs().max().item() <= 2 * torch_err + ATOL[dtype]
    # The anchor queries' rows (mean of v, summed in tiles of BLOCK_N rows) do not depend on
    # the loop: equal to the position loop's with the same tiles.
    num_video = cos.shape[0]
    rows = slice(num_video, num_video + num_anchor)
    positions = kernel_module._config(config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], 4, 1, split_loads=True)
    once = kernel_module._launch(q, k, v, cos, sin, num_anchor, head_dim**-0.5, AttentionPrecision.NATIVE,
                                 keys=kernel_module.KeyRotation.ONCE, config=positions)
    torch.testing.assert_close(got[:, rows], once[:, rows], atol=0, rtol=0)


@pytest.mark.parametrize("frames,height,width,num_anchor,batch,heads,head_dim,dtype",
                         [c for c in CASES if c.values[6] == 128])
def test_tma_key_loop_matches_the_reference(frames, height, width, num_anchor, batch, heads, head_dim, dtype):
    """TMA_KEYS: the flat loop with its tiles loaded through tensor descriptors, source and
    target keys as two runs (V's rows of a tile must be contiguous): tiles that run past the
    source rows into the anchors' V rows, and past the end of both tensors, must be masked
    or zero-filled. 16-key tiles over N = 18 or 70 cross both ends."""
    q, k, v, cos, sin = _inputs(frames, height, width, num_anchor, batch, heads, head_dim, dtype, seed=9)
    config = kernel_module._config(16 if INTERPRETED else 64, 16 if INTERPRETED else 64, 4, 2,
                                   split_loads=True, flat_keys=True, tma_keys=True)
    got = kernel_module._launch(q, k, v, cos, sin, num_anchor, head_dim**-0.5, AttentionPrecision.NATIVE,
                                keys=kernel_module.KeyRotation.ONCE, config=config)
    want = anchor_attention_ref(q.float(), k.float(), v.float(), cos, sin, num_anchor)
    torch_err = (_explicit_attention(q, k, v, cos, sin, num_anchor).float() - want).abs().max().item()
    assert (got.float() - want).abs().max().item() <= 2 * torch_err + ATOL[dtype]


def test_tma_configs_need_the_flat_loop_and_a_power_of_two_head_dim():
    q, k, v, cos, sin = _inputs(1, 3, 5, 1, 1, 1, 48, torch.float32)
    args = (q, k, v, cos, sin, 1, 48**-0.5, AttentionPrecision.NATIVE)
    with pytest.raises(ValueError, match="set FLAT_KEYS too"):
        kernel_module._launch(*args, keys=kernel_module.KeyRotation.ONCE,
                              config=kernel_module._config(16, 16, 4, 1, tma_keys=True))
    with pytest.raises(ValueError, match="power-of-two head_dim"):
        kernel_module._launch(*args, keys=kernel_module.KeyRotation.ONCE,
                              config=kernel_module._config(16, 16, 4, 1, flat_keys=True, tma_keys=True))


def test_scratch_allocator_is_torch_unless_the_caller_set_one():
    """TMA_KEYS kernels need Triton's allocator at launch: sama-rt supplies torch's where none
    is set, and leaves a caller's own allocator alone. (Run in fresh contexts: Triton keeps
    the allocator in a context variable.)"""
    import contextvars

    from triton.runtime import _allocation

    def after_ensure(preset):
        if preset is not None:
            triton.set_allocator(preset)
        kernel_module._ensure_scratch_allocator()
        return _allocation._allocator.get()

    assert contextvars.Context().run(after_ensure, None) is kernel_module._scratch_from_torch

    def mine(size, alignment, stream):
        raise AssertionError("not called here")

    assert contextvars.Context().run(after_ensure, mine) is mine


def test_a_failing_tma_candidate_is_dropped_and_tuning_retried(monkeypatch, caplog):
    """If autotuning with the TMA candidates fails at launch (a driver or Triton without
    working device-side descriptors), the keys-once kernel tunes again without them; a
    failure without them, or of an explicit config, is raised."""
    calls = []

    class Tuned:  # stands in for the autotuned kernel: fails while TMA candidates are allowed
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                calls.append(kernel_module._TMA_DISABLED)
                if not kernel_module._TMA_DISABLED:
                    raise RuntimeError("descriptor creation failed")
            return launch

    monkeypatch.setattr(kernel_module, "_tuned_kernel", Tuned())
    monkeypatch.setattr(kernel_module, "_TMA_DISABLED", False)
    q, k, v, cos, sin = _inputs(1, 3, 5, 1, 1, 1, 128, torch.float32)
    with caplog.at_level("WARNING"):
        anchor_attention(q, k, v, cos, sin, 1, keys="once")
    assert calls == [False, True] and "retrying without them" in caplog.text
    assert not kernel_module._tensor_descriptors_fit({}, 128)  # pruned from now on
    with pytest.raises(RuntimeError, match="descriptor creation failed"):  # in-loop: not TMA's doing
        monkeypatch.setattr(kernel_module, "_TMA_DISABLED", False)
        anchor_attention(q, k, v, cos, sin, 1, keys="in-loop")


def test_flat_key_configs_need_the_rotated_copy():
    q, k, v, cos, sin = _inputs(1, 3, 5, 1, 1, 1, 48, torch.float32)
    with pytest.raises(ValueError, match="keys='once'"):
        kernel_module._launch(q, k, v, cos, sin, 1, 48**-0.5, AttentionPrecision.NATIVE,
                              config=kernel_module._config(16, 16, 4, 1, flat_keys=True))


def test_rotate_keys_writes_the_rotated_video_rows_even_then_odd():
    num_anchor = 3
    q, k, v, cos, sin = _inputs(2, 3, 5, num_anchor, 2, 3, 48, torch.float32, seed=6)
    num_video = cos.shape[0]
    got = kernel_module.rotate_keys(k, cos, sin, num_anchor)  # [B * heads, 2N, D]
    cos_l, sin_l = sequence_rope_tables(cos, sin, num_anchor)
    rotated = apply_rope(k, cos_l, sin_l)
    video = torch.cat([rotated[:, :num_video], rotated[:, num_video + num_anchor:]], dim=1)  # [B, 2N, heads, D]
    want = torch.cat([video[..., 0::2], video[..., 1::2]], dim=-1).transpose(1, 2).reshape(2 * 3, 2 * num_video, 48)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_keys_rotated_once_is_native_only():
    q, k, v, cos, sin = _inputs(1, 3, 5, 1, 1, 1, 48, torch.float16)
    with pytest.raises(ValueError, match="native-precision variant"):
        anchor_attention(q, k, v, cos, sin, 1, precision="fp8", keys="once")
    with pytest.raises(ValueError, match="valid: in-loop, once"):
        anchor_attention(q, k, v, cos, sin, 1, keys="twice")
