"""Long videos: windows, motion propagation, anchor reuse, streaming (tiny model, CPU)."""
import tracemalloc

import numpy as np
import pytest
import torch

from sama_rt import Editor, EditParams
from sama_rt.editor import open_source
from sama_rt.models import DiTConfig, build_dit
from sama_rt.sampling import Pins, denoise
from sama_rt.timing import StageTimer
from sama_rt.video.io import probe_video
from sama_rt.video.synth import synth_clip, synth_frames
from sama_rt.video.preprocess import frames_to_tensor, tensor_to_frames
from sama_rt.windows import count_windows, iterate_windows, window_frame_ranges, window_seed

# 64x32-pixel buckets and one step: a window of 81 frames costs well under a second of DiT.
TINY = EditParams(steps=1, pixel_budget=64 * 32)


@pytest.fixture(scope="module")
def editor():
    return Editor.from_config("tiny", seed=0)


@pytest.mark.parametrize("n", [1, 5, 81, 82, 150, 161, 200])
def test_window_plan_covers_every_frame_once(n):
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(n)]
    windows = list(iterate_windows(frames, 81, 9))
    assert len(windows) == count_windows(n, 81, 9)
    kept = np.concatenate([w[0 if i == 0 else 9:, 0, 0, 0] for i, w in enumerate(windows)])
    assert kept.tolist() == list(range(n))
    assert [(w[0, 0, 0, 0], w[-1, 0, 0, 0] + 1) for w in windows] == [tuple(r) for r in window_frame_ranges(n, 81, 9)]


@pytest.mark.parametrize("n,audio", [(1, True), (5, False), (81, True), (82, False), (150, True), (161, False), (200, True)])
def test_frame_count_fps_and_audio_preserved(editor, tmp_path, n, audio):
    clip = synth_clip(tmp_path / "in.mp4", num_frames=n, size=(64, 32), fps=24, audio=audio)
    out = editor.edit_to_file(clip, "make it snow", tmp_path / "out.mp4", TINY)
    info, src = probe_video(out.path), probe_video(clip)
    assert out.num_frames == n and info.num_frames == n
    assert info.fps == pytest.approx(24) and info.has_audio == audio
    if audio:  # the audio covers the whole output
        assert info.audio.duration_s == pytest.approx(src.audio.duration_s, abs=0.1)
        assert info.audio.duration_s >= n / 24 - 0.1


def test_pinned_latents_end_at_known_values():
    dit = build_dit(DiTConfig.preset("tiny"))
    gen = torch.Generator().manual_seed(0)
    shape = (1, 16, 3, 4, 6)
    noise, source, known = (torch.randn(shape, generator=gen) for _ in range(3))
    semantic_noise, anchor = torch.randn(1, 65, 1152, generator=gen), torch.randn(1, 65, 1152, generator=gen)
    ctx = torch.zeros(1, 512, 64)
    ctx[:, :5] = 1
    pins = Pins(latents=(known[:, :, :2], noise[:, :, :2]), semantic=(anchor, semantic_noise))
    x, s = denoise(dit, noise, semantic_noise, source, ctx, torch.zeros_like(ctx), num_steps=3, pins=pins)
    assert torch.equal(x[:, :, :2], known[:, :, :2])  # sigma 0: exactly the known frames
    assert torch.equal(s, anchor)
    assert not torch.allclose(x[:, :, 2], known[:, :, 2])


def edited_windows(editor, frames, params):
    timer = StageTimer()
    positive, negative = params.prompts("make it snow")
    context, negative_context = editor.encode_prompts(positive, negative)
    return list(editor.edit_windows(open_source(frames, None, 24), context, negative_context, params, timer))


def test_overlap_reproduces_previous_window_up_to_vae_round_trip(editor):
    params = TINY.replace(window=17, overlap=9, steps=2)
    first, second = edited_windows(editor, synth_frames(25, (64, 32)), params)
    tail = first.frames[-9:]
    with torch.no_grad():
        round_trip = tensor_to_frames(editor.vae.decode(editor.vae.encode(frames_to_tensor(tail))))
    # The causal decoder's first 9 frames depend only on the 3 pinned latent frames, which
    # end exactly at encode(tail): the overlap equals the VAE round trip of the previous
    # window's frames, up to one level of float rounding.
    assert np.abs(second.frames[:9].astype(int) - round_trip.astype(int)).max() <= 1
    # What the round trip itself costs (random VAE weights: large; trained weights: small).
    vae_error = np.abs(round_trip.astype(int) - tail.astype(int)).mean()
    overlap_error = np.abs(second.frames[:9].astype(int) - tail.astype(int)).mean()
    assert overlap_error <= vae_error + 1


def test_independent_windows_when_both_pins_are_off(editor):
    params = TINY.replace(window=17, overlap=9, propagate_motion=False, reuse_anchor=False, seed=3)
    frames = synth_frames(25, (64, 32))
    stitched = editor.edit(frames, "make it snow", params, fps=24).frames
    alone_0 = editor.edit(frames[:17], "make it snow", params, fps=24).frames
    alone_1 = editor.edit(frames[8:25], "make it snow", params.replace(seed=window_seed(3, 1)), fps=24).frames
    assert np.array_equal(stitched[:17], alone_0)
    assert np.array_equal(stitched[17:], alone_1[9:])


def test_pins_change_later_windows_only(editor):
    frames = synth_frames(25, (64, 32))
    params = TINY.replace(window=17, overlap=9)
    pinned = editor.edit(frames, "make it snow", params, fps=24).frames
    free = editor.edit(frames, "make it snow", params.replace(propagate_motion=False, reuse_anchor=False),
                       fps=24).frames
    assert np.array_equal(pinned[:17], free[:17])
    assert not np.array_equal(pinned[17:], free[17:])


def test_same_seed_same_long_output(editor):
    frames = synth_frames(30, (64, 32))
    params = TINY.replace(window=17, overlap=5)
    a = editor.edit(frames, "make it snow", params, fps=24).frames
    b = editor.edit(frames, "make it snow", params, fps=24).frames
    assert a.shape[0] == 30 and np.array_equal(a, b)


def test_streaming_memory_does_not_grow_with_length(editor, tmp_path):
    def peak(n):
        clip = synth_clip(tmp_path / f"in{n}.mp4", num_frames=n, size=(320, 240), fps=24, audio=False)
        tracemalloc.start()
        editor.edit_to_file(clip, "make it snow", tmp_path / f"out{n}.mp4", TINY.replace(window=17))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    peak(5)  # first call: imports and one-off caches allocate, not the frames
    short, long = peak(33), peak(97)  # 2 windows vs 6 windows of 17 frames
    # Frames are held one window (plus the decoder's reorder buffer) at a time: a clip
    # 3x longer may not take 1.3x the memory.
    assert long <= 1.3 * short, (short, long)


def test_window_params_validated():
    with pytest.raises(ValueError, match="window must be 4k\\+1"):
        EditParams(window=80)
    with pytest.raises(ValueError, match="overlap"):
        EditParams(window=17, overlap=17)


def test_crossfade_blends_the_seam(editor):
    params = TINY.replace(window=17, overlap=9, propagate_motion=False, reuse_anchor=False, seed=3)
    frames = synth_frames(25, (64, 32))
    hard = editor.edit(frames, "make it snow", params, fps=24).frames
    soft = editor.edit(frames, "make it snow", params.replace(crossfade=4), fps=24).frames
    second = editor.edit(frames[8:25], "make it snow", params.replace(seed=window_seed(3, 1)), fps=24).frames
    assert soft.shape == hard.shape
    assert np.array_equal(soft[:13], hard[:13]) and np.array_equal(soft[17:], hard[17:])
    # Frames 13..16 fade from window 0's edit to window 1's edit of the same source frames.
    ramp = np.arange(1, 5, dtype=np.float32)[:, None, None, None] / 5
    expected = np.round(hard[13:17] * (1 - ramp) + second[5:9] * ramp).astype(np.uint8)
    assert np.array_equal(soft[13:17], expected)
