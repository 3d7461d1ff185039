"""The `sama-rt` command line in subprocesses, as a user runs it."""
import json
import subprocess
import sys

import pytest

from sama_rt.video.io import probe_video
from sama_rt.video.synth import synth_clip

FAST = ["--config", "tiny", "--steps", "1", "--resolution", "64x112", "--device", "cpu"]


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sama_rt", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return synth_clip(tmp_path_factory.mktemp("cli") / "in.mp4", num_frames=6, size=(96, 64), fps=30, audio=True)


def test_edit_end_to_end(clip, tmp_path):
    out = tmp_path / "sub" / "out.mp4"
    r = run("edit", clip, "Replace the red square with a cat", "-o", out, *FAST)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    assert "denoise" in r.stderr and "total" in r.stderr  # progress + timing table
    info = probe_video(out)
    assert info.num_frames == 6 and info.has_audio and info.fps == pytest.approx(30)
    # An existing output is refused without --overwrite (usage error), accepted with it.
    again = run("edit", clip, "x", "-o", out, *FAST)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert run("edit", clip, "x", "-o", out, "--overwrite", "-q", *FAST).returncode == 0


def test_every_attention_backend_is_offered_by_edit_and_bench():
    from sama_rt.cli import build_parser
    from sama_rt.models.attention import attention_backend_names

    parser = build_parser()
    for name in attention_backend_names():  # triton-fp8 included: the opt-in FP8 kernel
        assert parser.parse_args(["edit", "in.mp4", "x", "-o", "o.mp4", "--attention", name]).attention == name
        assert parser.parse_args(["bench", "--attention", name]).attention == name


def test_usage_errors_exit_2(clip, tmp_path):
    r = run("edit", clip, "x", *FAST)  # no -o
    assert r.returncode == 2
    r = run("edit", clip, "x", "-o", clip, *FAST)
    assert r.returncode == 2 and "input" in r.stderr
    r = run("edit", clip, "   ", "-o", tmp_path / "o.mp4", *FAST)
    assert r.returncode == 2 and "instruction is empty" in r.stderr
    r = run("edit", clip, "x", "-o", tmp_path / "o.mp4", "--config", "tiny", "--wan-dir", tmp_path)
    assert r.returncode == 2 and "--config" in r.stderr
    r = run("edit", clip, "x", "-o", tmp_path / "o.mp4")
    assert r.returncode == 2 and "--wan-dir" in r.stderr
    r = run("edit", clip, "x", "-o", tmp_path / "o.mp4", *FAST, "--backend", "tensorrt")
    assert r.returncode == 2 and "engine" in r.stderr
    r = run("edit", clip, "x", "-o", tmp_path / "o.mp4", "--steps", "0", *FAST[:2])
    assert r.returncode == 2


def test_failures_exit_1_with_one_cause(tmp_path):
    r = run("edit", tmp_path / "missing.mp4", "x", "-o", tmp_path / "o.mp4", *FAST)
    assert r.returncode == 1
    assert "missing.mp4" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.mp4").exists()
    r = run("--verbose", "edit", tmp_path / "missing.mp4", "x", "-o", tmp_path / "o.mp4", *FAST)
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_missing_weights_name_files(tmp_path, clip):
    r = run("edit", clip, "x", "-o", tmp_path / "o.mp4", "--wan-dir", tmp_path / "wan",
            "--sama-checkpoint", tmp_path / "sama.safetensors", "--device", "cpu")
    assert r.returncode == 1
    assert "Wan2.1_VAE.pth" in r.stderr and "sama.safetensors" in r.stderr


def test_info_text_and_json():
    r = run("info")
    assert r.returncode == 0 and "backends:" in r.stdout and "tensorrt" in r.stdout
    # one column for the yes/no marks, however long a backend's name
    rows = [line for line in r.stdout.splitlines() if line.startswith("  ") and line.split()[1] in ("yes", "no")]
    assert len({line.index(line.split()[1], 3) for line in rows}) == 1, rows
    info = json.loads(run("info", "--json").stdout)
    assert info["backends"]["torch"]["available"] is True
    assert set(info["attention"]) == {"reference", "sdpa", "triton", "triton-in-loop", "triton-fp8",
                                        "triton-copies", "triton-fp8-copies", "triton-gluon", "triton-gluon-ws",
                                        "triton-gluon-ws-fp8"}
    assert set(info["runtime"]) == {"offload", "fp8_linear", "compile", "cuda_graphs"}
    import torch

    if not torch.cuda.is_available():
        assert not info["runtime"]["cuda_graphs"]["available"] and "CUDA only" in info["runtime"]["compile"]["why"]


def test_demo_writes_its_files(tmp_path):
    r = run("demo", "--out", tmp_path / "demo", "--steps", "1", "-q")
    assert r.returncode == 0, r.stderr
    for name in ("input.mp4", "edited.mp4", "comparison.mp4", "comparison.png"):
        assert (tmp_path / "demo" / name).stat().st_size > 0
    assert "vae_decode" in r.stdout and "per step" in r.stdout
    edited, comparison = probe_video(tmp_path / "demo" / "edited.mp4"), probe_video(tmp_path / "demo" / "comparison.mp4")
    assert edited.num_frames == 17 and comparison.width > edited.width and edited.has_audio


def test_bench_json_with_reference():
    r = run("bench", "--config", "tiny", "--frames", "5", "--resolution", "64x96", "--steps", "2",
            "--compare-reference", "--json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("per_step_s", "reference_per_step_s", "speedup", "max_abs_diff", "tflops", "peak_memory_bytes"):
        assert key in out
    assert out["max_abs_diff"] < 1e-3 * max(1.0, out["reference_max_abs"])
