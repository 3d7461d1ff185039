"""The FP8 anchor attention as one flash-attention loop over quantized copies of q, k and v.

The in-loop FP8 kernel (`anchor_attention_fwd` with FP8) rotates and quantizes every key
tile again for every query block: on an H100 that conversion work made it 0.35x flash SDPA
(docs/BENCHMARKS.md), slower than the native kernels it was meant to beat. Here every
conversion but p's happens once, in two pre-passes, and the loop is what FP8 tensor cores
want:

* `quantize_rotated_fwd` rotates the video rows of q and k in float32 and writes them as
  float8 e4m3 copies [B * heads, 2N, D] (source rows then target rows, each row's rotated
  even channels then its odd ones, like `rotate_keys`): q with one scale per row (the softmax
  scale times log2(e) folded in), k with one scale per block of FP8_KEY_BLOCK rows of the
  copy, each from the rotated values themselves;
* `quantize_values_fwd` writes v's video rows divided by a per-channel scale as a TRANSPOSED
  e4m3 copy [B * heads, D, 2N] (rows padded to 16 bytes): Hopper's FP8 tensor-core product
  reads both operands K-major, and for p.v the reduction runs over keys;
* the loop (`fp8_copies_fwd`) loads tiles through tensor descriptors (TMA), computes q.k in
  FP8 with fp32 accumulation, multiplies the logits by (q row scale x k block scale) in the
  same fused multiply-add that subtracts the running maximum, and takes p times a constant
  factor inside that exp2, to use e4m3's range with no extra multiply: 224 p at the
  reference maximum, which is updated (and the accumulators rescaled) only when a row's
  maximum has doubled since, so p stays within 448 (`_lazy_softmax_step`). p.v runs in FP8
  with fp32 accumulation. The factor and v's channel scales leave in the epilogue, where
  the anchor keys are folded in as in the other kernels.

Anchor queries' rows (mean of v) and the anchor keys' value sum are the torch reductions of
kernels/rotated_copies.py. Hopper only (TMA loads; FP8 dots need sm_89+, the in-loop FP8
kernel stays the choice for Ada), power-of-two head_dim >= 32. Opt-in, like every FP8 path:
`anchor_attention(..., precision="fp8", keys="copies")`, the model's `--attention
triton-fp8-copies`. Its error against the native kernel is in docs/BENCHMARKS.md.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .anchor_attention import (
    _INTERPRETED,
    _LOG2E,
    FP8_COPIES_CONFIGS,
    FP8_E4M3_MAX,
    FP8_KEY_BLOCK,
    FP8_RESCALE_SLACK,
    _ensure_scratch_allocator,
    _fold_anchor_keys,
    _lazy_softmax_step,
    _rotated_video_rows,
    _to_dot_dtype,
    _to_e4m3,
    value_scales,
)
from .rotated_copies import (
    _row_descriptors,
    anchor_rows_and_sum,
    copies_kernel_signature,
    run_over_video_queries,
    tuned_over,
)

QUANTIZE_BLOCK = 64  # rows per program of the q and v pre-passes (k's programs take FP8_KEY_BLOCK rows)
# The loop's factor on p, 448 / 2**FP8_RESCALE_SLACK (its maxima are lazily updated):
_P_SCALE = tl.constexpr(448.0 / 2**FP8_RESCALE_SLACK.value)
_LOG2_P_SCALE = tl.constexpr(math.log2(_P_SCALE.value))


@triton.jit
def quantize_rotated_fwd(
    X, COS, SIN, X8, SCALE,
    stride_xb, stride_xl, stride_xh,
    num_heads, num_video, num_anchor,
    MULTIPLIER: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr, ROW_SCALES: tl.constexpr,
    ROUND_IN_FP32: tl.constexpr,
):
    """Grid (cdiv(2N, BLOCK), B * heads): X's video rows rotated in float32, times MULTIPLIER,
    as e4m3 in X8 [B * heads, 2N, D] ([even | odd] channels). ROW_SCALES: one scale per row,
    SCALE [B * heads, 2N]; otherwise one per program's BLOCK rows, SCALE [B * heads,
    cdiv(2N, BLOCK)]. Each scale maps its rows' largest |value| onto 448."""
    half_dim: tl.constexpr = HEAD_DIM // 2
    pid_bh = tl.program_id(1)
    num_keys = 2 * num_video
    rot_even, rot_odd, rows, row_ok, mask = _rotated_video_rows(
        X, COS, SIN, pid_bh, stride_xb, stride_xl, stride_xh, num_heads, num_video, num_anchor,
        HEAD_DIM, half_dim, HEAD_DIM, BLOCK,
    )
    rot_even, rot_odd = rot_even * MULTIPLIER, rot_odd * MULTIPLIER
    row_max = tl.maximum(tl.max(tl.abs(rot_even), 1), tl.max(tl.abs(rot_odd), 1))
    if ROW_SCALES:
        scale = tl.maximum(row_max, 1e-30) / FP8_E4M3_MAX
        tl.store(SCALE + pid_bh.to(tl.int64) * num_keys + rows, scale, mask=row_ok)
        inv = (1.0 / scale)[:, None]
    else:
        scale = tl.maximum(tl.max(row_max, 0), 1e-30) / FP8_E4M3_MAX
        tl.store(SCALE + pid_bh * tl.cdiv(num_keys, BLOCK) + tl.program_id(0), scale)
        inv = 1.0 / scale
    out = X8 + pid_bh.to(tl.int64) * (num_keys * HEAD_DIM) + rows[:, None] * HEAD_DIM + tl.arange(0, half_dim)[None, :]
    tl.store(out, _to_e4m3(rot_even * inv, ROUND_IN_FP32), mask=mask)
    tl.store(out + half_dim, _to_e4m3(rot_odd * inv, ROUND_IN_FP32), mask=mask)


@triton.jit
def quantize_values_fwd(
    V, V_SCALE, VT8,
    stride_vb, stride_vl, stride_vh,
    num_heads, num_video, num_anchor, keys_pad,
    HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr, ROUND_IN_FP32: tl.constexpr,
):
    """Grid (cdiv(2N, BLOCK), B * heads): v's video rows divided by their channel's scale
    (V_SCALE [B * heads, D]) as e4m3, transposed: VT8 [B * heads, D, keys_pad], column r the
    r-th video row (source then target)."""
    pid_bh = tl.program_id(1)
    num_keys = 2 * num_video
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    row_ok = rows < num_keys
    dim = tl.arange(0, HEAD_DIM)
    v_base = (pid_bh // num_heads).to(tl.int64) * stride_vb + (pid_bh % num_heads) * stride_vh
    physical = tl.where(rows < num_video, rows, rows + num_anchor)
    v = tl.load(V + v_base + physical[:, None] * stride_vl + dim[None, :], mask=row_ok[:, None], other=0.0)
    inv = 1.0 / tl.load(V_SCALE + pid_bh * HEAD_DIM + dim)
    v8 = tl.trans(_to_e4m3(v.to(tl.float32) * inv[None, :], ROUND_IN_FP32))  # [D, BLOCK]: rows contiguous
    out = VT8 + pid_bh.to(tl.int64) * (HEAD_DIM * keys_pad) + dim[:, None] * keys_pad + rows[None, :]
    tl.store(out, v8, mask=row_ok[None, :])


@triton.jit
def _fp8_step(
    acc, l_i, m_i, q, q_scale, k_desc, vt_desc, K_SCALE, start, num_keys,
    BLOCK_N: tl.constexpr, MASK_KEYS: tl.constexpr, ROUND_IN_FP32: tl.constexpr,
):
    """One key tile: q.k in e4m3, the online softmax in float32 on descaled logits (log2
    units), then (_P_SCALE p).v in e4m3 onto acc."""
    k = k_desc.load([start, 0])
    qk = tl.dot(q, tl.trans(k))
    row_scale = q_scale * tl.load(K_SCALE + start // FP8_KEY_BLOCK)  # BLOCK_N divides FP8_KEY_BLOCK
    if MASK_KEYS:
        qk = tl.where((start + tl.arange(0, BLOCK_N) < num_keys)[None, :], qk, float("-inf"))
    # p * _P_SCALE = exp2(logit - (m - log2 _P_SCALE)): the descale and the shifts in one
    # multiply-add; a maximum grown by up to the slack since the last rescale takes it up to
    # 448 (see FP8_RESCALE_SLACK).
    p, acc, l_i, m_i = _lazy_softmax_step(qk, row_scale, acc, l_i, m_i, FP8_RESCALE_SLACK, _LOG2_P_SCALE)
    if ROUND_IN_FP32:
        p8 = _to_e4m3(p, True)  # the interpreter's own cast rounds wrongly (see _to_e4m3)
    else:
        p8 = p.to(tl.float8e4nv)  # p <= 448 (up to exp2's rounding, which rounds back onto 448)
    vt = vt_desc.load([0, start])
    acc = tl.dot(p8, tl.trans(vt), acc)
    return acc, l_i, m_i


@triton.jit
def fp8_copies_fwd(
    Q8, K8, VT8, Q_SCALE, K_SCALE, V_SCALE, ANCHOR_SUM,
    stride_ob, stride_ol, stride_oh,
    num_heads, num_video, num_anchor, keys_pad,
    OUT,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ROUND_IN_FP32: tl.constexpr,
):
    """Grid (cdiv(2N, BLOCK_M), B * heads): video queries only. Q8, K8 [B * heads, 2N, D] and
    VT8 [B * heads, D, keys_pad] e4m3 from the pre-passes, with their float32 scales Q_SCALE
    [B * heads, 2N], K_SCALE [B * heads, cdiv(2N, FP8_KEY_BLOCK)], V_SCALE [B * heads, D];
    ANCHOR_SUM float32 [B * heads, D], the sum of v's anchor rows. Full key tiles unmasked,
    then one masked partial tile."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    num_keys = 2 * num_video
    q_desc = _row_descriptors(Q8, pid_bh, num_keys, HEAD_DIM, BLOCK_M)
    k_desc = _row_descriptors(K8, pid_bh, num_keys, HEAD_DIM, BLOCK_N)
    vt_desc = tl.make_tensor_descriptor(VT8 + pid_bh.to(tl.int64) * (HEAD_DIM * keys_pad), shape=[HEAD_DIM, num_keys],
                                        strides=[keys_pad, 1], block_shape=[HEAD_DIM, BLOCK_N])
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q = q_desc.load([pid_m * BLOCK_M, 0])
    q_scale = tl.load(Q_SCALE + pid_bh.to(tl.int64) * num_keys + rows, mask=rows < num_keys, other=1.0)
    k_scales = K_SCALE + pid_bh * tl.cdiv(num_keys, FP8_KEY_BLOCK)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    full = (num_keys // BLOCK_N) * BLOCK_N
    for start in range(0, full, BLOCK_N):
        acc, l_i, m_i = _fp8_step(acc, l_i, m_i, q, q_scale, k_desc, vt_desc, k_scales, start, num_keys,
                                  BLOCK_N, False, ROUND_IN_FP32)
    if full < num_keys:
        acc, l_i, m_i = _fp8_step(acc, l_i, m_i, q, q_scale, k_desc, vt_desc, k_scales, full, num_keys,
                                  BLOCK_N, True, ROUND_IN_FP32)

    dim = tl.arange(0, HEAD_DIM)
    # Back to v's units: acc and l both carry p's factor _P_SCALE, acc also 1 / v's scales.
    acc = acc * (tl.load(V_SCALE + pid_bh * HEAD_DIM + dim) / _P_SCALE)[None, :]
    l_i = l_i / _P_SCALE
    out = _fold_anchor_keys(acc, l_i, m_i, tl.load(ANCHOR_SUM + pid_bh * HEAD_DIM + dim), num_anchor)
    physical = tl.where(rows < num_video, rows, rows + num_anchor)  # source, then target past the anchors
    o_base = (pid_bh // num_heads).to(tl.int64) * stride_ob + (pid_bh % num_heads) * stride_oh
    tl.store(OUT + o_base + physical[:, None] * stride_ol + dim[None, :],
             _to_dot_dtype(out, OUT.dtype.element_ty, ROUND_IN_FP32).to(OUT.dtype.element_ty),
             mask=(rows < num_keys)[:, None])


def fp8_copies(q, k, v, cos, sin, num_anchor: int, scale: float):
    """The pre-passes: ((q8, k8, vt8), (q_scale, k_scale, v_scale), keys_pad), as
    `fp8_copies_fwd` takes them (module docstring). Inputs [B, L, heads, D], last dimension
    contiguous; cos, sin [N, D/2] float32."""
    batch, _, num_heads, head_dim = q.shape
    if head_dim & (head_dim - 1) or head_dim < 32:  # tensor descriptors, e4m3 dots over >= 32 channels
        raise ValueError(f"the FP8 copies kernels need a power-of-two head_dim >= 32, got {head_dim}")
    num_video = cos.shape[0]
    num_keys, heads = 2 * num_video, batch * num_heads
    keys_pad = triton.cdiv(num_keys, 16) * 16  # TMA: every row but the last starts on 16 bytes
    e4m3 = torch.float8_e4m3fn
    q8 = torch.empty((heads, num_keys, head_dim), dtype=e4m3, device=q.device)
    k8 = torch.empty_like(q8)
    vt8 = torch.empty((heads, head_dim, keys_pad), dtype=e4m3, device=q.device)
    q_scale = torch.empty((heads, num_keys), dtype=torch.float32, device=q.device)
    k_scale = torch.empty((heads, triton.cdiv(num_keys, FP8_KEY_BLOCK.value)), dtype=torch.float32, device=q.device)
    for x, x8, x_scale, block, multiplier in ((q, q8, q_scale, QUANTIZE_BLOCK, scale * _LOG2E),
                                              (k, k8, k_scale, FP8_KEY_BLOCK.value, 1.0)):
        quantize_rotated_fwd[(triton.cdiv(num_keys, block), heads)](
            x, cos, sin, x8, x_scale, x.stride(0), x.stride(1), x.stride(2), num_heads, num_video, num_anchor,
            MULTIPLIER=multiplier, HEAD_DIM=head_dim, BLOCK=block, ROW_SCALES=x is q, ROUND_IN_FP32=_INTERPRETED,
            num_warps=8,  # sm_90, D=128: k's 128-row blocks spill with 4 warps (81-243 spill instructions), not 8
        )
    v_scale = value_scales(v, num_video, num_anchor)
    quantize_values_fwd[(triton.cdiv(num_keys, QUANTIZE_BLOCK), heads)](
        v, v_scale, vt8, v.stride(0), v.stride(1), v.stride(2), num_heads, num_video, num_anchor, keys_pad,
        HEAD_DIM=head_dim, BLOCK=QUANTIZE_BLOCK, ROUND_IN_FP32=_INTERPRETED,
    )
    return (q8, k8, vt8), (q_scale, k_scale, v_scale), keys_pad


# e4m3 dots reduce over at least 32 keys: the interpreter's small tile has 32.
tuned_kernel = tuned_over(fp8_copies_fwd, FP8_COPIES_CONFIGS, interpreter_block_n=32)


def launch_fp8_copies(q, k, v, cos, sin, num_anchor: int, scale: float,
                      config: triton.Config | None = None) -> torch.Tensor:
    """Run `fp8_copies_fwd`, autotuned over FP8_COPIES_CONFIGS or with `config` (inputs
    already checked by the caller, last dimensions contiguous). Returns [B, L, heads,
    head_dim] in v's dtype."""
    batch, _, num_heads, head_dim = q.shape
    if config is not None and (config.kwargs["BLOCK_N"] < 32 or FP8_KEY_BLOCK.value % config.kwargs["BLOCK_N"]):
        raise ValueError(f"the FP8 copies kernel's key tile must be 32, 64 or 128 keys, got {config.kwargs['BLOCK_N']}")
    num_video = cos.shape[0]
    out, anchor_sum = anchor_rows_and_sum(v, num_video, num_anchor)
    if q.device.type == "cuda":
        _ensure_scratch_allocator()  # the tensor descriptors are built in scratch memory
    copies, scales, keys_pad = fp8_copies(q, k, v, cos, sin, num_anchor, scale)
    run_over_video_queries(
        tuned_kernel, fp8_copies_fwd, config, 2 * num_video, batch * num_heads,
        *copies, *scales, anchor_sum, out.stride(0), out.stride(1), out.stride(2), num_heads, num_video, num_anchor,
        keys_pad, out, HEAD_DIM=head_dim, ROUND_IN_FP32=_INTERPRETED,
    )
    return out


def compile_fp8_copies(block_m: int, block_n: int, num_warps: int, num_stages: int, head_dim: int = 128,
                       dtype: str = "bf16", arch: int = 90):
    """Compile the loop ahead of time for `arch` (no GPU needed; not under TRITON_INTERPRET=1)
    and return Triton's compiled kernel (`.asm["cubin"]`: benchmarks/kernel_sass.py)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = fp8_copies_fwd
    constexprs = dict(HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, ROUND_IN_FP32=False)
    pointers = dict(Q8="*fp8e4nv", K8="*fp8e4nv", VT8="*fp8e4nv", Q_SCALE="*fp32", K_SCALE="*fp32",
                    V_SCALE="*fp32", ANCHOR_SUM="*fp32", OUT=f"*{dtype}")
    signature, attrs = copies_kernel_signature(fn, constexprs, pointers)
    return triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                          target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps, "num_stages": num_stages})
