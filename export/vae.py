"""Export the Wan VAE as four causal chunk steps with explicit caches.

Why chunk steps and not one graph per video: the VAE is causal in time and the release
runs it chunk by chunk (first frame, then 4 frames per latent frame) with a feature cache.
A whole-video graph would hold the activations of all 81 frames at once (tens of GB at
480p in the decoder's full-resolution layers) and would need the frame count in its
shapes. One chunk step holds only one chunk's activations plus the cache (two frames per
causal conv), so 81 frames at 480p decode in the memory of a single chunk, the frame count
is a loop count in the runtime, and every step has a fixed signature. Spatial tiling, when
wanted, composes with this: height and width are dynamic.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

import torch

from ..models.vae import VAEConfig, WanVAE, load_vae
from .graph import ModuleWeights, export_graph
from .options import ExportOptions
from .record import GraphRecord
from .spec import VAE_STEPS, vae_ranges, vae_spec
from .wrappers import VAEStepForExport

logger = logging.getLogger(__name__)


def export_vae(
    options: ExportOptions,
    checkpoint: Optional[Union[str, Path]] = None,
    config: Union[VAEConfig, str, None] = None,
    seed: Optional[int] = None,
    steps=VAE_STEPS,
    module: Optional[WanVAE] = None,
) -> list[GraphRecord]:
    """Export the VAE chunk steps (all four by default) from `Wan2.1_VAE.pth` or random weights.

    The VAE is small (~0.5 GB), so it is traced with its weights in memory: its latent
    statistics are constants built inside the forward, which the meta device cannot hold.
    """
    if module is not None:
        vae = module.to(options.torch_dtype)
        origin = {"origin": "in-memory model"}
    elif checkpoint is not None:
        vae = load_vae(checkpoint, config=config, dtype=options.torch_dtype)
        origin = {"files": [{"path": str(checkpoint), "bytes": Path(checkpoint).stat().st_size}]}
    else:
        if config is None:
            raise ValueError("export_vae needs a checkpoint or a config for random weights")
        cfg = VAEConfig.preset(config) if isinstance(config, str) else config
        torch.manual_seed(seed or 0)
        vae = WanVAE(cfg).to(options.torch_dtype).eval()
        origin = {"origin": f"random weights, seed {seed or 0}"}
    weights = ModuleWeights(vae)
    ranges = vae_ranges(vae, options.buckets)
    records = []
    for step in steps:
        spec = vae_spec(vae, step)
        graph = export_graph(
            VAEStepForExport(vae, step), spec, ranges, options.out_dir,
            model_dtype=options.torch_dtype, opset=options.opset, weights=weights,
            weight_prefix=VAEStepForExport.weight_prefix,
            metadata={"sama_rt.graph": spec.name},
        )
        records.append(GraphRecord(graph, spec, ranges, vae.config.to_dict(), origin))
    return records


# -- the loop that drives the step graphs ---------------------------------------------------
def encode_in_chunks(run_step, frames, temporal_factor: int = 4):
    """Encode frames [1,3,T,H,W] (numpy or torch, T = 4k+1) with the step graphs.

    run_step(step_name, {input name: array}) -> list of outputs in spec order; e.g. a
    dict of onnxruntime sessions or TensorRT engines. Returns the latent frames,
    concatenated along time by the caller's library (a list, one [1,16,1,h,w] per chunk).
    """
    outputs = run_step("encoder_first", {"frames": frames[:, :, :1]})
    latents, cache = [outputs[0]], outputs[1:]
    for start in range(1, frames.shape[2], temporal_factor):
        feeds = {"frames": frames[:, :, start:start + temporal_factor]}
        feeds.update({f"cache_in_{i:02d}": c for i, c in enumerate(cache)})
        outputs = run_step("encoder_chunk", feeds)
        latents.append(outputs[0])
        cache = outputs[1:]
    return latents


def decode_in_chunks(run_step, latents):
    """Decode latents [1,16,F,h,w] one latent frame per step; returns the frame chunks
    (1 frame, then `temporal_factor` frames per latent frame), unclamped."""
    outputs = run_step("decoder_first", {"latent": latents[:, :, :1]})
    frames, cache = [outputs[0]], outputs[1:]
    for index in range(1, latents.shape[2]):
        feeds = {"latent": latents[:, :, index:index + 1]}
        feeds.update({f"cache_in_{i:02d}": c for i, c in enumerate(cache)})
        outputs = run_step("decoder_chunk", feeds)
        frames.append(outputs[0])
        cache = outputs[1:]
    return frames
