"""Opt-in `torch.compile` of the DiT blocks, CUDA only.

Compiling fuses the elementwise work around the matmuls (modulation, norms, gates,
residual adds); mode "reduce-overhead" also captures CUDA graphs, one per input shape,
which removes launch overhead between steps. The blocks are compiled where they are
called through `forward` (every block in the plain model, blocks 1..N-1 on the fast path).

CPU is refused on purpose: compiling costs minutes on a 2-core machine and the CPU tests
must never trigger it. Not combinable with block offload, which swaps the weights under
the compiled graphs.
"""
from __future__ import annotations

from typing import Optional


def compile_blocks(dit, *, mode: Optional[str] = None, dynamic: bool = False) -> None:
    """torch.compile each of `dit.blocks` in place (nn.Module.compile). CUDA only."""
    if dit.device.type != "cuda":
        raise ValueError(f"compile_blocks runs on CUDA only; the model is on {dit.device}")
    if getattr(dit, "_block_offloader", None) is not None:
        raise ValueError("compile_blocks cannot be combined with block offload")
    for block in dit.blocks:
        # Identical blocks share one compiled graph (parameters are graph inputs), so 40
        # blocks do not run into dynamo's recompile limit (checked with torch 2.13).
        block.compile(mode=mode, dynamic=dynamic)
