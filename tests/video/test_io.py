"""Decoding, encoding, audio carry-over and bad-input handling on synthesised clips."""
import logging
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import sama_rt.video.io as video_io
from sama_rt.video.io import VideoError, probe_video, read_video, write_video
from sama_rt.video.synth import frame_times, synth_clip, synth_frames, tone

# Mean absolute error (levels of 255) a lossy round trip of the synthetic frames may show:
# H.264 at CRF 18 (sources) and 25 (outputs) with 4:2:0 chroma on saturated shapes
# measures 2-4; a wrong rotation, flip or frame order measures 40 and more.
LOSSY_MAE = 6.0


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def audio_packets(path: Path) -> list[tuple[int, int, bytes]]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return [(p.pts, p.duration, bytes(p)) for p in container.demux(stream) if p.dts is not None]


def decoded_audio(path: Path) -> tuple[np.ndarray, int]:
    """Mono float samples of the first audio stream and the sample rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=stream.sample_rate)
        chunks = [f.to_ndarray()[0] for frame in container.decode(stream) for f in resampler.resample(frame)]
        return np.concatenate(chunks), stream.sample_rate


def best_lag(samples: np.ndarray, reference: np.ndarray, search: int = 200) -> int:
    """Shift (in samples) at which `samples` best matches `reference`."""
    n = len(reference) - search

    def error(lag: int) -> float:
        a = samples[max(lag, 0): max(lag, 0) + n]
        b = reference[max(-lag, 0): max(-lag, 0) + n]
        return float(np.abs(a - b).mean())

    return min(range(-search, search + 1), key=error)


def leftovers(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if ".partial" in name)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fps", [24, 25, 30, Fraction(30000, 1001)])
def test_read_write_read_keeps_frames_fps_duration_and_audio_bytes(tmp_path, fps):
    source = synth_clip(tmp_path / "in.mp4", num_frames=17, fps=fps)
    clip = read_video(source)
    assert clip.frames.shape == (17, 64, 96, 3) and clip.frames.dtype == np.uint8
    assert clip.fps == pytest.approx(float(fps), rel=1e-9)
    assert clip.duration_s == pytest.approx(17 / float(fps))
    assert mae(clip.frames, synth_frames(17, (96, 64))) < LOSSY_MAE
    assert clip.audio is not None and clip.audio.codec == "aac" and clip.audio.source == source

    out = write_video(tmp_path / "out.mp4", clip.frames, clip.fps, audio_from=source)
    again = read_video(out)
    assert again.num_frames == 17
    assert again.fps == pytest.approx(float(fps), rel=1e-9)
    assert again.duration_s == pytest.approx(clip.duration_s)
    assert mae(again.frames, clip.frames) < LOSSY_MAE
    # Same frame count and rate: every audio packet is copied, byte for byte, same timestamps.
    assert audio_packets(out) == audio_packets(source)


def test_shorter_output_gets_a_prefix_of_the_audio(tmp_path):
    source = synth_clip(tmp_path / "in.mp4", num_frames=24, fps=24)
    clip = read_video(source)
    out = write_video(tmp_path / "out.mp4", clip.frames[:9], clip.fps, audio_from=source)
    copied, original = audio_packets(out), audio_packets(source)
    assert 0 < len(copied) < len(original)
    assert [p[2] for p in copied] == [p[2] for p in original[: len(copied)]]
    assert [p[0] for p in copied] == [p[0] for p in original[: len(copied)]]
    # The last packet's recorded duration is cut so the audio ends with the video.
    with av.open(str(out)) as container:
        audio = container.streams.audio[0]
        assert float(copied[-1][0] + copied[-1][1]) * audio.time_base == pytest.approx(9 / 24, abs=1e-3)


@pytest.mark.parametrize("suffix, audio_codec, expected_codec", [
    (".mp4", "aac", "aac"),    # copied: packets cut at the video's start, edit list trims the rest
    (".mkv", "pcm_u8", "aac"),  # mp4 cannot hold pcm_u8: re-encoded
])
def test_audio_follows_the_video_when_the_video_starts_late(tmp_path, suffix, audio_codec, expected_codec):
    # The first frame is at 0.5 s of the source's clock, the audio starts at 0: the output
    # (which starts with that frame) must start with the audio from 0.5 s.
    source = synth_clip(tmp_path / f"in{suffix}", num_frames=24, fps=24, video_start_s=0.5,
                        audio_codec=audio_codec, sample_rate=16000)
    clip = read_video(source)
    assert clip.audio.codec == audio_codec and clip.num_frames == 24
    out = write_video(tmp_path / "out.mp4", clip.frames[:12], clip.fps, audio_from=source)
    info = probe_video(out)
    assert info.audio.codec == expected_codec and info.audio.sample_rate == 16000
    assert info.audio.duration_s == pytest.approx(12 / 24, abs=1e-3)
    samples, rate = decoded_audio(out)
    expected = tone(rate, rate)[rate // 2:]  # the tone from 0.5 s on
    assert len(samples) >= len(expected)
    # AAC at its default bit rate keeps the error near 0.07 on this 0.3-amplitude tone.
    assert np.abs(samples[: len(expected)] - expected).max() < 0.12
    # The rising tone never repeats: the best-matching shift is unique and must be zero.
    assert best_lag(samples, expected) == 0
    if audio_codec == expected_codec:  # copied: a run of the source's packets, unchanged
        copied = [p[2] for p in audio_packets(out)]
        original = [p[2] for p in audio_packets(source)]
        first = original.index(copied[0])
        assert first > 0 and copied == original[first:first + len(copied)]


def test_source_without_audio_gives_video_only(tmp_path):
    source = synth_clip(tmp_path / "in.mp4", num_frames=5, audio=False)
    clip = read_video(source)
    assert clip.audio is None
    out = write_video(tmp_path / "out.mp4", clip.frames, clip.fps, audio_from=source)
    assert probe_video(out).has_audio is False


def test_variable_frame_rate_keeps_every_frame_and_reports_average_rate(tmp_path):
    source = synth_clip(tmp_path / "vfr.mp4", num_frames=16, fps=24, vfr=True)
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
        spacing = np.diff(pts) * float(stream.time_base)
    assert spacing.max() > 2 * spacing.min()  # the source really is variable-rate
    np.testing.assert_allclose(spacing, np.diff(frame_times(16, 24, vfr=True)), atol=1e-4)

    clip = read_video(source)
    info = probe_video(source)
    assert clip.num_frames == 16
    assert clip.fps == pytest.approx(16 / info.duration_s, rel=1e-6)  # frames / duration
    assert clip.fps == pytest.approx(24, rel=0.1)
    assert mae(clip.frames, synth_frames(16, (96, 64))) < LOSSY_MAE  # pts order, none dropped

    out = write_video(tmp_path / "out.mp4", clip.frames, clip.fps, audio_from=source)
    again = read_video(out)
    assert again.num_frames == 16
    assert again.fps == pytest.approx(clip.fps, rel=1e-3)  # written at a rational close to it
    assert again.duration_s == pytest.approx(clip.duration_s, rel=1e-3)


@pytest.mark.parametrize("rotation", [90, 180, 270])
@pytest.mark.parametrize("tag, suffix", [("matrix", ".mp4"), ("metadata", ".mkv")])
def test_rotation_metadata_gives_upright_frames(tmp_path, rotation, tag, suffix):
    if tag == "matrix" and not hasattr(av.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write display matrices (reading them needs no such support)")
    size = (96, 64)
    source = synth_clip(tmp_path / f"rot{suffix}", num_frames=3, size=size, audio=False,
                        rotation=rotation, rotation_tag=tag)
    with av.open(str(source)) as container:
        stored = next(container.decode(video=0))
        assert (stored.width, stored.height) == (size if rotation == 180 else size[::-1])
    clip = read_video(source)
    info = probe_video(source)
    assert clip.rotation == info.rotation == rotation
    assert (clip.width, clip.height) == (info.width, info.height) == size
    upright = synth_frames(3, size)
    assert mae(clip.frames, upright) < LOSSY_MAE
    assert mae(clip.frames, upright[:, ::-1, ::-1]) > 5 * LOSSY_MAE  # a half turn is visible


@pytest.mark.parametrize("codec, suffix, audio_codec, rate", [
    ("hevc", ".mkv", "aac", 16000),
    ("vp9", ".webm", "libopus", 48000),
    ("mpeg4", ".avi", "pcm_s16le", 16000),
    ("ffv1", ".mkv", "flac", 16000),
    ("h264", ".mov", "aac", 16000),
])
def test_other_containers_and_codecs_decode(tmp_path, codec, suffix, audio_codec, rate):
    source = synth_clip(tmp_path / f"in{suffix}", num_frames=3, codec=codec, fps=25,
                        audio_codec=audio_codec, sample_rate=rate)
    clip = read_video(source)
    assert clip.frames.shape == (3, 64, 96, 3) and clip.fps == 25
    assert mae(clip.frames, synth_frames(3, (96, 64))) < LOSSY_MAE
    out = write_video(tmp_path / "out.mkv", clip.frames, clip.fps, audio_from=source)
    # Matroska takes all of these codecs: copied byte for byte (timestamps change unit).
    assert [p[2] for p in audio_packets(out)] == [p[2] for p in audio_packets(source)]


def test_odd_size_is_padded_to_even_by_repeating_the_edge(tmp_path):
    source = synth_clip(tmp_path / "odd.mp4", num_frames=3, size=(33, 17), fps=25)
    clip = read_video(source)
    assert clip.frames.shape == (3, 17, 33, 3)
    out = read_video(write_video(tmp_path / "out.mp4", clip.frames, clip.fps))
    assert out.frames.shape == (3, 18, 34, 3)
    # Tiny frames with saturated edges lose more to 4:2:0 chroma than the larger clips.
    assert mae(out.frames[:, :17, :33], clip.frames) < 2 * LOSSY_MAE
    assert mae(out.frames[:, 17], out.frames[:, 16]) < 2 * LOSSY_MAE
    assert mae(out.frames[:, :, 33], out.frames[:, :, 32]) < 2 * LOSSY_MAE


@pytest.mark.parametrize("size", [(64, 96), (3840, 2160)])
def test_portrait_and_4k_single_frame(tmp_path, size):
    source = synth_clip(tmp_path / "in.mp4", num_frames=1, size=size, audio=False)
    clip = read_video(source)
    assert clip.frames.shape == (1, size[1], size[0], 3)  # a 1-frame video is valid
    assert clip.fps == 24 and clip.duration_s == pytest.approx(1 / 24)
    assert mae(clip.frames, synth_frames(1, size)) < LOSSY_MAE
    again = read_video(write_video(tmp_path / "out.mp4", clip.frames, clip.fps))
    assert again.frames.shape == clip.frames.shape and again.fps == 24


def test_max_frames_returns_the_first_frames(tmp_path):
    source = synth_clip(tmp_path / "in.mp4", num_frames=17, audio=False)
    full = read_video(source)
    first = read_video(source, max_frames=5)
    assert first.num_frames == 5 and first.fps == full.fps
    np.testing.assert_array_equal(first.frames, full.frames[:5])
    assert read_video(source, max_frames=100).num_frames == 17
    with pytest.raises(ValueError):
        read_video(source, max_frames=0)


def test_probe(tmp_path):
    source = synth_clip(tmp_path / "in.mp4", num_frames=17, size=(96, 64), fps=30)
    info = probe_video(source)
    assert (info.width, info.height, info.num_frames, info.fps) == (96, 64, 17, 30)
    assert info.duration_s == pytest.approx(17 / 30, abs=2e-3)
    assert info.has_audio and info.audio.sample_rate == 16000 and info.audio.channels == 1
    assert info.rotation == 0 and info.video_codec == "h264"


# --------------------------------------------------------------------------- bad input


def _no_video(path: Path) -> Path:
    with av.open(str(path), "w") as output:
        stream = output.add_stream("aac", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return path


def _zero_frames(path: Path) -> Path:
    """A video stream without a single frame, beside a short audio stream (without it
    the container has no data at all and FFmpeg stops at the header)."""
    with av.open(str(path), "w") as output:
        video = output.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = 64, 32, "yuv420p"
        audio = output.add_stream("aac", rate=16000)
        audio.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        output.mux(audio.encode(frame))
        output.mux(audio.encode(None))
    return path


def _header_only(path: Path) -> Path:
    """A Matroska header announcing a video stream, and no data at all."""
    with av.open(str(path), "w") as output:
        video = output.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = 64, 32, "yuv420p"
        output.start_encoding()
    return path


def _cut(source: Path, target: Path, keep: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


@pytest.mark.parametrize("make, hint", [
    (lambda d: d / "missing.mp4", "no such file"),
    (lambda d: (d / "folder.mp4").mkdir() or d / "folder.mp4", "is a directory"),
    (lambda d: (d / "notes.mp4").write_text("not a video\n") and d / "notes.mp4", "not a video"),
    (lambda d: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", "empty"),
    # moov written last (the default): cutting the file loses the index.
    (lambda d: _cut(synth_clip(d / "whole.mp4", num_frames=12), d / "cut.mp4", 0.6), "truncated"),
    # moov first (our outputs): a cut inside the index itself.
    (lambda d: _cut(write_video(d / "fast.mp4", synth_frames(12, (96, 64)), 24), d / "cut.mp4", 0.02),
     "truncated"),
    (lambda d: _no_video(d / "sound.m4a"), "no video stream"),
    (lambda d: _zero_frames(d / "blank.mkv"), "no decodable frames"),
    (lambda d: _zero_frames(d / "blank.mp4"), "no video stream"),  # mp4 drops an empty track
    (lambda d: _cut(_zero_frames(d / "blank.mkv"), d / "header.mkv", 0.3), "truncated"),
    (lambda d: _header_only(d / "nothing.mkv"), "ends before its streams"),
])
def test_bad_inputs_raise_video_error_naming_the_file(tmp_path, make, hint):
    path = make(tmp_path)
    for reader in (read_video, probe_video):
        with pytest.raises(VideoError, match=hint) as raised:
            reader(path)
        assert str(path) in str(raised.value)


def test_cut_inside_the_media_data_decodes_what_is_there(tmp_path, caplog):
    whole = write_video(tmp_path / "whole.mp4", synth_frames(24, (96, 64)), 24)  # index first
    cut = _cut(whole, tmp_path / "cut.mp4", 0.7)
    with caplog.at_level(logging.WARNING, logger="sama_rt.video.io"):
        clip = read_video(cut)
    assert 0 < clip.num_frames < 24
    assert mae(clip.frames, synth_frames(24, (96, 64))[: clip.num_frames]) < LOSSY_MAE
    assert any("truncated" in record.message for record in caplog.records)


# --------------------------------------------------------------------------- writing rules


def test_refuses_to_replace_an_input(tmp_path):
    source = synth_clip(tmp_path / "in.mp4", num_frames=3)
    before = source.read_bytes()
    frames = synth_frames(3, (96, 64))
    for alias in (source, tmp_path / "." / "in.mp4", tmp_path / "sub" / ".." / "in.mp4"):
        with pytest.raises(VideoError, match="input") as raised:
            write_video(alias, frames, 24, audio_from=source, overwrite=True)
        assert "in.mp4" in str(raised.value)
    with pytest.raises(VideoError, match="input"):
        write_video(source, frames, 24, inputs=[source], overwrite=True)
    assert source.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_existing_file_needs_overwrite_and_parents_are_created(tmp_path):
    frames = synth_frames(3, (96, 64))
    target = tmp_path / "a" / "b" / "out.mp4"
    write_video(target, frames, 24)
    with pytest.raises(VideoError, match="already exists") as raised:
        write_video(target, frames[:2], 24)
    assert str(target) in str(raised.value)
    assert read_video(target).num_frames == 3
    write_video(target, frames[:2], 24, overwrite=True)
    assert read_video(target).num_frames == 2
    assert leftovers(target.parent) == []


def test_failure_mid_write_leaves_no_partial_file_and_keeps_the_target(tmp_path, monkeypatch):
    frames = synth_frames(6, (96, 64))
    target = write_video(tmp_path / "out.mp4", frames, 24)
    before = target.read_bytes()
    original = video_io._to_video_frame
    calls = []

    def failing(image):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return original(image)

    monkeypatch.setattr(video_io, "_to_video_frame", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_video(target, frames[::-1], 24, overwrite=True)
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == [] and sorted(os.listdir(tmp_path)) == ["out.mp4"]


@pytest.mark.parametrize("name, frames, fps, hint", [
    ("out.webm", synth_frames(2, (96, 64)), 24, "H.264"),
    ("out.mp4", synth_frames(2, (96, 64)).astype(np.float32), 24, "uint8"),
    ("out.mp4", synth_frames(2, (96, 64))[..., :2], 24, "uint8"),
    ("out.mp4", synth_frames(2, (96, 64)), 0, "fps"),
    ("out.mp4", synth_frames(2, (96, 64)), float("nan"), "fps"),
])
def test_bad_write_requests(tmp_path, name, frames, fps, hint):
    with pytest.raises(VideoError, match=hint) as raised:
        write_video(tmp_path / name, frames, fps)
    assert name in str(raised.value)
    assert os.listdir(tmp_path) == []
