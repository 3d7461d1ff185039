"""`sama-rt export` arguments -> options -> graphs + manifest, and its error paths."""
import argparse
import json
import shutil

import pytest
import torch

from sama_rt.export import command
from sama_rt.export.manifest import read_manifest
from sama_rt.export.options import ExportOptions


def _args(*argv):
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_random_tiny_dit_export_in_bf16(tmp_path, capsys):
    """The 14B path's defaults (bf16, opset 22) on the tiny config: checker, lint, manifest."""
    import onnx

    out = tmp_path / "onnx"
    code = command.run(_args("--random-weights", "--config", "tiny", "--models", "dit",
                             "--frames", "5,9", "--resolution", "32x48", "--out", str(out), "--json"))
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["graphs"]["dit"]["lint_ok"]
    manifest = read_manifest(out)
    assert manifest["opset"] == 22 and manifest["dtype"] == "bf16" and manifest["attention"] == "plugin"
    entry = manifest["graphs"]["dit"]
    assert entry["checker"] == "ok" and entry["file"] == "dit.onnx" and entry["data"] == "dit.onnx.data"
    # One resolution pins the latent size; frames 5..9 -> 2..3 latent frames.
    assert entry["profile"]["latents"] == {
        "min": [1, 16, 2, 4, 6], "opt": [2, 16, 3, 4, 6], "max": [2, 16, 3, 4, 6]}
    assert entry["inputs"][0]["dtype"] == "bfloat16" and entry["outputs"][0]["dtype"] == "float32"
    assert entry["config"]["dim"] == 96 and manifest["config"]["dit"]["patch_size"] == [1, 2, 2]
    assert entry["custom_ops"] == ["sama_rt::AnchorAttention"] and len(entry["weights_sha256"]) == 64
    # The engine build reads this manifest: its parser must see the same graph.
    from sama_rt.engines.plan import parse_manifest

    dit = parse_manifest(manifest)["dit"]
    assert dit.onnx == "dit.onnx" and dit.custom_ops == ("sama_rt::AnchorAttention",)
    assert dict(dit.dims)["grid_frames"].max == 3 and ("latent_height", "grid_height", 2) in dit.multiples
    assert dit.weights_sha256 == entry["weights_sha256"] and dit.graph_sha256 == entry["graph_sha256"]
    if shutil.which("polygraphy"):  # optional ([export] extra): its summary is stored
        assert "ONNX Model" in entry["polygraphy"] and "Graph Input" in entry["polygraphy"]
    else:
        assert entry["polygraphy"] is None
    proto = onnx.load(str(out / "dit.onnx"), load_external_data=False)
    weight = next(t for t in proto.graph.initializer if t.name == "blocks.0.self_attn.q.weight")
    assert weight.data_type == onnx.TensorProto.BFLOAT16
    # A second export into the same directory must not overwrite the graphs.
    assert command.run(_args("--random-weights", "--config", "tiny", "--models", "dit", "--out", str(out))) == 2


@pytest.mark.parametrize("argv,message", [
    (("--random-weights", "--models", "text"), "needs --config"),
    (("--models", "dit"), "--wan-dir is required"),
    (("--wan-dir", "/nonexistent/wan", "--models", "vae"), "does not exist"),
    (("--random-weights", "--config", "tiny", "--models", "unet"), "unknown model"),
    (("--random-weights", "--config", "tiny", "--frames", "48"), "4k+1"),
    (("--random-weights", "--config", "tiny", "--dtype", "bf16", "--opset", "20"), "opset >= 22"),
])
def test_bad_arguments_fail_with_a_reason(tmp_path, caplog, argv, message):
    assert command.run(_args(*argv, "--out", str(tmp_path))) == 2
    assert message in caplog.text
    assert not list(tmp_path.iterdir())


def test_options_defaults():
    assert ExportOptions("x").opset == 22  # bf16, the release dtype, needs Conv-22
    assert ExportOptions("x", dtype="fp16").opset == 20
    assert ExportOptions("x").torch_dtype == torch.bfloat16
