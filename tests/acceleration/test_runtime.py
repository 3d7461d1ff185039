"""RuntimeOptions (sama_rt.acceleration.runtime) and CUDA graphs: validation, the CLI flags,
the Editor applying them; the CUDA-graph replay against eager steps where a GPU exists."""
import subprocess
import sys

import pytest
import torch

from sama_rt.acceleration.cuda_graphs import CudaGraphPredictor
from sama_rt.acceleration.fp8_linear import Fp8Linear
from sama_rt.acceleration.runtime import RuntimeOptions, prepare_dit, wrap_predictor
from sama_rt.guided import GuidedPredictor
from sama_rt.models import DiTConfig, build_dit
from sama_rt.params import EditParams

from .test_approximations import _inputs

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")


def test_options_validate_and_describe():
    assert RuntimeOptions().is_default and RuntimeOptions().describe() == "default"
    assert RuntimeOptions(offload="BLOCKS").offload == "blocks"
    assert RuntimeOptions(fp8_linear=True, cuda_graphs=True).describe() == "fp8_linear, cuda_graphs"
    for name in ("fp8_linear", "compile_blocks", "cuda_graphs"):
        with pytest.raises(ValueError, match=f"offload='blocks' cannot be combined with {name}"):
            RuntimeOptions(offload="blocks", **{name: True})
    with pytest.raises(ValueError, match="unknown offload 'disk'"):
        RuntimeOptions(offload="disk")
    assert RuntimeOptions(offload="blocks").load_device("cuda") == torch.device("cpu")
    for name in ("compile_blocks", "cuda_graphs"):
        with pytest.raises(ValueError, match="CUDA only"):
            RuntimeOptions(**{name: True}).check_device("cpu")
    RuntimeOptions(fp8_linear=True).check_device("cpu")  # torch._scaled_mm runs on CPU too


def test_prepare_and_wrap_apply_the_options():
    dit = build_dit(DiTConfig.preset("tiny"), seed=0)
    prepare_dit(dit, "cpu", RuntimeOptions())
    assert not any(isinstance(m, Fp8Linear) for m in dit.modules())
    prepare_dit(dit, "cpu", RuntimeOptions(fp8_linear=True))
    assert sum(isinstance(m, Fp8Linear) for m in dit.modules()) == 16
    predictor = object()
    assert wrap_predictor(predictor, RuntimeOptions()) is predictor
    wrapped = wrap_predictor(predictor, RuntimeOptions(cuda_graphs=True))
    assert isinstance(wrapped, CudaGraphPredictor) and wrapped.predictor is predictor


def test_cuda_graphs_refuse_cpu_tensors():
    dit = build_dit(DiTConfig.preset("tiny"), seed=0)
    src, noise, sem, ctx, neg = _inputs()
    graphs = CudaGraphPredictor(GuidedPredictor(dit, src, ctx, neg, 5.0))
    with pytest.raises(ValueError, match="CUDA graphs need CUDA tensors; latents is on cpu"):
        graphs(noise, sem, torch.tensor([900.0]))


def test_editor_applies_runtime_options():
    from sama_rt.editor import Editor

    editor = Editor.from_config("tiny", seed=0, runtime=RuntimeOptions(fp8_linear=True))
    assert editor.runtime.fp8_linear and isinstance(editor.dit.blocks[0].ffn[0], Fp8Linear)
    plain = Editor.from_config("tiny", seed=0)
    src, noise, sem, ctx, neg = _inputs()
    params = EditParams(steps=2)
    got, want = editor.denoise(noise, sem, src, ctx, neg, params), plain.denoise(noise, sem, src, ctx, neg, params)
    rel = float((got[0] - want[0]).norm() / want[0].norm())
    assert 0 < rel < 0.15  # the FP8 approximation ran, and stayed close
    with pytest.raises(ValueError, match="CUDA only"):
        Editor.from_config("tiny", runtime=RuntimeOptions(cuda_graphs=True))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "sama_rt", *args], capture_output=True, text=True, timeout=300)


def test_cli_runtime_flags():
    from sama_rt.cli import build_parser, runtime_options

    args = build_parser().parse_args(["bench", "--fp8-linear", "--cuda-graphs", "--compile"])
    assert runtime_options(args, "cuda") == RuntimeOptions(fp8_linear=True, compile_blocks=True, cuda_graphs=True)
    r = _cli("bench", "--config", "tiny", "--frames", "5", "--resolution", "64x64", "--steps", "1", "--compile",
             "--device", "cpu")
    assert r.returncode == 2 and "compile_blocks runs on CUDA only" in r.stderr
    r = _cli("bench", "--config", "tiny", "--frames", "5", "--resolution", "64x64", "--steps", "1", "--device", "cpu",
             "--fp8-linear", "--compare-reference")
    assert r.returncode == 2 and "--fp8-linear" in r.stderr
    r = _cli("edit", "in.mp4", "x", "-o", "out.mp4", "--config", "tiny", "--device", "cpu", "--backend", "onnxruntime",
             "--fp8-linear")
    assert r.returncode == 2 and "apply to --backend torch" in r.stderr


@needs_cuda
def test_cuda_graph_replay_equals_eager_steps():
    device = torch.device("cuda")
    dit = build_dit(DiTConfig.preset("tiny"), seed=0, device=device)
    src, noise, sem, ctx, neg = (t.to(device) for t in _inputs())
    eager = GuidedPredictor(dit, src, ctx, neg, 5.0)
    graphs = CudaGraphPredictor(GuidedPredictor(dit, src, ctx, neg, 5.0))
    kept = []
    for t in (900.0, 700.0, 500.0, 300.0):
        timestep = torch.tensor([t], device=device)
        x = noise * (t / 1000)
        got, want = graphs(x, sem, timestep), eager(x, sem, timestep)
        # The same kernels on the same inputs; float32, so any difference is a wrong buffer.
        torch.testing.assert_close(got.latents, want.latents, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.semantic, want.semantic, atol=1e-5, rtol=1e-5)
        kept.append((got.latents, want.latents))
    assert graphs.captured_shapes == 1  # call 1 eager, call 2 captured, calls 3-4 replayed
    for got, want in kept:  # earlier outputs were cloned out, not overwritten by later replays
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    bigger = torch.randn(1, 16, 2, 4, 8, device=device)
    graphs_new = CudaGraphPredictor(GuidedPredictor(dit, torch.randn_like(bigger), ctx, neg, 5.0))
    for _ in range(2):
        graphs_new(bigger, sem, torch.tensor([800.0], device=device))
    assert graphs_new.captured_shapes == 1


@needs_cuda
def test_editor_with_cuda_graphs_matches_the_eager_editor():
    from sama_rt.editor import Editor

    params = EditParams(steps=3)
    src, noise, sem, ctx, neg = _inputs()
    plain = Editor.from_config("tiny", seed=0, device="cuda")
    graphed = Editor.from_config("tiny", seed=0, device="cuda", runtime=RuntimeOptions(cuda_graphs=True))
    for a, b in zip(graphed.denoise(noise, sem, src, ctx, neg, params), plain.denoise(noise, sem, src, ctx, neg, params)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="step caching"):
        graphed.denoise(noise, sem, src, ctx, neg, EditParams(steps=3, cache_threshold=0.1))


def test_low_memory_mode_keeps_the_text_encoder_in_host_memory():
    from sama_rt.acceleration.offload import ModuleOnDemand
    from sama_rt.editor import Editor

    low = Editor.from_config("tiny", seed=0, runtime=RuntimeOptions(offload="blocks"))
    plain = Editor.from_config("tiny", seed=0)
    assert isinstance(low.text_encoder, ModuleOnDemand) and low.text_encoder.device == torch.device("cpu")
    got = low.encode_prompts("[Video edit] make it snow", "[Video edit]")
    want = plain.encode_prompts("[Video edit] make it snow", "[Video edit]")
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=0, rtol=0)  # same weights, same operations
    assert low.text_encoder.visits == 1
    assert all(t.data_ptr() == host.data_ptr() for t, host in low.text_encoder._host)  # back on the host copies


@needs_cuda
def test_module_on_demand_visits_the_gpu_only_during_the_call():
    from sama_rt.acceleration.offload import ModuleOnDemand

    module = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    x = torch.randn(5, 64)
    want = module(x)
    seen = []
    module.register_forward_pre_hook(lambda m, args: seen.append(m[0].weight.device.type))
    on_demand = ModuleOnDemand(module, "cuda")
    got = on_demand(x.cuda())
    assert seen == ["cuda"] and got.is_cuda
    assert all(p.device.type == "cpu" and p.is_pinned() for p in module.parameters())
    torch.testing.assert_close(got.cpu(), want, atol=1e-5, rtol=1e-5)  # float32 GEMMs on another device


def test_cuda_graphs_are_refused_with_parallel_editing():
    from sama_rt.editor import Editor
    from sama_rt.parallel import ParallelConfig

    dit = build_dit(DiTConfig.preset("tiny"), seed=0)
    with pytest.raises(ValueError, match="not captured around parallel steps"):
        Editor(dit, None, None, None, parallel=ParallelConfig(ulysses=2), runtime=RuntimeOptions(cuda_graphs=True))
