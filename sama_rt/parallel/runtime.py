"""The process group of a parallel edit and the sub-groups it uses.

Launched by torchrun (no launcher of our own): the process group is initialised from the
torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) when the
caller has not initialised one, NCCL on CUDA and gloo on CPU, with a timeout so that a
rank that dies or stalls fails the others instead of hanging them.

Rank layout, with S = ulysses * ring ranks per guidance pass:
    rank = cfg_index * S + ring_index * ulysses + ulysses_index
Ulysses groups are runs of consecutive ranks because their all-to-all runs in every layer
and should use the closest links (the GPUs of one NVLink island); ring groups stride by
`ulysses`; the two cfg halves are ranks [0, S) and [S, 2S), paired rank i with S + i.
"""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator, Optional, Union

import torch
import torch.distributed as dist

from .config import ParallelConfig

logger = logging.getLogger(__name__)

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class CollectiveError(RuntimeError):
    """A collective failed: another rank failed or stalled past the timeout."""


@dataclass(frozen=True)
class RankGroup:
    """One sub-group as this rank sees it; `group` is None when it holds only this rank."""

    group: Optional[dist.ProcessGroup]
    ranks: tuple[int, ...]  # global ranks, in group order
    index: int  # this rank's position in `ranks`

    @property
    def size(self) -> int:
        return len(self.ranks)


@dataclass(frozen=True)
class ParallelGroups:
    config: ParallelConfig
    rank: int
    device: torch.device
    ulysses: RankGroup  # all-to-all around self-attention
    ring: RankGroup  # K/V blocks passed around
    sequence: RankGroup  # every shard of one guidance pass (ulysses x ring)
    cfg: RankGroup  # the positive/negative pair

    @property
    def world_size(self) -> int:
        return self.config.world_size

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes files and prints results."""
        return self.rank == 0

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size}"


# Process groups are process-wide: every rank must create each one, in the same order, so
# they are made once per config and shared by every Editor of the process.
_GROUPS: dict[ParallelConfig, ParallelGroups] = {}


def launched_world_size() -> int:
    """Processes in this launch: the process group's size, else torchrun's WORLD_SIZE, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", dist.get_rank() if dist.is_initialized() else 0))


def rank_device(device: Union[str, torch.device]) -> torch.device:
    """The device of this rank: a bare "cuda" means cuda:LOCAL_RANK (one GPU per rank)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank())
    if device.type == "cuda" and device.index != local_rank() and launched_world_size() > 1:
        raise ValueError(
            f"device {device} on local rank {local_rank()} would put several ranks on one GPU; "
            "pass device 'cuda' and each rank uses cuda:LOCAL_RANK"
        )
    return device


def init_process_group(device: torch.device, timeout_s: float) -> None:
    """Start the default process group from the torchrun environment unless one exists."""
    if dist.is_initialized():
        return
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"a parallel edit needs the torchrun environment ({', '.join(missing)} not set): "
            "launch with torchrun --nproc-per-node N -m sama_rt ..."
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    logger.info("process group: %s, rank %d of %d", backend, dist.get_rank(), dist.get_world_size())


def setup_parallel(
    config: ParallelConfig, num_heads: int, device: Union[str, torch.device]
) -> Optional[ParallelGroups]:
    """Validate `config` against the launch, start the process group, make the sub-groups.

    Runs before any weight is loaded, so bad degrees cost nothing. Returns None for a
    single-process config (ulysses = ring = 1, no cfg) launched as one process.
    """
    config.validate(num_heads, launched_world_size())
    if config.world_size == 1:
        return None
    device = rank_device(device)
    init_process_group(device, config.timeout_s)
    if config not in _GROUPS:
        _GROUPS[config] = _make_groups(config, device)
    return _GROUPS[config]


def _make_groups(config: ParallelConfig, device: torch.device) -> ParallelGroups:
    rank = dist.get_rank()
    u, r, c = config.ulysses, config.ring, config.cfg_degree
    seq = u * r
    timeout = timedelta(seconds=config.timeout_s)

    def rank_of(ci: int, ri: int, ui: int) -> int:
        return ci * seq + ri * u + ui

    layouts = {
        "ulysses": [[rank_of(ci, ri, ui) for ui in range(u)] for ci in range(c) for ri in range(r)],
        "ring": [[rank_of(ci, ri, ui) for ri in range(r)] for ci in range(c) for ui in range(u)],
        "sequence": [[rank_of(ci, 0, 0) + i for i in range(seq)] for ci in range(c)],
        "cfg": [[rank_of(ci, 0, 0) + i for ci in range(c)] for i in range(seq)],
    }
    mine = {}
    for name, all_ranks in layouts.items():
        for ranks in all_ranks:
            # new_group is collective over the whole world: every rank creates every group.
            group = dist.new_group(ranks, timeout=timeout) if len(ranks) > 1 else None
            if rank in ranks:
                mine[name] = RankGroup(group, tuple(ranks), ranks.index(rank))
    return ParallelGroups(config, rank, device, **mine)


@contextmanager
def collective(what: str) -> Iterator[None]:
    """Name the step when a collective fails (a peer died, or the timeout passed)."""
    try:
        yield
    except RuntimeError as e:
        if isinstance(e, CollectiveError):
            raise
        rank = dist.get_rank() if dist.is_initialized() else 0
        logger.debug("rank %d: %s failed: %s", rank, what, e)
        raise CollectiveError(
            f"rank {rank} stopped in {what}: another rank failed, or stalled past the "
            "process-group timeout (that rank's own message names the cause)"
        ) from e


def failure_prefix() -> str:
    """' (rank R of N)' in a multi-process run, '' otherwise: error lines say which rank."""
    if dist.is_available() and dist.is_initialized():
        return f" (rank {dist.get_rank()} of {dist.get_world_size()})"
    return ""


def finish(exit_code: int) -> int:
    """End a process of a multi-process run.

    Success: leave the process group cleanly. Failure: exit now, without the interpreter's
    teardown, which can block on a process group whose peers are gone; the launcher (or
    the peers' own timeout) ends the other ranks.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return exit_code
    if exit_code == 0:
        dist.destroy_process_group()
        _GROUPS.clear()
        return exit_code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
