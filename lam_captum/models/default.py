"""The project's own small x4 model, trained by ``examples/train_default_model.py``."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lam_captum.models.edsr import ResBlock, Upsampler, _check_positive_int, _conv3x3

__all__ = ["CompactSR"]


class CompactSR(nn.Module):
    """A compact x4 EDSR-style network that learns a correction to bicubic upsampling.

    head conv (3 -> ``n_feats``), ``n_resblocks`` residual blocks and a closing conv with a global
    residual, a x4 pixel-shuffle upsampler and a conv back to RGB, added to the bicubic upsampled
    input. With the defaults (8 blocks, 32 channels) every output pixel sees about 40x40 LR pixels,
    so a Local Attribution Map of it has room to spread. The last conv starts at zero: the
    untrained network is exactly bicubic upsampling, which makes short CPU training reliable.

    Args:
        n_resblocks: Number of residual blocks.
        n_feats: Feature channels.

    Raises:
        ValueError: If an argument is not a positive integer.

    Example:
        >>> model = CompactSR(n_resblocks=1, n_feats=8)
        >>> model(torch.rand(1, 3, 5, 5)).shape
        torch.Size([1, 3, 20, 20])
    """

    scale = 4

    def __init__(self, n_resblocks: int = 8, n_feats: int = 32) -> None:
        super().__init__()
        _check_positive_int("n_resblocks", n_resblocks)
        _check_positive_int("n_feats", n_feats)
        self.head = _conv3x3(3, n_feats)
        self.body = nn.Sequential(*(ResBlock(n_feats) for _ in range(n_resblocks)), _conv3x3(n_feats, n_feats))
        self.upsample = Upsampler(self.scale, n_feats)
        self.to_rgb = _conv3x3(n_feats, 3)
        nn.init.zeros_(self.to_rgb.weight)
        nn.init.zeros_(self.to_rgb.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve a batch.

        Args:
            x: LR RGB images, shape (N, 3, H, W), values in [0, 1].

        Returns:
            SR images, shape (N, 3, 4H, 4W), in [0, 1] up to overshoot (not clamped, so that
            gradients never vanish at saturated pixels).
        """
        features = self.head(x)
        features = features + self.body(features)
        bicubic = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return bicubic + self.to_rgb(self.upsample(features))
