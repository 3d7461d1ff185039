"""Calibration sets: DiT inputs captured from real denoising runs, saved to one file.

Users calibrate fp8/int8 engines on their own videos: the Editor wraps its DiT in a
`CalibrationRecorder` for an edit (or a few), then `save_calibration_set` writes what the
DiT saw at every step. File format (one `.safetensors`):

- tensors `"{index:05d}.{input}"` for input in CALIBRATION_INPUTS, one entry per DiT call
  (float32; shapes may differ between samples, e.g. several videos);
- header metadata `"sama_rt.calibration"`: json {"format": 1, "num_samples": n,
  "inputs": [...], "config": {the DiTConfig dict}, "note": free text}.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Iterator, Optional, Union

import torch

logger = logging.getLogger(__name__)

CALIBRATION_FORMAT_VERSION = 1
METADATA_KEY = "sama_rt.calibration"
# The DiT forward's arguments, in call order (SamaDiT.forward).
CALIBRATION_INPUTS = ("latents", "timestep", "context", "source_latents", "semantic_latents")


@dataclass
class CalibrationSet:
    samples: list[dict[str, torch.Tensor]] = field(default_factory=list)
    config: Optional[dict] = None
    note: str = ""

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return iter(self.samples)

    def add(self, latents, timestep, context, source_latents, semantic_latents) -> None:
        values = (latents, timestep, context, source_latents, semantic_latents)
        self.samples.append(
            {k: torch.as_tensor(v).detach().float().reshape(-1) if k == "timestep" else v.detach().float().cpu().contiguous()
             for k, v in zip(CALIBRATION_INPUTS, values)}
        )


class CalibrationRecorder:
    """Wraps a DiT callable; records every call's inputs (optionally every `stride`-th) and passes it on."""

    def __init__(self, dit, calibration: Optional[CalibrationSet] = None, stride: int = 1, limit: Optional[int] = None):
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.dit = dit
        self.calibration = calibration if calibration is not None else CalibrationSet(
            config=getattr(getattr(dit, "config", None), "to_dict", lambda: None)()
        )
        self.stride, self.limit, self.calls = stride, limit, 0

    def __call__(self, latents, timestep, context, source_latents, semantic_latents):
        full = self.limit is not None and len(self.calibration) >= self.limit
        if self.calls % self.stride == 0 and not full:
            self.calibration.add(latents, timestep, context, source_latents, semantic_latents)
        self.calls += 1
        return self.dit(latents, timestep, context, source_latents, semantic_latents)

    def __getattr__(self, name):  # the Editor may read .config / .dtype / .device of the DiT
        return getattr(self.dit, name)


def save_calibration_set(calibration: CalibrationSet, path: Union[str, os.PathLike]) -> None:
    from safetensors.torch import save_file

    if not len(calibration):
        raise ValueError("refusing to save an empty calibration set")
    tensors = {f"{i:05d}.{k}": v.contiguous() for i, s in enumerate(calibration.samples) for k, v in s.items()}
    meta = {
        "format": CALIBRATION_FORMAT_VERSION,
        "num_samples": len(calibration),
        "inputs": list(CALIBRATION_INPUTS),
        "config": calibration.config,
        "note": calibration.note,
    }
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta)})
    logger.info("saved %d calibration samples to %s", len(calibration), path)


def load_calibration_set(path: Union[str, os.PathLike]) -> CalibrationSet:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(METADATA_KEY)
        if raw is None:
            raise ValueError(f"{path} is not a sama-rt calibration set (no {METADATA_KEY!r} metadata)")
        meta = json.loads(raw)
        if meta.get("format") != CALIBRATION_FORMAT_VERSION:
            raise ValueError(f"{path}: calibration format {meta.get('format')}, expected {CALIBRATION_FORMAT_VERSION}")
        samples = []
        for i in range(meta["num_samples"]):
            try:
                samples.append({k: f.get_tensor(f"{i:05d}.{k}") for k in meta["inputs"]})
            except Exception as e:  # safetensors raises its own error type for a missing key
                raise ValueError(f"{path}: sample {i} is incomplete ({e})") from None
    return CalibrationSet(samples=samples, config=meta.get("config"), note=meta.get("note", ""))
