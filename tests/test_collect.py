"""The collect stage on every source, with good and bad inputs side by side."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from media import (
    ODD_NAMES,
    camera_pan,
    corrupt,
    moving_shapes,
    text_as_video,
    truncated,
    write_video,
    zero_byte,
)
from vqvideo.config import CollectConfig
from vqvideo.data.synthetic import load_digit_bank
from vqvideo.data.video import read_video
from vqvideo.errors import VQVideoError
from vqvideo.io import sha256_file
from vqvideo.stages.collect import LABEL_COLUMNS, MANIFEST_COLUMNS, collect

SYNTH = dict(num_videos=6, frames_per_video=12, test_fraction=0.34)


def test_synthetic_is_deterministic_from_the_seed(tmp_path):
    a = collect(CollectConfig(**SYNTH, seed=5), tmp_path / "a", workers=1)
    b = collect(CollectConfig(**SYNTH, seed=5), tmp_path / "b", workers=2)  # parallel == serial
    c = collect(CollectConfig(**SYNTH, seed=6), tmp_path / "c", workers=1)
    assert list(a.path) == list(b.path) and all(p.endswith(".mkv") for p in a.path)
    for pa, pb, pc in zip(a.path, b.path, c.path):  # the same frames, bit for bit; another seed differs
        fa = read_video(tmp_path / "a" / pa, gray=True)
        assert np.array_equal(fa, read_video(tmp_path / "b" / pb, gray=True))
        assert not np.array_equal(fa, read_video(tmp_path / "c" / pc, gray=True))
    assert (tmp_path / "a/labels.csv").read_bytes() == (tmp_path / "b/labels.csv").read_bytes()
    for row in a.itertuples():  # the manifest's checksums are the files'
        assert sha256_file(tmp_path / "a" / row.path) == row.sha256


def test_synthetic_manifest_and_labels(tmp_path):
    manifest = collect(CollectConfig(**SYNTH, digits_per_video=2), tmp_path, workers=1)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert (manifest.status == "ok").all() and (manifest.frames == 12).all()
    assert list(manifest.split) == [""] * 4 + ["test"] * 2  # held-out digits, round(6 * 0.34)
    labels = pd.read_csv(tmp_path / "labels.csv")
    assert list(labels.columns) == LABEL_COLUMNS and len(labels) == 6 * 12 * 2
    assert set(labels.video) == set(manifest.path)  # joins with the manifest and index.csv
    assert labels.groupby("video").frame.nunique().eq(12).all()
    np.testing.assert_allclose(np.hypot(labels.vx, labels.vy), 3.6)


def test_labels_redraw_the_decoded_videos_exactly(tmp_path):
    manifest = collect(CollectConfig(**SYNTH), tmp_path, workers=1)
    bank = load_digit_bank(28)
    labels = pd.read_csv(tmp_path / "labels.csv")
    for path in manifest.path:
        video = read_video(tmp_path / path, gray=True)  # lossless: the exact pixels written
        redraw = np.zeros_like(video)
        for r in labels[labels.video == path].itertuples():
            x, y = int(np.rint(r.x)), int(np.rint(r.y))
            box = redraw[r.frame, y : y + 28, x : x + 28]
            np.maximum(box, bank.images[r.digit_image], out=box)
            assert video[r.frame, y : y + 28, x : x + 28].max() > 200  # bright where it says
        np.testing.assert_array_equal(redraw, video)


def _user_folder(root):
    """A user's folder: good videos in several formats, odd names, and every kind of bad file."""
    root.mkdir()
    good = {
        "shapes.mp4": write_video(root / "shapes.mp4", moving_shapes(frames=30)),
        "pan.mkv": write_video(root / "pan.mkv", camera_pan(frames=30)),
        "mjpeg.avi": write_video(root / "mjpeg.avi", camera_pan(frames=30, seed=3), codec="MJPG"),
    }
    for i, name in enumerate(ODD_NAMES):
        good[name] = write_video(root / name, moving_shapes(frames=24, seed=10 + i))
    bad = {
        "empty.mp4": (zero_byte(root / "empty.mp4"), "empty file"),
        "readme.mp4": (text_as_video(root / "readme.mp4"), "cannot open"),
        "cut.mkv": (truncated(good["pan.mkv"], root / "cut.mkv"), "truncated"),
        "rot.mp4": (corrupt(good["shapes.mp4"], root / "rot.mp4", seed=0), "cannot open|corrupt"),
    }
    (root / "shapes_copy.mp4").write_bytes(good["shapes.mp4"].read_bytes())
    (root / "notes.txt").write_text("not a video, and not picked up from a folder")
    return good, bad


def test_folder_keeps_every_good_video_and_skips_each_bad_one(tmp_path, caplog):
    good, bad = _user_folder(tmp_path / "mine")
    with caplog.at_level(logging.WARNING):
        manifest = collect(CollectConfig(source="folder", path=str(tmp_path / "mine")), tmp_path / "raw", workers=2)
    assert len(manifest) == len(good) + len(bad) + 1  # one row per input (notes.txt is no input)
    rows = {m.origin.split("/")[-1]: m for m in manifest.itertuples()}
    for name, src in good.items():
        r = rows[name]
        assert r.status == "ok" and r.reason == "", (name, r.reason)
        assert r.sha256 == sha256_file(src) == sha256_file(tmp_path / "raw" / r.path)
        assert r.path.startswith("videos/") and r.path.isascii() and " " not in r.path
        assert r.frames in (24, 30) and (r.width, r.height) == (96, 64)
    for name, (_, reason) in bad.items():
        assert rows[name].status == "skipped", name
        assert pd.Series([rows[name].reason]).str.contains(reason).all(), rows[name].reason
    dup = rows["shapes_copy.mp4"]
    assert dup.status == "skipped" and "duplicate of videos/" in dup.reason
    # one warning line per skipped input, naming it
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(bad) + 1 and all("\n" not in w for w in warnings)
    for name in [*bad, "shapes_copy.mp4"]:
        assert sum(name in w for w in warnings) == 1
    # only the kept videos were copied
    assert sorted(p.name for p in (tmp_path / "raw/videos").iterdir()) == sorted(
        m.path.split("/")[-1] for m in manifest.itertuples() if m.status == "ok")


def test_folder_glob_and_num_videos(tmp_path):
    for i in range(3):
        write_video(tmp_path / "in" / f"v{i}.mov", camera_pan(frames=10, seed=i))
    m = collect(CollectConfig(source="folder", path=str(tmp_path / "in" / "*.mov"), num_videos=2), tmp_path / "raw")
    assert [o.split("/")[-1] for o in m.origin] == ["v0.mov", "v1.mov"]


def test_a_4k_video_is_valid_input(tmp_path):
    frames = np.zeros((6, 2160, 3840, 3), np.uint8)
    frames[:, 800:1400, 1600:2200] = (255, 40, 40)
    write_video(tmp_path / "in" / "uhd.mp4", frames)
    m = collect(CollectConfig(source="folder", path=str(tmp_path / "in")), tmp_path / "raw")
    assert m.status.tolist() == ["ok"] and (m.width[0], m.height[0], m.frames[0]) == (3840, 2160, 6)


def test_nothing_usable_fails_with_one_clear_message(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    zero_byte(folder / "a.mp4")
    text_as_video(folder / "b.mkv")
    with pytest.raises(VQVideoError, match=r"no usable video among 2 inputs .*a\.mp4: empty file") as err:
        collect(CollectConfig(source="folder", path=str(folder)), tmp_path / "raw")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "raw").exists()  # no half-made output


@pytest.mark.parametrize("path,msg", [("missing/*.mp4", "matches no video files"), ("empty-dir", "matches no video files")])
def test_folder_that_matches_nothing(tmp_path, path, msg):
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(VQVideoError, match=msg):
        collect(CollectConfig(source="folder", path=str(tmp_path / path)), tmp_path / "raw")


def test_moving_mnist_becomes_lossless_videos(tmp_path):
    seqs = np.random.default_rng(0).integers(0, 256, (20, 3, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "mnist_test_seq.npy", seqs)
    m = collect(CollectConfig(source="moving_mnist", path=str(tmp_path / "mnist_test_seq.npy"), num_videos=2),
                tmp_path / "raw", workers=2)
    assert m.status.tolist() == ["ok", "ok"] and m.frames.tolist() == [20, 20]
    for i, path in enumerate(m.path):
        np.testing.assert_array_equal(read_video(tmp_path / "raw" / path, gray=True), seqs[:, i])


def test_moving_mnist_with_the_wrong_shape_is_one_clear_error(tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((3, 64, 64), np.uint8))
    with pytest.raises(VQVideoError, match=r"wrong\.npy.*expected a \(T, N, H, W\) uint8 array"):
        collect(CollectConfig(source="moving_mnist", path=str(tmp_path / "wrong.npy")), tmp_path / "raw")
    with pytest.raises(VQVideoError, match="is not a file"):
        collect(CollectConfig(source="moving_mnist", path=str(tmp_path / "nope.npy")), tmp_path / "raw")
