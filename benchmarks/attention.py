"""Anchor-attention Triton kernel vs SDPA (flash backend) at SAMA's real sequence shapes.

Shapes (480x832, 65 anchors, B=2, 40 heads, head_dim 128, bf16):
  49f: F,H,W = 13,30,52 -> N = 20,280, L = 40,625
  81f: F,H,W = 21,30,52 -> N = 32,760, L = 65,585

For each shape (timing first: the autotuner keys on the sequence, not on batch or heads, so
whichever call comes first at a shape tunes it, and that must be the full-size one):
1. Correctness at the real shape on a subset of heads (batch 1): the Triton kernel (keys
   rotated in the loop, once into a copy, and q, k, v copied: sm_90+) and SDPA flash (on
   explicitly rotated q/k) against a chunked float32 reference; the kernel must meet the tolerance rule "error <= 2x
   SDPA's bf16 error + 1e-4". The fp8 variants' errors (in-loop, and over e4m3 copies: sm_90+)
   are reported (and held to the e4m3 bound 2**-4 * max|v|), with their rms difference and
   cosine against the native bf16 kernel. A failed check is reported and sets the exit code 1.
2. Timing with triton.testing.do_bench (warm-up, median over repetitions, autotuning done
   before timing) of the kernel as the model's --attention backends run it: triton (keys
   rotated once into a copy), triton-in-loop, triton-fp8 (sm_89+), triton-copies (q, k, v
   copied, one loop; sm_90+), triton-fp8-copies (its FP8 form; sm_90+); SDPA flash on
   pre-rotated q/k, RoPE + SDPA flash, and SDPA with torch's own backend choice on pre-rotated q/k (what the
   model's `sdpa` attention runs: cuDNN's where torch prefers it). For the Triton methods
   also every autotune candidate's time as the autotuner measured it (`candidates`).

TFLOP/s count 4 * L^2 * head_dim per head and batch for every method (the whole L x L
attention, although the kernel folds the anchors and skips their rows).

One configuration at a time (`--candidate "once: 128x64 w8 s3 split flat"`, keys mode then
config name, listed or not; "gluon: 128x64 w8 s2" for kernels/gluon_attention.py and
"gluon ws: 64x128 s2 pingpong" for its warp-specialised form, kernels/gluon_ws_attention.py;
"fp8 copies: 128x128 w8 s2 split flat tma copies" for kernels/fp8_copies.py and "gluon fp8:
128x64 w8 s2" / "gluon ws fp8: 64x128 s2 pingpong" for its Gluon forms, all held to the FP8
bound; or a baseline, "sdpa: flash" or
"sdpa: default" on pre-rotated q/k;
`--list-candidates` prints the Hopper lists' candidates and the baselines, one a line): that
config alone, timed and checked as above at each shape, one JSON line per shape as soon as it
is measured. scripts/gpu_checks.sh runs every candidate in its own process with a time
limit, so that one which fails to compile, or hangs the GPU, costs only its own entry.

CUDA only:
    python benchmarks/attention.py [--shapes 49f,81f] [--check-heads 2] [--no-fp8] [--json]
    python benchmarks/attention.py --candidate "KEYS: CONFIG" [--shapes 49f,81f]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {"49f": (13, 30, 52), "81f": (21, 30, 52)}
NUM_ANCHOR = 65
BATCH = 2
HEADS = 40
HEAD_DIM = 128
DTYPE = torch.bfloat16
DEVICE = "cuda"  # tests run the correctness check on CPU (kernel interpreted) at a tiny shape
# Tolerance rule: kernel error vs an fp32 reference <= 2x plain torch's (flash's) error in the
# same dtype + this atol.
ATOL = 1e-4


@dataclass(frozen=True)
class Check:
    shape: str
    heads_checked: int
    triton_err: float
    flash_err: float
    fp8_err: float | None
    fp8_bound: float | None
    passed: bool
    # The fp8 kernel against the native (bf16) kernel on the same inputs: rms difference and
    # cosine similarity of the outputs (the "error vs the bf16 kernel").
    fp8_vs_native_rms: float | None = None
    fp8_vs_native_cosine: float | None = None
    # The kernel with its keys rotated once into a copy (KeyRotation.ONCE), same rule as triton_err.
    keys_once_err: float | None = None
    # kernels/rotated_copies.py (KeyRotation.COPIES, sm_90+ or the interpreter), same rule.
    copies_err: float | None = None
    # kernels/fp8_copies.py (fp8, keys="copies"; sm_90+ or the interpreter): error vs the
    # reference (held to fp8_bound), rms difference and cosine against the native kernel.
    fp8_copies_err: float | None = None
    fp8_copies_vs_native_rms: float | None = None
    fp8_copies_vs_native_cosine: float | None = None


@dataclass(frozen=True)
class Timing:
    shape: str
    method: str
    ms: float
    tflops: float
    peak_mem_gib: float
    config: str | None = None  # the autotuner's choice, for the Triton methods
    # Every candidate config's median ms as the autotuner measured it (None: failed), Triton only.
    candidates: dict[str, float | None] | None = None


def attention_flops(seq_len: int) -> float:
    return 4.0 * seq_len * seq_len * HEAD_DIM * HEADS * BATCH


def rotate(q, k, cos, sin):
    from sama_rt.models.rope import apply_rope, sequence_rope_tables

    cos_l, sin_l = sequence_rope_tables(cos, sin, NUM_ANCHOR)
    return apply_rope(q, cos_l, sin_l), apply_rope(k, cos_l, sin_l)


def flash(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def sdpa_default(q, k, v):
    """SDPA with the backend torch picks, as the model's `sdpa` attention runs it (on an H100
    with torch 2.11 the 14B step ran faster than flash-only timings allow: cuDNN attention)."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


# The `--candidate` baselines, "sdpa: NAME".
SDPA_BASELINES = {"flash": flash, "default": sdpa_default}


def reference_fp32(qr, kr, v, chunk: int = 2048):
    """softmax(q k^T / sqrt(d)) v in float32 (no TF32), chunked over queries to bound memory."""
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        q, k, vf = (t.float().transpose(1, 2) for t in (qr, kr, v))  # [B, heads, L, D]
        out = torch.empty_like(q)
        for start in range(0, q.shape[2], chunk):
            logits = q[:, :, start : start + chunk] @ k.transpose(-1, -2) * HEAD_DIM**-0.5
            out[:, :, start : start + chunk] = logits.softmax(-1) @ vf
        return out.transpose(1, 2)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev


def make_inputs(frames, height, width, batch, heads, seed=0):
    from sama_rt.kernels import rope_tables

    num_video = frames * height * width
    seq_len = 2 * num_video + NUM_ANCHOR
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    q, k, v = (
        torch.randn(batch, seq_len, heads, HEAD_DIM, device=DEVICE, dtype=DTYPE, generator=gen) for _ in range(3)
    )
    cos, sin = rope_tables(frames, height, width, HEAD_DIM, device=DEVICE)
    return q, k, v, cos, sin


def check_shape(name: str, check_heads: int, with_fp8: bool) -> Check:
    from sama_rt.kernels import anchor_attention

    q, k, v, cos, sin = make_inputs(*SHAPES[name], batch=1, heads=check_heads, seed=1)
    qr, kr = rotate(q, k, cos, sin)  # bf16, as the model would hand them to SDPA
    # The oracle is exact for the given (bf16) inputs: rotated in float32, so the rounding of
    # SDPA's pre-rotated bf16 copies counts as SDPA's error, as the kernel's own roundings do.
    ref = reference_fp32(*rotate(q.float(), k.float(), cos, sin), v)
    native = anchor_attention(q, k, v, cos, sin, NUM_ANCHOR).float()
    triton_err = (native - ref).abs().max().item()
    flash_err = (flash(qr, kr, v).float() - ref).abs().max().item()
    once = anchor_attention(q, k, v, cos, sin, NUM_ANCHOR, keys="once").float()
    keys_once_err = (once - ref).abs().max().item()
    passed = triton_err <= 2 * flash_err + ATOL and keys_once_err <= 2 * flash_err + ATOL
    copies_err = None
    if hopper_or_interpreted(q.device):
        copies = anchor_attention(q, k, v, cos, sin, NUM_ANCHOR, keys="copies").float()
        copies_err = (copies - ref).abs().max().item()
        passed = passed and copies_err <= 2 * flash_err + ATOL
    fp8_err = fp8_bound = fp8_rms = fp8_cosine = None
    copies8 = (None, None, None)
    if with_fp8:
        # e4m3 rounds every operand of q.k and p.v to 3 mantissa bits (relative step 2**-3).
        fp8_bound = 2**-4 * v.abs().max().item()
        fp8_err, fp8_rms, fp8_cosine = fp8_errors(anchor_attention(q, k, v, cos, sin, NUM_ANCHOR, precision="fp8"),
                                                  ref, native)
        passed = passed and fp8_err <= fp8_bound
        if hopper_or_interpreted(q.device):
            copies8 = fp8_errors(anchor_attention(q, k, v, cos, sin, NUM_ANCHOR, precision="fp8", keys="copies"),
                                 ref, native)
            passed = passed and copies8[0] <= fp8_bound
    return Check(name, check_heads, triton_err, flash_err, fp8_err, fp8_bound, passed, fp8_rms, fp8_cosine,
                 keys_once_err, copies_err, *copies8)


def hopper_or_interpreted(device: torch.device) -> bool:
    """Where the kernels over copies run (tensor-memory-accelerator loads)."""
    return device.type != "cuda" or torch.cuda.get_device_capability(device) >= (9, 0)


def fp8_errors(out: torch.Tensor, ref: torch.Tensor, native: torch.Tensor) -> tuple[float, float, float]:
    """An FP8 output's max error vs the float32 reference, and its rms difference and cosine
    similarity against the native kernel's output (`native`, float32)."""
    out = out.float()
    return ((out - ref).abs().max().item(), (out - native).pow(2).mean().sqrt().item(),
            F.cosine_similarity(out.flatten(), native.flatten(), dim=0).item())


def timed_methods(q, k, v, cos, sin, with_fp8: bool) -> dict:
    """What is timed, by name: each a call without arguments."""
    from sama_rt.kernels import anchor_attention

    qr, kr = rotate(q, k, cos, sin)
    # Named as the model's --attention backends that run them.
    methods = {
        "triton": lambda: anchor_attention(q, k, v, cos, sin, NUM_ANCHOR, keys="once"),
        "triton-in-loop": lambda: anchor_attention(q, k, v, cos, sin, NUM_ANCHOR, keys="in-loop"),
    }
    if with_fp8:
        methods["triton-fp8"] = lambda: anchor_attention(q, k, v, cos, sin, NUM_ANCHOR, precision="fp8")
    if hopper_or_interpreted(q.device):
        methods["triton-copies"] = lambda: anchor_attention(q, k, v, cos, sin, NUM_ANCHOR, keys="copies")
        if with_fp8:
            methods["triton-fp8-copies"] = lambda: anchor_attention(q, k, v, cos, sin, NUM_ANCHOR, precision="fp8",
                                                                    keys="copies")
    methods["sdpa flash (pre-rotated)"] = lambda: flash(qr, kr, v)
    methods["rope + sdpa flash"] = lambda: flash(*rotate(q, k, cos, sin), v)
    methods["sdpa default (pre-rotated)"] = lambda: sdpa_default(qr, kr, v)
    return methods


def cuda_measure(fn, warmup_ms: int, rep_ms: int) -> tuple[float, float]:
    """(median ms, peak GiB allocated) of fn() after it has run once (compile, autotune)."""
    from triton.testing import do_bench

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    ms = do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")
    return ms, torch.cuda.max_memory_allocated() / 2**30


def time_shape(name: str, with_fp8: bool, warmup_ms: int, rep_ms: int) -> list[Timing]:
    from sama_rt.kernels.anchor_attention import autotune_timings, tuned_config

    q, k, v, cos, sin = make_inputs(*SHAPES[name], batch=BATCH, heads=HEADS)
    flops = attention_flops(q.shape[1])
    timings = []
    for method, fn in timed_methods(q, k, v, cos, sin, with_fp8).items():
        # compile + autotune outside the timed region
        candidates = config = None
        if method.startswith("triton"):
            candidates = autotune_timings(fn)
            config = tuned_config()
        else:
            fn()
        ms, peak = cuda_measure(fn, warmup_ms, rep_ms)
        timings.append(Timing(name, method, ms, flops / (ms * 1e-3) / 1e12, peak, config, candidates))
        # Also on stderr at once: what a run cut short by its time limit has measured.
        print(json.dumps(asdict(timings[-1])), file=sys.stderr, flush=True)
    return timings


def hopper_candidates() -> list[str]:
    """The SDPA baselines, then the Hopper autotune candidates of keys once, keys="copies"
    and in-loop, the Gluon kernel's configs (kernels/gluon_attention.py) and its
    warp-specialised form's (kernels/gluon_ws_attention.py), the FP8 copies kernel's and both
    Gluon forms' of it (opt-in, an approximation), as "keys: config" entries for `--candidate`."""
    from sama_rt.kernels.anchor_attention import (
        FP8_COPIES_CONFIGS,
        HOPPER_CONFIGS,
        ROTATED_COPIES_CONFIGS,
        ROTATED_KEYS_HOPPER_CONFIGS,
        config_name,
    )
    from sama_rt.kernels.gluon_attention import GLUON_CONFIGS, GLUON_FP8_CONFIGS
    from sama_rt.kernels.gluon_ws_attention import GLUON_WS_CONFIGS, GLUON_WS_FP8_CONFIGS

    # The baselines first: a sweep cut short by its time limit still has them to compare with.
    return ([f"sdpa: {name}" for name in SDPA_BASELINES]
            + [f"once: {config_name(c)}" for c in ROTATED_KEYS_HOPPER_CONFIGS]
            + [f"copies: {config_name(c)}" for c in ROTATED_COPIES_CONFIGS]
            + [f"in-loop: {config_name(c)}" for c in HOPPER_CONFIGS]
            + [f"gluon: {config}" for config in GLUON_CONFIGS]
            + [f"gluon ws: {config}" for config in GLUON_WS_CONFIGS]
            + [f"fp8 copies: {config_name(c)}" for c in FP8_COPIES_CONFIGS]
            + [f"gluon fp8: {config}" for config in GLUON_FP8_CONFIGS]
            + [f"gluon ws fp8: {config}" for config in GLUON_WS_FP8_CONFIGS])


def time_candidate(entry: str, name: str, check_heads: int, measure) -> dict:
    """One configuration (`--candidate`), without the autotuner: its time at the real shape
    (measure(fn) -> (ms, peak GiB), `cuda_measure` on a GPU) and its error on `check_heads`
    heads under the tolerance rule of `check_shape`. "sdpa: flash" and "sdpa: default" are the
    baselines, timed in the same sweep so that ratios are measured side by side; their q/k are
    rotated outside the timed call (RoPE not counted: in SDPA's favour). "fp8 copies: CONFIG"
    is kernels/fp8_copies.py's loop and "gluon fp8: CONFIG" its Gluon form ("gluon ws fp8:
    CONFIG" warp-specialised), held to the FP8 bound instead (2**-4 max|v|)."""
    from sama_rt.kernels.anchor_attention import AttentionPrecision, KeyRotation, _launch, parse_config_name

    keys_name, _, config_text = entry.partition(":")
    fp8 = keys_name.strip() in ("fp8 copies", "gluon fp8", "gluon ws fp8")  # held to the FP8 bound
    if keys_name.strip() == "fp8 copies":
        config = parse_config_name(config_text)

        def prepare(q, k, v, cos, sin):
            return lambda: _launch(q, k, v, cos, sin, NUM_ANCHOR, HEAD_DIM**-0.5, AttentionPrecision.FP8,
                                   KeyRotation.COPIES, config)
    elif keys_name.strip() == "sdpa":
        sdpa = SDPA_BASELINES[config_text.strip()]

        def prepare(q, k, v, cos, sin):
            qr, kr = rotate(q, k, cos, sin)
            return lambda: sdpa(qr, kr, v)
    elif keys_name.strip() in ("gluon", "gluon fp8", "gluon ws", "gluon ws fp8"):
        if keys_name.strip().startswith("gluon ws"):
            from sama_rt.kernels.gluon_ws_attention import launch_gluon_ws_attention as launch
            from sama_rt.kernels.gluon_ws_attention import parse_gluon_ws_config as parse
        else:
            from sama_rt.kernels.gluon_attention import launch_gluon_attention as launch
            from sama_rt.kernels.gluon_attention import parse_gluon_config as parse

        gluon_config = config_text.strip()
        parse(gluon_config, fp8)  # a bad name fails before any input is made

        def prepare(q, k, v, cos, sin):
            return lambda: launch(q, k, v, cos, sin, NUM_ANCHOR, HEAD_DIM**-0.5, gluon_config, fp8)
    else:
        keys, config = KeyRotation.parse(keys_name.strip()), parse_config_name(config_text)

        def prepare(q, k, v, cos, sin):
            scale = HEAD_DIM**-0.5
            return lambda: _launch(q, k, v, cos, sin, NUM_ANCHOR, scale, AttentionPrecision.NATIVE, keys, config)

    return measure_prepared(entry, name, check_heads, measure, prepare, fp8)


def measure_prepared(entry: str, name: str, check_heads: int, measure, prepare, fp8: bool = False) -> dict:
    """`time_candidate` for any method: prepare(q, k, v, cos, sin) returns the call to time
    at the real shape and to check on `check_heads` heads; `entry` names it in the result.
    fp8: held to the FP8 bound 2**-4 max|v| instead of the native rule."""
    run = prepare(*make_inputs(*SHAPES[name], batch=BATCH, heads=HEADS))
    run()  # compile outside the timed region
    ms, peak = measure(run)
    del run
    q, k, v, cos, sin = make_inputs(*SHAPES[name], batch=1, heads=check_heads, seed=1)
    ref = reference_fp32(*rotate(q.float(), k.float(), cos, sin), v)
    err = (prepare(q, k, v, cos, sin)().float() - ref).abs().max().item()
    flash_err = (flash(*rotate(q, k, cos, sin), v).float() - ref).abs().max().item()
    bound = 2**-4 * v.abs().max().item() if fp8 else 2 * flash_err + ATOL
    return {"shape": name, "candidate": entry, "ms": ms, "tflops": attention_flops(2 * cos.shape[0] + NUM_ANCHOR)
            / (ms * 1e-3) / 1e12, "peak_mem_gib": peak, "err": err, "flash_err": flash_err,
            "passed": err <= bound}


def print_table(checks: list[Check], timings: list[Timing]) -> None:
    print(f"{'shape':6} {'heads':>5} {'in-loop err':>11} {'keys once':>11} {'copies':>11} {'flash err':>11} "
          f"{'fp8 err':>11} {'fp8 bound':>10} {'fp8-native rms':>14} {'cosine':>8} "
          f"{'fp8 copies':>11} {'-native rms':>11} {'cosine':>8}  ok")
    for c in checks:
        fp8 = (f"{c.fp8_err:11.3e} {c.fp8_bound:10.3e} {c.fp8_vs_native_rms:14.3e} {c.fp8_vs_native_cosine:8.5f}"
               if c.fp8_err is not None else f"{'-':>11} {'-':>10} {'-':>14} {'-':>8}")
        copies8 = (f"{c.fp8_copies_err:11.3e} {c.fp8_copies_vs_native_rms:11.3e} {c.fp8_copies_vs_native_cosine:8.5f}"
                   if c.fp8_copies_err is not None else f"{'-':>11} {'-':>11} {'-':>8}")
        once = f"{c.keys_once_err:11.3e}" if c.keys_once_err is not None else f"{'-':>11}"
        copies = f"{c.copies_err:11.3e}" if c.copies_err is not None else f"{'-':>11}"
        print(f"{c.shape:6} {c.heads_checked:5d} {c.triton_err:11.3e} {once} {copies} {c.flash_err:11.3e} {fp8} "
              f"{copies8}  {c.passed}")
    print()
    print(f"{'shape':6} {'method':26} {'ms':>9} {'TFLOP/s':>8} {'vs flash':>8} {'peak GiB':>9}")
    baseline = {t.shape: t.ms for t in timings if t.method == "sdpa flash (pre-rotated)"}
    for t in timings:
        print(f"{t.shape:6} {t.method:26} {t.ms:9.2f} {t.tflops:8.1f} {baseline[t.shape] / t.ms:7.2f}x {t.peak_mem_gib:9.2f}"
              f"  {t.config or ''}")
        for config, ms in (t.candidates or {}).items():
            print(f"{'':6}   candidate {config:24} " + (f"{ms:9.2f} ms" if ms is not None else "failed"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="49f,81f", help=f"comma-separated subset of {sorted(SHAPES)}")
    parser.add_argument("--check-heads", type=int, default=2, help="heads used for the correctness check")
    parser.add_argument("--no-fp8", action="store_true", help="skip the fp8 variant")
    parser.add_argument("--warmup-ms", type=int, default=100)
    parser.add_argument("--rep-ms", type=int, default=500)
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument("--candidate", help='time and check one config alone, "KEYS: CONFIG" (see the docstring)')
    parser.add_argument("--list-candidates", action="store_true", help="print the Hopper candidates, one a line")
    args = parser.parse_args(argv)
    if args.list_candidates:
        print("\n".join(hopper_candidates()))
        return 0

    if not torch.cuda.is_available():
        print("benchmarks/attention.py needs a CUDA GPU (the Triton kernel and flash SDPA are GPU-only).", file=sys.stderr)
        return 2
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shapes {unknown}; valid: {sorted(SHAPES)}")
    with_fp8 = not args.no_fp8 and torch.cuda.get_device_capability() >= (8, 9)
    if args.candidate:
        results = []
        for name in shapes:  # printed one by one: a later shape may not finish in time
            results.append(time_candidate(args.candidate, name, args.check_heads,
                                          lambda fn: cuda_measure(fn, args.warmup_ms, args.rep_ms)))
            print(json.dumps(results[-1]), flush=True)
        return 0 if all(r["passed"] for r in results) else 1

    # Timed first (see the module docstring), and reported even when a check then fails (the
    # tables say which; the exit code is 1): GPU time is scarce.
    timings = [t for name in shapes for t in time_shape(name, with_fp8, args.warmup_ms, args.rep_ms)]
    checks = [check_shape(name, args.check_heads, with_fp8) for name in shapes]
    failed = [c for c in checks if not c.passed]

    import triton

    if args.json:
        print(json.dumps({
            "device": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "triton": triton.__version__,
            "batch": BATCH, "heads": HEADS, "head_dim": HEAD_DIM, "dtype": str(DTYPE), "num_anchor": NUM_ANCHOR,
            "checks": [asdict(c) for c in checks],
            "timings": [asdict(t) for t in timings],
        }, indent=2))
    else:
        print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}")
        print_table(checks, timings)
    if failed:
        print(f"correctness check failed for {[c.shape for c in failed]} (timed all the same)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
