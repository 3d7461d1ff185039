"""The fast guided step equals the plain model calls (and the official loop)."""
import pytest
import torch

from sama_rt.guided import GuidedPredictor, real_context_length
from sama_rt.models import DiTConfig, build_dit, load_dit
from sama_rt.sampling import denoise, guided_velocity
from tests.golden import golden_path, golden_tensors


@pytest.fixture(scope="module")
def golden():
    return golden_tensors("tiny_dit_io.safetensors")


def test_fast_loop_matches_official_loop(golden):
    dit = load_dit(golden_path("tiny_dit_weights.safetensors"), config="tiny", dtype=torch.float32)
    predictor = GuidedPredictor(dit, golden["source_latents"], golden["context"], golden["negative_context"], 5.0)
    x, s = denoise(dit, golden["loop_noise"], golden["loop_semantic_noise"], golden["source_latents"],
                   golden["context"], golden["negative_context"], num_steps=3, predictor=predictor)
    # Same tolerance as the plain loop's golden test (CFG x5 amplification over 3 steps).
    torch.testing.assert_close(x, golden["loop_latents_out"], atol=5e-5, rtol=0)
    torch.testing.assert_close(s, golden["loop_semantic_out"], atol=5e-5, rtol=0)


@pytest.mark.parametrize("real,neg_real,cfg", [(11, 4, 5.0), (512, 3, 5.0), (0, 0, 5.0), (7, 7, 1.0)])
def test_step_equals_plain_model_calls(real, neg_real, cfg):
    dit = build_dit(DiTConfig.preset("tiny"), seed=1)
    gen = torch.Generator().manual_seed(0)
    x, src = torch.randn(1, 16, 2, 4, 6, generator=gen), torch.randn(1, 16, 2, 4, 6, generator=gen)
    sem = torch.randn(1, 65, 1152, generator=gen)
    ctx, neg = torch.zeros(1, 512, 64), torch.zeros(1, 512, 64)
    ctx[:, :real] = torch.randn(1, real, 64, generator=gen)
    neg[:, :neg_real] = torch.randn(1, neg_real, 64, generator=gen)
    t = torch.tensor([800.0])
    fast = GuidedPredictor(dit, src, ctx, neg, cfg)(x, sem, t)
    with torch.no_grad():
        plain = guided_velocity(dit, x, sem, t, src, ctx, neg, cfg)
    # float32, same math reordered (padding collapsed into one key with a log bias): ~5e-6
    # per forward on outputs of magnitude ~5; the guided result 5*pos - 4*neg adds those
    # errors up to 9x, so 1e-4.
    torch.testing.assert_close(fast.latents, plain.latents, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.semantic, plain.semantic, atol=1e-4, rtol=0)


def test_real_context_length():
    ctx = torch.zeros(2, 512, 8)
    ctx[0, :5] = 1
    ctx[1, :9] = 1
    assert real_context_length(ctx) == 9
    assert real_context_length(torch.zeros(1, 512, 8)) == 0
