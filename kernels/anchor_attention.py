"""Self-attention over SAMA's [source N | anchors A | target N] sequence, with RoPE fused in.

What makes this sequence special (see SAMA.md, DiT step 5): the anchor (semantic) tokens get
the rotary frequency 0+0j, so their rotated q and k are exactly zero. Therefore

* a video query sees the A anchor keys each with logit 0: together they act as ONE virtual
  key with logit log(A) and value mean(v_anchor). The kernel's main loop runs over the 2N video
  keys only and folds that virtual key into the online-softmax state in the epilogue. The loop
  walks positions: each step takes the source AND target keys of BLOCK_N positions, two clean
  tiles of contiguous rows that share one cos/sin tile;
* an anchor query attends uniformly: its output is mean(v) over all L tokens, a reduction that
  one extra program per (batch, head) computes.

RoPE (adjacent channel pairs (2i, 2i+1), source token i and target token i share table row i)
is applied to the q and k tiles in registers: the even and odd channels are obtained either
by splitting whole rows read with vector loads (Hopper) or as two strided halves, rotated in
float32, and q.k is computed as q_even.k_even + q_odd.k_odd (two dots of D/2). By default
no rotated copy of q or k is ever written to memory. The rotation holds registers inside the
loop, though, and keeps key tiles small on Hopper; `keys="once"` (KeyRotation.ONCE) instead
rotates the video keys once into a copy that the loop reads straight into the dots (same
arithmetic, bit-identical in the interpreter with the same tiles), for larger tiles: 1.65x
faster on an H100 (docs/BENCHMARKS.md), and what the model's `triton` attention runs. Its
autotune list also holds FLAT_KEYS configs, which walk the copy as one key sequence with one
full-width dot per tile (q joined into the copy's channel order once). kernels/rotated_copies.py
holds that loop alone over rotated copies of q and k and a copy of v (`keys="copies"`, Hopper;
its configs end in " copies"); kernels/fp8_copies.py the same loop over e4m3 copies
(`precision="fp8", keys="copies"`).

Every native loop keeps its online softmax relative to a reference maximum that moves (and
rescales the accumulators) only when some row's maximum has grown past it by a slack
(`_lazy_softmax_step`), so that most tiles skip the multiply of every accumulator.

Layout of this file: the Triton kernel, its launcher, the plain-torch reference
`anchor_attention_ref` (the CPU path and the oracle), and the `sama_rt::anchor_attention`
torch op that `anchor_attention` calls so that torch.compile / export see one opaque op.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ..choices import Choice
from ..models.rope import apply_rope, sequence_rope_tables

logger = logging.getLogger(__name__)


_LOG2E = 1.4426950408889634
# How far (log2 units) a row's running maximum may grow before the lazily rescaling loops
# (`_lazy_softmax_step`) rescale: softmax weights then reach at most 2**8 = 256 (16-bit p).
# FP8 p must stay within e4m3's 448, and every binade of slack is one less for small weights
# above e4m3's smallest subnormal: its loop takes 448 p / 2**FP8_RESCALE_SLACK at the
# reference maximum, up to 448 before a rescale. A slack of 1 costs ~0.5 % more rms error
# than rescaling at every tile, 2 costs ~2 % (benchmarks/fp8_attention_error.py).
RESCALE_SLACK = tl.constexpr(8.0)
FP8_RESCALE_SLACK = tl.constexpr(1.0)
# Largest finite float8 e4m3fn value: per-block scales map each block's max |x| onto it.
FP8_E4M3_MAX = tl.constexpr(448.0)
# FP8 keys get one scale per this many positions (source and target rows of those positions
# together): a multiple of every BLOCK_N, so each key tile of the loop reads one scale.
FP8_KEY_BLOCK = tl.constexpr(128)
_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class AttentionPrecision(Choice):
    """How the two matrix products run.

    NATIVE: tensor-core dots in the input dtype (fp16/bf16; fp32 inputs use exact fp32 dots),
    fp32 accumulation. FP8: q.k and p.v in float8 e4m3 with per-block scales (per query row for
    q, per block of FP8_KEY_BLOCK positions for k, per channel for v, one 1/448 for p), fp32
    accumulation; needs sm_89+. In-loop, the k and v scales come from a pre-pass over k and v
    (two reductions, no copies), so the main loop only multiplies and casts; with
    keys="copies" (kernels/fp8_copies.py, Hopper) q, k and v are quantized once into e4m3
    copies, k's scales then per block of FP8_KEY_BLOCK rows of the rotated copy.
    """

    NATIVE = "native"
    FP8 = "fp8"


class KeyRotation(Choice):
    """Where the keys are rotated.

    IN_LOOP: every key tile is rotated in registers inside the main loop (no copies; each
    query block rotates every key tile again). ONCE: a pre-pass rotates the video keys once
    into a copy (video rows only, [even | odd] channels, k's dtype: 2N x head_dim per batch
    and head) that the loop reads straight into the dots, freeing the registers the rotation
    holds for larger key tiles. Same numbers: the rotation and its rounding to k's dtype are
    the same, only their place differs. COPIES: q and k rotated once and v copied without its
    anchor rows, all three by pre-passes, for the single loop of kernels/rotated_copies.py
    (Hopper only: tensor-memory-accelerator loads; three copies,
    ~3x the memory of ONCE; q rounded to its dtype after rotation, as SDPA on pre-rotated q
    sees it). fp8 has IN_LOOP and COPIES: its copies are e4m3, quantized once by the pre-passes
    of kernels/fp8_copies.py (v transposed), for a loop with no conversion but p's.
    """

    IN_LOOP = "in-loop"
    ONCE = "once"
    COPIES = "copies"


class KernelLanguage(Choice):
    """What the kernel is written in. TRITON: every variant above. GLUON: keys="copies" as
    kernels/gluon_attention.py writes it, in Triton's lower-level dialect, with the softmax
    overlapped with the dots, native or fp8 (over the e4m3 copies of kernels/fp8_copies.py);
    compiled only (Gluon has no interpreter), Hopper only: the model's `triton-gluon` attention
    (native). GLUON_WS: the same, warp-specialised (kernels/gluon_ws_attention.py: a producer
    warp, two consumer warpgroups taking turns at the tensor cores), the model's
    `triton-gluon-ws`: the fastest form on Hopper (docs/BENCHMARKS.md), what the model's
    "auto" attention runs there.
    """

    TRITON = "triton"
    GLUON = "gluon"
    GLUON_WS = "gluon-ws"


# --------------------------------------------------------------------------------------------
# Triton kernel
# --------------------------------------------------------------------------------------------


@triton.jit
def _to_e4m3(x, ROUND_IN_FP32: tl.constexpr):
    """float32 -> float8 e4m3fn, round to nearest even, saturating at +-448."""
    x = tl.clamp(x, -FP8_E4M3_MAX, FP8_E4M3_MAX)
    if ROUND_IN_FP32:
        # The CPU interpreter's float8 cast drops the carry when rounding crosses a power of
        # two (1.97 -> 1.0). Rounding to the e4m3 grid here first makes its cast exact.
        bits = x.to(tl.int32, bitcast=True)
        # Normal range: keep 3 of 23 mantissa bits; the integer add carries into the exponent.
        normal = ((bits + 0x7FFFF + ((bits >> 20) & 1)) & -1048576).to(tl.float32, bitcast=True)
        # Subnormal range (|x| < 2**-6, spacing 2**-9): adding 1.5 * 2**14 rounds to that spacing.
        subnormal = (x + 24576.0) - 24576.0
        x = tl.where(tl.abs(x) < 0.015625, subnormal, normal)
    return x.to(tl.float8e4nv)


@triton.jit
def _to_dot_dtype(x, DTYPE: tl.constexpr, ROUND_IN_FP32: tl.constexpr):
    """float32 x as an operand of a DTYPE dot (or for a DTYPE store).

    Under the CPU interpreter (ROUND_IN_FP32) a bfloat16 operand stays float32, rounded to the
    bf16 grid here: the interpreter's bf16 cast truncates and its bf16 dot is broken, while a
    float32 dot of bf16-exact values accumulates exactly what the tensor cores do (each
    product of two bf16 values is exact in float32). Compiled code takes the plain cast.
    """
    if ROUND_IN_FP32 and DTYPE == tl.bfloat16:
        bits = x.to(tl.int32, bitcast=True)
        # Keep 7 of 23 mantissa bits, round to nearest even; the add carries into the exponent.
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) & -65536).to(tl.float32, bitcast=True)
    else:
        return x.to(DTYPE)


@triton.jit
def _load_pairs(
    base, rows, row_ok, stride_l,
    HEAD_DIM: tl.constexpr, HALF_PAD: tl.constexpr, DIM_PAD: tl.constexpr, SPLIT_LOADS: tl.constexpr,
):
    """Even and odd channels of the given rows as two float32 tiles [len(rows), HALF_PAD].

    SPLIT_LOADS: read whole rows with contiguous (vectorised) loads and split the channel
    pairs in registers; otherwise two strided loads (every other element). Which is faster
    depends on the GPU and the tile shape, so both are autotune candidates.
    """
    half_dim: tl.constexpr = HEAD_DIM // 2
    if SPLIT_LOADS and DIM_PAD == 2 * HALF_PAD:  # (pads differ only for head_dim < 32)
        dim = tl.arange(0, DIM_PAD)
        mask = row_ok[:, None] & (dim[None, :] < HEAD_DIM)
        x = tl.load(base + rows[:, None] * stride_l + dim[None, :], mask=mask, other=0.0).to(tl.float32)
        even, odd = tl.split(tl.reshape(x, [x.shape[0], HALF_PAD, 2]))
    else:
        half = tl.arange(0, HALF_PAD)
        mask = row_ok[:, None] & (half[None, :] < half_dim)
        ptrs = base + rows[:, None] * stride_l + 2 * half[None, :]
        even = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
        odd = tl.load(ptrs + 1, mask=mask, other=0.0).to(tl.float32)
    return even, odd


@triton.jit
def _rotated_logits(
    q_even, q_odd, q_row_scale, k_even, k_odd, cos, sin, k_scale, DTYPE: tl.constexpr,
    FP8: tl.constexpr, DOT_PRECISION: tl.constexpr, ROUND_IN_FP32: tl.constexpr,
):
    """Logits [BLOCK_M, BLOCK_N] of the rotated queries against one tile of keys.

    k_even / k_odd / cos / sin: [BLOCK_N, HALF_PAD] float32; the rotated tiles are
    transposed for the dots (a layout choice the compiler makes in shared memory).
    k_scale (FP8): the scale of this tile's key block, from the pre-pass.
    """
    kr_even = tl.trans(k_even * cos - k_odd * sin)
    kr_odd = tl.trans(k_even * sin + k_odd * cos)
    if FP8:
        k_inv = 1.0 / k_scale
        k8_even = _to_e4m3(kr_even * k_inv, ROUND_IN_FP32)
        k8_odd = _to_e4m3(kr_odd * k_inv, ROUND_IN_FP32)
        qk = tl.dot(q_odd, k8_odd, tl.dot(q_even, k8_even))
        qk = qk * (q_row_scale[:, None] * k_scale)
    else:
        qk = tl.dot(q_even, _to_dot_dtype(kr_even, DTYPE, ROUND_IN_FP32), input_precision=DOT_PRECISION)
        qk = tl.dot(q_odd, _to_dot_dtype(kr_odd, DTYPE, ROUND_IN_FP32), qk, input_precision=DOT_PRECISION)
    return qk


@triton.jit
def _copied_logits(
    q_even, q_odd, kr_base, rows, row_ok, DTYPE: tl.constexpr,
    HEAD_DIM: tl.constexpr, HALF_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr, ROUND_IN_FP32: tl.constexpr,
):
    """Logits [BLOCK_M, BLOCK_N] against rows of the rotated key copy ([even | odd] channels,
    row stride HEAD_DIM): the operands `_rotated_logits` computes, read instead of rotated."""
    half_dim: tl.constexpr = HEAD_DIM // 2
    half = tl.arange(0, HALF_PAD)
    mask = row_ok[:, None] & (half[None, :] < half_dim)
    ptrs = kr_base + rows[:, None] * HEAD_DIM + half[None, :]
    k_even = tl.load(ptrs, mask=mask, other=0.0)
    k_odd = tl.load(ptrs + half_dim, mask=mask, other=0.0)
    if ROUND_IN_FP32 and DTYPE == tl.bfloat16:
        k_even, k_odd = k_even.to(tl.float32), k_odd.to(tl.float32)  # exact; see _to_dot_dtype
    qk = tl.dot(q_even, tl.trans(k_even), input_precision=DOT_PRECISION)
    return tl.dot(q_odd, tl.trans(k_odd), qk, input_precision=DOT_PRECISION)


@triton.jit
def _weighted_values(
    acc, p, v_ptrs, v_mask, v_inv, DTYPE: tl.constexpr,
    FP8: tl.constexpr, DOT_PRECISION: tl.constexpr, ROUND_IN_FP32: tl.constexpr,
):
    """acc + p @ v for one tile of keys.

    FP8: p lies in [0, 1], so 448 * p uses the whole e4m3 range; v is divided by its
    per-channel scale (v_inv = 1 / scale). Both factors are constant over the loop, so acc
    stays in those units and the epilogue multiplies them out once.
    """
    v = tl.load(v_ptrs, mask=v_mask, other=0.0)
    return _accumulate_values(acc, p, v, v_inv, DTYPE, FP8, DOT_PRECISION, ROUND_IN_FP32)


@triton.jit
def _accumulate_values(
    acc, p, v, v_inv, DTYPE: tl.constexpr, FP8: tl.constexpr, DOT_PRECISION: tl.constexpr, ROUND_IN_FP32: tl.constexpr,
):
    """acc + p @ v for a loaded tile of values (see `_weighted_values`)."""
    if FP8:
        v8 = _to_e4m3(v.to(tl.float32) * v_inv[None, :], ROUND_IN_FP32)
        p8 = _to_e4m3(p * FP8_E4M3_MAX, ROUND_IN_FP32)
        acc = tl.dot(p8, v8, acc)
    else:
        if ROUND_IN_FP32 and DTYPE == tl.bfloat16:
            v = v.to(tl.float32)  # exact; see _to_dot_dtype
        acc = tl.dot(_to_dot_dtype(p, DTYPE, ROUND_IN_FP32), v, acc, input_precision=DOT_PRECISION)
    return acc


@triton.jit
def _attend_positions(
    acc, l_i, m_i,
    q_even, q_odd, q_row_scale,
    K, V, COS, SIN, K_SCALE, v_inv, KR,
    k_base, v_base, kr_base, stride_kl, stride_vl,
    start_p, num_video, num_anchor,
    HEAD_DIM: tl.constexpr, HALF_PAD: tl.constexpr, DIM_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr, FP8: tl.constexpr, MASK_KEYS: tl.constexpr,
    DOT_PRECISION: tl.constexpr, ROUND_IN_FP32: tl.constexpr, SPLIT_LOADS: tl.constexpr,
    ROTATED_KEYS: tl.constexpr,
):
    """One online-softmax step over the source AND target keys of BLOCK_N positions.

    Source token i and target token i share RoPE position i, so one cos/sin tile serves both
    key tiles (the tables are fp32 and would otherwise be the largest load of the loop), and
    each tile is BLOCK_N contiguous rows: source rows start_p.., target rows N + A + start_p...
    """
    half_dim: tl.constexpr = HEAD_DIM // 2
    offs_p = start_p + tl.arange(0, BLOCK_N)
    half = tl.arange(0, HALF_PAD)
    dim = tl.arange(0, DIM_PAD)
    pos_ok = offs_p < num_video
    if not MASK_KEYS:
        pos_ok = tl.full([BLOCK_N], 1, tl.int1)  # a full step: no position test at run time
    v_mask = pos_ok[:, None] & (dim[None, :] < HEAD_DIM)
    target_p = offs_p + num_video + num_anchor
    if ROTATED_KEYS:
        # The copy holds video rows only: source position p at row p, target at row N + p.
        qk_src = _copied_logits(q_even, q_odd, KR + kr_base, offs_p, pos_ok, K.dtype.element_ty,
                                HEAD_DIM, HALF_PAD, DOT_PRECISION, ROUND_IN_FP32)
        qk_tgt = _copied_logits(q_even, q_odd, KR + kr_base, offs_p + num_video, pos_ok, K.dtype.element_ty,
                                HEAD_DIM, HALF_PAD, DOT_PRECISION, ROUND_IN_FP32)
    else:
        t_mask = pos_ok[:, None] & (half[None, :] < half_dim)
        t_ptrs = offs_p[:, None] * half_dim + half[None, :]
        cos = tl.load(COS + t_ptrs, mask=t_mask, other=0.0)
        sin = tl.load(SIN + t_ptrs, mask=t_mask, other=0.0)
        k_scale = 1.0
        if FP8:
            k_scale = tl.load(K_SCALE + start_p // FP8_KEY_BLOCK)  # source and target keys share it
        k_even, k_odd = _load_pairs(K + k_base, offs_p, pos_ok, stride_kl, HEAD_DIM, HALF_PAD, DIM_PAD, SPLIT_LOADS)
        qk_src = _rotated_logits(q_even, q_odd, q_row_scale, k_even, k_odd, cos, sin, k_scale, K.dtype.element_ty,
                                 FP8, DOT_PRECISION, ROUND_IN_FP32)
        k_even, k_odd = _load_pairs(K + k_base, target_p, pos_ok, stride_kl, HEAD_DIM, HALF_PAD, DIM_PAD, SPLIT_LOADS)
        qk_tgt = _rotated_logits(q_even, q_odd, q_row_scale, k_even, k_odd, cos, sin, k_scale, K.dtype.element_ty,
                                 FP8, DOT_PRECISION, ROUND_IN_FP32)
    if MASK_KEYS:
        qk_src = tl.where(pos_ok[None, :], qk_src, float("-inf"))
        qk_tgt = tl.where(pos_ok[None, :], qk_tgt, float("-inf"))

    # Logits are already in log2 units (softmax scale * log2(e) was folded into q).
    m_tile = tl.maximum(tl.max(qk_src, 1), tl.max(qk_tgt, 1))
    if FP8:
        # fp8 takes 448 p into e4m3 (_accumulate_values): p must not pass 1, so the
        # reference maximum is always the current one.
        m_new = tl.maximum(m_i, m_tile)
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha
        acc = acc * alpha[:, None]
        m_i = m_new
    else:
        acc, l_i, m_i = _lazy_reference(m_tile, acc, l_i, m_i, RESCALE_SLACK)
    p_src = tl.exp2(qk_src - m_i[:, None])
    p_tgt = tl.exp2(qk_tgt - m_i[:, None])
    l_i = l_i + tl.sum(p_src, 1) + tl.sum(p_tgt, 1)
    v_src = V + v_base + offs_p[:, None] * stride_vl + dim[None, :]
    v_tgt = V + v_base + target_p[:, None] * stride_vl + dim[None, :]
    acc = _weighted_values(acc, p_src, v_src, v_mask, v_inv, V.dtype.element_ty, FP8, DOT_PRECISION, ROUND_IN_FP32)
    acc = _weighted_values(acc, p_tgt, v_tgt, v_mask, v_inv, V.dtype.element_ty, FP8, DOT_PRECISION, ROUND_IN_FP32)
    return acc, l_i, m_i


@triton.jit
def _descaled_softmax_step(qk, row_scale, acc, l_i, m_i, LOG2_P_SCALE: tl.constexpr):
    """The online softmax over one tile of raw logits: its weights p, and the state (acc,
    l_i, m) rescaled to the new running maximum. The logits in log2 units are qk * row_scale
    (row_scale [BLOCK_M], positive), and p comes out times 2**LOG2_P_SCALE (as does l_i, so
    their ratio is unchanged). The scale and the max meet in one multiply-add per logit
    instead of a multiply and a subtract: max(qk * s) = max(qk) * s for s > 0, so the maximum
    is taken of the raw tile and scaled once per row."""
    m_new = tl.maximum(m_i, tl.max(qk, 1) * row_scale)
    p = tl.exp2(qk * row_scale[:, None] - (m_new - LOG2_P_SCALE)[:, None])
    alpha = tl.exp2(m_i - m_new)
    return p, acc * alpha[:, None], l_i * alpha + tl.sum(p, 1), m_new


@triton.jit
def _lazy_softmax_step(qk, row_scale, acc, l_i, m_i, SLACK: tl.constexpr, LOG2_P_SCALE: tl.constexpr):
    """`_descaled_softmax_step` that rescales acc and l_i only when some row's maximum has
    grown by more than SLACK (log2 units) since the last rescale: otherwise the old maximum
    stays the reference, and p (times 2**LOG2_P_SCALE) may reach 2**(SLACK + LOG2_P_SCALE)
    instead of 2**LOG2_P_SCALE. After the first tiles the maxima rarely grow that much, so
    most tiles skip the multiply of every accumulator. The ratio acc / l_i is unchanged, and
    the epilogue's anchor fold uses the same reference maximum. The test is one reduction
    over the whole tile, so every warp takes the same branch."""
    acc, l_i, m_i = _lazy_reference(tl.max(qk, 1) * row_scale, acc, l_i, m_i, SLACK)
    p = tl.exp2(qk * row_scale[:, None] - (m_i - LOG2_P_SCALE)[:, None])
    return p, acc, l_i + tl.sum(p, 1), m_i


@triton.jit
def _lazy_reference(m_tile, acc, l_i, m_i, SLACK: tl.constexpr):
    """The reference maximum for a tile whose rows' maxima are m_tile (log2 units): moved,
    with acc and l_i rescaled to it, only when some row's maximum exceeds it by more than
    SLACK (see `_lazy_softmax_step`). Returns (acc, l_i, m_i)."""
    if tl.max(m_tile - m_i, 0) > SLACK:  # the first tile always (m_i = -inf)
        m_new = tl.maximum(m_i, m_tile)
        alpha = tl.exp2(m_i - m_new)
        acc = acc * alpha[:, None]
        l_i = l_i * alpha
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attend_described_rows(
    acc, l_i, m_i, q_flat, row_scale, k_desc, v_desc, k_row0, v_row0, count, v_inv, DTYPE: tl.constexpr,
    BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr, ROUND_IN_FP32: tl.constexpr, LAZY_RESCALE: tl.constexpr,
):
    """The flat loop over `count` keys with tensor-memory-accelerator loads: copy rows
    k_row0.. through k_desc, their values V rows v_row0.. through v_desc; logits (log2 units)
    q.k * row_scale. Keys once (TMA_KEYS) calls it for the source keys and for the target
    keys, so that V's rows of a tile are contiguous (the anchors sit between them);
    kernels/rotated_copies.py once over its copies. Full tiles unmasked, then one masked
    partial tile."""
    full = (count // BLOCK_N) * BLOCK_N
    for start in range(0, full, BLOCK_N):
        acc, l_i, m_i = _described_step(acc, l_i, m_i, q_flat, row_scale, k_desc, v_desc, k_row0 + start,
                                        v_row0 + start, start, count, v_inv, DTYPE, BLOCK_N, False, DOT_PRECISION,
                                        ROUND_IN_FP32, LAZY_RESCALE)
    if full < count:
        acc, l_i, m_i = _described_step(acc, l_i, m_i, q_flat, row_scale, k_desc, v_desc, k_row0 + full,
                                        v_row0 + full, full, count, v_inv, DTYPE, BLOCK_N, True, DOT_PRECISION,
                                        ROUND_IN_FP32, LAZY_RESCALE)
    return acc, l_i, m_i


@triton.jit
def _described_step(
    acc, l_i, m_i, q_flat, row_scale, k_desc, v_desc, k_row, v_row, start, count, v_inv, DTYPE: tl.constexpr,
    BLOCK_N: tl.constexpr, MASK_KEYS: tl.constexpr, DOT_PRECISION: tl.constexpr, ROUND_IN_FP32: tl.constexpr,
    LAZY_RESCALE: tl.constexpr,
):
    """One tile of `_attend_described_rows`. Rows past the end of the tensors load as zeros;
    rows past `count` (the next segment's, or the anchors') are masked out of the softmax.
    LAZY_RESCALE: `_lazy_softmax_step` (a branch in the loop, which the warp-specialisation
    pass does not take)."""
    k = k_desc.load([k_row, 0])
    if ROUND_IN_FP32 and DTYPE == tl.bfloat16:
        k = k.to(tl.float32)  # exact; see _to_dot_dtype
    qk = tl.dot(q_flat, tl.trans(k), input_precision=DOT_PRECISION)
    if MASK_KEYS:
        qk = tl.where((start + tl.arange(0, BLOCK_N) < count)[None, :], qk, float("-inf"))
    if LAZY_RESCALE:
        p, acc, l_i, m_i = _lazy_softmax_step(qk, row_scale, acc, l_i, m_i, RESCALE_SLACK, 0.0)
    else:
        p, acc, l_i, m_i = _descaled_softmax_step(qk, row_scale, acc, l_i, m_i, 0.0)
    v = v_desc.load([v_row, 0])
    acc = _accumulate_values(acc, p, v, v_inv, DTYPE, False, DOT_PRECISION, ROUND_IN_FP32)
    return acc, l_i, m_i


@triton.jit
def _attend_copied_rows(
    acc, l_i, m_i, q_flat, KR_ROWS, V_ROWS, stride_vl, start, num_video, num_anchor, v_inv, DTYPE: tl.constexpr,
    HEAD_DIM: tl.constexpr, HALF_PAD: tl.constexpr, DIM_PAD: tl.constexpr, BLOCK_N: tl.constexpr,
    MASK_KEYS: tl.constexpr, DOT_PRECISION: tl.constexpr, ROUND_IN_FP32: tl.constexpr,
):
    """One online-softmax step over BLOCK_N consecutive rows of the rotated key copy (FLAT_KEYS).

    The copy's 2N rows (source, then target) are one key sequence here, so a tile may hold
    both; its values are the rows of V at the same positions past the anchors. q_flat is q in
    the copy's channel order ([rotated even | rotated odd]), so each tile is one dot over the
    whole head dimension, the loop of a plain flash-attention kernel.
    """
    half_dim: tl.constexpr = HEAD_DIM // 2
    rows = start + tl.arange(0, BLOCK_N)
    row_ok = rows < 2 * num_video
    if not MASK_KEYS:
        row_ok = tl.full([BLOCK_N], 1, tl.int1)  # a full tile: no row test at run time
    width = tl.arange(0, 2 * HALF_PAD)
    if HEAD_DIM == 2 * HALF_PAD:
        k_mask = row_ok[:, None]
        k = tl.load(KR_ROWS + rows[:, None] * HEAD_DIM + width[None, :], mask=k_mask, other=0.0)
    else:  # halves padded to a power of two (head_dim 48, 96): copy column of each slot
        column = (width // HALF_PAD) * half_dim + width % HALF_PAD
        k_mask = row_ok[:, None] & ((width % HALF_PAD) < half_dim)[None, :]
        k = tl.load(KR_ROWS + rows[:, None] * HEAD_DIM + column[None, :], mask=k_mask, other=0.0)
    if ROUND_IN_FP32 and DTYPE == tl.bfloat16:
        k = k.to(tl.float32)  # exact; see _to_dot_dtype
    qk = tl.dot(q_flat, tl.trans(k), input_precision=DOT_PRECISION)
    if MASK_KEYS:
        qk = tl.where(row_ok[None, :], qk, float("-inf"))
    unscaled = tl.full([q_flat.shape[0]], 1.0, tl.float32)  # the softmax scale is in q already
    p, acc, l_i, m_i = _lazy_softmax_step(qk, unscaled, acc, l_i, m_i, RESCALE_SLACK, 0.0)
    dim = tl.arange(0, DIM_PAD)
    physical = tl.where(rows < num_video, rows, rows + num_anchor)  # skip the anchor rows of V
    v_ptrs = V_ROWS + physical[:, None] * stride_vl + dim[None, :]
    v_mask = row_ok[:, None] & (dim[None, :] < HEAD_DIM)
    acc = _weighted_values(acc, p, v_ptrs, v_mask, v_inv, DTYPE, False, DOT_PRECISION, ROUND_IN_FP32)
    return acc, l_i, m_i


@triton.jit
def _video_queries(
    Q, K, V, COS, SIN, K_SCALE, V_SCALE, KR, OUT,
    q_base, k_base, v_base, o_base, kr_base, pid_bh,
    stride_ql, stride_kl, stride_vl, stride_ol,
    num_video, num_anchor, pid_m,
    QK_SCALE: tl.constexpr, HEAD_DIM: tl.constexpr, HALF_PAD: tl.constexpr, DIM_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, FP8: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ROUND_IN_FP32: tl.constexpr, SPLIT_LOADS: tl.constexpr, ROTATED_KEYS: tl.constexpr, FLAT_KEYS: tl.constexpr,
    TMA_KEYS: tl.constexpr,
):
    """Attention output for BLOCK_M video queries: 2N video keys + the folded anchor key."""
    half_dim: tl.constexpr = HEAD_DIM // 2
    num_keys = 2 * num_video
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    is_source = offs_m < num_video
    phys_m = tl.where(is_source, offs_m, offs_m + num_anchor)
    pos_m = tl.where(is_source, offs_m, offs_m - num_video)
    row_ok = offs_m < num_keys
    half = tl.arange(0, HALF_PAD)
    dim = tl.arange(0, DIM_PAD)

    q_mask = row_ok[:, None] & (half[None, :] < half_dim)
    q_even, q_odd = _load_pairs(Q + q_base, phys_m, row_ok, stride_ql, HEAD_DIM, HALF_PAD, DIM_PAD, SPLIT_LOADS)
    t_ptrs = pos_m[:, None] * half_dim + half[None, :]
    cos = tl.load(COS + t_ptrs, mask=q_mask, other=0.0)
    sin = tl.load(SIN + t_ptrs, mask=q_mask, other=0.0)
    # The softmax scale (times log2(e), so the loop can use exp2) is folded into q once here
    # instead of scaling every BLOCK_M x BLOCK_N logit tile.
    qr_even = (q_even * cos - q_odd * sin) * QK_SCALE
    qr_odd = (q_even * sin + q_odd * cos) * QK_SCALE
    if FP8:
        q_amax = tl.maximum(tl.max(tl.abs(qr_even), 1), tl.max(tl.abs(qr_odd), 1))
        q_row_scale = tl.maximum(q_amax, 1e-30) / FP8_E4M3_MAX
        qd_even = _to_e4m3(qr_even / q_row_scale[:, None], ROUND_IN_FP32)
        qd_odd = _to_e4m3(qr_odd / q_row_scale[:, None], ROUND_IN_FP32)
    else:
        q_row_scale = tl.full([BLOCK_M], 1.0, tl.float32)
        qd_even = _to_dot_dtype(qr_even, Q.dtype.element_ty, ROUND_IN_FP32)
        qd_odd = _to_dot_dtype(qr_odd, Q.dtype.element_ty, ROUND_IN_FP32)

    v_scale = tl.full([DIM_PAD], 1.0, tl.float32)
    if FP8:
        # This (batch, head)'s scales from the pre-pass: its key blocks, v's channels.
        K_SCALE += pid_bh * tl.cdiv(num_video, FP8_KEY_BLOCK)
        v_scale = tl.load(V_SCALE + pid_bh * HEAD_DIM + dim, mask=dim < HEAD_DIM, other=1.0)
    v_inv = 1.0 / v_scale

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, DIM_PAD], tl.float32)
    if ROTATED_KEYS and FLAT_KEYS:
        # The copy's rows as key tiles of BLOCK_N, one full-width dot each: q joined into the
        # copy's channel order once.
        q_flat = tl.reshape(tl.permute(tl.join(qd_even, qd_odd), (0, 2, 1)), [BLOCK_M, 2 * HALF_PAD])
    if ROTATED_KEYS and FLAT_KEYS and TMA_KEYS:
        # Tensor descriptors (head_dim a power of two): the copy as [2N, D] rows of this
        # (batch, head), V as its [L, D] rows.
        k_desc = tl.make_tensor_descriptor(KR + kr_base, shape=[2 * num_video, HEAD_DIM], strides=[HEAD_DIM, 1],
                                           block_shape=[BLOCK_N, HEAD_DIM])
        v_desc = tl.make_tensor_descriptor(V + v_base, shape=[2 * num_video + num_anchor, HEAD_DIM],
                                           strides=[stride_vl, 1], block_shape=[BLOCK_N, HEAD_DIM])
        unscaled = tl.full([BLOCK_M], 1.0, tl.float32)  # the softmax scale is in q already
        acc, l_i, m_i = _attend_described_rows(acc, l_i, m_i, q_flat, unscaled, k_desc, v_desc, 0, 0, num_video,
                                               v_inv, V.dtype.element_ty, BLOCK_N, DOT_PRECISION, ROUND_IN_FP32, True)
        acc, l_i, m_i = _attend_described_rows(acc, l_i, m_i, q_flat, unscaled, k_desc, v_desc, num_video,
                                               num_video + num_anchor, num_video, v_inv, V.dtype.element_ty,
                                               BLOCK_N, DOT_PRECISION, ROUND_IN_FP32, True)
    elif ROTATED_KEYS and FLAT_KEYS:
        # The 2N rows as one sequence (a tile may straddle source and target). Full tiles
        # unmasked; only the last, partial one is masked.
        full_keys = (2 * num_video // BLOCK_N) * BLOCK_N
        for start in range(0, full_keys, BLOCK_N):
            acc, l_i, m_i = _attend_copied_rows(
                acc, l_i, m_i, q_flat, KR + kr_base, V + v_base, stride_vl, start, num_video, num_anchor, v_inv,
                V.dtype.element_ty, HEAD_DIM, HALF_PAD, DIM_PAD, BLOCK_N, False, DOT_PRECISION, ROUND_IN_FP32,
            )
        if full_keys < 2 * num_video:
            acc, l_i, m_i = _attend_copied_rows(
                acc, l_i, m_i, q_flat, KR + kr_base, V + v_base, stride_vl, full_keys, num_video, num_anchor, v_inv,
                V.dtype.element_ty, HEAD_DIM, HALF_PAD, DIM_PAD, BLOCK_N, True, DOT_PRECISION, ROUND_IN_FP32,
            )
    else:
        # The loop runs over positions: each step takes BLOCK_N source and BLOCK_N target
        # keys. Full steps run unmasked; only the last, partial one pays for the key mask.
        full_end = (num_video // BLOCK_N) * BLOCK_N
        for start_p in range(0, full_end, BLOCK_N):
            acc, l_i, m_i = _attend_positions(
                acc, l_i, m_i, qd_even, qd_odd, q_row_scale, K, V, COS, SIN, K_SCALE, v_inv, KR,
                k_base, v_base, kr_base, stride_kl, stride_vl, start_p, num_video, num_anchor,
                HEAD_DIM, HALF_PAD, DIM_PAD, BLOCK_N, FP8, False, DOT_PRECISION, ROUND_IN_FP32, SPLIT_LOADS,
                ROTATED_KEYS,
            )
        if full_end < num_video:
            acc, l_i, m_i = _attend_positions(
                acc, l_i, m_i, qd_even, qd_odd, q_row_scale, K, V, COS, SIN, K_SCALE, v_inv, KR,
                k_base, v_base, kr_base, stride_kl, stride_vl, full_end, num_video, num_anchor,
                HEAD_DIM, HALF_PAD, DIM_PAD, BLOCK_N, FP8, True, DOT_PRECISION, ROUND_IN_FP32, SPLIT_LOADS,
                ROTATED_KEYS,
            )

    if FP8:
        acc = acc * (v_scale / FP8_E4M3_MAX)[None, :]  # back to v's units (see _weighted_values)

    # Anchor keys: each has logit exactly 0, so together they are one key of weight A and
    # value mean(v_anchor), i.e. weight exp2(0 - m) per anchor times sum(v_anchor).
    anchor_v_sum = tl.zeros([DIM_PAD], tl.float32)
    for a0 in range(0, num_anchor, BLOCK_N):
        offs_a = a0 + tl.arange(0, BLOCK_N)
        a_mask = (offs_a[:, None] < num_anchor) & (dim[None, :] < HEAD_DIM)
        va = tl.load(V + v_base + (num_video + offs_a)[:, None] * stride_vl + dim[None, :], mask=a_mask, other=0.0)
        anchor_v_sum += tl.sum(va.to(tl.float32), 0)
    out = _fold_anchor_keys(acc, l_i, m_i, anchor_v_sum, num_anchor)
    o_mask = row_ok[:, None] & (dim[None, :] < HEAD_DIM)
    tl.store(OUT + o_base + phys_m[:, None] * stride_ol + dim[None, :], _to_dot_dtype(out, OUT.dtype.element_ty, ROUND_IN_FP32).to(OUT.dtype.element_ty), mask=o_mask)


@triton.jit
def _fold_anchor_keys(acc, l_i, m_i, anchor_v_sum, num_anchor):
    """The attention output once the loop has seen every video key: the A anchor keys, each
    of logit exactly 0, join the online-softmax state as one key of weight A and value
    mean(v_anchor), i.e. weight exp2(0 - m) per anchor times sum(v_anchor)."""
    has_anchor = num_anchor > 0
    # With anchors the running max must include the anchor logit 0; without, it must not
    # (exp2(-m) of a very negative m would overflow), hence the selects.
    m_fold = tl.where(has_anchor, tl.maximum(m_i, 0.0), m_i)
    anchor_weight = tl.where(has_anchor, tl.exp2(0.0 - m_fold), 0.0)
    alpha = tl.exp2(m_i - m_fold)
    acc = acc * alpha[:, None] + anchor_weight[:, None] * anchor_v_sum[None, :]
    l_i = l_i * alpha + anchor_weight * num_anchor
    return acc / l_i[:, None]


@triton.jit
def _anchor_queries(
    V, OUT, v_base, o_base, stride_vl, stride_ol, num_video, num_anchor,
    HEAD_DIM: tl.constexpr, DIM_PAD: tl.constexpr, BLOCK_N: tl.constexpr, ROUND_IN_FP32: tl.constexpr,
):
    """Anchor queries have q = 0: uniform attention, output mean(v) over the whole sequence."""
    seq_len = 2 * num_video + num_anchor
    dim = tl.arange(0, DIM_PAD)
    total = tl.zeros([DIM_PAD], tl.float32)
    for r0 in range(0, seq_len, BLOCK_N):
        rows = r0 + tl.arange(0, BLOCK_N)
        mask = (rows[:, None] < seq_len) & (dim[None, :] < HEAD_DIM)
        v = tl.load(V + v_base + rows[:, None] * stride_vl + dim[None, :], mask=mask, other=0.0)
        total += tl.sum(v.to(tl.float32), 0)
    mean = total / seq_len
    for a0 in range(0, num_anchor, BLOCK_N):
        offs_a = a0 + tl.arange(0, BLOCK_N)
        mask = (offs_a[:, None] < num_anchor) & (dim[None, :] < HEAD_DIM)
        tile = tl.zeros([BLOCK_N, DIM_PAD], tl.float32) + mean[None, :]
        tl.store(
            OUT + o_base + (num_video + offs_a)[:, None] * stride_ol + dim[None, :],
            _to_dot_dtype(tile, OUT.dtype.element_ty, ROUND_IN_FP32).to(OUT.dtype.element_ty), mask=mask,
        )


@triton.jit
def anchor_attention_fwd(
    Q, K, V, COS, SIN, K_SCALE, V_SCALE, KR,
    stride_qb, stride_ql, stride_qh,
    stride_kb, stride_kl, stride_kh,
    stride_vb, stride_vl, stride_vh,
    stride_ob, stride_ol, stride_oh,
    num_heads, num_video, num_anchor,
    OUT,
    QK_SCALE: tl.constexpr, HEAD_DIM: tl.constexpr, HALF_PAD: tl.constexpr, DIM_PAD: tl.constexpr,
    FP8: tl.constexpr, DOT_PRECISION: tl.constexpr, ROUND_IN_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_LOADS: tl.constexpr, ROTATED_KEYS: tl.constexpr,
    FLAT_KEYS: tl.constexpr, TMA_KEYS: tl.constexpr,
):
    """Grid (cdiv(2N, BLOCK_M) + (A > 0), B * heads).

    Parameters are ordered inputs, integer scalars, output (the order an ahead-of-time plugin
    passes them in); the last dimension of every tensor must be contiguous. K_SCALE / V_SCALE:
    the FP8 scales from `fp8_scales` (float32 [B * heads, cdiv(N, FP8_KEY_BLOCK)] and
    [B * heads, head_dim]); None (compiled out) for native precision. KR: the rotated key copy
    of `rotate_keys` when ROTATED_KEYS, else None (compiled out). FLAT_KEYS (with
    ROTATED_KEYS only): the loop takes BLOCK_N rows of the copy a step, one full-width dot
    each, instead of BLOCK_N positions (source and target keys, two half-width dots each).
    TMA_KEYS (with FLAT_KEYS, head_dim a power of two): the copy's and V's tiles arrive through
    tensor descriptors (Hopper's TMA; a scratch allocation per launch, so JIT only).
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // num_heads
    h = pid_bh % num_heads
    # Batch offsets in int64: B * L * heads * D can pass 2**31 at the real sizes.
    q_base = b.to(tl.int64) * stride_qb + h * stride_qh
    k_base = b.to(tl.int64) * stride_kb + h * stride_kh
    v_base = b.to(tl.int64) * stride_vb + h * stride_vh
    o_base = b.to(tl.int64) * stride_ob + h * stride_oh
    kr_base = pid_bh.to(tl.int64) * (2 * num_video * HEAD_DIM)  # the copy is [B * heads, 2N, D]
    if pid_m < tl.cdiv(2 * num_video, BLOCK_M):
        _video_queries(
            Q, K, V, COS, SIN, K_SCALE, V_SCALE, KR, OUT, q_base, k_base, v_base, o_base, kr_base, pid_bh,
            stride_ql, stride_kl, stride_vl, stride_ol, num_video, num_anchor, pid_m,
            QK_SCALE, HEAD_DIM, HALF_PAD, DIM_PAD, BLOCK_M, BLOCK_N, FP8, DOT_PRECISION, ROUND_IN_FP32,
            SPLIT_LOADS, ROTATED_KEYS, FLAT_KEYS, TMA_KEYS,
        )
    else:
        _anchor_queries(
            V, OUT, v_base, o_base, stride_vl, stride_ol, num_video, num_anchor, HEAD_DIM, DIM_PAD, BLOCK_N, ROUND_IN_FP32,
        )


@triton.jit
def _rotated_video_rows(
    X, COS, SIN, pid_bh, stride_xb, stride_xl, stride_xh, num_heads, num_video, num_anchor,
    HEAD_DIM: tl.constexpr, HALF_PAD: tl.constexpr, DIM_PAD: tl.constexpr, BLOCK: tl.constexpr,
):
    """This program's BLOCK rows of X's video sequence (source rows, then target rows past the
    anchors) rotated in float32, for the pre-passes that write rotated copies: (rotated even
    channels, rotated odd channels, the row numbers 0..2N, the mask of real rows, the mask
    of real [row, channel] pairs)."""
    half_dim: tl.constexpr = HEAD_DIM // 2
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    row_ok = rows < 2 * num_video
    is_source = rows < num_video
    position = tl.where(is_source, rows, rows - num_video)
    x_base = (pid_bh // num_heads).to(tl.int64) * stride_xb + (pid_bh % num_heads) * stride_xh
    even, odd = _load_pairs(X + x_base, tl.where(is_source, rows, rows + num_anchor), row_ok, stride_xl,
                            HEAD_DIM, HALF_PAD, DIM_PAD, True)  # whole rows, vector loads
    half = tl.arange(0, HALF_PAD)
    mask = row_ok[:, None] & (half[None, :] < half_dim)
    t_ptrs = position[:, None] * half_dim + half[None, :]
    cos = tl.load(COS + t_ptrs, mask=mask, other=0.0)
    sin = tl.load(SIN + t_ptrs, mask=mask, other=0.0)
    return even * cos - odd * sin, even * sin + odd * cos, rows, row_ok, mask


@triton.jit
def rotate_keys_fwd(
    K, COS, SIN, KR,
    stride_kb, stride_kl, stride_kh,
    num_heads, num_video, num_anchor,
    HEAD_DIM: tl.constexpr, HALF_PAD: tl.constexpr, DIM_PAD: tl.constexpr,
    BLOCK: tl.constexpr, ROUND_IN_FP32: tl.constexpr,
):
    """Grid (cdiv(2N, BLOCK), B * heads): the rotated video keys, KR [B * heads, 2N, D] with
    source rows then target rows, each row its rotated even channels then its odd ones.
    Rotated in float32 and rounded to K's dtype, as the main loop's in-register rotation."""
    half_dim: tl.constexpr = HEAD_DIM // 2
    pid_bh = tl.program_id(1)
    rot_even, rot_odd, rows, _, mask = _rotated_video_rows(K, COS, SIN, pid_bh, stride_kb, stride_kl, stride_kh,
                                                           num_heads, num_video, num_anchor, HEAD_DIM, HALF_PAD,
                                                           DIM_PAD, BLOCK)
    dtype = KR.dtype.element_ty
    half = tl.arange(0, HALF_PAD)
    out = KR + pid_bh.to(tl.int64) * (2 * num_video * HEAD_DIM) + rows[:, None] * HEAD_DIM + half[None, :]
    tl.store(out, _to_dot_dtype(rot_even, dtype, ROUND_IN_FP32).to(dtype), mask=mask)
    tl.store(out + half_dim, _to_dot_dtype(rot_odd, dtype, ROUND_IN_FP32).to(dtype), mask=mask)


# Under TRITON_INTERPRET=1 triton.jit returns an interpreter object instead of a JITFunction.
_INTERPRETED = not isinstance(anchor_attention_fwd, triton.runtime.JITFunction)


def _config(block_m: int, block_n: int, num_warps: int, num_stages: int, split_loads: bool = False,
            flat_keys: bool = False, tma_keys: bool = False, rotated_copies: bool = False) -> triton.Config:
    """rotated_copies: run kernels/rotated_copies.py's kernel instead (with flat_keys and
    tma_keys; its own autotune list, ROTATED_COPIES_CONFIGS)."""
    kwargs = {"BLOCK_M": block_m, "BLOCK_N": block_n, "SPLIT_LOADS": split_loads, "FLAT_KEYS": flat_keys,
              "TMA_KEYS": tma_keys}
    if rotated_copies:
        kwargs["ROTATED_COPIES"] = True
    return triton.Config(kwargs, num_warps=num_warps, num_stages=num_stages)


# BLOCK_N counts positions: each loop step attends to BLOCK_N source + BLOCK_N target keys.
# Configs were chosen from the compiled SASS (D=128, bf16; cuobjdump on CPU-built cubins):
# register spills, shared memory, and how the q/k tiles are read.
# Hopper (228 KB shared memory, wgmma): 128-row query tiles over 8 warps (two warpgroups).
# With split loads the q/k rows are read as 16-byte vectors and every global load of the
# loop becomes an asynchronous copy that the pipeline overlaps with the dots (SASS: 0 LDG,
# 36 LDGSTS, no spills for 128x32); the strided reads stay as scalar 2-byte loads (32 LDG
# that stall the loop) and remain a candidate in case the autotuner finds them faster.
HOPPER_CONFIGS = (
    _config(128, 32, 8, 3, split_loads=True),
    _config(128, 32, 8, 4, split_loads=True),
    _config(128, 32, 8, 3),
    _config(128, 64, 8, 2),
    _config(64, 32, 4, 3, split_loads=True),
)
# Keys rotated once (KeyRotation.ONCE): without the in-loop rotation the loop needs far fewer
# registers (128x32: 219 instead of 255 under triton 3.6), and 64-position key tiles (128
# keys a step) compile without spills (benchmarks/kernel_sass.py), so Hopper gets larger tiles.
# Three loops are candidates: positions (as in-loop), FLAT_KEYS (BLOCK_N counts keys, not
# positions: the copy as one key sequence, one full-width dot per tile, the loop of a plain
# flash-attention kernel) and its TMA_KEYS form (tiles loaded by the tensor memory
# accelerator). Each alone on the H100 of 2026-11-26 (benchmarks/attention.py --candidate,
# B=2, 40 heads, bf16; ms at 49 / 81 frames): 128x64 s3 positions 142.0 / 379.5 (476 / 464
# TFLOP/s), 128x128 s3 flat 143.5 / 379.3, 128x64 s3 flat TMA 148.7 / 394.7. Slower, so not
# listed: 128x64 s3 flat 148.3 / 404.3, 64x64 w4 s3 flat 149.5 / 403.4 (one warpgroup, two
# programs an SM), 64x64 w4 s2 flat TMA 157.1, 128x128 s2 flat TMA 159.2, 128x64 s2
# positions 166.4, 64x64 w4 s2 flat 184.8, 128x64 s2 flat 207.6. None reaches torch's cuDNN
# attention (117 ms at 49 frames): compiled for sm_90, each step waits for all its wgmma
# dots (WARPGROUP.DEPBAR 0) before its softmax, so the tensor cores idle while it runs
# (docs/BENCHMARKS.md).
ROTATED_KEYS_HOPPER_CONFIGS = (
    _config(128, 64, 8, 3, split_loads=True),
    _config(128, 128, 8, 3, split_loads=True, flat_keys=True),
    _config(128, 64, 8, 3, split_loads=True, flat_keys=True, tma_keys=True),
)
# kernels/rotated_copies.py's kernel (q, keys and values copied once, one loop over 2N keys;
# 96-128 KiB shared, no spills), what keys="copies" autotunes over. Each alone on the H100 of
# 2026-11-26 (benchmarks/rotated_copies.py, B=2, 40 heads, bf16, ms at 49 frames): 128x64 w4
# s2 133.8 (505 TFLOP/s; the fastest Triton loop measured, torch's cuDNN attention 118.8 in
# the same run), 128x64 w8 s3 143.5, 128x64 w4 s3 149.0; slower: 128x128 w8 s2 161.2,
# 128x64 w8 s2 180.1, 128x128 w4 s2 392.4.
ROTATED_COPIES_CONFIGS = (
    _config(128, 64, 4, 2, split_loads=True, flat_keys=True, tma_keys=True, rotated_copies=True),
    _config(128, 64, 8, 3, split_loads=True, flat_keys=True, tma_keys=True, rotated_copies=True),
    _config(128, 64, 4, 3, split_loads=True, flat_keys=True, tma_keys=True, rotated_copies=True),
)
# kernels/fp8_copies.py's kernel (precision="fp8", keys="copies": e4m3 copies of the rotated
# q and k and of v transposed, one loop; key tiles of 32-128 keys, FP8_KEY_BLOCK's divisors).
# Chosen from the compiled sm_90 code (benchmarks/kernel_sass.py, D=128; Triton 3.6 and 3.9
# alike): these compile to QGMMA without spills. 64x128 w4 (170 registers, 72-104 KiB) lets
# two programs share an SM, whose warpgroups then overlap one's softmax with the other's
# dots; 128x128 w8 (177-189 registers) runs one program of two warpgroups an SM. Spilling,
# so not listed: 128x128 w4 (574 spill instructions), 256x128 w8 (574). Not yet timed on a GPU.
FP8_COPIES_CONFIGS = (
    _config(128, 128, 8, 2, split_loads=True, flat_keys=True, tma_keys=True, rotated_copies=True),
    _config(64, 128, 4, 2, split_loads=True, flat_keys=True, tma_keys=True, rotated_copies=True),
    _config(64, 128, 4, 3, split_loads=True, flat_keys=True, tma_keys=True, rotated_copies=True),
    _config(128, 64, 4, 2, split_loads=True, flat_keys=True, tma_keys=True, rotated_copies=True),
    _config(128, 128, 8, 3, split_loads=True, flat_keys=True, tma_keys=True, rotated_copies=True),
)
# Ampere / Ada (100-164 KB shared memory, mma.sync): 4-warp tiles spill inside the loop, so
# 8 warps and shorter key steps; 128x32 is the one that fp8 (BLOCK_N >= 32) can use on Ada
# (with bf16 it spills; the autotuner weighs that). Split loads add spills here: not used.
AMPERE_CONFIGS = (
    _config(128, 16, 8, 2),
    _config(128, 16, 8, 3),
    _config(128, 32, 8, 2),
)
# float32 inputs (exact fp32 dots: parity checks, not the fast path) need twice the shared
# memory of 16-bit ones: at head_dim 96/128 the lists above take 256-336 KiB on Hopper (it
# has 227 KiB) and 120-176 KiB on Ada (99 KiB). These take 80-208 KiB at head_dim 128; the
# first fits every GPU, so it is also the SAMA_RT_AUTOTUNE=0 choice.
FLOAT32_CONFIGS = (
    _config(64, 16, 4, 2),
    _config(64, 32, 4, 2, split_loads=True),
    _config(64, 32, 4, 3, split_loads=True),
    _config(128, 16, 8, 2),
)
# The interpreter must get exactly one config (benchmarking several needs a GPU driver);
# small tiles so that tests with tiny shapes still cross tile and source/target boundaries.
INTERPRETER_CONFIG = _config(16, 16, 4, 1, split_loads=True)
_CONFIG_LISTS = {"hopper": HOPPER_CONFIGS, "hopper-rotated-keys": ROTATED_KEYS_HOPPER_CONFIGS,
                 "ampere": AMPERE_CONFIGS, "float32": FLOAT32_CONFIGS}
_LIST_OF_CONFIG = {id(c): name for name, configs in _CONFIG_LISTS.items() for c in configs}


# Set when an autotuning run with TMA_KEYS candidates failed in this process (see _launch).
_TMA_DISABLED = False


def _tensor_descriptors_fit(named_args, head_dim: int) -> bool:
    """Whether TMA_KEYS configs can describe this call's tensors: Triton has device-side
    tensor descriptors (and they have not failed here, nor were they switched off with
    SAMA_RT_ATTENTION_TMA=0), head_dim is a power of two (a descriptor's block shape must
    be), and V's base address and strides are 16-byte multiples (TMA's alignment rule)."""
    if _TMA_DISABLED or os.environ.get("SAMA_RT_ATTENTION_TMA") == "0" or not hasattr(tl, "make_tensor_descriptor"):
        return False
    if head_dim < 16 or head_dim & (head_dim - 1):
        return False
    v = named_args["V"]
    size = v.element_size()
    return v.data_ptr() % 16 == 0 and all(named_args[f"stride_v{d}"] * size % 16 == 0 for d in "blh")


def _prune_configs(configs, named_args, **kwargs):
    """Keep the configs made for the GPU the tensors live on, the input dtype and where the
    keys are rotated (and legal for fp8 dots)."""
    major, _ = torch.cuda.get_device_capability(named_args["Q"].device)
    if named_args["Q"].dtype == torch.float32:
        wanted = "float32"
    elif major >= 9:
        wanted = "hopper-rotated-keys" if kwargs.get("ROTATED_KEYS") else "hopper"
    else:
        wanted = "ampere"
    chosen = [c for c in configs if _LIST_OF_CONFIG[id(c)] == wanted]
    if not _tensor_descriptors_fit(named_args, kwargs.get("HEAD_DIM", 0)):
        chosen = [c for c in chosen if not c.kwargs.get("TMA_KEYS")]
    if kwargs.get("FP8"):
        # fp8 tensor-core dots need a reduction dimension of at least 32 (p.v reduces BLOCK_N).
        chosen = [c for c in chosen if c.kwargs["BLOCK_N"] >= 32]
    if not chosen:
        raise RuntimeError(f"no anchor-attention config for compute capability {major}.x")
    if os.environ.get("SAMA_RT_AUTOTUNE") == "0":
        # The list's first config, no benchmarking: for test runs that compile the kernel
        # at many small shapes, where tuning each one would cost minutes and measure nothing.
        return chosen[:1]
    return chosen


if _INTERPRETED:
    _tuned_kernel = triton.autotune(configs=[INTERPRETER_CONFIG],
                                    key=["num_video", "num_anchor", "HEAD_DIM", "FP8", "ROTATED_KEYS"])(
        anchor_attention_fwd
    )
else:
    _tuned_kernel = triton.autotune(
        configs=[c for configs in _CONFIG_LISTS.values() for c in configs],
        key=["num_video", "num_anchor", "HEAD_DIM", "FP8", "ROTATED_KEYS"],
        prune_configs_by={"early_config_prune": _prune_configs},
    )(anchor_attention_fwd)


def config_name(config: triton.Config) -> str:
    """A config as "128x32 w8 s3 split" (tile, warps, stages, q/k loads; " flat" for FLAT_KEYS)."""
    loads = "split" if config.kwargs.get("SPLIT_LOADS") else "strided"
    flat = " flat" if config.kwargs.get("FLAT_KEYS") else ""
    tma = " tma" if config.kwargs.get("TMA_KEYS") else ""
    copies = " copies" if config.kwargs.get("ROTATED_COPIES") else ""
    return (f"{config.kwargs['BLOCK_M']}x{config.kwargs['BLOCK_N']} w{config.num_warps} s{config.num_stages} "
            f"{loads}{flat}{tma}{copies}")


def parse_config_name(name: str) -> triton.Config:
    """The config a `config_name` names ("128x64 w8 s3 split flat"), for benchmarks that time
    one configuration, listed or not."""
    match = re.fullmatch(r"(\d+)x(\d+) w(\d+) s(\d+) (split|strided)( flat)?( tma)?( copies)?", name.strip())
    if match is None:
        raise ValueError(f"not a config name: {name!r} (expected e.g. '128x64 w8 s3 split flat')")
    block_m, block_n, warps, stages = (int(g) for g in match.groups()[:4])
    return _config(block_m, block_n, warps, stages, split_loads=match[5] == "split", flat_keys=bool(match[6]),
                   tma_keys=bool(match[7]), rotated_copies=bool(match[8]))


# The autotuner whose kernel ran last (this module's or kernels/rotated_copies.py's), and how
# to name its configs: for `tuned_config` and `autotune_timings`.
_last_tuned: list = []


def _ran(tuner, name_of) -> None:
    _last_tuned[:] = [tuner, name_of]


def tuned_config() -> str | None:
    """The configuration the autotuner ran last (`config_name`; kernels/rotated_copies.py's
    end in " copies"), for the benchmarks to report; None before any run."""
    if not _last_tuned:
        return None
    tuner, name_of = _last_tuned
    config = getattr(tuner, "best_config", None)
    return None if config is None else name_of(config)


def autotune_timings(run) -> dict[str, float | None]:
    """Call `run()` and return what the autotuner measured during it: the median milliseconds
    of each candidate config by `config_name` (None: it failed to compile or run), or {} when
    it measured nothing (a shape already tuned, or the interpreter's single config; a lone
    candidate left by pruning, as with SAMA_RT_AUTOTUNE=0, is still timed)."""
    from .rotated_copies import tuned_kernel as rotated_copies_tuner

    for tuner in (_tuned_kernel, rotated_copies_tuner):
        tuner.configs_timings = {}
    run()
    if not _last_tuned:
        return {}
    tuner, name_of = _last_tuned
    out = {}
    for config, timing in (getattr(tuner, "configs_timings", None) or {}).items():
        ms = float(timing[0] if isinstance(timing, (list, tuple)) else timing)  # (median, p20, p80)
        out[name_of(config)] = ms if math.isfinite(ms) else None
    return out


def padded_dims(head_dim: int, fp8: bool) -> tuple[int, int]:
    """(HALF_PAD, DIM_PAD): power-of-two widths of the rotated halves and of v.

    Dots need power-of-two shapes and a reduction dimension >= 16 (>= 32 for fp8); channels
    past head_dim are masked to zero, so they add nothing to either dot.
    """
    half_pad = max(triton.next_power_of_2(head_dim // 2), 32 if fp8 else 16)
    dim_pad = max(triton.next_power_of_2(head_dim), 16)
    return half_pad, dim_pad


def dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs get exact fp32 dots; tf32 would be ~1e-3 off and break parity tests. Under
    # the interpreter bf16 dots run in float32 on bf16-rounded operands (_to_dot_dtype).
    return "ieee" if dtype == torch.float32 or (_INTERPRETED and dtype == torch.bfloat16) else "tf32"


def grid_size(batch: int, num_heads: int, num_video: int, num_anchor: int, block_m: int) -> tuple[int, int]:
    """Launch grid: one program per BLOCK_M video queries, plus one for the anchor queries."""
    return triton.cdiv(2 * num_video, block_m) + (1 if num_anchor > 0 else 0), batch * num_heads


# --------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------


def _check_inputs(q, k, v, cos, sin, num_anchor: int) -> tuple[int, int, int, int, int]:
    """Validate the contract; returns (B, L, heads, head_dim, N)."""
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"q, k, v must all be [B, L, heads, head_dim]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in _SUPPORTED_DTYPES:
        raise ValueError(f"q, k, v must share one of {_SUPPORTED_DTYPES}; got {q.dtype}, {k.dtype}, {v.dtype}")
    batch, seq_len, num_heads, head_dim = q.shape
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for rotary pairs, got {head_dim}")
    if cos.dim() != 2 or cos.shape != sin.shape or cos.shape[1] != head_dim // 2:
        raise ValueError(f"cos/sin must be [N, head_dim/2 = {head_dim // 2}]; got {tuple(cos.shape)}, {tuple(sin.shape)}")
    if cos.dtype != torch.float32 or sin.dtype != torch.float32:
        raise ValueError(f"cos/sin must be float32, got {cos.dtype}, {sin.dtype}")
    num_video = cos.shape[0]
    if num_anchor < 0 or seq_len != 2 * num_video + num_anchor:
        raise ValueError(
            f"sequence length {seq_len} != 2 * N ({num_video}) + num_anchor ({num_anchor}); "
            "the layout is [source N | anchors A | target N]"
        )
    if num_video < 1:
        raise ValueError("need at least one video token")
    return batch, seq_len, num_heads, head_dim, num_video


def fp8_scales(k: torch.Tensor, v: torch.Tensor, num_video: int, num_anchor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The FP8 kernel's key and value scales, from the video rows only (anchor rows are ignored).

    Keys: one scale per (batch, head, block of FP8_KEY_BLOCK positions), over the source and
    target rows of those positions. A rotated channel k_e cos - k_o sin is at most
    sqrt(k_e**2 + k_o**2) <= sqrt(2) * max(|k_e|, |k_o|), so sqrt(2) * max|k| / 448 keeps every
    rotated key in e4m3's range without rotating anything here. Values: one scale per
    (batch, head, channel). Both are float32, [B * heads, blocks] and [B * heads, head_dim].
    """
    batch, _, num_heads, head_dim = k.shape
    video = (slice(0, num_video), slice(num_video + num_anchor, None))
    # max over channels, then over source/target: [B, N, heads]
    k_row = torch.maximum(*(torch.linalg.vector_norm(k[:, rows], ord=float("inf"), dim=-1) for rows in video))
    block = FP8_KEY_BLOCK.value
    blocks = triton.cdiv(num_video, block)
    k_row = F.pad(k_row.float(), (0, 0, 0, blocks * block - num_video))
    k_amax = k_row.view(batch, blocks, block, num_heads).amax(dim=2).transpose(1, 2)
    k_scale = (k_amax * 2**0.5).clamp(min=1e-30) / FP8_E4M3_MAX.value
    return k_scale.reshape(batch * num_heads, blocks).contiguous(), value_scales(v, num_video, num_anchor)


def value_scales(v: torch.Tensor, num_video: int, num_anchor: int) -> torch.Tensor:
    """The FP8 kernels' value scales: one per (batch, head, channel), mapping the largest |v|
    of the video rows onto 448; float32 [B * heads, head_dim]."""
    batch, _, num_heads, head_dim = v.shape
    video = (slice(0, num_video), slice(num_video + num_anchor, None))
    v_amax = torch.maximum(*(torch.linalg.vector_norm(v[:, rows], ord=float("inf"), dim=1) for rows in video))
    v_scale = v_amax.float().clamp(min=1e-30) / FP8_E4M3_MAX.value
    return v_scale.reshape(batch * num_heads, head_dim).contiguous()


ROTATE_KEYS_BLOCK = 64  # rows per program of the key-rotation pre-pass


def rotate_keys(k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_anchor: int) -> torch.Tensor:
    """The video keys rotated once, [B * heads, 2N, head_dim] in k's dtype: source rows then
    target rows, each row's rotated even channels then its odd ones (KeyRotation.ONCE)."""
    batch, seq_len, num_heads, head_dim = k.shape
    num_video = cos.shape[0]
    rotated = torch.empty((batch * num_heads, 2 * num_video, head_dim), dtype=k.dtype, device=k.device)
    half_pad, dim_pad = padded_dims(head_dim, False)
    grid = (triton.cdiv(2 * num_video, ROTATE_KEYS_BLOCK), batch * num_heads)
    rotate_keys_fwd[grid](
        k, cos, sin, rotated, k.stride(0), k.stride(1), k.stride(2), num_heads, num_video, num_anchor,
        HEAD_DIM=head_dim, HALF_PAD=half_pad, DIM_PAD=dim_pad, BLOCK=ROTATE_KEYS_BLOCK, ROUND_IN_FP32=_INTERPRETED,
    )
    return rotated


def _scratch_from_torch(size: int, alignment: int, stream) -> torch.Tensor:
    return torch.empty(size, dtype=torch.int8, device="cuda")  # the current device: see _launch


def _ensure_scratch_allocator() -> None:
    """Kernels with device-side tensor descriptors (TMA_KEYS) ask Triton's allocator for a
    scratch buffer at every launch; give it torch's caching allocator unless the caller has
    set one (Triton's default refuses)."""
    from triton.runtime import _allocation

    current = getattr(getattr(_allocation, "_allocator", None), "get", lambda: None)()
    if current is None or isinstance(current, getattr(_allocation, "NullAllocator", ())):
        triton.set_allocator(_scratch_from_torch)


def _launch(q, k, v, cos, sin, num_anchor: int, scale: float, precision: AttentionPrecision,
            keys: KeyRotation = KeyRotation.IN_LOOP, config: triton.Config | None = None,
            language: KernelLanguage = KernelLanguage.TRITON) -> torch.Tensor:
    """config: run this one configuration instead of the autotuned choice (tests)."""
    batch, seq_len, num_heads, head_dim, num_video = _check_inputs(q, k, v, cos, sin, num_anchor)
    fp8 = precision is AttentionPrecision.FP8
    gluon = language in (KernelLanguage.GLUON, KernelLanguage.GLUON_WS)
    if gluon and (keys is not KeyRotation.COPIES or config is not None):
        raise ValueError("the Gluon kernel is keys='copies' (native or fp8), with its default config")
    if gluon and (q.device.type != "cuda" or torch.cuda.get_device_capability(q.device) < (9, 0)):
        raise ValueError(f"the Gluon kernel runs only compiled, for a Hopper GPU or newer (got {q.device}; Gluon "
                         "has no interpreter): use language='triton'")
    rotated_keys = keys is KeyRotation.ONCE
    rotated_copies = keys is KeyRotation.COPIES or bool(config is not None and config.kwargs.get("ROTATED_COPIES"))
    if fp8 and keys is KeyRotation.ONCE:
        raise ValueError("keys='once' is a native-precision variant; fp8 rotates its keys in the loop "
                         "(keys='in-loop') or quantizes rotated copies of q, k and v once (keys='copies')")
    if config is not None and config.kwargs.get("FLAT_KEYS") and keys is KeyRotation.IN_LOOP:
        raise ValueError("a FLAT_KEYS config reads the rotated key copy: use it with keys='once'")
    if keys is KeyRotation.COPIES and config is not None and not config.kwargs.get("ROTATED_COPIES"):
        raise ValueError("keys='copies' runs kernels/rotated_copies.py: give it one of ROTATED_COPIES_CONFIGS")
    if config is not None and config.kwargs.get("TMA_KEYS"):
        if not config.kwargs.get("FLAT_KEYS"):
            raise ValueError("TMA_KEYS is a form of the flat loop: set FLAT_KEYS too")
        if head_dim & (head_dim - 1):
            raise ValueError(f"TMA_KEYS needs a power-of-two head_dim (a descriptor's block shape), got {head_dim}")
    if config is not None and config.kwargs.get("ROTATED_COPIES") and not config.kwargs.get("TMA_KEYS"):
        raise ValueError("the rotated-copies kernel is a form of the TMA loop: set FLAT_KEYS and TMA_KEYS too")
    if q.device.type == "cuda":
        if fp8 and torch.cuda.get_device_capability(q.device) < (8, 9):
            raise ValueError("fp8 attention needs compute capability 8.9 or newer")
        if rotated_copies and torch.cuda.get_device_capability(q.device) < (9, 0):
            raise ValueError("keys='copies' (kernels/rotated_copies.py, kernels/fp8_copies.py) needs a Hopper GPU "
                             "or newer (tensor-memory-accelerator loads); use keys="
                             + ("'in-loop'" if fp8 else "'once'"))
    elif not _INTERPRETED:
        raise RuntimeError(
            f"anchor_attention runs its Triton kernel on CUDA tensors (got {q.device}); on CPU it "
            "only runs under TRITON_INTERPRET=1. Use anchor_attention_ref for the CPU path."
        )
    # The kernel indexes rows with strides in int32; only batch offsets are int64.
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    for name, t in (("q", q), ("k", k), ("v", v)):
        if seq_len * t.stride(1) + num_heads * t.stride(2) >= 2**31:
            raise ValueError(f"{name} is too large for 32-bit row offsets (stride {t.stride()})")
    cos, sin = cos.contiguous(), sin.contiguous()
    if gluon:
        if language is KernelLanguage.GLUON_WS:
            from .gluon_ws_attention import launch_gluon_ws_attention as launch
        else:
            from .gluon_attention import launch_gluon_attention as launch

        with torch.cuda.device(q.device):
            return launch(q, k, v, cos, sin, num_anchor, scale, fp8=fp8)
    if rotated_copies and fp8:
        from .fp8_copies import launch_fp8_copies

        with torch.cuda.device(q.device) if q.device.type == "cuda" else contextlib.nullcontext():
            return launch_fp8_copies(q, k, v, cos, sin, num_anchor, scale, config)
    if rotated_copies:
        from .rotated_copies import launch_rotated_copies

        with torch.cuda.device(q.device) if q.device.type == "cuda" else contextlib.nullcontext():
            return launch_rotated_copies(q, k, v, cos, sin, num_anchor, scale, config)

    out = torch.empty((batch, seq_len, num_heads, head_dim), dtype=v.dtype, device=v.device)
    half_pad, dim_pad = padded_dims(head_dim, fp8)
    k_scale, v_scale = fp8_scales(k, v, num_video, num_anchor) if fp8 else (None, None)

    def grid(meta):
        return grid_size(batch, num_heads, num_video, num_anchor, meta["BLOCK_M"])

    kernel, meta = _tuned_kernel, {}
    if config is not None:
        kernel = anchor_attention_fwd
        meta = dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)

    if rotated_keys and q.device.type == "cuda":
        _ensure_scratch_allocator()  # TMA_KEYS candidates build their descriptors in scratch
    # Triton launches on the current CUDA device, which need not be the tensors' device.
    with torch.cuda.device(q.device) if q.device.type == "cuda" else contextlib.nullcontext():
        rotated = rotate_keys(k, cos, sin, num_anchor) if rotated_keys else None

        def run():
            kernel[grid](
                q, k, v, cos, sin, k_scale, v_scale, rotated,
                q.stride(0), q.stride(1), q.stride(2),
                k.stride(0), k.stride(1), k.stride(2),
                v.stride(0), v.stride(1), v.stride(2),
                out.stride(0), out.stride(1), out.stride(2),
                num_heads, num_video, num_anchor,
                out,
                QK_SCALE=scale * _LOG2E, HEAD_DIM=head_dim, HALF_PAD=half_pad, DIM_PAD=dim_pad,
                FP8=fp8, DOT_PRECISION=dot_precision(q.dtype), ROUND_IN_FP32=_INTERPRETED, ROTATED_KEYS=rotated_keys,
                **meta,
            )

        global _TMA_DISABLED
        if config is None:
            _ran(_tuned_kernel, config_name)
        try:
            run()
        except Exception as error:  # noqa: BLE001 - re-raised unless a TMA candidate may be the cause
            if config is not None or not rotated_keys or _TMA_DISABLED:
                raise
            # Device-side tensor descriptors are the newest feature the candidates use; the
            # autotuner skips candidates that fail to compile, not ones that fail to launch.
            # Tune again without them (a second failure is raised).
            logger.warning("anchor attention: autotuning failed with the TMA candidates (%s: %s); "
                           "retrying without them", type(error).__name__, error)
            _TMA_DISABLED = True
            run()
    return out


# --------------------------------------------------------------------------------------------
# torch op
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("sama_rt::anchor_attention", mutates_args=())
def _anchor_attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
    num_anchor: int, scale: float, precision: str, keys: str, language: str = "triton",
) -> torch.Tensor:
    return _launch(q, k, v, cos, sin, num_anchor, scale, AttentionPrecision.parse(precision), KeyRotation.parse(keys),
                   language=KernelLanguage.parse(language))


@_anchor_attention_op.register_fake
def _anchor_attention_fake(q, k, v, cos, sin, num_anchor, scale, precision, keys, language="triton"):
    AttentionPrecision.parse(precision)
    KeyRotation.parse(keys)
    KernelLanguage.parse(language)
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError("q, k, v must all be [B, L, heads, head_dim] of one shape")
    return v.new_empty(q.shape)


def _resolve_scale(scale: float | None, head_dim: int) -> float:
    return float(head_dim) ** -0.5 if scale is None else float(scale)


def anchor_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_anchor: int,
    scale: float | None = None,
    precision: AttentionPrecision | str = AttentionPrecision.NATIVE,
    keys: KeyRotation | str = KeyRotation.IN_LOOP,
    language: KernelLanguage | str = KernelLanguage.TRITON,
) -> torch.Tensor:
    """Self-attention over [source N | anchors A | target N] with RoPE applied inside the kernel.

    q, k, v: [B, L, heads, head_dim], L = 2N + num_anchor, q/k not yet rotated (their anchor
    rows are ignored: anchors' rotated q/k are zero by construction). cos, sin: [N, head_dim/2]
    float32 from `rope_tables`. Returns [B, L, heads, head_dim] in v's dtype; scale defaults
    to head_dim ** -0.5. Always launches the Triton kernel (CUDA, or CPU under
    TRITON_INTERPRET=1). keys: where the keys are rotated (see KeyRotation; "once" writes a
    rotated copy of the video keys first, as large as k without its anchor rows). language:
    "gluon" runs keys="copies" as the Gluon kernel, "gluon-ws" as its warp-specialised form
    (see KernelLanguage; Hopper only).
    """
    precision, keys = AttentionPrecision.parse(precision), KeyRotation.parse(keys)
    return _anchor_attention_op(q, k, v, cos, sin, int(num_anchor), _resolve_scale(scale, q.shape[-1]),
                                precision.value, keys.value, KernelLanguage.parse(language).value)


# --------------------------------------------------------------------------------------------
# Reference
# --------------------------------------------------------------------------------------------


def anchor_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_anchor: int,
    scale: float | None = None,
) -> torch.Tensor:
    """Plain-torch implementation of the `anchor_attention` contract, computed in float32.

    RoPE on the video rows, anchor rows of q/k zeroed (their table rows are zero), then full
    softmax attention over the whole sequence. Returns v's dtype.
    """
    _check_inputs(q, k, v, cos, sin, num_anchor)
    cos_full, sin_full = sequence_rope_tables(cos.float(), sin.float(), num_anchor)
    qr = apply_rope(q.float(), cos_full, sin_full)
    kr = apply_rope(k.float(), cos_full, sin_full)
    out = F.scaled_dot_product_attention(
        qr.transpose(1, 2), kr.transpose(1, 2), v.float().transpose(1, 2),
        scale=_resolve_scale(scale, q.shape[-1]),
    )
    return out.transpose(1, 2).to(v.dtype)
