"""Engine artifacts: round trip, and refusal of engines that do not fit the current setup."""
import json

import pytest

from sama_rt.engines.artifact import StaleEngineError, load_artifact, write_artifact
from sama_rt.engines.config import BuildConfig
from sama_rt.engines.plan import make_build_plan
from tests.engines.test_plan import H100, TRT, manifest

REBUILD = "sama-rt build-engines --onnx-dir onnx --out engines --precision bf16"


def write(tmp_path, cfg=BuildConfig(), blob=b"\x01engine-bytes"):
    plan = make_build_plan(manifest(), cfg, TRT, H100).engine("dit")
    return plan, write_artifact(tmp_path, plan, blob, REBUILD)


def test_round_trip(tmp_path):
    plan, _ = write(tmp_path)
    art = load_artifact(tmp_path, "dit", TRT, H100, expected_key=plan.cache_key)
    assert art.read_plan_bytes() == b"\x01engine-bytes"
    assert art.cache_key == plan.cache_key
    assert art.plan["precision"] == "bf16"
    assert json.loads((tmp_path / "dit.json").read_text())["rebuild_command"] == REBUILD


@pytest.mark.parametrize(
    "kwargs, why",
    [
        (dict(trt_version="10.14.1.48"), "TensorRT"),
        (dict(compute_capability=(8, 9)), "compute capability 9.0"),
        (dict(expected_key="0" * 64), "planned key"),
    ],
)
def test_stale_engine_is_refused_with_the_rebuild_command(tmp_path, kwargs, why):
    write(tmp_path)
    args = dict(trt_version=TRT, compute_capability=H100)
    args.update(kwargs)
    with pytest.raises(StaleEngineError, match=why) as err:
        load_artifact(tmp_path, "dit", **args)
    assert REBUILD in str(err.value)


def test_weights_are_checked_for_weight_bound_engines(tmp_path):
    write(tmp_path, BuildConfig(precision="fp8"))
    load_artifact(tmp_path, "dit", TRT, H100, weights_sha256="w" * 64)
    with pytest.raises(StaleEngineError, match="current weights") as err:
        load_artifact(tmp_path, "dit", TRT, H100, weights_sha256="v" * 64)
    assert REBUILD in str(err.value)
    with pytest.raises(StaleEngineError, match="no weights sha256"):
        load_artifact(tmp_path, "dit", TRT, H100)


def test_refitted_engine_accepts_other_weights(tmp_path):
    write(tmp_path, BuildConfig(weight_stripped=True))
    load_artifact(tmp_path, "dit", TRT, H100, weights_sha256="v" * 64)


def test_corrupt_plan_and_missing_engine(tmp_path):
    write(tmp_path)
    (tmp_path / "dit.plan").write_bytes(b"truncated")
    art = load_artifact(tmp_path, "dit", TRT, H100)
    with pytest.raises(StaleEngineError, match="corrupt"):
        art.read_plan_bytes()
    with pytest.raises(FileNotFoundError, match="build-engines"):
        load_artifact(tmp_path, "vae_decoder", TRT, H100)
