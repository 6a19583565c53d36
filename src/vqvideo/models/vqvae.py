"""The VQ-VAE: encoder -> vector quantiser -> decoder, in two architectures.

- `seed`: the article's plain network. Encoder Conv3x3 + ReLU + MaxPool three times
  (64, 128, 256 channels, /8), decoder ConvTranspose 4x4 stride 2 three times.
- `resnet`: strided convs down to /2, /4 or /8, then the article's preprocessor of residual blocks;
  the decoder mirrors it. Residual blocks run after downsampling, where they are cheap.

A 1x1 conv maps encoder features to `code_dim` before quantisation and back after it. The decoder
outputs pixels in [0, 1] unbounded (MSE trains faster without a squashing output); `decode`
clamps for display and metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vqvideo.config import ModelConfig
from vqvideo.models.blocks import ResidualStack, conv_pool, down, up
from vqvideo.models.quantizer import QuantizerOutput, VectorQuantizer


def seed_encoder(channels: int, code_dim: int) -> nn.Sequential:
    return nn.Sequential(
        conv_pool(channels, 64), conv_pool(64, 128), conv_pool(128, 256), nn.Conv2d(256, code_dim, 1)
    )


def seed_decoder(channels: int, code_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(code_dim, 256, 1), nn.ReLU(),
        up(256, 128), nn.ReLU(),
        up(128, 64), nn.ReLU(),
        up(64, channels),
    )


def resnet_encoder(channels: int, code_dim: int, hidden: int, blocks: int, factor: int) -> nn.Sequential:
    n_down = int(math.log2(factor))
    layers: list[nn.Module] = [down(channels, hidden)]
    for _ in range(n_down - 1):
        layers += [nn.ReLU(), down(hidden, hidden)]
    layers += [ResidualStack(hidden, blocks), nn.Conv2d(hidden, code_dim, 1)]
    return nn.Sequential(*layers)


def resnet_decoder(channels: int, code_dim: int, hidden: int, blocks: int, factor: int) -> nn.Sequential:
    n_up = int(math.log2(factor))
    layers: list[nn.Module] = [nn.Conv2d(code_dim, hidden, 3, padding=1), ResidualStack(hidden, blocks)]
    for _ in range(n_up - 1):
        layers += [up(hidden, hidden), nn.ReLU()]
    layers += [up(hidden, channels)]
    return nn.Sequential(*layers)


@dataclass
class VQVAEOutput:
    recon: Tensor  # (B, C, H, W), unclamped
    vq: QuantizerOutput


class VQVAE(nn.Module):
    def __init__(self, cfg: ModelConfig, channels: int):
        super().__init__()
        self.cfg, self.channels, self.factor = cfg, channels, cfg.factor
        if cfg.arch == "seed":
            self.encoder = seed_encoder(channels, cfg.code_dim)
            self.decoder = seed_decoder(channels, cfg.code_dim)
        else:
            self.encoder = resnet_encoder(channels, cfg.code_dim, cfg.hidden, cfg.res_blocks, cfg.downsample)
            self.decoder = resnet_decoder(channels, cfg.code_dim, cfg.hidden, cfg.res_blocks, cfg.downsample)
        self.quantizer = VectorQuantizer(
            cfg.codebook_size, cfg.code_dim, cfg.beta, ema=cfg.ema, decay=cfg.ema_decay,
            kmeans_init=cfg.kmeans_init, kmeans_iters=cfg.kmeans_iters,
            restart_threshold=cfg.restart_threshold,
        )

    def latent_size(self, image_size: int) -> int:
        return image_size // self.factor

    def encode(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (B, D, h, w) continuous codes."""
        return self.encoder(x)

    def forward(self, x: Tensor) -> VQVAEOutput:
        vq = self.quantizer(self.encode(x))
        return VQVAEOutput(self.decoder(vq.quantized), vq)

    @torch.no_grad()
    def encode_indices(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, h, w) code indices."""
        return self.quantizer.encode_indices(self.encode(x))

    def decode_indices(self, indices: Tensor) -> Tensor:
        """(B, h, w) code indices -> (B, C, H, W) pixels clamped to [0, 1]."""
        return self.decoder(self.quantizer.lookup(indices)).float().clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode_indices(self.encode_indices(x))


@torch.no_grad()
def decode_codes(vqvae: VQVAE, codes: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """(B, T, h, w) codes -> (B, T, C, H, W) frames in [0, 1], decoded `batch` frames at a time."""
    b, t = codes.shape[:2]
    flat = codes.reshape(b * t, *codes.shape[2:])  # (B*T, h, w)
    out = torch.cat([vqvae.decode_indices(flat[i : i + batch]) for i in range(0, len(flat), batch)])
    return out.view(b, t, *out.shape[1:])
