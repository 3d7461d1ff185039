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


def stitch(windows: Iterable, crossfade: int = 0) -> Iterator[np.ndarray]:
    """Output frames from edited windows (`EditedWindow`s), dropping repeated overlap frames.

    crossfade > 0: the last `crossfade` frames of each window are held back and blended
    linearly with the next window's version of the same source frames (which it re-edited
    inside its overlap), so a seam fades over `crossfade` frames instead of cutting.
    """
    held: Optional[np.ndarray] = None
    for window in windows:
        new = window.frames[window.new_from:]
        if held is not None:
            if crossfade:
                again = window.frames[window.new_from - len(held): window.new_from]
                ramp = (np.arange(1, len(held) + 1, dtype=np.float32) / (len(held) + 1))[:, None, None, None]
                held = np.round(held * (1 - ramp) + again * ramp).astype(np.uint8)
            yield held
            held = None
        keep = min(crossfade, len(new) - 1, window.new_from or crossfade) if crossfade else 0
        if keep > 0:
            yield new[:-keep]
            held = new[-keep:]
        else:
            yield new
    if held is not None:
        yield held
