"""The Wan2.1 VAE against the official implementation's golden tensors, plus its chunk
steps, cache, tiling, strict loading and input checks."""
import pytest
import torch

from sama_rt.models.checkpoint import CheckpointError
from sama_rt.models.vae import (
    CausalCache, VAEConfig, blend_tiles, load_vae, tile_spans,
)
from tests.golden import golden_json, golden_path, golden_tensors

TILE, STRIDE = (2, 4), (1, 2)  # latent units, as the golden tiled runs

# Tolerances. Same float32 ops in the same order as the official code: on the machine the
# goldens were checked on, every output matches bit for bit. A different CPU / oneDNN
# may pick other conv algorithms and change float32 summation order; changing the order of
# a single 1x1x1 conv moves decoded pixels by ~3.4e-6. atol 1e-5 leaves ~3x margin while
# still catching real model differences: a latent mean off by 1e-4 in one channel moves
# latents by 3.5e-5 and pixels by 6e-5. Latents are O(1) and pixels lie in [-1,1], so an
# absolute bound is the meaningful one (rtol 0).
ATOL = 1e-5


@pytest.fixture(scope="module")
def golden():
    return golden_tensors("tiny_vae_io.safetensors")


@pytest.fixture(scope="module")
def vae():
    return load_vae(golden_path("tiny_vae.pth"))


# -- golden parity -----------------------------------------------------------------------
def test_encode_matches_golden(vae, golden):
    latents = vae.encode(golden["video"])
    assert latents.shape == (1, 16, 2, 4, 6)
    torch.testing.assert_close(latents, golden["latents"], atol=ATOL, rtol=0)


def test_decode_of_golden_latents_matches_recon(vae, golden):
    torch.testing.assert_close(vae.decode(golden["latents"]), golden["recon"], atol=ATOL, rtol=0)


def test_decode_matches_golden(vae, golden):
    video = vae.decode(golden["z"])
    assert video.shape == (1, 3, 5, 32, 48)
    assert video.abs().max() <= 1.0  # clamped
    torch.testing.assert_close(video, golden["decoded"], atol=ATOL, rtol=0)


def test_tiled_encode_matches_golden(vae, golden):
    latents = vae.encode(golden["video"], tiled=True, tile_size=TILE, tile_stride=STRIDE)
    torch.testing.assert_close(latents, golden["latents_tiled"], atol=ATOL, rtol=0)
    # At this size tiling changes the result a lot; the test must tell the two apart.
    assert (latents - golden["latents"]).abs().max() > 100 * ATOL


def test_tiled_decode_matches_golden(vae, golden):
    video = vae.decode(golden["z"], tiled=True, tile_size=TILE, tile_stride=STRIDE)
    torch.testing.assert_close(video, golden["decoded_tiled"], atol=ATOL, rtol=0)
    assert (video - golden["decoded"]).abs().max() > 100 * ATOL


def test_bfloat16_weights_run_in_bfloat16(golden):
    vae16 = load_vae(golden_path("tiny_vae.pth"), dtype=torch.bfloat16)
    video = vae16.decode(golden["z"])
    assert video.dtype == torch.bfloat16
    # bf16 keeps 8 mantissa bits (eps 3.9e-3); through ~40 layers the measured max error
    # is 0.06. 0.15 catches a broken dtype path without flaking on rounding.
    assert (video.float() - golden["decoded"]).abs().max() < 0.15


# -- chunk steps and the cache -------------------------------------------------------------
def test_chunk_steps_reproduce_whole_video(vae, golden):
    video, z = golden["video"], golden["z"]
    enc = vae.new_encoder_cache()
    latents = torch.cat([vae.encode_chunk(video[:, :, :1], enc), vae.encode_chunk(video[:, :, 1:5], enc)], dim=2)
    # Same math as encode(); only the 1x1x1 conv's rounding may differ (applied per chunk).
    torch.testing.assert_close(latents, golden["latents"], atol=ATOL, rtol=0)

    dec = vae.new_decoder_cache()
    first = vae.decode_chunk(z[:, :, :1], dec)
    rest = vae.decode_chunk(z[:, :, 1:2], dec)
    assert first.shape[2] == 1 and rest.shape[2] == 4
    torch.testing.assert_close(torch.cat([first, rest], 2).clamp(-1, 1), golden["decoded"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("side", ["encoder", "decoder"])
def test_cache_flattens_to_fixed_shapes_after_first_chunk(vae, side):
    """What a chunk-step exporter relies on: after the first chunk every slot is a tensor,
    the shapes stay fixed, and a cache rebuilt from its tensors continues identically."""
    g = torch.Generator().manual_seed(0)
    if side == "encoder":
        new_cache, step = vae.new_encoder_cache, vae.encode_chunk
        chunks = [torch.randn(1, 3, n, 16, 24, generator=g) for n in (1, 4, 4, 4)]
    else:
        new_cache, step = vae.new_decoder_cache, vae.decode_chunk
        chunks = [torch.randn(1, 16, 1, 2, 3, generator=g) for _ in range(4)]
    cache = new_cache()
    assert cache.is_empty and len(cache) > 0
    with pytest.raises(RuntimeError, match="first chunk"):
        cache.tensors()
    step(chunks[0], cache)
    shapes = [t.shape for t in cache.tensors()]
    step(chunks[1], cache)
    assert [t.shape for t in cache.tensors()] == shapes

    rebuilt = CausalCache.from_tensors([t.clone() for t in cache.tensors()])
    for chunk in chunks[2:]:
        assert torch.equal(step(chunk, cache), step(chunk, rebuilt))
    assert [t.shape for t in rebuilt.tensors()] == shapes


def test_chunk_steps_reject_misuse(vae):
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 16, 16\)"):
        vae.encode_chunk(torch.zeros(1, 3, 4, 16, 16), vae.new_encoder_cache())  # first chunk is 1 frame
    with pytest.raises(ValueError, match=r"\(1, 16, 2, 2, 2\)"):
        vae.decode_chunk(torch.zeros(1, 16, 2, 2, 2), vae.new_decoder_cache())
    with pytest.raises(RuntimeError, match="does not belong"):
        vae.decode_chunk(torch.zeros(1, 16, 1, 2, 2), vae.new_encoder_cache())


# -- tiling -------------------------------------------------------------------------------
def test_tile_spans_stop_once_a_tile_reaches_the_end():
    assert tile_spans(4, 2, 1) == [(0, 2), (1, 3), (2, 4)]
    assert tile_spans(6, 4, 2) == [(0, 4), (2, 6)]
    assert tile_spans(7, 4, 2) == [(0, 4), (2, 6), (4, 7)]
    assert tile_spans(3, 30, 15) == [(0, 3)]


@pytest.mark.parametrize("size,stride", [((2, 4), (1, 2)), ((3, 3), (3, 3)), ((2, 5), (2, 3)), ((9, 9), (4, 4))])
def test_blending_a_pointwise_map_is_exact(size, stride):
    """Blend weights are normalised, so tiling a per-pixel function changes nothing;
    including stride == size (no overlap) and tiles larger than the input."""
    x = torch.randn(2, 3, 5, 5 * 8, 7 * 8)
    out = blend_tiles(x, lambda t: 2 * t - 1, size, stride, in_per_latent=8, out_per_latent=8, grid=(5, 7))
    torch.testing.assert_close(out, 2 * x - 1, atol=1e-6, rtol=1e-6)


def test_tile_stride_larger_than_size_is_rejected(vae, golden):
    with pytest.raises(ValueError, match="stride"):
        vae.decode(golden["z"], tiled=True, tile_size=(2, 2), tile_stride=(3, 1))


# -- input checks ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 5, 32, 48), (1, 3, 4, 32, 48), (1, 3, 5, 30, 48), (1, 4, 5, 32, 48)])
def test_encode_rejects_bad_shapes(vae, shape):
    with pytest.raises(ValueError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
        vae.encode(torch.zeros(shape))


@pytest.mark.parametrize("shape", [(16, 2, 4, 6), (1, 8, 2, 4, 6), (1, 16, 0, 4, 6)])
def test_decode_rejects_bad_shapes(vae, shape):
    with pytest.raises(ValueError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
        vae.decode(torch.zeros(shape))


# -- config and loading ----------------------------------------------------------------------
def test_config_from_golden_json_is_the_tiny_preset():
    cfg = VAEConfig.from_dict(golden_json("tiny_vae.json")["config"])  # spells temperal_downsample
    assert cfg == VAEConfig.preset("tiny")
    assert VAEConfig.preset("sama-14b").dim == 96
    assert (cfg.spatial_factor, cfg.temporal_factor) == (8, 4)
    with pytest.raises(ValueError, match="unknown VAEConfig keys"):
        VAEConfig.from_dict({"dim": 8, "z_channels": 16})
    with pytest.raises(ValueError, match="valid: sama-14b, tiny"):
        VAEConfig.preset("huge")
    with pytest.raises(ValueError, match="temporal_downsample"):
        VAEConfig(temporal_downsample=(True,))


def test_load_infers_dim_from_checkpoint(vae):
    assert vae.config == VAEConfig.preset("tiny")
    assert vae.encoder.conv1.weight.shape == (8, 3, 3, 3, 3)
    assert not any(t.is_meta for t in vae.state_dict().values())


def test_load_model_state_wrapped_checkpoint(tmp_path, vae):
    sd = torch.load(golden_path("tiny_vae.pth"), weights_only=True)
    torch.save({"model_state": sd}, tmp_path / "Wan2.1_VAE.pth")
    wrapped = load_vae(tmp_path / "Wan2.1_VAE.pth")
    assert wrapped.config == vae.config
    for key, value in vae.state_dict().items():
        assert torch.equal(wrapped.state_dict()[key], value), key


def test_load_is_strict(tmp_path):
    sd = torch.load(golden_path("tiny_vae.pth"), weights_only=True)
    missing = {k: v for k, v in sd.items() if k != "decoder.head.2.bias"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing: decoder\.head\.2\.bias"):
        load_vae(tmp_path / "missing.pth")

    torch.save({**sd, "decoder.extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected: decoder\.extra\.weight"):
        load_vae(tmp_path / "extra.pth")

    with pytest.raises(CheckpointError, match=r"shape: decoder\.conv1\.weight .* is \[32, 16, 3, 3, 3\], model expects \[384, 16, 3, 3, 3\]"):
        load_vae(golden_path("tiny_vae.pth"), config="sama-14b")
