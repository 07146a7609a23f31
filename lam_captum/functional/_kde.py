"""Weighted Gaussian kernel density of an attribution map, computed by one FFT convolution.

LAM's KDE picture is scipy's ``gaussian_kde`` of the pixel coordinates weighted by the map and
evaluated at every pixel. Evaluating it point by point costs O(n^2) in the pixel count; because
the data points and the evaluation points are the same integer grid, the identical sum is a
convolution of the weight map with one Gaussian sampled on all pixel offsets.
"""

from __future__ import annotations

import numpy as np
import scipy.signal
import torch
from torch import Tensor

# Below this ratio of the smaller to the larger principal variance the weighted coordinates span a
# line: scipy's Cholesky fails there, and float64 round-off of a truly collinear set stays far under it.
_COLLINEAR_RATIO = 1e-10


def kde_map(attribution_map: Tensor) -> Tensor:
    """Weighted Gaussian KDE of the pixel coordinates, evaluated at every pixel, max-normalised.

    Gives the numbers of ``scipy.stats.gaussian_kde(coordinates, weights=map)`` with Scott's rule
    (full 2x2 weighted covariance, effective sample size ``1 / sum(w**2)``), divided by the max.

    Args:
        attribution_map: a non-negative (H, W) map with some positive weight, such as LAM's map.

    Returns:
        The (H, W) density divided by its max, in the dtype and on the device of the input;
        it carries no gradient (a picture, not part of the attribution).

    Raises:
        TypeError: if ``attribution_map`` is not a tensor.
        ValueError: if it is not 2-D, is negative, non-finite or all zero, or if its weight
            sits on a single pixel or a single line (the covariance is singular).

    Example:
        >>> attribution = torch.zeros(8, 8)
        >>> attribution[3:5, 2:6] = 1.0
        >>> density = kde_map(attribution)
        >>> density.shape, float(density.max())
        (torch.Size([8, 8]), 1.0)
    """
    _check_attribution_map(attribution_map)
    # A small 2-D picture-side computation: numpy and scipy's single-threaded FFT in float64 avoid
    # the latency of torch's thread pool, which dominates on a busy CPU for so little work.
    weights = attribution_map.detach().cpu().to(torch.float64).numpy()
    density = _convolve_with_gaussian(weights, _scott_bandwidth(weights))
    # FFT round-off leaves values of order 1e-17 where the true density underflows to 0.
    density = np.clip(density, 0.0, None)
    return torch.from_numpy(density / density.max()).to(dtype=attribution_map.dtype, device=attribution_map.device)


def _check_attribution_map(attribution_map: Tensor) -> None:
    if not isinstance(attribution_map, Tensor):
        raise TypeError(f"`attribution_map` must be a torch.Tensor, got {type(attribution_map).__name__}")
    if attribution_map.ndim != 2:
        raise ValueError(f"`attribution_map` must be 2-D (H, W), got shape {tuple(attribution_map.shape)}")
    if not bool(torch.isfinite(attribution_map).all()):
        non_finite = int((~torch.isfinite(attribution_map)).sum())
        raise ValueError(f"`attribution_map` must be finite, got {non_finite} NaN or inf values")
    if bool((attribution_map < 0).any()):
        minimum = float(attribution_map.min())
        raise ValueError(f"`attribution_map` must be non-negative, got min {minimum:.4g}")
    if not bool((attribution_map > 0).any()):
        raise ValueError("`attribution_map` is all zero: a density needs some positive weight")


def _scott_bandwidth(weights: np.ndarray) -> np.ndarray:
    """The kernel covariance (row, column order) that scipy's Scott rule gives these weights."""
    height, width = weights.shape
    probabilities = weights / weights.sum()
    row_marginal, column_marginal = probabilities.sum(axis=1), probabilities.sum(axis=0)
    row_offsets = np.arange(height) - (np.arange(height) * row_marginal).sum()
    column_offsets = np.arange(width) - (np.arange(width) * column_marginal).sum()
    cross = (row_offsets[:, None] * probabilities * column_offsets[None, :]).sum()
    scatter = np.array([[(row_offsets**2 * row_marginal).sum(), cross],
                        [cross, (column_offsets**2 * column_marginal).sum()]])
    _check_not_degenerate(scatter)
    sum_of_squares = (probabilities**2).sum()
    # numpy.cov with aweights summing to 1 divides by 1 - sum(w**2); Scott's factor is neff**(-1/6).
    covariance = scatter / (1.0 - sum_of_squares)
    return covariance * sum_of_squares ** (1.0 / 3.0)


class DegenerateMapError(ValueError):
    """A map whose weight sits on one pixel or one line: its KDE has no bandwidth across it (scipy's
    ``gaussian_kde`` refuses it too). Pictures draw such a map as it is."""


def _check_not_degenerate(scatter: Tensor) -> None:
    smallest, largest = np.linalg.eigvalsh(scatter)
    if largest <= 0.0:
        raise DegenerateMapError("`attribution_map` has all its weight on one pixel: its KDE bandwidth is zero")
    if smallest <= _COLLINEAR_RATIO * largest:
        raise DegenerateMapError(
            "`attribution_map` has all its weight on a single line: the weighted pixel coordinates "
            f"have a singular covariance (principal variances {smallest:.3g} and {largest:.3g})"
        )


def _convolve_with_gaussian(weights: np.ndarray, bandwidth: np.ndarray) -> np.ndarray:
    """``sum_q weights[q] * exp(-d^T bandwidth^-1 d / 2)`` with ``d = p - q``, for every pixel p."""
    height, width = weights.shape
    precision = np.linalg.inv(bandwidth)
    row_offsets = np.arange(-(height - 1), height, dtype=np.float64)[:, None]
    column_offsets = np.arange(-(width - 1), width, dtype=np.float64)[None, :]
    quadratic_form = (
        precision[0, 0] * row_offsets**2
        + 2.0 * precision[0, 1] * row_offsets * column_offsets
        + precision[1, 1] * column_offsets**2
    )
    kernel = np.exp(-0.5 * quadratic_form)
    # The kernel holds every offset from -(H-1) to H-1, so the centred H x W block of the full
    # convolution ("same") is the sum over all pixels q for every pixel p.
    return scipy.signal.fftconvolve(weights, kernel, mode="same")
