"""Moving Digits: the motion is Moving MNIST's and the labels describe the pixels exactly."""

from __future__ import annotations

import numpy as np
import pytest

from vqvideo.data.synthetic import bounce_trajectory, load_digit_bank, moving_digits_video


@pytest.fixture(scope="module")
def bank():
    return load_digit_bank(28)


def test_bank_is_upscaled_sklearn_digits_with_a_heldout_pool(bank):
    assert bank.images.shape == (1797, 28, 28) and bank.images.dtype == np.uint8
    assert bank.images.max() == 255 and set(np.unique(bank.labels)) == set(range(10))
    assert bank.heldout_from == round(1797 * 0.8)
    # both pools hold every class, so held-out videos are not a different task
    assert set(bank.labels[bank.heldout_from :]) == set(range(10))


def test_trajectory_bounces_inside_the_canvas_at_constant_speed():
    pos, vel = bounce_trajectory(np.random.default_rng(3), 400, limit=36.0, speed=3.6)
    assert pos.min() >= 0 and pos.max() <= 36
    np.testing.assert_allclose(np.linalg.norm(vel, axis=1), 3.6)
    step = pos[1:] - pos[:-1]
    free = (np.sign(vel[1:]) == np.sign(vel[:-1])).all(1)  # no wall hit between t and t+1
    np.testing.assert_allclose(step[free], vel[:-1][free])
    assert (~free).sum() >= 10  # 400 frames at 3.6 px in a 36 px box: it did bounce


def test_video_is_the_max_composite_of_labelled_digits(bank):
    video, labels = moving_digits_video(
        np.random.default_rng(0), bank, frames=30, num_digits=3, canvas=64, speed=3.6, heldout=False
    )
    assert video.shape == (30, 64, 64) and len(labels) == 30 * 3
    assert list(labels.columns) == ["frame", "digit", "label", "digit_image", "x", "y", "vx", "vy"]
    # redraw every frame from the labels alone
    redraw = np.zeros_like(video)
    for r in labels.itertuples():
        x, y = int(np.rint(r.x)), int(np.rint(r.y))
        patch = redraw[r.frame, y : y + 28, x : x + 28]
        np.maximum(patch, bank.images[r.digit_image], out=patch)
        assert bank.labels[r.digit_image] == r.label
    np.testing.assert_array_equal(redraw, video)
    assert (labels.digit_image < bank.heldout_from).all()


def test_heldout_videos_draw_only_heldout_digits(bank):
    rng = np.random.default_rng(1)
    for _ in range(20):
        _, labels = moving_digits_video(rng, bank, frames=2, num_digits=2, canvas=64, speed=3.6, heldout=True)
        assert (labels.digit_image >= bank.heldout_from).all()


def test_same_rng_same_video(bank):
    kw = dict(frames=10, num_digits=2, canvas=64, speed=3.6, heldout=False)
    a, la = moving_digits_video(np.random.default_rng([7, 1]), bank, **kw)
    b, lb = moving_digits_video(np.random.default_rng([7, 1]), bank, **kw)
    np.testing.assert_array_equal(a, b)
    assert la.equals(lb)
