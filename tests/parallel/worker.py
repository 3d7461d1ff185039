"""One rank of a parallel test run: `python -m tests.parallel.worker SCENARIO OUT_DIR [ARGS]`.

Launched by tests/parallel/launch.py (or torchrun) with the torchrun environment set.
Scenarios:
  exact OUT        every parallel config of this world size: sharded attention, one guided
                   step, a short denoise loop and Editor.edit (twice with 2 ranks, to see
                   that the same seed gives the same frames); saves OUT/rank{R}.pt
  fail OUT CLIP    the CLI edit on every rank, with a missing input file on rank 1
  stall OUT T      ulysses 2 with a T-second timeout; rank 1 stalls for T + STALL_EXTRA_S
                   seconds before its first step
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from sama_rt.parallel import setup_parallel
from tests.parallel import cases


def shard_attention(config, fused: bool = False) -> dict:
    """This rank's rows of the sharded self-attention, for a config without cfg; `fused`:
    through the Triton kernel (the interpreter here), for configs without ring."""
    from sama_rt.models.rope import sequence_rope_tables
    from sama_rt.parallel.attention import FusedKernel, SequenceParallelAttention
    from sama_rt.parallel.layout import ShardLayout

    groups = setup_parallel(config, cases.DIT_CONFIG.num_heads, "cpu")
    inputs = cases.attention_inputs()
    layout = ShardLayout(cases.SEQUENCE_LENGTH, groups.sequence.size)
    index = groups.sequence.index
    cos, sin = sequence_rope_tables(inputs["cos"], inputs["sin"], cases.NUM_ANCHOR)
    q, k, v = (layout.take([inputs[name]], index) for name in "qkv")
    attention = SequenceParallelAttention(groups, layout, FusedKernel(inputs["cos"], inputs["sin"]) if fused else None)
    out = attention(q, k, v, layout.take([cos], index, dim=0), layout.take([sin], index, dim=0), cases.NUM_ANCHOR)
    start, end = layout.bounds(index)
    return {"start": start, "rows": out[:, : layout.valid_rows(start, end - start)]}


def guided_step_and_loop(config, attention: str = "sdpa") -> dict:
    from sama_rt.parallel.predictor import ParallelGuidedPredictor
    from sama_rt.sampling import denoise

    groups = setup_parallel(config, cases.DIT_CONFIG.num_heads, "cpu")
    model = cases.dit().with_attention(attention)
    x = cases.step_inputs()
    predictor = ParallelGuidedPredictor(
        model, x["source_latents"], x["context"], x["negative_context"], cases.CFG_SCALE, groups
    )
    pred = predictor(x["latents"], x["semantic"], torch.tensor([cases.TIMESTEP]))
    latents, semantic = denoise(
        model, x["latents"], x["semantic"], x["source_latents"], x["context"], x["negative_context"],
        num_steps=cases.LOOP_STEPS, cfg_scale=cases.CFG_SCALE, predictor=predictor,
    )
    return {"latents": pred.latents, "semantic": pred.semantic, "loop_latents": latents, "loop_semantic": semantic}


def edit(config, runs: int) -> dict:
    """Editor.edit `runs` times with the same seed."""
    from sama_rt import Editor

    editor = Editor.from_config("tiny", seed=0, device="cpu", parallel=config)
    runs = [editor.edit(cases.edit_frames(), cases.EDIT_INSTRUCTION, cases.edit_params()) for _ in range(runs)]
    return {"frames": [torch.from_numpy(r.frames) for r in runs], "writer": [r.writer for r in runs]}


def exact(out_dir: Path) -> None:
    world = int(os.environ["WORLD_SIZE"])
    result = {"attention": {}, "step": {}, "attention_fused": {}, "step_fused": {}}
    for name, config in cases.CONFIGS[world].items():
        if not config.cfg:
            result["attention"][name] = shard_attention(config)
        result["step"][name] = guided_step_and_loop(config)
        if config.ring == 1:  # the Triton kernel (interpreted on CPU) behind Ulysses
            if not config.cfg:
                result["attention_fused"][name] = shard_attention(config, fused=True)
            result["step_fused"][name] = guided_step_and_loop(config, attention="triton")
    result["edit"] = edit(cases.EDITOR_CONFIGS[world], runs=2 if world == 2 else 1)
    torch.save(result, out_dir / f"rank{dist.get_rank()}.pt")
    dist.destroy_process_group()


def fail(out_dir: Path, clip: str) -> int:
    from sama_rt.cli import main

    rank = int(os.environ["RANK"])
    source = clip if rank != 1 else str(out_dir / "missing-on-rank-1.mp4")
    return main([
        "edit", source, "make it blue", "-o", str(out_dir / "out.mp4"), "--config", "tiny",
        "--ulysses", "2", "--resolution", "64x112", "--steps", "1", "--max-frames", "5", "--quiet",
    ])


STALL_EXTRA_S = 2.5


def stall(timeout_s: float) -> int:
    """Rank 0 steps while rank 1 stalls: rank 0 must fail after the timeout, not hang."""
    import time

    from sama_rt.parallel import CollectiveError, ParallelConfig
    from sama_rt.parallel.predictor import ParallelGuidedPredictor
    from sama_rt.parallel.runtime import finish

    groups = setup_parallel(ParallelConfig(ulysses=2, timeout_s=timeout_s), cases.DIT_CONFIG.num_heads, "cpu")
    x = cases.step_inputs()
    predictor = ParallelGuidedPredictor(
        cases.dit(), x["source_latents"], x["context"], x["negative_context"], cases.CFG_SCALE, groups
    )
    if groups.rank == 1:
        time.sleep(timeout_s + STALL_EXTRA_S)
    start = time.monotonic()
    try:
        predictor(x["latents"], x["semantic"], torch.tensor([cases.TIMESTEP]))
    except CollectiveError as e:
        print(f"waited {time.monotonic() - start:.2f} s; stopped: {e}", file=sys.stderr)
        return finish(1)
    return finish(0)


if __name__ == "__main__":
    torch.set_num_threads(1)
    scenario, out = sys.argv[1], Path(sys.argv[2])
    if scenario == "exact":
        exact(out)
    elif scenario == "fail":
        sys.exit(fail(out, sys.argv[3]))
    elif scenario == "stall":
        sys.exit(stall(float(sys.argv[3])))
    else:
        sys.exit(f"unknown scenario {scenario!r}")
