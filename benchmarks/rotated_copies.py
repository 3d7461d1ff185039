"""The rotated-copies anchor-attention kernel (kernels/rotated_copies.py) in its variants,
each checked and timed alone, so that a wrong or slow result can be pinned on one thing.

A variant is a tile config and a switch (`--list` prints them, one a line): "128x64 w4 s2
plain" is the loop as it runs, "128x64 w4 s2 ws" the loop warp-specialised by Triton (wrong
on the H100 with Triton 3.6; kept to recheck a newer Triton).

For each shape (the real ones of benchmarks/attention.py, 49f and 81f, and small ones whose
2N keys end inside a tile or on a tile boundary, 2 to 3 tiles: n70, n96) it prints one JSON line
as benchmarks/attention.py --candidate does: median ms at B=2, 40 heads, bf16, and the error
on two heads against a float32 reference under the tolerance rule "<= 2x SDPA flash's bf16
error + 1e-4", with `passed`. Each variant in its own process (a miscompiled loop may hang):

    python benchmarks/rotated_copies.py --list
    python benchmarks/rotated_copies.py --variant "128x64 w4 s2 plain" [--shapes n70,n96,49f]

CUDA with sm_90 only (tensor-memory-accelerator loads).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Timed on the H100 of 2026-11-26 (docs/BENCHMARKS.md), then the untimed ones that compile for
# sm_90 without spills (triton 3.6): 128x32 (206 registers), 64x64 (138), 256x64 w8 (two
# 128-row warpgroups, 255).
CONFIGS = ("128x64 w4 s2", "128x64 w8 s3", "128x64 w4 s3", "128x128 w8 s2", "128x64 w8 s2", "128x128 w4 s2",
           "128x32 w4 s2", "128x32 w4 s3", "64x64 w4 s2", "256x64 w8 s2")
SMALL_SHAPES = {"n70": (2, 5, 7), "n96": (2, 6, 8)}


def _attention_benchmark():
    spec = importlib.util.spec_from_file_location("_attention_benchmark", ROOT / "benchmarks" / "attention.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def variants() -> list[str]:
    return [f"{config} {ws}" for ws in ("plain", "ws") for config in CONFIGS]


def parse_variant(text: str) -> tuple[object, bool]:
    """(triton.Config, warp_specialize) of a variant's name."""
    from sama_rt.kernels.anchor_attention import parse_config_name

    config, _, switch = text.strip().rpartition(" ")
    if switch not in ("ws", "plain"):
        raise ValueError(f"not a variant: {text!r} (e.g. '128x64 w4 s2 plain')")
    return parse_config_name(config + " split flat tma copies"), switch == "ws"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", help="one variant, e.g. '128x64 w4 s2 plain'")
    parser.add_argument("--shapes", default="n70,n96,49f")
    parser.add_argument("--list", action="store_true", help="print the variants, one a line")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(variants()))
        return 0
    if not args.variant:
        parser.error("--variant or --list")
    try:
        parse_variant(args.variant)  # a bad name fails before the GPU check
    except ValueError as e:
        parser.error(str(e))
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (9, 0):
        print("benchmarks/rotated_copies.py needs a Hopper GPU (sm_90)", file=sys.stderr)
        return 2
    attention = _attention_benchmark()
    attention.SHAPES.update(SMALL_SHAPES)
    passed = True
    for name in args.shapes.split(","):
        result = run_variant(args.variant, name.strip(), lambda fn: attention.cuda_measure(fn, 100, 500), attention)
        print(json.dumps(result), flush=True)
        passed = passed and result["passed"]
    return 0 if passed else 1


def run_variant(variant: str, shape: str, measure, attention) -> dict:
    """One variant at one shape of `attention` (benchmarks/attention.py as a module), timed
    by measure(fn) -> (ms, peak GiB) and checked on two heads, as `--candidate` is."""
    from sama_rt.kernels.rotated_copies import launch_rotated_copies

    config, warp_specialize = parse_variant(variant)

    def prepare(q, k, v, cos, sin):
        return lambda: launch_rotated_copies(q, k, v, cos, sin, attention.NUM_ANCHOR, attention.HEAD_DIM**-0.5,
                                             config, warp_specialize)

    return attention.measure_prepared(variant, shape, 2, measure, prepare)


if __name__ == "__main__":
    sys.exit(main())
