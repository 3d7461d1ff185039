"""Flow-ODE solvers for the denoising loop: the release's Euler and two higher-order ones.

The sampler integrates dx/dsigma = v(x, sigma) from sigma 1 to 0 over the release's
shifted schedule (`sampling.flow_match_sigmas`). With x = (1 - sigma) x0 + sigma eps and
v = eps - x0, the model's clean estimate is x0 = x - sigma v.

- euler: the release, one model evaluation per step.
- heun: Heun's second-order method (predictor Euler to sigma_next, evaluate there, step
  with the mean of both velocities). Two evaluations per step, the last step included: a
  flow model's velocity is defined at sigma 0 (timestep 0), and with the release's shift-5
  schedule the last step is the longest, so keeping it second order matters most there.
- dpm++2m: DPM-Solver++(2M) in data-prediction form with alpha = 1 - sigma. One evaluation
  per step; from the second step on it extrapolates the clean estimate from the previous
  one. Its first-order update is exactly Euler on this ODE; the first step (from sigma 1,
  where log-SNR is -inf) and the last (to sigma 0, +inf) are first order, so the long last
  step bounds its accuracy.

Pins (long-video windows) are applied after every step and to Heun's predictor point
before the model sees it, so every model call sees pinned frames at its own noise level.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ..choices import Choice
from ..sampling import NUM_TRAIN_TIMESTEPS, GuidedPrediction, Pins, StepCallback, euler_step

Predictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], GuidedPrediction]


class Solver(Choice):
    EULER = "euler"
    HEUN = "heun"
    DPMPP_2M = "dpm++2m"


def model_evaluations(solver: "Solver | str", steps: int) -> int:
    """DiT predictor calls of one edit with `steps` steps."""
    solver = Solver.parse(solver)
    return 2 * steps if solver is Solver.HEUN else steps


def _timestep(sigmas: torch.Tensor, index: int, device) -> torch.Tensor:
    # Taken from the float32 schedule itself: the same timestep values as the release loop;
    # index len(sigmas) is the final sigma 0 (Heun's last corrector).
    if index == len(sigmas):
        return torch.zeros(1, dtype=sigmas.dtype, device=device)
    return sigmas[index : index + 1].to(device) * NUM_TRAIN_TIMESTEPS


def _pin(pins: Optional[Pins], x, s, sigma: float):
    return pins.apply(x, s, sigma) if pins is not None else (x, s)


def solve(
    predictor: Predictor,
    noise: torch.Tensor,
    semantic_noise: torch.Tensor,
    sigmas: torch.Tensor,
    solver: "Solver | str" = Solver.EULER,
    *,
    pins: Optional[Pins] = None,
    callback: Optional[StepCallback] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrate from sigmas[0] to 0 -> (latents, semantic latents), float32.

    `predictor(latents, semantic, timestep)` returns the guided velocities; `sigmas` is the
    schedule without the final 0 (as `flow_match_sigmas` returns it). With solver "euler"
    this is the same computation, in the same order, as `sampling.denoise`.
    """
    solver = Solver.parse(solver)
    steps = len(sigmas)
    x, s = _pin(pins, noise.float(), semantic_noise.float(), float(sigmas[0]))
    previous: Optional[tuple[torch.Tensor, torch.Tensor, float]] = None  # dpm++2m: (x0, s0, h)
    for i in range(steps):
        sigma = float(sigmas[i])
        sigma_next = float(sigmas[i + 1]) if i + 1 < steps else 0.0
        with torch.no_grad():
            pred = predictor(x, s, _timestep(sigmas, i, x.device))
        v, vs = pred.latents.float(), pred.semantic.float()
        if solver is Solver.EULER:
            x, s = euler_step(x, v, sigma, sigma_next), euler_step(s, vs, sigma, sigma_next)
        elif solver is Solver.HEUN:
            x_pred, s_pred = _pin(pins, euler_step(x, v, sigma, sigma_next), euler_step(s, vs, sigma, sigma_next),
                                  sigma_next)
            with torch.no_grad():
                pred_next = predictor(x_pred, s_pred, _timestep(sigmas, i + 1, x.device))
            x = euler_step(x, 0.5 * (v + pred_next.latents.float()), sigma, sigma_next)
            s = euler_step(s, 0.5 * (vs + pred_next.semantic.float()), sigma, sigma_next)
        else:
            x, s, previous = _dpmpp_2m_step(x, s, v, vs, sigma, sigma_next, previous)
        x, s = _pin(pins, x, s, sigma_next)
        if callback is not None:
            callback(i + 1, steps)
    return x, s


def _log_snr(sigma: float) -> float:
    """lambda = log(alpha / sigma) with alpha = 1 - sigma; -inf at sigma 1, +inf at 0."""
    if sigma >= 1.0:
        return -math.inf
    if sigma <= 0.0:
        return math.inf
    return math.log((1.0 - sigma) / sigma)


def _dpmpp_2m_step(x, s, v, vs, sigma: float, sigma_next: float, previous):
    """One DPM-Solver++(2M) step; returns (x, s, history for the next step)."""
    x0, s0 = x - sigma * v, s - sigma * vs  # the model's clean estimates
    h = _log_snr(sigma_next) - _log_snr(sigma)
    if sigma_next == 0.0:  # lambda = inf: the exact first-order step lands on the estimate
        return x0, s0, None
    d, ds = x0, s0
    if previous is not None and math.isfinite(h) and math.isfinite(previous[2]):
        # Second order: extrapolate the clean estimate linearly in log-SNR to the midpoint.
        r = previous[2] / h
        d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous[0]
        ds = (1 + 1 / (2 * r)) * s0 - (1 / (2 * r)) * previous[1]
    ratio = sigma_next / sigma
    alpha_next = 1.0 - sigma_next
    # x_next = (sigma_next / sigma) x + alpha_next (1 - e^-h) D; with e^-h = ratio * alpha / alpha_next
    # this weight is alpha_next - ratio * alpha (finite also at sigma 1 where h = inf).
    weight = alpha_next - ratio * (1.0 - sigma)
    return ratio * x + weight * d, ratio * s + weight * ds, (x0, s0, h)
