"""Wall-clock timing of pipeline stages (synchronising the device so times are real)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch


class StageTimer:
    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        self.stages: dict[str, float] = {}
        self.steps: list[float] = []  # per denoising step
        self._last_step = None

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - start
            if name == "denoise":
                self._last_step = None

    def step(self) -> None:
        """Mark the end of a denoising step (the first mark times from the stage start)."""
        self.sync()
        now = time.perf_counter()
        if self._last_step is not None:
            self.steps.append(now - self._last_step)
        self._last_step = now

    def start_steps(self) -> None:
        self.sync()
        self._last_step = time.perf_counter()

    def as_dict(self) -> dict:
        out = dict(self.stages)
        out["denoise_per_step"] = list(self.steps)
        return out


def format_timings(timings: dict) -> str:
    """A small aligned table of stage times."""
    rows = [(k, v) for k, v in timings.items() if not isinstance(v, list)]
    steps = timings.get("denoise_per_step") or []
    width = max(len(k) for k, _ in rows) if rows else 10
    lines = [f"{k:<{width}}  {v:8.3f} s" for k, v in rows]
    if steps:
        mean = sum(steps) / len(steps)
        lines.append(f"{'per step':<{width}}  {mean:8.3f} s  ({len(steps)} steps)")
    total = sum(v for _, v in rows)
    lines.append(f"{'total':<{width}}  {total:8.3f} s")
    return "\n".join(lines)
