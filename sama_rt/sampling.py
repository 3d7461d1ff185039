"""Flow-matching Euler sampling with classifier-free guidance over video and semantic latents.

The schedule is the released one (FlowMatchScheduler, shift 5, sigma_min 0, one extra
step): sigmas = shift*s / (1 + (shift-1)*s) for s = linspace(1, 0, steps+1)[:-1], and the
last Euler step goes to sigma 0. Latents stay in float32 between steps (the release rounds
them to bf16 every step; keeping float32 is a free accuracy gain).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

NUM_TRAIN_TIMESTEPS = 1000

StepCallback = Callable[[int, int], None]  # (step index starting at 1, total steps)


def flow_match_sigmas(num_steps: int, shift: float = 5.0) -> torch.Tensor:
    """[num_steps] float32 sigmas; the DiT timesteps are sigmas * 1000."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    sigmas = torch.linspace(1.0, 0.0, num_steps + 1)[:-1]
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def euler_step(x: torch.Tensor, velocity: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    return x + velocity * (sigma_next - sigma)


def cfg_combine(positive: torch.Tensor, negative: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    return negative + cfg_scale * (positive - negative)


@dataclass(frozen=True)
class Pins:
    """Known clean values the loop holds on to (long-video windows).

    After every step, the first `latents[0].shape[2]` latent frames are reset to the known
    clean latents noised to the new sigma with a fixed noise, x = (1 - s) x0 + s eps, and
    likewise the semantic latents; at sigma 0 they equal the known values exactly.
    """

    latents: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # (x0, eps) [B,16,j,H,W]
    semantic: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # (x0, eps) [B,A,1152]

    def apply(self, x: torch.Tensor, s: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        if self.latents is not None:
            x0, eps = self.latents
            x = x.clone()
            x[:, :, : x0.shape[2]] = (1 - sigma) * x0 + sigma * eps
        if self.semantic is not None:
            s0, eps = self.semantic
            s = (1 - sigma) * s0 + sigma * eps
        return x, s


@dataclass(frozen=True)
class GuidedPrediction:
    """Velocities of one step after classifier-free guidance."""

    latents: torch.Tensor
    semantic: torch.Tensor


def guided_velocity(
    dit, latents, semantic, timestep, source_latents, context, negative_context, cfg_scale: float
) -> GuidedPrediction:
    """One CFG step of the plain model: positive and negative in one batch-2 forward.

    At cfg_scale 1 only the positive pass runs, as in the release.
    """
    if cfg_scale == 1.0:
        v, s = dit(latents, timestep, context, source_latents, semantic)
        return GuidedPrediction(v, s)
    b = latents.shape[0]
    v, s = dit(
        torch.cat([latents, latents]),
        timestep,
        torch.cat([context, negative_context]),
        torch.cat([source_latents, source_latents]),
        torch.cat([semantic, semantic]),
    )
    return GuidedPrediction(cfg_combine(v[:b], v[b:], cfg_scale), cfg_combine(s[:b], s[b:], cfg_scale))


def denoise(
    dit,
    noise: torch.Tensor,
    semantic_noise: torch.Tensor,
    source_latents: torch.Tensor,
    context: torch.Tensor,
    negative_context: torch.Tensor,
    num_steps: int = 50,
    cfg_scale: float = 5.0,
    shift: float = 5.0,
    callback: Optional[StepCallback] = None,
    predictor=None,
    pins: Optional[Pins] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the Euler loop; returns (latents, semantic_latents), float32.

    `pins` holds known latent frames / semantic latents to their noised clean values
    after every step (see Pins).

    `predictor(latents, semantic, timestep) -> GuidedPrediction` replaces the plain
    per-step model call (the fast path passes one that caches what is constant per edit).
    """
    sigmas = flow_match_sigmas(num_steps, shift)
    if predictor is None:
        def predictor(x, s, timestep):
            return guided_velocity(dit, x, s, timestep, source_latents, context, negative_context, cfg_scale)

    x = noise.float()
    s = semantic_noise.float()
    if pins is not None:
        x, s = pins.apply(x, s, float(sigmas[0]))
    for i in range(num_steps):
        sigma = float(sigmas[i])
        sigma_next = float(sigmas[i + 1]) if i + 1 < num_steps else 0.0
        timestep = sigmas[i : i + 1].to(x.device) * NUM_TRAIN_TIMESTEPS
        with torch.no_grad():
            pred = predictor(x, s, timestep)
        x = euler_step(x, pred.latents.float(), sigma, sigma_next)
        s = euler_step(s, pred.semantic.float(), sigma, sigma_next)
        if pins is not None:
            x, s = pins.apply(x, s, sigma_next)
        if callback is not None:
            callback(i + 1, num_steps)
    return x, s


def initial_noise(
    seed: int, latent_shape: tuple[int, ...], num_semantic: int, semantic_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent noise and semantic-latent noise, both from one CPU generator seeded with `seed`.

    The latent noise is drawn first, exactly as the release draws it (so the same seed gives
    the same starting latents); the release draws the semantic noise from the unseeded
    global RNG, which makes its edits irreproducible — here it comes from the same seeded
    generator, right after.
    """
    gen = torch.Generator("cpu").manual_seed(seed)
    noise = torch.randn(latent_shape, generator=gen, dtype=torch.float32)
    semantic = torch.randn((latent_shape[0], num_semantic, semantic_dim), generator=gen, dtype=torch.float32)
    return noise, semantic
