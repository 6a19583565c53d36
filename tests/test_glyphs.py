"""What objects look like (vqvideo.models.glyphs): a bank read from frames where the objects stand
apart, and still frames cut by it where their pieces are not one object each."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vqvideo.models import layers as Ly
from vqvideo.models.glyphs import Glyphs, collect_glyphs, split_by_glyphs, tile_shape

SIZE = 64
BOX = torch.tensor([16.0, 16.0])


def shapes() -> dict[str, np.ndarray]:
    """14x14 shapes unlike each other: a ring, a cross, and a hook drawn in two pieces (a bar
    under it that does not touch it, as a 5's bar may not)."""
    yy, xx = np.mgrid[:14, :14]
    r = np.hypot(yy - 6.5, xx - 6.5)
    ring = ((r > 4) & (r < 6.5)).astype(np.float32) * 0.9
    cross = ((abs(yy - 6.5) < 1.6) | (abs(xx - 6.5) < 1.6)).astype(np.float32) * 0.7
    hook = np.zeros((14, 14), np.float32)
    hook[0:3, 2:12], hook[0:7, 9:12] = 0.8, 0.8
    hook[12:14, 2:10] = 0.8  # the bar: 5 px below the rest
    return {"ring": ring, "cross": cross, "hook": hook}


def frame(*placed: tuple[str, int, int]) -> np.ndarray:
    """(64, 64) the named shapes at (x, y), composited by maximum as the data is."""
    out = np.zeros((SIZE, SIZE), np.float32)
    for name, x, y in placed:
        out[y : y + 14, x : x + 14] = np.maximum(out[y : y + 14, x : x + 14], shapes()[name])
    return out


def batch(*frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames))[:, None]  # (B, 1, H, W)


def own_ink(name: str, x: int, y: int) -> np.ndarray:
    return frame((name, x, y)) > Ly.INK


def far_from(ink: np.ndarray, px: int) -> np.ndarray:
    """Pixels more than `px` px (chessboard) from `ink`."""
    near = F.max_pool2d(torch.from_numpy(ink.astype(np.float32))[None, None], 2 * px + 1, 1, px)[0, 0]
    return near.numpy() == 0


def bank_of(*names: str) -> Glyphs:
    """A bank holding the named shapes (their ink box at the tile's top left), two objects a frame."""
    tile = tile_shape((SIZE, SIZE))
    bank = torch.zeros(len(names), *tile)
    for i, n in enumerate(names):
        bank[i, :14, :14] = torch.from_numpy(shapes()[n])
    return Glyphs(bank, 2, BOX)


def test_the_bank_holds_each_objects_whole_ink_from_a_frame_where_they_stood_apart():
    # ring and cross overlap in the first frames, then move apart
    clip = np.stack([frame(("ring", 20 + 3 * t, 24), ("cross", 26 - 3 * t, 25)) for t in range(6)])
    clips = torch.from_numpy(clip)[None, :, None]  # (1, T, 1, H, W)
    bank, count = collect_glyphs(clips, BOX, 4, tile_shape((SIZE, SIZE)))
    assert count == 2 and len(bank) == 2
    for name in ("ring", "cross"):
        s = shapes()[name]
        ys, xs = np.nonzero(s > Ly.INK)
        crop = s[ys.min():, xs.min():]  # the ink box at the tile's top left
        assert min(float((g[: crop.shape[0], : crop.shape[1]].numpy() - crop).__abs__().max()) for g in bank) < 1e-6
    # clips whose objects never stand apart (one piece, bigger than the box) teach nothing: no bank
    stuck = torch.from_numpy(np.stack([frame(("ring", 20 + t, 24), ("cross", 27 + t, 25)) for t in range(6)]))
    assert collect_glyphs(stuck[None, :, None], BOX, 4, tile_shape((SIZE, SIZE)))[1] == 0


def test_a_still_frame_of_two_objects_that_overlap_is_cut_into_each_ones_ink():
    glyphs = bank_of("ring", "cross", "hook")
    x = batch(frame(("ring", 20, 24), ("cross", 28, 27)))  # one piece of ink
    layers = Ly.segment(x, 4)
    assert int(layers.valid.sum()) == 1
    cut = split_by_glyphs(layers, x, glyphs)
    assert int(cut.valid.sum()) == 2
    masks = cut.masks[0, cut.valid[0]].numpy() > 0
    ring, cross = own_ink("ring", 20, 24), own_ink("cross", 28, 27)
    for mine, other in ((ring, cross), (cross, ring)):
        alone = mine & far_from(other, 2)  # its strokes away from the other's
        holder = [i for i, m in enumerate(masks) if m[mine].all()]
        assert len(holder) == 1  # one layer holds all of its ink (crossings too)
        assert not masks[1 - holder[0]][alone].any()  # and the other layer none of its own strokes


def test_an_object_drawn_in_two_pieces_moves_as_one():
    glyphs = bank_of("ring", "hook", "cross")
    x = batch(frame(("hook", 10, 10), ("ring", 36, 30)))
    layers = Ly.segment(x, 4)
    assert int(layers.valid.sum()) == 3  # the hook's bar is a piece of its own
    cut = split_by_glyphs(layers, x, glyphs)
    assert int(cut.valid.sum()) == 2
    hook = own_ink("hook", 10, 10)
    assert sum(bool((m.numpy() > 0)[hook].all()) for m in cut.masks[0]) == 1  # bar and hook in one layer


def test_frames_whose_pieces_are_one_object_each_keep_their_layers():
    glyphs = bank_of("ring", "cross")
    x = batch(frame(("ring", 6, 6), ("cross", 40, 40)), np.zeros((SIZE, SIZE), np.float32) + 0.5)  # apart; a scene
    layers = Ly.segment(x, 4)
    cut = split_by_glyphs(layers, x, glyphs)
    assert torch.equal(cut.masks, layers.masks)
    # without a bank nothing is cut
    assert split_by_glyphs(Ly.segment(x[:1] * 0 + batch(frame(("ring", 20, 24), ("cross", 28, 27))), 4), x[:1],
                           Glyphs(torch.zeros(0, 32, 32), 0, BOX)).valid.sum() == 1


def test_objects_that_overlap_in_every_frame_seen_are_cut_by_what_they_look_like():
    from vqvideo.models.objects import find_objects, redraw_error

    glyphs = bank_of("ring", "cross", "hook")
    # the cross slides over the ring by 1 px a frame: they overlap in every frame seen
    x = torch.from_numpy(np.stack([frame(("ring", 20 + t, 24), ("cross", 26 - t, 25 + t)) for t in range(6)]))
    x = x[None, :, None]
    f0, plain, d0 = find_objects(x, 4, 6)
    frame_, cut, disp = find_objects(x, 4, 6, glyphs)
    assert float(redraw_error(x, frame_, cut, disp)) < float(redraw_error(x, f0, plain, d0))
    objects = cut.valid[0]
    assert int(objects.sum()) == 2
    at = int(frame_[0])
    own = (cut.content[0, objects, 0] if cut.content is not None else x[0, at, 0] * cut.masks[0, objects]).numpy()
    for name, x0, y0 in (("ring", 20 + at, 24), ("cross", 26 - at, 25 + at)):
        mine = own_ink(name, x0, y0)
        assert max(float((o > Ly.INK)[mine].mean()) for o in own) > 0.95  # one layer holds it whole


def test_the_prior_keeps_its_bank_and_cuts_a_still_frame_by_it():
    from conftest import tiny_params_dict
    from vqvideo.config import parse_params
    from vqvideo.models.prior import CodePrior
    from vqvideo.models.vqvae import VQVAE
    from vqvideo.stages.prior import set_glyphs

    p = parse_params(tiny_params_dict())
    vqvae = VQVAE(p.model, channels=1).eval()
    prior = CodePrior(p.prior, vqvae, (SIZE // vqvae.factor, SIZE // vqvae.factor)).eval()
    x = batch(frame(("ring", 20, 24), ("cross", 28, 27)))
    codes = vqvae.encode_indices(x)[:, None]  # (1, 1, h, w)
    assert prior.glyph_bank() is None  # untrained: no bank, a piece within the box stays whole
    assert int(prior.plan(codes, 2, images=x[:, None])["layers"].valid.sum()) == 1
    bank = bank_of("ring", "cross")
    prior.box_size.copy_(BOX)
    set_glyphs(prior, bank.bank, 2)
    again = CodePrior(p.prior, vqvae, (SIZE // vqvae.factor, SIZE // vqvae.factor)).eval()
    again.load_state_dict(prior.learned_state(), strict=False)  # as a saved prior loads
    assert torch.equal(again.glyph_bank().bank, bank.bank) and again.glyph_bank().count == 2
    assert int(again.plan(codes, 2, images=x[:, None])["layers"].valid.sum()) == 2
