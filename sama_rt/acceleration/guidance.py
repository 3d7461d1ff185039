"""CFG skipping in late steps: below a noise level, run the positive pass only.

Late steps refine detail that guidance barely changes, so dropping the negative pass there
halves their cost. The rule is stated in noise levels, so it means the same for every
solver: a model call at a noise level <= sigmas[k], k = ceil(cfg_skip_after * steps), runs
the positive pass only (as the release does at cfg_scale 1), for the video and the
semantic latents alike. With Euler that is exactly the steps k..steps-1; with Heun the
corrector of step k-1 (evaluated at sigmas[k]) is positive-only too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..sampling import NUM_TRAIN_TIMESTEPS, flow_match_sigmas


@dataclass(frozen=True)
class GuidanceSchedule:
    """cutoff_timestep: model calls at timesteps <= this run without guidance."""

    cutoff_timestep: float

    @classmethod
    def for_steps(cls, steps: int, shift: float, cfg_skip_after: float) -> Optional["GuidanceSchedule"]:
        """None when every step keeps guidance (cfg_skip_after = 1, the release)."""
        if not 0.0 <= cfg_skip_after <= 1.0:
            raise ValueError(f"cfg_skip_after must be in [0, 1], got {cfg_skip_after}")
        first_unguided = math.ceil(cfg_skip_after * steps)
        if first_unguided >= steps:
            return None
        sigmas = flow_match_sigmas(steps, shift)
        # The same float32 product the sampling loop computes for that step's timestep.
        return cls(float(sigmas[first_unguided : first_unguided + 1] * NUM_TRAIN_TIMESTEPS))

    def guided_at(self, timestep: torch.Tensor) -> bool:
        # One scalar read per model call (a device sync on CUDA; negligible against a step).
        return float(timestep.reshape(-1)[0]) > self.cutoff_timestep


class SkipGuidancePredictor:
    """Any pair of predictors: the guided one above the cutoff, the positive-only one below.

    For paths without access to the DiT's blocks (graphs, engines, the plain model); the
    torch fast path uses `ApproximatePredictor`, which shares the per-edit caches.
    """

    def __init__(self, guided, positive_only, schedule: GuidanceSchedule):
        self.guided, self.positive_only, self.schedule = guided, positive_only, schedule
        self.guided_calls = 0
        self.positive_calls = 0

    def __call__(self, latents, semantic, timestep):
        if self.schedule.guided_at(timestep):
            self.guided_calls += 1
            return self.guided(latents, semantic, timestep)
        self.positive_calls += 1
        return self.positive_only(latents, semantic, timestep)
