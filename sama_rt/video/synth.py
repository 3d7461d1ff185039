"""Synthetic clips for tests and demos: moving coloured shapes, optional rising-tone audio.

Every clip is a pure function of its arguments (no randomness), so a test can rebuild the
frames it expects with `synth_frames` and compare them with what a reader returns.
"""
from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from .pyav import av

logger = logging.getLogger(__name__)

# Short codec names -> (encoder, pixel format for even sizes, pixel format for odd sizes).
# 4:2:0 needs even sizes; libx264 and ffv1 take odd sizes in 4:4:4.
VIDEO_ENCODERS = {
    "h264": ("libx264", "yuv420p", "yuv444p"),
    "hevc": ("libx265", "yuv420p", None),
    "vp9": ("libvpx-vp9", "yuv420p", "yuv420p"),
    "av1": ("libsvtav1", "yuv420p", "yuv420p"),
    "mpeg4": ("mpeg4", "yuv420p", "yuv420p"),
    "ffv1": ("ffv1", "yuv444p", "yuv444p"),
}
AUDIO_SAMPLE_FORMATS = {"fltp": np.float32, "flt": np.float32, "s16": np.int16, "s16p": np.int16,
                        "s32": np.int32, "s32p": np.int32, "u8": np.uint8, "u8p": np.uint8}
# A rising tone (chirp): unlike a steady sine, no two windows of it look alike, so tests
# can check that audio stays aligned with the video to the sample.
TONE_START_HZ = 300.0
TONE_SWEEP_HZ_PER_S = 1000.0
# The sweep starts over every 4 s, so it tops out at 4.3 kHz: below the 8 kHz that
# 16 kHz audio can carry.
TONE_SWEEP_PERIOD_S = 4.0
TONE_AMPLITUDE = 0.3
VFR_TIME_BASE = Fraction(1, 90000)  # the MPEG clock: fine enough for any frame spacing


def synth_frames(num_frames: int, size: tuple[int, int]) -> np.ndarray:
    """Upright uint8 RGB frames [T, H, W, 3]: a gradient with a red square moving right,
    a green disc moving down and a blue bar in the top-left corner (marks "up" and "left")."""
    width, height = size
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    background = np.stack(np.broadcast_arrays(
        40 + 100 * x / max(width - 1, 1),
        40 + 100 * y / max(height - 1, 1),
        np.full_like(x * y, 90.0),
    ), axis=-1)
    side = max(2, min(width, height) // 4)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for index in range(num_frames):
        phase = index / max(num_frames - 1, 1)
        image = background.copy()
        left = int(phase * (width - side))
        top = (height - side) // 2
        image[top:top + side, left:left + side] = (230, 30, 30)
        centre_x, centre_y = width / 3, side / 2 + phase * (height - side)
        disc = (x - centre_x) ** 2 + (y - centre_y) ** 2 <= (side / 2) ** 2
        image[disc] = (30, 220, 60)
        image[: max(1, height // 8), : max(1, width // 3)] = (30, 40, 230)
        frames[index] = np.clip(image, 0, 255).astype(np.uint8)
    return frames


def frame_times(num_frames: int, fps: float, vfr: bool) -> np.ndarray:
    """Start time in seconds of each frame. VFR clips alternate short and long frames
    (0.5x and 1.5x the nominal spacing) so their average rate stays close to `fps`."""
    spacing = np.full(num_frames, 1.0 / fps)
    if vfr:
        spacing[0::2] *= 0.5
        spacing[1::2] *= 1.5
    return np.concatenate([[0.0], np.cumsum(spacing)[:-1]])


def synth_clip(
    path: str | os.PathLike,
    num_frames: int = 17,
    size: tuple[int, int] = (96, 64),
    fps: float = 24,
    audio: bool = True,
    vfr: bool = False,
    rotation: int | None = None,
    codec: str = "h264",
    *,
    audio_codec: str = "aac",
    sample_rate: int = 16000,
    rotation_tag: str = "matrix",
    crf: int = 18,
    video_start_s: float = 0.0,
) -> Path:
    """Write a deterministic clip of `synth_frames(num_frames, size)` and return its path.

    size: (width, height) as displayed. rotation: counter-clockwise degrees a player
    must turn the stored frames (as `VideoClip.rotation` reports it); the frames are
    stored turned the other way, so a reader that honours the rotation gets the upright
    frames back. rotation_tag: "matrix" records it as a display matrix, "metadata" as the
    legacy clockwise "rotate" stream tag. Audio: a rising tone as long as the video,
    starting at time 0; video_start_s delays the first frame against it (as in files cut
    from broadcasts or edited without re-encoding). The container follows the extension.
    """
    if codec not in VIDEO_ENCODERS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {sorted(VIDEO_ENCODERS)}")
    if rotation_tag not in ("matrix", "metadata"):
        raise ValueError(f"rotation_tag must be 'matrix' or 'metadata', got {rotation_tag!r}")
    quarter_turns = ((rotation or 0) // 90) % 4
    if (rotation or 0) % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")

    upright = synth_frames(num_frames, size)
    # Stored so that turning counter-clockwise by `rotation` shows the upright frames.
    stored = np.ascontiguousarray(np.rot90(upright, k=-quarter_turns, axes=(1, 2)))
    height, width = stored.shape[1:3]
    encoder, even_format, odd_format = VIDEO_ENCODERS[codec]
    pixel_format = even_format if width % 2 == 0 and height % 2 == 0 else odd_format
    if pixel_format is None:
        raise ValueError(f"{codec} cannot encode odd sizes ({width}x{height})")

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    times = frame_times(num_frames, fps, vfr)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(target), mode="w") as output:
        options = {"crf": str(crf)} if encoder in ("libx264", "libx265") else {}
        video = output.add_stream(encoder, rate=rate, options=options)
        video.width, video.height, video.pix_fmt = width, height, pixel_format
        time_base = VFR_TIME_BASE if vfr else 1 / rate
        video.codec_context.time_base = time_base
        if quarter_turns:
            if rotation_tag == "matrix":
                if not hasattr(video, "set_display_rotation"):
                    raise RuntimeError("this PyAV cannot write display matrices; upgrade it or "
                                       "pass rotation_tag='metadata'")
                video.set_display_rotation(quarter_turns * 90)
            else:
                video.metadata["rotate"] = str((-quarter_turns * 90) % 360)  # clockwise
        if audio:
            _write_tone(output, audio_codec, sample_rate, video_start_s + num_frames / fps)
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(stored[index], format="rgb24")
            frame.pts = round((video_start_s + times[index]) / time_base)
            frame.time_base = time_base
            output.mux(video.encode(frame))
        output.mux(video.encode(None))
    logger.debug("synthesised %s: %d frames %dx%d at %s fps", target, num_frames, width, height, fps)
    return target


def tone(num_samples: int, sample_rate: int) -> np.ndarray:
    """Mono rising tone, float32 in +-TONE_AMPLITUDE: its frequency climbs from
    TONE_START_HZ by TONE_SWEEP_HZ_PER_S and starts over every TONE_SWEEP_PERIOD_S."""
    t = np.arange(num_samples, dtype=np.float64) / sample_rate
    in_sweep = np.mod(t, TONE_SWEEP_PERIOD_S)
    phase = 2 * np.pi * (TONE_START_HZ * t + 0.5 * TONE_SWEEP_HZ_PER_S * in_sweep * in_sweep)
    return (TONE_AMPLITUDE * np.sin(phase)).astype(np.float32)


def _write_tone(output, codec: str, sample_rate: int, duration_s: float) -> None:
    stream = output.add_stream(codec, rate=sample_rate)
    stream.layout = "mono"  # set explicitly: the encoder's default layout is not mono
    sample_format = stream.codec_context.format.name
    dtype = AUDIO_SAMPLE_FORMATS[sample_format]
    signal = tone(round(duration_s * sample_rate), sample_rate)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        middle = (int(info.max) + int(info.min) + 1) / 2
        signal = np.round(signal * (info.max - middle) + middle).astype(dtype)
    chunk = 1024
    for offset in range(0, len(signal), chunk):
        frame = av.AudioFrame.from_ndarray(signal[None, offset:offset + chunk].copy(),
                                           format=sample_format, layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = offset
        frame.time_base = Fraction(1, sample_rate)
        output.mux(stream.encode(frame))
    output.mux(stream.encode(None))
