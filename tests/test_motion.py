"""A layer's walls: read from the turns a clip shows, and a rollout that bounces at them; layers
that move together are one object; specks are no object."""

from __future__ import annotations

import numpy as np
import torch

from conftest import tiny_params_dict
from vqvideo.data.synthetic import bounce_trajectory
from vqvideo.models import layers as Ly
from vqvideo.models.motion import observed_insets, reflect, wall_limits


def bouncing_box(seed: int, margins=(3, 0, 1, 2), steps: int = 20, anchor: int = 5):
    """Moving Digits' physics for a 28 px box whose ink box sits `margins` (left, top, right,
    bottom) inside it, drawn at rounded places: the ink box at the anchor and the displacements."""
    pos, _ = bounce_trajectory(np.random.default_rng(seed), steps, 36, 3.6)
    p = np.round(pos)
    ml, mt, mr, mb = margins
    box = torch.tensor([[[p[anchor, 0] + ml, p[anchor, 1] + mt, p[anchor, 0] + 28 - mr, p[anchor, 1] + 28 - mb]]],
                       dtype=torch.float32)
    return box, torch.tensor(p - p[anchor], dtype=torch.float32)[None, None]


def test_the_walls_a_clip_shows_are_found_within_a_pixel_and_no_others():
    margins = torch.tensor([3.0, 0.0, 1.0, 2.0])
    shown_any = 0
    for seed in range(40):
        box, disp = bouncing_box(seed)
        inset, seen = observed_insets(box, disp, torch.ones(1, 1, disp.shape[2]), (64, 64))
        if bool(seen.any()):
            assert float((inset[0, 0] - margins).abs()[seen[0, 0]].max()) < 0.7
        shown_any += int(seen.sum())
        # a side is shown only where the box came back from it
        for d in range(2):
            xs = disp[0, 0, :, d]
            came_back_low = float(xs[0] - xs.min()) > 1.8 and float(xs[-1] - xs.min()) > 1.8
            if bool(seen[0, 0, d]):
                assert came_back_low
    assert shown_any > 30  # 40 clips of 20 frames at 3.6 px/frame in a 36 px range turn often
    # a straight run shows no wall; nor does a turn at no steady speed (a tracker jumping
    # between two objects taken for one)
    straight = torch.arange(10.0).view(1, 1, 10, 1).expand(1, 1, 10, 2) * 3
    box = torch.tensor([[[10.0, 10.0, 20.0, 20.0]]])
    assert not bool(observed_insets(box, straight, torch.ones(1, 1, 10), (64, 64))[1].any())
    slip = torch.tensor([0.0, 1, 7, 8, 14, 15, 21, 20, 14, 13]).view(1, 1, 10, 1).expand(1, 1, 10, 2)
    assert not bool(observed_insets(box, slip, torch.ones(1, 1, 10), (64, 64))[1].any())


def test_a_layer_is_mirrored_back_at_its_walls_and_a_scene_has_none():
    box = torch.tensor([[[50.0, 10.0, 60.0, 20.0], [0.0, 0.0, 64.0, 64.0]]])
    inset = torch.tensor([[[0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    lo, hi = wall_limits(box, inset, torch.zeros(1, 2, 1, 2), (64, 64))
    assert hi[0, 0].tolist() == [2.0, 44.0] and lo[0, 0].tolist() == [-50.0, -10.0]
    pos, turned = reflect(torch.tensor([[[5.0, 1.0], [5.0, 1.0]]]), lo, hi, torch.tensor([[True, False]]))
    assert pos[0, 0].tolist() == [-1.0, 1.0] and turned[0, 0].tolist() == [True, False]
    assert pos[0, 1].tolist() == [5.0, 1.0]  # the scene moves on
    # walls never stand inside a place the layer was seen at
    lo, hi = wall_limits(box, inset, torch.tensor([[[[0.0, 0.0], [3.0, 0.0]]] * 2]), (64, 64))
    assert float(hi[0, 0, 0]) == 3.0


def test_an_untrained_prior_bounces_a_blob_off_the_frame_edge_at_its_speed():
    from vqvideo.config import parse_params
    from vqvideo.models.prior import CodePrior
    from vqvideo.models.vqvae import VQVAE

    p = parse_params(tiny_params_dict())
    prior = CodePrior(p.prior, VQVAE(p.model, channels=1).eval(), (16, 16)).eval()
    img = torch.zeros(1, 1, 64, 64)
    img[0, 0, 20:32, 44:54] = 1.0  # box x 42..56 with the halo: 8 px from the right edge
    layers = Ly.segment(img, 4)
    app = torch.zeros(1, 4, p.prior.width)
    with torch.no_grad():
        out = prior.dynamics(app, layers, torch.zeros(1, 4, 1, 2), 6, torch.tensor([[[3.0, 0.0]] * 4]),
                             layers.ink_boxes(img))
    xs = out[0, 0, :, 0].tolist()
    # the ink box (44..54) may reach x 64: 10 px of travel, then back at 3 px per frame
    torch.testing.assert_close(torch.tensor(xs), torch.tensor([0.0, 3.0, 6.0, 9.0, 8.0, 5.0, 2.0]))
    # ink at 44.4..54.4 would turn 9.6 px on; drawn at whole pixels it turns at 10 (and, taught
    # through the rounding, the walls still carry the position loss's gradient)
    ink = (layers.ink_boxes(img) + 0.4).requires_grad_()
    out = prior.dynamics(app, layers, torch.zeros(1, 4, 1, 2), 6, torch.tensor([[[3.0, 0.0]] * 4]), ink)
    torch.testing.assert_close(out[0, 0, :, 0].detach(), torch.tensor([0.0, 3.0, 6.0, 9.0, 8.0, 5.0, 2.0]))
    out[0, 0, -1, 0].backward()
    assert float(ink.grad[0, 0, 2]) != 0.0


def test_pieces_that_move_together_are_one_layer_and_a_speck_joins_its_object():
    frame = torch.zeros(1, 1, 48, 48)
    frame[0, 0, 10:20, 10:16] = 1.0
    frame[0, 0, 10:20, 21:27] = 1.0  # a second piece 5 px to the right: apart after the halo
    frame[0, 0, 35:45, 35:45] = 1.0
    layers = Ly.segment(frame, 4)
    assert int(layers.valid.sum()) == 3
    disp = torch.zeros(1, 4, 3, 2)
    disp[0, :, 1], disp[0, :, 2] = torch.tensor([3.0, 1.0]), torch.tensor([6.0, 2.0])
    far = int(layers.masks[0, :, 40, 40].argmax())
    disp[0, far, 1:] = -disp[0, far, 1:]  # the far block moves the other way
    merged = Ly.merge_common_motion(layers, disp)
    assert int(merged.valid.sum()) == 2
    one = int(merged.masks[0, :, 15, 12].argmax())
    assert bool(merged.masks[0, one, 15, 24] == 1) and bool(merged.masks[0, one, 40, 40] == 0)
    assert int(Ly.merge_common_motion(layers, disp[:, :, :1]).valid.sum()) == 3  # one frame: no motion
    speck = frame.clone()
    speck[0, 0, 30, 30] = 1.0  # a single pixel: no object of its own
    assert int(Ly.segment(speck, 4).valid.sum()) == 3


def _bounce(x: float, v: float, steps: int, lo: float = 0.0, hi: float = 36.0) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(x)
        x += v
        if x < lo:
            x, v = 2 * lo - x, -v
        elif x > hi:
            x, v = 2 * hi - x, -v
    return out


def test_fit_motion_recovers_sub_pixel_state_and_a_seen_wall_from_whole_pixel_places():
    from vqvideo.models.motion import fit_motion

    true = _bounce(30.3, 3.3, 10)  # turns at 36 after frame 1
    seen = torch.tensor([round(p) for p in true], dtype=torch.float32)
    disp = (seen - seen[-1]).view(1, 1, 10, 1).expand(1, 1, 10, 2)
    pos, vel, wall, turned, _ = fit_motion(disp)
    assert bool(turned[0, 0, 0])
    assert abs(float(pos[0, 0, 0]) - (true[-1] - float(seen[-1]))) < 0.3
    assert abs(float(vel[0, 0, 0]) + 3.3) < 0.1
    assert abs(float(wall[0, 0, 0]) - (36 - float(seen[-1]))) < 0.3
    straight = torch.tensor([round(2.0 + 1.7 * t) for t in range(10)], dtype=torch.float32)
    pos, vel, _, turned, _ = fit_motion((straight - straight[-1]).view(1, 1, 10, 1).expand(1, 1, 10, 2))
    assert not bool(turned.any()) and abs(float(vel[0, 0, 0]) - 1.7) < 0.05


def test_one_seen_wall_places_the_other_at_the_span_and_bounce_box_reads_it():
    from vqvideo.models.motion import bounce_box, pin_walls

    lo, hi = torch.tensor([[[-5.0, -5.0]]]), torch.tensor([[[25.0, 25.0]]])  # a 30-px span
    shown_lo, shown_hi = torch.tensor([[[-3.0, 0.0]]]), torch.tensor([[[0.0, 20.0]]])
    known_lo, known_hi = torch.tensor([[[True, False]]]), torch.tensor([[[False, True]]])
    a, b = pin_walls(lo, hi, shown_lo, shown_hi, known_lo, known_hi, torch.zeros(1, 1, 1, 2))
    torch.testing.assert_close(a, torch.tensor([[[-3.0, -10.0]]]))
    torch.testing.assert_close(b, torch.tensor([[[27.0, 20.0]]]))
    # a 10-px-wide ink box at x=20..30, whose 28-px box bounces in a 64-px frame: walls 9 px in
    xs = torch.tensor(_bounce(20.0, 3.6, 24, lo=9.0, hi=45.0)).round()
    disp = torch.stack([xs - 20, xs - 20], -1).view(1, 1, 24, 2)
    ink = torch.tensor([[[20.0, 20.0, 30.0, 30.0]]])
    size = bounce_box(ink, disp, torch.ones(1, 1, 24), torch.ones(1, 1, dtype=torch.bool), (64, 64))
    assert torch.allclose(size, torch.tensor([28.0, 28.0]), atol=1.0)  # to a pixel from one clip


def test_fit_motion_drops_a_place_the_tracker_slipped_on_and_sees_no_turn_in_it():
    from vqvideo.models.motion import fit_motion

    true = _bounce(34.3, -3.3, 10)  # a straight run; the tracker slipped 5 px at frame 0
    seen = torch.tensor([round(p) for p in true], dtype=torch.float32)
    seen[0] += 5
    disp = (seen - seen[-1]).view(1, 1, 10, 1).expand(1, 1, 10, 2)
    pos, vel, _, turned, held = fit_motion(disp)
    assert not bool(turned.any())
    assert abs(float(vel[0, 0, 0]) + 3.3) < 0.1
    assert abs(float(pos[0, 0, 0]) - (true[-1] - float(seen[-1]))) < 0.3
    assert held[0, 0].tolist() == [False] + [True] * 9
    # and with a turn in the run, the slip still leaves the turn and its wall where they are
    true = _bounce(30.3, 3.3, 10)  # turns at 36 after frame 1
    seen = torch.tensor([round(p) for p in true], dtype=torch.float32)
    seen[-4] += 5
    pos, vel, wall, turned, held = fit_motion((seen - seen[-1]).view(1, 1, 10, 1).expand(1, 1, 10, 2))
    assert bool(turned[0, 0, 0]) and abs(float(vel[0, 0, 0]) + 3.3) < 0.1
    assert abs(float(wall[0, 0, 0]) - (36 - float(seen[-1]))) < 0.3
    assert not bool(held[0, 0, -4]) and int(held.sum()) == 9


def test_a_turn_just_before_the_anchor_frame_is_seen_from_the_anchors_exact_place():
    from vqvideo.models.motion import anchored, fit_motion

    true = _bounce(27.4, -3.3, 10)  # turns at 0 between the last two frames
    assert true[-1] > true[-2] < true[-3]
    seen = torch.tensor([round(p) for p in true], dtype=torch.float32)
    disp = (seen - seen[-1]).view(1, 1, 10, 1).expand(1, 1, 10, 2)  # the anchor is the last frame
    assert anchored(disp)[0, 0].tolist() == [False] * 9 + [True]
    pos, vel, wall, turned, held = fit_motion(disp, trusted=anchored(disp))
    assert bool(turned[0, 0, 0]) and float(vel[0, 0, 0]) > 0  # moving away from the wall
    assert abs(float(pos[0, 0, 0]) - (true[-1] - float(seen[-1]))) < 0.5
    assert abs(float(wall[0, 0, 0]) - (0 - float(seen[-1]))) < 0.5
    assert bool(held[0, 0].all())
    # untrusted, the lone place after the turn reads as the tracker's slip and the layer goes on
    # through the wall: several pixels off where it stands
    pos, _, _, turned, held = fit_motion(disp)
    assert not bool(turned[0, 0, 0]) and not bool(held[0, 0, -1])
    assert abs(float(pos[0, 0, 0])) > 3


def test_the_one_speed_of_the_data_is_read_from_tracks_and_sets_a_velocitys_length():
    from vqvideo.models.motion import at_speed, common_speed

    rng = np.random.default_rng(0)
    tracks = []
    for _ in range(12):  # objects at 3.6 px a frame in any direction, drawn at whole pixels
        pos, _ = bounce_trajectory(rng, 12, 36.0, 3.6)
        tracks.append(torch.from_numpy(np.round(pos) - np.round(pos[0])).float())
    disp = torch.stack(tracks)[:, None]  # (12, 1, 12, 2)
    held = torch.ones(12, 1, 12)
    objects = torch.ones(12, 1, dtype=torch.bool)
    speed = common_speed(disp, held, objects)
    assert abs(float(speed) - 3.6) < 0.1
    # objects at several speeds have none in common
    mixed = disp * torch.linspace(0.5, 1.5, 12).view(12, 1, 1, 1)
    assert float(common_speed(mixed.round(), held, objects)) == 0.0
    vel = torch.tensor([[[3.0, 2.2], [0.3, 0.1], [3.0, 2.2]]])
    out = at_speed(vel, speed, torch.tensor([[True, True, False]]))
    assert abs(float(out[0, 0].norm()) - float(speed)) < 1e-5  # its direction kept, its length the data's
    assert torch.allclose(out[0, 0] / out[0, 0].norm(), vel[0, 0] / vel[0, 0].norm())
    assert torch.equal(out[0, 1:], vel[0, 1:])  # a slow layer, and a scene, keep their own
    assert torch.equal(at_speed(vel, torch.tensor(0.0), torch.ones(1, 3, dtype=torch.bool)), vel)


def test_at_the_datas_speed_each_line_is_refitted_and_the_walls_it_shows_round_to_the_true_ones():
    from vqvideo.models.motion import fit_motion

    rng = np.random.default_rng(0)
    places, last, frac = [], [], []
    for _ in range(300):  # 10 frames at 3.6 px a frame in a 36 px range, drawn at whole pixels
        pos, _ = bounce_trajectory(rng, 10, 36.0, 3.6)
        p = np.round(pos)
        places.append(p - p[-1]), last.append(p[-1]), frac.append(pos[-1] - p[-1])
    disp = torch.tensor(np.array(places), dtype=torch.float32)[:, None]
    last = torch.tensor(np.array(last), dtype=torch.float32)[:, None]
    true = torch.tensor(np.array(frac), dtype=torch.float32)[:, None]
    errors = []
    for speed in (None, torch.tensor(3.6)):
        pos, vel, wall, turned, _ = fit_motion(disp, speed=speed, active=torch.ones(300, 1, dtype=torch.bool))
        true_wall = torch.where(vel > 0, 0.0, 36.0) - last  # the wall it came back from
        errors.append(((wall - true_wall).abs()[turned], (pos - true).abs().mean()))
    (free, free_pos), (fixed, fixed_pos) = errors
    assert len(fixed) > 200  # most clips turn
    assert float(fixed.mean()) < 0.8 * float(free.mean())
    assert float((fixed > 0.5).float().mean()) < 0.01  # rounded, nearly every wall is the true one
    assert float(fixed_pos) <= float(free_pos)


def test_at_the_datas_speed_the_motion_is_the_one_every_whole_pixel_place_allows():
    from vqvideo.models.motion import consistent_motion

    rng = np.random.default_rng(0)
    n, w = 1000, 10
    theta = rng.uniform(0, 2 * np.pi, n)
    vel = 3.6 * np.stack([np.cos(theta), np.sin(theta)], 1)
    true = rng.uniform(0, 1, (n, 1, 2)) + vel[:, None] * np.arange(2 * w)[None, :, None]  # (n, 2w, 2)
    drawn = np.round(true)  # each frame drawn at whole pixels
    x = torch.tensor((drawn[:, :w] - drawn[:, w - 1 : w]).transpose(0, 2, 1), dtype=torch.float32)[:, None]
    tt = torch.arange(w, dtype=torch.float32) - (w - 1)
    # least squares through the places, at the speed: the estimate to improve on
    slope = ((x - x.mean(-1, keepdim=True)) * (tt - tt.mean())).sum(-1) / (tt - tt.mean()).pow(2).sum()
    ls_vel = slope * 3.6 / slope.norm(dim=-1, keepdim=True)
    ls_pos = (x - ls_vel[..., None] * tt).mean(-1)
    on = torch.ones_like(x)
    found, pos, v, _ = consistent_motion(x, tt, on, torch.zeros_like(x), ls_vel, torch.tensor(3.6),
                                         torch.ones(n, 1, dtype=torch.bool))
    assert bool(found.all())  # the true motion allows every place, so some direction does
    truth = torch.tensor(vel, dtype=torch.float32)[:, None]
    assert float((v - truth).abs().mean()) < 0.9 * float((ls_vel - truth).abs().mean())
    # its place now, and the whole pixel it is drawn at 1 to w frames on, are the true ones more often
    now = torch.tensor(true[:, w - 1] - drawn[:, w - 1], dtype=torch.float32)[:, None]
    assert float((pos - now).abs().mean()) < 0.95 * float((ls_pos - now).abs().mean())
    ahead = torch.tensor(drawn[:, w:] - drawn[:, w - 1 : w], dtype=torch.float32).permute(0, 2, 1)[:, None]
    k = torch.arange(1, w + 1, dtype=torch.float32)
    exact = lambda p, u: float(((p[..., None] + u[..., None] * k).round() == ahead).float().mean())  # noqa: E731
    assert exact(pos, v) > exact(ls_pos, ls_vel) + 0.015
    # a layer that moves at another speed fits no direction at 3.6, and comes back as it was
    slow = consistent_motion(x * 0.5, tt, on, torch.zeros_like(x), ls_vel, torch.tensor(3.6),
                             torch.ones(n, 1, dtype=torch.bool))[0]
    assert not bool(slow.any())


def test_fitted_places_put_a_slipped_place_back_on_the_layers_motion_through_a_turn():
    from vqvideo.models.motion import fitted_places

    true = _bounce(30.3, 3.3, 10)  # turns at 36 after frame 1
    seen = torch.tensor([round(p) for p in true], dtype=torch.float32)
    seen[-4] += 5  # the tracker slipped onto another digit
    anchor = 9
    disp = (seen - seen[anchor]).view(1, 1, 10, 1).expand(1, 1, 10, 2)
    got = fitted_places(disp, torch.tensor([anchor]))[0, 0, :, 0]
    want = torch.tensor(true) - true[anchor]
    assert float(got[anchor]) == 0.0  # from the anchor's place, as the displacements are
    assert float((got - want).abs().max()) < 0.6  # the slip included: on the motion, within rounding
    assert abs(float(got[-4] - disp[0, 0, -4, 0])) > 4
    # from an anchor inside the clip too, and tracked places before the window are kept
    mid = fitted_places(disp - disp[:, :, 5:6], torch.tensor([5]), window=8)[0, 0, :, 0]
    assert float(mid[5]) == 0.0 and float((mid[2:] - (want[2:] - want[5])).abs().max()) < 0.6
    torch.testing.assert_close(mid[:2], (disp - disp[:, :, 5:6])[0, 0, :2, 0])
