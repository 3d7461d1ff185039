"""DiT export: streamed from a checkpoint file, traced on meta, matches torch in onnxruntime."""
import hashlib

import numpy as np
import onnx
import pytest
import torch
from safetensors.torch import save_file

from sama_rt.export.dit import export_dit
from sama_rt.export.manifest import read_manifest, write_manifest
from sama_rt.export.options import ExportOptions
from sama_rt.export.spec import ShapeBuckets
from sama_rt.models.dit import DiTConfig, build_dit, load_dit, sinusoid_embedding
from sama_rt.models.rope import rope_tables
from tests.export.conftest import session
from tests.golden import golden_json, golden_path, golden_tensors

# float32 graph vs float32 torch: only the op order differs (ORT's GEMMs and softmax),
# ~7e-6 observed on outputs of magnitude ~3 after two blocks. 3e-5 is 4x that and far
# below the effect of any real mistake (a wrong RoPE pair or anchor row moves outputs > 1e-2).
ATOL = 3e-5

# Latent grids 4x6 and 8x4 (patch grids 2x3 and 4x2), 2..5 latent frames.
BUCKETS = ShapeBuckets(frames=(5, 17), resolutions=((32, 48), (64, 32)))
# Two points that differ in every dynamic dimension (a static export fails the second).
POINTS = [
    {"batch": 1, "grid_frames": 2, "grid_height": 2, "grid_width": 3},
    {"batch": 2, "grid_frames": 5, "grid_height": 4, "grid_width": 2},
]


def _reference(model, inputs, timesteps):
    with torch.no_grad():
        return model(inputs["latents"], timesteps, inputs["context"], inputs["source_latents"], inputs["semantic_latents"])


def _check_parity(record, model, seed=0):
    sess = session(record.graph.onnx_path)
    for point in POINTS:
        inputs = record.spec.sample_inputs(point, torch.float32, seed=seed)
        timesteps = torch.linspace(990.0, 250.0, point["batch"])
        # The host's contract: the sinusoid of the timestep in float64, as SamaDiT.embed_time.
        inputs["time_sinusoid"] = sinusoid_embedding(model.config.freq_dim, timesteps)
        got = sess.run(None, {k: v.numpy() for k, v in inputs.items()})
        want = _reference(model, inputs, timesteps)
        for name, g, w in zip(record.spec.output_names, got, want):
            assert g.shape == tuple(w.shape), name
            np.testing.assert_allclose(g, w.numpy(), atol=ATOL, rtol=0, err_msg=f"{name} at {point}")


@pytest.fixture(scope="module")
def plugin_export(tmp_path_factory):
    """The golden tiny DiT, streamed from its safetensors file like the 14B shards."""
    tmp = tmp_path_factory.mktemp("dit")
    ckpt = golden_path("tiny_dit_weights.safetensors")
    cfg = DiTConfig.from_dict(golden_json("tiny_dit.json")["config"])
    options = ExportOptions(out_dir=tmp / "onnx", dtype="fp32", buckets=BUCKETS)
    record = export_dit(options, [ckpt], config=cfg).verify()
    return record, load_dit(ckpt, config=cfg, dtype=torch.float32), options


def test_plugin_graph_matches_torch_at_two_shapes(plugin_export):
    record, model, _ = plugin_export
    assert record.checker == "ok"
    assert record.lint.ok, record.lint.errors
    assert record.lint.plugin_nodes == model.config.num_layers
    _check_parity(record, model)


def test_graph_matches_official_golden_outputs(plugin_export):
    """onnxruntime on the exported graph against the official implementation's tensors."""
    record, model, _ = plugin_export
    g = golden_tensors("tiny_dit_io.safetensors")
    _, _, frames, height, width = g["latents"].shape
    cos, sin = rope_tables(frames, height // 2, width // 2, model.config.head_dim)
    feeds = {
        "latents": g["latents"], "source_latents": g["source_latents"], "semantic_latents": g["semantic_latents"],
        "context": g["context"], "time_sinusoid": sinusoid_embedding(model.config.freq_dim, g["timestep"]),
        "rope_cos": cos, "rope_sin": sin,
    }
    noise_pred, semantic_pred = session(record.graph.onnx_path).run(None, {k: v.numpy() for k, v in feeds.items()})
    # Same tolerance as the torch model's own golden test (tests/models/test_dit.py).
    np.testing.assert_allclose(noise_pred, g["noise_pred"].numpy(), atol=2e-5, rtol=0)
    np.testing.assert_allclose(semantic_pred, g["semantic_pred"].numpy(), atol=2e-5, rtol=0)


def test_graph_names_and_weights(plugin_export):
    record, model, options = plugin_export
    proto = onnx.load(str(record.graph.onnx_path), load_external_data=False)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims["latents"] == ["batch", 16, "latent_frames", "latent_height", "latent_width"]
    assert dims["rope_cos"] == ["video_tokens", 24]
    # Refit needs every weight under its state-dict name, none merged or renamed.
    names = {t.name for t in proto.graph.initializer}
    assert set(model.state_dict()) <= names
    node = next(n for n in proto.graph.node if n.op_type == "AnchorAttention")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["num_anchor"] == 65 and attrs["num_heads"] == 2 and attrs["head_dim"] == 48
    assert abs(attrs["scale"] - 48 ** -0.5) < 1e-7
    data = record.graph.data_path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == record.graph.weights_sha256
    assert len(data) >= sum(t.numel() * 4 for t in model.state_dict().values()) * 0.99

    manifest = read_manifest(write_manifest(options, [record], with_polygraphy=False).parent)
    entry = manifest["graphs"]["dit"]
    assert entry["weights_sha256"] == record.graph.weights_sha256
    assert entry["profile"]["latents"]["max"] == [2, 16, 5, 8, 6]
    assert entry["inputs"][0] == {"name": "latents", "dtype": "float32",
                                  "shape": ["batch", 16, "latent_frames", "latent_height", "latent_width"]}
    assert entry["lint"]["ok"] and manifest["opset"] == 20 and manifest["attention"] == "plugin"


def test_plain_ops_variant(tmp_path):
    cfg = DiTConfig(dim=96, ffn_dim=192, num_heads=2, num_layers=1, text_dim=64)
    options = ExportOptions(out_dir=tmp_path, dtype="fp32", attention="plain", buckets=BUCKETS)
    record = export_dit(options, None, config=cfg, seed=5).verify()
    proto = onnx.load(str(record.graph.onnx_path), load_external_data=False)
    assert {n.domain for n in proto.graph.node} <= {""} and not proto.functions
    assert record.lint.ok and record.lint.plugin_nodes == 0
    _check_parity(record, build_dit(cfg, seed=5), seed=1)


def test_checkpoint_must_fit(tmp_path):
    cfg = DiTConfig.preset("tiny")
    state = build_dit(cfg, seed=0).state_dict()
    state.pop("head.head.bias")
    state["extra.weight"] = torch.zeros(3)
    ckpt = tmp_path / "broken.safetensors"
    save_file(state, str(ckpt))
    from sama_rt.models.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="head.head.bias") as err:
        export_dit(ExportOptions(out_dir=tmp_path / "onnx", dtype="fp32", buckets=BUCKETS), [ckpt], config=cfg)
    assert "extra.weight" in str(err.value)
    assert not (tmp_path / "onnx" / "dit.onnx").exists()
