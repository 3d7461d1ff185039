"""Frames to model input and back, the way the released SAMA script prepares video.

Source frames go into one of a fixed set of resolution buckets (about 480x832 pixels
each, sides multiple of 32): the bucket whose aspect ratio is closest wins, the frame is
centre-cropped to that aspect and resized with PIL's bicubic filter. The frame count is
padded to 4k+1 (the VAE compresses time by 4, plus the first frame) by repeating the
last frame; `finish_frames` trims the edited frames back to the source's count.

The edited video is written at the bucket resolution, as the official script does: the
crop removed the borders, so there is nothing to restore them from, and resizing back
would only add a second resampling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

# The official default: --height 480 --width 832 set this pixel budget.
DEFAULT_PIXEL_BUDGET = 480 * 832
BUCKET_MULTIPLE = 32
MIN_ASPECT = 0.5  # width / height
MAX_ASPECT = 2.0
TEMPORAL_STRIDE = 4  # the VAE encodes 4k+1 frames into k+1 latent frames


class Bucket(NamedTuple):
    """A target resolution; a (width, height) tuple."""

    width: int
    height: int

    @property
    def aspect(self) -> float:
        return self.width / self.height


class CropBox(NamedTuple):
    """Pixel box (left, top, right, bottom) cut from the source frame, PIL's convention."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


@dataclass(frozen=True, eq=False)
class PreparedClip:
    """Model-ready frames and what it takes to map the model's output back to the source."""

    frames: np.ndarray  # uint8 [T', bucket.height, bucket.width, 3], T' = 4k+1 >= num_frames
    num_frames: int  # source frames before padding; outputs are trimmed to this
    source_size: tuple[int, int]  # (width, height) of the source frames
    crop_box: CropBox  # region of the source frames that was resized to the bucket
    bucket: Bucket

    @property
    def num_padded(self) -> int:
        return int(self.frames.shape[0]) - self.num_frames


def resolution_buckets(
    pixel_budget: int = DEFAULT_PIXEL_BUDGET,
    multiple: int = BUCKET_MULTIPLE,
    min_aspect: float = MIN_ASPECT,
    max_aspect: float = MAX_ASPECT,
) -> tuple[Bucket, ...]:
    """Buckets of about `pixel_budget` pixels, in order of increasing height.

    Heights run over the multiples of `multiple` that can reach the aspect limits; each
    width is the budget over the height, rounded to a multiple (Python's round: halves to
    even, as the official code). Buckets outside [min_aspect, max_aspect] are dropped.
    The default gives 15 buckets, 896x448 ... 448x896.
    """
    if pixel_budget <= 0 or multiple <= 0:
        raise ValueError(f"pixel_budget and multiple must be positive, got {pixel_budget}, {multiple}")
    lowest = math.floor(math.sqrt(pixel_budget / max_aspect) / multiple) * multiple
    highest = math.ceil(math.sqrt(pixel_budget / min_aspect) / multiple) * multiple
    buckets = []
    for height in range(max(lowest, multiple), highest + 1, multiple):
        width = round(pixel_budget / height / multiple) * multiple
        if width > 0 and min_aspect <= width / height <= max_aspect:
            buckets.append(Bucket(width, height))
    return tuple(buckets)


def choose_bucket(width: int, height: int, buckets: Sequence[Bucket] | None = None) -> Bucket:
    """The bucket whose aspect ratio is closest to width / height; the first one on a tie."""
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    candidates = resolution_buckets() if buckets is None else tuple(Bucket(*b) for b in buckets)
    if not candidates:
        raise ValueError("no resolution buckets to choose from")
    aspect = width / height
    best, best_distance = candidates[0], math.inf
    for bucket in candidates:
        distance = abs(bucket.width / bucket.height - aspect)
        if distance < best_distance:  # strict: an equal distance keeps the earlier bucket
            best, best_distance = bucket, distance
    return best


def centre_crop_box(width: int, height: int, bucket: Bucket) -> CropBox:
    """Largest centred box of the bucket's aspect, its size truncated to whole pixels.

    The arithmetic (divide, then multiply, then int) follows the official script so the
    same sources give the same boxes, including where float rounding lands just below
    an integer.
    """
    if (width, height) == (bucket.width, bucket.height):
        return CropBox(0, 0, width, height)
    if height / width < bucket.height / bucket.width:  # source wider than the bucket
        crop_width = int(height / bucket.height * bucket.width)
        left = (width - crop_width) // 2
        return CropBox(left, 0, left + crop_width, height)
    crop_height = int(width / bucket.width * bucket.height)
    top = (height - crop_height) // 2
    return CropBox(0, top, width, top + crop_height)


def crop_and_resize(frames: np.ndarray, box: CropBox, bucket: Bucket) -> np.ndarray:
    """Cut `box` from each uint8 RGB frame [T, H, W, 3] and resize it to the bucket (bicubic).

    Frames already of the bucket's size are returned unchanged, as in the official script.
    """
    if frames.shape[1:3] == (bucket.height, bucket.width):
        return frames
    out = np.empty((frames.shape[0], bucket.height, bucket.width, 3), np.uint8)
    for index, frame in enumerate(frames):
        cropped = Image.fromarray(frame[box.top:box.bottom, box.left:box.right])
        out[index] = np.asarray(cropped.resize((bucket.width, bucket.height), Image.Resampling.BICUBIC))
    return out


def pad_frames_4k1(frames: np.ndarray) -> tuple[np.ndarray, int]:
    """Repeat the last frame until the count is 4k+1; returns (frames, original count)."""
    count = int(frames.shape[0])
    if count < 1:
        raise ValueError("cannot pad an empty clip: there is no last frame to repeat")
    missing = (1 - count) % TEMPORAL_STRIDE
    if missing == 0:
        return frames, count
    repeats = np.repeat(frames[-1:], missing, axis=0)
    return np.concatenate([frames, repeats], axis=0), count


def trim_frames(frames: np.ndarray, count: int) -> np.ndarray:
    """Undo `pad_frames_4k1`: the first `count` frames."""
    if not 1 <= count <= frames.shape[0]:
        raise ValueError(f"cannot trim {frames.shape[0]} frames to {count}")
    return frames[:count]


def prepare_frames(
    frames: np.ndarray, buckets: Sequence[Bucket] | None = None
) -> PreparedClip:
    """Source frames (uint8 RGB [T, H, W, 3], upright) -> bucket-sized, 4k+1 frames."""
    frames = _checked_frames(frames)
    height, width = frames.shape[1:3]
    bucket = choose_bucket(width, height, buckets)
    box = centre_crop_box(width, height, bucket)
    resized = crop_and_resize(frames, box, bucket)
    padded, count = pad_frames_4k1(resized)
    return PreparedClip(
        frames=padded, num_frames=count, source_size=(width, height), crop_box=box, bucket=bucket
    )


def finish_frames(prepared: PreparedClip, frames: np.ndarray) -> np.ndarray:
    """Edited frames for `prepared` -> the frames to write: trimmed to the source's count,
    at the bucket resolution (see the module docstring)."""
    expected = (prepared.bucket.height, prepared.bucket.width)
    if tuple(frames.shape[1:3]) != expected:
        raise ValueError(f"edited frames are {frames.shape[2]}x{frames.shape[1]}, expected the "
                         f"bucket's {expected[1]}x{expected[0]}")
    return trim_frames(frames, prepared.num_frames)


def frames_to_tensor(
    frames: np.ndarray, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """uint8 RGB [T, H, W, 3] -> [1, 3, T, H, W] in [-1, 1] (x * 2/255 - 1, in float32)."""
    frames = _checked_frames(frames)
    video = torch.from_numpy(frames).to(device=device, dtype=torch.float32)
    video = video * (2.0 / 255.0) - 1.0
    return video.permute(3, 0, 1, 2).unsqueeze(0).to(dtype)


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """[1, 3, T, H, W] or [3, T, H, W] in [-1, 1] -> uint8 RGB [T, H, W, 3].

    Values are clamped to [-1, 1], mapped by (x + 1) * 127.5 and rounded to the nearest
    level; the official script truncates instead, which darkens every pixel by half a
    level on average.
    """
    if video.dim() == 5:
        if video.shape[0] != 1:
            raise ValueError(f"expected one video, got a batch of {video.shape[0]}")
        video = video[0]
    if video.dim() != 4 or video.shape[0] != 3:
        raise ValueError(f"expected [1, 3, T, H, W] or [3, T, H, W], got {list(video.shape)}")
    video = video.detach().to(device="cpu", dtype=torch.float32)
    if not torch.isfinite(video).all():
        raise ValueError("the decoded video holds NaN or infinite values; the numbers went wrong upstream")
    levels = ((video.clamp(-1.0, 1.0) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return levels.permute(1, 2, 3, 0).contiguous().numpy()


def _checked_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"expected uint8 RGB frames [T, H, W, 3] with T >= 1, got {frames.dtype} {list(frames.shape)}")
    return frames
