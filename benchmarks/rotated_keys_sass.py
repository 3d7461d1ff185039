"""Experiment: what the anchor-attention main loop compiles to when keys arrive pre-rotated.

    python benchmarks/rotated_keys_sass.py

The kernel in kernels/ rotates every key tile in float32 registers inside its loop (the
issue's "no rotated copies" rule), and benchmarks/kernel_sass.py shows every Hopper config
of it at the 255-register cap with 32-position key tiles. This script compiles, for sm_90 on
the CPU, a reduced kernel whose loop reads keys from a rotated bf16 copy laid out as
[even channels | odd channels] (q is still rotated once per block, in registers), and
prints the same SASS facts. Only the loop is modelled (no partial-tile masks, no anchor
fold, no fp8): it is the loop that decides registers and tile sizes. Not product code: it
decides whether a rotated-keys variant of the real kernel is worth building and measuring.
"""
from __future__ import annotations

import sys
from pathlib import Path

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_sass import CUOBJDUMP, sass_stats  # noqa: E402

HEAD_DIM = 128
CONFIGS = ((128, 32, 8, 3), (128, 64, 8, 2), (128, 64, 8, 3), (128, 128, 8, 2))  # BLOCK_M, BLOCK_N, warps, stages


@triton.jit
def _loop_with_rotated_keys(
    Q, KR, V, COS, SIN, OUT, stride_l, num_video, num_anchor,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    half_dim: tl.constexpr = HEAD_DIM // 2
    base = tl.program_id(1).to(tl.int64) * HEAD_DIM
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    half = tl.arange(0, half_dim)
    dim = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < 2 * num_video
    pos_m = tl.where(offs_m < num_video, offs_m, offs_m - num_video)
    q = tl.load(Q + base + offs_m[:, None] * stride_l + dim[None, :], mask=row_ok[:, None], other=0.0).to(tl.float32)
    q_e, q_o = tl.split(tl.reshape(q, [BLOCK_M, half_dim, 2]))
    cos = tl.load(COS + pos_m[:, None] * half_dim + half[None, :])
    sin = tl.load(SIN + pos_m[:, None] * half_dim + half[None, :])
    q_even = ((q_e * cos - q_o * sin) * 0.1275).to(tl.bfloat16)  # softmax scale * log2(e), d=128
    q_odd = ((q_e * sin + q_o * cos) * 0.1275).to(tl.bfloat16)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for start in range(0, num_video, BLOCK_N):
        src = start + tl.arange(0, BLOCK_N)
        tgt = src + num_video + num_anchor
        qk_src = tl.dot(q_odd, tl.trans(tl.load(KR + base + src[:, None] * stride_l + half_dim + half[None, :])),
                        tl.dot(q_even, tl.trans(tl.load(KR + base + src[:, None] * stride_l + half[None, :]))))
        qk_tgt = tl.dot(q_odd, tl.trans(tl.load(KR + base + tgt[:, None] * stride_l + half_dim + half[None, :])),
                        tl.dot(q_even, tl.trans(tl.load(KR + base + tgt[:, None] * stride_l + half[None, :]))))
        m_new = tl.maximum(m_i, tl.maximum(tl.max(qk_src, 1), tl.max(qk_tgt, 1)))
        p_src = tl.exp2(qk_src - m_new[:, None])
        p_tgt = tl.exp2(qk_tgt - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p_src, 1) + tl.sum(p_tgt, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p_src.to(tl.bfloat16), tl.load(V + base + src[:, None] * stride_l + dim[None, :]), acc)
        acc = tl.dot(p_tgt.to(tl.bfloat16), tl.load(V + base + tgt[:, None] * stride_l + dim[None, :]), acc)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(OUT + base + offs_m[:, None] * stride_l + dim[None, :], out.to(tl.bfloat16), mask=row_ok[:, None])


def compile_config(block_m: int, block_n: int, num_warps: int, num_stages: int):
    names = _loop_with_rotated_keys.arg_names
    constexprs = {"HEAD_DIM": HEAD_DIM, "BLOCK_M": block_m, "BLOCK_N": block_n}
    pointers = {"Q": "*bf16", "KR": "*bf16", "V": "*bf16", "OUT": "*bf16", "COS": "*fp32", "SIN": "*fp32"}
    signature = {n: "constexpr" if n in constexprs else pointers.get(n, "i32") for n in names}
    # The same alignment hints the real kernel's ahead-of-time build gives (kernels/aot.py).
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n in pointers or n == "stride_l"}
    source = ASTSource(fn=_loop_with_rotated_keys, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "num_stages": num_stages})


def main() -> int:
    if not CUOBJDUMP.is_file():
        print(f"cuobjdump not found at {CUOBJDUMP} (it ships with Triton's NVIDIA backend)", file=sys.stderr)
        return 2
    print(f"triton {triton.__version__}, sm_90, head_dim {HEAD_DIM}, bf16, keys pre-rotated")
    print("| tile | warps | stages | registers | spill instr. | shared KiB | STS | instr. | tensor core |")
    print("|---|---|---|---|---|---|---|---|---|")
    for block_m, block_n, num_warps, num_stages in CONFIGS:
        compiled = compile_config(block_m, block_n, num_warps, num_stages)
        r = sass_stats(compiled.asm["cubin"])
        print(f"| {block_m}x{block_n} | {num_warps} | {num_stages} | {r['registers']} | {r['spill_instructions']} | "
              f"{compiled.metadata.shared // 1024} | {r['sts']} | {r['instructions']} | {r['tensor_core']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
