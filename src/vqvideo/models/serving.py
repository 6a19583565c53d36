"""Tensor-in, tensor-out wrappers logged as MLflow models (the `pt2` torch.export format).

torch.export needs plain tensors in and out; the training modules return dataclasses.
"""

from __future__ import annotations

from torch import Tensor, nn

from vqvideo.models.vqvae import VQVAE


class Reconstructor(nn.Module):
    """(B, C, H, W) frames in [0, 1] -> their VQ-VAE reconstruction."""

    def __init__(self, vqvae: VQVAE):
        super().__init__()
        self.vqvae = vqvae

    def forward(self, x: Tensor) -> Tensor:
        return self.vqvae.decode_indices(self.vqvae.quantizer.encode_indices(self.vqvae.encode(x)))
