"""Probing and decoding real files: good ones of every codec, and each kind of broken one."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from media import camera_pan, corrupt, counter, text_as_video, truncated, write_video, zero_byte
from vqvideo.data import video as V


@pytest.mark.parametrize("name,codec", [("a.mp4", "mp4v"), ("a.avi", "FFV1"), ("a.mkv", "FFV1"), ("a.avi", "MJPG")])
def test_probe_counts_frames_and_size(tmp_path, name, codec):
    path = write_video(tmp_path / name, camera_pan(frames=30, width=80, height=48), fps=12, codec=codec)
    info = V.probe(path)
    assert (info.frames, info.width, info.height) == (30, 80, 48)
    assert info.fps == pytest.approx(12)


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda d, good: zero_byte(d / "empty.mp4"), "empty file"),
        (lambda d, good: text_as_video(d / "page.mp4"), "cannot open"),
        (lambda d, good: truncated(good["mp4"], d / "cut.mp4"), "cannot open"),
        (lambda d, good: truncated(good["mkv"], d / "cut.mkv"), "truncated"),
        (lambda d, good: truncated(good["avi"], d / "cut.avi", 0.8), "truncated"),
        # Bit rot the decoder notices (a broken packet, a lost index); rot it silently conceals
        # (FFV1's slice CRCs are only logged by FFmpeg) cannot be seen through OpenCV.
        (lambda d, good: corrupt(good["mkv"], d / "rot.mkv", seed=2), "corrupt"),
        (lambda d, good: corrupt(good["mp4"], d / "rot.mp4", seed=0), "cannot open|corrupt"),
        (lambda d, good: d / "missing.mp4", "does not exist"),
    ],
    ids=["zero-byte", "text-as-mp4", "truncated-mp4", "truncated-mkv", "truncated-avi", "corrupt-mkv",
         "corrupt-mp4", "missing"],
)
def test_probe_rejects_bad_files_with_a_reason(tmp_path, make, reason):
    frames = camera_pan(frames=60, width=64, height=64)
    good = {
        "mp4": write_video(tmp_path / "good.mp4", frames),
        "mkv": write_video(tmp_path / "good.mkv", frames),
        "avi": write_video(tmp_path / "good.avi", frames, codec="MJPG"),
    }
    bad = make(tmp_path, good)
    with pytest.raises(V.VideoError, match=reason):
        V.probe(bad)
    for g in good.values():  # the originals are fine: the rejection is about the damage
        assert V.probe(g).frames == 60


def test_gray_source_decodes_natively_and_bit_exactly(tmp_path):
    frames = counter(frames=12, step=20)
    path = V.write_video(tmp_path / "gray.avi", frames, fps=10)  # FFV1 gray, lossless
    cap, table = V.open_video(path, gray=True)
    ok, first = cap.read()
    cap.release()
    assert table is V.FULL_RANGE and ok and first.shape == (32, 32)  # no BGR round trip
    np.testing.assert_array_equal(V.read_video(path, gray=True), frames)
    rgb = V.read_video(path)  # colour requested from a gray source: three equal channels
    assert rgb.shape == (12, 32, 32, 3)
    np.testing.assert_array_equal(rgb[..., 1], frames)


def _bgr_gray(path) -> np.ndarray:
    """Gray the long way: every frame decoded to BGR, then OpenCV's BGR -> gray."""
    cap, out = cv2.VideoCapture(str(path)), []
    while (got := cap.read())[0]:
        out.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2GRAY))
    cap.release()
    return np.stack(out)


@pytest.mark.parametrize("codec,suffix,table", [
    ("mp4v", ".mp4", "LIMITED_RANGE"),  # limited-range Y'CbCr: black at 16, white at 235
    ("MJPG", ".avi", "FULL_RANGE"),  # JPEG's full range, under the same I420 fourcc
])
def test_colour_source_gives_gray_from_its_luma_plane(tmp_path, codec, suffix, table):
    frames = camera_pan(frames=8, width=96, height=64)
    path = write_video(tmp_path / f"pan{suffix}", frames, codec=codec)
    cap, got_table = V.open_video(path, gray=True)
    ok, plane = cap.read()
    cap.release()
    assert got_table is getattr(V, table)  # the first frame told the range apart
    assert ok and plane.shape == (64, 96)  # no BGR conversion happened
    gray, want = V.read_video(path, gray=True), _bgr_gray(path)
    assert gray.shape == want.shape
    diff = np.abs(gray.astype(int) - want)
    # the BGR route rounds twice and clips out-of-gamut colours; the luma plane does neither
    assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 6


def test_a_misty_opening_does_not_decide_the_range(tmp_path):
    # Low-contrast mid-grey frames first: there the two ranges differ by less than the BGR
    # route's own rounding, and full range even comes out closer. They must be passed over
    # and the range decided by the first frame with real blacks and whites (limited, mp4v).
    pan = camera_pan(frames=12, width=96, height=64)
    mist = np.clip(121 + (pan[:4] - pan[:4].mean()) * 0.2, 0, 255).astype(np.uint8)
    path = write_video(tmp_path / "mist.mp4", np.concatenate([mist, pan]))
    cap, table = V.open_video(path, gray=True)
    cap.release()
    assert table is V.LIMITED_RANGE
    diff = np.abs(V.read_video(path, gray=True).astype(int) - _bgr_gray(path))
    assert diff[4:].mean() < 1.5  # the wrong (full) range would be off by about 6 levels


def test_luma_reads_leave_opencvs_log_level_as_they_found_it(tmp_path):
    path = write_video(tmp_path / "pan.mp4", camera_pan(frames=6, width=48, height=32))
    level = cv2.utils.logging.getLogLevel()
    a, b = V.iter_frames(path, gray=True), V.iter_frames(path, gray=True)
    next(a), next(b)
    assert cv2.utils.logging.getLogLevel() == level  # not held while the caller has the frame
    a.close(), b.close()  # closed out of order
    assert cv2.utils.logging.getLogLevel() == level
    from vqvideo.data import clips as C

    plan = C.ClipPlan(interval=1, length=4, stride=4, size=16, channels=1)
    with pytest.raises(V.VideoError, match="stopped after 6 frames"):
        C.sample_video(path, plan, 3, lambda *a: None)  # promised 12 frames: fails mid-read
    assert cv2.utils.logging.getLogLevel() == level


@pytest.mark.parametrize("make", [
    # FFV1 colour decodes to BGRA: its first plane is not a luma plane
    lambda d: V.write_video(d / "rgb.mkv", camera_pan(frames=6, width=48, height=32), fps=10),
    # a flat video fits both ranges: no frame tells which one the file uses
    lambda d: write_video(d / "flat.mp4", np.full((6, 32, 48, 3), 113, np.uint8)),
], ids=["lossless-bgra", "flat-video"])
def test_gray_keeps_the_bgr_route_when_the_luma_plane_cannot_be_trusted(tmp_path, make):
    path = make(tmp_path)
    cap, table = V.open_video(path, gray=True)
    ok, frame = cap.read()
    cap.release()
    assert table is None and frame.ndim == 3
    np.testing.assert_array_equal(V.read_video(path, gray=True), _bgr_gray(path))


def test_rgb_roundtrip_is_exact_with_the_lossless_codec(tmp_path):
    frames = camera_pan(frames=5, width=40, height=24)
    path = V.write_video(tmp_path / f"c{V.LOSSLESS[1]}", frames, fps=5)
    np.testing.assert_array_equal(V.read_video(path), frames)


def test_iter_frames_keeps_every_nth(tmp_path):
    path = V.write_video(tmp_path / "n.avi", counter(frames=10, step=10), fps=10)
    got = [int(f[0, 0]) for f in V.iter_frames(path, every=3, gray=True)]
    assert got == [0, 30, 60, 90]


def test_lossless_dataset_format_round_trips(tmp_path):
    # The dataset's frames follow from the seed bit for bit through the lossless container.
    frames = camera_pan(frames=4, width=32, height=32)
    path = V.write_video(tmp_path / f"a{V.LOSSLESS[1]}", frames, fps=10)
    assert path.suffix == ".mkv"
    np.testing.assert_array_equal(V.read_video(path), frames)
