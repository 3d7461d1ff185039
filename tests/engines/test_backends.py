"""Backend selection (pure) and the onnxruntime DiT backend against the torch model."""
import pytest
import torch

from sama_rt.engines.backends import (
    Backend, BackendSupport, OnnxRuntimeDiT, dit_graph_inputs, probe_backends, select_backend,
)
from sama_rt.engines.calibration import CALIBRATION_INPUTS, CalibrationRecorder
from sama_rt.engines.config import QuantConfig
from sama_rt.engines.quantize import collect_amax, find_linear_sites, quantize_model
from sama_rt.models import DiTConfig, build_dit
from sama_rt.sampling import denoise

ALL = {b: BackendSupport(b, True, "here") for b in Backend}
NO_TRT = dict(ALL, **{Backend.TENSORRT: BackendSupport(Backend.TENSORRT, False, "no tensorrt")})


def test_select_backend():
    assert select_backend("auto", ALL, have_engines=True) is Backend.TENSORRT
    assert select_backend("auto", ALL, have_engines=False) is Backend.TORCH
    assert select_backend("auto", NO_TRT, have_engines=True) is Backend.TORCH
    assert select_backend("onnxruntime", ALL, have_onnx=True) is Backend.ONNXRUNTIME
    with pytest.raises(RuntimeError, match="no tensorrt"):
        select_backend("tensorrt", NO_TRT, have_engines=True)
    with pytest.raises(RuntimeError, match="build-engines"):
        select_backend("tensorrt", ALL, have_engines=False)
    with pytest.raises(RuntimeError, match="sama-rt export"):
        select_backend("onnxruntime", ALL, have_onnx=False)
    with pytest.raises(ValueError, match="valid: torch, onnxruntime, tensorrt, auto"):
        select_backend("tensorflow", ALL)


def test_probe_reports_every_backend_with_a_reason():
    support = probe_backends()
    assert set(support) == set(Backend) and support[Backend.TORCH].available
    assert all(s.reason for s in support.values())


def test_graph_inputs_round_the_timestep_like_the_model():
    cfg = DiTConfig.preset("tiny")
    lat = torch.zeros(1, 16, 2, 4, 6)
    f32 = dit_graph_inputs(cfg, lat, torch.tensor([909.09]), torch.zeros(1, 512, 64), lat, torch.zeros(1, 65, 1152))
    bf16 = dit_graph_inputs(cfg, lat, torch.tensor([909.09]), torch.zeros(1, 512, 64), lat, torch.zeros(1, 65, 1152),
                            timestep_dtype=torch.bfloat16)
    model = build_dit(cfg, dtype=torch.bfloat16)
    t_model, _ = model.embed_time(torch.tensor([909.09]), 1)
    t_graph = model.time_embedding(bf16["time_sinusoid"].to(torch.bfloat16)).float()
    torch.testing.assert_close(t_graph, t_model, atol=0, rtol=0)
    assert not torch.equal(f32["time_sinusoid"], bf16["time_sinusoid"])
    assert f32["rope_cos"].shape == (2 * 2 * 3, cfg.head_dim // 2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.engines.dit_graph import export_dit_graph

    model = build_dit(DiTConfig.preset("tiny"), seed=0)
    path = export_dit_graph(model, tmp_path_factory.mktemp("onnx") / "dit.onnx")
    return model, path


def inputs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    b = shape[0]
    return (torch.randn(shape, generator=g), torch.tensor([937.5]), torch.randn(b, 512, 64, generator=g),
            torch.randn(shape, generator=g), torch.randn(b, 65, 1152, generator=g))


@pytest.mark.parametrize("shape", [(1, 16, 3, 4, 6), (2, 16, 4, 8, 8)])
def test_onnxruntime_dit_matches_torch(tiny, shape):
    model, path = tiny
    backend = OnnxRuntimeDiT(path, model.config)
    args = inputs(shape, 0)
    with torch.no_grad():
        ref = model(*args)
    out = backend(*args)
    # fp32 graph vs fp32 torch: only operation order differs (measured 3e-6 on outputs ~3).
    for o, r in zip(out, ref):
        torch.testing.assert_close(o, r, atol=2e-5, rtol=0)


def test_onnxruntime_backend_runs_the_denoise_loop_and_fp8_graph(tiny, tmp_path):
    """Calibrate on a recorded loop, quantize to fp8, run the loop on the Q/DQ graph."""
    import onnx

    model, path = tiny
    fp32 = OnnxRuntimeDiT(path, model.config)
    noise, _, ctx, src, sem = inputs((1, 16, 3, 4, 6), 1)
    loop = dict(noise=noise, semantic_noise=sem, source_latents=src, context=ctx, negative_context=torch.zeros_like(ctx),
                num_steps=2, cfg_scale=5.0)
    recorder = CalibrationRecorder(model)
    ref, _ = denoise(recorder, **loop)
    assert len(recorder.calibration) == 2  # one batch-2 CFG call per step
    out, _ = denoise(fp32, **loop)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)

    graph = onnx.load(str(path))
    quant = QuantConfig.default("fp8")
    feeds = [{k: v.numpy() for k, v in dit_graph_inputs(model.config, *(s[k] for k in CALIBRATION_INPUTS)).items()}
             for s in recorder.calibration]
    sites = find_linear_sites(graph, quant)
    assert len(sites) == 8 * model.config.num_layers
    qpath = tmp_path / "dit.fp8.onnx"
    onnx.save(quantize_model(graph, quant, collect_amax(graph, [s.activation for s in sites], feeds)), str(qpath))
    q_out, _ = denoise(OnnxRuntimeDiT(qpath, model.config), **loop)
    cos = torch.nn.functional.cosine_similarity(q_out.flatten(), ref.flatten(), dim=0)
    # fp8 E4M3 (~3% per GEMM) over 2 steps of a 2-layer model: measured cosine 0.9995.
    assert 0.995 < cos < 1.0 - 1e-7
