"""Error (and, on a GPU, speed) of the FP8 linear layers against the exact model.

    python benchmarks/fp8_linear.py [--configs tiny,medium] [--steps 8] [--device cpu] [--json]

For each DiT preset (seeded random weights: real shapes, not real edit quality) the same
inputs run through an Euler loop of `--steps` steps with CFG 5 three times:
  fp32   the exact model in float32 (skipped with --no-fp32, e.g. the 14B config on a GPU),
  bf16   the model in bfloat16, the production dtype,
  fp8    that bf16 model after `convert_to_fp8_linear` (converted in place, so no second copy
         of the weights is ever held).
Reported per run: the first step's velocity and the final latents against fp32 and against
bf16 (relative L2, max abs), and the mean time per step. The bf16 row is the yardstick: the
FP8 error is only worth judging next to the error bf16 already makes.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from sama_rt.acceleration.fp8_linear import convert_to_fp8_linear
from sama_rt.bench import latent_shape, random_dit_inputs
from sama_rt.guided import GuidedPredictor
from sama_rt.models import DiTConfig, build_dit
from sama_rt.sampling import NUM_TRAIN_TIMESTEPS, euler_step, flow_match_sigmas

SHAPES = {  # (frames, height, width) of the source video
    "tiny": (9, 64, 96),
    "medium": (9, 240, 416),
    "sama-14b": (49, 480, 832),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def run_edit(dit, inputs, steps: int) -> dict:
    """Euler loop with the fast predictor: first-step velocity, final latents, s/step."""
    src, noise, sem, ctx, neg = inputs
    predictor = GuidedPredictor(dit, src, ctx, neg, 5.0)
    sigmas = flow_match_sigmas(steps)
    x, s, first, times = noise.float(), sem.float(), None, []
    predictor(x, s, sigmas[:1].to(x.device) * NUM_TRAIN_TIMESTEPS)  # warm-up
    for i in range(steps):
        _sync(x.device)
        start = time.perf_counter()
        pred = predictor(x, s, sigmas[i:i + 1].to(x.device) * NUM_TRAIN_TIMESTEPS)
        _sync(x.device)
        times.append(time.perf_counter() - start)
        if first is None:
            first = pred.latents.float().cpu()
        sigma_next = float(sigmas[i + 1]) if i + 1 < steps else 0.0
        x = euler_step(x, pred.latents.float(), float(sigmas[i]), sigma_next)
        s = euler_step(s, pred.semantic.float(), float(sigmas[i]), sigma_next)
    return {"velocity": first, "latents": x.cpu(), "per_step_s": sum(times) / len(times)}


def _errors(x: torch.Tensor, ref: torch.Tensor) -> dict:
    diff = (x - ref).double()
    return {"rel_l2": float(diff.norm() / ref.double().norm()), "max_abs": float(diff.abs().max())}


def bench_config(name: str, steps: int, device: torch.device, with_fp32: bool) -> list[dict]:
    cfg = DiTConfig.preset(name)
    inputs = random_dit_inputs(cfg, latent_shape(*SHAPES[name]), device=device)
    runs = {}
    if with_fp32:
        runs["fp32"] = run_edit(build_dit(cfg, dtype=torch.float32, device=device, seed=0), inputs, steps)
    dit = build_dit(cfg, dtype=torch.bfloat16, device=device, seed=0)
    runs["bf16"] = run_edit(dit, inputs, steps)
    converted = convert_to_fp8_linear(dit)
    runs["fp8"] = run_edit(dit, inputs, steps)
    rows = []
    for precision, r in runs.items():
        row = {"config": name, "precision": precision, "steps": steps, "device": str(device),
               "per_step_s": r["per_step_s"], "fp8_layers": converted if precision == "fp8" else 0}
        for base in ("fp32", "bf16"):
            if base in runs and base != precision:
                row[f"velocity_vs_{base}"] = _errors(r["velocity"], runs[base]["velocity"])
                row[f"latents_vs_{base}"] = _errors(r["latents"], runs[base]["latents"])
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="tiny,medium")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-fp32", action="store_true", help="skip the float32 run (memory)")
    ap.add_argument("--json", action="store_true", help="print one JSON list instead of the table")
    args = ap.parse_args()
    device = torch.device(args.device)
    rows = []
    for name in args.configs.split(","):
        rows += bench_config(name, args.steps, device, not args.no_fp32)
    if args.json:
        print(json.dumps(rows))
        return
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}; CFG 5, shift 5, {args.steps} Euler steps, random weights")
    head = (f"{'config':<9} {'precision':<9} {'s/step':>8} {'v vs fp32':>10} {'x vs fp32':>10} "
            f"{'v vs bf16':>10} {'x vs bf16':>10}   (relative L2)")
    print(head)
    print("-" * len(head))

    def cell(row, key):
        return f"{row[key]['rel_l2']:>10.2e}" if key in row else f"{'-':>10}"

    for r in rows:
        print(f"{r['config']:<9} {r['precision']:<9} {r['per_step_s']:>8.3f} {cell(r, 'velocity_vs_fp32')} "
              f"{cell(r, 'latents_vs_fp32')} {cell(r, 'velocity_vs_bf16')} {cell(r, 'latents_vs_bf16')}")


if __name__ == "__main__":
    main()
