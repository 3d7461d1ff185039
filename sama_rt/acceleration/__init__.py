"""Opt-in speedups beyond the exact fast path; every one is off by default.

Approximations (each changes the output; errors measured in benchmarks/approximations.py):
- step caching (`cache_threshold`): reuse the remaining blocks' residual while the first
  block's barely changes (step_cache.py);
- CFG skipping (`cfg_skip_after`): late steps run the positive pass only (guidance.py);
- higher-order solvers (`solver`): heun, dpm++2m, second order: closer to the ODE solution
  than Euler at equal steps where the model is smooth in time (solvers.py).
Not approximations: the low-memory mode streams the DiT blocks from host memory (same
weights, same operations: identical outputs; offload.py), `compile_blocks`
torch.compiles the blocks on CUDA (same math, fused: float rounding differs; compiled.py),
and CUDA graphs replay each step (same kernels; cuda_graphs.py).
FP8 linear layers (fp8_linear.py) are an approximation of the model itself, chosen once per
Editor like the three above through `RuntimeOptions` (runtime.py).
"""
from __future__ import annotations

from ..guided import GuidedPredictor
from .compiled import compile_blocks
from .guidance import GuidanceSchedule, SkipGuidancePredictor
from .offload import BlockOffloader, Offload, enable_block_offload
from .runtime import RuntimeOptions
from .solvers import Solver, model_evaluations, solve
from .step_cache import ApproximatePredictor, FirstBlockCache, PredictorStats, relative_l1


def approximate(
    predictor,
    *,
    steps: int,
    shift: float,
    cfg_scale: float,
    cache_threshold: float = 0.0,
    cfg_skip_after: float = 1.0,
    positive_only=None,
):
    """Wrap an exact per-step predictor with the requested approximations.

    Returns `predictor` itself when none is requested (the exact path, untouched).
    `predictor` is a `GuidedPredictor` (fast torch path: everything is available) or any
    callable (graphs, engines, the plain model): those support CFG skipping only, given
    `positive_only`, the same predictor without guidance.
    """
    guidance = GuidanceSchedule.for_steps(steps, shift, cfg_skip_after) if cfg_scale != 1.0 else None
    if cache_threshold < 0:
        raise ValueError(f"cache_threshold must be >= 0, got {cache_threshold}")
    if isinstance(predictor, GuidedPredictor):
        if cache_threshold > 0 or guidance is not None:
            return ApproximatePredictor(predictor, cache_threshold, guidance)
        return predictor
    if cache_threshold > 0:
        raise ValueError("step caching (cache_threshold > 0) needs the torch fast path "
                         "(backend torch, fast=True, one process)")
    if guidance is not None:
        if positive_only is None:
            raise ValueError("CFG skipping on this path needs a positive-only predictor")
        return SkipGuidancePredictor(predictor, positive_only, guidance)
    return predictor


__all__ = [
    "ApproximatePredictor", "BlockOffloader", "FirstBlockCache", "GuidanceSchedule", "Offload",
    "PredictorStats", "RuntimeOptions", "SkipGuidancePredictor", "Solver", "approximate", "compile_blocks", "enable_block_offload",
    "model_evaluations", "relative_l1", "solve",
]
