"""The Gluon copies loop, warp-specialised: a producer warp and two consumer warpgroups.

kernels/gluon_attention.py overlaps each warpgroup's softmax with its own p.v, but its
warpgroups also issue the TMA loads and meet at a CTA barrier at every key tile, before a
slot is refilled. FlashAttention-3 reports its gains on Hopper from splitting those jobs
(warp specialisation) and from letting two warpgroups take turns at the tensor cores. Here
one program has three partitions (`gl.warp_specialize`):

- a producer warp that only loads, by TMA: the two consumers' query tiles once, then the key
  and value tiles into a ring of STAGES slots. It refills a slot once both consumers have
  released it: each operand's slot has an "empty" barrier of count 2, one arrival a consumer,
  made right after the MMA that read the slot has completed (the key slot after q.k, the
  value slot after p.v), and a "ready" barrier the TMA completes;
- two consumer warpgroups (the default partition and a 4-warp worker), each with its own
  BLOCK_M query rows and the same key tiles, running gluon_attention_fwd's loop: the next
  tile's q.k and the previous tile's p.v in flight, the softmax between, no CTA barrier;
- registers moved to the consumers (setmaxnreg): 240 each, 24 for the producer's warpgroup.

" pingpong" (FlashAttention-3's inter-warpgroup overlap): the consumers take turns to issue
their MMAs, each only after the other has issued its own for the same key tile (two "turn"
barriers of count 1), so that one's softmax runs while the other's MMAs compute. The turns
order the issue only; results do not depend on them.

It reads the copies of `rotated_copies_fwd` (native) or of `fp8_copies_fwd` (FP8), as
gluon_attention_fwd does, and computes the same (up to the order of the additions); the
softmax step and the epilogue are gluon_attention.py's.

NOT YET RUN ON A GPU. It compiles for sm_90 (tests/kernels/test_gluon_ws_attention.py reads
the compiled code: the partitions' register moves, the waits, no spills); its numbers are
checked only on a Hopper GPU: `benchmarks/attention.py --candidate "gluon ws: 64x128 s2
pingpong"` times and checks one config, and the GPU tests compare it with the reference.
A wrong barrier phase hangs rather than errs: the GPU sweep runs each candidate under a time
limit, and skips the rest of this kind after one hangs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait

from .anchor_attention import FP8_KEY_BLOCK
from .gluon_attention import (
    _LOG2_E4M3_MAX,
    _first_softmax_tile,
    _query_scales,
    _rescaled,
    _softmax_tile,
    _store_video_rows,
    _tma_load,
    _value_operand,
    compile_over_copies,
    launch_over_copies,
)

# "BLOCK_MxBLOCK_N sSTAGES" (+ " pingpong", + " lazy"): BLOCK_M query rows a consumer (two
# consumers a program), BLOCK_N keys a tile. 64x128 is FlashAttention-3's split for head_dim
# 128 (two warpgroups of 64 rows, 128 keys a tile). None has been timed.
GLUON_WS_CONFIGS = ("64x128 s2 pingpong", "64x128 s2", "64x128 s3 pingpong", "64x64 s3 pingpong",
                    "64x128 s2 pingpong lazy")
GLUON_WS_FP8_CONFIGS = ("64x128 s2 pingpong", "64x128 s2", "64x64 s3 pingpong")

CONSUMER_WARPS = gl.constexpr(4)  # one warpgroup a consumer
CONSUMER_REGISTERS = gl.constexpr(240)  # FlashAttention-3's split of the 64K: 2 x 128 x 240 + 128 x 24
PRODUCER_REGISTERS = gl.constexpr(24)
# What a thread may hold at launch: 3 warpgroups (two consumers, the producer's) within 64K
# registers; setmaxnreg then moves them (above).
LAUNCH_REGISTERS = 168


@dataclass(frozen=True)
class GluonWsConfig:
    """One configuration, named "64x128 s2 pingpong" (see GLUON_WS_CONFIGS)."""

    block_m: int
    block_n: int
    stages: int
    pingpong: bool = False
    lazy_rescale: bool = False


def parse_gluon_ws_config(name: str, fp8: bool = False) -> GluonWsConfig:
    """The config a name gives; the limits of gluon_attention.py's configs apply (a
    warpgroup's rows a multiple of 64; FP8: key tiles of 32-128 keys, eager rescaling)."""
    match = re.fullmatch(r"(\d+)x(\d+) s(\d+)( pingpong)?( lazy)?", name.strip())
    if match is None:
        raise ValueError(f"not a warp-specialised Gluon config: {name!r} (expected e.g. '64x128 s2 pingpong')")
    config = GluonWsConfig(int(match[1]), int(match[2]), int(match[3]), pingpong=bool(match[4]),
                           lazy_rescale=bool(match[5]))
    if config.block_m % (16 * CONSUMER_WARPS.value):
        raise ValueError(f"{name!r}: a consumer is one warpgroup, its rows a multiple of 64")
    if config.stages < 2:
        raise ValueError(f"{name!r}: the producer needs at least 2 slots to load ahead")
    if fp8 and (config.block_n < 32 or FP8_KEY_BLOCK.value % config.block_n):
        raise ValueError(f"{name!r}: the FP8 kernel's key tile must be 32, 64 or 128 keys")
    if fp8 and config.lazy_rescale:
        raise ValueError(f"{name!r}: the FP8 form rescales at every tile (its p must stay within e4m3's 448)")
    return config


@gluon.jit
def _take_turn(turns, CONSUMER: gl.constexpr, tile, PINGPONG: gl.constexpr):
    """Consumer 0 waits until consumer 1 has issued its MMAs for the previous tile (at tile 0
    on the phase before a fresh barrier's first, which counts as complete: consumer 0 goes
    first); consumer 1 waits until consumer 0 has issued its own for this tile."""
    if PINGPONG:
        mbarrier.wait(turns.index(CONSUMER), (tile & 1) ^ (1 - CONSUMER))


@gluon.jit
def _pass_turn(turns, CONSUMER: gl.constexpr, PINGPONG: gl.constexpr):
    if PINGPONG:
        mbarrier.arrive(turns.index(1 - CONSUMER), count=1)


@gluon.jit
def _produce(QR, KR, VR, q_smem, k_smem, v_smem, q_bars, k_ready, v_ready, k_empty, v_empty, pid_m, pid_bh, num_keys,
             keys_pad, HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
             FP8: gl.constexpr):
    """The producer warp. It makes the tensor descriptors itself: the thread that writes a
    descriptor is then the one that loads through it, after the proxy fence that orders the
    two (made by another warp, the loads would rely on the CTA barrier to order them). Waits
    on a slot's "empty" phase before each refill: a fresh barrier's phase before its first
    counts as complete, so the first STAGES loads go at once."""
    copy_base = pid_bh.to(gl.int64) * (num_keys * HEAD_DIM)
    q_desc = tma.make_tensor_descriptor(QR + copy_base, shape=[num_keys, HEAD_DIM], strides=[HEAD_DIM, 1],
                                        block_shape=[BLOCK_M, HEAD_DIM], layout=q_smem.layout)
    k_desc = tma.make_tensor_descriptor(KR + copy_base, shape=[num_keys, HEAD_DIM], strides=[HEAD_DIM, 1],
                                        block_shape=[BLOCK_N, HEAD_DIM], layout=k_smem.layout)
    if FP8:
        # e4m3 products read both operands K-major: for p.v that is v transposed, keys contiguous.
        v_desc = tma.make_tensor_descriptor(VR + pid_bh.to(gl.int64) * (HEAD_DIM * keys_pad),
                                            shape=[HEAD_DIM, num_keys], strides=[keys_pad, 1],
                                            block_shape=[HEAD_DIM, BLOCK_N], layout=v_smem.layout)
    else:
        v_desc = tma.make_tensor_descriptor(VR + copy_base, shape=[num_keys, HEAD_DIM], strides=[HEAD_DIM, 1],
                                            block_shape=[BLOCK_N, HEAD_DIM], layout=v_smem.layout)

    # Each consumer's query tile, on its own barrier. Consumer 1's rows may all lie past 2N
    # (the last program of a head): no load then, its loop runs on whatever the tile holds
    # and its epilogue stores nothing.
    for consumer in gl.static_range(2):
        row = pid_m * 2 * BLOCK_M + consumer * BLOCK_M
        mbarrier.expect(q_bars.index(consumer), q_desc.block_type.nbytes, pred=row < num_keys)
        _tma_load(q_desc, [row, 0], q_bars.index(consumer), q_smem.index(consumer), pred=row < num_keys)
    for tile in range(gl.cdiv(num_keys, BLOCK_N)):
        slot = tile % STAGES
        phase = (tile // STAGES) & 1
        mbarrier.wait(k_empty.index(slot), phase ^ 1)
        mbarrier.expect(k_ready.index(slot), k_desc.block_type.nbytes)
        _tma_load(k_desc, [tile * BLOCK_N, 0], k_ready.index(slot), k_smem.index(slot))
        mbarrier.wait(v_empty.index(slot), phase ^ 1)
        mbarrier.expect(v_ready.index(slot), v_desc.block_type.nbytes)
        if FP8:
            _tma_load(v_desc, [0, tile * BLOCK_N], v_ready.index(slot), v_smem.index(slot))
        else:
            _tma_load(v_desc, [tile * BLOCK_N, 0], v_ready.index(slot), v_smem.index(slot))


@gluon.jit
def _consume(q_smem, k_smem, v_smem, q_bars, k_ready, v_ready, k_empty, v_empty, turns, pid_m, pid_bh, num_keys,
             Q_SCALE, K_SCALE, V_SCALE, ANCHOR_SUM, OUT, stride_ob, stride_ol, stride_oh, num_heads, num_video,
             num_anchor, QK_SCALE: gl.constexpr, HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr,
             BLOCK_N: gl.constexpr, STAGES: gl.constexpr, FP8: gl.constexpr, LOG2_P_SCALE: gl.constexpr,
             PINGPONG: gl.constexpr, LAZY_RESCALE: gl.constexpr, CONSUMER: gl.constexpr):
    """Consumer CONSUMER (0 or 1): query rows pid_m * 2 * BLOCK_M + CONSUMER * BLOCK_M on,
    over every key tile, then the epilogue; gluon_attention_fwd's loop with the loads and the
    CTA barrier replaced by waits on "ready" and arrivals on "empty"."""
    dtype: gl.constexpr = q_smem.dtype
    mma_k: gl.constexpr = 256 // dtype.primitive_bitwidth
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[CONSUMER_WARPS, 1],
                                                       instr_shape=[16, BLOCK_N, mma_k])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[CONSUMER_WARPS, 1],
                                                       instr_shape=[16, HEAD_DIM, mma_k])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout,
                                                 k_width=32 // dtype.primitive_bitwidth)
    num_tiles = gl.cdiv(num_keys, BLOCK_N)
    row0 = pid_m * 2 * BLOCK_M + CONSUMER * BLOCK_M
    q_scale = _query_scales(Q_SCALE, pid_bh, row0, num_keys, QK_SCALE, BLOCK_M, FP8, s_layout)
    k_scales = K_SCALE
    if FP8:
        k_scales = K_SCALE + pid_bh * gl.cdiv(num_keys, FP8_KEY_BLOCK)
    q_tile = q_smem.index(CONSUMER)
    s_init = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)

    # Tile 0: its q.k and softmax (nothing to overlap with yet).
    mbarrier.wait(q_bars.index(CONSUMER), 0, pred=row0 < num_keys)
    mbarrier.wait(k_ready.index(0), 0)
    _take_turn(turns, CONSUMER, 0, PINGPONG)
    s = warpgroup_mma(q_tile, k_smem.index(0).permute((1, 0)), s_init, use_acc=False, is_async=True)
    _pass_turn(turns, CONSUMER, PINGPONG)
    s = warpgroup_mma_wait(0, deps=(s, ))
    mbarrier.arrive(k_empty.index(0), count=1)
    p, m_i, l_i = _first_softmax_tile(s, num_keys, q_scale, k_scales, BLOCK_N, FP8, LOG2_P_SCALE, s_layout)
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, layout=o_layout)

    for tile in range(1, num_tiles):
        slot = tile % STAGES
        prev = (tile - 1) % STAGES
        # This tile's q.k, then the previous tile's p.v, both in flight (in turn, with PINGPONG:
        # the turn taken once the key tile is there, so that a consumer waiting for data does
        # not hold it).
        mbarrier.wait(k_ready.index(slot), (tile // STAGES) & 1)
        _take_turn(turns, CONSUMER, tile, PINGPONG)
        s = warpgroup_mma(q_tile, k_smem.index(slot).permute((1, 0)), s_init, use_acc=False, is_async=True)
        mbarrier.wait(v_ready.index(prev), ((tile - 1) // STAGES) & 1)
        acc = warpgroup_mma(gl.convert_layout(p.to(dtype), p_layout), _value_operand(v_smem, prev, FP8), acc,
                            is_async=True)
        _pass_turn(turns, CONSUMER, PINGPONG)
        # The q.k alone (groups complete in order): its key slot is free, its softmax runs
        # while the p.v is on the tensor cores.
        s = warpgroup_mma_wait(1, deps=(s, ))
        mbarrier.arrive(k_empty.index(slot), count=1)
        p, m_i, l_i, alpha, moved = _softmax_tile(s, m_i, l_i, tile, num_keys, q_scale, k_scales, BLOCK_N, FP8,
                                                  LOG2_P_SCALE, LAZY_RESCALE, s_layout)
        acc = warpgroup_mma_wait(0, deps=(acc, ))
        mbarrier.arrive(v_empty.index(prev), count=1)
        acc = _rescaled(acc, alpha, moved, LAZY_RESCALE, o_layout)

    last = (num_tiles - 1) % STAGES
    mbarrier.wait(v_ready.index(last), ((num_tiles - 1) // STAGES) & 1)
    acc = warpgroup_mma(gl.convert_layout(p.to(dtype), p_layout), _value_operand(v_smem, last, FP8), acc,
                        is_async=True)
    acc = warpgroup_mma_wait(0, deps=(acc, ))
    _store_video_rows(acc, m_i, l_i, row0, pid_bh, V_SCALE, ANCHOR_SUM, OUT, stride_ob, stride_ol, stride_oh,
                      num_heads, num_video, num_anchor, BLOCK_M, HEAD_DIM, FP8, o_layout)


@gluon.jit
def gluon_ws_attention_fwd(
    QR, KR, VR, Q_SCALE, K_SCALE, V_SCALE, ANCHOR_SUM,
    stride_ob, stride_ol, stride_oh,
    num_heads, num_video, num_anchor, keys_pad,
    OUT,
    QK_SCALE: gl.constexpr, HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
    STAGES: gl.constexpr, FP8: gl.constexpr, LOG2_P_SCALE: gl.constexpr, PINGPONG: gl.constexpr,
    LAZY_RESCALE: gl.constexpr, num_warps: gl.constexpr,
):
    """Grid (cdiv(2N, 2 * BLOCK_M), B * heads), video queries only; num_warps 4 (the default
    partition: consumer 0). The arguments are gluon_attention_fwd's."""
    dtype: gl.constexpr = QR.dtype.element_ty
    pid_m = gl.program_id(0)
    pid_bh = gl.program_id(1)
    num_keys = 2 * num_video

    q_shared: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, HEAD_DIM], dtype)
    k_shared: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, HEAD_DIM], dtype)
    if FP8:  # v transposed (see _produce)
        v_shared: gl.constexpr = gl.NVMMASharedLayout.get_default_for([HEAD_DIM, BLOCK_N], dtype)
        v_smem = gl.allocate_shared_memory(dtype, [STAGES, HEAD_DIM, BLOCK_N], v_shared)
    else:
        v_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], k_shared)
    q_smem = gl.allocate_shared_memory(dtype, [2, BLOCK_M, HEAD_DIM], q_shared)
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], k_shared)

    q_bars = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    turns = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(q_bars.index(i), count=1)
        mbarrier.init(turns.index(i), count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2)  # one arrival a consumer
        mbarrier.init(v_empty.index(i), count=2)

    gl.warp_specialize([
        (_consume, (q_smem, k_smem, v_smem, q_bars, k_ready, v_ready, k_empty, v_empty, turns,
                    pid_m, pid_bh, num_keys, Q_SCALE, K_SCALE, V_SCALE, ANCHOR_SUM, OUT, stride_ob, stride_ol,
                    stride_oh, num_heads, num_video, num_anchor, QK_SCALE, HEAD_DIM, BLOCK_M, BLOCK_N, STAGES, FP8,
                    LOG2_P_SCALE, PINGPONG, LAZY_RESCALE, 0)),
        (_consume, (q_smem, k_smem, v_smem, q_bars, k_ready, v_ready, k_empty, v_empty, turns,
                    pid_m, pid_bh, num_keys, Q_SCALE, K_SCALE, V_SCALE, ANCHOR_SUM, OUT, stride_ob, stride_ol,
                    stride_oh, num_heads, num_video, num_anchor, QK_SCALE, HEAD_DIM, BLOCK_M, BLOCK_N, STAGES, FP8,
                    LOG2_P_SCALE, PINGPONG, LAZY_RESCALE, 1)),
        (_produce, (QR, KR, VR, q_smem, k_smem, v_smem, q_bars, k_ready, v_ready, k_empty, v_empty, pid_m, pid_bh,
                    num_keys, keys_pad, HEAD_DIM, BLOCK_M, BLOCK_N, STAGES, FP8)),
    ],
                       [CONSUMER_WARPS, 1], [CONSUMER_REGISTERS, PRODUCER_REGISTERS])


def _meta(config: GluonWsConfig, fp8: bool) -> dict:
    """The kernel's meta-parameters for `config` (shared by the launcher and the
    ahead-of-time compile)."""
    return dict(BLOCK_M=config.block_m, BLOCK_N=config.block_n, STAGES=config.stages, FP8=fp8,
                LOG2_P_SCALE=_LOG2_E4M3_MAX if fp8 else 0.0, PINGPONG=config.pingpong,
                LAZY_RESCALE=config.lazy_rescale, num_warps=CONSUMER_WARPS.value)


def compile_gluon_ws_attention(config: str, head_dim: int = 128, dtype: str = "bf16", arch: int = 90,
                               fp8: bool = False):
    """Compile the kernel with `config` ahead of time for `arch` (no GPU needed) and return
    Triton's compiled kernel; as `compile_gluon_attention`."""
    parsed = parse_gluon_ws_config(config, fp8)
    return compile_over_copies(gluon_ws_attention_fwd, _meta(parsed, fp8), head_dim, dtype, arch, fp8,
                               maxnreg=LAUNCH_REGISTERS)


def launch_gluon_ws_attention(q, k, v, cos, sin, num_anchor: int, scale: float, config: str | None = None,
                              fp8: bool = False) -> torch.Tensor:
    """Run `gluon_ws_attention_fwd` with one config (default: the first of GLUON_WS_CONFIGS,
    or of GLUON_WS_FP8_CONFIGS with fp8) on CUDA, sm_90, fp16/bf16 inputs; as
    `launch_gluon_attention`. Returns [B, L, heads, head_dim] in v's dtype."""
    parsed = parse_gluon_ws_config(config or (GLUON_WS_FP8_CONFIGS if fp8 else GLUON_WS_CONFIGS)[0], fp8)
    return launch_over_copies(gluon_ws_attention_fwd, 2 * parsed.block_m, q, k, v, cos, sin, num_anchor, scale, fp8,
                              _meta(parsed, fp8), maxnreg=LAUNCH_REGISTERS)
