"""The fast per-step DiT call: everything constant across steps is computed once per edit.

Exact with respect to `sampling.guided_velocity` (same math, different operation order):

- CFG batched: positive and negative in one batch-2 forward; what does not depend on the
  prompt (source tokens, semantic tokens, time modulation, and the whole self-attention of
  the first block, which runs before any text enters) is computed once and broadcast.
- Per edit, not per step: the text-context embedding and every block's cross-attention
  K/V, the patchified + segment-embedded source tokens, the RoPE tables.
- Cross-attention padding collapse: the context rows past the real prompt length are all
  zero, so their keys and values are identical; they are replaced by one key whose logit
  carries + log(multiplicity). softmax over [k_1..k_n, k_pad x m] equals softmax over
  [k_1..k_n, k_pad] with log(m) added to the last logit, so the result is unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from .models.dit import SEGMENT_SEMANTIC, SEGMENT_SOURCE, SEGMENT_TARGET, SamaDiT
from .models.rope import rope_tables
from .sampling import GuidedPrediction, cfg_combine


@dataclass(frozen=True)
class CollapsedContext:
    """Cross-attention K/V per block over the real rows + one padding key, and its bias."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    bias: Optional[torch.Tensor]  # [B, 1, 1, keys] additive logit bias, None if no padding


def real_context_length(context: torch.Tensor) -> int:
    """Rows up to the last non-zero row of any sample (the encoder zeroes the rest)."""
    nonzero = context.abs().amax(dim=(0, 2)) > 0
    idx = torch.nonzero(nonzero)
    return int(idx[-1]) + 1 if idx.numel() else 0


def collapse_context(dit: SamaDiT, context: torch.Tensor) -> CollapsedContext:
    total = context.shape[1]
    n = real_context_length(context)
    pad = total - n
    if pad <= 1:
        return CollapsedContext(dit.context_kv(dit.embed_context(context)), None)
    rows = torch.cat([context[:, :n], torch.zeros_like(context[:, :1])], dim=1)
    kv = dit.context_kv(dit.embed_context(rows))
    bias = torch.zeros(context.shape[0], 1, 1, n + 1, dtype=kv[0][0].dtype, device=context.device)
    bias[..., n] = math.log(pad)
    return CollapsedContext(kv, bias)


class GuidedPredictor:
    """Callable (latents, semantic, timestep) -> GuidedPrediction for one edit."""

    def __init__(
        self,
        dit: SamaDiT,
        source_latents: torch.Tensor,
        context: torch.Tensor,
        negative_context: torch.Tensor,
        cfg_scale: float,
    ):
        self.dit = dit
        self.cfg_scale = cfg_scale
        self.guided = cfg_scale != 1.0
        ctx = torch.cat([context, negative_context]) if self.guided else context
        with torch.no_grad():
            self.context = collapse_context(dit, ctx.to(dit.device))
            source, self.grid = dit.patchify(source_latents.to(dit.device))
            seg = dit.segment_embedding.weight.float()
            self.seg = seg
            self.source_tokens = source.float() + seg[SEGMENT_SOURCE]
        self.cos, self.sin = rope_tables(*self.grid, dit.config.head_dim, device=dit.device)

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, semantic: torch.Tensor, timestep: torch.Tensor) -> GuidedPrediction:
        dit = self.dit
        t, t_mod = dit.embed_time(timestep, 1)
        target, grid = dit.patchify(latents)
        if grid != self.grid:
            raise ValueError(f"latent grid {grid} differs from the source grid {self.grid}")
        anchors = dit.siglip_feat_mlp(semantic.to(dit.device)).float() + self.seg[SEGMENT_SEMANTIC]
        x = torch.cat([self.source_tokens, anchors, target.float() + self.seg[SEGMENT_TARGET]], dim=1)
        batch = 2 if self.guided else 1
        num_anchor = semantic.shape[1]
        # Until the first cross-attention the two CFG halves are the same sequence: run the
        # first block's self-attention once and broadcast.
        first, rest = dit.blocks[0], dit.blocks[1:]
        x = first.self_attention_residual(x, t_mod, self.cos, self.sin, num_anchor, dit.attention)
        x = first.context_and_ffn_residual(x.expand(batch, -1, -1), t_mod, self.context.kv[0], self.context.bias)
        for block, kv in zip(rest, self.context.kv[1:]):
            x = block(x, t_mod, kv, self.cos, self.sin, num_anchor, dit.attention, self.context.bias)
        noise_pred, semantic_pred = dit.predict(x, t.expand(batch, -1), grid, num_anchor)
        if not self.guided:
            return GuidedPrediction(noise_pred, semantic_pred)
        return GuidedPrediction(
            cfg_combine(noise_pred[:1], noise_pred[1:], self.cfg_scale),
            cfg_combine(semantic_pred[:1], semantic_pred[1:], self.cfg_scale),
        )
