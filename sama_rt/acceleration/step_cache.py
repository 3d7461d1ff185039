"""Step caching in the first-block-cache style, on the torch fast path.

Consecutive denoising steps change the hidden states slowly. Each call runs the first
block; if its residual (output - input) differs from the one of the last fully computed
call by less than `threshold` in relative L1, the remaining blocks are not run: their
residual from that call (last hidden state - first block's output) is added instead.
The reference residual is only replaced when the blocks do run, so small changes cannot
creep past the threshold one step at a time.

One decision per call for the whole batch: both CFG halves and every row of
[source | anchors | target] reuse together, so the guided difference and the semantic
prediction always come from the same approximation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..guided import GuidedPredictor
from ..models.dit import SEGMENT_SEMANTIC, SEGMENT_TARGET
from ..sampling import GuidedPrediction, cfg_combine
from .guidance import GuidanceSchedule


def relative_l1(current: torch.Tensor, reference: torch.Tensor) -> float:
    """mean |current - reference| / mean |reference| (one device sync)."""
    diff = (current - reference).abs().mean()
    scale = reference.abs().mean().clamp_min(torch.finfo(reference.dtype).tiny)
    return float(diff / scale)


class FirstBlockCache:
    """The reference first-block residual and the remaining blocks' residual to reuse."""

    def __init__(self, threshold: float):
        if not threshold > 0:
            raise ValueError(f"the cache threshold must be > 0 (0 switches caching off), got {threshold}")
        self.threshold = threshold
        self._first: Optional[torch.Tensor] = None  # [B, L, dim] at the last full call
        self._rest: Optional[torch.Tensor] = None
        self.last_distance: Optional[float] = None

    def reusable(self, first_residual: torch.Tensor) -> Optional[torch.Tensor]:
        """The cached residual of the remaining blocks, or None when they must run."""
        batch = first_residual.shape[0]
        if self._first is None or self._first.shape[0] < batch:
            return None  # nothing cached, or guided now but the cache holds the positive half only
        # Row 0 is the positive half in both layouts, so dropping the negative half keeps them aligned.
        self.last_distance = relative_l1(first_residual, self._first[:batch])
        return self._rest[:batch] if self.last_distance < self.threshold else None

    def store(self, first_residual: torch.Tensor, rest_residual: torch.Tensor) -> None:
        self._first, self._rest = first_residual, rest_residual


@dataclass
class PredictorStats:
    """What an approximate predictor ran (counters, reset per predictor)."""

    calls: int = 0
    guided_calls: int = 0  # batch-2 calls (positive + negative)
    cached_calls: int = 0  # calls that reused the cached residual of blocks 1..N-1
    block_evaluations: int = 0  # sum over calls of (blocks run) x (batch rows)


class ApproximatePredictor:
    """GuidedPredictor's step with step caching and/or CFG skipping.

    Shares the exact predictor's per-edit state (context K/V, source tokens, RoPE). With
    caching off and no guidance cutoff it performs the exact predictor's operations in the
    same order, so its outputs are bit-identical.
    """

    def __init__(self, exact: GuidedPredictor, cache_threshold: float = 0.0,
                 guidance: Optional[GuidanceSchedule] = None):
        if cache_threshold < 0:
            raise ValueError(f"cache_threshold must be >= 0, got {cache_threshold}")
        self.exact = exact
        self.cache = FirstBlockCache(cache_threshold) if cache_threshold > 0 else None
        self.guidance = guidance if exact.guided else None
        self.stats = PredictorStats()
        ctx = exact.context
        # Positive-only calls use the positive row of the batch-2 context: the rows past its
        # own prompt are zero padding, the same key whether collapsed or not, so this is the
        # positive pass exactly.
        self._positive_kv = [(k[:1], v[:1]) for k, v in ctx.kv]
        self._positive_bias = ctx.bias[:1] if ctx.bias is not None else None

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, semantic: torch.Tensor, timestep: torch.Tensor) -> GuidedPrediction:
        ex = self.exact
        dit = ex.dit
        guided = ex.guided and (self.guidance is None or self.guidance.guided_at(timestep))
        if guided or not ex.guided:  # the exact predictor's own context (batch 2, or 1 at cfg 1)
            kv, bias = ex.context.kv, ex.context.bias
        else:
            kv, bias = self._positive_kv, self._positive_bias
        t, t_mod = dit.embed_time(timestep, 1)
        target, grid = dit.patchify(latents)
        if grid != ex.grid:
            raise ValueError(f"latent grid {grid} differs from the source grid {ex.grid}")
        anchors = dit.siglip_feat_mlp(semantic.to(dit.device)).float() + ex.seg[SEGMENT_SEMANTIC]
        x = torch.cat([ex.source_tokens, anchors, target.float() + ex.seg[SEGMENT_TARGET]], dim=1)
        batch = 2 if guided else 1
        num_anchor = semantic.shape[1]
        first, rest = dit.blocks[0], dit.blocks[1:]
        block_input = x
        x = first.self_attention_residual(x, t_mod, ex.cos, ex.sin, num_anchor, dit.attention)
        x = first.context_and_ffn_residual(x.expand(batch, -1, -1), t_mod, kv[0], bias)
        self.stats.calls += 1
        self.stats.guided_calls += int(guided)
        self.stats.block_evaluations += batch
        cached = None
        if self.cache is not None:
            first_residual = x - block_input
            cached = self.cache.reusable(first_residual)
        if cached is not None:
            x = x + cached
            self.stats.cached_calls += 1
        else:
            first_output = x
            for block, block_kv in zip(rest, kv[1:]):
                x = block(x, t_mod, block_kv, ex.cos, ex.sin, num_anchor, dit.attention, bias)
            self.stats.block_evaluations += len(rest) * batch
            if self.cache is not None:
                self.cache.store(first_residual, x - first_output)
        noise_pred, semantic_pred = dit.predict(x, t.expand(batch, -1), grid, num_anchor)
        if not guided:
            return GuidedPrediction(noise_pred, semantic_pred)
        return GuidedPrediction(
            cfg_combine(noise_pred[:1], noise_pred[1:], ex.cfg_scale),
            cfg_combine(semantic_pred[:1], semantic_pred[1:], ex.cfg_scale),
        )
