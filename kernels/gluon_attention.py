"""The rotated-copies loop written in Gluon, with the softmax overlapped with the dots.

Compiled for sm_90, every Triton loop of this package waits for all its tensor-core dots
before each softmax (`WARPGROUP.DEPBAR 0`), and Triton 3.6's warp specialisation, which would
hide that, gives wrong results on Hopper (kernels/rotated_copies.py, docs/BENCHMARKS.md).
Gluon, Triton's lower-level dialect, leaves the schedule to the kernel: here each step issues
the next tile's q.k and the previous tile's p.v as asynchronous warpgroup MMAs, waits for the
q.k alone (`warpgroup_mma_wait(1)`: groups complete in order), and runs that tile's softmax
while the p.v is still on the tensor cores, as FlashAttention-3 does within a warpgroup. Key
and value tiles come by TMA into a ring of STAGES slots, each with its own barrier, loaded
STAGES - 1 tiles ahead of their use.

It reads the same three copies as `rotated_copies_fwd` (q and k rotated once by
`rotate_keys`, v without its anchor rows, each [B * heads, 2N, D]), masks the keys past 2N
in the tile that reaches past them, and folds the anchor keys in as one key of logit log(A):
numerically the same as the rotated-copies kernel, up to the order of the additions. With
FP8 it reads the e4m3 copies and scales of kernels/fp8_copies.py instead (v transposed, so
that p.v's second operand is K-major, as e4m3 warpgroup MMAs need), and computes what
`fp8_copies_fwd` computes, rescaling at every tile: p taken as 448 p into e4m3 (the Triton
loop takes 224 p against a lazily moved maximum), the 448 and v's scales divided out in the
epilogue (`anchor_attention(..., precision="fp8", keys="copies", language="gluon")`).

NOT YET RUN ON A GPU. It compiles for sm_90 here (tests/kernels/test_gluon_attention.py checks
the compiled code for the overlap), but Gluon has no interpreter, so its numbers are checked
only on a Hopper GPU: `benchmarks/attention.py --candidate "gluon: 128x64 w8 s2"` times and
checks one config, and the GPU tests compare it with the reference. It is reached as
`anchor_attention(..., keys="copies", language="gluon")` (GLUON_CONFIGS[0]) and the model's
opt-in `--attention triton-gluon`, which must pass the backend self-check first (several
query and key tiles against the reference), so a wrong kernel is refused, not used.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait

from .anchor_attention import _LOG2E, FP8_E4M3_MAX, FP8_KEY_BLOCK, RESCALE_SLACK, _ensure_scratch_allocator
from .rotated_copies import anchor_rows_and_sum, copies_kernel_signature, rotated_copies_inputs

# Configs that compile for sm_90 without spills (triton 3.6 and 3.9, head_dim 128, bf16), as
# "BLOCK_MxBLOCK_N wWARPS sSTAGES": 128x64 w8 (two warpgroups of 64 rows, 158-160 registers),
# 64x64 w4 (158-160 registers, 80 KiB: two programs an SM), 128x32 w4 (one warpgroup of 128
# rows, 235-248), 128x128 w8 (237-239, 160 KiB). 128x64 w4 spills (255 registers, 434-531
# spill instructions, as measured before the key mask moved to the tail tile). None has
# been timed.
# " lazy": the accumulators rescaled only when a row's maximum has grown by more than
# RESCALE_SLACK (as the Triton loops do): 128x64 w8 s2's loop then runs 300 instructions on
# its common path instead of 342 (triton 3.9; 3.6: 295 and 328), 159-164 registers, no
# spills; kept apart, so that the sweep compares both forms of one config.
GLUON_CONFIGS = ("128x64 w8 s2", "64x64 w4 s2", "128x32 w4 s2", "128x128 w8 s2", "128x64 w8 s3", "64x64 w4 s3",
                 "128x64 w8 s2 lazy", "64x64 w4 s2 lazy")
# The FP8 form's configs that compile for sm_90 without spills (triton 3.6 and 3.9): 128x64
# w8 (two warpgroups, 162-168 registers), 64x64 w4 (163-170: two programs an SM), 128x32 w8
# (128-130), 128x32 w4 (one warpgroup of 128 rows, 236-238: two programs an SM). 128-key
# tiles spill (64x128 w4, 128x128 w8: 255 registers, 54-55 spill instructions), unlike the
# Triton FP8 loop's, and so does 128x64 w4 (170-374). None has been timed.
GLUON_FP8_CONFIGS = ("128x64 w8 s2", "64x64 w4 s2", "128x64 w8 s3", "64x64 w4 s3", "128x32 w8 s2", "128x32 w4 s2")

# The FP8 form produces 448 p inside its exp2 (it rescales at every tile: p <= 1).
_LOG2_E4M3_MAX = math.log2(448.0)

# The TMA load is `async_copy_global_to_shared` in Triton 3.6 (the GPU machines') and
# `async_load` in later versions (3.9 here, where the old name raises); same arguments. The
# CTA-wide barrier is `thread_barrier` in 3.6 and `barrier` in 3.9.
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
_cta_barrier = getattr(gl, "barrier", None) or gl.thread_barrier


@gluon.jit
def _load_tile(k_desc, v_desc, k_smem, v_smem, k_bars, v_bars, tile, num_tiles, BLOCK_N: gl.constexpr,
               STAGES: gl.constexpr, V_TRANSPOSED: gl.constexpr):
    """Key and value tile `tile` into ring slot tile % STAGES, by TMA (nothing past the end).
    V_TRANSPOSED: the value copy is [D, keys] (FP8), its tile the columns of those keys."""
    slot = tile % STAGES
    pred = tile < num_tiles
    mbarrier.expect(k_bars.index(slot), k_desc.block_type.nbytes, pred=pred)
    _tma_load(k_desc, [tile * BLOCK_N, 0], k_bars.index(slot), k_smem.index(slot), pred=pred)
    mbarrier.expect(v_bars.index(slot), v_desc.block_type.nbytes, pred=pred)
    if V_TRANSPOSED:
        _tma_load(v_desc, [0, tile * BLOCK_N], v_bars.index(slot), v_smem.index(slot), pred=pred)
    else:
        _tma_load(v_desc, [tile * BLOCK_N, 0], v_bars.index(slot), v_smem.index(slot), pred=pred)


@gluon.jit
def _masked_logits(s, tile, num_keys, BLOCK_N: gl.constexpr, s_layout: gl.constexpr):
    """q.k of one tile, keys past 2N at -inf: only in a tile that reaches past them (the
    last, when 2N is not a multiple of BLOCK_N), so full tiles pay no per-logit select."""
    if (tile + 1) * BLOCK_N > num_keys:
        cols = tile * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        s = gl.where((cols < num_keys)[None, :], s, float("-inf"))
    return s


@gluon.jit
def _row_scale(q_scale, k_scales, tile, BLOCK_N: gl.constexpr, FP8: gl.constexpr):
    """What turns one tile's raw q.k into log2-unit logits, per query row: the softmax scale
    (native), or q's row scale times the tile's key-block scale (FP8, see kernels/fp8_copies.py)."""
    if FP8:
        return q_scale * gl.load(k_scales + tile * BLOCK_N // FP8_KEY_BLOCK)
    else:
        return q_scale


@gluon.jit
def gluon_attention_fwd(
    QR, KR, VR, Q_SCALE, K_SCALE, V_SCALE, ANCHOR_SUM,
    stride_ob, stride_ol, stride_oh,
    num_heads, num_video, num_anchor, keys_pad,
    OUT,
    QK_SCALE: gl.constexpr, HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
    STAGES: gl.constexpr, FP8: gl.constexpr, LOG2_P_SCALE: gl.constexpr, LAZY_RESCALE: gl.constexpr,
    num_warps: gl.constexpr,
):
    """Grid (cdiv(2N, BLOCK_M), B * heads), video queries only. Native: QR, KR, VR the copies
    of `rotated_copies_fwd` (the scales None, keys_pad unused). FP8: the e4m3 copies and scales
    of `fp8_copies_fwd` (VR is v transposed, [B * heads, D, keys_pad]); p is taken times
    2**LOG2_P_SCALE (448) into e4m3, which the epilogue divides out with v's scales."""
    dtype: gl.constexpr = QR.dtype.element_ty
    pid_m = gl.program_id(0)
    pid_bh = gl.program_id(1)
    num_keys = 2 * num_video
    num_tiles = gl.cdiv(num_keys, BLOCK_N)

    # Accumulators of the two dots: q.k [BLOCK_M, BLOCK_N] and p.v [BLOCK_M, HEAD_DIM], the
    # warps stacked along the query rows; p enters p.v from registers. An instruction reduces
    # 32 bytes (16 bf16 or 32 e4m3 values); a register holds 2 or 4 of them.
    mma_k: gl.constexpr = 256 // dtype.primitive_bitwidth
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_N, mma_k])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, mma_k])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout,
                                                 k_width=32 // dtype.primitive_bitwidth)
    q_shared: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, HEAD_DIM], dtype)
    k_shared: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, HEAD_DIM], dtype)

    copy_base = pid_bh.to(gl.int64) * (num_keys * HEAD_DIM)
    q_desc = tma.make_tensor_descriptor(QR + copy_base, shape=[num_keys, HEAD_DIM], strides=[HEAD_DIM, 1],
                                        block_shape=[BLOCK_M, HEAD_DIM], layout=q_shared)
    k_desc = tma.make_tensor_descriptor(KR + copy_base, shape=[num_keys, HEAD_DIM], strides=[HEAD_DIM, 1],
                                        block_shape=[BLOCK_N, HEAD_DIM], layout=k_shared)
    if FP8:
        # e4m3 products read both operands K-major: for p.v that is v transposed, keys contiguous.
        v_shared: gl.constexpr = gl.NVMMASharedLayout.get_default_for([HEAD_DIM, BLOCK_N], dtype)
        v_desc = tma.make_tensor_descriptor(VR + pid_bh.to(gl.int64) * (HEAD_DIM * keys_pad),
                                            shape=[HEAD_DIM, num_keys], strides=[keys_pad, 1],
                                            block_shape=[HEAD_DIM, BLOCK_N], layout=v_shared)
        v_smem = gl.allocate_shared_memory(dtype, [STAGES, HEAD_DIM, BLOCK_N], v_shared)
    else:
        v_desc = tma.make_tensor_descriptor(VR + copy_base, shape=[num_keys, HEAD_DIM], strides=[HEAD_DIM, 1],
                                            block_shape=[BLOCK_N, HEAD_DIM], layout=k_shared)
        v_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], k_shared)

    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_DIM], q_shared)
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], k_shared)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_bars.index(i), count=1)
        mbarrier.init(v_bars.index(i), count=1)

    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    _tma_load(q_desc, [pid_m * BLOCK_M, 0], q_bar, q_smem)
    for i in gl.static_range(STAGES):
        _load_tile(k_desc, v_desc, k_smem, v_smem, k_bars, v_bars, i, num_tiles, BLOCK_N, STAGES, FP8)

    q_scale = _query_scales(Q_SCALE, pid_bh, pid_m * BLOCK_M, num_keys, QK_SCALE, BLOCK_M, FP8, s_layout)
    k_scales = K_SCALE
    if FP8:
        k_scales = K_SCALE + pid_bh * gl.cdiv(num_keys, FP8_KEY_BLOCK)

    # Tile 0: its q.k and softmax (nothing to overlap with yet).
    s_init = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)
    mbarrier.wait(q_bar, 0)
    mbarrier.wait(k_bars.index(0), 0)
    s = warpgroup_mma(q_smem, k_smem.index(0).permute((1, 0)), s_init, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(0, deps=(s, ))
    p, m_i, l_i = _first_softmax_tile(s, num_keys, q_scale, k_scales, BLOCK_N, FP8, LOG2_P_SCALE, s_layout)
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, layout=o_layout)

    for tile in range(1, num_tiles):
        slot = tile % STAGES
        prev = (tile - 1) % STAGES
        # This tile's q.k, then the previous tile's p.v, both in flight.
        mbarrier.wait(k_bars.index(slot), (tile // STAGES) & 1)
        s = warpgroup_mma(q_smem, k_smem.index(slot).permute((1, 0)), s_init, use_acc=False, is_async=True)
        mbarrier.wait(v_bars.index(prev), ((tile - 1) // STAGES) & 1)
        acc = warpgroup_mma(gl.convert_layout(p.to(dtype), p_layout), _value_operand(v_smem, prev, FP8), acc,
                            is_async=True)
        # Wait for the q.k only: its softmax runs while the p.v is still on the tensor cores.
        s = warpgroup_mma_wait(1, deps=(s, ))
        p, m_i, l_i, alpha, moved = _softmax_tile(s, m_i, l_i, tile, num_keys, q_scale, k_scales, BLOCK_N, FP8,
                                                  LOG2_P_SCALE, LAZY_RESCALE, s_layout)
        # The p.v must be done before acc is rescaled and before its slot is refilled, in every
        # warpgroup: one thread issues the refill, and with two warpgroups the other may still
        # be reading the slot.
        acc = warpgroup_mma_wait(0, deps=(acc, ))
        acc = _rescaled(acc, alpha, moved, LAZY_RESCALE, o_layout)
        _cta_barrier()
        _load_tile(k_desc, v_desc, k_smem, v_smem, k_bars, v_bars, tile - 1 + STAGES, num_tiles, BLOCK_N, STAGES,
                   FP8)

    last = (num_tiles - 1) % STAGES
    mbarrier.wait(v_bars.index(last), ((num_tiles - 1) // STAGES) & 1)
    acc = warpgroup_mma(gl.convert_layout(p.to(dtype), p_layout), _value_operand(v_smem, last, FP8), acc,
                        is_async=True)
    acc = warpgroup_mma_wait(0, deps=(acc, ))
    mbarrier.invalidate(q_bar)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(k_bars.index(i))
        mbarrier.invalidate(v_bars.index(i))

    _store_video_rows(acc, m_i, l_i, pid_m * BLOCK_M, pid_bh, V_SCALE, ANCHOR_SUM, OUT, stride_ob, stride_ol,
                      stride_oh, num_heads, num_video, num_anchor, BLOCK_M, HEAD_DIM, FP8, o_layout)


@gluon.jit
def _query_scales(Q_SCALE, pid_bh, row0, num_keys, QK_SCALE: gl.constexpr, BLOCK_M: gl.constexpr, FP8: gl.constexpr,
                  s_layout: gl.constexpr):
    """The per-row factor of `_row_scale` for the BLOCK_M query rows from row0 of (batch,
    head) pid_bh: native, the softmax scale; FP8, q's row scales (softmax scale folded in)."""
    if FP8:
        rows = row0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, s_layout))
        return gl.load(Q_SCALE + pid_bh.to(gl.int64) * num_keys + rows, mask=rows < num_keys, other=1.0)
    else:
        return gl.full([BLOCK_M], QK_SCALE, gl.float32, layout=gl.SliceLayout(1, s_layout))


@gluon.jit
def _first_softmax_tile(s, num_keys, q_scale, k_scales, BLOCK_N: gl.constexpr, FP8: gl.constexpr,
                        LOG2_P_SCALE: gl.constexpr, s_layout: gl.constexpr):
    """(p, m, l) of the first key tile's raw q.k `s`: logits in log2 units are s * row_scale,
    so the scale goes into the exp2's multiply-add and the max is taken of the raw tile (row
    scales are positive), as in _descaled_softmax_step; p comes times 2**LOG2_P_SCALE."""
    s = _masked_logits(s, 0, num_keys, BLOCK_N, s_layout)
    row_scale = _row_scale(q_scale, k_scales, 0, BLOCK_N, FP8)
    m_i = gl.max(s, 1) * row_scale
    p = gl.exp2(s * row_scale[:, None] - (m_i - LOG2_P_SCALE)[:, None])
    return p, m_i, gl.sum(p, 1)


@gluon.jit
def _softmax_tile(s, m_i, l_i, tile, num_keys, q_scale, k_scales, BLOCK_N: gl.constexpr, FP8: gl.constexpr,
                  LOG2_P_SCALE: gl.constexpr, LAZY_RESCALE: gl.constexpr, s_layout: gl.constexpr):
    """(p, m, l, alpha, moved) of key tile `tile` after the running (m_i, l_i): the online
    softmax step of _first_softmax_tile's form. alpha rescales the accumulators, which is due
    only where `moved` (always without LAZY_RESCALE: then moved is a constant True)."""
    s = _masked_logits(s, tile, num_keys, BLOCK_N, s_layout)
    row_scale = _row_scale(q_scale, k_scales, tile, BLOCK_N, FP8)
    m_tile = gl.max(s, 1) * row_scale
    m_new = gl.maximum(m_i, m_tile)
    moved = True
    if LAZY_RESCALE:
        # The reference maximum moves only when some row's has grown by more than
        # RESCALE_SLACK (see _lazy_softmax_step); then acc is rescaled, after its p.v.
        moved = gl.max(m_tile - m_i, 0) > RESCALE_SLACK
        m_new = gl.where(moved, m_new, m_i)
    p = gl.exp2(s * row_scale[:, None] - (m_new - LOG2_P_SCALE)[:, None])
    alpha = gl.exp2(m_i - m_new)
    return p, m_new, l_i * alpha + gl.sum(p, 1), alpha, moved


@gluon.jit
def _rescaled(acc, alpha, moved, LAZY_RESCALE: gl.constexpr, o_layout: gl.constexpr):
    """acc times alpha row by row: in a branch taken only where `moved` with LAZY_RESCALE
    (off the loop's common path), at every tile without."""
    if LAZY_RESCALE:
        if moved:
            acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
    else:
        acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
    return acc


@gluon.jit
def _store_video_rows(acc, m_i, l_i, row0, pid_bh, V_SCALE, ANCHOR_SUM, OUT, stride_ob, stride_ol, stride_oh,
                      num_heads, num_video, num_anchor, BLOCK_M: gl.constexpr, HEAD_DIM: gl.constexpr,
                      FP8: gl.constexpr, o_layout: gl.constexpr):
    """The epilogue: the BLOCK_M video query rows from row0 (of the 2N) of (batch, head)
    pid_bh, their p.v sums `acc` and running (m_i, l_i) finished with the anchor keys and
    written to OUT [B, L, heads, D] (target rows past the anchors)."""
    num_keys = 2 * num_video
    row_layout: gl.constexpr = gl.SliceLayout(1, o_layout)
    dim = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    m_o = gl.convert_layout(m_i, row_layout)
    l_o = gl.convert_layout(l_i, row_layout)
    if FP8:
        # Back to v's units: acc and l both carry p's factor 448, acc also 1 / v's scales.
        acc = acc * (gl.load(V_SCALE + pid_bh * HEAD_DIM + dim) / FP8_E4M3_MAX)[None, :]
        l_o = l_o / FP8_E4M3_MAX
    # The anchor keys (logit exactly 0) as one key of weight A and value mean(v_anchor); see
    # _fold_anchor_keys.
    has_anchor = num_anchor > 0
    m_fold = gl.where(has_anchor, gl.maximum(m_o, 0.0), m_o)
    anchor_weight = gl.where(has_anchor, gl.exp2(0.0 - m_fold), 0.0)
    alpha = gl.exp2(m_o - m_fold)
    anchor_sum = gl.load(ANCHOR_SUM + pid_bh * HEAD_DIM + dim)
    acc = acc * alpha[:, None] + anchor_weight[:, None] * anchor_sum[None, :]
    out = acc / (l_o * alpha + anchor_weight * num_anchor)[:, None]

    rows = row0 + gl.arange(0, BLOCK_M, layout=row_layout)  # source rows, then target past the anchors
    physical = gl.where(rows < num_video, rows, rows + num_anchor)
    o_base = (pid_bh // num_heads).to(gl.int64) * stride_ob + (pid_bh % num_heads) * stride_oh
    gl.store(OUT + o_base + physical[:, None] * stride_ol + dim[None, :], out.to(OUT.dtype.element_ty),
             mask=(rows < num_keys)[:, None])


@gluon.jit
def _value_operand(v_smem, slot, FP8: gl.constexpr):
    """p.v's second operand from a ring slot: [keys, D] (a transposed view of v's FP8 tile)."""
    if FP8:
        return v_smem.index(slot).permute((1, 0))
    else:
        return v_smem.index(slot)


def compile_gluon_attention(config: str, head_dim: int = 128, dtype: str = "bf16", arch: int = 90,
                            fp8: bool = False):
    """Compile the kernel with `config` ("128x64 w8 s2") ahead of time for `arch` (no GPU
    needed) and return Triton's compiled kernel (`.asm["ptx"]`, `.asm["cubin"]`, `.metadata`).
    fp8: the form over e4m3 copies (`dtype` is then the output's)."""
    parsed = parse_gluon_config(config, fp8)
    return compile_over_copies(gluon_attention_fwd, _meta(parsed, fp8), head_dim, dtype, arch, fp8)


def compile_over_copies(fn, meta: dict, head_dim: int, dtype: str, arch: int, fp8: bool, **options):
    """Compile a Gluon kernel over the copies (this module's, kernels/gluon_ws_attention.py's:
    their arguments are the same) with its meta-parameters `meta` (num_warps among them) and
    further compile `options`."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    options = {"num_warps": meta["num_warps"], **options}  # a constexpr of the kernel too
    constexprs = dict(QK_SCALE=head_dim**-0.5 * _LOG2E, HEAD_DIM=head_dim, **meta)
    copies = "fp8e4nv" if fp8 else dtype
    pointers = dict(QR=f"*{copies}", KR=f"*{copies}", VR=f"*{copies}", ANCHOR_SUM="*fp32", OUT=f"*{dtype}")
    if fp8:
        pointers.update(Q_SCALE="*fp32", K_SCALE="*fp32", V_SCALE="*fp32")
    else:
        constexprs.update(Q_SCALE=None, K_SCALE=None, V_SCALE=None)
    signature, attrs = copies_kernel_signature(fn, constexprs, pointers)
    return triton.compile(GluonASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                          target=GPUTarget("cuda", arch, 32), options=options)


@dataclass(frozen=True)
class GluonConfig:
    """One configuration of the kernel, named "128x64 w8 s2" (+ " lazy": rescale lazily)."""

    block_m: int
    block_n: int
    num_warps: int
    stages: int
    lazy_rescale: bool = False


def parse_gluon_config(name: str, fp8: bool = False) -> GluonConfig:
    """The config a name such as "128x64 w8 s2" or "128x64 w8 s2 lazy" gives; fp8: key tiles
    must divide FP8_KEY_BLOCK (one key scale a tile) and reduce over >= 32 keys, and the
    rescale is eager (p must stay within e4m3's range)."""
    match = re.fullmatch(r"(\d+)x(\d+) w(\d+) s(\d+)( lazy)?", name.strip())
    if match is None:
        raise ValueError(f"not a Gluon attention config: {name!r} (expected e.g. '128x64 w8 s2')")
    config = GluonConfig(*(int(g) for g in match.groups()[:4]), lazy_rescale=bool(match[5]))
    if config.num_warps % 4 or config.block_m % (16 * config.num_warps):
        raise ValueError(f"{name!r}: warpgroups of 4 warps, each warp 16 query rows or a multiple (block_m a "
                         f"multiple of 16 * num_warps)")
    if fp8 and (config.block_n < 32 or FP8_KEY_BLOCK.value % config.block_n):
        raise ValueError(f"{name!r}: the FP8 kernel's key tile must be 32, 64 or 128 keys")
    if fp8 and config.lazy_rescale:
        raise ValueError(f"{name!r}: the FP8 form rescales at every tile (its p must stay within e4m3's 448)")
    return config


def launch_gluon_attention(q, k, v, cos, sin, num_anchor: int, scale: float, config: str | None = None,
                           fp8: bool = False) -> torch.Tensor:
    """Run `gluon_attention_fwd` with one config (default: the first of GLUON_CONFIGS, or of
    GLUON_FP8_CONFIGS with fp8) on CUDA, sm_90, fp16/bf16 inputs (others checked by the caller
    as for `launch_rotated_copies`). fp8: over the e4m3 copies of kernels/fp8_copies.py.
    Returns [B, L, heads, head_dim] in v's dtype."""
    parsed = parse_gluon_config(config or (GLUON_FP8_CONFIGS if fp8 else GLUON_CONFIGS)[0], fp8)
    return launch_over_copies(gluon_attention_fwd, parsed.block_m, q, k, v, cos, sin, num_anchor, scale, fp8,
                              _meta(parsed, fp8))


def launch_over_copies(kernel, rows_per_program: int, q, k, v, cos, sin, num_anchor: int, scale: float, fp8: bool,
                       meta: dict, **options) -> torch.Tensor:
    """Make the copies a Gluon kernel over them reads (the rotated bf16/fp16 copies, or with
    fp8 the e4m3 copies and scales of kernels/fp8_copies.py) and run `kernel` with `meta` and
    launch `options`, a program per `rows_per_program` video queries and (batch, head)."""
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"the Gluon kernel takes 16-bit inputs (fp16 or bf16), got {q.dtype}")
    batch, _, num_heads, head_dim = q.shape
    num_video = cos.shape[0]
    if fp8:
        from .fp8_copies import fp8_copies

        out, anchor_sum = anchor_rows_and_sum(v, num_video, num_anchor)
        _ensure_scratch_allocator()
        copies, scales, keys_pad = fp8_copies(q, k, v, cos, sin, num_anchor, scale)
    else:
        out, anchor_sum, copies = rotated_copies_inputs(q, k, v, cos, sin, num_anchor)
        scales, keys_pad = (None, None, None), 2 * num_video
    grid = (triton.cdiv(2 * num_video, rows_per_program), batch * num_heads)
    kernel[grid](
        *copies, *scales, anchor_sum, out.stride(0), out.stride(1), out.stride(2), num_heads, num_video, num_anchor,
        keys_pad, out, QK_SCALE=scale * _LOG2E, HEAD_DIM=head_dim, **meta, **options,
    )
    return out


def _meta(config: GluonConfig, fp8: bool) -> dict:
    """The kernel's meta-parameters for `config`, native or fp8 (the part shared by the
    launcher and the ahead-of-time compile)."""
    return dict(BLOCK_M=config.block_m, BLOCK_N=config.block_n, STAGES=config.stages, FP8=fp8,
                LOG2_P_SCALE=_LOG2_E4M3_MAX if fp8 else 0.0, LAZY_RESCALE=config.lazy_rescale,
                num_warps=config.num_warps)
