"""Image quality of an SR output, the way SR papers report it (EDSR, BasicSR)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# ITU-R BT.601 luma from [0, 1] RGB, in [16, 235] / 255 (MATLAB's rgb2ycbcr).
_LUMA_WEIGHTS = (65.481 / 255, 128.553 / 255, 24.966 / 255)
_LUMA_OFFSET = 16 / 255
# How the tables, the plots and the README name the PSNR, in the same words everywhere.
PSNR_LABEL = "PSNR on Y, dB (BT.601 luma, `scale` px shaved)"


def sr_psnr(sr: Tensor, hr: Tensor, shave: int) -> float:
    """PSNR in dB of an SR output against its HR image, on the luminance, with a border shaved.

    The SR output is clamped and rounded to 8 bits first, as a saved result would be; RGB images are
    compared on their BT.601 luminance, one-channel images as they are; ``shave`` pixels are cut
    from every side (the scale, by convention).

    Args:
        sr: ``(C, H, W)`` SR output in [0, 1].
        hr: ``(C, H, W)`` HR image in [0, 1], the same shape.
        shave: Border pixels to ignore on each side.

    Returns:
        The PSNR; ``inf`` for identical images.

    Raises:
        ValueError: If the shapes differ, are not one- or three-channel, or nothing is left after shaving.

    Example:
        >>> hr = torch.zeros(1, 8, 8)
        >>> round(sr_psnr(hr + 0.2, hr, shave=2), 2)
        13.98
    """
    if sr.shape != hr.shape or sr.dim() != 3 or sr.shape[0] not in (1, 3):
        raise ValueError(f"`sr` and `hr` must be (C, H, W) with C 1 or 3 and equal shapes, got "
                         f"{tuple(sr.shape)} and {tuple(hr.shape)}")
    if min(sr.shape[-2:]) <= 2 * shave:
        raise ValueError(f"`shave`={shave} leaves nothing of a {sr.shape[-2]}x{sr.shape[-1]} image")
    sr = torch.round(sr.detach().double().clamp(0, 1) * 255) / 255
    sr, hr = _luma(sr), _luma(hr.detach().double())
    window = (slice(shave, -shave), slice(shave, -shave)) if shave else (slice(None), slice(None))
    error = float(((sr - hr)[window] ** 2).mean())
    return math.inf if error == 0 else -10 * math.log10(error)


def _luma(image: Tensor) -> Tensor:
    if image.shape[0] == 1:
        return image[0]
    weights = torch.tensor(_LUMA_WEIGHTS, dtype=image.dtype)
    return torch.einsum("c,chw->hw", weights, image) + _LUMA_OFFSET
