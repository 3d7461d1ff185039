"""Make a random-weight DiT respond smoothly to the timestep, for measuring approximations.

A trained flow model's velocity changes smoothly with the noise level; that is what step
caching and higher-order solvers rely on. Random weights do not: the sinusoidal timestep
features include frequencies up to 1 radian per timestep unit, and a random time MLP passes
them all on, so the velocity at one step is nearly unrelated to the next (consecutive
first-block residuals differ by 50-100 % relative L1 with the tiny preset). Zeroing the
time MLP's input weights for every frequency whose phase turns by more than `max_phase`
over the whole timestep range leaves a model that is still random in every other way but
smooth in time. Figures measured on such a model are a proxy, labelled as such: only the
released weights say how a real edit responds.
"""
from __future__ import annotations

import torch

from ..sampling import NUM_TRAIN_TIMESTEPS


@torch.no_grad()
def smooth_time_response(dit, max_phase: float = 5.0) -> int:
    """Zero the time embedding's fast sinusoid inputs in place; returns how many were kept."""
    weight = dit.time_embedding[0].weight  # [dim, freq_dim]: inputs [cos f_i t | sin f_i t]
    half = weight.shape[1] // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64) / half)
    fast = (freqs * NUM_TRAIN_TIMESTEPS > max_phase).to(weight.device)
    weight[:, :half][:, fast] = 0
    weight[:, half:][:, fast] = 0
    return int((~fast).sum())
