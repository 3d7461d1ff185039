"""Opt-in FP8 linear layers for the DiT blocks: `torch._scaled_mm` on float8 e4m3 operands.

Weights are quantized once, with one scale per output channel (row of W); activations are
quantized on the fly with one scale per token (row of x). Both scales factor out of the
dot product, so y = (x_q @ W_q^T) * s_x * s_w + b with fp32 accumulation; on Hopper / Ada
this is the rowwise-scaled FP8 GEMM, ~2x the bf16 tensor-core rate.

An approximation (e4m3 keeps 3 mantissa bits): its error against the exact path is
measured in benchmarks/fp8_linear.py and reported in docs/BENCHMARKS.md. Only the linear
layers inside the blocks are converted (self-attention q/k/v/o, cross-attention q/o, the
feed-forward): they carry nearly all the linear FLOPs. The cross-attention k/v run once per
edit on the text, and the embeddings, time projection and heads are small, so they keep
the model dtype. The per-token quantization is a few elementwise passes in eager mode;
`compile_blocks` fuses them into the neighbouring norm and modulation.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448
_MIN_AMAX = 1e-12  # an all-zero row gets a tiny scale instead of a division by zero


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, K] -> (e4m3 [M, K], float32 scales [M, 1]) with x ~= q * scale per row."""
    # Three passes over x in eager mode (row max, divide, cast), none of them a float32 copy
    # of x before the divide. No clamp needed: |x| <= amax, so |x / scale| <= 448 up to one
    # rounding, which the round-to-nearest cast maps onto 448.
    amax = torch.linalg.vector_norm(x, ord=float("inf"), dim=1, keepdim=True).float()
    scale = amax.clamp(min=_MIN_AMAX) / E4M3_MAX
    return (x / scale).to(E4M3), scale


@functools.cache
def cpu_rowwise_scaled_mm() -> bool:
    """Whether this torch's CPU `_scaled_mm` takes per-row scales (older builds: per-tensor only)."""
    ones = torch.ones(16, 16).to(E4M3)
    try:
        torch._scaled_mm(ones, ones.t(), scale_a=torch.ones(16, 1), scale_b=torch.ones(1, 16), out_dtype=torch.float32)
    except RuntimeError:
        return False
    return True


class Fp8Linear(nn.Module):
    """y = x W^T + b with W in e4m3 (per-output-channel scales) and x quantized per token."""

    def __init__(self, weight_q: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None,
                 out_dtype: torch.dtype):
        super().__init__()
        self.in_features = weight_q.shape[1]
        self.out_features = weight_q.shape[0]
        self.out_dtype = out_dtype
        # Buffers, not parameters: nothing here is trained, and state_dict() shows the
        # quantized form under its own names so it is never mistaken for released weights.
        self.register_buffer("weight_q", weight_q)
        self.register_buffer("weight_scale", weight_scale)  # [1, out], float32
        self.register_buffer("bias", bias)
        # Probed here, not in forward, so that torch.compile traces a constant.
        self.cpu_gemm_takes_row_scales = cpu_rowwise_scaled_mm()

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Fp8Linear":
        weight = linear.weight.detach()
        out_dtype = weight.dtype
        if weight.device.type == "cuda" and out_dtype != torch.bfloat16:
            # The rowwise-scaled FP8 GEMM writes bfloat16 only.
            raise ValueError(f"FP8 linear layers on CUDA need a bfloat16 model, got {out_dtype}")
        if weight.device.type == "cuda" and torch.cuda.get_device_capability(weight.device) < (8, 9):
            raise ValueError("FP8 linear layers need compute capability 8.9 or newer (Ada, Hopper)")
        if linear.in_features % 16 or linear.out_features % 16:
            raise ValueError(
                f"FP8 GEMMs need in/out features divisible by 16, got {linear.in_features}x{linear.out_features}"
            )
        weight_q, scale = quantize_rows(weight)
        bias = None if linear.bias is None else linear.bias.detach().to(out_dtype)
        return cls(weight_q, scale.t().contiguous(), bias, out_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x_q, x_scale = quantize_rows(x.reshape(-1, self.in_features))
        if x_q.device.type == "cpu" and not self.cpu_gemm_takes_row_scales:
            # The same products and scales, dequantized: float32 accumulation, as the GEMM.
            y = (x_q.float() @ self.weight_q.t().float()) * (x_scale * self.weight_scale)
            y = (y if self.bias is None else y + self.bias.float()).to(self.out_dtype)
        else:
            # mat2 must be column-major: the transpose of the row-major [out, in] weight is.
            y = torch._scaled_mm(x_q, self.weight_q.t(), scale_a=x_scale, scale_b=self.weight_scale,
                                 bias=self.bias, out_dtype=self.out_dtype)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3 per-channel"


def block_linear_names(block: nn.Module) -> list[str]:
    """The linear layers of one DiT block that run on every token at every step."""
    names = [f"self_attn.{p}" for p in "qkvo"] + ["cross_attn.q", "cross_attn.o"]
    names += [name for name, module in block.named_modules() if name.startswith("ffn.") and isinstance(module, nn.Linear)]
    return names


def convert_to_fp8_linear(dit) -> int:
    """Replace the per-token linear layers of every block with `Fp8Linear`, in place.

    Returns how many were converted. The high-precision weights of the converted layers are
    released (an FP8 copy is half of bf16), so converting is one-way: reload to undo.
    """
    if getattr(dit, "_block_offloader", None) is not None:
        raise ValueError("FP8 linear layers cannot be combined with block offload")
    converted = 0
    for block in dit.blocks:
        for name in block_linear_names(block):
            module = block.get_submodule(name)
            if isinstance(module, Fp8Linear):
                continue
            if not isinstance(module, nn.Linear):
                raise TypeError(f"block.{name} is {type(module).__name__}, expected nn.Linear")
            parent_name, _, child = name.rpartition(".")
            # setattr registers the child under its name, also an index of nn.Sequential.
            setattr(block.get_submodule(parent_name), child, Fp8Linear.from_linear(module))
            converted += 1
    return converted
