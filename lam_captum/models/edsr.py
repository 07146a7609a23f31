"""EDSR (Lim et al., CVPR 2017 workshops) with the parameter names of the EDSR-PyTorch checkpoints.

The module tree mirrors the layout of the widely shared EDSR-PyTorch weights, so that their state
dicts load without renaming: ``sub_mean``, ``head.0``, ``body.{i}.body.{0,2}`` (residual blocks),
``body.{n_resblocks}`` (the conv closing the body), ``tail.0`` (the pixel-shuffle upsampler),
``tail.1`` and ``add_mean``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["EDSR", "edsr_baseline", "edsr_full"]

# Mean colour of the DIV2K training set, the normalisation every EDSR-PyTorch checkpoint assumes.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
SUPPORTED_SCALES = (2, 3, 4, 8)


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=True)


class MeanShift(nn.Conv2d):
    """A frozen 1x1 convolution that adds ``sign * rgb_range * mean`` to every channel.

    Args:
        rgb_range: The pixel range the network works in (1 or 255).
        mean: The per-channel mean, in [0, 1].
        sign: -1 subtracts the mean, +1 adds it back.

    Example:
        >>> shift = MeanShift(1.0, (0.5, 0.5, 0.5), sign=-1)
        >>> shift(torch.full((1, 3, 2, 2), 0.5)).abs().max().item()
        0.0
    """

    def __init__(self, rgb_range: float, mean: tuple[float, ...], sign: int) -> None:
        channels = len(mean)
        super().__init__(channels, channels, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(mean))
        # Frozen as in EDSR-PyTorch; gradients still flow to the input, which is all LAM needs.
        self.requires_grad_(False)


class ResBlock(nn.Module):
    """conv-ReLU-conv with the output scaled by ``res_scale`` and added to the input.

    Args:
        n_feats: Channels in and out.
        res_scale: Factor applied to the residual branch (0.1 stabilises wide EDSR models).

    Example:
        >>> block = ResBlock(8)
        >>> block(torch.zeros(1, 8, 5, 5)).shape
        torch.Size([1, 8, 5, 5])
    """

    def __init__(self, n_feats: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv3x3(n_feats, n_feats), nn.ReLU(inplace=True), _conv3x3(n_feats, n_feats))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class Upsampler(nn.Sequential):
    """Sub-pixel upsampling: [conv to 4x channels, PixelShuffle(2)] per factor 2, or one x3 step.

    Args:
        scale: 2, 3, 4 or 8.
        n_feats: Channels in and out.

    Raises:
        ValueError: If ``scale`` is not supported.

    Example:
        >>> Upsampler(4, 8)(torch.zeros(1, 8, 3, 3)).shape
        torch.Size([1, 8, 12, 12])
    """

    def __init__(self, scale: int, n_feats: int) -> None:
        if scale not in SUPPORTED_SCALES:
            raise ValueError(f"`scale` must be 2, 3, 4 or 8, got {scale!r}")
        if scale == 3:
            layers = [_conv3x3(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
        else:
            layers = []
            for _ in range(int(math.log2(scale))):
                layers += [_conv3x3(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
        super().__init__(*layers)


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")


def _check_edsr_args(
    scale: int, n_resblocks: int, n_feats: int, res_scale: float, rgb_range: float, n_colors: int
) -> None:
    if scale not in SUPPORTED_SCALES:
        raise ValueError(f"`scale` must be 2, 3, 4 or 8, got {scale!r}")
    _check_positive_int("n_resblocks", n_resblocks)
    _check_positive_int("n_feats", n_feats)
    if not res_scale > 0:
        raise ValueError(f"`res_scale` must be positive, got {res_scale!r}")
    if not rgb_range > 0:
        raise ValueError(f"`rgb_range` must be positive (1 or 255 in practice), got {rgb_range!r}")
    if n_colors not in (1, 3):
        raise ValueError(f"`n_colors` must be 1 or 3, got {n_colors!r}")


class EDSR(nn.Module):
    """Enhanced Deep Super-Resolution network, taking and returning images in [0, 1].

    Without loaded weights the network is randomly initialised (PyTorch's default init).
    ``rgb_range`` is the range the *weights* were trained in: the forward pass scales the [0, 1]
    input up to it and the output back down, so weights from the EDSR-PyTorch release
    (``rgb_range=255``) and weights trained on [0, 1] images (``rgb_range=1``) both work.

    Args:
        scale: Upscaling factor: 2, 3, 4 or 8.
        n_resblocks: Number of residual blocks.
        n_feats: Feature channels.
        res_scale: Residual scaling inside each block.
        rgb_range: Pixel range of the trained weights.
        n_colors: Image channels, 3 (RGB) or 1 (grey; the mean shift then uses the mean of the
            three DIV2K channel means).

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> model = EDSR(scale=2, n_resblocks=1, n_feats=8)
        >>> model(torch.rand(1, 3, 6, 6)).shape
        torch.Size([1, 3, 12, 12])
    """

    def __init__(
        self,
        scale: int = 4,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        rgb_range: float = 1.0,
        n_colors: int = 3,
    ) -> None:
        super().__init__()
        _check_edsr_args(scale, n_resblocks, n_feats, res_scale, rgb_range, n_colors)
        self.scale = scale
        self.rgb_range = float(rgb_range)
        self.n_colors = n_colors
        mean = DIV2K_RGB_MEAN if n_colors == 3 else (sum(DIV2K_RGB_MEAN) / 3,)
        self.sub_mean = MeanShift(rgb_range, mean, sign=-1)
        self.head = nn.Sequential(_conv3x3(n_colors, n_feats))
        blocks = [ResBlock(n_feats, res_scale) for _ in range(n_resblocks)]
        self.body = nn.Sequential(*blocks, _conv3x3(n_feats, n_feats))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), _conv3x3(n_feats, n_colors))
        self.add_mean = MeanShift(rgb_range, mean, sign=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve a batch.

        Args:
            x: LR images, shape (N, n_colors, H, W), values in [0, 1].

        Returns:
            SR images, shape (N, n_colors, scale*H, scale*W), in [0, 1] up to the network's
            overshoot (not clamped, so that gradients never vanish at saturated pixels).
        """
        features = self.head(self.sub_mean(x * self.rgb_range))
        features = features + self.body(features)
        return self.add_mean(self.tail(features)) / self.rgb_range


def edsr_baseline(scale: int = 4, **kwargs) -> EDSR:
    """EDSR-baseline: 16 residual blocks, 64 channels, ``res_scale`` 1.

    Args:
        scale: 2, 3, 4 or 8.
        **kwargs: Further :class:`EDSR` arguments (e.g. ``rgb_range``), overriding the preset.

    Returns:
        A randomly initialised model.

    Example:
        >>> sum(p.numel() for p in edsr_baseline(4).parameters() if p.requires_grad)
        1517571
    """
    return EDSR(**{"scale": scale, "n_resblocks": 16, "n_feats": 64, "res_scale": 1.0, **kwargs})


def edsr_full(scale: int = 4, **kwargs) -> EDSR:
    """The full EDSR: 32 residual blocks, 256 channels, ``res_scale`` 0.1.

    Args:
        scale: 2, 3, 4 or 8.
        **kwargs: Further :class:`EDSR` arguments (e.g. ``rgb_range``), overriding the preset.

    Returns:
        A randomly initialised model.

    Example:
        >>> edsr_full(2).body[0].res_scale
        0.1
    """
    return EDSR(**{"scale": scale, "n_resblocks": 32, "n_feats": 256, "res_scale": 0.1, **kwargs})
