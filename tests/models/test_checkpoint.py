"""Strict, sharded, overlaid checkpoint loading and its failure modes."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from sama_rt.models import CheckpointError, DiTConfig, load_dit
from sama_rt.models.checkpoint import CheckpointIndex
from tests.golden import golden_json, golden_path

SAMA_ONLY = ("segment_embedding.", "siglip_feat_mlp.", "semantic_head.")


@pytest.fixture(scope="module")
def weights():
    return load_file(str(golden_path("tiny_dit_weights.safetensors")))


@pytest.fixture(scope="module")
def cfg():
    return DiTConfig.from_dict(golden_json("tiny_dit.json")["config"])


def write_wan_dir(path, state, shards=2):
    """Wan2.1 layout: numbered shards + diffusion_pytorch_model.safetensors.index.json."""
    path.mkdir(parents=True, exist_ok=True)
    keys = sorted(state)
    weight_map = {}
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in keys[i::shards]}
        save_file(part, str(path / name))
        weight_map.update({k: name for k in part})
    (path / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return path


def test_sharded_base_plus_prefixed_overlay(tmp_path, weights, cfg):
    # The Wan2.1 base has no SAMA modules and an outdated value for a shared key; the SAMA
    # file (saved by the trainer with the `pipe.dit.` prefix) brings the SAMA modules and
    # overrides the shared key.
    base = {k: v for k, v in weights.items() if not k.startswith(SAMA_ONLY)}
    base["blocks.0.self_attn.q.weight"] = torch.zeros_like(base["blocks.0.self_attn.q.weight"])
    wan_dir = write_wan_dir(tmp_path / "wan", base)
    overlay = {"pipe.dit." + k: v for k, v in weights.items()
               if k.startswith(SAMA_ONLY) or k == "blocks.0.self_attn.q.weight"}
    save_file(overlay, str(tmp_path / "sama.safetensors"))

    dit = load_dit([wan_dir, tmp_path / "sama.safetensors"], config=None, dtype=torch.float32, num_heads=2)
    assert dit.config == cfg
    for k, v in dit.state_dict().items():
        torch.testing.assert_close(v, weights[k], atol=0, rtol=0, msg=k)
    assert all(not p.is_meta for p in dit.parameters())


def test_dtype_conversion(weights, cfg):
    dit = load_dit(golden_path("tiny_dit_weights.safetensors"), config=cfg, dtype=torch.bfloat16)
    assert {p.dtype for p in dit.parameters()} == {torch.bfloat16}


def test_missing_key_names_key(tmp_path, weights, cfg):
    partial = {k: v for k, v in weights.items() if not k.startswith("semantic_head.")}
    save_file(partial, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError) as e:
        load_dit(tmp_path / "w.safetensors", config=cfg, dtype=torch.float32)
    assert "missing: semantic_head.proj.weight" in str(e.value)
    assert "missing: semantic_head.norm.bias" in str(e.value)


def test_unexpected_key_names_key_and_file(tmp_path, weights, cfg):
    extra = dict(weights, **{"blocks.0.self_attn.k_img.weight": torch.zeros(96, 96)})
    save_file(extra, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError) as e:
        load_dit(tmp_path / "w.safetensors", config=cfg, dtype=torch.float32)
    assert "unexpected: blocks.0.self_attn.k_img.weight" in str(e.value)
    assert "w.safetensors" in str(e.value)


def test_shape_mismatch_and_integer_dtype(tmp_path, weights, cfg):
    bad = dict(weights)
    bad["head.head.weight"] = torch.zeros(32, 96)
    bad["segment_embedding.weight"] = torch.zeros(3, 96, dtype=torch.int32)
    save_file(bad, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError) as e:
        load_dit(tmp_path / "w.safetensors", config=cfg, dtype=torch.float32)
    msg = str(e.value)
    assert "shape: head.head.weight" in msg and "[32, 96]" in msg and "[64, 96]" in msg
    assert "dtype: segment_embedding.weight" in msg


def test_missing_shard_and_bad_index(tmp_path, weights):
    wan_dir = write_wan_dir(tmp_path / "wan", weights)
    shard = sorted(wan_dir.glob("*-00002-of-00002.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match="shard file\\(s\\) missing: .*00002-of-00002"):
        CheckpointIndex(wan_dir)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        CheckpointIndex(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="index.json"):
        CheckpointIndex(tmp_path / "empty")


def test_corrupt_safetensors(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        CheckpointIndex(tmp_path / "w.safetensors")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    torch.save({"weight": torch.zeros(2), "evil": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="not a plain tensor dict"):
        CheckpointIndex(tmp_path / "evil.pth")


def test_pth_wrapped_under_model_state(tmp_path, weights, cfg):
    torch.save({"model_state": dict(weights)}, tmp_path / "w.pth")
    dit = load_dit(tmp_path / "w.pth", config=cfg, dtype=torch.float32)
    torch.testing.assert_close(dit.head.head.weight, weights["head.head.weight"], atol=0, rtol=0)


def test_prefix_stripped_only_when_every_key_has_it(tmp_path, weights):
    mixed = {("model." + k if i % 2 else k): v for i, (k, v) in enumerate(sorted(weights.items()))}
    save_file(mixed, str(tmp_path / "w.safetensors"))
    index = CheckpointIndex(tmp_path / "w.safetensors")
    assert any(k.startswith("model.") for k in index.keys())
