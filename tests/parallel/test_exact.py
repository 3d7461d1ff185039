"""Parallel paths (Ulysses, ring, cfg-parallel, combinations) against one process.

Each world size is launched once (tests/parallel/worker.py, gloo on CPU); the ranks save
what they computed and the tests below compare it with the one-process computation here.
The sequence has 89 rows (12 source, 65 anchors, 12 target): divisible by neither 2 nor 4,
so every layout pads, and the anchors straddle shard boundaries.
"""
from __future__ import annotations

import pytest
import torch

from sama_rt.guided import GuidedPredictor
from sama_rt.models.attention import AttentionBackend, anchor_self_attention
from sama_rt.sampling import denoise
from tests.parallel import cases
from tests.parallel.launch import launch

WORLD_SIZES = [2, 4]
LAUNCH_TIMEOUT_S = 240


@pytest.fixture(scope="module", params=WORLD_SIZES, ids=lambda n: f"world{n}")
def ranks(request, tmp_path_factory) -> tuple[int, list[dict]]:
    world = request.param
    out = tmp_path_factory.mktemp(f"world{world}")
    results, _ = launch(world, ["-m", "tests.parallel.worker", "exact", str(out)], LAUNCH_TIMEOUT_S)
    failed = [r for r in results if r.returncode != 0]
    assert not failed, "\n".join(f"rank {r.rank} exited {r.returncode}:\n{r.stderr[-3000:]}" for r in failed)
    return world, [torch.load(out / f"rank{r}.pt") for r in range(world)]


@pytest.fixture(scope="module")
def one_process() -> dict:
    """The one-process GuidedPredictor step and denoise loop on the workers' inputs."""
    model = cases.dit()
    x = cases.step_inputs()
    predictor = GuidedPredictor(model, x["source_latents"], x["context"], x["negative_context"], cases.CFG_SCALE)
    pred = predictor(x["latents"], x["semantic"], torch.tensor([cases.TIMESTEP]))
    latents, semantic = denoise(
        model, x["latents"], x["semantic"], x["source_latents"], x["context"], x["negative_context"],
        num_steps=cases.LOOP_STEPS, cfg_scale=cases.CFG_SCALE, predictor=predictor,
    )
    return {"latents": pred.latents, "semantic": pred.semantic, "loop_latents": latents, "loop_semantic": semantic}


def test_sharded_attention_matches_one_process(ranks):
    world, results = ranks
    x = cases.attention_inputs()
    expected = anchor_self_attention(x["q"], x["k"], x["v"], x["cos"], x["sin"], cases.NUM_ANCHOR,
                                     AttentionBackend.REFERENCE)
    names = [n for n, c in cases.CONFIGS[world].items() if not c.cfg]
    assert names
    for name in names:
        shards = sorted((r["attention"][name] for r in results), key=lambda s: s["start"])
        got = torch.cat([s["rows"] for s in shards], dim=1)
        assert got.shape == expected.shape, name
        # float32 throughout; only the summation order differs (blocks, online softmax merge):
        # ~1e-7 on outputs of size ~1, so 2e-6 fails any real error (a lost or padded key moves
        # outputs by ~1e-2).
        torch.testing.assert_close(got, expected, atol=2e-6, rtol=0, msg=lambda m: f"{name}: {m}")


def test_fused_kernel_behind_ulysses_matches_one_process(ranks, one_process):
    """Ulysses without ring and the Triton backend: unrotated q/k travel, the fused kernel
    attends over the whole sequence per head group (interpreted here)."""
    world, results = ranks
    x = cases.attention_inputs()
    expected = anchor_self_attention(x["q"], x["k"], x["v"], x["cos"], x["sin"], cases.NUM_ANCHOR,
                                     AttentionBackend.REFERENCE)
    names = list(results[0]["attention_fused"])
    assert names and all(cases.CONFIGS[world][n].ring == 1 for n in names)
    for name in names:
        shards = sorted((r["attention_fused"][name] for r in results), key=lambda s: s["start"])
        got = torch.cat([s["rows"] for s in shards], dim=1)
        # float32 "ieee" dots in the kernel: its own summation order, ~1e-6 (the kernel tests'
        # atol); a lost key or a wrong RoPE row moves outputs by ~1e-2.
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0, msg=lambda m: f"{name}: {m}")
    for name in results[0]["step_fused"]:
        for key in ("latents", "semantic", "loop_latents", "loop_semantic"):
            # As the SDPA path's tolerances (CFG 5 amplifies pass differences ~9x), doubled for
            # the kernel's own float32 summation order.
            tol = 4e-5 if key in ("latents", "semantic") else 1e-4
            torch.testing.assert_close(results[0]["step_fused"][name][key], one_process[key], atol=tol, rtol=0,
                                       msg=lambda m: f"{name} {key}: {m}")


@pytest.mark.parametrize("what", ["step", "loop"])
def test_guided_prediction_matches_one_process(ranks, one_process, what):
    world, results = ranks
    keys = ("latents", "semantic") if what == "step" else ("loop_latents", "loop_semantic")
    for name in cases.CONFIGS[world]:
        rank0 = results[0]["step"][name]
        for rank, r in enumerate(results):
            for key in keys:
                # Every rank returns the same prediction, bit for bit: the Euler loop then runs
                # identically everywhere.
                assert torch.equal(r["step"][name][key], rank0[key]), f"{name} rank {rank} {key}"
        for key in keys:
            # float32; reduction order differs from one process (sharded attention, gathered
            # rows). One step: ~1e-6 on predictions of size ~5 after CFG 5 amplifies the pass
            # difference ~9x; the 2-step loop compounds it. 2e-5 / 5e-5 fail real errors
            # (a wrong shard or RoPE row changes outputs by > 1e-2).
            tol = 2e-5 if what == "step" else 5e-5
            torch.testing.assert_close(rank0[key], one_process[key], atol=tol, rtol=0,
                                       msg=lambda m: f"{name} {key}: {m}")


@pytest.fixture(scope="module")
def one_process_frames() -> torch.Tensor:
    from sama_rt import Editor

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like the workers; the tiny VAE's convolutions are slower threaded here
    try:
        editor = Editor.from_config("tiny", seed=0, device="cpu")
        return torch.from_numpy(editor.edit(cases.edit_frames(), cases.EDIT_INSTRUCTION, cases.edit_params()).frames)
    finally:
        torch.set_num_threads(threads)


def test_editor_edit_matches_one_process(ranks, one_process_frames):
    world, results = ranks
    expected = one_process_frames
    for rank, r in enumerate(results):
        first, *again = r["edit"]["frames"]
        for frames in again:
            assert torch.equal(first, frames), f"rank {rank}: the same seed gave different frames"
        assert torch.equal(first, results[0]["edit"]["frames"][0]), f"rank {rank} differs from rank 0"
        assert r["edit"]["writer"] == [rank == 0] * len(r["edit"]["writer"])
    got = results[0]["edit"]["frames"][0]
    assert got.shape == expected.shape
    diff = (got.int() - expected.int()).abs()
    # uint8 frames from float32 latents that differ from one process by ~1e-6: a value can
    # round the other way only when it sits within ~1e-4 of a rounding boundary, so at most
    # one level, on a tiny fraction of values.
    assert int(diff.max()) <= 1
    assert float((diff > 0).float().mean()) < 1e-3
