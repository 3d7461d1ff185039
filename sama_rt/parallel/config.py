"""How one edit is split across processes: a frozen dataclass, checked before any weight loads."""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TIMEOUT_S = 600.0  # a rank silent for this long fails every rank instead of hanging them


class ParallelConfigError(ValueError):
    """Degrees that cannot run: raised before the process group starts or weights load."""


@dataclass(frozen=True)
class ParallelConfig:
    """Degrees of parallelism of one edit; world size = ulysses * ring * (2 if cfg else 1).

    ulysses: sequence-parallel degree through all-to-all (sequence shards <-> head shards
        around self-attention); must divide the head count.
    ring: ring-attention degree (K/V blocks passed around a ring); any head count.
    cfg: the positive and negative guidance passes run on different halves of the ranks.
    timeout_s: process-group timeout; a collective that waits longer fails on every rank.
    """

    ulysses: int = 1
    ring: int = 1
    cfg: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self):
        for name in ("ulysses", "ring"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ParallelConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.cfg, bool):
            raise ParallelConfigError(f"cfg must be a bool, got {self.cfg!r}")
        if not self.timeout_s > 0:
            raise ParallelConfigError(f"timeout_s must be > 0, got {self.timeout_s!r}")

    @property
    def sequence_degree(self) -> int:
        """Shards of the sequence: ranks that together run one guidance pass."""
        return self.ulysses * self.ring

    @property
    def cfg_degree(self) -> int:
        return 2 if self.cfg else 1

    @property
    def world_size(self) -> int:
        return self.sequence_degree * self.cfg_degree

    def describe(self) -> str:
        parts = [f"ulysses {self.ulysses}", f"ring {self.ring}"] + (["cfg-parallel"] if self.cfg else [])
        return " x ".join(parts) + f" = {self.world_size} processes"

    def validate(self, num_heads: int, world_size: int) -> None:
        """Raise ParallelConfigError unless these degrees run `num_heads` heads on `world_size` processes."""
        errors = []
        if num_heads % self.ulysses:
            errors.append(
                f"--ulysses {self.ulysses} does not divide the model's {num_heads} attention heads "
                f"(choose a divisor of {num_heads}, and --ring for the rest of the sequence split)"
            )
        if world_size != self.world_size:
            errors.append(
                f"{self.describe()}, but {world_size} process{'es were' if world_size != 1 else ' was'} "
                f"launched (run torchrun --nproc-per-node {self.world_size} -m sama_rt ..., "
                "or change --ulysses/--ring/--cfg-parallel)"
            )
        if errors:
            raise ParallelConfigError("; ".join(errors))
