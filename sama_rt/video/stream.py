"""Streaming video I/O: frames in and out a window at a time, so memory stays bounded.

`FrameReader` decodes lazily (host memory holds a few frames, not the clip); `VideoWriter`
encodes frames as they come into a hidden temporary file and, on `close`, carries the
source audio over and moves the file into place atomically — the same guarantees as
`write_video`.
"""
from __future__ import annotations

import heapq
import logging
import os
import tempfile
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from .io import (
    FALLBACK_FPS,
    FASTSTART_SUFFIXES,
    AudioTrack,
    PathLike,
    VideoError,
    _audio_track,
    _check_input_path,
    _check_target,
    _checked_audio_source,
    _copy_audio,
    _display_rotation,
    _open_input,
    _pad_to_even,
    _rate_fraction,
    _stream_rate,
    _to_video_frame,
    _video_stream,
)
from .pyav import av

logger = logging.getLogger(__name__)

REORDER_FRAMES = 16  # decoders emit in presentation order; a small heap guards odd streams


class FrameReader:
    """Iterate the upright RGB frames of a file, at most `max_frames`, lazily."""

    def __init__(self, path: PathLike, max_frames: Optional[int] = None):
        self.path = _check_input_path(path)
        self.max_frames = max_frames
        with _open_input(self.path) as container:
            stream = _video_stream(container, self.path)
            self.fps = _stream_rate(stream) or FALLBACK_FPS
            self.audio: Optional[AudioTrack] = _audio_track(container, self.path)

    def __iter__(self) -> Iterator[np.ndarray]:
        count = 0
        with _open_input(self.path) as container:
            stream = _video_stream(container, self.path)
            stream.codec_context.thread_type = "AUTO"
            heap: list = []
            rotation = None
            try:
                for packet in container.demux(stream):
                    for frame in packet.decode():
                        if rotation is None:
                            rotation = _display_rotation(frame, stream)
                        pts = frame.pts if frame.pts is not None else count + len(heap)
                        heapq.heappush(heap, (pts, len(heap) + count, frame.to_ndarray(format="rgb24")))
                        while len(heap) > REORDER_FRAMES:
                            yield self._upright(heapq.heappop(heap)[2], rotation)
                            count += 1
                            if self.max_frames is not None and count >= self.max_frames:
                                return
            except av.FFmpegError as error:
                if count == 0 and not heap:
                    raise VideoError(f"{self.path}: no frame of its video decodes ({error}); "
                                     "the file is truncated or corrupt") from error
                logger.warning("%s: decoding stopped (%s); the file looks truncated", self.path, error)
            while heap:
                yield self._upright(heapq.heappop(heap)[2], rotation)
                count += 1
                if self.max_frames is not None and count >= self.max_frames:
                    return
        if count == 0:
            raise VideoError(f"{self.path}: its video stream has no decodable frames; "
                             "pass a file with at least one frame")

    @staticmethod
    def _upright(image: np.ndarray, rotation: Optional[int]) -> np.ndarray:
        if rotation:
            return np.ascontiguousarray(np.rot90(image, k=rotation // 90, axes=(0, 1)))
        return image


class VideoWriter:
    """H.264 (yuv420p) written frame by frame; audio and the final rename happen in `close`.

    Use as a context manager: an exception inside the block removes the temporary files
    and leaves any existing target untouched.
    """

    def __init__(self, path: PathLike, fps: float, *, audio_from: Optional[PathLike] = None, crf: int = 25,
                 overwrite: bool = False, inputs: Sequence[PathLike] = ()):
        self.target = Path(path)
        self.rate: Fraction = _rate_fraction(fps, self.target)
        _check_target(self.target, [p for p in (audio_from, *inputs) if p is not None], overwrite)
        self.audio_source = _checked_audio_source(audio_from)
        self.crf = crf
        self.count = 0
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._video_only = self._temporary("video")
        self._output = None
        self._stream = None

    def _temporary(self, tag: str) -> Path:
        handle, name = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=f".{tag}.partial{self.target.suffix}",
                                        dir=self.target.parent)
        os.close(handle)
        return Path(name)

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 RGB frames [T, H, W, 3] (odd sizes padded to even, as write_video)."""
        frames = _pad_to_even(np.asarray(frames))
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise VideoError(f"{self.target}: frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
        if self._output is None:
            options = {"movflags": "+faststart"} if self.target.suffix.lower() in FASTSTART_SUFFIXES else {}
            try:
                self._output = av.open(str(self._video_only), mode="w", options=options)
            except (av.FFmpegError, ValueError) as error:
                raise VideoError(f"{self.target}: cannot write this kind of file ({error}); use .mp4, .mov or .mkv") from error
            self._stream = self._output.add_stream("libx264", rate=self.rate, options={"crf": str(self.crf)})
            self._stream.width, self._stream.height = frames.shape[2], frames.shape[1]
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.time_base = 1 / self.rate
        elif (frames.shape[2], frames.shape[1]) != (self._stream.width, self._stream.height):
            raise VideoError(f"{self.target}: frame size changed mid-stream")
        for image in frames:
            frame = _to_video_frame(image)
            frame.pts = self.count
            frame.time_base = self._stream.codec_context.time_base
            self._output.mux(self._stream.encode(frame))
            self.count += 1

    def close(self) -> Path:
        if self._output is None:
            raise VideoError(f"{self.target}: nothing to write (no frames)")
        self._output.mux(self._stream.encode(None))
        self._output.close()
        self._output = None
        if self.audio_source is None:
            os.replace(self._video_only, self.target)
            return self.target
        final = self._temporary("mux")
        try:
            self._mux_audio(final)
            os.replace(final, self.target)
        finally:
            final.unlink(missing_ok=True)
            self._video_only.unlink(missing_ok=True)
        return self.target

    def _mux_audio(self, final: Path) -> None:
        """Copy the encoded video packets and the source audio (aligned, cut) into `final`."""
        options = {"movflags": "+faststart"} if self.target.suffix.lower() in FASTSTART_SUFFIXES else {}
        with ExitStack() as stack:
            video_in = stack.enter_context(av.open(str(self._video_only), mode="r"))
            output = stack.enter_context(av.open(str(final), mode="w", options=options))
            source = stack.enter_context(_open_input(self.audio_source))
            in_stream = video_in.streams.video[0]
            out_stream = output.add_stream_from_template(in_stream)
            _copy_audio(output, source, self.audio_source, Fraction(self.count) / self.rate)
            for packet in video_in.demux(in_stream):
                if packet.dts is None:
                    continue
                packet.stream = out_stream
                output.mux(packet)

    def abort(self) -> None:
        if self._output is not None:
            try:
                self._output.close()
            except av.FFmpegError:
                pass
            self._output = None
        self._video_only.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
