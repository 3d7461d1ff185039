"""`ParallelGuidedPredictor`: the per-step guided DiT call of `guided.GuidedPredictor`,
split across the ranks of a `ParallelConfig`.

Every rank runs the DiT blocks on its shard of `[source | anchors | target]` (the blocks
themselves are the one-process ones; only their self-attention is the sequence-parallel
one), then the shards' predictions are gathered: the head's output rows with one
all-gather, the anchors' semantic predictions with one all-reduce of zero-filled rows
(exact: each element has one non-zero contributor). With cfg-parallel the two halves of
the ranks run the positive and the negative pass and swap their predictions. Every rank
returns the same full guided prediction, so the Euler loop runs identically everywhere.

Exact with respect to `GuidedPredictor` up to float rounding (different reduction orders).
"""
from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from ..guided import collapse_context
from ..models.attention import AttentionBackend
from ..models.dit import SEGMENT_SEMANTIC, SEGMENT_SOURCE, SEGMENT_TARGET, SamaDiT
from ..models.rope import rope_tables, sequence_rope_tables
from ..sampling import GuidedPrediction, cfg_combine
from .attention import FusedKernel, SequenceParallelAttention
from .layout import ShardLayout
from .runtime import ParallelGroups, collective

logger = logging.getLogger(__name__)


class ParallelGuidedPredictor:
    """Callable (latents, semantic, timestep) -> GuidedPrediction, the same on every rank."""

    def __init__(
        self,
        dit: SamaDiT,
        source_latents: torch.Tensor,
        context: torch.Tensor,
        negative_context: torch.Tensor,
        cfg_scale: float,
        groups: ParallelGroups,
    ):
        self.dit = dit
        self.groups = groups
        self.cfg_scale = cfg_scale
        self.guided = cfg_scale != 1.0
        device = dit.device
        # Rank 0's inputs everywhere: each rank's text encoder and VAE ran on the same data,
        # but only bitwise-equal inputs make every rank's shard part of one computation.
        source_latents, context, negative_context = _broadcast_from_rank0(
            [source_latents, context, negative_context], device
        )
        self.split_cfg = groups.config.cfg and self.guided
        if groups.config.cfg and not self.guided:
            logger.info("cfg-parallel with cfg_scale 1: both halves run the positive pass")
        if self.split_cfg:
            ctx = context if groups.cfg.index == 0 else negative_context
        else:
            ctx = torch.cat([context, negative_context]) if self.guided else context
        self.batch = ctx.shape[0]
        with torch.no_grad():
            self.context = collapse_context(dit, ctx)
        self.source_latents = source_latents  # small; its tokens are kept only for this shard
        patch = dit.config.patch_size
        self.grid = tuple(size // p for size, p in zip(source_latents.shape[2:], patch))
        self.video_cos, self.video_sin = rope_tables(*self.grid, dit.config.head_dim, device=device)
        self._num_anchor = None

    def _shard_rows(self, source: torch.Tensor, anchors: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """This rank's rows of [source | anchors | target] ([1, rows, dim] each), zero-padded."""
        return self.layout.take([source, anchors, target], self.groups.sequence.index)

    @torch.no_grad()
    def _prepare(self, num_anchor: int) -> None:
        """Shard layout, attention, RoPE rows and constant rows for `num_anchor` anchors."""
        if self._num_anchor == num_anchor:
            return
        dit = self.dit
        n, dim = self.grid[0] * self.grid[1] * self.grid[2], dit.config.dim
        self.layout = ShardLayout(2 * n + num_anchor, self.groups.sequence.size)
        fused = None
        if isinstance(dit.attention, AttentionBackend) and dit.attention.uses_triton and self.groups.ring.size == 1:
            fused = FusedKernel(self.video_cos, self.video_sin, dit.attention)
        self.attention = SequenceParallelAttention(self.groups, self.layout, fused)
        cos, sin = sequence_rope_tables(self.video_cos, self.video_sin, num_anchor)
        index = self.groups.sequence.index
        self.cos = self.layout.take([cos], index, dim=0)
        self.sin = self.layout.take([sin], index, dim=0)
        # Constant per edit: the source tokens and every row's segment embedding, as this
        # shard's rows only (the full float32 source would cost 0.7 GB per rank at 81 frames).
        seg = dit.segment_embedding.weight.float()
        source, _ = dit.patchify(self.source_latents)

        def fill(value: torch.Tensor, rows: int) -> torch.Tensor:
            return value.expand(1, rows, dim)  # a view: only the shard's rows get materialised

        zero = source.new_zeros(())
        source_rows = self._shard_rows(source, fill(zero, num_anchor), fill(zero, n)).float()
        segment_rows = self._shard_rows(fill(seg[SEGMENT_SOURCE], n), fill(seg[SEGMENT_SEMANTIC], num_anchor),
                                        fill(seg[SEGMENT_TARGET], n))
        # The one-process model adds the segment embedding to each token in float32; adding
        # it here first, and the step's tokens to exact zeros, gives the same bits.
        self.constant_rows = source_rows + segment_rows
        self._num_anchor = num_anchor

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, semantic: torch.Tensor, timestep: torch.Tensor) -> GuidedPrediction:
        dit = self.dit
        num_anchor = semantic.shape[1]
        self._prepare(num_anchor)
        t, t_mod = dit.embed_time(timestep, 1)
        target, grid = dit.patchify(latents)
        if grid != self.grid:
            raise ValueError(f"latent grid {grid} differs from the source grid {self.grid}")
        anchors = dit.siglip_feat_mlp(semantic.to(dit.device))
        n = self.grid[0] * self.grid[1] * self.grid[2]
        step_rows = self._shard_rows(anchors.new_zeros(()).expand(1, n, anchors.shape[-1]), anchors, target)
        x = (self.constant_rows + step_rows.float()).expand(self.batch, -1, -1)
        for block, kv in zip(dit.blocks, self.context.kv):
            x = block(x, t_mod, kv, self.cos, self.sin, num_anchor, self.attention, self.context.bias)
        noise_pred, semantic_pred = self._gather_predictions(x, t, num_anchor)
        if not self.guided:
            return GuidedPrediction(noise_pred, semantic_pred)
        if self.split_cfg:
            positive, negative = self._swap_cfg_halves(noise_pred, semantic_pred)
        else:
            positive = (noise_pred[:1], semantic_pred[:1])
            negative = (noise_pred[1:], semantic_pred[1:])
        return GuidedPrediction(
            cfg_combine(positive[0], negative[0], self.cfg_scale),
            cfg_combine(positive[1], negative[1], self.cfg_scale),
        )

    def _gather_predictions(self, x: torch.Tensor, t: torch.Tensor, num_anchor: int):
        """This shard's hidden rows -> (noise_pred [B,16,F,H,W], semantic_pred [B,A,1152]) of the whole sequence."""
        dit, layout, seq = self.dit, self.layout, self.groups.sequence
        n = self.grid[0] * self.grid[1] * self.grid[2]
        start, end = layout.bounds(seq.index)
        rows = dit.head(x, t.expand(x.shape[0], -1)).float()  # row-wise: exact on a shard
        if seq.size > 1:
            gathered = [torch.empty_like(rows) for _ in range(seq.size)]
            with collective("gathering the predictions"):
                dist.all_gather(gathered, rows.contiguous(), group=seq.group)
            rows = torch.cat(gathered, dim=1)
        target_rows = rows[:, n + num_anchor:2 * n + num_anchor]
        noise_pred = dit.unpatchify(target_rows, self.grid)

        semantic_pred = x.new_zeros(x.shape[0], num_anchor, dit.config.siglip_dim)
        lo, hi = max(start, n), min(end, n + num_anchor)
        if lo < hi:
            semantic_pred[:, lo - n:hi - n] = dit.semantic_head(x[:, lo - start:hi - start]).float()
        if seq.size > 1:
            with collective("gathering the semantic predictions"):
                dist.all_reduce(semantic_pred, group=seq.group)
        return noise_pred, semantic_pred

    def _swap_cfg_halves(self, noise_pred: torch.Tensor, semantic_pred: torch.Tensor):
        """Exchange predictions with the other cfg half: -> ((v+, s+), (v-, s-))."""
        cfg = self.groups.cfg
        mine = torch.cat([noise_pred.flatten(), semantic_pred.flatten()])
        both = [torch.empty_like(mine) for _ in range(cfg.size)]
        with collective("exchanging the cfg halves' predictions"):
            dist.all_gather(both, mine, group=cfg.group)
        split = noise_pred.numel()
        return tuple(
            (flat[:split].view_as(noise_pred), flat[split:].view_as(semantic_pred)) for flat in both
        )


def _broadcast_from_rank0(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    out = []
    with collective("broadcasting the edit inputs from rank 0"):
        for tensor in tensors:
            tensor = tensor.to(device).contiguous().clone()
            dist.broadcast(tensor, src=0)
            out.append(tensor)
    return out
