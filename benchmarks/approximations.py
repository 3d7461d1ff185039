"""Speed and error of the opt-in approximations against the exact path.

    python benchmarks/approximations.py [--configs tiny,medium] [--steps 20] [--json]

For each DiT preset (random weights: real shapes and costs, not real edit quality) the
exact fast path (GuidedPredictor, Euler, `--steps` steps) is run once, then every
approximation at a few settings on the same inputs. Reported per run: DiT model calls,
block evaluations (block x CFG batch row; the cost that the approximations cut), wall
time, and the final latents' error against the exact path: max abs, relative L2, and PSNR
(20 log10 of the exact latents' peak-to-peak range over the RMSE).

Two model variants per preset:
- `random`: the seeded random weights as built. Their velocity is not smooth in time (see
  sama_rt/acceleration/random_proxy.py), so step caching rarely triggers and higher-order
  solvers have no smoothness to exploit: a lower bound, not what trained weights do.
- `smooth-t`: the same weights with the time MLP's fast sinusoid inputs zeroed, so the
  model responds smoothly to the noise level as trained models do. A proxy, labelled so.
Every row also gives its error against a near-converged ODE solution (Heun at
`--ode-factor` x the steps, "vs ODE"): the exact path's own Euler error is part of its
difference from the solvers.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from typing import Optional

import torch

from sama_rt.acceleration import approximate, model_evaluations, solve
from sama_rt.acceleration.random_proxy import smooth_time_response
from sama_rt.bench import latent_shape, random_dit_inputs
from sama_rt.guided import GuidedPredictor
from sama_rt.models import DiTConfig, build_dit
from sama_rt.sampling import flow_match_sigmas

SHAPES = {  # (frames, height, width) of the source video
    "tiny": (9, 64, 96),
    "medium": (9, 240, 416),
}
CACHE_THRESHOLDS = (0.05, 0.1, 0.2)
CFG_SKIP_AFTER = (0.5, 0.75, 0.875)  # 4, 6, 7 of 8 steps guided


@dataclass(frozen=True)
class Run:
    name: str
    setting: str
    solver: str = "euler"
    steps_factor: float = 1.0  # of --steps
    cache_threshold: float = 0.0
    cfg_skip_after: float = 1.0


def runs(only: Optional[str] = None) -> list[Run]:
    """The exact path first (the baseline), then the approximations (`only`: those named so)."""
    out = [Run("exact", "euler")]
    out += [Run("step cache", f"threshold {t}", cache_threshold=t) for t in CACHE_THRESHOLDS]
    out += [Run("cfg skip", f"after {f}", cfg_skip_after=f) for f in CFG_SKIP_AFTER]
    out += [Run("solver", "heun, 1/2 steps", "heun", 0.5), Run("solver", "dpm++2m, 1/2 steps", "dpm++2m", 0.5),
            Run("solver", "dpm++2m", "dpm++2m", 1.0)]
    return [r for r in out if only is None or r.name in ("exact", only)]


def errors(x: torch.Tensor, ref: torch.Tensor) -> dict:
    diff = (x - ref).double()
    rmse = float(diff.pow(2).mean().sqrt())
    peak = float(ref.max() - ref.min())
    return {"max_abs": float(diff.abs().max()), "rel_l2": float(diff.norm() / ref.double().norm()),
            "psnr_db": math.inf if rmse == 0 else 20 * math.log10(peak / rmse)}


def run_one(dit, inputs, run: Run, steps: int) -> dict:
    src, noise, sem, ctx, neg = inputs
    n = max(1, round(steps * run.steps_factor))
    start = time.perf_counter()
    exact = GuidedPredictor(dit, src, ctx, neg, 5.0)
    predictor = approximate(exact, steps=n, shift=5.0, cfg_scale=5.0, cache_threshold=run.cache_threshold,
                            cfg_skip_after=run.cfg_skip_after)
    x, _ = solve(predictor, noise, sem, flow_match_sigmas(n), run.solver)
    seconds = time.perf_counter() - start
    layers = len(dit.blocks)
    stats = getattr(predictor, "stats", None)
    calls = model_evaluations(run.solver, n)
    return {"name": run.name, "setting": run.setting, "steps": n, "dit_calls": calls,
            "cached_calls": stats.cached_calls if stats else 0,
            "block_evaluations": stats.block_evaluations if stats else calls * layers * 2,
            "seconds": seconds, "latents": x}


def bench_config(name: str, steps: int, variants: list[str], ode_factor: int,
                 only: Optional[str] = None) -> list[dict]:
    cfg = DiTConfig.preset(name)
    shape = SHAPES[name]
    rows = []
    for variant in variants:
        dit = build_dit(cfg, seed=0)
        if variant == "smooth-t":
            smooth_time_response(dit)
        inputs = random_dit_inputs(cfg, latent_shape(*shape))
        src, noise, sem, ctx, neg = inputs
        GuidedPredictor(dit, src, ctx, neg, 5.0)(noise, sem, torch.tensor([500.0]))  # warm-up: one-off costs
        results = [run_one(dit, inputs, r, steps) for r in runs(only)]
        exact_latents, exact = results[0]["latents"], results[0]
        ode = None
        if ode_factor > 0:
            ode = solve(GuidedPredictor(dit, src, ctx, neg, 5.0), noise, sem, flow_match_sigmas(ode_factor * steps),
                        "heun")[0]
        for r in results:
            x = r.pop("latents")
            r.update(config=name, variant=variant, shape=list(shape), **errors(x, exact_latents))
            r["speedup_blocks"] = exact["block_evaluations"] / r["block_evaluations"]
            r["speedup_wall"] = exact["seconds"] / r["seconds"]
            r["ode_rel_l2"] = errors(x, ode)["rel_l2"] if ode is not None else math.nan
            rows.append(r)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="tiny,medium")
    ap.add_argument("--steps", type=int, default=20, help="steps of the exact path")
    ap.add_argument("--medium-steps", type=int, default=8, help="steps for the medium config (CPU time)")
    ap.add_argument("--variants", default="random,smooth-t")
    ap.add_argument("--ode-factor", type=int, default=4,
                    help="steps of the ODE reference (Heun), x the steps; 0 = no reference")
    ap.add_argument("--only", default=None, choices=["step cache", "cfg skip", "solver"],
                    help="run the exact path and this approximation only")
    ap.add_argument("--json", action="store_true", help="print one JSON list instead of the table")
    ap.add_argument("--save", default=None, help="also write the JSON list to this file")
    args = ap.parse_args()
    rows = []
    for name in args.configs.split(","):
        steps = args.medium_steps if name == "medium" else args.steps
        rows += bench_config(name, steps, args.variants.split(","), args.ode_factor, args.only)
    if args.save:
        with open(args.save, "w") as f:
            json.dump(rows, f, indent=1)
    if args.json:
        print(json.dumps(rows))
        return
    print(f"CPU, {torch.get_num_threads()} threads, float32, CFG 5, shift 5, random weights "
          f"(errors vs the exact path = Euler at the config's steps)")
    head = (f"{'config':<7} {'variant':<9} {'approximation':<11} {'setting':<19} {'calls':>5} {'cached':>6} "
            f"{'blocks':>6} {'x blk':>6} {'x wall':>6} {'max abs':>8} {'rel L2':>8} {'PSNR dB':>8} {'vs ODE':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['config']:<7} {r['variant']:<9} {r['name']:<11} {r['setting']:<19} {r['dit_calls']:>5} "
              f"{r['cached_calls']:>6} {r['block_evaluations']:>6} {r['speedup_blocks']:>6.2f} "
              f"{r['speedup_wall']:>6.2f} {r['max_abs']:>8.2g} {r['rel_l2']:>8.2g} {r['psnr_db']:>8.1f} "
              f"{r['ode_rel_l2']:>8.2g}")


if __name__ == "__main__":
    main()
