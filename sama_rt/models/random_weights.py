"""Seeded random weights for models built on the meta device (demo, tests, benchmarks).

Scaled so activations stay O(1) through deep stacks: linear/conv weights ~ N(0, 1/fan_in),
norm scales ~ 1 + N(0, 0.1^2), biases and shifts small, modulation tables ~ N(0, 1/dim).
Random weights make no meaningful edit; they exercise every code path at real shapes.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..device_memory import require_room_for_weights


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "Norm" in type(module).__name__


def init_random_weights(
    module: nn.Module, seed: int = 0, dtype: torch.dtype = torch.float32, device="cpu"
) -> nn.Module:
    """Materialise every parameter of a meta-device `module` with seeded random values.

    Values are drawn on `device` (fast for the 14B model on a GPU), so the same seed gives
    different weights on CPU and CUDA.
    """
    require_room_for_weights(module, dtype, device, f"random weights of {type(module).__name__}")
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, p in list(module.named_parameters()):
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        noise = torch.randn(p.shape, generator=gen, device=device)
        if _is_norm(owner):
            value = 1.0 + 0.1 * noise if leaf in ("weight", "gamma") else 0.1 * noise
        elif leaf == "modulation":
            value = noise / math.sqrt(p.shape[-1])
        elif p.dim() == 1:
            value = 0.02 * noise
        else:
            fan_in = math.prod(p.shape[1:])
            value = noise / math.sqrt(fan_in)
        setattr(owner, leaf, nn.Parameter(value.to(device=device, dtype=dtype), requires_grad=False))
    left = [n for n, b in module.named_buffers() if b.is_meta]
    if left:
        raise RuntimeError(f"buffers left on the meta device: {left}")
    return module.eval()
