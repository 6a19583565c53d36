"""The VQ-VAE in both architectures: shapes, layer structure, gradients, precision, learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vqvideo.config import ModelConfig
from vqvideo.models.blocks import ResidualBlock
from vqvideo.models.vqvae import VQVAE

SMALL = {"codebook_size": 32, "code_dim": 8, "hidden": 16, "res_blocks": 1}

SHAPES = [("seed", 8)] + [("resnet", f) for f in (2, 4, 8)]  # the seed net always pools by 8


def build(arch="resnet", downsample=4, channels=1, **kw) -> VQVAE:
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, downsample=downsample, **{**SMALL, **kw})
    return VQVAE(cfg, channels)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("arch", "factor"), SHAPES)
def test_shapes_round_trip(arch, factor, channels):
    model = build(arch, factor, channels).train()
    x = torch.rand(2, channels, 32, 32)
    z = model.encode(x)
    assert model.factor == factor and model.latent_size(32) == 32 // factor
    assert z.shape == (2, 8, 32 // factor, 32 // factor)
    out = model(x)
    assert out.recon.shape == x.shape
    assert out.vq.indices.shape == (2, 32 // factor, 32 // factor)
    model.eval()
    codes = model.encode_indices(x)
    assert codes.shape == (2, 32 // factor, 32 // factor) and codes.dtype == torch.long
    pixels = model.decode_indices(codes)
    assert pixels.shape == x.shape and pixels.min() >= 0 and pixels.max() <= 1
    # eval forward, reconstruct and decode(encode) are the same computation
    assert torch.equal(model(x).vq.indices, codes)
    torch.testing.assert_close(model.reconstruct(x), model(x).recon.clamp(0, 1))


def test_seed_is_the_articles_network():
    model = build("seed")
    enc = list(model.encoder.modules())
    dec = list(model.decoder.modules())
    convs = [m for m in enc if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert [c.out_channels for c in convs] == [64, 128, 256]
    assert sum(isinstance(m, nn.MaxPool2d) for m in enc) == 3
    ups = [m for m in dec if isinstance(m, nn.ConvTranspose2d)]
    assert [(u.kernel_size, u.stride) for u in ups] == [((4, 4), (2, 2))] * 3
    assert not any(isinstance(m, ResidualBlock) for m in enc + dec)


@pytest.mark.parametrize("blocks", [0, 1, 3])
def test_resnet_width_and_depth_follow_the_config(blocks):
    model = build("resnet", 4, hidden=24, res_blocks=blocks)
    for part in (model.encoder, model.decoder):
        res = [m for m in part.modules() if isinstance(m, ResidualBlock)]
        assert len(res) == blocks
        assert all(m.body[1].in_channels == 24 for m in res)
    strided = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 2  # /4


@pytest.mark.parametrize("ema", [True, False])
def test_codebook_is_trained_by_the_optimiser_only_without_ema(ema):
    model = build(ema=ema)
    names = {n for n, _ in model.named_parameters()}
    assert ("quantizer.codebook" in names) is not ema
    assert "quantizer.codebook" in model.state_dict()


@pytest.mark.parametrize("arch", ["seed", "resnet"])
def test_reconstruction_gradient_reaches_the_encoder(arch):
    model = build(arch).train()
    x = torch.rand(2, 1, 32, 32)
    F.mse_loss(model(x).recon, x).backward()  # no VQ loss: only the straight-through path
    first = next(model.encoder.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_bf16_autocast_and_channels_last():
    model = build("resnet").to(memory_format=torch.channels_last).train()
    x = torch.rand(4, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.recon.dtype == torch.bfloat16 and out.vq.quantized.dtype == torch.float32
    loss = F.mse_loss(out.recon.float(), x) + out.vq.loss
    loss.backward()
    assert torch.isfinite(loss) and out.vq.counts.sum() == 4 * 8 * 8


@pytest.mark.parametrize("arch", ["seed", "resnet"])
def test_learns_to_reconstruct_a_small_batch(arch):
    """A few Adam steps on one batch of blobs halve the reconstruction error."""
    model = build(arch, codebook_size=64).train()
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centres = torch.rand(8, 2, generator=g) * 24 + 4
    x = torch.exp(-((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2) / 18)
    x = x[:, None]  # (8, 1, 32, 32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = model(x)
        recon = F.mse_loss(out.recon, x)
        opt.zero_grad()
        (recon + out.vq.loss).backward()
        opt.step()
        losses.append(recon.item())
    assert losses[-1] < 0.5 * losses[0]
