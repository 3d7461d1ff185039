"""`python -m sama_rt` under torchrun, and degrees refused before any weight loads."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from sama_rt.cli import main
from sama_rt.parallel import ParallelConfig, ParallelConfigError
from sama_rt.video.io import read_video
from sama_rt.video.synth import synth_clip
from tests.parallel.launch import REPO

TORCHRUN_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return synth_clip(tmp_path_factory.mktemp("clip") / "in.mp4", num_frames=5, size=(112, 64), fps=24)


def test_cli_edit_under_torchrun(clip, tmp_path):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    out = tmp_path / "edited.mp4"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    run = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "sama_rt", "edit", str(clip),
         "Turn the red square blue", "-o", str(out), "--config", "tiny", "--ulysses", "2",
         "--resolution", "64x112", "--steps", "1", "--max-frames", "5"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    # Only rank 0 prints the path and the timing table, and writes the file.
    assert run.stdout.strip() == str(out)
    assert run.stderr.count("per step") == 1
    edited = read_video(out)
    assert edited.frames.shape == (5, 64, 128, 3)  # the 64x112 budget's bucket for a 112x64 clip
    assert edited.fps == pytest.approx(24)


def test_cli_refuses_degrees_that_do_not_match_the_launch(clip, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["edit", str(clip), "make it blue", "-o", str(tmp_path / "o.mp4"), "--config", "tiny",
              "--ulysses", "2", "--cfg-parallel"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "= 4 processes, but 1 process was launched" in err
    assert "torchrun --nproc-per-node 4" in err


def test_bench_refuses_heads_not_divisible(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--config", "tiny", "--frames", "5", "--resolution", "64x112", "--ulysses", "3"])
    assert exit_info.value.code == 2
    assert "--ulysses 3 does not divide the model's 2 attention heads" in capsys.readouterr().err


def test_editor_refuses_bad_degrees_before_loading_weights(monkeypatch):
    from sama_rt import Editor
    from sama_rt.models import dit as dit_module

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were built before the degrees were checked")

    monkeypatch.setattr(dit_module, "build_dit", no_weights)
    with pytest.raises(ParallelConfigError, match="does not divide the model's 2 attention heads"):
        Editor.from_config("tiny", parallel=ParallelConfig(ulysses=4))
    with pytest.raises(ParallelConfigError, match="ring 3 = 3 processes, but 1 process was launched"):
        Editor.from_config("tiny", parallel=ParallelConfig(ring=3))


def test_one_process_config_runs_without_a_process_group():
    """ParallelConfig() on one process is the plain path: no torchrun needed."""
    import torch.distributed as dist

    from sama_rt import Editor
    from sama_rt.models.dit import DiTConfig, build_dit

    editor = Editor(build_dit(DiTConfig.preset("tiny")), None, None, None, parallel=ParallelConfig())
    assert editor.parallel is None
    assert not dist.is_initialized()
