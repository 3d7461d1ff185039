"""`sama-rt build-engines` argument handling (the build itself needs TensorRT: test_tensorrt.py)."""
import argparse

import pytest

from sama_rt.engines import command
from sama_rt.engines.config import DimRange, Precision
from sama_rt.engines.tensorrt_adapter import tensorrt_status


def parse(*argv):
    p = argparse.ArgumentParser()
    command.add_arguments(p)
    return p.parse_args(list(argv))


def test_build_config_and_rebuild_command():
    args = parse("--onnx-dir", "onnx", "--out", "eng", "--precision", "int8", "--calibration", "c.safetensors",
                 "--frames", "49,81", "--resolution", "480x832")
    cfg = command.build_config_from_args(args, {})
    assert cfg.precision is Precision.INT8 and cfg.quant.smoothquant_alpha == 0.5 and cfg.weight_stripped
    dims = cfg.dim_overrides
    assert dims["grid_frames"] == DimRange(13, 21, 21)  # (49-1)/4+1 .. (81-1)/4+1 latent frames
    assert dims["grid_height"] == DimRange(30, 30, 30) and dims["grid_width"] == DimRange(52, 52, 52)
    assert dims["latent_height"] == DimRange(60, 60, 60)
    assert command.rebuild_command(args) == (
        "sama-rt build-engines --onnx-dir onnx --out eng --precision int8 --calibration c.safetensors "
        "--frames 49,81 --resolution 480x832"
    )


@pytest.mark.skipif(tensorrt_status()[0], reason="TensorRT is available here")
def test_run_without_tensorrt_says_what_to_install(tmp_path, caplog):
    args = parse("--onnx-dir", str(tmp_path), "--out", str(tmp_path / "e"))
    assert command.run(args) == 2
    assert "tensorrt" in caplog.text.lower() and "install" in caplog.text.lower()
