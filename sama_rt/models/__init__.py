"""Model definitions that load the released SAMA / Wan2.1 weights strictly."""
from .checkpoint import CheckpointError
from .dit import DiTConfig, SamaDiT, build_dit, load_dit

__all__ = ["CheckpointError", "DiTConfig", "SamaDiT", "build_dit", "load_dit"]
