"""Time per output frame of windowed long-video edits: cost must grow linearly with length.

    python benchmarks/long_video.py [--config tiny] [--lengths 81,161,321] [--json]

Random weights: the mechanism (windows, pinning, streaming) is what this measures; edit
quality across windows cannot be judged without the released weights.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from sama_rt import Editor, EditParams
from sama_rt.video.synth import synth_clip
from sama_rt.windows import count_windows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--lengths", default="81,161,321")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--resolution", default="64x112", help="pixel budget HEIGHTxWIDTH")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    h, w = (int(v) for v in args.resolution.split("x"))
    params = EditParams(steps=args.steps, pixel_budget=h * w)
    editor = Editor.from_config(args.config, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        warm = synth_clip(Path(tmp) / "warm.mp4", num_frames=5, size=(w, h), audio=False)
        editor.edit_to_file(warm, "make it snow", Path(tmp) / "warm_out.mp4", params)  # one-off init costs
        for n in (int(v) for v in args.lengths.split(",")):
            clip = synth_clip(Path(tmp) / f"in{n}.mp4", num_frames=n, size=(w, h), fps=24, audio=True)
            start = time.perf_counter()
            out = editor.edit_to_file(clip, "make it snow", Path(tmp) / f"out{n}.mp4", params)
            seconds = time.perf_counter() - start
            rows.append({"frames": n, "windows": count_windows(n, params.window, params.overlap),
                         "seconds": seconds, "per_frame_s": seconds / out.num_frames,
                         "stages": {k: v for k, v in out.timings.items() if not isinstance(v, list)}})
    if args.json:
        print(json.dumps(rows))
        return
    print(f"config {args.config}, {args.steps} steps, window {params.window}, overlap {params.overlap}, "
          f"buckets of ~{h}x{w} pixels")
    print(f"{'frames':>7} {'windows':>8} {'total s':>9} {'s/frame':>9}")
    for r in rows:
        print(f"{r['frames']:>7} {r['windows']:>8} {r['seconds']:>9.2f} {r['per_frame_s']:>9.4f}")


if __name__ == "__main__":
    main()
