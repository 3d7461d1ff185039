"""`sama-rt demo`: the whole edit path on a synthesized clip with the tiny model, on CPU.

Random tiny weights make no meaningful edit (expect coloured noise shaped by the source);
the demo shows that every stage runs and what it costs. For a real edit, use the released
weights: `sama-rt edit in.mp4 "Replace the swan with a white cat" -o out.mp4
--wan-dir Wan2.1-T2V-14B --sama-checkpoint SAMA-14B.safetensors`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np

from .editor import Editor, ProgressCallback
from .params import EditParams
from .timing import format_timings
from .video.io import write_video
from .video.synth import synth_clip

DEMO_SIZE = (224, 128)  # (width, height): one of the buckets of the demo's pixel budget
DEMO_FRAMES = 17
DEMO_FPS = 24
DEMO_INSTRUCTION = "Turn the red square into a yellow star"


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """[T, H, W, 3] + [T, H, W', 3] -> [T, H, W + W', 3], sources resized to the same height."""
    if left.shape[1] != right.shape[1]:
        from PIL import Image

        h = right.shape[1]
        left = np.stack([
            np.asarray(Image.fromarray(f).resize((round(f.shape[1] * h / f.shape[0]), h), Image.BICUBIC))
            for f in left
        ])
    return np.concatenate([left, right], axis=2)


def frame_strip(source: np.ndarray, edited: np.ndarray, count: int = 4) -> np.ndarray:
    """Rows: source frames above edited frames, `count` evenly spaced columns."""
    idx = np.linspace(0, len(edited) - 1, num=min(count, len(edited))).round().astype(int)
    pair = side_by_side(source[: len(edited)], edited)  # resize source to the edited height
    src = pair[:, :, : pair.shape[2] - edited.shape[2]]
    top = np.concatenate(list(src[idx]), axis=1)
    bottom = np.concatenate(list(edited[idx]), axis=1)
    if top.shape[1] != bottom.shape[1]:  # aspect changed by the crop: pad the narrower row
        width = max(top.shape[1], bottom.shape[1])
        top = np.pad(top, ((0, 0), (0, width - top.shape[1]), (0, 0)))
        bottom = np.pad(bottom, ((0, 0), (0, width - bottom.shape[1]), (0, 0)))
    return np.concatenate([top, bottom], axis=0)


def run_demo(out_dir, steps: int = 8, overwrite: bool = True, progress: Optional[ProgressCallback] = None,
             stream=sys.stdout) -> dict[str, Path]:
    from PIL import Image

    from .video.io import read_video

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = synth_clip(out_dir / "input.mp4", num_frames=DEMO_FRAMES, size=DEMO_SIZE, fps=DEMO_FPS, audio=True)
    editor = Editor.from_config("tiny", seed=0, device="cpu")
    params = EditParams(steps=steps, pixel_budget=DEMO_SIZE[0] * DEMO_SIZE[1], max_frames=DEMO_FRAMES)
    result = editor.edit(source, DEMO_INSTRUCTION, params, progress=progress)
    edited = result.save(out_dir / "edited.mp4", overwrite=overwrite, crf=params.crf)
    src_frames = read_video(source).frames
    comparison = write_video(out_dir / "comparison.mp4", side_by_side(src_frames[: len(result.frames)], result.frames),
                             result.fps, audio_from=source, overwrite=overwrite, crf=params.crf)
    strip = out_dir / "comparison.png"
    Image.fromarray(frame_strip(src_frames, result.frames)).save(strip)
    print(f"instruction: {DEMO_INSTRUCTION!r} (tiny random weights: no meaningful edit)", file=stream)
    print(f"source      {source}", file=stream)
    print(f"edited      {edited}", file=stream)
    print(f"comparison  {comparison}  and  {strip}", file=stream)
    print(format_timings(result.timings), file=stream)
    print("real weights: sama-rt edit IN.mp4 \"INSTRUCTION\" -o OUT.mp4 --wan-dir Wan2.1-T2V-14B "
          "--sama-checkpoint SAMA-14B.safetensors", file=stream)
    return {"input": source, "edited": edited, "comparison": comparison, "strip": strip}
