"""The sample stage: arrays, index, splits, stats, colour, bad input, parallelism, memory."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from media import ODD_NAMES, camera_pan, counter, moving_shapes, solid_square, write_video
from vqvideo.config import CollectConfig, SampleConfig
from vqvideo.data.clips import crop_resize
from vqvideo.data.frames import FrameData
from vqvideo.data.video import read_video
from vqvideo.errors import VQVideoError
from vqvideo.stages.collect import collect
from vqvideo.stages.sample import INDEX_COLUMNS, VIDEO_COLUMNS, sample

SMALL = dict(clip_length=6, clip_stride=3, size=32, val_fraction=0.2, test_fraction=0.2, workers=1)


@pytest.fixture(scope="module")
def digits_raw(tmp_path_factory):
    """10 Moving Digits videos of 16 frames, 2 of them (held-out digits) for test."""
    raw = tmp_path_factory.mktemp("digits") / "raw"
    collect(CollectConfig(num_videos=10, frames_per_video=16, test_fraction=0.2, seed=3), raw, workers=1)
    return raw


def _folder_raw(tmp_path, files: dict) -> tuple:
    """collect over a folder of {name: frames} written as FFV1 (.avi/.mkv) or mp4v (.mp4)."""
    for name, frames in files.items():
        write_video(tmp_path / "in" / name, frames, fps=10)
    collect(CollectConfig(source="folder", path=str(tmp_path / "in")), tmp_path / "raw")
    return tmp_path / "raw", tmp_path / "frames"


def test_outputs_are_consistent(digits_raw, tmp_path):
    stats = sample(SampleConfig(**SMALL), digits_raw, tmp_path / "f")
    data = FrameData.open(tmp_path / "f")
    index = pd.read_csv(tmp_path / "f/index.csv")
    videos = pd.read_csv(tmp_path / "f/videos.csv", keep_default_na=False)
    assert list(index.columns) == INDEX_COLUMNS and list(videos.columns) == VIDEO_COLUMNS
    for split in ("train", "val", "test"):
        arr = data.clips(split)  # memory-mapped uint8 (N, T, C, H, W)
        assert isinstance(arr, np.memmap) and arr.dtype == np.uint8
        assert arr.shape == (stats["clips"][split], 6, 1, 32, 32)
        rows = index[index.split == split]
        assert rows["clip"].tolist() == list(range(len(arr)))
        assert stats["videos"][split] == rows.video.nunique()
        assert stats["frames"][split] == len(arr) * 6
    # (16 frames - 6) // 3 + 1 = 4 clips per video, starting every 3 frames
    assert index.groupby("video").start_frame.apply(list).map(lambda s: s == [0, 3, 6, 9]).all()
    assert (index.end_frame - index.start_frame == 5).all()
    assert stats["videos"] == {"train": 6, "val": 2, "test": 2}  # 10 videos: 0.2 val, held-out test
    # pixel stats are over every train clip frame, exactly
    train = data.clips("train") / 255.0
    assert stats["pixel_mean"] == pytest.approx(train.mean()) and stats["pixel_std"] == pytest.approx(train.std())
    assert stats["clip_shape"] == [6, 1, 32, 32] and "workers" not in stats["config"]


def test_clips_are_the_videos_frames(digits_raw, tmp_path):
    sample(SampleConfig(**SMALL), digits_raw, tmp_path / "f")
    data = FrameData.open(tmp_path / "f")
    for row in data.index().sample(5, random_state=0).itertuples():
        frames = read_video(digits_raw / row.video, gray=True)[row.start_frame : row.end_frame + 1]
        want = np.stack([crop_resize(f, 32) for f in frames])[:, None]
        np.testing.assert_array_equal(data.clips(row.split)[row.clip], want)


def test_splits_are_by_video_and_test_digits_never_appear_in_train(digits_raw, tmp_path):
    sample(SampleConfig(**SMALL), digits_raw, tmp_path / "f")
    index = pd.read_csv(tmp_path / "f/index.csv")
    assert (index.groupby("video").split.nunique() == 1).all()  # no video in two splits
    labels = pd.read_csv(digits_raw / "labels.csv")
    split_of = index.drop_duplicates("video").set_index("video").split
    labels["split"] = labels.video.map(split_of)
    test_ids = set(labels.digit_image[labels.split == "test"])
    train_ids = set(labels.digit_image[labels.split == "train"])
    assert test_ids and train_ids and test_ids.isdisjoint(train_ids)


def test_labels_follow_the_sampled_clips(digits_raw, tmp_path):
    # frame_interval 2: the labels of source frame start + 2 t are at clip frame t
    sample(SampleConfig(**{**SMALL, "size": 64, "frame_interval": 2, "clip_length": 4}), digits_raw, tmp_path / "f")
    data = FrameData.open(tmp_path / "f")
    labels = pd.read_csv(digits_raw / "labels.csv").set_index(["video", "frame"])
    for row in data.index().itertuples():
        clip = data.clips(row.split)[row.clip]
        for t in range(4):
            for d in labels.loc[(row.video, row.start_frame + 2 * t)].itertuples():
                x, y = int(np.rint(d.x)), int(np.rint(d.y))
                assert clip[t, 0, y : y + 28, x : x + 28].max() > 200


def test_same_seed_same_split_other_seed_other_split(digits_raw, tmp_path):
    cfg = {**SMALL, "test_fraction": 0.0, "val_fraction": 0.3}
    a = sample(SampleConfig(**cfg, seed=0), digits_raw, tmp_path / "a")
    sample(SampleConfig(**cfg, seed=0), digits_raw, tmp_path / "b")
    sample(SampleConfig(**cfg, seed=9), digits_raw, tmp_path / "c")
    val = {k: set(pd.read_csv(tmp_path / k / "index.csv").query("split == 'val'").video) for k in "abc"}
    assert val["a"] == val["b"] and val["a"] != val["c"] and len(val["a"]) == 3
    assert a["videos"]["test"] == 2  # the held-out digits stay test whatever sample.test_fraction says


def test_parallel_output_equals_serial_bit_for_bit(tmp_path):
    files = {f"s{i}.mp4": moving_shapes(frames=20 + 7 * i, seed=i) for i in range(5)}
    raw, _ = _folder_raw(tmp_path, files)
    cfg = {**SMALL, "channels": 3}
    s1 = sample(SampleConfig(**cfg), raw, tmp_path / "serial", workers=1)
    s2 = sample(SampleConfig(**{**cfg, "workers": 2}), raw, tmp_path / "parallel", workers=2)
    assert s1 == s2
    for f in ("train.npy", "val.npy", "test.npy", "index.csv", "videos.csv", "stats.json"):
        assert (tmp_path / "serial" / f).read_bytes() == (tmp_path / "parallel" / f).read_bytes(), f


def test_frame_interval_keeps_exactly_every_nth_frame(tmp_path):
    raw, out = _folder_raw(tmp_path, {"count.avi": counter(frames=40, step=5)})  # lossless
    sample(SampleConfig(**{**SMALL, "frame_interval": 3, "val_fraction": 0, "test_fraction": 0}), raw, out)
    data = FrameData.open(out)
    for row in data.index().itertuples():
        values = data.clips("train")[row.clip][:, 0, 0, 0]
        assert values.tolist() == [(row.start_frame + 3 * t) * 5 % 256 for t in range(6)]


def test_colour_survives_end_to_end(tmp_path):
    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    # mp4v: lossy and 4:2:0, the way most camera footage arrives
    raw, out = _folder_raw(tmp_path, {f"{k}.mp4": solid_square(frames=12, rgb=v) for k, v in colours.items()})
    sample(SampleConfig(**{**SMALL, "channels": 3, "val_fraction": 0, "test_fraction": 0}), raw, out)
    data = FrameData.open(out)
    assert data.stats["clip_shape"] == [6, 3, 32, 32]
    for row in data.index().itertuples():
        centre = data.clips("train")[row.clip][:, :, 12:20, 12:20].astype(int)  # (T, RGB, 8, 8)
        want = np.array(colours[row.video.split("_")[-1].split(".")[0]])
        assert np.abs(centre - want[None, :, None, None]).max() < 40, row.video
    m = data.stats["channel_mean"]
    assert len(m) == 3 and max(m) - min(m) < 0.02  # one square of each colour: balanced channels


def test_rgb_pan_and_shapes_are_exact_with_a_lossless_codec(tmp_path):
    pan, shapes = camera_pan(frames=12, width=96, height=64), moving_shapes(frames=12)
    raw, out = _folder_raw(tmp_path, {"pan.avi": pan, "shapes.mkv": shapes})
    sample(SampleConfig(**{**SMALL, "channels": 3, "clip_stride": 6, "val_fraction": 0, "test_fraction": 0}), raw, out)
    data = FrameData.open(out)
    for row in data.index().itertuples():
        src = pan if "pan" in row.video else shapes
        want = np.stack([crop_resize(f, 32) for f in src[row.start_frame : row.end_frame + 1]])
        np.testing.assert_array_equal(data.clips("train")[row.clip], want.transpose(0, 3, 1, 2))


def test_short_videos_are_skipped_with_a_reason(tmp_path, caplog):
    files = {"long.avi": counter(frames=20), "short.avi": counter(frames=4), **{n: moving_shapes(frames=12, seed=i) for i, n in enumerate(ODD_NAMES)}}
    raw, out = _folder_raw(tmp_path, files)
    with caplog.at_level(logging.WARNING):
        stats = sample(SampleConfig(**{**SMALL, "val_fraction": 0, "test_fraction": 0}), raw, out)
    videos = pd.read_csv(out / "videos.csv", keep_default_na=False).set_index("path")
    short = videos.loc[videos.index.str.contains("short")].iloc[0]
    assert short.status == "skipped" and short.skipped_by == "sample" and short.clips == 0
    assert "shorter than one clip: 4 frames" in short.reason
    assert sum("short.avi" in r.getMessage() for r in caplog.records) == 1
    assert stats["videos"]["train"] == 4 and stats["skipped_videos"] == 1  # odd names are fine


def test_collects_skips_are_listed_too(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.mp4").write_bytes(b"")
    raw, out = _folder_raw(tmp_path, {"ok.avi": counter(frames=12)})
    stats = sample(SampleConfig(**SMALL), raw, out)
    videos = pd.read_csv(out / "videos.csv", keep_default_na=False)
    assert videos.status.tolist() == ["skipped", "ok"] and videos.skipped_by[0] == "collect"
    assert "empty file" in videos.reason[0] and stats["skipped_videos"] == 1


def test_a_video_that_changed_since_collect_is_dropped_and_the_rest_kept(tmp_path, caplog):
    raw, out = _folder_raw(tmp_path, {f"v{i}.avi": counter(frames=12 + i) for i in range(3)})
    manifest = pd.read_csv(raw / "manifest.csv", keep_default_na=False)
    manifest.loc[1, "frames"] = 40  # the manifest promises more than the file holds
    manifest.to_csv(raw / "manifest.csv", index=False)
    with caplog.at_level(logging.WARNING):
        stats = sample(SampleConfig(**{**SMALL, "val_fraction": 0, "test_fraction": 0}), raw, out)
    videos = pd.read_csv(out / "videos.csv", keep_default_na=False)
    assert videos.status.tolist() == ["ok", "skipped", "ok"] and "decoding stopped" in videos.reason[1]
    data = FrameData.open(out)
    index = data.index()
    assert stats["clips"]["train"] == len(index) == len(data.clips("train")) == 3 + 3  # 12, 14 frames
    assert index["clip"].tolist() == list(range(6)) and not index.video.str.contains("v1").any()
    for row in index.itertuples():  # the compacted rows still hold their own video's frames
        assert data.clips("train")[row.clip][0, 0, 0, 0] == row.start_frame * 8 % 256


def test_nothing_long_enough_is_one_clear_error(tmp_path):
    raw, out = _folder_raw(tmp_path, {"a.avi": counter(frames=4), "b.avi": counter(frames=5)})
    with pytest.raises(VQVideoError, match="no video is long enough for one clip of 6 frames"):
        sample(SampleConfig(**SMALL), raw, out)
    assert not out.exists()


def test_missing_manifest_is_one_clear_error(tmp_path):
    with pytest.raises(VQVideoError, match="run `dvc repro collect` first"):
        sample(SampleConfig(**SMALL), tmp_path / "raw", tmp_path / "frames")


def test_4k_video_is_sampled(tmp_path):
    frames = np.zeros((8, 2160, 3840, 3), np.uint8)
    frames[:, 780:1380, 1620:2220] = (250, 30, 30)  # a red block in the centre
    raw, out = _folder_raw(tmp_path, {"uhd.mp4": frames})
    sample(SampleConfig(**{**SMALL, "channels": 3, "val_fraction": 0, "test_fraction": 0}), raw, out)
    clip = FrameData.open(out).clips("train")[0]
    assert clip.shape == (6, 3, 32, 32)
    assert clip[:, 0, 16, 16].min() > 200 and clip[:, 1:, 16, 16].max() < 60 and clip[:, :, 0, 0].max() < 20


_CHILD = textwrap.dedent("""
    import resource, sys
    from vqvideo.config import SampleConfig
    from vqvideo.stages.sample import sample
    raw, out, how = sys.argv[1:4]
    if how == "sample":
        sample(SampleConfig(clip_length=8, clip_stride=8, size=64, channels=3, val_fraction=0,
                            test_fraction=0), raw, out, workers=1)
    else:  # the naive way, as a control: every frame in memory at once
        from vqvideo.data.video import read_video
        import glob
        frames = read_video(glob.glob(raw + "/videos/*")[0])
    # VmHWM is this process image's own peak; ru_maxrss would also count the parent's RSS at
    # fork time, which Linux carries across exec (and pytest's process is big and growing).
    try:
        status = open("/proc/self/status").read()
        print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    except OSError:
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


@pytest.mark.slow
def test_memory_does_not_grow_with_video_length(tmp_path):
    """Peak RSS of sampling a 10x longer video, each in a fresh process (OpenCV's buffers are
    invisible to tracemalloc); a control run that loads the whole video shows the test can tell.
    The baseline is large (the child imports torch through vqvideo), so the control matters."""
    peak = {}
    for name, n in (("short", 40), ("long", 400)):
        root = tmp_path / name
        write_video(root / "in" / "v.mp4", camera_pan(frames=n, width=640, height=360, speed=1))
        collect(CollectConfig(source="folder", path=str(root / "in")), root / "raw")
        for how in ("sample", "naive") if name == "long" else ("sample",):
            out = subprocess.run([sys.executable, "-c", _CHILD, str(root / "raw"), str(root / "f"), how],
                                 capture_output=True, text=True, check=True)
            peak[name, how] = int(out.stdout.split()[-1])  # KiB on Linux
    ratio = peak["long", "sample"] / peak["short", "sample"]
    control = peak["long", "naive"] / peak["short", "sample"]
    print(f"peak RSS KiB {peak}; sample long/short {ratio:.3f}; naive long/short {control:.3f}")
    assert ratio <= 1.2
    assert control > 1.2  # 400 frames of 640x360 RGB are 276 MB: a leak of that size would show
    assert json.loads((tmp_path / "long/f/stats.json").read_text())["clips"]["train"] == 50


def test_many_short_videos_over_two_workers_equal_serial_with_a_broken_one(tmp_path):
    # 40 videos over 2 workers: chunks of several videos per task, one of them broken mid-chunk
    raw = tmp_path / "raw"
    collect(CollectConfig(num_videos=40, frames_per_video=12, test_fraction=0.1, seed=5), raw, workers=1)
    broken = sorted(raw.glob("videos/*"))[17]
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 3])
    cfg = {**SMALL, "val_fraction": 0.2, "test_fraction": 0.0}
    s1 = sample(SampleConfig(**cfg), raw, tmp_path / "serial", workers=1)
    s2 = sample(SampleConfig(**{**cfg, "workers": 2}), raw, tmp_path / "parallel", workers=2)
    assert s1 == s2
    for f in ("train.npy", "val.npy", "test.npy", "index.csv", "videos.csv", "stats.json"):
        assert (tmp_path / "serial" / f).read_bytes() == (tmp_path / "parallel" / f).read_bytes(), f
    videos = pd.read_csv(tmp_path / "parallel" / "videos.csv")
    assert (videos.status != "ok").sum() == 1 and (videos.status == "ok").sum() == 39


def test_few_videos_are_split_by_time_and_no_frame_is_in_two_splits(tmp_path, caplog):
    # one long video (the single-video case) and a shorter one; counter frames carry their number
    raw, out = _folder_raw(tmp_path, {"long.avi": counter(frames=90, step=1), "short.avi": counter(frames=40, step=1)})
    with caplog.at_level(logging.INFO):
        stats = sample(SampleConfig(**SMALL), raw, out)
    assert stats["split_by"] == "time" and "split by time" in caplog.text
    data = FrameData.open(out)
    index = data.index()
    assert all(stats["clips"][s] > 0 for s in ("train", "val", "test"))
    assert stats["videos"] == {"train": 2, "val": 2, "test": 2}
    videos = pd.read_csv(out / "videos.csv", keep_default_na=False)
    assert set(videos.split) == {"time"}
    for video, rows in index.groupby("video"):
        seen = {}
        for row in rows.itertuples():
            frames = data.clips(row.split)[row.clip][:, 0, 0, 0].tolist()  # each frame's number
            assert frames == list(range(row.start_frame, row.end_frame + 1))
            for f in frames:
                assert seen.setdefault(f, row.split) == row.split, f"frame {f} of {video} in two splits"
        # time order: every train frame comes before every val frame, val before test
        last = {s: max(f for f, t in seen.items() if t == s) for s in set(seen.values())}
        first = {s: min(f for f, t in seen.items() if t == s) for s in set(seen.values())}
        assert last["train"] < first["val"] and last["val"] < first["test"]


def test_one_video_alone_trains_and_evaluates(tmp_path):
    raw, out = _folder_raw(tmp_path, {"only.mp4": camera_pan(frames=320, width=96, height=64)})
    stats = sample(SampleConfig(**{**SMALL, "size": 32, "clip_length": 20, "clip_stride": 10,
                                   "frame_interval": 3, "channels": 3}), raw, out)
    assert stats["split_by"] == "time" and stats["videos"]["test"] == 1
    assert stats["clips"]["test"] >= 1 and stats["clips"]["val"] >= 1 and stats["clips"]["train"] >= 3


def test_many_videos_keep_the_video_split_and_time_can_be_forced(tmp_path):
    files = {f"v{i:02d}.avi": counter(frames=24 + i, step=1) for i in range(10)}  # distinct files
    raw, out = _folder_raw(tmp_path, files)
    assert sample(SampleConfig(**SMALL), raw, out)["split_by"] == "video"
    assert sample(SampleConfig(**{**SMALL, "split": "time"}), raw, tmp_path / "t")["split_by"] == "time"
    assert sample(SampleConfig(**{**SMALL, "split": "video"}), raw, tmp_path / "v")["videos"]["test"] == 2


def test_crop_views_are_train_only_real_crops_of_the_full_frame(tmp_path):
    pan = camera_pan(frames=60, width=96, height=64)
    raw, out = _folder_raw(tmp_path, {"pan.avi": pan})  # lossless, so crops compare exactly-ish
    cfg = SampleConfig(**{**SMALL, "channels": 3, "augment": 3, "flip": True, "crop_scale": (0.5, 0.9)})
    stats = sample(cfg, raw, out)
    data = FrameData.open(out)
    index = data.index()
    plain = index[index.view == 0]
    assert stats["views"] == {"train": 3 * (plain.split == "train").sum(), "val": 0, "test": 0}
    assert (index[index.split != "train"].view == 0).all()
    assert len(data.clips("train")) == (index.split == "train").sum()
    from vqvideo.data.clips import View

    views = index[index.view > 0]
    assert views.flip.any() and not views.flip.all()  # some mirrored, seeded
    assert views.crop_scale.between(0.5, 0.9).all() and views.crop_scale.nunique() > 1
    for row in views.itertuples():
        view = View(row.crop_scale, row.crop_x, row.crop_y, bool(row.flip))
        want = np.stack([view(f, 32, {}) for f in pan[row.start_frame : row.end_frame + 1]])
        got = data.clips("train")[row.clip].transpose(0, 2, 3, 1)
        assert np.abs(got.astype(int) - want).max() <= 2, row.clip  # the same crop of the same frames
    # the plain rows are untouched by augmentation: equal to a run without it
    sample(SampleConfig(**{**SMALL, "channels": 3}), raw, tmp_path / "plain")
    base = FrameData.open(tmp_path / "plain")
    for split in ("train", "val", "test"):
        rows = index[(index.split == split) & (index.view == 0)]["clip"].to_numpy()
        np.testing.assert_array_equal(data.clips(split)[rows], base.clips(split))
    # the same seed draws the same views
    sample(cfg, raw, tmp_path / "again")
    np.testing.assert_array_equal(FrameData.open(tmp_path / "again").clips("train"), data.clips("train"))
