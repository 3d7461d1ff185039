"""benchmarks/memory_estimate.py: the live-bytes tracker on a computation whose peak is known,
and the estimate's bookkeeping at a small config."""
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from .test_gpu_report import _module

MIB = 2**20


def test_live_bytes_counts_storages_once_and_frees_them():
    estimate = _module("benchmarks/memory_estimate.py")
    fake = FakeTensorMode()
    with fake:
        x = torch.empty(1024, 256)  # 1 MiB, created before tracking: not counted
    tracker = estimate.LiveBytes()
    with fake, tracker:
        a = x + 1  # 1 MiB
        view = a.view(-1)  # same storage: not counted again
        b = a * 2  # 2 MiB live
        del a
        assert tracker.live == 2 * MIB  # `view` still holds a's storage
        del view
        assert tracker.live == 1 * MIB
        c = torch.cat([b, b])  # 1 + 2 = 3 MiB live
        del b, c
    assert tracker.peak == 3 * MIB and tracker.live == 0


def test_estimate_adds_up():
    estimate = _module("benchmarks/memory_estimate.py")
    r = estimate.estimate("tiny", 5, 64, 96)
    assert 0 < r["per_edit_gib"] < r["step_peak_gib"]
    assert r["default_peak_gib"] == r["weights_gib"] + r["step_peak_gib"]
    assert r["low_memory_peak_gib"] <= r["default_peak_gib"]  # tiny has 2 blocks: both resident
