"""The attribution map and the numbers that summarise it: Gini, Diffusion Index, attribution area."""

from __future__ import annotations

import warnings
from numbers import Real

import numpy as np
import torch
from torch import Tensor

from lam_captum._core._context import outside_stacklevel


def attribution_map(attribution: Tensor) -> Tensor:
    """LAM's map: ``|sum over channels|`` of the attribution, divided by its maximum.

    The channels are summed signed first, as the paper does, so that channels can cancel. An all-zero
    attribution gives an all-zero map and a warning rather than the NaN (drawn black) of ``0 / 0``.

    Args:
        attribution: ``(C, H, W)`` or ``(N, C, H, W)`` attribution.

    Returns:
        ``(H, W)`` or ``(N, H, W)`` map in [0, 1].

    Example:
        >>> attribution_map(torch.tensor([[[1.0, -3.0]], [[1.0, 1.0]]]))
        tensor([[1., 1.]])
    """
    if attribution.dim() not in (3, 4):
        raise ValueError(f"expected a (C, H, W) or (N, C, H, W) attribution, got shape {tuple(attribution.shape)}")
    magnitude = attribution.sum(dim=-3).abs()
    peak = magnitude.flatten(-2).amax(dim=-1)[..., None, None]
    if not torch.isfinite(magnitude).all():
        raise ValueError("the attribution holds NaN or infinite values; the map would be meaningless")
    if (peak == 0).any():
        warnings.warn(
            "an attribution is all zero, so its map is all zero and has no Diffusion Index (NaN): the window may "
            "be flat in every path step or the model may not depend on the input (see LAM's diagnosis messages)",
            RuntimeWarning,
            stacklevel=outside_stacklevel(),
        )
    return magnitude / torch.where(peak == 0, torch.ones_like(peak), peak)


def gini(values: Tensor) -> Tensor:
    """Gini coefficient of each map, as LAM computes it (shift to >= 0, add 1e-7, sorted formula).

    An all-zero map (a dead attribution) has no Gini coefficient: it is NaN, with a warning. The formula
    would give 0 there (its 1e-7 offset makes the map uniform), which reads as DI 100, "perfectly diffuse",
    for a map with no information at all.

    Args:
        values: ``(H, W)`` or ``(N, H, W)`` maps (any trailing shape is flattened per sample).

    Returns:
        A scalar for one map, ``(N,)`` for a batch; NaN for an all-zero map.

    Example:
        >>> round(float(gini(torch.tensor([[0.0, 0.0], [0.0, 1.0]]))), 4)
        0.75
    """
    values = _maps(values)
    coefficient, all_zero = _gini(values)
    _warn_if_all_zero(all_zero, values.dim() >= 3, "Gini coefficient")
    return coefficient


def _maps(values: object) -> Tensor:
    """``values`` as a tensor of one ``(H, W)`` map or a batch of them (a numpy array is taken as it is)."""
    if isinstance(values, np.ndarray):
        values = torch.from_numpy(values)
    if not isinstance(values, Tensor):
        raise TypeError(f"`values` must be a tensor (or numpy array) of maps, got {type(values).__name__}")
    if values.dim() < 1 or values.numel() == 0:
        raise ValueError(f"`values` must be an (H, W) map or (N, H, W) maps of at least one pixel, got shape "
                         f"{tuple(values.shape)}")
    return values


def _gini(values: Tensor) -> tuple[Tensor, Tensor]:
    """The Gini coefficients (NaN for all-zero maps) and which maps are all zero, ``(N,)``."""
    batched = values.dim() >= 3
    flat = (values if batched else values.unsqueeze(0)).flatten(1).to(torch.float64)
    all_zero = (flat == 0).all(dim=1)
    low = flat.amin(dim=1, keepdim=True)
    flat = torch.where(low < 0, flat - low, flat) + 1e-7
    flat, _ = flat.sort(dim=1)
    n = flat.shape[1]
    rank = torch.arange(1, n + 1, dtype=flat.dtype, device=flat.device)
    coefficient = ((2 * rank - n - 1) * flat).sum(dim=1) / (n * flat.sum(dim=1))
    coefficient = torch.where(all_zero, torch.nan, coefficient)
    dtype = values.dtype if values.is_floating_point() else torch.float64
    return (coefficient if batched else coefficient[0]).to(dtype), all_zero


def _warn_if_all_zero(all_zero: Tensor, batched: bool, name: str) -> None:
    if all_zero.any():
        which = f"map(s) {all_zero.nonzero().flatten().tolist()} are" if batched else "the map is"
        warnings.warn(f"{which} all zero, so the {name} is undefined and reported as NaN: a dead attribution "
                      "is not a perfectly diffuse one", RuntimeWarning, stacklevel=outside_stacklevel())


def diffusion_index(values: Tensor) -> Tensor:
    """Diffusion Index ``DI = (1 - Gini) * 100``: how widely the network draws information.

    DI depends strongly on the LR image size (the same blob scores lower on a larger image), so always
    report the size with it. An all-zero map has no DI: NaN with a warning, never 100.

    Example:
        >>> round(float(diffusion_index(torch.ones(4, 4))), 3)
        100.0
    """
    values = _maps(values)
    coefficient, all_zero = _gini(values)
    _warn_if_all_zero(all_zero, values.dim() >= 3, "Diffusion Index")
    return (1 - coefficient) * 100


def attribution_area(values: Tensor, fraction: float = 0.5) -> Tensor:
    """The fewest pixels that together hold ``fraction`` of the map's total, per map.

    An all-zero map has no attribution to hold: its area is 0 (where a map's DI is NaN, not the whole image).

    Raises:
        ValueError: For a ``fraction`` outside (0, 1] or a map that holds NaN or inf.

    Example:
        >>> int(attribution_area(torch.tensor([[4.0, 3.0], [2.0, 1.0]]), 0.5))
        2
        >>> int(attribution_area(torch.zeros(4, 4)))
        0
    """
    if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0 < fraction <= 1:
        raise ValueError(f"`fraction` must be in (0, 1], got {fraction!r}")
    values = _maps(values)
    if not torch.isfinite(values).all():
        raise ValueError("`values` must be finite: the map holds NaN or inf")
    batched = values.dim() >= 3
    flat = (values if batched else values.unsqueeze(0)).flatten(1).abs().to(torch.float64)
    ordered, _ = flat.sort(dim=1, descending=True)
    total = ordered.sum(dim=1, keepdim=True)
    share = ordered.cumsum(dim=1) / total.clamp_min(torch.finfo(torch.float64).tiny)
    # Count the pixels before the running share reaches the target, then the one that reaches it.
    area = ((share < fraction - 1e-12).sum(dim=1) + 1).clamp_max(flat.shape[1])
    area = torch.where(total[:, 0] > 0, area, torch.zeros_like(area))
    return area if batched else area[0]


def negative_share(attribution: Tensor) -> Tensor:
    """The fraction of LAM's map that comes from pixels with a negative contribution.

    With ``s`` the signed channel sum of the attribution (the quantity whose ``abs`` is LAM's map),
    ``negative_share = sum(max(-s, 0)) / sum(|s|)`` over the pixels: 0 when every pixel pushes the
    detector up, 1 when every pixel pushes it down, independent of the map's normalisation. It reads
    beside DI: DI says how widely the map spreads, this says how much of it works against the window's
    detector. An all-zero attribution has share 0 (nothing is negative).

    Args:
        attribution: ``(C, H, W)`` or ``(N, C, H, W)`` signed attribution.

    Returns:
        A scalar for one attribution, ``(N,)`` for a batch, in [0, 1], in the attribution's dtype.

    Raises:
        ValueError: If the shape is not 3-D or 4-D or the attribution holds NaN or inf.

    Example:
        >>> negative_share(torch.tensor([[[1.0, -3.0]], [[1.0, 0.0]]]))
        tensor(0.6000)
    """
    if attribution.dim() not in (3, 4):
        raise ValueError(f"expected a (C, H, W) or (N, C, H, W) attribution, got shape {tuple(attribution.shape)}")
    if not torch.isfinite(attribution).all():
        raise ValueError("the attribution holds NaN or infinite values; its negative share would be meaningless")
    signed = attribution.sum(dim=-3).flatten(-2)
    total = signed.abs().sum(dim=-1)
    negative = (-signed).clamp_min(0).sum(dim=-1)
    return negative / torch.where(total == 0, torch.ones_like(total), total)
