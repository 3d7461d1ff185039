"""What one edit does: a frozen dataclass with the official defaults and validation."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

DEFAULT_PIXEL_BUDGET = 480 * 832
NUM_SEMANTIC_TOKENS = 65  # a constant of the released code


@dataclass(frozen=True)
class EditParams:
    seed: int = 1
    steps: int = 50
    cfg_scale: float = 5.0
    shift: float = 5.0
    max_frames: Optional[int] = None  # cap on source frames edited; None = the whole clip
    window: int = 81  # frames per denoising pass (4k+1); longer clips run in windows
    overlap: int = 9  # frames shared by consecutive windows (4j+1)
    propagate_motion: bool = True  # pin each window's overlap to the previous window's edit
    reuse_anchor: bool = True  # pin every window's semantic latents to the first window's
    crossfade: int = 0  # frames blended linearly across each window seam (<= overlap)
    pixel_budget: int = DEFAULT_PIXEL_BUDGET  # resolution buckets of ~this many pixels
    prompt_prefix: str = "[Video edit] "
    negative_prompt: str = "[Video edit]"
    num_semantic_tokens: int = NUM_SEMANTIC_TOKENS
    tiled_vae: bool = False
    vae_tile_size: tuple[int, int] = (30, 52)  # latent units
    vae_tile_stride: tuple[int, int] = (15, 26)
    crf: int = 25
    # Opt-in approximations (sama_rt.acceleration); the defaults are the release's exact path.
    cache_threshold: float = 0.0  # step caching: reuse blocks 1..N-1 below this relative L1; 0 = off
    cfg_skip_after: float = 1.0  # fraction of steps with CFG; later steps run the positive pass only
    solver: str = "euler"  # flow-ODE solver: euler (release), heun, dpm++2m

    def __post_init__(self):
        errors = []
        if self.steps < 1:
            errors.append(f"steps must be >= 1 (got {self.steps})")
        if not self.cfg_scale >= 1.0:
            errors.append(f"cfg_scale must be >= 1 (got {self.cfg_scale})")
        if not self.shift > 0:
            errors.append(f"shift must be > 0 (got {self.shift})")
        if self.max_frames is not None and self.max_frames < 1:
            errors.append(f"max_frames must be >= 1 or None (got {self.max_frames})")
        if self.window < 1 or (self.window - 1) % 4:
            errors.append(f"window must be 4k+1 frames (e.g. 49, 81), got {self.window}")
        if self.overlap < 1 or (self.overlap - 1) % 4 or self.overlap >= self.window:
            errors.append(f"overlap must be 4j+1 frames and less than window {self.window}, got {self.overlap}")
        if not 0 <= self.crossfade <= self.overlap:
            errors.append(f"crossfade must be in 0..overlap ({self.overlap}), got {self.crossfade}")
        if self.pixel_budget < 32 * 32:
            errors.append(f"pixel_budget must be at least 32*32 (got {self.pixel_budget})")
        if self.num_semantic_tokens < 0:
            errors.append(f"num_semantic_tokens must be >= 0 (got {self.num_semantic_tokens})")
        if not 0 <= self.crf <= 51:
            errors.append(f"crf must be in 0..51 (got {self.crf})")
        if any(t < 1 for t in (*self.vae_tile_size, *self.vae_tile_stride)):
            errors.append("vae tile size and stride must be positive")
        if not 0 <= self.cache_threshold < float("inf"):
            errors.append(f"cache_threshold must be >= 0 (0 = off), got {self.cache_threshold}")
        if not 0 <= self.cfg_skip_after <= 1:
            errors.append(f"cfg_skip_after must be in [0, 1] (1 = guidance on every step), got {self.cfg_skip_after}")
        from .acceleration.solvers import Solver

        try:
            object.__setattr__(self, "solver", Solver.parse(self.solver).value)
        except ValueError as e:
            errors.append(str(e))
        if errors:
            raise ValueError("invalid EditParams: " + "; ".join(errors))

    def replace(self, **changes) -> "EditParams":
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown EditParams fields: {sorted(unknown)}")
        return replace(self, **changes)

    def prompts(self, instruction: str) -> tuple[str, str]:
        """(positive, negative) prompt for an instruction."""
        if not instruction or not instruction.strip():
            raise ValueError("the instruction is empty: say what to change, e.g. 'Replace the swan with a white cat'")
        return self.prompt_prefix + instruction.strip(), self.negative_prompt
