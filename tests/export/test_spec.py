"""Specs: named dimensions, profiles from buckets, and the checks that keep them consistent."""
import pytest
import torch

from sama_rt.export.spec import (
    AxisRange, ShapeBuckets, dit_ranges, dit_spec, text_spec, trace_point, vae_spec,
)
from sama_rt.models.dit import DiTConfig
from sama_rt.models.text_encoder import TextEncoderConfig
from sama_rt.models.vae import VAEConfig, WanVAE


def test_dit_profile_from_release_buckets():
    cfg = DiTConfig.preset("sama-14b")
    buckets = ShapeBuckets(frames=(49, 81), resolutions=((480, 832), (832, 480)))
    ranges = dit_ranges(cfg, buckets)
    profile = dit_spec(cfg).profile(ranges)
    # 49 frames -> 13 latent frames, 81 -> 21; 480x832 -> 60x104 latents (30x52 patches).
    assert profile["latents"]["min"] == [1, 16, 13, 60, 60]
    assert profile["latents"]["max"] == [2, 16, 21, 104, 104]
    assert profile["latents"]["opt"] == [2, 16, 21, 60, 104]
    assert profile["rope_cos"]["opt"] == [21 * 30 * 52, 64]
    assert profile["rope_cos"]["max"] == [21 * 52 * 52, 64]
    assert profile["context"]["max"] == [2, 512, 4096]
    assert profile["semantic_latents"]["min"] == [1, 65, 1152]


def test_dynamic_shapes_tie_multiples_to_axes():
    cfg = DiTConfig.preset("tiny")
    spec = dit_spec(cfg)
    ranges = {"batch": AxisRange(1, 2, 2), "grid_frames": AxisRange(1, 2, 4),
              "grid_height": AxisRange(1, 2, 4), "grid_width": AxisRange(1, 3, 5)}
    dyn = spec.torch_dynamic_shapes(ranges)
    # latents' height is 2 * grid_height: derived from the patch-grid symbol, not a new one.
    assert dyn["latents"][3].__name__ == "2*grid_height" and dyn["latents"][3].root.__name__ == "grid_height"
    assert dyn["latents"][2] is dyn["source_latents"][2]  # patch 1 in time: the axis itself
    assert set(dyn["latents"]) == {0, 2, 3, 4} and set(dyn["rope_cos"]) == {0}
    assert dyn["rope_cos"][0].min == 1 and dyn["rope_cos"][0].max == 4 * 4 * 5
    # An axis pinned by the buckets still gets a symbol (torch.export refuses min == max).
    pinned = spec.torch_dynamic_shapes({**ranges, "grid_height": AxisRange(30, 30, 30)})
    assert (pinned["latents"][3].root.min, pinned["latents"][3].root.max) == (30, 31)


def test_samples_follow_the_spec_and_avoid_size_one():
    cfg = DiTConfig.preset("tiny")
    spec = dit_spec(cfg)
    ranges = {"batch": AxisRange(1, 2, 2), "grid_frames": AxisRange(1, 1, 3),
              "grid_height": AxisRange(2, 2, 3), "grid_width": AxisRange(1, 2, 3)}
    point = trace_point(ranges, spec.axes)
    assert min(point.values()) >= 2  # a size-1 trace would specialise the dim away
    inputs = spec.sample_inputs(point, torch.float32)
    assert inputs["latents"].shape == (2, 16, 2, 4, 4)
    assert inputs["rope_cos"].shape == (2 * 2 * 2, 24)
    with pytest.raises(ValueError, match="room for size 2"):
        trace_point({"batch": AxisRange(1, 1, 1)}, ("batch",))


def test_text_and_vae_specs():
    t = text_spec(TextEncoderConfig.preset("tiny"))
    inputs = t.sample_inputs({"batch": 2}, torch.float32)
    mask = inputs["mask"]
    assert mask.dtype == torch.int64 and mask[:, 0].all() and not mask[:, -1].any()
    assert ((inputs["ids"] == 0) == (mask == 0)).all()  # pad id 0 exactly where masked

    vae = WanVAE(VAEConfig(dim=4, dim_mult=(1, 2), num_res_blocks=1, temporal_downsample=(True,)))
    first, chunk = vae_spec(vae, "decoder_first"), vae_spec(vae, "decoder_chunk")
    assert [t.name for t in first.inputs] == ["latent"]
    # The chunk step takes back exactly what the first step produced, in order.
    assert [t.shape for t in chunk.inputs[1:]] == [t.shape for t in first.outputs[1:]]
    assert [t.name for t in chunk.inputs[1:]] == [t.name.replace("out", "in") for t in chunk.outputs[1:]]
    shapes = chunk.shapes({"latent_height": 3, "latent_width": 5})
    assert shapes["frames"] == (1, 3, 2, 6, 10)  # temporal x2, spatial x2 in this config


def test_buckets_are_validated():
    with pytest.raises(ValueError, match="4k\\+1"):
        ShapeBuckets(frames=(48,))
    with pytest.raises(ValueError, match="multiples of 16"):
        ShapeBuckets(resolutions=((480, 830),))
    b = ShapeBuckets.parse("49, 81", "480x832,832x480")
    assert b.latent_frames() == [13, 21] and b.latent_sizes() == [(60, 104), (104, 60)]
    with pytest.raises(ValueError):
        ShapeBuckets.parse("49", "480")
    with pytest.raises(ValueError):
        AxisRange(3, 2, 4)
