"""Low-memory mode: the DiT blocks' weights stay in host memory and stream to the device.

For 24-48 GB cards: the 14B DiT's 40 blocks are ~28 GB in bf16, the rest of the DiT is
small, and the umT5 encoder (11 GB, used once per edit) visits the device only while it
encodes the prompts (`ModuleOnDemand`).
With the offloader only the block running and the next one are on the device. The next
block's copy is queued on a side CUDA stream as soon as a block starts, from pinned host
memory, so it overlaps that block's compute (a 14B block is ~0.7 GB: ~30 ms over PCIe 4
x16, against ~0.3 s of compute per block and step at 49 frames 480p with CFG); after the last block the
first is fetched again for the next step.

How blocks are found in use: a forward pre-hook on every block submodule that owns
parameters (the Linear / norm layers). Every code path (the plain forward, the fast
predictor, the per-edit cross-attention K/V) reaches the weights through those calls, so
no caller needs to know about offloading. The blocks' `modulation` tables (6 x dim each)
stay on the device: they are read as attributes, not through a call.

On a CPU "device" the same bookkeeping runs with copies in ordinary memory: it saves
nothing there, and exists so the mechanism is tested where there is no GPU.
"""
from __future__ import annotations

import logging
from functools import partial
from typing import Optional

import torch
from torch import nn

from ..choices import Choice

logger = logging.getLogger(__name__)


class Offload(Choice):
    NONE = "none"
    BLOCKS = "blocks"


def _streamed_parameters(block: nn.Module) -> list[tuple[nn.Module, nn.Parameter]]:
    """(owning submodule, parameter) for every parameter of the block but its modulation."""
    return [(module, p) for module in block.modules() if module is not block
            for p in module.parameters(recurse=False)]


class BlockOffloader:
    """Streams `dit.blocks` from host memory to `device`, one block ahead of use."""

    def __init__(self, dit: nn.Module, device):
        self.device = torch.device(device)
        self._dit = dit
        self._cuda = self.device.type == "cuda"
        self._copy_stream = torch.cuda.Stream(self.device) if self._cuda else None
        blocks = list(dit.blocks)
        streamed = {id(p) for block in blocks for _, p in _streamed_parameters(block)}
        for p in dit.parameters():
            if id(p) not in streamed:
                p.data = p.data.to(self.device)
        for b in dit.buffers():
            b.data = b.data.to(self.device)
        self._host: list[list[tuple[nn.Parameter, torch.Tensor]]] = []
        self._hooks = []
        for index, block in enumerate(blocks):
            pairs = []
            for module, p in _streamed_parameters(block):
                host = p.data.to("cpu")
                if self._cuda:
                    host = host.pin_memory()  # page-locked: asynchronous copies
                p.data = host
                pairs.append((p, host))
            self._host.append(pairs)
            owners = {id(m): m for m, _ in _streamed_parameters(block)}
            for module in owners.values():
                self._hooks.append(module.register_forward_pre_hook(partial(self._on_use, index)))
        self._ready: dict[int, Optional[torch.cuda.Event]] = {}  # resident (or in flight) -> copy done
        self.active: Optional[int] = None
        self.loads = 0  # block transfers so far
        self.peak_resident = 0
        self.block_bytes = max((sum(h.numel() * h.element_size() for _, h in pairs) for pairs in self._host),
                               default=0)
        logger.info("block offload: %d blocks of up to %.2f GiB in host memory, streamed to %s",
                    len(blocks), self.block_bytes / 2**30, self.device)

    # -- residency --------------------------------------------------------------------
    def _on_use(self, index: int, module, args) -> None:
        if self.active != index:
            self._activate(index)

    def _activate(self, index: int) -> None:
        self._load(index)
        if self._cuda:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(self._ready[index])
            for p, _ in self._host[index]:
                # The copy stream allocated this memory: tell the allocator that the compute
                # stream uses it, so it is not handed out again before that work finishes.
                p.data.record_stream(compute)
        self.active = index
        following = (index + 1) % len(self._host)
        for other in list(self._ready):
            if other not in (index, following):
                self._evict(other)
        self._load(following)  # the next block (after the last: the first, for the next step)

    def _load(self, index: int) -> None:
        if index in self._ready:
            return
        if self._cuda:
            with torch.cuda.stream(self._copy_stream):
                for p, host in self._host[index]:
                    p.data = host.to(self.device, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self._copy_stream)
            self._ready[index] = event
        else:
            for p, host in self._host[index]:
                p.data = host.clone()
            self._ready[index] = None
        self.loads += 1
        self.peak_resident = max(self.peak_resident, len(self._ready))

    def _evict(self, index: int) -> None:
        for p, host in self._host[index]:
            p.data = host
        del self._ready[index]

    def is_resident(self, index: int) -> bool:
        return index in self._ready

    def close(self) -> None:
        """Remove the hooks and put every block on the device for good."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        if self._cuda:
            torch.cuda.current_stream(self.device).wait_stream(self._copy_stream)
        for pairs in self._host:
            for p, host in pairs:
                p.data = host.to(self.device)
        self._ready.clear()
        self.active = None
        self._dit._block_offloader = None


class ModuleOnDemand:
    """A whole module kept in host memory that visits the device for each call.

    For models used once per edit, like the umT5 encoder (11 GB in bf16: on a 24 GB card
    it would not leave room for the DiT's activations). Its weights are copied in from
    pinned memory right before the call and dropped right after; the copies and the compute
    are queued on the same stream, so the device memory returns to the allocator only
    once the work that reads it is ordered before any reuse. `device` is where it computes.
    """

    def __init__(self, module: nn.Module, device):
        self.module = module
        self.device = torch.device(device)
        self._host: list[tuple[torch.Tensor, torch.Tensor]] = []
        for t in list(module.parameters()) + list(module.buffers()):
            host = t.data.to("cpu")
            if self.device.type == "cuda":
                host = host.pin_memory()
            t.data = host
            self._host.append((t, host))
        self.visits = 0

    def __call__(self, *args, **kwargs):
        for t, host in self._host:
            t.data = host.to(self.device, non_blocking=True)
        try:
            return self.module(*args, **kwargs)
        finally:
            for t, host in self._host:
                t.data = host
            self.visits += 1

    def __getattr__(self, name):  # config, dtype, ... of the wrapped module
        return getattr(self.module, name)


def enable_block_offload(dit: nn.Module, device) -> BlockOffloader:
    """Keep `dit`'s blocks in host memory and stream them to `device` while it runs.

    The rest of the model moves to `device`. Returns the offloader (its `close()` undoes
    the streaming). Outputs are unchanged: the same weights run the same operations.
    """
    if getattr(dit, "_block_offloader", None) is not None:
        raise ValueError("block offload is already enabled on this model")
    offloader = BlockOffloader(dit, device)
    dit._block_offloader = offloader
    return offloader
