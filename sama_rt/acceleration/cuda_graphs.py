"""Opt-in CUDA graphs for the per-step DiT call: one captured graph per input shape.

A 14B step at 480p launches a few thousand kernels; replaying them as one graph removes the
launch gaps between them (they matter at small shapes and with fast kernels, little at
49 frames where each step runs for seconds). Same kernels, same inputs: same outputs.

The first call of a shape runs eagerly (it is also the warm-up that lets the Triton
autotuner and torch.compile finish outside any capture), the second captures the step and
every later call replays it: inputs are copied into the graph's static buffers, outputs
are cloned out, so callers may keep predictions across steps (multistep solvers do).

Only predictors whose host-side control flow is the same at every call can be captured:
the exact fast path (`GuidedPredictor`), not the step cache, which decides per step in
Python whether to run the blocks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..sampling import GuidedPrediction


@dataclass
class _CapturedStep:
    graph: "torch.cuda.CUDAGraph"
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    output: GuidedPrediction

    @classmethod
    def capture(cls, predictor, latents, semantic, timestep) -> "_CapturedStep":
        inputs = (latents.clone(), semantic.clone(), timestep.clone())
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            output = predictor(*inputs)
        return cls(graph, inputs, output)

    def replay(self, latents, semantic, timestep) -> GuidedPrediction:
        for static, value in zip(self.inputs, (latents, semantic, timestep)):
            static.copy_(value)
        self.graph.replay()
        return GuidedPrediction(self.output.latents.clone(), self.output.semantic.clone())


class CudaGraphPredictor:
    """Callable (latents, semantic, timestep) -> GuidedPrediction that replays CUDA graphs."""

    def __init__(self, predictor):
        self.predictor = predictor
        self._warmed: set = set()
        self._graphs: dict = {}

    @property
    def captured_shapes(self) -> int:
        return len(self._graphs)

    @staticmethod
    def _key(latents, semantic, timestep) -> tuple:
        return tuple((tuple(t.shape), t.dtype, t.device) for t in (latents, semantic, timestep))

    def __call__(self, latents: torch.Tensor, semantic: torch.Tensor, timestep: torch.Tensor) -> GuidedPrediction:
        timestep = torch.as_tensor(timestep, device=latents.device)
        for name, t in (("latents", latents), ("semantic", semantic), ("timestep", timestep)):
            if t.device.type != "cuda":
                raise ValueError(f"CUDA graphs need CUDA tensors; {name} is on {t.device}")
        key = self._key(latents, semantic, timestep)
        if key in self._graphs:
            return self._graphs[key].replay(latents, semantic, timestep)
        if key not in self._warmed:
            # Eager: lazy initialisation (autotuning, cuBLAS workspaces, compilation) must
            # happen before any capture.
            self._warmed.add(key)
            with torch.no_grad():
                return self.predictor(latents, semantic, timestep)
        self._graphs[key] = _CapturedStep.capture(self.predictor, latents, semantic, timestep)
        return self._graphs[key].replay(latents, semantic, timestep)
