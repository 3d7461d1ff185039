"""The anchor attention as one plain flash-attention loop over rotated copies of q and k.

`anchor_attention_fwd` has its loops in a branch (video or anchor queries), rotates q in
registers, and runs source and target keys as two loops because v's anchor rows sit
between them. Here:

* q and k are rotated once by `rotate_keys` (video rows, [even | odd] channels) and v is
  copied without its anchor rows, all as [B * heads, 2N, D]: one sequence, one loop over it
  with tensor-descriptor (TMA) loads, full key tiles unmasked, then one masked tail;
* the anchor queries' rows (mean of v) and the anchor keys' value sum are two torch
  reductions outside the kernel; the anchor keys are folded in as one key of logit log(A).

Numerically it is SDPA on pre-rotated q and k (both rounded to the input dtype after the
float32 rotation, the softmax scale applied to the logits in the exp2's multiply-add) with
the anchor fold. It costs a
q copy and a v copy on top of keys once's k copy, and is the fastest of the Triton loops
measured on an H100 (133.8 ms at 49 frames against 142.0 for keys once; torch's cuDNN
attention 118.8, docs/BENCHMARKS.md). `anchor_attention(..., keys="copies")` (autotuned over
ROTATED_COPIES_CONFIGS) and the model's `--attention triton-copies` run it.

The loop was written in the one shape that Triton (3.6, also 3.9) warp-specialises for sm_90
when marked `tl.range(..., warp_specialize=True)` (4 warps become one producer and two
consumer warpgroups, 12 warps, trading registers with `setmaxnreg`): the only loop, at top
level, descriptor loads, nothing after it but the epilogue, no pointer load or in-register
rotation before it (compiling variants on CPU: otherwise the pass leaves the loop alone or
crashes). On the H100 (Triton 3.6) the warp-specialised code is wrong: right while the loop
has one key tile, NaN or errors of order 1 from the second on, masked tail or not; with
descriptors made on the host it hung (docs/BENCHMARKS.md; the Triton project's issue 8311
reports wrong results from warp_specialize=True, and its tutorials turn it off before
Blackwell). So `warp_specialize` stays off: a switch of `launch_rotated_copies` kept for the
benchmark, to recheck a newer Triton with one command. Off, the loop runs its full tiles
without the key mask and ends with a masked tail (a fifth fewer instructions per tile in the
compiled sm_90 code, docs/BENCHMARKS.md); on, it keeps the single loop of masked tiles the
pass needs.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .anchor_attention import (
    _INTERPRETED,
    ROTATED_COPIES_CONFIGS,
    _LOG2E,
    _attend_described_rows,
    _described_step,
    _ensure_scratch_allocator,
    _fold_anchor_keys,
    _to_dot_dtype,
    dot_precision,
    rotate_keys,
)


@triton.jit
def _row_descriptors(X, pid_bh, num_keys, HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr):
    """A tensor descriptor of this (batch, head)'s [2N, D] rows of copy X, in tiles of BLOCK
    rows (the copies are [B * heads, 2N, D], contiguous)."""
    return tl.make_tensor_descriptor(X + pid_bh.to(tl.int64) * (num_keys * HEAD_DIM), shape=[num_keys, HEAD_DIM],
                                     strides=[HEAD_DIM, 1], block_shape=[BLOCK, HEAD_DIM])


@triton.jit
def rotated_copies_fwd(
    QR, KR, VR, ANCHOR_SUM,
    stride_ob, stride_ol, stride_oh,
    num_heads, num_video, num_anchor,
    OUT,
    QK_SCALE: tl.constexpr, HEAD_DIM: tl.constexpr, DOT_PRECISION: tl.constexpr, ROUND_IN_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
):
    """Grid (cdiv(2N, BLOCK_M), B * heads): video queries only. QR, KR: the rotated query and
    key copies, VR: the value copy, each [B * heads, 2N, D]; ANCHOR_SUM: float32 [B * heads, D],
    the sum of v's anchor rows. Every load up to the end of the loop is a tensor-descriptor
    load. WARP_SPECIALIZE (wrong on sm_90 with Triton 3.6, for the benchmark only): one loop
    with no tail step, each tile masking the keys past 2N, the shape the warp-specialisation
    pass needs (module docstring)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    num_keys = 2 * num_video
    q_desc = _row_descriptors(QR, pid_bh, num_keys, HEAD_DIM, BLOCK_M)
    k_desc = _row_descriptors(KR, pid_bh, num_keys, HEAD_DIM, BLOCK_N)
    v_desc = _row_descriptors(VR, pid_bh, num_keys, HEAD_DIM, BLOCK_N)
    q = q_desc.load([pid_m * BLOCK_M, 0])
    if ROUND_IN_FP32 and OUT.dtype.element_ty == tl.bfloat16:
        q = q.to(tl.float32)  # exact; see _to_dot_dtype
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    # log2 units: the softmax scale times log2(e) (q is stored unscaled), applied in the
    # softmax's multiply-add
    row_scale = tl.full([BLOCK_M], QK_SCALE, tl.float32)
    if WARP_SPECIALIZE:
        # The shape the pass needs: one loop, every tile masked (no tail step after it).
        for start in tl.range(0, num_keys, BLOCK_N, warp_specialize=True):
            acc, l_i, m_i = _described_step(acc, l_i, m_i, q, row_scale, k_desc, v_desc, start, start, start,
                                            num_keys, 1.0, OUT.dtype.element_ty, BLOCK_N, True, DOT_PRECISION,
                                            ROUND_IN_FP32, False)
    else:
        # Full tiles unmasked (no per-logit select), then one masked partial tile; acc
        # rescaled only when a row's maximum has grown by more than RESCALE_SLACK.
        acc, l_i, m_i = _attend_described_rows(acc, l_i, m_i, q, row_scale, k_desc, v_desc, 0, 0, num_keys, 1.0,
                                               OUT.dtype.element_ty, BLOCK_N, DOT_PRECISION, ROUND_IN_FP32, True)

    dim = tl.arange(0, HEAD_DIM)
    out = _fold_anchor_keys(acc, l_i, m_i, tl.load(ANCHOR_SUM + pid_bh * HEAD_DIM + dim), num_anchor)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # video rows: source, then target past the anchors
    physical = tl.where(rows < num_video, rows, rows + num_anchor)
    o_base = (pid_bh // num_heads).to(tl.int64) * stride_ob + (pid_bh % num_heads) * stride_oh
    tl.store(OUT + o_base + physical[:, None] * stride_ol + dim[None, :],
             _to_dot_dtype(out, OUT.dtype.element_ty, ROUND_IN_FP32).to(OUT.dtype.element_ty),
             mask=(rows < num_keys)[:, None])


def compile_rotated_copies(block_m: int, block_n: int, num_warps: int, num_stages: int, head_dim: int = 128,
                           dtype: str = "bf16", arch: int = 90, warp_specialize: bool = False):
    """Compile the kernel ahead of time for `arch` (no GPU needed; not under TRITON_INTERPRET=1)
    and return Triton's compiled kernel: `.metadata.num_warps` says whether it was warp-
    specialised (4 warps in, 12 out), `.asm["cubin"]` is the code (benchmarks/kernel_sass.py)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = rotated_copies_fwd
    constexprs = dict(QK_SCALE=head_dim**-0.5 * _LOG2E, HEAD_DIM=head_dim, DOT_PRECISION="tf32", ROUND_IN_FP32=False,
                      BLOCK_M=block_m, BLOCK_N=block_n, WARP_SPECIALIZE=warp_specialize)
    pointers = dict(QR=f"*{dtype}", KR=f"*{dtype}", VR=f"*{dtype}", ANCHOR_SUM="*fp32", OUT=f"*{dtype}")
    signature, attrs = copies_kernel_signature(fn, constexprs, pointers)
    return triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                          target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps, "num_stages": num_stages})


def copies_kernel_signature(fn, constexprs: dict, pointers: dict) -> tuple[dict, dict]:
    """(signature, attrs) for compiling a kernel over the copies ahead of time (this module's,
    kernels/fp8_copies.py's, kernels/gluon_attention.py's): `pointers` maps each pointer
    argument to its Triton type, every other argument is int32 unless a constexpr. Pointers,
    strides and keys_pad are 16-byte multiples, as the launchers' fresh copies make them."""
    signature = {name: "constexpr" if name in constexprs else pointers.get(name, "i32") for name in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
             if name in pointers or name.startswith("stride_") or name == "keys_pad"}
    return signature, attrs


def value_copy(v: torch.Tensor, num_video: int, num_anchor: int) -> torch.Tensor:
    """The video rows of v as [B * heads, 2N, D]: source rows then target rows, no anchors,
    contiguous (written once, each segment straight into its place)."""
    batch, _, num_heads, head_dim = v.shape
    out = torch.empty((batch, num_heads, 2 * num_video, head_dim), dtype=v.dtype, device=v.device)
    out[:, :, :num_video] = v[:, :num_video].transpose(1, 2)
    out[:, :, num_video:] = v[:, num_video + num_anchor:].transpose(1, 2)
    return out.view(batch * num_heads, 2 * num_video, head_dim)


def tuned_over(kernel, configs, interpreter_block_n: int = 16):
    """`kernel` autotuned over `configs` (configs of anchor_attention.py's lists, whose tile,
    warps and stages are the meta-parameters here), keyed on the shape. The interpreter gets
    one small tile (16 x interpreter_block_n) so that tiny test shapes cross tile boundaries;
    SAMA_RT_AUTOTUNE=0 the first config, untimed (test runs), as for the main kernel."""
    if _INTERPRETED:
        metas = [triton.Config({"BLOCK_M": 16, "BLOCK_N": interpreter_block_n}, num_warps=4, num_stages=1)]
    else:
        metas = [triton.Config({"BLOCK_M": c.kwargs["BLOCK_M"], "BLOCK_N": c.kwargs["BLOCK_N"]},
                               num_warps=c.num_warps, num_stages=c.num_stages) for c in configs]
    return triton.autotune(configs=metas, key=["num_video", "num_anchor", "HEAD_DIM"],
                           prune_configs_by={"early_config_prune": _prune})(kernel)


def launch_meta(config: triton.Config) -> dict:
    """The meta-parameters that run one config of those lists without the autotuner."""
    return dict(BLOCK_M=config.kwargs["BLOCK_M"], BLOCK_N=config.kwargs["BLOCK_N"], num_warps=config.num_warps,
                num_stages=config.num_stages)


def _prune(configs, named_args, **kwargs):
    return configs[:1] if os.environ.get("SAMA_RT_AUTOTUNE") == "0" else configs


tuned_kernel = tuned_over(rotated_copies_fwd, ROTATED_COPIES_CONFIGS)


def config_name(config: triton.Config) -> str:
    """A meta-parameter config by the main module's name for it ("128x128 w4 s2 split flat tma copies")."""
    from .anchor_attention import _config, config_name as named

    return named(_config(config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_warps, config.num_stages,
                         split_loads=True, flat_keys=True, tma_keys=True, rotated_copies=True))


def anchor_rows_and_sum(v: torch.Tensor, num_video: int, num_anchor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, anchor_sum) for a kernel that writes the video rows only: out [B, L, heads, D] in
    v's dtype with the anchor queries' rows already written (they attend uniformly, q = 0:
    mean(v) over the whole sequence, summed in float32 without a float32 copy of v), and
    anchor_sum float32 [B * heads, D], the anchor rows of v summed (the folded anchor key)."""
    batch, seq_len, num_heads, head_dim = v.shape
    out = torch.empty((batch, seq_len, num_heads, head_dim), dtype=v.dtype, device=v.device)
    mean = v.sum(dim=1, keepdim=True, dtype=torch.float32) / seq_len
    out[:, num_video:num_video + num_anchor] = mean.to(v.dtype)
    anchor_sum = v[:, num_video:num_video + num_anchor].sum(dim=1, dtype=torch.float32)
    return out, anchor_sum.reshape(batch * num_heads, head_dim).contiguous()


def rotated_copies_inputs(q, k, v, cos, sin, num_anchor: int):
    """What a kernel over the copies needs: (out, anchor_sum, (q copy, k copy, v copy)), the
    first two from `anchor_rows_and_sum`, the copies [B * heads, 2N, head_dim] (module
    docstring)."""
    head_dim = q.shape[-1]
    num_video = cos.shape[0]
    if head_dim & (head_dim - 1) or head_dim < 16:
        raise ValueError(f"the rotated-copies kernel needs a power-of-two head_dim >= 16, got {head_dim}")
    out, anchor_sum = anchor_rows_and_sum(v, num_video, num_anchor)
    if q.device.type == "cuda":
        _ensure_scratch_allocator()  # the tensor descriptors are built in scratch memory
    copies = (rotate_keys(q, cos, sin, num_anchor),  # the key pre-pass serves q's video rows as well
              rotate_keys(k, cos, sin, num_anchor), value_copy(v, num_video, num_anchor))
    return out, anchor_sum, copies


def launch_rotated_copies(q, k, v, cos, sin, num_anchor: int, scale: float,
                          config: triton.Config | None = None, warp_specialize: bool = False) -> torch.Tensor:
    """Run `rotated_copies_fwd`, autotuned over ROTATED_COPIES_CONFIGS or with `config`
    (one of them; inputs already checked by the caller, last dimensions contiguous).
    warp_specialize=True compiles the loop warp-specialised (wrong results on sm_90 with
    Triton 3.6: benchmarks/rotated_copies.py only). Returns [B, L, heads, head_dim] in v's
    dtype."""
    out, anchor_sum, copies = rotated_copies_inputs(q, k, v, cos, sin, num_anchor)
    batch, _, num_heads, head_dim = q.shape
    run_over_video_queries(
        tuned_kernel, rotated_copies_fwd, config, 2 * cos.shape[0], batch * num_heads,
        *copies, anchor_sum, out.stride(0), out.stride(1), out.stride(2), num_heads, cos.shape[0], num_anchor, out,
        QK_SCALE=scale * _LOG2E, HEAD_DIM=head_dim, DOT_PRECISION=dot_precision(q.dtype),
        ROUND_IN_FP32=_INTERPRETED, WARP_SPECIALIZE=warp_specialize,
    )
    return out


def run_over_video_queries(tuned, kernel, config: triton.Config | None, num_keys: int, programs: int, *args,
                           **constexprs) -> None:
    """Launch a kernel over the copies on its grid (cdiv(2N, BLOCK_M), B * heads): with
    `config`'s meta-parameters, or autotuned (`tuned`, the kernel's autotuner) when config is
    None, which `tuned_config` then reports."""
    from .anchor_attention import _ran

    meta = {}
    if config is None:
        kernel = tuned
        _ran(tuned, config_name)
    else:
        meta = launch_meta(config)
    kernel[lambda m: (triton.cdiv(num_keys, m["BLOCK_M"]), programs)](*args, **constexprs, **meta)
