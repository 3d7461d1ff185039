"""Calibration sets: recording, file round trip, and refusal of foreign files."""
import pytest
import torch
from safetensors.torch import save_file

from sama_rt.engines.calibration import (
    CalibrationRecorder, CalibrationSet, load_calibration_set, save_calibration_set,
)


def fake_dit(latents, timestep, context, source_latents, semantic_latents):
    return latents * 2, semantic_latents


def call(rec, f, seed):
    g = torch.Generator().manual_seed(seed)
    return rec(torch.randn(1, 16, f, 4, 6, generator=g), torch.tensor([900.0 - seed]), torch.randn(1, 512, 8, generator=g),
               torch.randn(1, 16, f, 4, 6, generator=g), torch.randn(1, 65, 1152, generator=g))


def test_recorder_passes_through_and_records(tmp_path):
    rec = CalibrationRecorder(fake_dit, stride=2, limit=2)
    outs = [call(rec, 2 + i % 2, i) for i in range(6)]
    assert len(rec.calibration) == 2 and rec.calls == 6  # calls 0 and 2 recorded, then the limit
    assert outs[1][0].shape == (1, 16, 3, 4, 6)
    path = tmp_path / "calib.safetensors"
    rec.calibration.note = "two shapes"
    save_calibration_set(rec.calibration, path)
    loaded = load_calibration_set(path)
    assert len(loaded) == 2 and loaded.note == "two shapes"
    for a, b in zip(loaded, rec.calibration):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)
    assert loaded.samples[1]["timestep"].tolist() == [898.0]


def test_foreign_and_empty_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        save_calibration_set(CalibrationSet(), tmp_path / "x.safetensors")
    save_file({"a": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a sama-rt calibration set"):
        load_calibration_set(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="stride"):
        CalibrationRecorder(fake_dit, stride=0)
