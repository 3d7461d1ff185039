"""Failures end every rank with a non-zero exit and the cause printed once; no hangs."""
from __future__ import annotations

import re

from sama_rt.video.synth import synth_clip
from tests.parallel.launch import launch
from tests.parallel.worker import STALL_EXTRA_S

TIMEOUT_S = 2.0  # the process-group timeout of the stall test
LAUNCH_TIMEOUT_S = 120  # the test's own guard; the runs end long before


def test_a_failing_rank_stops_every_rank(tmp_path):
    clip = synth_clip(tmp_path / "in.mp4", num_frames=5, size=(112, 64), audio=False)
    results, _ = launch(2, ["-m", "tests.parallel.worker", "fail", str(tmp_path), str(clip)], LAUNCH_TIMEOUT_S)
    rank0, rank1 = results
    # Rank 1 cannot read its input; rank 0 is then waiting in a collective and must stop
    # on its own (nothing here kills it, unlike torchrun).
    assert rank1.returncode == 1, rank1.stderr
    assert rank0.returncode == 1, rank0.stderr
    assert "(rank 1 of 2)" in rank1.stderr and "missing-on-rank-1.mp4" in rank1.stderr
    both = rank0.stderr + rank1.stderr
    assert both.count("missing-on-rank-1.mp4") == 1, both  # the cause, printed once
    assert "(rank 0 of 2)" in rank0.stderr and "another rank failed" in rank0.stderr
    assert "Traceback" not in both
    assert not (tmp_path / "out.mp4").exists()


def test_a_stalled_rank_fails_the_others_after_the_timeout(tmp_path):
    results, _ = launch(2, ["-m", "tests.parallel.worker", "stall", str(tmp_path), str(TIMEOUT_S)],
                        LAUNCH_TIMEOUT_S)
    rank0, rank1 = results
    assert rank0.returncode == 1, rank0.stderr
    waited = float(re.search(r"waited ([\d.]+) s", rank0.stderr).group(1))
    # Rank 0 gives up after the timeout, before the stalled rank wakes (timeout + extra).
    assert TIMEOUT_S - 0.25 <= waited < TIMEOUT_S + STALL_EXTRA_S - 0.5, rank0.stderr
    assert "stopped in the Ulysses all-to-all" in rank0.stderr
    # The stalled rank then finds its peer gone and fails too, instead of hanging.
    assert rank1.returncode == 1, rank1.stderr
    assert rank1.seconds < LAUNCH_TIMEOUT_S / 2
