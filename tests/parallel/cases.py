"""Inputs and models shared by the parallel workers and the one-process references."""
from __future__ import annotations

import torch

from sama_rt.models.dit import DiTConfig, build_dit
from sama_rt.parallel import ParallelConfig
from sama_rt.video.synth import synth_frames

# 4 heads (head_dim 24) so that Ulysses can run 4-way; otherwise the tiny preset.
DIT_CONFIG = DiTConfig(dim=96, ffn_dim=192, num_heads=4, num_layers=2, text_dim=64)
LATENT_SHAPE = (1, 16, 2, 4, 6)  # 2 x 2 x 3 tokens per video
NUM_ANCHOR = 65
SEQUENCE_LENGTH = 2 * 12 + NUM_ANCHOR  # 89: divisible by neither 2 nor 4
CFG_SCALE = 5.0
TIMESTEP = 937.5
LOOP_STEPS = 2

# Each world size: Ulysses, ring, cfg-parallel and combinations.
CONFIGS = {
    2: {
        "ulysses2": ParallelConfig(ulysses=2),
        "ring2": ParallelConfig(ring=2),
        "cfg": ParallelConfig(cfg=True),
    },
    4: {
        "ulysses4": ParallelConfig(ulysses=4),
        "ring4": ParallelConfig(ring=4),
        "ulysses2_ring2": ParallelConfig(ulysses=2, ring=2),
        "ulysses2_cfg": ParallelConfig(ulysses=2, cfg=True),
        "ring2_cfg": ParallelConfig(ring=2, cfg=True),
    },
}
# Editor.from_config("tiny") has 2 heads.
EDITOR_CONFIGS = {2: ParallelConfig(ulysses=2), 4: ParallelConfig(ring=2, cfg=True)}
EDIT_FRAMES = 5
EDIT_SIZE = (112, 64)  # (width, height)
EDIT_INSTRUCTION = "Turn the red square blue"


def dit():
    return build_dit(DIT_CONFIG, seed=0)


def step_inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1234)

    def context(real: int) -> torch.Tensor:
        ctx = torch.zeros(1, 512, DIT_CONFIG.text_dim)
        ctx[:, :real] = torch.randn(1, real, DIT_CONFIG.text_dim, generator=gen)
        return ctx

    return {
        "latents": torch.randn(LATENT_SHAPE, generator=gen),
        "source_latents": torch.randn(LATENT_SHAPE, generator=gen),
        "semantic": torch.randn(1, NUM_ANCHOR, DIT_CONFIG.siglip_dim, generator=gen),
        "context": context(11),
        "negative_context": context(4),
    }


def attention_inputs() -> dict[str, torch.Tensor]:
    """Unrotated q, k, v [2, 89, 4, 24] and the video RoPE tables of the step's grid."""
    from sama_rt.models.rope import rope_tables

    gen = torch.Generator().manual_seed(99)
    shape = (2, SEQUENCE_LENGTH, DIT_CONFIG.num_heads, DIT_CONFIG.head_dim)
    q, k, v = (torch.randn(shape, generator=gen) for _ in range(3))
    cos, sin = rope_tables(2, 2, 3, DIT_CONFIG.head_dim)
    return {"q": q, "k": k, "v": v, "cos": cos, "sin": sin}


def edit_frames():
    return synth_frames(EDIT_FRAMES, EDIT_SIZE)


def edit_params():
    from sama_rt.params import EditParams

    return EditParams(seed=3, steps=2, pixel_budget=EDIT_SIZE[0] * EDIT_SIZE[1], max_frames=EDIT_FRAMES)
