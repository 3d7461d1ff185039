"""What `compile_blocks` hands to torch.compile, checked without compiling: dynamo must trace
a DiT block into ONE graph (a graph break would split the fusion and re-enter Python every
block and step), and the traced graph must compute what the eager block does. The backend
here is "aot_eager" (dynamo + AOTAutograd, no code generation), so this runs in seconds on
CPU; the compiled speed is the GPU section compile49's business."""
import pytest
import torch

from sama_rt.acceleration.fp8_linear import convert_to_fp8_linear
from sama_rt.guided import GuidedPredictor
from sama_rt.models import DiTConfig, build_dit

from .test_approximations import _inputs

# On a GPU machine the same checks run on CUDA in bf16 (the kernel compiled, FP8 GEMMs real).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32


def _block_call(dit, block_index: int):
    """The arguments one guided step passes to dit.blocks[block_index] (the fast path)."""
    src, noise, sem, ctx, neg = (t.to(DEVICE) for t in _inputs())
    seen = {}

    def keep(module, args, kwargs):
        seen.setdefault("call", (args, kwargs))

    handle = dit.blocks[block_index].register_forward_pre_hook(keep, with_kwargs=True)
    try:
        with torch.no_grad():
            GuidedPredictor(dit, src, ctx, neg, 5.0)(noise * 0.7, sem, torch.tensor([700.0], device=DEVICE))
    finally:
        handle.remove()
    return seen["call"]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("variant", ["sdpa", "triton", "fp8-linear"])
def test_block_traces_into_one_graph_that_matches_eager(variant):
    if variant == "fp8-linear" and DEVICE == "cuda" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 GEMMs need compute capability 8.9 or newer")
    dit = build_dit(DiTConfig.preset("tiny"), dtype=DTYPE, device=DEVICE, seed=0)
    dit.with_attention("triton" if variant == "triton" else "sdpa")  # triton: interpreted on CPU
    if variant == "fp8-linear":
        assert convert_to_fp8_linear(dit) > 0
    block = dit.blocks[1]  # blocks 1..N-1 run through forward on the fast path
    args, kwargs = _block_call(dit, 1)
    explained = torch._dynamo.explain(block)(*args, **kwargs)
    assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
    assert explained.graph_count == 1
    traced = torch.compile(block, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        got, want = traced(*args, **kwargs), block(*args, **kwargs)
    if DTYPE == torch.float32:  # the same operations in the same order: equal, not merely close
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    else:  # AOTAutograd may decompose an op (e.g. a norm) and round differently in bf16
        torch.testing.assert_close(got, want)
