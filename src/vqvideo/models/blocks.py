"""Convolutional building blocks shared by the encoders and decoders."""

from __future__ import annotations

from torch import Tensor, nn


class ResidualBlock(nn.Module):
    """x + Conv1x1(ReLU(Conv3x3(ReLU(x)))): the VQ-VAE paper's residual block (sec. 4.1)."""

    def __init__(self, channels: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or channels
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResidualStack(nn.Sequential):
    """The article's "preprocessor": a run of residual blocks, closed by a ReLU."""

    def __init__(self, channels: int, blocks: int):
        super().__init__(*[ResidualBlock(channels) for _ in range(blocks)], nn.ReLU())


def conv_pool(cin: int, cout: int) -> nn.Sequential:
    """The article's encoder unit: Conv 3x3 + ReLU + MaxPool 2x2."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))


def down(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 4, stride=2, padding=1)


def up(cin: int, cout: int) -> nn.ConvTranspose2d:
    """The article's decoder unit: ConvTranspose 4x4, stride 2 (doubles the size exactly)."""
    return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
