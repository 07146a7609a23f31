"""Degraded inputs for restoration models (scale 1), made from a clean image, reproducibly.

A restoration network (denoising, deblurring, JPEG-artifact removal) is explained on a degraded copy
of a clean image, as its benchmarks make them: ``noise:SIGMA`` (additive white Gaussian noise, SIGMA on
the 0-255 scale), ``jpeg:Q`` (Pillow's JPEG at quality Q) and ``blur:S`` (Gaussian blur of standard
deviation S pixels, reflect-101 border).

Example:
    >>> import torch
    >>> clean = torch.full((3, 16, 16), 0.5)
    >>> noisy = degrade(clean, "noise:25", seed=0)
    >>> torch.equal(noisy, degrade(clean, "noise:25", seed=0)), round(float((noisy - clean).std() * 255))
    (True, 25)
"""

from __future__ import annotations

import io
import math
from typing import Literal, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from lam_captum.functional import blur, gaussian_kernel
from lam_captum.imageio import to_pil

__all__ = ["DEGRADATIONS", "Degradation", "degrade", "parse_degradation"]

DEGRADATIONS = ("noise", "jpeg", "blur")


class Degradation(NamedTuple):
    """A parsed degradation: its kind and its strength (sigma on 0-255, JPEG quality, or blur sigma)."""

    kind: Literal["noise", "jpeg", "blur"]
    value: float


def parse_degradation(spec: str) -> Degradation:
    """Read ``noise:SIGMA``, ``jpeg:Q`` or ``blur:S``.

    Args:
        spec: The degradation; SIGMA >= 0 (0-255 scale), Q an integer in [1, 100], S > 0 (pixels).

    Returns:
        The :class:`Degradation`.

    Raises:
        ValueError: For an unknown kind or a value out of its range, naming ``spec``.

    Example:
        >>> parse_degradation("jpeg:40")
        Degradation(kind='jpeg', value=40.0)
    """
    kind, separator, text = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if kind not in DEGRADATIONS or not separator:
        raise ValueError(f"`spec` must be noise:SIGMA, jpeg:Q or blur:S, got {spec!r}")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"`spec` {spec!r} must end in a number after {kind}:") from None
    if not math.isfinite(value):
        raise ValueError(f"`spec` {spec!r} must end in a finite number")
    if kind == "noise" and value < 0:
        raise ValueError(f"`spec` {spec!r}: the noise sigma must be >= 0 (0-255 scale)")
    if kind == "jpeg" and (value != int(value) or not 1 <= value <= 100):
        raise ValueError(f"`spec` {spec!r}: the JPEG quality must be an integer in [1, 100]")
    if kind == "blur" and value <= 0:
        raise ValueError(f"`spec` {spec!r}: the blur sigma must be > 0 (pixels)")
    return Degradation(kind, value)


def degrade(image: Tensor, spec: str, seed: int = 0) -> Tensor:
    """A degraded copy of a clean ``(C, H, W)`` image in [0, 1].

    - ``noise:SIGMA``: ``image + N(0, (SIGMA / 255)^2)``, drawn from a CPU generator seeded with ``seed``
      (the same noise on every device), not clipped, as Gaussian-denoising benchmarks leave it.
    - ``jpeg:Q``: encoded and decoded by Pillow at quality Q (4:2:0 chroma for RGB, Pillow's default).
    - ``blur:S``: correlated with a normalised Gaussian of sigma S on a ``2 * ceil(3 S) + 1`` grid,
      reflect-101 border (as LAM's own blur).

    Args:
        image: ``(C, H, W)`` floating image in [0, 1]; C in {1, 3} for JPEG.
        spec: See :func:`parse_degradation`.
        seed: Seed of the noise (JPEG and blur are deterministic).

    Returns:
        The degraded image: shape, dtype and device of ``image``.

    Raises:
        TypeError: If ``image`` is not a floating tensor.
        ValueError: For a bad ``spec`` or image shape, or an image too small for the blur kernel.

    Example:
        >>> clean = torch.rand(1, 24, 24)
        >>> degrade(clean, "blur:1.5").shape, float((degrade(clean, "jpeg:10") - clean).abs().max()) > 0
        (torch.Size([1, 24, 24]), True)
    """
    if not isinstance(image, Tensor) or not image.is_floating_point():
        raise TypeError(f"`image` must be a floating (C, H, W) tensor in [0, 1], got {type(image).__name__}"
                        + (f" of {image.dtype}" if isinstance(image, Tensor) else ""))
    if image.dim() != 3:
        raise ValueError(f"`image` must be one (C, H, W) image, got shape {tuple(image.shape)}")
    degradation = parse_degradation(spec)
    if degradation.kind == "noise":
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(image.shape, generator=generator, dtype=torch.float64) * (degradation.value / 255)
        return image + noise.to(dtype=image.dtype, device=image.device)
    if degradation.kind == "jpeg":
        return _jpeg(image, int(degradation.value))
    radius = math.ceil(3 * degradation.value)
    kernel = gaussian_kernel(degradation.value, 2 * radius + 1, dtype=image.dtype, device=image.device)
    return blur(image[None], kernel)[0]


def _jpeg(image: Tensor, quality: int) -> Tensor:
    if image.shape[0] not in (1, 3):
        raise ValueError(f"`image` must have 1 or 3 channels for JPEG, got shape {tuple(image.shape)}")
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="JPEG", quality=quality)
    with Image.open(buffer) as decoded:
        pixels = np.array(decoded, dtype=np.float32) / 255
    channels_first = torch.from_numpy(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1).copy())
    return channels_first.to(dtype=image.dtype, device=image.device)
