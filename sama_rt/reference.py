"""The official per-step computation, written out for side-by-side benchmarks.

Same weights as our model, computed the way the released pipeline does it: RoPE in
float64 complex arithmetic inside every attention call, the two CFG passes as two separate
forwards, the text embedding and every cross-attention K/V recomputed each pass, nothing
cached across steps. `sama-rt bench --compare-reference` times this against the fast path.
"""
from __future__ import annotations

import torch

from .models.attention import sdpa_attention
from .models.dit import SamaDiT, layer_norm, SEGMENT_SEMANTIC, SEGMENT_SOURCE, SEGMENT_TARGET
from .models.rope import rope_split
from .sampling import GuidedPrediction, cfg_combine


def complex_freqs(head_dim: int, grid: tuple[int, int, int], num_anchor: int, device) -> torch.Tensor:
    """[L, 1, head_dim/2] complex128: video positions for source and target, 0 for anchors."""
    f, h, w = grid
    parts = []
    for c in rope_split(head_dim):
        inv = 1.0 / (10000 ** (torch.arange(0, c, 2)[: c // 2].double() / c))
        angles = torch.outer(torch.arange(1024, dtype=torch.float64), inv)
        parts.append(torch.polar(torch.ones_like(angles), angles))
    table = torch.cat([
        parts[0][:f].view(f, 1, 1, -1).expand(f, h, w, -1),
        parts[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
        parts[2][:w].view(1, 1, w, -1).expand(f, h, w, -1),
    ], dim=-1).reshape(f * h * w, 1, -1)
    anchors = torch.zeros(num_anchor, 1, table.shape[-1], dtype=table.dtype)
    return torch.cat([table, anchors, table]).to(device)


def complex_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """x [B, L, heads, D] rotated in float64 complex arithmetic, as released."""
    xc = torch.view_as_complex(x.to(torch.float64).reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs).flatten(-2).to(x.dtype)


@torch.no_grad()
def official_forward(dit: SamaDiT, latents, timestep, context, source_latents, semantic_latents):
    """One DiT pass as released (no caching, complex float64 RoPE)."""
    batch = latents.shape[0]
    t, t_mod = dit.embed_time(timestep, batch)
    ctx = dit.embed_context(context)
    target, grid = dit.patchify(latents)
    source, _ = dit.patchify(source_latents)
    semantic = dit.siglip_feat_mlp(semantic_latents)
    seg = dit.segment_embedding.weight.float()
    x = torch.cat([source.float() + seg[SEGMENT_SOURCE], semantic.float() + seg[SEGMENT_SEMANTIC],
                   target.float() + seg[SEGMENT_TARGET]], dim=1)
    num_anchor = semantic_latents.shape[1]
    freqs = complex_freqs(dit.config.head_dim, grid, num_anchor, x.device)
    for block in dit.blocks:
        dtype = block.modulation.dtype
        mod = block.modulation.float() + t_mod
        shift_msa, scale_msa, gate_msa, shift_ffn, scale_ffn, gate_ffn = mod.unsqueeze(2).unbind(1)
        h = (layer_norm(x, block.eps) * (1 + scale_msa) + shift_msa).to(dtype)
        attn = block.self_attn
        heads = (attn.num_heads, -1)
        q = complex_rope(attn.norm_q(attn.q(h)).unflatten(-1, heads), freqs)
        k = complex_rope(attn.norm_k(attn.k(h)).unflatten(-1, heads), freqs)
        v = attn.v(h).unflatten(-1, heads)
        x = x + gate_msa * attn.o(sdpa_attention(q, k, v).flatten(-2)).float()
        kv = block.cross_attn.context_kv(ctx)  # recomputed every pass, as released
        x = x + block.cross_attn(block.norm3(x).to(dtype), kv).float()
        h = (layer_norm(x, block.eps) * (1 + scale_ffn) + shift_ffn).to(dtype)
        x = x + gate_ffn * block.ffn(h).float()
    return dit.predict(x, t, grid, num_anchor)


def official_guided_step(dit, latents, semantic, timestep, source_latents, context, negative_context,
                         cfg_scale: float) -> GuidedPrediction:
    """Positive pass, then negative pass, then CFG (the released loop)."""
    v_pos, s_pos = official_forward(dit, latents, timestep, context, source_latents, semantic)
    if cfg_scale == 1.0:
        return GuidedPrediction(v_pos, s_pos)
    v_neg, s_neg = official_forward(dit, latents, timestep, negative_context, source_latents, semantic)
    return GuidedPrediction(cfg_combine(v_pos, v_neg, cfg_scale), cfg_combine(s_pos, s_neg, cfg_scale))
