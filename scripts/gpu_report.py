"""Turn the outputs of scripts/gpu_checks.sh into Markdown for docs/BENCHMARKS.md.

    python scripts/gpu_report.py gpu-results [--date 2026-11-27]

Reads what the sections left (JSON on stdout, return codes in summary.txt) and prints one
block: the device and date, the section outcomes, the anchor-attention kernel against
flash SDPA, the 14B step per variant (s/step, TFLOP/s, MFU, peak memory, and the official
step where it ran) and the FP8 linear error. Sections that failed or did not run are listed
as such, never left out silently.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

STEP_SECTIONS = ("step49", "gluonws49", "gluonwsfp849", "gluon49", "fp8copies49", "copies49", "sdpa49", "reference49",
                 "step81", "sdpa81", "stages49", "fp8graphs49", "fp8attn49", "inloop49", "compile49", "compile81",
                 "offload49", "fastest49")


def _load(folder: Path, name: str):
    """The section's JSON output, or None when it has none (failed, skipped, not run)."""
    path = folder / f"{name}.out"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def outcomes(folder: Path) -> list[str]:
    path = folder / "summary.txt"
    return [line.strip("= \n") for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def attention_table(result: dict) -> list[str]:
    lines = [f"Anchor attention, B={result['batch']}, {result['heads']} heads, d={result['head_dim']}, "
             f"{result['dtype']}, {result['num_anchor']} anchors (torch {result['torch']}, triton {result['triton']})", "",
             "| shape | heads checked | in-loop err | keys once err | copies err | flash err | fp8 err (bound) | "
             "fp8 vs native: rms, cosine | fp8 copies err | fp8 copies vs native: rms, cosine | passed |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in result["checks"]:
        fp8 = "-" if c["fp8_err"] is None else f"{c['fp8_err']:.2e} ({c['fp8_bound']:.2e})"
        vs_native, copies_vs_native = ("-" if c.get(f"{kind}_vs_native_rms") is None else
                                       f"{c[f'{kind}_vs_native_rms']:.2e}, {c[f'{kind}_vs_native_cosine']:.5f}"
                                       for kind in ("fp8", "fp8_copies"))
        once, copies, copies8 = ("-" if c.get(key) is None else f"{c[key]:.2e}"  # older results lack them
                                 for key in ("keys_once_err", "copies_err", "fp8_copies_err"))
        lines.append(f"| {c['shape']} | {c['heads_checked']} | {c['triton_err']:.2e} | {once} | {copies} | "
                     f"{c['flash_err']:.2e} | {fp8} | {vs_native} | {copies8} | {copies_vs_native} | {c['passed']} |")
    flash = {t["shape"]: t["ms"] for t in result["timings"] if t["method"].startswith("sdpa flash")}
    lines += ["", "| shape | method | ms | TFLOP/s | vs flash | peak GiB | config |", "|---|---|---|---|---|---|---|"]
    for t in result["timings"]:
        ratio = f"{flash[t['shape']] / t['ms']:.2f}x" if t["shape"] in flash else "-"
        lines.append(f"| {t['shape']} | {t['method']} | {t['ms']:.2f} | {t['tflops']:.1f} | {ratio} | "
                     f"{t['peak_mem_gib']:.2f} | {t.get('config') or ''} |")
    tuned = [t for t in result["timings"] if t.get("candidates")]  # older results lack them
    if tuned:
        lines += ["", "Autotune candidates, as the autotuner timed them at the full shape:", "",
                  "| shape | method | candidate | ms | TFLOP/s |", "|---|---|---|---|---|"]
        for t in tuned:
            tera = t["tflops"] * t["ms"]  # the method's work, TFLOP x 1000
            for config, ms in t["candidates"].items():
                cells = f"{ms:.2f} | {tera / ms:.1f}" if ms else "failed | -"
                lines.append(f"| {t['shape']} | {t['method']} | {config} | {cells} |")
    return lines


def _json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")] if path.is_file() else []


def sweep_table(folder: Path, section: str = "sweep") -> list[str]:
    """The `sweep` section's JSON lines: each anchor-attention candidate alone, or its exit code
    where it failed or ran out of time (124); the `variants` section's likewise."""
    rows = _json_lines(folder / f"{section}.out")
    if not rows:
        return []
    # The baseline measured in the same run's sweep, per shape: SDPA with torch's own backend choice.
    baseline = {r["shape"]: r["ms"] for r in _json_lines(folder / "sweep.out")
                if r.get("candidate") == "sdpa: default" and "ms" in r}
    script = "benchmarks/attention.py --candidate" if section == "sweep" else "benchmarks/rotated_copies.py --variant"
    lines = [f"Each {'candidate' if section == 'sweep' else 'variant'} alone (`{script}`, its own process, no "
             "autotuner; speedup: the sweep's sdpa: default time at the shape, same run, over this one's):", "",
             "| shape | candidate | ms | TFLOP/s | speedup | peak GiB | err (flash err) | passed |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "ms" in r:
            speedup = f"{baseline[r['shape']] / r['ms']:.2f}x" if r["shape"] in baseline else "-"
            lines.append(f"| {r['shape']} | {r['candidate']} | {r['ms']:.2f} | {r['tflops']:.1f} | {speedup} | "
                         f"{r['peak_mem_gib']:.2f} | {r['err']:.2e} ({r['flash_err']:.2e}) | {r['passed']} |")
        elif not any(m.get("candidate") == r["candidate"] and "ms" in m for m in rows):  # (else: a failed check)
            why = {124: " (time limit)", 125: " (not run: one of its kind hung)"}.get(r["rc"], "")
            lines.append(f"| - | {r['candidate']} | exit {r['rc']}{why} | - | - | - | - | - |")
    return lines + [""] + (target_lines(rows, baseline) if section == "sweep" else [])


# The attention issue's target: at least this many TFLOP/s (bf16 equivalent) and faster than
# torch's default SDPA choice (cuDNN on Hopper), by a kernel that passed its check.
TARGET_TFLOPS = 600.0


def target_lines(rows: list[dict], baseline: dict[str, float]) -> list[str]:
    """Per shape, the fastest candidate that passed its check, exact and FP8 apart (FP8 is an
    opt-in approximation), against the target: the decision the sweep is run for."""
    lines = []
    for shape in dict.fromkeys(r["shape"] for r in rows if "ms" in r):
        for label, fp8 in (("exact", False), ("FP8", True)):
            passed = [r for r in rows if r.get("shape") == shape and "ms" in r and r["passed"]
                      and not r["candidate"].startswith("sdpa") and ("fp8" in r["candidate"]) == fp8]
            if not passed:
                continue
            best = min(passed, key=lambda r: r["ms"])
            faster = shape in baseline and best["ms"] < baseline[shape]
            met = faster and best["tflops"] >= TARGET_TFLOPS
            versus = f", {baseline[shape] / best['ms']:.2f}x torch's default SDPA" if shape in baseline else ""
            lines.append(f"- {shape}, fastest {label} candidate: {best['candidate']}, {best['ms']:.2f} ms, "
                         f"{best['tflops']:.1f} TFLOP/s{versus}: target (>= {TARGET_TFLOPS:.0f} TFLOP/s and faster "
                         f"than torch's default SDPA) {'met' if met else 'not met'}.")
    return lines + [""] if lines else []


def _runtime(bench: dict) -> str:
    on = [k for k in ("fp8_linear", "compile_blocks", "cuda_graphs") if bench["runtime"].get(k)]
    if bench["runtime"].get("offload", "none") != "none":
        on.insert(0, f"offload={bench['runtime']['offload']}")
    return ", ".join(on) or "default"


def step_table(results: dict[str, dict]) -> list[str]:
    lines = ["| section | config | frames | resolution | sequence | attention | runtime | s/step | TFLOP/s | MFU | peak GiB "
             "| official s/step | speedup | max abs diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        b = r["bench"]
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "-"
        ref = ("-", "-", "-")
        if "reference_per_step_s" in r:
            ref = (f"{r['reference_per_step_s']:.3f}", f"{r['speedup']:.2f}x",
                   f"{r['max_abs_diff']:.2e} (of {r['reference_max_abs']:.2g})")
        attention = r.get("attention_backend", b["attention"])
        if r.get("attention_kernel_config"):
            attention += f" ({r['attention_kernel_config']})"
        lines.append(f"| {name} | {b['config']} | {b['frames']} | {b['height']}x{b['width']} | {r['sequence_length']} | "
                     f"{attention} | {_runtime(b)} | "
                     f"{r['per_step_s']:.3f} | {r['tflops']:.1f} | {mfu} | {r['peak_memory_bytes'] / 2**30:.1f} | "
                     + " | ".join(ref) + " |")
    return lines


def profile_table(results: dict[str, dict]) -> list[str]:
    lines = []
    for name, r in results.items():
        prof = r.get("profile")
        if prof and prof["total_ms"] > 0:
            share = {k: v / prof["total_ms"] for k, v in prof["categories_ms"].items()}
            lines += [f"Where one step's time goes ({name}, {prof['clock']}, {prof['total_ms']:.0f} ms):", "",
                      "| " + " | ".join(share) + " |", "|" + "---|" * len(share),
                      "| " + " | ".join(f"{v:.1%}" for v in share.values()) + " |", "",
                      "| top kernels | ms | calls |", "|---|---|---|"]
            lines += [f"| `{t['name']}` | {t['ms']:.1f} | {t['calls']} |" for t in prof["top"]] + [""]
    return lines


def stage_table(results: dict[str, dict]) -> list[str]:
    lines = []
    for name, r in results.items():
        if "stages" in r:
            stages = {k: v for k, v in r["stages"].items() if isinstance(v, float)}
            lines += [f"Whole edit ({name}, {r['bench']['steps']} steps, edited at {r['stages']['edited_resolution']}):", "",
                      "| " + " | ".join(stages) + " |", "|" + "---|" * len(stages),
                      "| " + " | ".join(f"{v:.2f} s" for v in stages.values()) + " |", ""]
    return lines


def fp8_table(rows: list[dict]) -> list[str]:
    lines = ["| config | precision | s/step | velocity vs bf16 (rel L2) | latents vs bf16 (rel L2) |", "|---|---|---|---|---|"]
    for r in rows:
        v = r.get("velocity_vs_bf16", {}).get("rel_l2")
        x = r.get("latents_vs_bf16", {}).get("rel_l2")
        lines.append(f"| {r['config']} | {r['precision']} | {r['per_step_s']:.3f} | "
                     f"{'-' if v is None else f'{v:.2e}'} | {'-' if x is None else f'{x:.2e}'} |")
    return lines


def report(folder: Path, date: str) -> str:
    steps = {name: r for name in STEP_SECTIONS if (r := _load(folder, name)) is not None}
    attention = _load(folder, "attention")
    device = (attention or {}).get("device") or next((r["device_name"] for r in steps.values()), "unknown device")
    lines = [f"### {device}, {date}", "", "Sections (`scripts/gpu_checks.sh`): "
             + ("; ".join(outcomes(folder)) or "no summary.txt"), ""]
    if attention is not None:
        lines += attention_table(attention) + [""]
    lines += sweep_table(folder)
    lines += sweep_table(folder, "variants")
    if steps:
        lines += ["DiT step, random weights, CFG batch 2 (`sama-rt bench`):", ""]
        lines += step_table(steps) + [""] + profile_table(steps) + stage_table(steps)
    fp8 = _load(folder, "fp8error")
    if fp8:
        lines += ["FP8 linear layers at the 14B shape (`benchmarks/fp8_linear.py`):", ""] + fp8_table(fp8) + [""]
    ran = {line.split(":")[0] for line in outcomes(folder)}
    missing = [n for n in ("attention", *STEP_SECTIONS, "fp8error") if _load(folder, n) is None]
    if [n for n in missing if n in ran]:
        lines.append("No results from: " + ", ".join(n for n in missing if n in ran) + " (see their .err files).")
    if [n for n in missing if n not in ran]:
        lines.append("Not run: " + ", ".join(n for n in missing if n not in ran) + ".")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--date", default=datetime.date.today().isoformat())
    args = ap.parse_args(argv)
    if not args.folder.is_dir():
        print(f"{args.folder}: no such folder (the $OUT of scripts/gpu_checks.sh)", file=sys.stderr)
        return 2
    print(report(args.folder, args.date))
    return 0


if __name__ == "__main__":
    sys.exit(main())
