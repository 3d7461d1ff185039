"""Export-friendly forwards around the torch models: tensors in, tensors out, no host logic.

Each wrapper takes exactly the inputs of its `ModelSpec`, in order, and returns its outputs.
Everything a graph should not compute is moved to the host: the DiT gets the timestep
sinusoid and the RoPE tables as inputs (both need float64, which TensorRT does not have),
the VAE gets its causal cache as explicit tensors.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..models.dit import SamaDiT
from . import anchor_op  # noqa: F401  (registers torch.ops.sama_rt_export.anchor_attention)


class DiTForExport(nn.Module):
    """One DiT forward: (latents, source_latents, semantic_latents, context, time_sinusoid,
    rope_cos, rope_sin) -> (noise_pred, semantic_pred), float32 outputs.

    The computation is `SamaDiT.forward` (its blocks, unchanged) with two differences that
    change no number:
    the time sinusoid comes in precomputed (the host computes it in float64 from the
    timestep rounded to the model dtype, as `SamaDiT.embed_time` does), and the
    self-attention is either one `AnchorAttention` node (`plugin=True`) or plain ops.
    """

    weight_prefix = "dit."

    def __init__(self, dit: SamaDiT, plugin: bool = True):
        super().__init__()
        self.dit = dit
        self.plugin = plugin

    def forward(self, latents, source_latents, semantic_latents, context, time_sinusoid, rope_cos, rope_sin):
        dit, cfg, dtype = self.dit, self.dit.config, self.dit.dtype
        t = dit.time_embedding(time_sinusoid.to(dtype)).float()
        t_mod = dit.time_projection(t.to(dtype)).float().unflatten(1, (6, cfg.dim))
        context_kv = dit.context_kv(dit.embed_context(context))
        x, grid = dit.embed_sequence(latents, source_latents, semantic_latents)
        num_anchor = semantic_latents.shape[1]
        for block, kv in zip(dit.blocks, context_kv):
            x = block(x, t_mod, kv, rope_cos, rope_sin, num_anchor, self._attention)
        return dit.predict(x, t, grid, num_anchor)

    def _attention(self, q, k, v, cos, sin, num_anchor: int):
        """The block's self-attention (attention dispatch accepts a callable backend)."""
        scale = q.shape[-1] ** -0.5
        if self.plugin:
            return torch.ops.sama_rt_export.anchor_attention(q, k, v, cos, sin, num_anchor, scale)
        # The same math, traced into standard ops (no custom node in the graph).
        return _plain_anchor_attention(q, k, v, cos, sin, num_anchor, scale)


def _plain_anchor_attention(q, k, v, cos, sin, num_anchor: int, scale: float):
    from ..models.rope import apply_rope, sequence_rope_tables

    cos_l, sin_l = sequence_rope_tables(cos, sin, num_anchor)
    qr = apply_rope(q.float(), cos_l, sin_l).transpose(1, 2)
    kr = apply_rope(k.float(), cos_l, sin_l).transpose(1, 2)
    logits = torch.matmul(qr, kr.transpose(-1, -2)) * scale
    out = torch.matmul(logits.softmax(dim=-1), v.float().transpose(1, 2))
    return out.transpose(1, 2).to(v.dtype)


class TextEncoderForExport(nn.Module):
    """(ids, mask) -> context: the encoder over all 512 positions, rows past each prompt zero.

    `UMT5Encoder.forward` skips the padding with a host-side length; the graph computes all
    positions instead (padding keys get zero weight, so the real rows are the same) and
    zeroes the padding rows with the mask.
    """

    weight_prefix = "encoder."

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, ids, mask):
        out = self.encoder.encode_raw(ids, mask)
        keep = mask.ne(0).unsqueeze(-1)
        return torch.where(keep, out, torch.zeros((), dtype=out.dtype, device=out.device))


class VAEStepForExport(nn.Module):
    """One causal chunk step of the VAE with the cache as tensors.

    encoder_first(frames[1 frame]) -> (latent, *cache)
    encoder_chunk(frames[4 frames], *cache) -> (latent, *cache)
    decoder_first(latent) -> (frames[1 frame], *cache)
    decoder_chunk(latent, *cache) -> (frames[4 frames], *cache)
    """

    weight_prefix = "vae."

    def __init__(self, vae, step: str):
        super().__init__()
        self.vae = vae
        self.step = step

    @staticmethod
    def dynamic_shapes_structure(per_input: list) -> tuple:
        return (per_input[0], tuple(per_input[1:])) if len(per_input) > 1 else (per_input[0],)

    def forward(self, x, *cache_in):
        from ..models.vae import CausalCache

        vae = self.vae
        encoder = self.step.startswith("encoder")
        if self.step.endswith("_first"):
            cache = vae.new_encoder_cache() if encoder else vae.new_decoder_cache()
        else:
            cache = CausalCache.from_tensors(list(cache_in))
        out = vae.encode_chunk(x, cache) if encoder else vae.decode_chunk(x, cache)
        return (out, *cache.tensors())


def vae_step_meta_outputs(vae, step: str, point) -> Sequence[torch.Tensor]:
    """Run a chunk step on the meta device at a latent size: its outputs' shapes, free."""
    from ..models.vae import WanVAE

    cfg = vae.config
    s, tf = cfg.spatial_factor, cfg.temporal_factor
    h, w = point["latent_height"], point["latent_width"]
    with torch.device("meta"):
        meta = WanVAE(cfg)
        encoder = step.startswith("encoder")
        first_input = torch.empty(1, 3, 1, h * s, w * s) if encoder else torch.empty(1, cfg.z_dim, 1, h, w)
        outputs = VAEStepForExport(meta, step.split("_")[0] + "_first")(first_input)
        if step.endswith("_first"):
            return outputs
        x = torch.empty(1, 3, tf, h * s, w * s) if encoder else torch.empty(1, cfg.z_dim, 1, h, w)
        return VAEStepForExport(meta, step)(x, *outputs[1:])
