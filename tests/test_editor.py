"""Editor end to end on the tiny random-weight model (CPU)."""
import logging

import numpy as np
import pytest
import torch

from sama_rt import Editor, EditParams
from sama_rt.video.io import VideoError, probe_video, read_video
from sama_rt.video.synth import synth_clip, synth_frames

# Small buckets (~64x112 pixels) and 2 steps keep each edit around a second on CPU.
FAST = EditParams(steps=2, pixel_budget=64 * 112, max_frames=17)


@pytest.fixture(scope="module")
def editor():
    return Editor.from_config("tiny", seed=0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return synth_clip(tmp_path_factory.mktemp("src") / "clip.mp4", num_frames=10, size=(96, 64), fps=25, audio=True)


def test_edit_keeps_frame_count_fps_and_audio(editor, clip, tmp_path):
    stages = []
    result = editor.edit(clip, "Replace the red square with a cat", FAST,
                         progress=lambda stage, done, total: stages.append((stage, done, total)))
    assert result.frames.dtype == np.uint8
    assert result.frames.shape == (10, 64, 128, 3)  # 10 frames (padded to 13, trimmed back); bucket 128x64
    assert result.fps == pytest.approx(25.0)
    assert ("denoise", 2, 2) in stages and stages[-1][0] == "done"
    for key in ("decode", "text", "vae_encode", "denoise", "vae_decode"):
        assert result.timings[key] >= 0
    assert len(result.timings["denoise_per_step"]) == 2
    out = result.save(tmp_path / "out.mp4")
    assert "encode" in result.timings
    info, src = probe_video(out), probe_video(clip)
    assert info.num_frames == 10 and info.fps == pytest.approx(25.0)
    assert info.has_audio and info.duration_s == pytest.approx(src.duration_s, abs=0.05)


def test_same_seed_same_frames_and_seed_matters(editor, clip):
    a = editor.edit(clip, "make it snow", FAST)
    b = editor.edit(clip, "make it snow", FAST)
    c = editor.edit(clip, "make it snow", FAST.replace(seed=2))
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)


def test_fast_path_equals_plain_model_calls(editor, clip):
    fast = editor.edit(clip, "make it snow", FAST)
    editor.fast = False
    try:
        plain = editor.edit(clip, "make it snow", FAST)
    finally:
        editor.fast = True
    # Same math in another order: float32 differences of ~1e-6 may flip a rounding.
    assert np.abs(fast.frames.astype(int) - plain.frames.astype(int)).max() <= 1


def test_frames_input_and_max_frames(editor):
    frames = synth_frames(7, (96, 64))
    result = editor.edit(frames, "make it snow", FAST.replace(max_frames=5), fps=12)
    assert result.frames.shape[0] == 5 and result.fps == 12
    tensor_result = editor.edit(torch.from_numpy(frames), "make it snow", FAST.replace(max_frames=5), fps=12)
    assert np.array_equal(result.frames, tensor_result.frames)


def test_one_frame_and_portrait_video(editor, tmp_path):
    one = synth_clip(tmp_path / "one.mp4", num_frames=1, size=(96, 64), audio=False)
    assert editor.edit(one, "make it snow", FAST).frames.shape[0] == 1
    portrait = synth_clip(tmp_path / "portrait.mp4", num_frames=3, size=(36, 64), audio=False)
    frames = editor.edit(portrait, "make it snow", FAST).frames
    assert frames.shape[1] > frames.shape[2]  # stays portrait


def test_odd_resolution_and_large_frame(editor, tmp_path):
    odd = synth_clip(tmp_path / "odd.mp4", num_frames=2, size=(99, 67), audio=False)
    assert editor.edit(odd, "make it snow", FAST).frames.shape[0] == 2
    big = np.zeros((1, 2160, 3840, 3), np.uint8)
    out = editor.edit(big, "make it snow", FAST)
    assert out.frames.shape == (1, 64, 128, 3)


@pytest.mark.parametrize("instruction", ["", "   \n\t"])
def test_empty_instruction_is_refused_before_work(editor, instruction):
    with pytest.raises(ValueError, match="instruction is empty"):
        editor.edit("/nonexistent.mp4", instruction, FAST)


def test_long_instruction_warns(editor, caplog):
    frames = synth_frames(1, (96, 64))
    with caplog.at_level(logging.WARNING):
        editor.edit(frames, "snow " * 600, FAST.replace(steps=1))
    assert any("only the first 512" in r.message for r in caplog.records)


def test_bad_video_inputs(editor, tmp_path):
    with pytest.raises(VideoError, match="nope.mp4"):
        editor.edit(tmp_path / "nope.mp4", "x", FAST)
    with pytest.raises(VideoError):
        editor.edit(tmp_path, "x", FAST)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    with pytest.raises(VideoError, match="notes.mp4"):
        editor.edit(text, "x", FAST)
    with pytest.raises(VideoError, match="uint8"):
        editor.edit(np.zeros((2, 8, 8, 3), np.float32), "x", FAST)


def test_save_refuses_input_and_existing(editor, clip, tmp_path):
    result = editor.edit(clip, "make it snow", FAST.replace(steps=1))
    with pytest.raises(Exception, match="input|replace|refus"):
        result.save(clip, overwrite=True)
    out = result.save(tmp_path / "deep" / "dir" / "out.mp4")  # missing folders are created
    with pytest.raises(Exception, match="exists|overwrite"):
        result.save(out)
    result.save(out, overwrite=True)
    assert read_video(out).num_frames == 10


def test_params_validation():
    for bad in (dict(steps=0), dict(cfg_scale=0.5), dict(max_frames=0), dict(crf=99), dict(pixel_budget=10)):
        with pytest.raises(ValueError, match="invalid EditParams"):
            EditParams(**bad)
    with pytest.raises(ValueError, match="unknown EditParams"):
        EditParams().replace(stepz=3)


def test_from_pretrained_names_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        Editor.from_pretrained(tmp_path / "wan", tmp_path / "sama.safetensors", device="cpu")
    msg = str(e.value)
    assert "Wan2.1 directory" in msg and "SAMA checkpoint" in msg and "Wan2.1_VAE.pth" in msg


def test_onnxruntime_backend_end_to_end(tmp_path, monkeypatch, clip):
    """The exported tiny graphs (exported once into a cache) run the whole edit."""
    monkeypatch.setenv("SAMA_RT_CACHE", str(tmp_path / "cache"))
    graphs = Editor.from_config("tiny", seed=0, backend="onnxruntime")
    assert graphs.backend.value == "onnxruntime"
    torch_editor = Editor.from_config("tiny", seed=0)
    a = graphs.edit(clip, "make it snow", FAST)
    b = torch_editor.edit(clip, "make it snow", FAST)
    # Same weights, graphs vs torch in float32: a ~1e-5 difference may flip a rounding.
    assert a.frames.shape == b.frames.shape
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1
    assert (a.frames != b.frames).mean() < 1e-3
    again = Editor.from_config("tiny", seed=0, backend="onnxruntime")  # cached: no second export
    assert len(list((tmp_path / "cache" / "onnx").iterdir())) == 1
    assert np.array_equal(again.edit(clip, "make it snow", FAST).frames, a.frames)


def test_tensorrt_backend_refused_without_tensorrt(tmp_path):
    pytest.importorskip("torch")
    from sama_rt.engines.tensorrt_adapter import tensorrt_status

    ok, _ = tensorrt_status()
    if ok:
        pytest.skip("TensorRT and a GPU are present: the refusal path does not apply")
    with pytest.raises(RuntimeError, match="TensorRT backend cannot run here.*tensorrt"):
        Editor.from_engines(tmp_path, tmp_path, tmp_path / "sama.safetensors", device="cpu")
    with pytest.raises(RuntimeError, match="tensorrt"):
        Editor.from_config("tiny", backend="tensorrt")


def test_record_calibration_from_real_edits(editor, clip, tmp_path):
    from sama_rt.engines.calibration import load_calibration_set, save_calibration_set

    recorder = editor.record_calibration(stride=1, limit=None)
    try:
        editor.edit(clip, "make it snow", FAST)
    finally:
        editor.dit_runner = editor.dit
    assert len(recorder.calibration) == FAST.steps  # one batch-2 (CFG) call per step
    save_calibration_set(recorder.calibration, tmp_path / "calib.safetensors")
    loaded = load_calibration_set(tmp_path / "calib.safetensors")
    assert len(loaded) == FAST.steps
    sample = loaded.samples[0]
    assert sample["latents"].shape[0] == 2 and sample["context"].shape[1:] == (512, 64)


def test_output_under_a_file_fails_cleanly(editor, clip, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    result = editor.edit(clip, "make it snow", FAST.replace(steps=1))
    with pytest.raises(OSError):
        result.save(blocker / "out.mp4")
    assert blocker.read_text() == "x"
