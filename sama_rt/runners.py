"""The three submodels behind one interface, whatever runs them (torch, onnxruntime, TensorRT).

The Editor calls only these signatures:
- dit(latents, timestep, context, source_latents, semantic_latents) -> (noise_pred, semantic_pred)
- text_encoder(ids, mask) -> context
- vae.encode(video, tiled=..., ...) -> latents and vae.decode(latents, ...) -> video in [-1, 1]

The torch modules have them natively; this module wraps the exported graphs (onnxruntime)
and engines (TensorRT) to match. Which backend runs is chosen once, by
`engines.backends.select_backend`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import __version__

logger = logging.getLogger(__name__)

DIT_GRAPH = "dit.onnx"
TEXT_GRAPH = "text_encoder.onnx"
VAE_GRAPH = "vae_{step}.onnx"


@dataclass
class Runners:
    dit: Any
    text_encoder: Any
    vae: Any
    backend: str


class OnnxRuntimeVAE:
    """The exported VAE chunk-step graphs driven by the causal chunk loop."""

    def __init__(self, onnx_dir: Path, providers=None):
        from .engines.backends import OnnxRuntimeGraph

        self.graphs = {
            step: OnnxRuntimeGraph(onnx_dir / VAE_GRAPH.format(step=step), providers)
            for step in ("encoder_first", "encoder_chunk", "decoder_first", "decoder_chunk")
        }
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    def _run(self, step: str, feeds: dict) -> list[torch.Tensor]:
        graph = self.graphs[step]
        out = graph({k: torch.as_tensor(v) for k, v in feeds.items()})
        return [out[name] for name in graph.output_names]

    def encode(self, video: torch.Tensor, tiled: bool = False, **_tiles) -> torch.Tensor:
        from .export.vae import encode_in_chunks

        if tiled:
            raise ValueError("tiled VAE is not available on the onnxruntime backend (the graphs are untiled)")
        return torch.cat(encode_in_chunks(self._run, video.float().cpu()), dim=2)

    def decode(self, latents: torch.Tensor, tiled: bool = False, **_tiles) -> torch.Tensor:
        from .export.vae import decode_in_chunks

        if tiled:
            raise ValueError("tiled VAE is not available on the onnxruntime backend (the graphs are untiled)")
        return torch.cat(decode_in_chunks(self._run, latents.float().cpu()), dim=2).clamp(-1.0, 1.0)


class _TextOnDevice:
    """Adds the `device` attribute the Editor reads to a graph-backed text encoder."""

    def __init__(self, runner, device="cpu"):
        self.runner = runner
        self.device = torch.device(device)

    def __call__(self, ids, mask):
        return self.runner(ids, mask)


def onnxruntime_runners(onnx_dir, dit_config, providers=None) -> Runners:
    from .engines.backends import OnnxRuntimeDiT, OnnxRuntimeTextEncoder

    onnx_dir = Path(onnx_dir)
    missing = [name for name in (DIT_GRAPH, TEXT_GRAPH) if not (onnx_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{onnx_dir}: exported graphs missing: {', '.join(missing)} "
                                "(run `sama-rt export ... --out DIR`)")
    dit = OnnxRuntimeDiT(onnx_dir / DIT_GRAPH, dit_config, providers)
    text = _TextOnDevice(OnnxRuntimeTextEncoder(onnx_dir / TEXT_GRAPH, providers))
    return Runners(dit, text, OnnxRuntimeVAE(onnx_dir, providers), "onnxruntime")


def export_cache_dir(name: str, seed: int) -> Path:
    """Where `Editor.from_config(..., backend="onnxruntime")` keeps its exported graphs."""
    root = Path(os.environ.get("SAMA_RT_CACHE", Path.home() / ".cache" / "sama-rt"))
    key = hashlib.sha256(json.dumps([__version__, torch.__version__, name, seed]).encode()).hexdigest()[:16]
    return root / "onnx" / f"{name}-seed{seed}-{key}"


def export_in_memory(out_dir: Path, dit, text_encoder=None, vae=None) -> Path:
    """Export the given (random-weight) torch models once, into a cache folder (the DiT
    alone when the others are None: give such a folder its own cache key)."""
    from .export.dit import export_dit
    from .export.manifest import write_manifest
    from .export.options import ExportOptions
    from .export.text import export_text_encoder
    from .export.vae import export_vae

    if (out_dir / "manifest.json").is_file():
        return out_dir
    staging = out_dir.with_name(out_dir.name + f".partial-{os.getpid()}")
    staging.mkdir(parents=True, exist_ok=True)
    logger.info("exporting the graphs to %s (once)", out_dir)
    options = ExportOptions(out_dir=staging, dtype="fp32")
    records = [export_dit(options, module=dit)]
    if text_encoder is not None:
        records.append(export_text_encoder(options, module=text_encoder))
    if vae is not None:
        records += export_vae(options, module=vae)
    write_manifest(options, records)
    try:
        os.replace(staging, out_dir)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
