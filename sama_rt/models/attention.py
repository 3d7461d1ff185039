"""Attention backends for the DiT, chosen in one place.

SAMA's self-attention runs over `[source N | anchors A | target N]` with RoPE applied to
the video rows and anchors' q/k forced to zero. Three implementations compute exactly
that contract:

- `reference`: rotate q/k explicitly, plain softmax(QK^T)V in float32. Slow, obvious, the oracle.
- `sdpa`: rotate q/k explicitly, `F.scaled_dot_product_attention` in the input dtype
  (flash / memory-efficient kernels on GPU, the fused CPU kernel here).
- `triton`: the fused anchor-attention kernel (anchors collapsed to one virtual key, q
  rotated in-kernel, the keys rotated once into a copy by a Triton pre-pass: the kernels'
  KeyRotation.ONCE); CUDA only, or the CPU interpreter when TRITON_INTERPRET=1.
- `triton-in-loop`: the same kernel rotating every key tile inside its loop (no rotated
  copy: ~0.8 GiB less at 81 frames, but 1.65x slower on an H100, docs/BENCHMARKS.md).
- `triton-fp8`: the in-loop kernel with q.k and p.v in float8 e4m3 (per-block scales); an
  approximation, opt-in only (never picked by "auto"), sm_89+; error in docs/BENCHMARKS.md.
  On an H100 it ran at 0.35x flash SDPA: it rotates and quantizes every key tile again for
  every query block.
- `triton-fp8-copies`: the FP8 loop of kernels/fp8_copies.py: q, k and v quantized once into
  e4m3 copies (~1.9 GiB at 81 frames, half the bf16 copies of `triton-copies`), so that the
  loop converts nothing but p; Hopper only, opt-in (an H200 ran it at 1.09x cuDNN SDPA).
- `triton-copies`: the kernel as one plain flash-attention loop (kernels/rotated_copies.py:
  q, k rotated and v copied once, ~2.5 GiB more than `triton` at 81 frames); Hopper only.
  The fastest Triton loop on an H100 (133.8 vs 142.0 ms at 49 frames), still slower than
  the cuDNN attention that `sdpa` runs there (118.8 ms).
- `triton-gluon`: `triton-copies` as kernels/gluon_attention.py writes it in Gluon, with each
  tile's softmax overlapped with the previous tile's p.v; Hopper only (compiled, no
  interpreter).
- `triton-gluon-ws`: `triton-gluon` warp-specialised (kernels/gluon_ws_attention.py: a
  producer warp loads, two consumer warpgroups take turns at the tensor cores, as
  FlashAttention-3 runs on Hopper); the same conditions. What "auto" picks on a Hopper GPU
  (select_attention_backend): the fastest attention measured there.
- `triton-gluon-ws-fp8`: `triton-gluon-ws` over the e4m3 copies of `triton-fp8-copies`, its
  q.k and p.v in float8; an approximation of `triton-fp8`'s error, opt-in, Hopper only. The
  fastest attention measured (an H200: 1.27-1.35x cuDNN SDPA at 49 frames).
"""
from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F

from ..choices import Choice
from .rope import apply_rope, sequence_rope_tables

logger = logging.getLogger(__name__)


class AttentionBackend(Choice):
    REFERENCE = "reference"
    SDPA = "sdpa"
    TRITON = "triton"
    TRITON_IN_LOOP = "triton-in-loop"
    TRITON_FP8 = "triton-fp8"
    TRITON_COPIES = "triton-copies"
    TRITON_FP8_COPIES = "triton-fp8-copies"
    TRITON_GLUON = "triton-gluon"
    TRITON_GLUON_WS = "triton-gluon-ws"
    TRITON_GLUON_WS_FP8 = "triton-gluon-ws-fp8"

    @property
    def uses_triton(self) -> bool:
        return self in (AttentionBackend.TRITON, AttentionBackend.TRITON_IN_LOOP, AttentionBackend.TRITON_FP8,
                        AttentionBackend.TRITON_COPIES, AttentionBackend.TRITON_FP8_COPIES,
                        AttentionBackend.TRITON_GLUON, AttentionBackend.TRITON_GLUON_WS,
                        AttentionBackend.TRITON_GLUON_WS_FP8)

    @property
    def is_gluon(self) -> bool:
        """Written in Gluon: compiled only (no interpreter), Hopper only."""
        return self in (AttentionBackend.TRITON_GLUON, AttentionBackend.TRITON_GLUON_WS,
                        AttentionBackend.TRITON_GLUON_WS_FP8)

    @property
    def least_head_dim(self) -> int:
        """The smallest head_dim of the kernels over copies (which also need a power of two):
        16, or 32 for e4m3 dots; 0 for the others (any even head_dim)."""
        return {AttentionBackend.TRITON_COPIES: 16, AttentionBackend.TRITON_GLUON: 16,
                AttentionBackend.TRITON_GLUON_WS: 16, AttentionBackend.TRITON_FP8_COPIES: 32,
                AttentionBackend.TRITON_GLUON_WS_FP8: 32}.get(self, 0)

    @property
    def is_fp8(self) -> bool:
        return self in (AttentionBackend.TRITON_FP8, AttentionBackend.TRITON_FP8_COPIES,
                        AttentionBackend.TRITON_GLUON_WS_FP8)

    @property
    def kernel_options(self) -> dict[str, str]:
        """`anchor_attention`'s precision, keys and language for a Triton backend. Keys rotated
        once is the faster kernel (H100: 142 vs 243 ms at 49 frames); fp8 has the in-loop and
        the copies form."""
        keys = {AttentionBackend.TRITON: "once", AttentionBackend.TRITON_COPIES: "copies",
                AttentionBackend.TRITON_FP8_COPIES: "copies"}.get(self, "copies" if self.is_gluon else "in-loop")
        language = {AttentionBackend.TRITON_GLUON: "gluon", AttentionBackend.TRITON_GLUON_WS: "gluon-ws",
                    AttentionBackend.TRITON_GLUON_WS_FP8: "gluon-ws"}
        return {"precision": "fp8" if self.is_fp8 else "native", "keys": keys, "language": language.get(self, "triton")}


def attention_backend_names() -> list[str]:
    """What --attention accepts."""
    return ["auto"] + [backend.value for backend in AttentionBackend]


def triton_available() -> tuple[bool, str]:
    """Whether the Triton kernel can run here, and why not if it cannot."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False, "triton is not installed (pip install 'sama-rt[triton]')"
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        return True, "triton with a CUDA device" if torch.cuda.is_available() else "triton interpreter"
    return False, "no CUDA device (the Triton kernel needs a GPU, or TRITON_INTERPRET=1 on CPU)"


def select_attention_backend(
    requested: str, device: torch.device, head_dim: int = 128, dtype: torch.dtype = torch.bfloat16
) -> AttentionBackend:
    """Pick the attention backend for `device`. `requested` is a backend name or "auto".

    auto: the fused kernel where it was measured fastest, SDPA elsewhere (see auto_attention_backend).
    An explicit Triton backend on CUDA first passes a one-off self-check at (head_dim, dtype)
    on this GPU, so a miscompiled kernel fails loudly instead of editing badly.
    """
    device = torch.device(device)
    if requested == "auto":
        return auto_attention_backend(device, head_dim, dtype)
    backend = AttentionBackend.parse(requested, also_valid=("auto",))
    if backend.uses_triton:
        ok, why = triton_available()
        least = backend.least_head_dim
        if ok and least and (head_dim < least or head_dim & (head_dim - 1)):
            ok, why = False, (f"its copies are read by tensor descriptors, which need a power-of-two head_dim >= "
                              f"{least} (this model's is {head_dim})")
        if ok and backend.is_gluon and device.type != "cuda":
            ok, why = False, "the Gluon kernel runs only compiled, on a Hopper GPU (Gluon has no interpreter)"
        if ok and device.type == "cuda":
            ok, why = triton_self_check(device, head_dim, dtype, backend)
        if not ok:
            raise RuntimeError(f"attention backend {backend.value!r} cannot run here: {why}")
    return backend


# Where "auto" runs the fused kernel: what it was measured and tested at on a GPU.
AUTO_KERNEL_CAPABILITY = (9, 0)
AUTO_KERNEL_HEAD_DIM = 128


def auto_attention_backend(device: torch.device, head_dim: int, dtype: torch.dtype) -> AttentionBackend:
    """What "auto" runs: `triton-gluon-ws` on a Hopper GPU (compute capability 9.0) at head_dim
    128 in bf16/fp16, if it passes its self-check there; SDPA everywhere else.

    On an H200 (docs/BENCHMARKS.md, 2026-11-26, side by side) the warp-specialised Gluon
    kernel ran at 1.08-1.11x torch's default SDPA (cuDNN attention: 109.8-111.9 vs
    118.6-122.5 ms per call at 49 frames, 604-616 TFLOP/s) and the 14B step took 7.86 s
    against 8.74 s with SDPA. The Triton-language loops lost to cuDNN on an H100 (0.84-0.89x),
    and nothing was measured on other GPUs (Ampere, Ada, Blackwell, whose tensor-core
    instructions the Gluon kernel does not use), nor at other head dims: SDPA there. A kernel
    that fails its self-check falls back to SDPA with a warning rather than stopping an edit."""
    device = torch.device(device)
    reason = None
    if device.type != "cuda":
        reason = f"{device.type} device"
    elif torch.cuda.get_device_capability(device) != AUTO_KERNEL_CAPABILITY:
        major, minor = torch.cuda.get_device_capability(device)
        reason = f"compute capability {major}.{minor}, not Hopper's 9.0"
    elif head_dim != AUTO_KERNEL_HEAD_DIM or dtype not in (torch.bfloat16, torch.float16):
        reason = f"head_dim {head_dim} in {dtype}, the kernel is measured at head_dim 128 in bf16/fp16"
    else:
        ok, why = triton_available()
        if ok:
            ok, why = triton_self_check(device, head_dim, dtype, AttentionBackend.TRITON_GLUON_WS)
        if ok:
            logger.info("attention: triton-gluon-ws (auto; %s)", why)
            return AttentionBackend.TRITON_GLUON_WS
        logger.warning("attention: sdpa (auto): the warp-specialised kernel cannot run here: %s", why)
        return AttentionBackend.SDPA
    logger.info("attention: sdpa (auto: %s)", reason)
    return AttentionBackend.SDPA


_SELF_CHECKS: dict = {}


def triton_self_check(device, head_dim: int, dtype: torch.dtype,
                      backend: AttentionBackend = AttentionBackend.TRITON) -> tuple[bool, str]:
    """Run the kernel as `backend` runs it, once at a small shape against the reference,
    cached per (device, head_dim, dtype, backend): a kernel that fails to compile or
    disagrees on this GPU / Triton version must not run unnoticed. The shape spans several
    query and key tiles with a tail (2N = 540: four tiles of 128 and 28 keys), because a
    miscompiled loop can be right in its first tile only (warp specialisation was, on an
    H100)."""
    key = (str(device), head_dim, dtype, backend)
    if key not in _SELF_CHECKS:
        try:
            from ..kernels import anchor_attention, anchor_attention_ref
            from .rope import rope_tables

            gen = torch.Generator(device="cpu").manual_seed(0)
            num_anchor, (f, h, w) = 3, (3, 9, 10)
            length = 2 * f * h * w + num_anchor
            q, k, v = (torch.randn(1, length, 2, head_dim, generator=gen).to(device, dtype) for _ in range(3))
            cos, sin = rope_tables(f, h, w, head_dim, device=device)
            got = anchor_attention(q, k, v, cos, sin, num_anchor, **backend.kernel_options).float()
            want = anchor_attention_ref(q.float(), k.float(), v.float(), cos, sin, num_anchor).float()
            error = (got - want).abs().max().item()
            # bf16/fp16 inputs with fp32 accumulation stay well inside 5e-2 here; fp8 within
            # e4m3's 2**-4 of max|v|. A wrong index or a broken build is off by O(1).
            limit = 2**-4 * v.abs().max().item() if backend.is_fp8 else 5e-2
            ok = error < limit
            _SELF_CHECKS[key] = (ok, f"triton self-check error {error:.2e}" + ("" if ok else " (too large)"))
        except Exception as e:  # noqa: BLE001 - any failure means: do not use the kernel here
            _SELF_CHECKS[key] = (False, f"triton kernel failed its self-check: {type(e).__name__}: {e}")
    return _SELF_CHECKS[key]


def anchor_self_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_anchor: int,
    backend: AttentionBackend,
) -> torch.Tensor:
    """Self-attention over [source N | anchors A | target N].

    q, k, v: [B, L, heads, head_dim], q/k not yet rotated; cos/sin: [N, head_dim/2] video tables.
    Returns [B, L, heads, head_dim] in v's dtype.

    `backend` may also be a callable with this function's arguments (less `backend`): the
    sequence-parallel attention of sama_rt.parallel, which receives one rank's rows and
    that shard's rows of the sequence tables.
    """
    if callable(backend):
        return backend(q, k, v, cos, sin, num_anchor)
    if backend.uses_triton:
        from ..kernels import anchor_attention

        return anchor_attention(q, k, v, cos, sin, num_anchor, **backend.kernel_options)
    cos_l, sin_l = sequence_rope_tables(cos, sin, num_anchor)
    q = apply_rope(q, cos_l, sin_l)
    k = apply_rope(k, cos_l, sin_l)
    if backend is AttentionBackend.REFERENCE:
        return reference_attention(q, k, v)
    return sdpa_attention(q, k, v)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias=None) -> torch.Tensor:
    """Plain attention on [B, L, heads, D] layouts through SDPA (optional additive bias)."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias
    )
    return out.transpose(1, 2)


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) V in float32 on [B, L, heads, D] layouts."""
    scale = q.shape[-1] ** -0.5
    logits = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * scale
    out = torch.einsum("bhqk,bkhd->bqhd", logits.softmax(dim=-1), v.float())
    return out.to(v.dtype)
