"""Clip cutting, splitting and the streaming sampler against a plain in-memory reference."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from media import camera_pan, counter, moving_shapes, write_video
from vqvideo.data import clips as C
from vqvideo.data import splits as S
from vqvideo.data.video import LIMITED_RANGE, VideoError, open_video, quiet_opencv, read_video


@pytest.mark.parametrize("length,stride", [(4, 1), (4, 2), (4, 4), (3, 5), (1, 1)])
def test_slots_match_brute_force(length, stride):
    plan = C.ClipPlan(interval=1, length=length, stride=stride, size=8, channels=1)
    n_clips = plan.clips(23)
    for k in range(25):
        expected = [c for c in range(n_clips) if c * stride <= k < c * stride + length]
        assert list(plan.slots(k, n_clips)) == expected


@pytest.mark.parametrize("length,stride", [(4, 1), (4, 2), (4, 4), (3, 5), (1, 1), (20, 10)])
def test_times_count_the_slots(length, stride):
    plan = C.ClipPlan(interval=1, length=length, stride=stride, size=8, channels=1)
    for n_clips in (0, 1, 2, 5):
        last = (n_clips - 1) * stride + length if n_clips else 0
        assert plan.times(n_clips) == [len(plan.slots(k, n_clips)) for k in range(last)]


@pytest.mark.parametrize("frames,interval,length,stride,expected", [
    (40, 1, 20, 10, 3), (40, 2, 20, 10, 1), (19, 1, 20, 10, 0), (20, 1, 20, 10, 1), (41, 2, 20, 1, 2),
])
def test_clip_count(frames, interval, length, stride, expected):
    assert C.clip_count(frames, interval, length, stride) == expected


def _reference(path, plan: C.ClipPlan, gray: bool) -> np.ndarray:
    """The obvious way: decode everything, keep every n-th, crop-resize, slice: (N, T, C, H, W).

    Colour is shrunk in BGR; gray comes from the decoder's luma plane, shrunk, then mapped to
    full range (the documented order)."""
    if gray:
        cap, table = open_video(path, gray=True)
        assert table is LIMITED_RANGE  # mp4v: the luma route, not the BGR one
        everything = []
        with quiet_opencv():
            while (got := cap.read())[0]:
                everything.append(got[1])
        cap.release()
        small = np.stack([table[C.crop_resize(f, plan.size)] for f in everything[:: plan.interval]])[:, None]
    else:
        everything = read_video(path)
        small = np.stack([C.crop_resize(f, plan.size) for f in everything[:: plan.interval]])
        small = small.transpose(0, 3, 1, 2)
    n = plan.clips(len(everything))
    return np.stack([small[c * plan.stride : c * plan.stride + plan.length] for c in range(n)])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("interval,length,stride", [(1, 5, 2), (3, 4, 4), (2, 3, 6)])
def test_streaming_sampler_equals_the_in_memory_reference(tmp_path, channels, interval, length, stride):
    # A wide mp4v (lossy, colour) video: crop, resize and colour handling all take part.
    path = write_video(tmp_path / "shapes.mp4", moving_shapes(frames=41, width=120, height=72))
    plan = C.ClipPlan(interval=interval, length=length, stride=stride, size=32, channels=channels)
    n = plan.clips(41)
    got = np.zeros((n, *plan.clip_shape), np.uint8)

    def sink(c, frames):
        got[c] = np.stack(frames)

    sums = C.sample_video(path, plan, n, sink)
    want = _reference(path, plan, gray=channels == 1)
    np.testing.assert_array_equal(got, want)
    # the sums count the pixels written, per channel
    assert sums.n == want[:, :, 0].size
    for ch in range(channels):
        assert sums.s[ch] == pytest.approx(int(want[:, :, ch].sum(dtype=np.int64)), rel=1e-12)
        assert sums.ss[ch] == pytest.approx(int((want[:, :, ch].astype(np.int64) ** 2).sum()), rel=1e-12)


def test_a_video_already_at_size_is_stored_as_decoded(tmp_path):
    # No crop, no resize: the luma plane goes straight through the range table.
    path = write_video(tmp_path / "small.mp4", camera_pan(frames=9, width=32, height=32))
    plan = C.ClipPlan(interval=1, length=3, stride=3, size=32, channels=1)
    got = []
    C.sample_video(path, plan, 3, lambda c, frames: got.extend(f.copy() for f in frames))
    cap, table = open_video(path, gray=True)
    with quiet_opencv():
        planes = [cap.read()[1] for _ in range(9)]
    cap.release()
    assert table is LIMITED_RANGE
    np.testing.assert_array_equal(np.stack(got)[:, 0], table[np.stack(planes)])


def test_interval_picks_exact_source_frames(tmp_path):
    path = write_video(tmp_path / "count.avi", counter(frames=30, step=8))  # lossless gray
    plan = C.ClipPlan(interval=3, length=4, stride=2, size=32, channels=1)
    got = {}
    C.sample_video(path, plan, plan.clips(30), lambda c, frames: got.__setitem__(c, [int(f[0, 0, 0]) for f in frames]))
    assert sorted(got) == list(range(plan.clips(30)))
    for c, values in got.items():
        assert values == [(plan.start_frame(c) + p * plan.interval) * 8 % 256 for p in range(plan.length)]


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
    rows = C.NpyRows(path, C.data_offset(path), first_row=1, clip_shape=(2, 1, 4, 4))
    rows(1, [np.full((1, 4, 4), 7, np.uint8), np.full((1, 4, 4), 9, np.uint8)])
    rows.close()
    arr = np.load(path, mmap_mode="r")
    assert arr.dtype == np.uint8 and arr.shape == (3, 2, 1, 4, 4)
    assert (arr[2, 0] == 7).all() and (arr[2, 1] == 9).all() and arr.sum() == 16 * 16


def test_splits_have_fixed_sizes_and_follow_the_seed():
    videos = [f"v{i:02d}.mp4" for i in range(20)]
    a = S.assign_splits(videos, [""] * 20, 0.1, 0.2, seed=0)
    assert (a.count("train"), a.count("val"), a.count("test")) == (14, 2, 4)
    assert S.assign_splits(videos, [""] * 20, 0.1, 0.2, seed=0) == a
    assert S.assign_splits(videos, [""] * 20, 0.1, 0.2, seed=1) != a
    # the listing order does not matter, only the names and the seed
    rev = S.assign_splits(videos[::-1], [""] * 20, 0.1, 0.2, seed=0)
    assert rev[::-1] == a


def test_a_hinted_split_is_the_sources_decision():
    videos = [f"v{i}" for i in range(10)]
    hints = [""] * 8 + ["test", "test"]
    out = S.assign_splits(videos, hints, 0.2, 0.5, seed=0)
    assert [i for i, s in enumerate(out) if s == "test"] == [8, 9]  # nothing else joins test
    assert out.count("val") == 2


def test_small_sets_keep_a_training_video():
    assert S.assign_splits(["a", "b"], ["", ""], 0.1, 0.1, 0) == ["train", "train"]
    assert sorted(S.assign_splits(["a", "b"], ["", ""], 0.3, 0.3, 0)) == ["test", "train"]
    assert S.assign_splits(["a"], [""], 0.5, 0.4, 0) == ["train"]
    out = S.assign_splits(["a", "b", "c"], ["", "", ""], 0.3, 0.3, 0)
    assert sorted(out) == ["test", "train", "val"]


def test_pixel_sums_give_the_moments():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 3, 8, 8)).astype(np.uint8)  # (N, C, H, W)
    a, b = C.PixelSums(3), C.PixelSums(3)
    a.add(np.concatenate([rgb, rgb[::-1]]))
    b.add(rgb[:2])
    b.add(rgb[2:])
    twice = C.PixelSums(3)
    twice += b
    twice += b  # b counted twice: the same as every frame in two clips
    assert a.n == twice.n and a.s == pytest.approx(twice.s, rel=1e-12) and a.ss == pytest.approx(twice.ss, rel=1e-12)
    mean, std = a.moments()
    assert mean == pytest.approx(rgb.mean() / 255) and std == pytest.approx((rgb / 255).std())
    for c, (m, s) in enumerate(a.channel_moments()):
        assert m == pytest.approx(rgb[:, c].mean() / 255) and s == pytest.approx((rgb[:, c] / 255).std())
    strided = rgb[:4, ::2]  # a view with a gap between its channels, as a clip ring's can be
    g = C.PixelSums(2)
    g.add(strided)
    assert g.n == 4 * 64
    assert g.s == pytest.approx([int(strided[:, c].sum()) for c in range(2)], rel=1e-12)


@pytest.mark.parametrize("src,size", [(360, 64), (256, 64), (200, 64), (127, 64), (64, 64), (40, 64),
                                      (2144, 64), (96, 32)])
def test_resize_square_is_close_to_area_averaging(src, size):
    # Smooth content, as in real footage: the mipmap stays within a few grey levels of INTER_AREA.
    # (Sizes that are not a multiple of 2**halvings are first trimmed by less than one output
    # pixel, which shifts the picture by a fraction of a pixel; these sizes need no trim.)
    rng = np.random.default_rng(src)
    grid = size // 4 + 2  # detail of about 4 output pixels
    img = cv2.resize(rng.integers(0, 256, (grid, grid, 3), dtype=np.uint8), (src, src),
                     interpolation=cv2.INTER_CUBIC)
    got = C.resize_square(img, size)
    assert got.shape == (size, size, 3) and got.dtype == np.uint8
    interp = cv2.INTER_AREA if src > size else cv2.INTER_LINEAR
    ref = cv2.resize(img, (size, size), interpolation=interp).astype(int)
    assert np.abs(got.astype(int) - ref).mean() < 2.5  # a half-pixel shift would give 5-8


def test_camera_pan_is_sampled_in_rgb(tmp_path):
    path = write_video(tmp_path / "pan.avi", camera_pan(frames=12, width=64, height=64))  # FFV1
    plan = C.ClipPlan(interval=1, length=6, stride=6, size=64, channels=3)
    got = np.zeros((2, *plan.clip_shape), np.uint8)
    C.sample_video(path, plan, 2, lambda c, frames: got.__setitem__(c, np.stack(frames)))
    np.testing.assert_array_equal(got.reshape(12, 3, 64, 64).transpose(0, 2, 3, 1), camera_pan(12, 64, 64))


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("contiguous", [True, False])
def test_colour_frames_land_in_the_ring_as_planar_rgb(channels, contiguous):
    rng = np.random.default_rng(channels)
    frame = rng.integers(0, 256, (16, 24, channels), dtype=np.uint8)  # BGR[A], as OpenCV decodes
    small = np.ascontiguousarray(frame[:, 4:20]) if contiguous else frame[:, 4:20]  # a crop is a view
    ring = np.zeros((3, 3, 16, 16), np.uint8)
    C._storer(frame, gray=False, table=None)(small, ring[1])
    np.testing.assert_array_equal(ring[1], small[..., 2::-1].transpose(2, 0, 1))
    assert not ring[0].any() and not ring[2].any()  # the neighbouring slots are untouched
