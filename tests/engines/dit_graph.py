"""Export the DiT to ONNX with the export spec's graph inputs (for the engine tests and benchmarks).

Uses sama_rt.export's DiT exporter when it exists; otherwise a plain-ops wrapper here with
the same input/output names (time_sinusoid and RoPE tables computed on the host).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)


class HostInputsDiT(nn.Module):
    """SamaDiT.forward with the time sinusoid and RoPE tables as inputs (the export contract)."""

    def __init__(self, dit):
        super().__init__()
        self.dit = dit

    def forward(self, latents, source_latents, semantic_latents, context, time_sinusoid, rope_cos, rope_sin):
        d = self.dit
        t = d.time_embedding(time_sinusoid.to(d.dtype)).float()
        t_mod = d.time_projection(t.to(d.dtype)).float().unflatten(1, (6, d.config.dim))
        kv = d.context_kv(d.embed_context(context))
        x, grid = d.embed_sequence(latents, source_latents, semantic_latents)
        num_anchor = semantic_latents.shape[1]
        x = d.run_blocks(x, t_mod, kv, rope_cos, rope_sin, num_anchor)
        return d.predict(x, t, grid, num_anchor)


def export_dit_graph(dit, path: Path, point=None) -> Path:
    """Write `path` (an fp32 DiT graph with a dynamic batch and latent grid)."""
    from sama_rt.export.spec import ShapeBuckets, dit_ranges, dit_spec, trace_point

    cfg = dit.config
    spec = dit_spec(cfg)
    # latent frames 3..4, latent grid 4x6..8x8: the small shapes the tests and benchmarks run.
    ranges = dit_ranges(cfg, ShapeBuckets(frames=(9, 13), resolutions=((32, 48), (64, 64))))
    point = point or trace_point(ranges, spec.axes)
    inputs = spec.sample_inputs(point, torch.float32)
    wrapper = HostInputsDiT(dit.with_attention("sdpa")).eval()
    program = torch.onnx.export(
        wrapper, tuple(inputs[n] for n in spec.input_names), input_names=spec.input_names,
        output_names=spec.output_names, dynamo=True, optimize=False,
        dynamic_shapes=tuple(spec.torch_dynamic_shapes(ranges)[n] for n in spec.input_names),
    )
    program.save(str(path))
    return Path(path)
