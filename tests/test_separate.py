"""Object permanence: two objects that overlap in the anchor frame get their own pixels back
from the frames that show them apart (vqvideo.models.separate)."""

from __future__ import annotations

import numpy as np
import torch

from vqvideo.models import layers as Ly
from vqvideo.models.separate import moved_back, separate

SIZE, T = 64, 6


def glyphs() -> tuple[np.ndarray, np.ndarray]:
    """Two 14x14 glyphs unlike each other: a ring and a cross, ink 0.9 / 0.7."""
    yy, xx = np.mgrid[:14, :14]
    ring = ((np.hypot(yy - 6.5, xx - 6.5) > 4) & (np.hypot(yy - 6.5, xx - 6.5) < 6.5)).astype(np.float32) * 0.9
    cross = ((abs(yy - 6.5) < 1.6) | (abs(xx - 6.5) < 1.6)).astype(np.float32) * 0.7
    return ring, cross


def clip(starts: list[tuple[int, int]], steps: list[tuple[int, int]]) -> torch.Tensor:
    """(1, T, 1, 64, 64): each glyph at start + t * step, composited by maximum as the data is."""
    frames = np.zeros((T, SIZE, SIZE), np.float32)
    for g, (x0, y0), (dx, dy) in zip(glyphs(), starts, steps):
        for t in range(T):
            x, y = x0 + t * dx, y0 + t * dy
            frames[t, y : y + 14, x : x + 14] = np.maximum(frames[t, y : y + 14, x : x + 14], g)
    return torch.from_numpy(frames)[None, :, None]


def own_layers(x: torch.Tensor):
    """Segment frame 0 alone (the glyphs touch there: one piece), track it, then separate."""
    anchor = torch.zeros(1, dtype=torch.long)
    layers = Ly.segment(x[:, 0], 4)
    disp, cost = Ly.track(x, anchor, layers, 6)
    return layers, separate(x, anchor, layers, disp, cost, 6)[0], anchor


def test_two_objects_that_share_a_layer_come_apart_with_their_own_pixels():
    x = clip([(20, 24), (26, 24)], [(3, 0), (-3, 1)])  # overlapping in frame 0, apart by frame 3
    before, after, _ = own_layers(x)
    assert int(before.valid.sum()) == 1  # one piece of ink in the frame the layers come from
    assert int(after.valid.sum()) == 2
    ring, cross = glyphs()
    truth = [np.zeros((SIZE, SIZE), np.float32) for _ in range(2)]
    truth[0][24:38, 20:34], truth[1][24:38, 26:40] = ring, cross
    got = after.content[0, after.valid[0], 0].numpy()
    # each layer holds one glyph's own ink, in its place, and none of the other's
    for g in truth:
        err = [np.abs(c - g).max() for c in got]
        assert min(err) < 1e-6
    # where the two cross, a pixel is both glyphs' and both layers keep it
    both = (truth[0] > 0) & (truth[1] > 0)
    assert both.any() and all((c[both] > 0).all() for c in got)


def test_separated_layers_render_the_frames_they_move_into():
    x = clip([(20, 24), (26, 24)], [(3, 0), (-3, 1)])
    before, after, anchor = own_layers(x)
    for layers in (before, after):
        disp, _ = Ly.track(x, anchor, layers, 6)
        err = float((Ly.render(x[:, 0], layers, disp[:, :, -1]) - x[:, -1]).abs().max())
        if layers is before:
            assert err > 0.5  # one layer cannot move two glyphs apart
        else:
            assert err < 1e-6  # each glyph where it is in the last frame, exactly


def test_an_object_alone_keeps_all_its_ink():
    x = clip([(10, 10), (40, 40)], [(2, 1), (-1, -2)])  # apart all the time
    before, after, _ = own_layers(x)
    assert int(before.valid.sum()) == int(after.valid.sum()) == 2
    anchor_ink = x[0, 0, 0] > Ly.INK
    kept = (after.content[0, :, 0] > Ly.INK).any(0)
    assert torch.equal(kept & anchor_ink, anchor_ink)


def test_a_frame_seen_alone_or_a_scene_is_left_as_segmented():
    x = clip([(20, 24), (26, 24)], [(3, 0), (-3, 1)])[:, :2]  # too few frames to tell
    before, after, _ = own_layers(x)
    assert torch.equal(before.masks, after.masks)
    scene = torch.rand(1, 4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.3
    layers = Ly.segment(scene[:, 0], 4)
    assert bool(layers.scene[0])
    disp, cost = Ly.track(scene, torch.zeros(1, dtype=torch.long), layers, 6)
    out, out_disp = separate(scene, torch.zeros(1, dtype=torch.long), layers, disp, cost, 6)
    assert torch.equal(out.masks, layers.masks) and torch.equal(out_disp, disp)
    assert out.content is None  # a scene is drawn from the frame itself, as before
    # a scene beside an ink frame in one batch keeps the frame as its pixels too
    ink = clip([(20, 24), (26, 24)], [(3, 0), (-3, 1)])[:, :4]
    both = torch.cat([scene, ink])
    mixed = Ly.segment(both[:, 0], 4)
    anchor = torch.zeros(2, dtype=torch.long)
    d, c = Ly.track(both, anchor, mixed, 6)
    out, _ = separate(both, anchor, mixed, d, c, 6)
    assert torch.equal(out.content[0], scene[0, 0][None] * mixed.masks[0][:, None])


def test_moved_back_reads_each_frame_where_the_layer_is():
    frames = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    disp = torch.tensor([[[0, 0], [1, 0], [0, 2]]], dtype=torch.float32).expand(2, 1, 3, 2)
    got, inside = moved_back(frames, disp)
    assert torch.equal(got[:, 0, 0], frames[:, 0])
    assert torch.equal(got[:, 0, 1, :, :4], frames[:, 1, :, 1:])  # out(p) = frame(p + (1, 0))
    assert not bool(inside[:, 0, 1, :, 4].any()) and bool(inside[:, 0, 1, :, :4].all())
    assert torch.equal(got[:, 0, 2, :3], frames[:, 2, 2:])


def test_colour_ink_keeps_each_objects_own_share_where_they_cross():
    x = clip([(20, 24), (26, 24)], [(3, 0), (-3, 1)]) * torch.tensor([1.0, 0.5, 0.2]).view(1, 1, 3, 1, 1)
    _, after, anchor = own_layers(x)
    assert int(after.valid.sum()) == 2
    disp, _ = Ly.track(x, anchor, after, 6)
    assert float((Ly.render(x[:, 0], after, disp[:, :, -1]) - x[:, -1]).abs().max()) < 1e-6


def test_ink_far_away_that_moves_alike_stays_another_object():
    x = clip([(20, 24), (26, 24)], [(3, 0), (-3, 1)])
    for t in range(T):  # a block that moves exactly as the ring does, far from it
        x[0, t, 0, 4:10, 4 + 3 * t : 10 + 3 * t] = 0.8
    before, after, _ = own_layers(x)
    assert int(before.valid.sum()) == 2 and int(after.valid.sum()) == 3
    block = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    block[4:10, 4:10] = True
    holders = [(after.content[0, j, 0][block] > 0).any().item() for j in range(4)]
    assert sum(holders) == 1  # the block is in one layer only
    j = holders.index(True)
    assert float(after.content[0, j, 0][~block].abs().max()) == 0.0  # and that layer is the block alone


def test_a_layer_whose_mask_holds_another_glyph_where_they_touch_gets_its_own_ink_box():
    from vqvideo.models.separate import HELD, own_ink_boxes

    # the ring at rest and the cross moving away: in frame 0 they touch and the motion split
    # (frame 0 against frame 1) gives the ring's layer some of the cross's strokes
    x = clip([(20, 24), (30, 24)], [(0, 0), (3, 3)])
    anchor = torch.zeros(1, dtype=torch.long)
    layers = Ly.segment(x[:, 0], 4)  # one piece: both glyphs in one layer, as one box
    disp, cost = Ly.track(x, anchor, layers, 6)
    plain = layers.ink_boxes(x[:, 0])[0, 0]
    own = own_ink_boxes(x, anchor, layers, disp, cost < HELD)[0, 0]
    assert float(plain[2] - plain[0]) > 14  # the anchor's ink box spans both glyphs
    # the box of the ink that follows the layer's track: the ring's own
    ring = torch.zeros(1, 1, SIZE, SIZE)
    ring[0, 0, 24:38, 20:34] = torch.from_numpy(glyphs()[0])
    torch.testing.assert_close(own, Ly.mask_boxes((ring > Ly.INK).float())[0, 0])
    # fewer than MIN_FRAMES frames: the anchor's box as it is
    torch.testing.assert_close(own_ink_boxes(x[:, :2], anchor, layers, disp[:, :, :2], cost[:, :, :2] < HELD)[0, 0], plain)


def test_a_still_frame_piece_bigger_than_an_objects_box_is_cut_into_the_objects_that_touch():
    from vqvideo.models.separate import split_oversized

    frame = clip([(20, 24), (33, 24)], [(0, 0), (0, 0)])[:, 0]  # the ring and the cross touch side by side
    layers = Ly.segment(frame, 4)
    assert int(layers.valid.sum()) == 1  # one piece of ink, 26 px wide
    box = torch.tensor([14.0, 14.0])  # the size objects bounce in (the glyphs')
    out = split_oversized(layers, frame, box)
    assert int(out.valid.sum()) == 2
    truth = []
    for g, x0 in zip(glyphs(), (20, 33)):
        one = torch.zeros(1, 1, SIZE, SIZE)
        one[0, 0, 24:38, x0 : x0 + 14] = torch.from_numpy(g)
        truth.append(Ly.mask_boxes((one > Ly.INK).float())[0, 0])
    got = out.ink_boxes(frame)[0, out.valid[0]]
    # cut where the two meet: each part is one glyph's ink, in its own box
    torch.testing.assert_close(got[:, [0, 2]], torch.stack(truth)[:, [0, 2]])
    # the box unknown, or a piece within it: as it was
    assert split_oversized(layers, frame, torch.zeros(2)) is layers
    assert int(split_oversized(layers, frame, torch.tensor([30.0, 30.0])).valid.sum()) == 1
    # two that overlap nearly whole: no cut leaves both parts an object's share of the ink
    over = clip([(20, 24), (24, 24)], [(0, 0), (0, 0)])[:, 0]  # 18 px wide: oversized
    assert int(split_oversized(Ly.segment(over, 4), over, box).valid.sum()) == 1


def test_the_objects_are_cut_again_from_an_earlier_frame_where_that_redraws_the_frames_seen_better():
    from vqvideo.models.objects import choose_anchor, find_objects, objects_at, redraw_error

    # apart in the first frame, crossing in the last ones: the last frame, with as many pieces
    # as any, cuts them into fragments that mix the two glyphs
    x = clip([(18, 37), (12, 20)], [(-3, -1), (-1, 5)])
    first = choose_anchor(x, 4)
    assert int(first[0]) == T - 1
    frag, frag_disp = objects_at(x, first, 4, 6)
    assert int(frag.valid.sum()) > 2
    frame, layers, disp = find_objects(x, 4, 6)
    assert int(frame[0]) == 0 and int(layers.valid.sum()) == 2
    assert float(redraw_error(x, frame, layers, disp)) < float(redraw_error(x, first, frag, frag_disp))
    own = layers.content if layers.content is not None else x[:, 0:1] * layers.masks[:, :, None]
    got = own[0, layers.valid[0], 0].numpy()
    ring, cross = glyphs()
    for g, (x0, y0) in zip((ring, cross), ((18, 37), (12, 20))):
        truth = np.zeros((SIZE, SIZE), np.float32)
        truth[y0 : y0 + 14, x0 : x0 + 14] = g
        assert min(np.abs(c - truth).max() for c in got) < 1e-6  # each layer one glyph, whole


def test_digits_that_overlap_in_the_frames_last_seen_are_cut_from_one_where_they_stood_apart():
    from vqvideo.models.objects import choose_anchor, find_objects, objects_at, redraw_error

    # the cross runs into the ring and lies on it in the last frames: cut there, the two pieces
    # mix their strokes (and a cut's own pieces never overlap in its own frame, so no overlap
    # measured from them tells); cut from the first frame, the two redraw every frame exactly
    x = clip([(34, 14), (17, 10)], [(0, 2), (3, 3)])
    first = choose_anchor(x, 4)
    assert int(first[0]) == T - 1
    last, last_disp = objects_at(x, first, 4, 6)
    assert float(redraw_error(x, first, last, last_disp)) > 100
    frame, layers, disp = find_objects(x, 4, 6)
    assert int(frame[0]) == 0 and int(layers.valid.sum()) == 2
    assert float(redraw_error(x, frame, layers, disp)) < 1e-6
    torch.testing.assert_close(disp[0, layers.valid[0]][:, -1], torch.tensor([[0.0, 10.0], [15.0, 15.0]]))


def test_a_cut_from_another_frame_is_kept_only_where_it_redraws_the_frames_better():
    from vqvideo.models.objects import choose_anchor, find_objects, objects_at, redraw_error

    # the last frame's cut is exact here, though the glyphs overlap in it more than in others
    x = clip([(18, 24), (32, 26)], [(2, 0), (-2, 0)])
    first = choose_anchor(x, 4)
    layers0, disp0 = objects_at(x, first, 4, 6)
    frame, layers, disp = find_objects(x, 4, 6)
    assert torch.equal(frame, first) and torch.equal(layers.masks, layers0.masks)
    assert float(redraw_error(x, frame, layers, disp)) == float(redraw_error(x, first, layers0, disp0))


def test_objects_re_read_along_their_motion_drop_a_copy_and_anothers_strokes():
    from vqvideo.models.objects import along_motion, redraw_error

    # apart at the anchor (frame 0); the ring's layer holds the cross's strokes too (a cut from
    # frames where they overlapped), its track slipped at frame 3, and a third layer copies the
    # cross along a wrong track: the frames seen are redrawn badly
    steps = [(-3, -1), (-1, 5)]
    x = clip([(18, 37), (12, 16)], steps)
    anchor = torch.zeros(1, dtype=torch.long)
    true = Ly.segment(x[:, 0], 4)
    assert int(true.valid.sum()) == 2
    front = x[:, 0].float()
    ring = int((true.masks[0, :2] * front[0, 0]).sum((1, 2)).argmax())  # the ring has more ink
    cross = 1 - ring
    t = torch.arange(T, dtype=torch.float32)[:, None]
    disp = torch.zeros(1, 4, T, 2)
    disp[0, ring], disp[0, cross] = t * torch.tensor(steps[0]), t * torch.tensor(steps[1])
    disp[0, ring, 3] += torch.tensor([5.0, 0.0])  # a slip
    disp[0, 2] = t * torch.tensor([2.0, 0.0])  # the copy's wrong track
    masks = true.masks.clone()
    masks[0, ring] = ((true.masks[0, 0] + true.masks[0, 1]) > 0).float()  # both glyphs' ink
    masks[0, 2] = true.masks[0, cross]
    bad = Ly.Layers(masks, true.scene, front[:, None] * masks[:, :, None])
    error = redraw_error(x, anchor, bad, disp)
    layers, out_disp = along_motion(x, anchor, bad, disp, error)
    assert int(layers.valid.sum()) == 2
    assert float(redraw_error(x, anchor, layers, disp)) < float(error) / 3
    got = layers.content[0, layers.valid[0], 0].numpy()
    for g, (x0, y0) in zip(glyphs(), ((18, 37), (12, 16))):
        truth = np.zeros((SIZE, SIZE), np.float32)
        truth[y0 : y0 + 14, x0 : x0 + 14] = g
        assert min(np.abs(c - truth).max() for c in got) < 1e-6  # each layer one glyph, whole
    assert out_disp is disp  # the tracks stay: the dynamics fit them robustly
    # not where it does not explain the frames seen better: the layers as they were
    same, _ = along_motion(x, anchor, bad, disp, torch.zeros(1))
    assert torch.equal(same.masks, bad.masks)
