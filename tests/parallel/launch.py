"""Start N ranks of a command the way torchrun does (RANK, WORLD_SIZE, ... set) and wait.

Unlike torchrun, nothing here ends the other ranks when one fails: a test sees whether
the ranks end on their own.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RankResult:
    rank: int
    returncode: int  # -9 when the test had to kill it
    stdout: str
    stderr: str
    seconds: float  # from the launch until it was seen to exit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world_size: int, port: int) -> dict:
    env = dict(os.environ)
    env.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    return env


def launch(world_size: int, args: list[str], timeout: float) -> tuple[list[RankResult], float]:
    """Run `python ARGS` as ranks 0..N-1; -> (per-rank results, seconds until the last exited)."""
    port = free_port()
    start = time.monotonic()
    procs = [
        subprocess.Popen([sys.executable, *args], cwd=REPO, env=rank_env(r, world_size, port),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in range(world_size)
    ]
    results = []
    for rank, proc in enumerate(procs):
        left = max(0.1, timeout - (time.monotonic() - start))
        try:
            out, err = proc.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results.append(RankResult(rank, proc.returncode, out, err, time.monotonic() - start))
    return results, time.monotonic() - start
