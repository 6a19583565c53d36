"""The temporal prior: layers (segment, track, render), its velocity filter and dynamics, the
action prior's hints; training. (A killed prior resuming bit for bit: tests/test_reliability.py.)"""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_params_dict
from vqvideo.models import layers as Ly
from vqvideo.models.hints import apply_hints
from vqvideo.models.motion import kinematics, running_velocity, update_velocity


def blob(x: int, y: int, size: int = 48, w: int = 10, h: int = 12, level: float = 1.0) -> torch.Tensor:
    """(1, size, size) a textured bright rectangle with top-left (x, y) on black."""
    img = torch.zeros(1, size, size)
    tex = torch.linspace(0.5, 1.0, w * h).view(h, w) * level
    img[0, y : y + h, x : x + w] = tex
    return img


def two_blobs(t: int) -> torch.Tensor:
    """A clip (T, 1, 48, 48): two blobs side by side, touching at frame 0, moving apart."""
    return torch.stack([torch.maximum(blob(12 - 2 * k, 14 + k), blob(22 + 3 * k, 16 - k, w=8, level=0.9))
                        for k in range(t)])


def test_segment_splits_touching_content_by_motion_and_tracks_each_piece():
    clip = two_blobs(6)[None]  # (1, T, C, H, W)
    alone = Ly.segment(clip[:, 0], 4)
    assert int(alone.valid.sum()) == 1  # from one frame, touching content is one piece
    layers = Ly.segment(clip[:, 0], 4, clip[:, 1], radius=4)
    assert int(layers.valid.sum()) == 2 and not bool(layers.scene[0])
    disp, cost = Ly.track(clip, torch.zeros(1, dtype=torch.long), layers, radius=4)
    got = {tuple(disp[0, j, -1].tolist()) for j in range(2)}
    assert got == {(-10.0, 5.0), (15.0, -5.0)}
    # the frames are the first one with each piece moved: composited back exactly
    for k in range(6):
        torch.testing.assert_close(Ly.render(clip[:, 0], layers, disp[:, :, k]), clip[:, k])


def test_a_textured_picture_is_one_scene_layer_moved_with_mirrored_borders():
    torch.manual_seed(0)
    pic = torch.rand(1, 3, 32, 32) * 0.5 + 0.25
    layers = Ly.segment(pic, 4)
    assert bool(layers.scene[0]) and int(layers.valid.sum()) == 1
    moved = Ly.render(pic, layers, torch.tensor([[[2.0, 0.0]] + [[0.0, 0.0]] * 3]))
    torch.testing.assert_close(moved[..., 2:], pic[..., :-2])  # content 2 px right
    assert moved[..., :2].min() > 0.2  # the border is filled with the picture, not black


def test_layers_from_boxes_give_each_box_its_ink_and_hints_move_the_layer_under_them():
    frame = torch.maximum(blob(4, 4, w=8, h=8), blob(30, 30, w=8, h=8))[None]
    boxes = torch.tensor([[[2, 2, 14, 14], [28, 28, 40, 40]]], dtype=torch.float32)
    layers = Ly.layers_from_boxes(frame, boxes, 3)
    assert layers.valid.tolist() == [[True, True, False]]
    assert layers.masks[0, 0, 8, 8] == 1 and layers.masks[0, 1, 8, 8] == 0
    steps = apply_hints(torch.zeros(1, 3, 2), layers, [[(33, 33, 2.0, -1.0)]])
    assert steps[0].tolist() == [[0.0, 0.0], [2.0, -1.0], [0.0, 0.0]]
    near = apply_hints(torch.zeros(1, 3, 2), layers, [[(20, 3, 1.0, 1.0)]])  # outside: the nearest
    assert near[0, 0].tolist() == [1.0, 1.0]


def test_two_drags_on_one_piece_split_it_and_each_part_moves_its_way():
    from vqvideo.models.hints import split_by_hints

    frame = torch.maximum(blob(10, 10, w=10, h=10), blob(20, 12, w=10, h=10))[None]  # touching: one piece
    layers = Ly.segment(frame, 4)
    assert int(layers.valid.sum()) == 1
    hints = [[(14.0, 14.0, 3.0, 0.0), (25.0, 16.0, -2.0, 1.0)]]
    split = split_by_hints(layers, hints)
    assert int(split.valid.sum()) == 2
    torch.testing.assert_close(split.masks.sum(1), layers.masks.sum(1))  # every pixel kept, once
    steps = apply_hints(torch.zeros(1, 4, 2), split, hints)
    left, right = int(split.masks[0, :, 14, 12].argmax()), int(split.masks[0, :, 16, 27].argmax())
    assert left != right and steps[0, left].tolist() == [3.0, 0.0] and steps[0, right].tolist() == [-2.0, 1.0]
    # drags that agree leave the piece whole
    assert int(split_by_hints(layers, [[(14.0, 14.0, 1.0, 0.0), (25.0, 16.0, 1.0, 0.0)]]).valid.sum()) == 1


def test_the_velocity_filter_finds_sub_pixel_speed_and_mirrors_at_a_bounce():
    steps = torch.tensor([3.0, 4, 4, 3, 4, 4, 3, 4, 3, 4])  # whole-pixel steps of a 3.6 px/frame motion
    v, n = running_velocity(steps.view(1, 1, -1, 1).expand(-1, -1, -1, 2).contiguous())
    assert abs(float(v[0, 0, -1, 0]) - 3.6) < 0.01
    bounced, _ = update_velocity(v[:, :, -1], n, torch.full((1, 1, 2), -2.0))
    torch.testing.assert_close(bounced, -v[:, :, -1])
    slow, _ = update_velocity(torch.full((1, 1, 2), 0.3), n, torch.full((1, 1, 2), -0.2))
    assert float(slow[0, 0, 0]) < 0.3 and float(slow[0, 0, 0]) > 0  # a tiny step is no bounce


@pytest.fixture(scope="module")
def models(tiny_models):
    from vqvideo.models.store import load_prior, load_vqvae

    vqvae, meta = load_vqvae(tiny_models / "vqvae")
    prior, _ = load_prior(tiny_models / "prior", meta, vqvae)
    return vqvae, prior


def test_an_untrained_prior_moves_at_constant_velocity_and_keeps_a_given_action():
    from vqvideo.config import parse_params
    from vqvideo.models.prior import CodePrior
    from vqvideo.models.vqvae import VQVAE

    p = parse_params(tiny_params_dict())
    vqvae = VQVAE(p.model, channels=1).eval()
    prior = CodePrior(p.prior, vqvae, (16, 16)).eval()
    layers = Ly.segment(blob(20, 20, size=64)[None], 4)
    app = torch.zeros(1, 4, p.prior.width)
    seen = torch.tensor([0.0, 3.0, 7.0, 10.0]).view(1, 1, 4, 1).expand(1, 4, 4, 2)
    out = prior.dynamics(app, layers, seen, 3)  # on the least-squares line through the places seen
    torch.testing.assert_close(out[0, 0, 4:, 0], torch.tensor([13.5, 16.9, 20.3]), atol=0.01, rtol=0)
    given = torch.tensor([[[1.5, -0.5]] * 4])
    out = prior.dynamics(app, layers, torch.zeros(1, 4, 1, 2), 3, given)
    torch.testing.assert_close(out[0, 0, 1:], torch.tensor([[1.5, -0.5], [3.0, -1.0], [4.5, -1.5]]))


def test_rollout_keeps_the_context_and_gives_valid_codes(models, tiny_data):
    from vqvideo.data.frames import FrameData
    from vqvideo.stages.prior import encode_clips

    vqvae, prior = models
    clips = FrameData.open(tiny_data / "frames").clips("test")[:2]
    codes = encode_clips(vqvae, clips, torch.device("cpu"))  # (2, T, h, w)
    t = codes.shape[1]
    for tc in (1, 3):
        rolled = prior.rollout(codes[:, :tc], t - tc)
        assert rolled.shape == codes.shape and torch.equal(rolled[:, :tc], codes[:, :tc])
        assert int(rolled.min()) >= 0 and int(rolled.max()) < prior.num_codes
    # argmax codes are the VQ-VAE's own codes of the composited frame (or, where two codes of
    # the codebook are equally near, one as near as it)
    plan = prior.plan(codes[:, :3], 1)
    frame = Ly.render(plan["anchor"], plan["layers"], plan["disp"][:, :, 3])
    got, own = prior.rollout(codes[:, :3], 1)[:, 3], vqvae.encode_indices(frame)
    cb = vqvae.quantizer.codebook
    z = vqvae.encode(frame).permute(0, 2, 3, 1)
    torch.testing.assert_close((z - cb[got]).pow(2).sum(-1), (z - cb[own]).pow(2).sum(-1))
    assert float((got == own).float().mean()) > 0.99


def test_the_frozen_vqvae_stays_frozen_while_the_prior_trains(tiny_data):
    from vqvideo.config import parse_params
    from vqvideo.data.frames import FrameData
    from vqvideo.stages.prior import train_prior
    from vqvideo.stages.train import train

    p = parse_params(tiny_params_dict())
    data = FrameData.open(tiny_data / "frames")
    vq = train(p.model, p.train, data)
    before = {k: v.clone() for k, v in vq.model.state_dict().items()}
    result = train_prior(p.prior, vq.model, vq.fingerprint, data)
    after = result.model.vqvae.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    rows = [r for r in result.loop.history if r["split"] == "val"]
    assert {"position", "last_px", "still_last_px", "action_ce", "rollout_mse_frame"} <= rows[-1].keys()
    assert result.model.step_head[-1].weight.abs().sum() > 0  # the learned step moved off zero
    assert not any(k.startswith("vqvae.") for k in result.model.learned_state())


def test_a_scene_has_no_walls_an_object_does():
    """A camera pan's state is its motion, not where it stands against the anchor frame: read
    as walls, the anchor (the last seen frame in a rollout) taught the prior to turn pans back."""
    boxes = torch.tensor([[[0.0, 0.0, 63.0, 63.0]], [[20.0, 20.0, 40.0, 40.0]]])  # (B=2, L=1, 4)
    scene = torch.tensor([True, False])
    valid = torch.ones(2, 1, dtype=torch.bool)
    steps = torch.full((2, 1, 3, 2), 1.5)

    def state(offset: float) -> torch.Tensor:
        disp = torch.tensor([0.0, 1.5, 3.0])[None, None, :, None].expand(2, 1, 3, 2) + offset
        return kinematics(boxes, disp, steps, scene, valid, (64, 64), 8.0)

    near, far = state(0.0), state(10.0)
    torch.testing.assert_close(near[0], far[0])  # the scene: the same state wherever it stands
    assert not torch.allclose(near[1], far[1])  # the digit: 10 px closer to a wall is another state
    assert (near[0, ..., :8] == 0).all() and (near[0, ..., 8:12] != 0).any()  # its steps still count


def test_the_prior_keeps_the_weights_of_its_best_validation_rollout(tiny_data):
    import numpy as np

    from vqvideo.config import parse_params
    from vqvideo.data.frames import FrameData
    from vqvideo.stages.prior import EVAL_CLIPS, encode_clips, rollout_mse_frame, train_prior
    from vqvideo.stages.train import train

    raw = tiny_params_dict()
    raw["prior"].update({"steps": 12, "eval_every": 3, "lr": 0.3, "warmup_steps": 0})  # too fast: it gets worse
    p = parse_params(raw)
    data = FrameData.open(tiny_data / "frames")
    vq = train(p.model, p.train, data)
    result = train_prior(p.prior, vq.model, vq.fingerprint, data)
    rows = [r for r in result.loop.history if r["split"] == "val"]
    best = min(rows, key=lambda r: r["rollout_mse_frame"])
    assert best["step"] < p.prior.steps  # the last weights are not the best here
    assert result.val["step"] == best["step"]
    # the weights returned are that step's: their rollout of the validation clips scores as it did
    val = data.clips("val")
    pick = np.unique(np.linspace(0, len(val) - 1, min(EVAL_CLIPS, len(val))).round().astype(int))
    codes = encode_clips(vq.model, val[pick[:16]], torch.device("cpu"))
    ctx = min(p.prior.max_context, codes.shape[1] - 1)
    assert rollout_mse_frame(result.model, codes, ctx) == pytest.approx(best["rollout_mse_frame"], rel=1e-4)
