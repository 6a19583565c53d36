"""The quantizer: its pure math, its invariants, parity with vector-quantize-pytorch, and one
codebook across ranks under torch.distributed (2 real gloo processes)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vqvideo.models.quantizer import (
    VectorQuantizer,
    code_counts,
    d2_sample,
    ema_inplace,
    kmeans,
    laplace_smoothing,
    lloyd,
    nearest_code,
    perplexity,
    sample_rows,
    squared_distances,
    straight_through,
)

# ---------------------------------------------------------------- pure functions


def test_squared_distances_match_cdist():
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(200, 16, generator=g), torch.randn(37, 16, generator=g)
    torch.testing.assert_close(squared_distances(x, c), torch.cdist(x, c) ** 2, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [64, 512])  # 512: rows go through in several cache-sized blocks
def test_nearest_code_is_the_cdist_argmin(k):
    g = torch.Generator().manual_seed(1)
    x, c = torch.randn(2500, 8, generator=g) * 3 + 1, torch.randn(k, 8, generator=g)
    assert torch.equal(nearest_code(x, c), torch.cdist(x.double(), c.double()).argmin(1))


def test_straight_through_forwards_q_and_passes_the_gradient_unchanged():
    z = torch.randn(4, 3, requires_grad=True)
    q = torch.randn(4, 3, requires_grad=True)
    out = straight_through(z, q)
    torch.testing.assert_close(out, q)
    upstream = torch.randn(4, 3)
    out.backward(upstream)
    assert torch.equal(z.grad, upstream)
    assert q.grad is None or torch.count_nonzero(q.grad) == 0


def test_perplexity_of_uniform_and_one_hot_usage():
    assert perplexity(torch.full((16,), 5.0)).item() == pytest.approx(16)
    assert perplexity(torch.tensor([0.0, 9.0, 0.0, 0.0])).item() == pytest.approx(1)
    assert perplexity(torch.tensor([1.0, 1.0, 0.0, 0.0])).item() == pytest.approx(2)


def test_code_counts():
    assert code_counts(torch.tensor([[0, 2], [2, 2]]), 4).tolist() == [1, 0, 3, 0]


def test_laplace_smoothing_keeps_the_sum_and_makes_every_count_positive():
    counts = torch.tensor([0.0, 3.0, 0.0, 7.0])
    smoothed = laplace_smoothing(counts, 1e-2)
    assert smoothed.sum().item() == pytest.approx(10.0)
    assert (smoothed > 0).all()
    assert smoothed[3] < 7.0 and smoothed[0] > 0


def test_ema_inplace():
    moving, new = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0])
    ema_inplace(moving, new, 0.9)
    torch.testing.assert_close(moving, torch.tensor([1.2, 1.8]))


def test_sample_rows_distinct_unless_too_few():
    g = torch.Generator().manual_seed(0)
    assert len(set(sample_rows(100, 50, g).tolist())) == 50
    few = sample_rows(3, 10, g)
    assert len(few) == 10 and set(few.tolist()) <= {0, 1, 2}


def test_kmeans_finds_separable_blobs():
    g = torch.Generator().manual_seed(0)
    true = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    x = (true[:, None] + 0.3 * torch.randn(4, 200, 2, generator=g)).reshape(-1, 2)  # (800, 2)
    centres, counts = kmeans(x, 4, iters=10, generator=g)
    # every true centre has a found centre next to it, and the 4 clusters hold 200 points each
    assert torch.cdist(true, centres).min(1).values.max() < 0.2
    assert sorted(counts.tolist()) == [200.0] * 4


def test_d2_sample_follows_the_weights_and_skips_zero_weights():
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([0.0, 1.0, 0.0, 3.0, 0.0])
    picks = [tuple(sorted(d2_sample(w, 2, g).tolist())) for _ in range(20)]
    assert set(picks) == {(1, 3)}  # only the two rows with weight, each once
    assert d2_sample(w, 5, g).numel() == 2  # never more rows than have weight
    heavy = sum(int(d2_sample(w, 1, g)) == 3 for _ in range(400))
    assert 240 < heavy < 360  # about 3/4 of single draws


def test_kmeans_on_mostly_identical_vectors_leaves_no_duplicate_codes():
    """Mostly-blank frames give mostly identical encoder outputs: uniform seeds would be mostly
    copies of one vector, and a duplicate code never wins an argmin. D^2 re-seeding fixes that."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.zeros(900, 4), torch.randn(100, 4, generator=g) * 3])  # (1000, 4)
    centres, counts = kmeans(x, 32, iters=10, generator=g)
    assert (counts > 0).all()
    assert len({tuple(c.tolist()) for c in centres}) == 32


def test_lloyd_keeps_empty_clusters_in_place():
    x = torch.tensor([[0.0], [0.1], [5.0]])
    centres, counts = lloyd(x, torch.tensor([[0.0], [5.0], [100.0]]), iters=3)
    assert centres[2].item() == 100.0 and counts.tolist() == [2.0, 1.0, 0.0]


# ---------------------------------------------------------------- the module


def make(ema=True, **kw) -> VectorQuantizer:
    kw = {"beta": 0.25, "kmeans_init": False, "restart_threshold": 0.0, **kw}
    torch.manual_seed(0)
    return VectorQuantizer(32, 8, ema=ema, **kw)


@pytest.mark.parametrize("ema", [True, False])
def test_eval_quantize_equals_lookup_of_indices(ema):
    vq = make(ema).eval()
    z = torch.randn(2, 8, 5, 3)
    out = vq(z)
    assert out.indices.shape == (2, 5, 3) and out.quantized.shape == z.shape
    assert torch.equal(out.quantized, vq.lookup(out.indices))
    assert torch.equal(out.indices, vq.encode_indices(z))
    # each position got its nearest code
    flat = z.permute(0, 2, 3, 1).reshape(-1, 8)
    assert torch.equal(out.indices.reshape(-1), torch.cdist(flat, vq.codebook.detach()).argmin(1))


@pytest.mark.parametrize("ema", [True, False])
def test_gradient_reaches_the_encoder_through_the_straight_through_estimator(ema):
    vq = make(ema, beta=0.0).train()
    z = torch.randn(2, 8, 4, 4, requires_grad=True)
    out = vq(z)
    upstream = torch.randn_like(z)
    (out.quantized * upstream).sum().backward()
    assert torch.equal(z.grad, upstream)  # identity: what the decoder wants, the encoder gets


def test_commitment_gradient_pulls_the_encoder_to_its_code():
    vq = make(True).train()
    z = torch.randn(2, 8, 4, 4, requires_grad=True)
    out = vq(z)
    out.loss.backward()
    # d/dz beta * mean((z - sg[q])^2); out.quantized holds q (the codes before this step's update)
    expected = 0.25 * 2 * (z.detach() - out.quantized.detach()) / z.numel()
    torch.testing.assert_close(z.grad, expected)


def test_plain_vq_trains_the_codebook_by_the_codebook_loss():
    vq = make(False).train()
    assert [n for n, _ in vq.named_parameters()] == ["codebook"]
    z = torch.randn(4, 8, 4, 4) + 2.0
    opt = torch.optim.SGD(vq.parameters(), lr=0.5)
    losses = []
    for _ in range(20):
        out = vq(z)
        # the decoder path gives the codebook no gradient (straight-through), only eq. 3 does
        (out.quantized.sum() * 0 + out.loss).backward()
        used = out.counts > 0
        assert (vq.codebook.grad[~used] == 0).all() and (vq.codebook.grad[used] != 0).any()
        opt.step()
        opt.zero_grad()
        losses.append(float(F.mse_loss(vq.lookup(out.indices).detach(), z)))
    assert losses[-1] < 0.5 * losses[0]


def test_ema_codebook_is_a_buffer_outside_the_optimiser_and_follows_appendix_a1():
    vq = make(True, decay=0.9).train()
    assert list(vq.parameters()) == []
    assert {"codebook", "ema_sum", "ema_count", "initialised"} <= set(vq.state_dict())
    before_sum, before_count = vq.ema_sum.clone(), vq.ema_count.clone()
    z = torch.randn(2, 8, 4, 4)
    out = vq(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 8)
    onehot = F.one_hot(out.indices.reshape(-1), 32).float()  # (N, K)
    count = 0.9 * before_count + 0.1 * onehot.sum(0)
    total = 0.9 * before_sum + 0.1 * onehot.t() @ flat
    n = (count + 1e-5) / (count.sum() + 32 * 1e-5) * count.sum()
    torch.testing.assert_close(vq.ema_count, count)
    torch.testing.assert_close(vq.codebook, total / n[:, None])
    # and the returned statistics describe the batch
    assert out.counts.sum() == 32 and out.active_fraction == (onehot.sum(0) > 0).float().mean()


def test_kmeans_init_replaces_the_codebook_once_from_the_first_batch():
    vq = make(False, kmeans_init=True, kmeans_iters=5).train()
    vq.seed(3)
    z = torch.randn(4, 8, 4, 4)
    vq(z)
    g = torch.Generator().manual_seed(3)
    centres, counts = kmeans(z.permute(0, 2, 3, 1).reshape(-1, 8), 32, 5, g)
    torch.testing.assert_close(vq.codebook.detach(), centres)
    assert bool(vq.initialised)
    vq(z + 100)  # a second batch does not re-initialise
    torch.testing.assert_close(vq.codebook.detach(), centres)


def test_dead_code_restart_revives_codes():
    """A codebook far from the data: one code wins everything; restarts re-seed the others."""

    def active_after(restart_threshold: float) -> float:
        torch.manual_seed(0)
        vq = VectorQuantizer(32, 8, ema=True, kmeans_init=False, restart_threshold=restart_threshold)
        vq.codebook.add_(50.0)
        vq.codebook[0] = 0.0
        vq.ema_sum.copy_(vq.codebook)
        vq.train()
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            vq(torch.randn(8, 8, 4, 4, generator=g))
        vq.eval()
        return float(vq(torch.randn(64, 8, 4, 4, generator=g)).active_fraction)

    assert active_after(0.0) == pytest.approx(1 / 32)  # plain VQ: 31 of 32 codes stay dead
    assert active_after(1.0) > 0.9


def test_restart_reseeds_from_this_batch_and_reports_it():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4, ema=True, kmeans_init=False, restart_threshold=1.0).train()
    vq.codebook.add_(50.0)
    vq.codebook[0] = 0.0
    vq.ema_sum.copy_(vq.codebook)
    z = torch.randn(2, 4, 4, 4)
    out = vq(z)
    assert int(out.restarted) == 15
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    fresh = vq.codebook[1:]
    assert (fresh[:, None] == flat[None]).all(-1).any(1).all()  # each is one of the batch's vectors
    assert len({tuple(r.tolist()) for r in fresh}) == 15  # drawn without repeats


def test_autocast_does_not_change_the_codes():
    vq = make(True).eval()
    z = torch.randn(2, 8, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z)
    assert out.quantized.dtype == torch.float32
    assert torch.equal(out.indices, vq(z).indices)


def test_state_dict_round_trip():
    vq = VectorQuantizer(16, 4, kmeans_init=True).train()
    vq(torch.randn(2, 4, 4, 4))
    other = VectorQuantizer(16, 4, kmeans_init=True)
    other.load_state_dict(vq.state_dict())
    assert bool(other.initialised) and torch.equal(other.codebook, vq.codebook)


# ---------------------------------------------------------------- parity with a trusted peer


def test_parity_with_vector_quantize_pytorch():
    """Same codebook and inputs -> same indices, quantized vectors, commitment loss, EMA step and
    input gradient as lucidrains' VectorQuantize configured as the plain EMA VQ-VAE."""
    vqp = pytest.importorskip("vector_quantize_pytorch")
    k, d, beta = 64, 16, 0.25
    torch.manual_seed(0)
    ours = VectorQuantizer(k, d, beta, ema=True, decay=0.9, kmeans_init=False, restart_threshold=0)
    theirs = vqp.VectorQuantize(
        dim=d, codebook_size=k, decay=0.9, commitment_weight=beta,
        accept_image_fmap=True,  # (B, D, H, W) in and out, like ours
        kmeans_init=False, threshold_ema_dead_code=0,  # no init or restarts: the same start
        rotation_trick=False,  # the plain straight-through estimator of the paper
    )
    codebook = torch.randn(k, d)
    ours.codebook.copy_(codebook)
    ours.ema_sum.copy_(codebook)
    theirs._codebook.embed.copy_(codebook[None])  # (heads=1, K, D)
    theirs._codebook.embed_avg.copy_(codebook[None])  # cluster_size starts at ones, as ours
    ours.train()
    theirs.train()

    z = torch.randn(4, d, 6, 6)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    out = ours(z1)
    q2, idx2, loss2 = theirs(z2)
    assert torch.equal(out.indices, idx2)
    torch.testing.assert_close(out.quantized, q2, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.loss, loss2)
    # one EMA step later both codebooks moved to the same place
    torch.testing.assert_close(ours.codebook, theirs.codebook, rtol=1e-5, atol=1e-6)
    # the same gradient reaches the encoder
    upstream = torch.randn_like(z)
    ((out.quantized * upstream).sum() + out.loss).backward()
    ((q2 * upstream).sum() + loss2).backward()
    torch.testing.assert_close(z1.grad, z2.grad)

    ours.eval()
    theirs.eval()
    z = torch.randn(3, d, 5, 5)
    out = ours(z)
    q2, idx2, _ = theirs(z)
    assert torch.equal(out.indices, idx2)
    torch.testing.assert_close(out.quantized, q2, rtol=1e-5, atol=1e-6)  # codebooks differ by rounding


# ---------------------------------------------------------------- distributed (gloo, 2 ranks)

K, D, STEPS, ROWS = 48, 8, 15, 192
SPLIT = 112  # rank 0 holds rows [0, 112), rank 1 [112, 192): shards may differ in size


def global_batch(step: int) -> torch.Tensor:
    """(ROWS, D) encoder outputs whose distribution drifts, so codes die and restart."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(ROWS, D, generator=g)
    x[:, 0] += 0.4 * step
    return x


def as_map(rows: torch.Tensor) -> torch.Tensor:
    return rows.reshape(-1, 4, 4, D).permute(0, 3, 1, 2)  # (N, D) -> (N/16, D, 4, 4)


def run_quantizer(rank: int | None) -> tuple[VectorQuantizer, int]:
    """Train the quantizer on `rank`'s shard of each global batch (None: on the whole batch)."""
    torch.manual_seed(0)
    vq = VectorQuantizer(K, D, ema=True, decay=0.9, kmeans_init=True, kmeans_iters=5,
                         restart_threshold=1.0).train()
    vq.seed(7)
    restarted = 0
    for step in range(STEPS):
        x = global_batch(step)
        if rank is not None:
            x = x[:SPLIT] if rank == 0 else x[SPLIT:]
        restarted += int(vq(as_map(x)).restarted)
    return vq, restarted


def _dist_worker(rank: int, store: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from vqvideo.config import ModelConfig
    from vqvideo.models.vqvae import VQVAE

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        vq, restarted = run_quantizer(rank)
        # A tiny VQ-VAE under DDP. broadcast_buffers=False: DDP must not paper over a codebook
        # that drifted; the quantizer keeps its buffers in sync by itself.
        torch.manual_seed(0)
        cfg = ModelConfig(codebook_size=16, code_dim=4, hidden=8, res_blocks=1, downsample=4)
        model = VQVAE(cfg, channels=1)
        model.quantizer.seed(3)
        ddp = DDP(model, broadcast_buffers=False)
        opt = torch.optim.Adam(ddp.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(100 + rank)  # a different data shard per rank
        for _ in range(4):
            x = torch.rand(4, 1, 16, 16, generator=g)
            out = ddp(x)
            loss = F.mse_loss(out.recon, x) + out.vq.loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.save({"quantizer": vq.state_dict(), "restarted": restarted,
                    "vqvae": model.state_dict()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_keep_one_codebook(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_dist_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["restarted"] > 0  # the drift killed codes, so restarts were exercised
    for key in ("codebook", "ema_sum", "ema_count"):
        assert torch.equal(r0["quantizer"][key], r1["quantizer"][key]), key
    for key, value in r0["vqvae"].items():
        assert torch.equal(value, r1["vqvae"][key]), key

    # ... and it is the codebook one process learns on the concatenated batches
    single, restarted = run_quantizer(None)
    assert restarted == r0["restarted"]
    torch.testing.assert_close(single.codebook, r0["quantizer"]["codebook"], rtol=1e-5, atol=1e-5)
    assert torch.equal(single.ema_count, r0["quantizer"]["ema_count"])
    assert math.isfinite(float(single.codebook.sum()))
