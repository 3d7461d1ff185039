"""Sequence-parallel self-attention for SAMA: Ulysses all-to-all, ring attention, or both.

Each rank holds one contiguous shard of `[source N | anchors A | target N]` (see
layout.ShardLayout) with the RoPE rows of exactly those tokens: source and target rows use
the video tables, anchor and padding rows are zero. q and k are rotated on the shard
before any communication, so what travels is already position-encoded and the attention
after it is plain softmax(QK^T / sqrt(d)) V over real keys; padded keys are dropped by
slicing, never masked or zeroed (a zero key would still take part with logit 0, like an
anchor).

- Ulysses (degree U, U divides the heads): one all-to-all turns [rows of my shard, all
  heads] into [rows of U shards, heads/U], attention runs on those rows, a second
  all-to-all turns the output back. q, k and v travel in one call.
- Ring (degree R): each rank keeps its query chunk and passes K/V chunks around the ring,
  merging partial results exactly with their log-sum-exp (online softmax); the transfer
  of the next chunk overlaps the attention of the current one. Each partial is torch's
  flash attention where it returns the log-sum-exp (CPU; CUDA fp16/bf16).
- Both: Ulysses inside, ring across: after the all-to-all a rank holds the rows of U
  shards (one ring chunk) for heads/U heads, and rings those chunks with the ranks that
  hold the same heads.
- Ulysses alone with the Triton backend (`FusedKernel`): q and k travel unrotated, since
  after the all-to-all a rank holds the whole sequence for its heads, and the fused
  anchor-attention kernel rotates them in registers with the full video tables and folds
  the anchors, exactly as in one process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..models.attention import AttentionBackend, sdpa_attention
from ..models.rope import apply_rope
from .layout import ShardLayout
from .runtime import ParallelGroups, RankGroup, collective

@dataclass(frozen=True)
class FusedKernel:
    """What the fused kernel needs beyond q, k, v: the video RoPE tables [N, head_dim/2] of
    the whole sequence, and the Triton backend that says how it runs."""

    cos: torch.Tensor
    sin: torch.Tensor
    backend: AttentionBackend = AttentionBackend.TRITON


# Float32 logits per query block in the ring's exact attention: bounds its memory.
LOGITS_BLOCK_BYTES = 256 * 2**20


def sequence_to_heads(x: torch.Tensor, ulysses: RankGroup) -> torch.Tensor:
    """[..., Ls, H, D] (my rows, all heads) -> [..., U*Ls, H/U, D] (U shards' rows, my heads)."""
    u = ulysses.size
    heads = x.shape[-2]
    send = x.unflatten(-2, (u, heads // u)).movedim(-3, 0).contiguous()  # [U, ..., Ls, H/U, D]
    recv = torch.empty_like(send)
    with collective("the Ulysses all-to-all (sequence to heads)"):
        dist.all_to_all_single(recv, send, group=ulysses.group)
    return recv.movedim(0, -4).flatten(-4, -3)  # recv[s] holds shard s's rows of my heads


def heads_to_sequence(x: torch.Tensor, ulysses: RankGroup) -> torch.Tensor:
    """Inverse of sequence_to_heads: [..., U*Ls, h, D] -> [..., Ls, U*h, D]."""
    u = ulysses.size
    rows = x.shape[-3]
    send = x.unflatten(-3, (u, rows // u)).movedim(-4, 0).contiguous()  # [U, ..., Ls, h, D]
    recv = torch.empty_like(send)
    with collective("the Ulysses all-to-all (heads to sequence)"):
        dist.all_to_all_single(recv, send, group=ulysses.group)
    return recv.movedim(0, -3).flatten(-3, -2)  # recv[s] holds my rows of head group s


def attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(QK^T/sqrt(d)) V and the log-sum-exp of each query's logits, both float32.

    q [B, Lq, h, D], k/v [B, Lk, h, D] -> out [B, Lq, h, D], lse [B, Lq, h]. A fused flash
    kernel where torch has one that returns the log-sum-exp (CPU; CUDA in fp16/bf16), else
    the exact float32 routine.
    """
    fused = _flash_attention_with_lse(q, k, v)
    return fused if fused is not None else exact_attention_with_lse(q, k, v)


def _flash_attention_with_lse(q, k, v) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """torch's flash attention with its log-sum-exp (natural log, float32), or None.

    These are the aten ops behind F.scaled_dot_product_attention; SDPA itself does not
    return the log-sum-exp that merging ring partials needs. The output is in q's dtype
    (accumulated in float32), so a 16-bit partial is rounded once before merging, as in any
    flash-based ring attention.
    """
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # [B, h, L, D]
    scale = q.shape[-1] ** -0.5
    if q.device.type == "cpu" and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qt, kt, vt, 0.0, False, scale=scale)
    elif q.device.type == "cuda" and q.dtype in (torch.float16, torch.bfloat16):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(qt, kt, vt, 0.0, False, False, scale=scale)[:2]
    else:
        return None
    return out.transpose(1, 2).float(), lse.transpose(1, 2).float()


def exact_attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """attention_with_lse in plain float32 (the fallback, and the tests' oracle). Query
    blocks keep the float32 logits under LOGITS_BLOCK_BYTES.
    """
    b, lk, h = k.shape[0], k.shape[1], k.shape[2]
    rows = max(1, LOGITS_BLOCK_BYTES // (4 * b * h * lk))
    scale = q.shape[-1] ** -0.5
    kf, vf = k.float(), v.float()
    outs, lses = [], []
    for qb in q.split(rows, dim=1):
        logits = torch.einsum("bqhd,bkhd->bhqk", qb.float(), kf) * scale
        lse = logits.logsumexp(dim=-1)
        outs.append(torch.einsum("bhqk,bkhd->bqhd", (logits - lse.unsqueeze(-1)).exp(), vf))
        lses.append(lse.transpose(1, 2))
    return torch.cat(outs, dim=1), torch.cat(lses, dim=1)


def merge_partial(
    out: Optional[torch.Tensor], lse: Optional[torch.Tensor], block_out: torch.Tensor, block_lse: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine attention over two disjoint key sets from their normalised outputs and lse."""
    if out is None:
        return block_out, block_lse
    total = torch.logaddexp(lse, block_lse)
    merged = out * (lse - total).exp().unsqueeze(-1) + block_out * (block_lse - total).exp().unsqueeze(-1)
    return merged, total


def ring_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ring: RankGroup, valid: Sequence[int]
) -> torch.Tensor:
    """Exact attention of this rank's queries over the K/V chunks of every ring rank.

    q/k/v [B, Lc, h, D]: this rank's chunk (q, k rotated); valid[j]: real rows of chunk j
    (the rest is padding). Returns [B, Lc, h, D] in v's dtype.
    """
    size = ring.size
    send_to = ring.ranks[(ring.index + 1) % size]
    receive_from = ring.ranks[(ring.index - 1) % size]
    kv = torch.stack([k, v]).contiguous()
    out = lse = None
    for step in range(size):
        held = (ring.index - step) % size  # whose chunk `kv` is now
        pending, incoming = [], None
        if step + 1 < size:
            incoming = torch.empty_like(kv)
            with collective("the ring K/V exchange"):
                pending = dist.batch_isend_irecv([
                    dist.P2POp(dist.isend, kv, send_to, ring.group),
                    dist.P2POp(dist.irecv, incoming, receive_from, ring.group),
                ])
        n = valid[held]
        if n > 0:
            out, lse = merge_partial(out, lse, *attention_with_lse(q, kv[0, :, :n], kv[1, :, :n]))
        with collective("the ring K/V exchange"):
            for work in pending:
                work.wait()
        if incoming is not None:
            kv = incoming
    return out.to(v.dtype)


class SequenceParallelAttention:
    """SAMA self-attention over a sharded sequence: the callable a DiT block's attention takes.

    Called as `(q, k, v, cos, sin, num_anchor)` with this rank's rows: q/k/v
    [B, Ls, heads, head_dim] unrotated, cos/sin [Ls, head_dim/2] the shard's rows of the
    sequence tables. The result equals the same rows of the one-process attention.
    """

    def __init__(self, groups: ParallelGroups, layout: ShardLayout, fused: Optional[FusedKernel] = None):
        if layout.shards != groups.sequence.size:
            raise ValueError(f"layout has {layout.shards} shards, the sequence group {groups.sequence.size} ranks")
        if fused is not None and groups.ring.size > 1:
            raise ValueError("the fused kernel needs whole sequences per rank: Ulysses without ring")
        self.fused = fused
        self.ulysses = groups.ulysses
        self.ring = groups.ring
        self.layout = layout
        chunk = self.ulysses.size * layout.shard_length  # rows a rank attends from after the all-to-all
        self.chunk_valid = [layout.valid_rows(j * chunk, chunk) for j in range(self.ring.size)]

    def __call__(self, q, k, v, cos, sin, num_anchor: int) -> torch.Tensor:
        if self.fused is not None:
            return self._fused_attention(q, k, v, num_anchor)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if self.ulysses.size > 1:
            q, k, v = sequence_to_heads(torch.stack([q, k, v]), self.ulysses).unbind(0)
        if self.ring.size > 1:
            out = ring_attention(q, k, v, self.ring, self.chunk_valid)
        else:
            n = self.chunk_valid[0]
            out = sdpa_attention(q, k[:, :n], v[:, :n])
        if self.ulysses.size > 1:
            out = heads_to_sequence(out, self.ulysses)
        return out

    def _fused_attention(self, q, k, v, num_anchor: int) -> torch.Tensor:
        from ..kernels import anchor_attention

        if self.ulysses.size > 1:
            q, k, v = sequence_to_heads(torch.stack([q, k, v]), self.ulysses).unbind(0)
        real = self.layout.length  # the rows past it are padding: neither keys nor read back
        out = anchor_attention(q[:, :real], k[:, :real], v[:, :real], self.fused.cos, self.fused.sin, num_anchor,
                               **self.fused.backend.kernel_options)
        out = F.pad(out, (0, 0, 0, 0, 0, q.shape[1] - real))
        if self.ulysses.size > 1:
            out = heads_to_sequence(out, self.ulysses)
        return out
