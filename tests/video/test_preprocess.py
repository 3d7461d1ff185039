"""Resolution buckets, crop/resize, 4k+1 padding and pixel conversion, against the
rules of the official SAMA script (SAMA.md, "Video handling in the official script")."""
import numpy as np
import pytest
import torch
from PIL import Image

from sama_rt.video.preprocess import (
    Bucket,
    CropBox,
    centre_crop_box,
    choose_bucket,
    crop_and_resize,
    finish_frames,
    frames_to_tensor,
    pad_frames_4k1,
    prepare_frames,
    resolution_buckets,
    tensor_to_frames,
    trim_frames,
)

# Worked out by hand from the rule: heights 416..896 step 32, width = round(399360/h/32)*32,
# 0.5 <= w/h <= 2 (h=416 gives 960 wide, aspect 2.31: dropped; h=640 gives 19.5 -> 20).
OFFICIAL_BUCKETS = [
    (896, 448), (832, 480), (768, 512), (736, 544), (704, 576), (672, 608), (640, 640),
    (608, 672), (576, 704), (544, 736), (512, 768), (512, 800), (480, 832), (448, 864),
    (448, 896),
]


def test_bucket_table_matches_official_rule():
    buckets = resolution_buckets()
    assert len(buckets) == 15
    assert [tuple(b) for b in buckets] == OFFICIAL_BUCKETS
    assert all(b.width % 32 == 0 and b.height % 32 == 0 for b in buckets)
    assert [b.height for b in buckets] == sorted(b.height for b in buckets)


@pytest.mark.parametrize("source, expected", [
    ((832, 480), (832, 480)),    # the official default size maps onto itself
    ((1920, 1080), (832, 480)),  # 16:9 landscape
    ((1280, 720), (832, 480)),
    ((1080, 1920), (480, 832)),  # 9:16 portrait: the portrait bucket closest in aspect
    ((720, 1280), (480, 832)),
    ((1024, 1024), (640, 640)),
    ((640, 480), (736, 544)),    # 4:3
    ((4000, 500), (896, 448)),   # beyond the aspect limits: the extreme bucket
    ((500, 4000), (448, 896)),
])
def test_choose_bucket_closest_aspect(source, expected):
    assert tuple(choose_bucket(*source)) == expected


def test_choose_bucket_first_on_tie():
    # Aspects 1.0 and 2.0 are both 0.5 away from 300/200 = 1.5: the earlier bucket wins.
    assert choose_bucket(300, 200, [(64, 64), (128, 64)]) == Bucket(64, 64)
    assert choose_bucket(300, 200, [(128, 64), (64, 64)]) == Bucket(128, 64)


@pytest.mark.parametrize("size, bucket, box", [
    ((1920, 1080), (832, 480), (24, 0, 1896, 1080)),   # int(1080/480*832) = 1872 wide
    ((1080, 1920), (480, 832), (0, 24, 1080, 1896)),   # int(1080/480*832) = 1872 high
    ((640, 480), (736, 544), (0, 3, 640, 476)),        # int(640/736*544) = int(473.04) = 473
    ((1664, 960), (832, 480), (0, 0, 1664, 960)),      # same aspect: nothing cut
    ((832, 480), (832, 480), (0, 0, 832, 480)),
])
def test_centre_crop_box(size, bucket, box):
    assert centre_crop_box(*size, Bucket(*bucket)) == CropBox(*box)


def test_crop_then_bicubic_resize():
    rng = np.random.default_rng(0)
    # 4:3 source whose outer band (cut by the crop) is pure red: none of it may leak in.
    frames = rng.integers(0, 200, size=(2, 30, 40, 3), dtype=np.uint8)
    bucket = Bucket(32, 16)
    box = centre_crop_box(40, 30, bucket)
    assert box == CropBox(0, 5, 40, 25)  # int(40/32*16) = 20 rows, centred
    frames[:, :box.top] = (255, 0, 0)
    frames[:, box.bottom:] = (255, 0, 0)
    out = crop_and_resize(frames, box, bucket)
    assert out.shape == (2, 16, 32, 3) and out.dtype == np.uint8
    for source, result in zip(frames, out):
        expected = Image.fromarray(source[5:25]).resize((32, 16), Image.Resampling.BICUBIC)
        np.testing.assert_array_equal(result, np.asarray(expected))
    assert not np.any(np.all(out == (255, 0, 0), axis=-1))


def test_frames_of_bucket_size_pass_unchanged():
    frames = np.zeros((3, 16, 32, 3), np.uint8)
    assert crop_and_resize(frames, CropBox(0, 0, 32, 16), Bucket(32, 16)) is frames


@pytest.mark.parametrize("count, padded", [(1, 1), (2, 5), (4, 5), (5, 5), (6, 9), (17, 17), (18, 21)])
def test_pad_to_4k_plus_1_and_trim_back(count, padded):
    frames = np.arange(count, dtype=np.uint8).reshape(count, 1, 1, 1) * np.ones((1, 2, 2, 3), np.uint8)
    out, original = pad_frames_4k1(frames)
    assert original == count and out.shape[0] == padded and (padded - 1) % 4 == 0
    np.testing.assert_array_equal(out[:count], frames)
    assert np.all(out[count:] == count - 1)  # repeats of the last frame
    np.testing.assert_array_equal(trim_frames(out, original), frames)


def test_prepare_and_finish():
    frames = np.random.default_rng(1).integers(0, 256, size=(6, 30, 40, 3), dtype=np.uint8)
    prepared = prepare_frames(frames, buckets=[(16, 32), (32, 16)])
    assert prepared.bucket == Bucket(32, 16)
    assert prepared.frames.shape == (9, 16, 32, 3)
    assert prepared.num_frames == 6 and prepared.num_padded == 3
    assert prepared.source_size == (40, 30) and prepared.crop_box == CropBox(0, 5, 40, 25)
    edited = prepared.frames[::-1].copy()
    np.testing.assert_array_equal(finish_frames(prepared, edited), edited[:6])
    with pytest.raises(ValueError, match="bucket"):
        finish_frames(prepared, np.zeros((9, 32, 32, 3), np.uint8))


def test_tensor_round_trip_is_exact():
    frames = np.random.default_rng(2).integers(0, 256, size=(5, 4, 6, 3), dtype=np.uint8)
    frames[0, 0, 0] = (0, 255, 128)
    video = frames_to_tensor(frames)
    assert video.shape == (1, 3, 5, 4, 6) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1
    # float32 arithmetic: ~1e-7 absolute error around 0.
    assert video[0, :, 0, 0, 0].tolist() == pytest.approx([-1.0, 1.0, 128 * 2 / 255 - 1], abs=1e-6)
    # uint8 -> [-1, 1] -> uint8 must give back every level exactly (float32 error is
    # far below the half level where rounding would flip).
    np.testing.assert_array_equal(tensor_to_frames(video), frames)
    np.testing.assert_array_equal(tensor_to_frames(video[0]), frames)


def test_tensor_to_frames_rounds_and_clamps():
    # (x + 1) * 127.5 = 100.6 -> 101 (the official truncation would give 100).
    levels = torch.tensor([100.6, 100.4, -50.0, 300.0, 0.0, 255.0]) / 127.5 - 1
    video = levels.view(1, 1, 1, 6).expand(3, 1, 1, 6)
    out = tensor_to_frames(video)
    assert out.shape == (1, 1, 6, 3)
    assert out[0, 0, :, 0].tolist() == [101, 100, 0, 255, 0, 255]


def test_tensor_to_frames_refuses_nan():
    video = torch.zeros(1, 3, 1, 2, 2)
    video[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tensor_to_frames(video)
