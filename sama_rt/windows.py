"""Long videos as overlapping windows.

A clip longer than one denoising pass is cut into windows of `window` frames that share
`overlap` frames with the previous window. Window k > 0 continues window k-1: its first
`overlap` frames are pinned (in latent space) to window k-1's edited frames, and its
semantic latents to the first window's (the "anchor", SAMA's plan of the edit). The
duplicated overlap frames are dropped when stitching.
"""
from __future__ import annotations

import math
from itertools import islice
from typing import Iterable, Iterator, Optional

import numpy as np


def iterate_windows(frames: Iterable[np.ndarray], window: int, overlap: int) -> Iterator[np.ndarray]:
    """Yield [T, H, W, 3] windows; each after the first starts with the previous one's last
    `overlap` frames. Reads the source lazily: at most one window is held."""
    it = iter(frames)
    buffer = list(islice(it, window))
    while buffer:
        yield np.stack(buffer)
        fresh = list(islice(it, window - overlap))
        if not fresh:
            return
        buffer = buffer[-overlap:] + fresh


def count_windows(num_frames: int, window: int, overlap: int) -> int:
    if num_frames <= window:
        return 1
    return 1 + math.ceil((num_frames - window) / (window - overlap))


def window_seed(seed: int, index: int) -> int:
    """Window 0 uses the edit's seed (a one-window edit is the plain edit); later windows
    get their own deterministic seeds."""
    return seed if index == 0 else (seed * 1_000_003 + index) % (2**63 - 1)


def window_frame_ranges(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) source frames of each window (for callers that slice themselves)."""
    ranges, start = [], 0
    while True:
        end = min(start + window, num_frames)
        ranges.append((start, end))
        if end >= num_frames:
            return ranges
        start = end - overlap


def total_hint(num_frames: Optional[int], window: int, overlap: int) -> Optional[int]:
    return None if num_frames is None else count_windows(num_frames, window, overlap)
