"""Clip cutting, splitting and the streaming sampler against a plain in-memory reference."""

from __future__ import annotations

import numpy as np
import pytest

from media import camera_pan, counter, moving_shapes, write_video
from vqvideo.data import clips as C
from vqvideo.data.video import VideoError, read_video


@pytest.mark.parametrize("length,stride", [(4, 1), (4, 2), (4, 4), (3, 5), (1, 1)])
def test_slots_match_brute_force(length, stride):
    plan = C.ClipPlan(interval=1, length=length, stride=stride, size=8, channels=1)
    n_clips = plan.clips(23)
    for k in range(25):
        expected = [c for c in range(n_clips) if c * stride <= k < c * stride + length]
        assert list(plan.slots(k, n_clips)) == expected


@pytest.mark.parametrize("frames,interval,length,stride,expected", [
    (40, 1, 20, 10, 3), (40, 2, 20, 10, 1), (19, 1, 20, 10, 0), (20, 1, 20, 10, 1), (41, 2, 20, 1, 2),
])
def test_clip_count(frames, interval, length, stride, expected):
    assert C.clip_count(frames, interval, length, stride) == expected


def _reference(path, plan: C.ClipPlan, gray: bool) -> np.ndarray:
    """The obvious way: decode everything, keep every n-th, crop-resize, slice: (N, T, C, H, W)."""
    frames = read_video(path, gray=gray)[:: plan.interval]
    small = np.stack([C.crop_resize(f, plan.size) for f in frames])
    small = small[:, None] if gray else small.transpose(0, 3, 1, 2)
    n = plan.clips(len(read_video(path, gray=gray)))
    return np.stack([small[c * plan.stride : c * plan.stride + plan.length] for c in range(n)])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("interval,length,stride", [(1, 5, 2), (3, 4, 4), (2, 3, 6)])
def test_streaming_sampler_equals_the_in_memory_reference(tmp_path, channels, interval, length, stride):
    # A wide mp4v (lossy, colour) video: crop, resize and colour handling all take part.
    path = write_video(tmp_path / "shapes.mp4", moving_shapes(frames=41, width=120, height=72))
    plan = C.ClipPlan(interval=interval, length=length, stride=stride, size=32, channels=channels)
    n = plan.clips(41)
    got = np.zeros((n, *plan.clip_shape), np.uint8)

    def sink(c, pos, frame):
        got[c, pos] = frame

    hist = C.sample_video(path, plan, n, sink)
    want = _reference(path, plan, gray=channels == 1)
    np.testing.assert_array_equal(got, want)
    # the histogram counts exactly the pixels written, per channel
    for ch in range(channels):
        np.testing.assert_array_equal(hist[ch], np.bincount(want[:, :, ch].ravel(), minlength=256))


def test_interval_picks_exact_source_frames(tmp_path):
    path = write_video(tmp_path / "count.avi", counter(frames=30, step=8))  # lossless gray
    plan = C.ClipPlan(interval=3, length=4, stride=2, size=32, channels=1)
    got = {}
    C.sample_video(path, plan, plan.clips(30), lambda c, p, f: got.__setitem__((c, p), int(f[0, 0, 0])))
    for (c, p), value in got.items():
        assert value == (plan.start_frame(c) + p * plan.interval) * 8 % 256


def test_video_shorter_than_promised_raises(tmp_path):
    path = write_video(tmp_path / "short.avi", counter(frames=10))
    plan = C.ClipPlan(interval=1, length=4, stride=4, size=32, channels=1)
    with pytest.raises(VideoError, match="stopped after 10 frames"):
        C.sample_video(path, plan, plan.clips(20), lambda *a: None)


def test_crop_keeps_the_centre(tmp_path):
    frame = np.zeros((40, 100, 3), np.uint8)
    frame[:, 30:70] = 255  # the centre square of a wide frame
    frame[:, :30] = 90
    out = C.crop_resize(frame, 8)
    assert out.shape == (8, 8, 3) and (out == 255).all()


def test_npy_rows_write_into_a_memory_mappable_array(tmp_path):
    path = tmp_path / "a.npy"
    C.create_array(path, 3, (2, 1, 4, 4))
    rows = C.NpyRows(path, first_row=1, clip_shape=(2, 1, 4, 4))
    rows(1, 1, np.full((1, 4, 4), 7, np.uint8))
    rows.close()
    arr = np.load(path, mmap_mode="r")
    assert arr.dtype == np.uint8 and arr.shape == (3, 2, 1, 4, 4)
    assert (arr[2, 1] == 7).all() and arr.sum() == 7 * 16


def test_splits_have_fixed_sizes_and_follow_the_seed():
    videos = [f"v{i:02d}.mp4" for i in range(20)]
    a = C.assign_splits(videos, [""] * 20, 0.1, 0.2, seed=0)
    assert (a.count("train"), a.count("val"), a.count("test")) == (14, 2, 4)
    assert C.assign_splits(videos, [""] * 20, 0.1, 0.2, seed=0) == a
    assert C.assign_splits(videos, [""] * 20, 0.1, 0.2, seed=1) != a
    # the listing order does not matter, only the names and the seed
    rev = C.assign_splits(videos[::-1], [""] * 20, 0.1, 0.2, seed=0)
    assert rev[::-1] == a


def test_a_hinted_split_is_the_sources_decision():
    videos = [f"v{i}" for i in range(10)]
    hints = [""] * 8 + ["test", "test"]
    out = C.assign_splits(videos, hints, 0.2, 0.5, seed=0)
    assert [i for i, s in enumerate(out) if s == "test"] == [8, 9]  # nothing else joins test
    assert out.count("val") == 2


def test_small_sets_keep_a_training_video():
    assert C.assign_splits(["a", "b"], ["", ""], 0.1, 0.1, 0) == ["train", "train"]
    assert sorted(C.assign_splits(["a", "b"], ["", ""], 0.3, 0.3, 0)) == ["test", "train"]
    assert C.assign_splits(["a"], [""], 0.5, 0.4, 0) == ["train"]
    out = C.assign_splits(["a", "b", "c"], ["", "", ""], 0.3, 0.3, 0)
    assert sorted(out) == ["test", "train", "val"]


def test_moments_from_a_histogram_are_exact():
    x = np.random.default_rng(0).integers(0, 256, 5000).astype(np.uint8)
    mean, std = C.moments(np.bincount(x, minlength=256))
    assert mean == pytest.approx(x.mean() / 255) and std == pytest.approx((x / 255).std())


def test_camera_pan_is_sampled_in_rgb(tmp_path):
    path = write_video(tmp_path / "pan.avi", camera_pan(frames=12, width=64, height=64))  # FFV1
    plan = C.ClipPlan(interval=1, length=6, stride=6, size=64, channels=3)
    got = np.zeros((2, *plan.clip_shape), np.uint8)
    C.sample_video(path, plan, 2, lambda c, p, f: got.__setitem__((c, p), f))
    np.testing.assert_array_equal(got.reshape(12, 3, 64, 64).transpose(0, 2, 3, 1), camera_pan(12, 64, 64))
