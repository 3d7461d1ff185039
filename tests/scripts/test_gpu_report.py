"""scripts/gpu_report.py reads what scripts/gpu_checks.sh leaves. Its inputs here are real
outputs of the same producers (run_bench, benchmarks/fp8_linear.py, the dataclasses of
benchmarks/attention.py), so a change of their format breaks this test, not a GPU session."""
import importlib.util
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from sama_rt.bench import BenchConfig, run_bench

ROOT = Path(__file__).resolve().parents[2]


def _module(path: str):
    spec = importlib.util.spec_from_file_location(f"_script_{Path(path).stem}", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_report_from_real_outputs(tmp_path):
    report = _module("scripts/gpu_report.py")
    attention = _module("benchmarks/attention.py")
    fp8 = _module("benchmarks/fp8_linear.py")
    import torch

    small = dict(config="tiny", frames=5, height=48, width=64, steps=1)
    (tmp_path / "step49.out").write_text(json.dumps(run_bench(BenchConfig(**small, profile=True))))
    (tmp_path / "reference49.out").write_text(json.dumps(run_bench(BenchConfig(**small, compare_reference=True))))
    (tmp_path / "attention.out").write_text(json.dumps({
        "device": "NVIDIA H100 80GB HBM3", "torch": "2.11", "triton": "3.6", "batch": 2, "heads": 40, "head_dim": 128,
        "dtype": "torch.bfloat16", "num_anchor": 65,
        "checks": [asdict(attention.Check("49f", 2, 1e-3, 2e-3, 3e-2, 6e-2, True, 4.4e-3, 0.999, 1.5e-3, 1.2e-3,
                                          2.5e-2, 4.3e-3, 0.9991)),
                   asdict(attention.Check("81f", 2, 1e-3, 2e-3, None, None, True))],
        "timings": [asdict(attention.Timing("49f", "triton", 10.0, 600.0, 3.0, "128x64 w8 s3 split",
                                            {"128x64 w8 s3 split": 10.0, "128x128 w8 s3 split flat": 12.0,
                                             "128x64 w8 s2 split": None})),
                    asdict(attention.Timing("49f", "sdpa flash (pre-rotated)", 12.0, 500.0, 3.0))],
    }))
    (tmp_path / "sweep.out").write_text("\n".join([
        json.dumps({"shape": "49f", "candidate": "once: 128x64 w8 s3 split flat", "ms": 140.0, "tflops": 482.3,
                    "peak_mem_gib": 4.5, "err": 2e-4, "flash_err": 2e-4, "passed": True}),
        '{"candidate": "once: 128x128 w8 s2 split flat tma", "rc": 124}',
        json.dumps({"shape": "49f", "candidate": "once: 128x64 w8 s3 split", "ms": 150.0, "tflops": 451.0,
                    "peak_mem_gib": 4.5, "err": 9e-4, "flash_err": 2e-4, "passed": False}),
        '{"candidate": "once: 128x64 w8 s3 split", "rc": 1}',
        '{"candidate": "in-loop: 64x32 w4 s3 split", "rc": 1}',
        '{"candidate": "gluon: 64x64 w4 s2", "rc": 125}',
        json.dumps({"shape": "49f", "candidate": "gluon ws fp8: 64x128 s2 pingpong", "ms": 100.0, "tflops": 675.0,
                    "peak_mem_gib": 3.0, "err": 3e-2, "flash_err": 2e-4, "passed": True}),
        json.dumps({"shape": "49f", "candidate": "sdpa: default", "ms": 112.0, "tflops": 602.7,
                    "peak_mem_gib": 4.0, "err": 2e-4, "flash_err": 2e-4, "passed": True})]))
    (tmp_path / "fp8error.out").write_text(json.dumps(fp8.bench_config("tiny", 1, torch.device("cpu"), False)))
    (tmp_path / "step81.out").write_text("Traceback: CUDA out of memory")  # a failed section
    (tmp_path / "summary.txt").write_text("== step49: rc=0 in 40s (limit 150s)\n== step81: rc=1 in 9s (limit 200s)\n")

    text = report.report(tmp_path, "2026-11-27")
    assert text.startswith("### NVIDIA H100 80GB HBM3, 2026-11-27")
    assert "step81: rc=1" in text and "No results from: step81 (see their .err files)." in text
    assert "Not run: gluonws49, gluonwsfp849, gluon49, fp8copies49, copies49, sdpa49, sdpa81, stages49," in text  # not in summary.txt: not run, not failed
    assert "| 49f | triton | 10.00 | 600.0 | 1.20x | 3.00 | 128x64 w8 s3 split |" in text
    # every autotune candidate, its TFLOP/s scaled from the method's (600 at 10 ms -> 500 at 12)
    assert "| 49f | triton | 128x128 w8 s3 split flat | 12.00 | 500.0 |" in text
    assert "| 49f | triton | 128x64 w8 s2 split | failed | - |" in text
    assert "| 49f | sdpa flash (pre-rotated) | 12.00 | 500.0 | 1.00x | 3.00 |  |" in text
    # the speedup over SDPA's own backend choice, timed in the same sweep (112 ms / 140 ms)
    assert "| 49f | once: 128x64 w8 s3 split flat | 140.00 | 482.3 | 0.80x | 4.50 | 2.00e-04 (2.00e-04) | True |" in text
    assert "| 49f | sdpa: default | 112.00 | 602.7 | 1.00x |" in text
    assert "| - | once: 128x128 w8 s2 split flat tma | exit 124 (time limit) |" in text
    assert "| - | once: 128x64 w8 s3 split |" not in text  # exit 1 for its failed check, in its own row
    assert "| - | in-loop: 64x32 w4 s3 split | exit 1 |" in text  # exit 1 with no row: it raised
    assert "| - | gluon: 64x64 w4 s2 | exit 125 (not run: one of its kind hung) |" in text
    # the decision: the fastest passing candidate, exact (the failed 150 ms one left out) and FP8
    # apart, against the target
    assert ("- 49f, fastest exact candidate: once: 128x64 w8 s3 split flat, 140.00 ms, 482.3 TFLOP/s, 0.80x torch's "
            "default SDPA: target (>= 600 TFLOP/s and faster than torch's default SDPA) not met.") in text
    assert ("- 49f, fastest FP8 candidate: gluon ws fp8: 64x128 s2 pingpong, 100.00 ms, 675.0 TFLOP/s, 1.12x torch's "
            "default SDPA: target (>= 600 TFLOP/s and faster than torch's default SDPA) met.") in text
    assert ("| 1.00e-03 | 1.50e-03 | 1.20e-03 | 2.00e-03 | 3.00e-02 (6.00e-02) | 4.40e-03, 0.99900 | 2.50e-02 | "
            "4.30e-03, 0.99910 | True |") in text
    assert "| - | 2.00e-03 | - | - | - | - | True |" in text
    rows = [line for line in text.splitlines() if line.startswith("| step49 ") or line.startswith("| reference49 ")]
    assert len(rows) == 2 and rows[1].count("x |") == 1  # the official step's speedup on the reference row
    assert "| tiny | fp8 | " in text and "| tiny | bf16 | " in text
    assert "Where one step's time goes (step49, cpu operators" in text and "| `aten::addmm` |" in text
    assert report.main([str(tmp_path / "missing")]) == 2


def test_attention_check_runs_and_fills_every_field(monkeypatch):
    """benchmarks/attention.py's correctness check, at a tiny shape on CPU (kernel interpreted,
    bf16 emulated exactly; SDPA's CPU flash kernel), so the GPU section cannot die on it."""
    attention = _module("benchmarks/attention.py")
    monkeypatch.setattr(attention, "DEVICE", "cpu")
    monkeypatch.setitem(attention.SHAPES, "tiny", (1, 3, 5))
    check = attention.check_shape("tiny", 2, with_fp8=True)
    assert check.passed, check
    assert 0 < check.triton_err <= 2 * check.flash_err + attention.ATOL
    assert check.keys_once_err == check.triton_err  # the same arithmetic (interpreter: same tiles)
    assert 0 < check.copies_err <= 2 * check.flash_err + attention.ATOL
    assert 0 < check.fp8_err <= check.fp8_bound
    assert 0 < check.fp8_vs_native_rms < 0.1 * check.fp8_bound and 0.99 < check.fp8_vs_native_cosine < 1
    assert 0 < check.fp8_copies_err <= check.fp8_bound and check.fp8_copies_err != check.fp8_err
    assert 0 < check.fp8_copies_vs_native_rms < 0.1 * check.fp8_bound and 0.99 < check.fp8_copies_vs_native_cosine < 1
    attention.print_table([check, attention.Check("81f", 2, 1e-3, 2e-3, None, None, True)], [])  # both row kinds


def test_every_timed_method_runs(monkeypatch):
    """The timing section's callables, each run once at a tiny shape on CPU (timing itself
    needs a GPU), and the autotuned config is readable after the Triton ones."""
    attention = _module("benchmarks/attention.py")
    from sama_rt.kernels.anchor_attention import tuned_config

    monkeypatch.setattr(attention, "DEVICE", "cpu")
    q, k, v, cos, sin = attention.make_inputs(1, 3, 5, batch=1, heads=2)
    methods = attention.timed_methods(q, k, v, cos, sin, with_fp8=True)
    assert list(methods) == ["triton", "triton-in-loop", "triton-fp8", "triton-copies", "triton-fp8-copies",
                             "sdpa flash (pre-rotated)", "rope + sdpa flash", "sdpa default (pre-rotated)"]
    for name, fn in methods.items():
        assert fn().shape == q.shape, name
    assert tuned_config() is not None


def test_one_candidate_is_timed_and_checked_alone(monkeypatch):
    """`--candidate`: one config without the autotuner, its error held to the usual rule (CPU:
    interpreted, a tiny shape, a stand-in timer). The Hopper lists' entries parse back."""
    attention = _module("benchmarks/attention.py")
    from sama_rt.kernels.anchor_attention import config_name, parse_config_name

    monkeypatch.setattr(attention, "DEVICE", "cpu")
    monkeypatch.setitem(attention.SHAPES, "tiny", (1, 3, 6))
    for entry in ("once: 16x16 w4 s1 split flat", "in-loop: 16x16 w4 s1 split", "sdpa: flash", "sdpa: default"):
        result = attention.time_candidate(entry, "tiny", 2, lambda fn: (fn() is not None) * (2.0, 0.5))
        assert result["candidate"] == entry and result["ms"] == 2.0 and result["peak_mem_gib"] == 0.5
        assert result["passed"] and 0 < result["err"] <= 2 * result["flash_err"] + attention.ATOL, result
    # FP8: held to the e4m3 bound, which the native rule's 2x flash error would refuse
    result = attention.time_candidate("fp8 copies: 16x32 w4 s1 split flat tma copies", "tiny", 2,
                                      lambda fn: (fn() is not None) * (2.0, 0.5))
    assert result["passed"] and 2 * result["flash_err"] + attention.ATOL < result["err"] < 0.3, result
    baselines = [entry for entry in attention.hopper_candidates() if entry.startswith("sdpa: ")]
    assert baselines == ["sdpa: flash", "sdpa: default"]
    for entry in attention.hopper_candidates():
        keys, _, name = entry.partition(": ")
        assert keys in ("once", "copies", "in-loop", "gluon", "gluon ws", "fp8 copies", "gluon fp8", "gluon ws fp8",
                        "sdpa")
        assert keys.startswith(("sdpa", "gluon")) or config_name(parse_config_name(name)) == name
    # the Gluon entries name configs of their kernels (a bad one fails before any input is made)
    assert {"gluon ws: 64x128 s2 pingpong", "gluon ws fp8: 64x128 s2 pingpong"} <= set(attention.hopper_candidates())
    with pytest.raises(ValueError, match="not a warp-specialised Gluon config"):
        attention.time_candidate("gluon ws: 64x128 w4 s2", "tiny", 2, None)
    with pytest.raises(ValueError, match="not a config name"):
        parse_config_name("128x64 s3")


def test_rotated_copies_variants_parse_and_are_checked(monkeypatch):
    """benchmarks/rotated_copies.py: every listed variant parses to a rotated-copies config
    and its switch; a variant runs through the same check as `--candidate` (CPU:
    interpreted, a tiny shape, a stand-in timer)."""
    variants = _module("benchmarks/rotated_copies.py")
    from sama_rt.kernels.anchor_attention import config_name

    listed = variants.variants()
    assert "128x64 w4 s2 plain" in listed and "128x64 w4 s2 ws" in listed
    for name in listed:
        config, warp_specialize = variants.parse_variant(name)
        assert config_name(config).endswith(" split flat tma copies") and warp_specialize == name.endswith(" ws")
    with pytest.raises(ValueError, match="not a variant"):
        variants.parse_variant("128x64 w4 s2 device")

    attention = variants._attention_benchmark()
    monkeypatch.setattr(attention, "DEVICE", "cpu")
    monkeypatch.setitem(attention.SHAPES, "tiny", (1, 3, 6))
    result = variants.run_variant("16x16 w4 s1 plain", "tiny", lambda fn: (fn() is not None) * (2.0, 0.5),
                                  attention)
    assert result["passed"] and 0 < result["err"] <= 2 * result["flash_err"] + attention.ATOL, result
