"""Detectors: the scalar of the SR output, per sample, whose attribution LAM computes."""

from __future__ import annotations

from typing import Callable, Literal, Union

import torch
from torch import Tensor

from lam_captum.functional._window import Window, WindowLike, as_window, check_window_inside

Detector = Callable[[Tensor, Window], Tensor]
DetectorLike = Union[Literal["gradient", "intensity"], Detector]


def _safe_sqrt(values: Tensor) -> Tensor:
    # sqrt has an infinite slope at 0; the inner `where` keeps the backward pass finite and the outer one
    # gives an exact 0 there, so a flat (clamped, saturated) output pixel contributes no NaN.
    positive = values > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, values, torch.ones_like(values))), 0.0)


def gradient_detector(output: Tensor, window: WindowLike) -> Tensor:
    """Sum of the per-channel gradient magnitude of the SR output inside ``window``, per sample.

    ``g = sqrt((y[i, j] - y[i+1, j])^2 + (y[i, j] - y[i, j+1])^2)`` per channel, summed over channels and
    window pixels. It needs one row below and one column right of the window.

    Args:
        output: ``(N, C, H, W)`` SR output.
        window: The window in SR pixels: a :class:`Window`, ``(top, left, size)`` or ``(top, left, height, width)``.

    Returns:
        ``(N,)`` detector values.

    Raises:
        ValueError: If the window (plus its one-pixel neighbourhood) is not inside the output.

    Example:
        >>> y = torch.zeros(1, 1, 8, 8); y[..., 4:, :] = 1.0
        >>> gradient_detector(y, Window(2, 2, 3, 3))
        tensor([3.])
    """
    window = as_window(window)
    check_window_inside(window, output.shape[-2], output.shape[-1], margin=1)
    crop = output[..., window.top : window.top + window.height + 1, window.left : window.left + window.width + 1]
    vertical = (crop[..., :-1, :-1] - crop[..., 1:, :-1]) ** 2
    horizontal = (crop[..., :-1, :-1] - crop[..., :-1, 1:]) ** 2
    return _safe_sqrt(vertical + horizontal).flatten(1).sum(dim=1)


def intensity_detector(output: Tensor, window: WindowLike) -> Tensor:
    """Sum of the SR output inside ``window`` over channels and pixels, per sample.

    Example:
        >>> intensity_detector(torch.ones(2, 3, 8, 8), Window(0, 0, 2, 2))
        tensor([12., 12.])
    """
    window = as_window(window)
    check_window_inside(window, output.shape[-2], output.shape[-1])
    crop = output[..., window.top : window.top + window.height, window.left : window.left + window.width]
    return crop.flatten(1).sum(dim=1)


_DETECTORS: dict[str, Detector] = {"gradient": gradient_detector, "intensity": intensity_detector}
DETECTOR_NAMES: tuple[str, ...] = tuple(_DETECTORS)


def detector_margin(detector: DetectorLike) -> int:
    """SR pixels the detector needs below and right of the window: the gradient detector looks one pixel ahead.

    Example:
        >>> detector_margin("gradient"), detector_margin("intensity")
        (1, 0)
    """
    return 1 if detector == "gradient" or detector is gradient_detector else 0


def resolve_detector(detector: DetectorLike) -> Detector:
    """The detector function for a name (``"gradient"``, ``"intensity"``) or a user callable."""
    if callable(detector):
        return detector
    if detector not in _DETECTORS:
        raise ValueError(f"`detector` must be 'gradient', 'intensity' or a callable, got {detector!r}")
    return _DETECTORS[detector]
