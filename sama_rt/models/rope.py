"""SAMA's 3-D rotary position embedding as cos/sin tables in float32 real arithmetic.

The official code rotates in float64 complex numbers inside every attention call. The same
rotation written as real cos/sin tables, built once per shape, is exportable (no complex, no
float64 in a graph), cheap, and equal to the official result within float32 rounding.
"""
from __future__ import annotations

import torch

ROPE_THETA = 10000.0


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channels of a head given to the frame, height and width axes."""
    if head_dim % 2 or (head_dim // 3) % 2:
        raise ValueError(
            f"head_dim {head_dim} does not split into even frame/height/width parts "
            "(needs head_dim // 3 even: 48, 96 and 128 work, 64 does not)"
        )
    part = head_dim // 3
    return head_dim - 2 * part, part, part


def _axis_angles(length: int, channels: int) -> torch.Tensor:
    """[length, channels/2] float64 angles pos * theta^(-2i/channels)."""
    inv_freq = 1.0 / ROPE_THETA ** (torch.arange(0, channels, 2, dtype=torch.float64) / channels)
    return torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)


def rope_tables(F: int, H: int, W: int, head_dim: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables [F*H*W, head_dim//2] (float32) for video tokens in (f, h, w) order.

    Angles are computed in float64 and rounded once, so the tables are as accurate as the
    official complex float64 frequencies.
    """
    cf, ch, cw = rope_split(head_dim)
    af = _axis_angles(F, cf)[:, None, None, :].expand(F, H, W, cf // 2)
    ah = _axis_angles(H, ch)[None, :, None, :].expand(F, H, W, ch // 2)
    aw = _axis_angles(W, cw)[None, None, :, :].expand(F, H, W, cw // 2)
    angles = torch.cat([af, ah, aw], dim=-1).reshape(F * H * W, head_dim // 2)
    return (
        torch.cos(angles).to(device=device, dtype=torch.float32),
        torch.sin(angles).to(device=device, dtype=torch.float32),
    )


def sequence_rope_tables(
    cos: torch.Tensor, sin: torch.Tensor, num_anchor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tables for the whole sequence [source N | anchors A | target N].

    Source and target share positions; anchor rows are zero (the complex number 0, not
    angle 0), which makes the anchors' rotated q and k exactly zero, as in the release.
    """
    zeros = cos.new_zeros(num_anchor, cos.shape[1])
    return torch.cat([cos, zeros, cos]), torch.cat([sin, zeros, sin])


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs (2i, 2i+1) of x [B, L, heads, D] by tables [L, D/2].

    Computed in float32 and returned in x's dtype.
    """
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    out = torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1)
    return out.flatten(-2).to(x.dtype)
