"""Multi-GPU SAMA on torch.distributed: sequence-parallel (Ulysses, ring) and cfg-parallel.

Launch with torchrun; see docs/PARALLEL.md. `ParallelConfig` says how an edit is split,
`setup_parallel` checks it against the launch and starts the process group,
`ParallelGuidedPredictor` is the per-step DiT call every rank runs.
"""
from .config import ParallelConfig, ParallelConfigError
from .runtime import CollectiveError, ParallelGroups, setup_parallel

__all__ = ["ParallelConfig", "ParallelConfigError", "CollectiveError", "ParallelGroups", "setup_parallel"]
