"""Video files in and out: decode any file FFmpeg reads to upright RGB frames, write H.264.

Reading returns every frame in presentation order (variable frame rate sources keep
their frames; the clip reports the average rate), upright according to the rotation
the container records, as uint8 RGB. Writing is atomic (a temporary file beside the
target, then `os.replace`), never replaces an input of the edit, and carries the
source's audio over: copied packet for packet when the output container accepts the
codec, re-encoded to AAC otherwise, cut to the frames written.
"""
from __future__ import annotations

import logging
import math
import numbers
import os
import struct
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .pyav import av

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

# What the official script assumes when the container records no frame rate.
FALLBACK_FPS = 20.0
# Largest denominator accepted when turning a float rate into the encoder's rational
# rate: 1001 keeps the NTSC rates (24000/1001, 30000/1001) exact.
MAX_RATE_DENOMINATOR = 1001
# Rates the AAC encoder accepts; other rates are resampled to 48 kHz when re-encoding.
AAC_SAMPLE_RATES = frozenset(
    (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
)
AAC_FALLBACK_RATE = 48000
# Layout for a channel count when the source names none (FFmpeg's defaults); more than
# eight channels are mixed down to stereo.
DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
# Containers whose index can be moved to the front so players start before the end arrives.
FASTSTART_SUFFIXES = frozenset((".mp4", ".m4v", ".mov"))
# ISO base media files (mp4/mov) keep their index in a top-level 'moov' box.
ISO_MEDIA_SUFFIXES = frozenset((".mp4", ".m4v", ".mov", ".3gp", ".m4a"))


class VideoError(ValueError):
    """A video file that cannot be used; the message names the file and the remedy."""


@dataclass(frozen=True)
class AudioTrack:
    """An audio stream found in a source file; `write_video(audio_from=source)` carries it over."""

    source: Path
    stream_index: int
    codec: str
    sample_rate: int
    channels: int
    layout: str
    duration_s: float | None


@dataclass(frozen=True)
class VideoInfo:
    """What a file holds, read from its headers and first frame (see `probe_video`)."""

    path: Path
    width: int  # as displayed, i.e. after `rotation`
    height: int
    fps: float
    num_frames: int  # from the container's count when it has one, else duration * fps
    duration_s: float
    rotation: int  # degrees counter-clockwise the stored frames are turned for display
    video_codec: str
    has_audio: bool
    audio: AudioTrack | None


@dataclass(frozen=True, eq=False)
class VideoClip:
    """Decoded frames of a file, upright, in presentation order."""

    path: Path
    frames: np.ndarray  # uint8 [T, H, W, 3] RGB
    fps: float  # average rate of the stream (frames / duration); FALLBACK_FPS if unknown
    duration_s: float  # time the returned frames cover at `fps`: len(frames) / fps
    rotation: int  # counter-clockwise degrees applied to make the frames upright
    audio: AudioTrack | None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])


# --------------------------------------------------------------------------- reading


def probe_video(path: PathLike) -> VideoInfo:
    """Describe a video file without decoding it (only its first frame, for the rotation)."""
    source = _check_input_path(path)
    with _open_input(source) as container:
        stream = _video_stream(container, source)
        first = _first_frame(container, stream, source)
        rotation = _display_rotation(first, stream)
        width, height = first.width, first.height
        if rotation % 180:
            width, height = height, width
        fps = _stream_rate(stream) or FALLBACK_FPS
        duration_s = _stream_duration(stream, container)
        if stream.frames:
            num_frames = int(stream.frames)
        elif duration_s is not None:
            num_frames = max(1, round(duration_s * fps))
        else:
            num_frames = 0  # unknown: the container records neither count nor duration
        audio = _audio_track(container, source)
        return VideoInfo(
            path=source,
            width=width,
            height=height,
            fps=fps,
            num_frames=num_frames,
            duration_s=duration_s if duration_s is not None else num_frames / fps,
            rotation=rotation,
            video_codec=_codec_name(stream),
            has_audio=audio is not None,
            audio=audio,
        )


def read_video(path: PathLike, max_frames: int | None = None) -> VideoClip:
    """Decode the first `max_frames` frames (all when None) of a file as upright RGB.

    Frames are kept in presentation-timestamp order, one per decoded frame: a variable
    frame rate source is not resampled, its average rate is reported instead. A file cut
    short (a partial download) yields the frames that decode, with a warning.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be a positive number of frames or None, got {max_frames}")
    source = _check_input_path(path)
    with _open_input(source) as container:
        stream = _video_stream(container, source)
        stream.codec_context.thread_type = "AUTO"  # frame + slice threads
        decoded, rotation = _decode_frames(container, stream, source, max_frames)
        expected = int(stream.frames or 0)
        if max_frames is None and expected > len(decoded):
            logger.warning(
                "%s: decoded %d of the %d frames its header lists; the file may be truncated",
                source, len(decoded), expected,
            )
        fps = _stream_rate(stream) or _rate_from_timestamps(decoded, stream) or FALLBACK_FPS
        audio = _audio_track(container, source)

    frames = np.stack([image for _, image in decoded])
    if rotation:
        # np.rot90 turns counter-clockwise for positive k, the convention of `rotation`.
        frames = np.ascontiguousarray(np.rot90(frames, k=rotation // 90, axes=(1, 2)))
    return VideoClip(
        path=source,
        frames=frames,
        fps=fps,
        duration_s=len(frames) / fps,
        rotation=rotation,
        audio=audio,
    )


def _check_input_path(path: PathLike) -> Path:
    source = Path(path)
    if not source.exists():
        raise VideoError(f"{source}: no such file; check the path")
    if source.is_dir():
        raise VideoError(f"{source}: is a directory; pass the path of a video file inside it")
    if source.stat().st_size == 0:
        raise VideoError(f"{source}: the file is empty; re-export or re-download it")
    return source


@contextmanager
def _open_input(source: Path) -> Iterator[av.container.InputContainer]:
    if _iso_media_index_missing(source):
        raise VideoError(
            f"{source}: the file is truncated or its recording was never finalised (its 'moov' "
            "index is missing or cut short); re-export or re-download it"
        )
    try:
        container = av.open(str(source), mode="r")
    except av.EOFError as error:
        raise VideoError(
            f"{source}: the file ends before its streams are described: it is truncated or an "
            "empty recording; re-export or re-download it"
        ) from error
    except av.FFmpegError as error:
        raise VideoError(
            f"{source}: FFmpeg cannot read it ({error.strerror or error}): it is not a video, "
            "or a damaged or truncated one; check the file, re-export or re-download it"
        ) from error
    try:
        yield container
    finally:
        container.close()


def _iso_media_index_missing(source: Path) -> bool:
    """True for an mp4/mov that starts like one but whose top-level 'moov' box is absent
    or runs past the end of the file.

    FFmpeg only reports "invalid data" for such a file; the usual cause is a copy or a
    recording that stopped before the index (written last by default) reached the disk.
    A cut inside the media data ('mdat') is not caught here: those frames still decode.
    """
    if source.suffix.lower() not in ISO_MEDIA_SUFFIXES:
        return False
    boxes: dict[bytes, bool] = {}  # box type -> complete
    first = None
    size_total = source.stat().st_size
    with open(source, "rb") as handle:
        position = 0
        while position + 8 <= size_total and len(boxes) < 1024:
            handle.seek(position)
            size, kind = struct.unpack(">I4s", handle.read(8))
            if size == 1:  # 64-bit size follows the type
                size = struct.unpack(">Q", handle.read(8))[0]
            elif size == 0:  # box runs to the end of the file
                size = size_total - position
            if size < 8:
                break
            first = first or kind
            boxes[kind] = boxes.get(kind, True) and position + size <= size_total
            position += size
    return first == b"ftyp" and not boxes.get(b"moov", False)


def _video_stream(container: av.container.InputContainer, source: Path) -> av.VideoStream:
    if not container.streams.video:
        kinds = sorted({stream.type for stream in container.streams})
        holds = f"it holds only {', '.join(kinds)}" if kinds else "it holds no streams at all"
        raise VideoError(f"{source}: has no video stream ({holds}); pass a file with video")
    return container.streams.video[0]


def _first_frame(container, stream, source: Path) -> av.VideoFrame:
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                return frame
    except av.FFmpegError as error:
        raise VideoError(f"{source}: its video cannot be decoded ({error}); the file is corrupt") from error
    raise VideoError(f"{source}: its video stream has no decodable frames; pass a file with at least one frame")


def _decode_frames(
    container, stream, source: Path, max_frames: int | None
) -> tuple[list[tuple[int, np.ndarray]], int]:
    """Decoded (pts, RGB image) pairs sorted by pts, and the display rotation."""
    decoded: list[tuple[int, np.ndarray]] = []
    rotation = None

    def keep(frame: av.VideoFrame) -> None:
        nonlocal rotation
        if rotation is None:
            rotation = _display_rotation(frame, stream)
        # pts can be missing (raw streams in some AVI files): decode order is then display order.
        pts = frame.pts if frame.pts is not None else len(decoded)
        decoded.append((pts, frame.to_ndarray(format="rgb24")))

    def enough() -> bool:
        return max_frames is not None and len(decoded) >= max_frames

    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                keep(frame)
            if enough():
                break
    except av.FFmpegError as error:
        if not decoded:
            raise VideoError(
                f"{source}: no frame of its video decodes ({error}); the file is truncated or corrupt"
            ) from error
        logger.warning("%s: decoding stopped after %d frames (%s); the file looks truncated",
                       source, len(decoded), error)
        try:  # frames the decoder still holds back for reordering
            for frame in stream.codec_context.decode(None):
                keep(frame)
        except av.FFmpegError:
            pass
    if not decoded:
        raise VideoError(f"{source}: its video stream has no decodable frames; pass a file with at least one frame")
    decoded.sort(key=lambda item: item[0])
    if max_frames is not None:
        decoded = decoded[:max_frames]
    return decoded, rotation or 0


def _display_rotation(frame: av.VideoFrame, stream: av.VideoStream) -> int:
    """Counter-clockwise degrees (0, 90, 180, 270) that make the stored frame upright.

    The display matrix (mp4/mov/mkv side data, carried on every decoded frame) wins;
    files from older muxers may only carry a "rotate" stream tag, which counts clockwise.
    A mirroring in the matrix (no camera writes one) is not applied.
    """
    degrees = getattr(frame, "rotation", 0) or 0  # older PyAV releases lack VideoFrame.rotation
    if not degrees:
        tags = {key.lower(): value for key, value in stream.metadata.items()}
        try:
            degrees = -float(tags.get("rotate", 0))
        except ValueError:
            logger.warning("ignoring unreadable rotate tag %r", tags["rotate"])
            degrees = 0
    quarter_turns = round(degrees / 90)
    if abs(degrees - 90 * quarter_turns) > 1:
        logger.warning("rotation of %.1f degrees is not a multiple of 90; frames are left as stored", degrees)
        return 0
    return (quarter_turns % 4) * 90


def _stream_rate(stream: av.VideoStream) -> float | None:
    rate = stream.average_rate
    if rate is None or rate <= 0:
        return None
    return float(rate)


def _rate_from_timestamps(decoded: list[tuple[int, np.ndarray]], stream: av.VideoStream) -> float | None:
    if len(decoded) < 2 or stream.time_base is None:
        return None
    span = (decoded[-1][0] - decoded[0][0]) * stream.time_base
    if span <= 0:
        return None
    # N frames whose starts span `span` last N * span / (N - 1) at the average spacing.
    return float((len(decoded) - 1) / span)


def _stream_duration(stream, container) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _codec_name(stream) -> str:
    """The format's name for the stream's codec ("mp3"), not its decoder's ("mp3float"):
    the name containers list in `supported_codecs`."""
    return stream.codec_context.codec.canonical_name


def _stream_start(stream) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _audio_track(container, source: Path) -> AudioTrack | None:
    if not container.streams.audio:
        return None
    stream = container.streams.audio[0]
    context = stream.codec_context
    duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    return AudioTrack(
        source=source,
        stream_index=stream.index,
        codec=_codec_name(stream),
        sample_rate=int(context.sample_rate or 0),
        channels=int(context.channels or 0),
        layout=context.layout.name if context.layout is not None else "",
        duration_s=duration,
    )


# --------------------------------------------------------------------------- writing


def write_video(
    path: PathLike,
    frames: np.ndarray,
    fps: float,
    *,
    audio_from: PathLike | None = None,
    crf: int = 25,
    overwrite: bool = False,
    inputs: Sequence[PathLike] = (),
) -> Path:
    """Write uint8 RGB frames [T, H, W, 3] as H.264 (yuv420p, `crf`) at a constant `fps`.

    - Odd sizes are padded to even by repeating the last row / column (4:2:0 chroma
      needs even sizes; padding keeps every source pixel, cropping would drop one).
    - `audio_from`: a source file whose first audio stream is carried over, aligned so
      that the output's first frame is the source's first video frame, and cut to the
      output's duration. Packets are copied unchanged when the output container accepts
      the codec (the last one may extend past the video by less than one packet; its
      recorded duration is shortened), otherwise the audio is re-encoded to AAC.
    - The file is written to a temporary name in the target folder and moved into place
      only when complete; an error leaves neither a partial file nor a changed target.
    - Refuses to replace `audio_from` or any of `inputs`, and an existing file unless
      `overwrite`. Missing parent folders are created. Returns the path written.
    """
    target = Path(path)
    frames = _checked_frames(frames, target)
    rate = _rate_fraction(fps, target)
    _check_target(target, [p for p in (audio_from, *inputs) if p is not None], overwrite)
    audio_source = _checked_audio_source(audio_from)
    frames = _pad_to_even(frames)

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".partial{target.suffix}", dir=target.parent
    )
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        _encode(temporary, target, frames, rate, crf, audio_source)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    logger.info("wrote %s: %d frames %dx%d at %s fps%s", target, len(frames), frames.shape[2],
                frames.shape[1], rate, ", with audio" if audio_source else "")
    return target


def _checked_frames(frames: np.ndarray, target: Path) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoError(
            f"{target}: frames must be a uint8 RGB array [T, H, W, 3], got {frames.dtype} "
            f"{list(frames.shape)}; convert with sama_rt.video.preprocess.tensor_to_frames"
        )
    if min(frames.shape[:3]) < 1:
        raise VideoError(f"{target}: nothing to write (frames of shape {list(frames.shape)})")
    return frames


def _rate_fraction(fps: float, target: Path) -> Fraction:
    if not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
        raise VideoError(f"{target}: fps must be a positive number, got {fps!r}")
    return Fraction(fps).limit_denominator(MAX_RATE_DENOMINATOR)


def _check_target(target: Path, protected: Iterable[PathLike], overwrite: bool) -> None:
    for source in protected:
        if _same_file(target, Path(source)):
            raise VideoError(f"{target}: this is an input of the edit; choose a different output path")
    if target.is_dir():
        raise VideoError(f"{target}: is a directory; give a file name such as {target / 'edited.mp4'}")
    if target.exists() and not overwrite:
        raise VideoError(f"{target}: already exists; pass overwrite=True (--overwrite) or choose another path")


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _checked_audio_source(audio_from: PathLike | None) -> Path | None:
    if audio_from is None:
        return None
    source = _check_input_path(audio_from)
    with _open_input(source) as container:
        if not container.streams.audio:
            logger.info("%s has no audio stream; writing video only", source)
            return None
    return source


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    logger.info("padding %dx%d frames to even size by repeating the last row/column",
                frames.shape[2], frames.shape[1])
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _encode(
    temporary: Path, target: Path, frames: np.ndarray, rate: Fraction, crf: int, audio_source: Path | None
) -> None:
    options = {"movflags": "+faststart"} if target.suffix.lower() in FASTSTART_SUFFIXES else {}
    try:
        output = av.open(str(temporary), mode="w", options=options)
    except (av.FFmpegError, ValueError) as error:
        raise VideoError(f"{target}: cannot write this kind of file ({error}); use .mp4, .mov or .mkv") from error
    with output:
        if "h264" not in output.supported_codecs:
            raise VideoError(f"{target}: the {output.format.name} format cannot hold H.264; use .mp4, .mov or .mkv")
        video = output.add_stream("libx264", rate=rate, options={"crf": str(crf)})
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = 1 / rate
        duration_s = len(frames) / rate
        if audio_source is not None:
            with _open_input(audio_source) as source:
                _copy_audio(output, source, audio_source, duration_s)
        for index in range(len(frames)):
            frame = _to_video_frame(frames[index])
            frame.pts = index
            frame.time_base = video.codec_context.time_base
            output.mux(video.encode(frame))
        output.mux(video.encode(None))


def _to_video_frame(image: np.ndarray) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")


# --------------------------------------------------------------------------- audio


def _copy_audio(output, source, source_path: Path, duration_s: Fraction) -> None:
    """Mux the source's first audio stream, covering [video start, video start + duration)."""
    audio = source.streams.audio[0]
    video_start = _stream_start(source.streams.video[0]) if source.streams.video else 0.0
    codec = _codec_name(audio)
    if codec in output.supported_codecs:
        logger.debug("copying %s audio from %s", codec, source_path)
        _remux_audio(output, source, audio, video_start, float(duration_s))
    else:
        logger.info("%s: %s audio cannot go into %s; re-encoding it to AAC",
                    source_path, codec, output.format.name)
        _reencode_audio(output, source, audio, source_path, video_start, float(duration_s))


def _remux_audio(output, source, audio, video_start: float, duration_s: float) -> None:
    stream = output.add_stream_from_template(audio)
    time_base = audio.time_base
    start = round(video_start / time_base)
    end = round((video_start + duration_s) / time_base)
    for packet in source.demux(audio):
        if packet.dts is None:  # end-of-stream marker, carries no data
            continue
        pts = packet.pts if packet.pts is not None else packet.dts
        packet_end = pts + (packet.duration or 0)
        if pts >= end:
            break
        # Negative timestamps mark encoder priming (AAC: pts -1024); keep them when
        # the output starts where the source starts, the decoder needs them.
        priming = pts < 0 and start <= 0
        if packet_end <= start and not priming:
            continue
        if packet_end > end:
            packet.duration = end - pts  # metadata only: the samples past `end` are not played
        packet.pts = pts - start
        packet.dts = packet.dts - start
        packet.stream = stream
        output.mux(packet)


def _reencode_audio(output, source, audio, source_path: Path, video_start: float, duration_s: float) -> None:
    context = audio.codec_context
    sample_rate = context.sample_rate if context.sample_rate in AAC_SAMPLE_RATES else AAC_FALLBACK_RATE
    layout = _encodable_layout(context)
    samples = _decode_audio_window(source, audio, source_path, sample_rate, layout, video_start, duration_s)
    stream = output.add_stream("aac", rate=sample_rate)
    stream.layout = layout  # without it the encoder falls back to a default layout
    frame_size = 1024  # AAC frame length
    for offset in range(0, samples.shape[1], frame_size):
        chunk = np.ascontiguousarray(samples[:, offset:offset + frame_size])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = offset
        frame.time_base = Fraction(1, sample_rate)
        output.mux(stream.encode(frame))
    output.mux(stream.encode(None))


def _encodable_layout(context) -> str:
    """The source's channel layout by name, or the usual layout for its channel count:
    some containers (AVI, WAV) record only a count, which the AAC encoder rejects."""
    if context.channels > 8:
        return "stereo"
    name = context.layout.name if context.layout is not None else ""
    if name in DEFAULT_LAYOUTS.values() or (name and not name.endswith("channels")):
        return name
    return DEFAULT_LAYOUTS.get(context.channels, "stereo")


def _decode_audio_window(
    source, audio, source_path: Path, sample_rate: int, layout: str, video_start: float, duration_s: float
) -> np.ndarray:
    """Planar float32 samples [channels, n] for [video_start, video_start + duration_s)."""
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
    chunks: list[np.ndarray] = []
    first_time = None
    try:
        for frame in source.decode(audio):
            if first_time is None:
                first_time = frame.time if frame.time is not None else 0.0
            for converted in resampler.resample(frame):
                chunks.append(converted.to_ndarray())
        for converted in resampler.resample(None):
            chunks.append(converted.to_ndarray())
    except av.FFmpegError as error:
        if not chunks:
            raise VideoError(f"{source_path}: its audio cannot be decoded ({error}); pass audio_from=None") from error
        logger.warning("%s: audio decoding stopped early (%s); keeping what decoded", source_path, error)
    channels = av.AudioLayout(layout).nb_channels
    decoded = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    # Place the decoded samples on the source's clock, then cut the output's window.
    offset = round(((first_time or 0.0) - video_start) * sample_rate)
    wanted = round(duration_s * sample_rate)
    if offset > 0:  # audio starts after the first frame: silence until it does
        decoded = np.concatenate([np.zeros((channels, offset), np.float32), decoded], axis=1)
    else:
        decoded = decoded[:, -offset:]
    return decoded[:, :wanted]
