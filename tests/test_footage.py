"""Real footage the project films itself (scikit-image's photos as camera pans and zooms), and
that footage through the whole pipeline at 128 px: time split, crop views, every stage."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import tiny_params_dict
from vqvideo.data.footage import FILMS, make_footage
from vqvideo.data.video import read_video


def _shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """How far the content moved from frame a to frame b, by phase correlation (px)."""
    ga, gb = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float64) for f in (a, b))
    window = cv2.createHanningWindow(ga.shape[::-1], cv2.CV_64F)
    (dx, dy), _ = cv2.phaseCorrelate(ga, gb, window)
    return dx, dy


def test_films_are_photos_panned_at_their_speed(tmp_path):
    table = make_footage(tmp_path, videos=5, frames=40, seed=1)
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == sorted(table.file)
    assert (pd.read_csv(tmp_path / "films.csv").file == table.file).all()
    for film, row in zip(FILMS, table.itertuples()):
        frames = read_video(tmp_path / row.file)  # decoded back through OpenCV: a real lossy file
        assert frames.shape == (40, film.height, film.width, 3)
        assert frames.std() > 20  # a photograph, not a flat field
        if film.kind == "zoom":
            continue
        # over 4 frames (sub-pixel phase correlation is biased low on smooth photos), px a frame;
        # the median, as a turn at the photo's edge may fall in
        shifts = np.array([_shift(frames[i], frames[i + 4]) for i in range(0, 30, 4)]) / 4
        speed = np.median(np.hypot(*shifts.T))
        assert 0.7 * film.speed < speed < 1.3 * film.speed, (row.file, speed)


def test_the_same_seed_films_the_same_footage(tmp_path):
    a = make_footage(tmp_path / "a", videos=2, frames=12, seed=3)
    make_footage(tmp_path / "b", videos=2, frames=12, seed=3)
    make_footage(tmp_path / "c", videos=2, frames=12, seed=4)
    for f in a.file:
        np.testing.assert_array_equal(read_video(tmp_path / "a" / f), read_video(tmp_path / "b" / f))
    assert not np.array_equal(read_video(tmp_path / "a" / a.file[0]), read_video(tmp_path / "c" / a.file[0]))


def test_footage_command_writes_a_folder_and_refuses_nonsense(tmp_path):
    run = [sys.executable, "-m", "vqvideo", "footage", "--out", str(tmp_path / "f"), "--videos", "1", "--frames", "8"]
    assert subprocess.run(run, capture_output=True, text=True).returncode == 0
    assert len(list((tmp_path / "f").glob("*.mp4"))) == 1
    bad = subprocess.run([*run[:-1], "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--frames >= 2" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_few_real_videos_at_128_px_run_every_stage(tmp_path):
    from test_pipeline import _env, _run, make_repo

    make_footage(tmp_path / "videos", videos=2, frames=110, seed=0)
    params = tiny_params_dict(
        collect={"source": "folder", "path": str(tmp_path / "videos")},
        sample={"channels": 3, "size": 128, "frame_interval": 3, "augment": 2, "flip": True},
        model={"downsample": 4},
        prior={"patch": 2},
        generate={"num_inputs": 1, "num_samples": 2},
        evaluate={"generation_clips": 1},
    )
    repo = make_repo(tmp_path / "repo", params)
    _run([sys.executable, "-m", "dvc", "repro"], repo, _env())

    stats = json.loads((repo / "data/frames/stats.json").read_text())
    assert stats["split_by"] == "time" and stats["clip_shape"] == [8, 3, 128, 128]
    assert all(stats["clips"][s] > 0 for s in ("train", "val", "test"))
    assert stats["views"]["train"] > 0 and stats["views"]["test"] == 0
    index = pd.read_csv(repo / "data/frames/index.csv")
    for video, rows in index.groupby("video"):  # time order: train, then val, then test
        first = rows.groupby("split").start_frame.min()
        last = rows.groupby("split").end_frame.max()
        assert last["train"] < first["val"] and last["val"] < first["test"], video
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert np.isfinite(metrics["recon"]["psnr"]) and np.isfinite(metrics["prediction"]["mse_frame"])
    assert "digit_accuracy_last" not in metrics["prediction"]  # footage has no labels
    clip = read_video(next((repo / "reports/generated").glob("*.mp4")))
    assert clip.shape[1] >= 128 and clip.shape[-1] == 3  # frames at 128 px, in colour
