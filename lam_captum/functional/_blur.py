"""Gaussian kernels, reflect-101 blur and the progressive-blur path of LAM."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IntegrationMethod = Literal[
    "official", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre"
]
INTEGRATION_METHODS: tuple[str, ...] = IntegrationMethod.__args__

# The demo adds this to sigma so that sigma = 0 gives a (numerically) identity kernel.
_SIGMA_EPS = 1e-5


def check_kernel_size(kernel_size: int) -> int:
    """``kernel_size`` as an ``int``; raise unless it is a positive odd integer (an even one gives a lopsided
    kernel). Python and numpy integers are accepted."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, numbers.Integral):
        raise TypeError(f"`kernel_size` must be an int, got {kernel_size!r}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"`kernel_size` must be a positive odd integer, got {kernel_size}")
    return int(kernel_size)


def check_path_arguments(sigma: float, n_steps: int) -> tuple[float, int]:
    """``(sigma, n_steps)`` as Python numbers; raise unless ``sigma`` is a finite number >= 0 and ``n_steps`` an
    integer >= 1. Python and numpy scalars are accepted."""
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"`sigma` must be a finite number >= 0, got {sigma!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) or n_steps < 1:
        raise ValueError(f"`n_steps` must be an integer >= 1, got {n_steps!r}")
    return float(sigma), int(n_steps)


def _squared_radius(kernel_size: int, dtype: torch.dtype, device: torch.device | None) -> Tensor:
    axis = torch.arange(-kernel_size // 2 + 1, kernel_size // 2 + 1, dtype=dtype, device=device)
    return axis[None, :] ** 2 + axis[:, None] ** 2


def gaussian_kernel(
    sigma: float | Tensor, kernel_size: int = 9, *, dtype: torch.dtype = torch.float64, device=None
) -> Tensor:
    """Isotropic Gaussian kernels exactly as the LAM demo builds them.

    ``k(s) = exp(-(x^2 + y^2) / (2 (s + 1e-5)^2))`` on the grid ``-(l//2)..l//2``, normalised to sum 1.

    Args:
        sigma: One standard deviation or a 1-D tensor of them (>= 0).
        kernel_size: Odd side length ``l`` of the kernel.
        dtype: Floating dtype of the result.
        device: Device of the result.

    Returns:
        ``(l, l)`` for a scalar sigma, ``(K, l, l)`` for K sigmas.

    Raises:
        ValueError: If ``kernel_size`` is even or not positive, or a sigma is negative.

    Example:
        >>> k = gaussian_kernel(1.2, 9)
        >>> k.shape, round(float(k.sum()), 6)
        (torch.Size([9, 9]), 1.0)
    """
    kernel_size = check_kernel_size(kernel_size)
    sigmas = torch.as_tensor(sigma, dtype=dtype, device=device)
    if (sigmas < 0).any():
        raise ValueError(f"`sigma` must be >= 0, got {sigma}")
    radius2 = _squared_radius(kernel_size, dtype, device)
    spread = 2 * (sigmas.reshape(-1, 1, 1) + _SIGMA_EPS) ** 2
    kernels = torch.exp(-radius2 / spread)
    kernels = kernels / kernels.sum(dim=(-2, -1), keepdim=True)
    return kernels.reshape(sigmas.shape + (kernel_size, kernel_size))


def gaussian_kernel_derivative(
    sigma: float | Tensor, kernel_size: int = 9, *, dtype: torch.dtype = torch.float64, device=None
) -> Tensor:
    """Analytic derivative ``dk/ds`` of :func:`gaussian_kernel` with respect to sigma.

    With ``t = s + 1e-5`` and ``r^2 = x^2 + y^2``: ``dk/ds = k (r^2 - sum(k r^2)) / t^3``, which is why the
    derivative kernels sum to zero (blurring never changes the mean).

    Example:
        >>> abs(float(gaussian_kernel_derivative(1.0).sum())) < 1e-12
        True
    """
    kernels = gaussian_kernel(sigma, kernel_size, dtype=dtype, device=device)
    radius2 = _squared_radius(kernel_size, dtype, device)
    mean_radius2 = (kernels * radius2).sum(dim=(-2, -1), keepdim=True)
    sigmas = torch.as_tensor(sigma, dtype=dtype, device=device).reshape(kernels.shape[:-2] + (1, 1))
    return kernels * (radius2 - mean_radius2) / (sigmas + _SIGMA_EPS) ** 3


def blur(images: Tensor, kernels: Tensor) -> Tensor:
    """Correlate every channel of every image with each kernel, with a reflect-101 border.

    Reflect-101 (``dcb|abcd|cba``) is OpenCV's default border, which the official numbers depend on;
    PyTorch's ``mode="reflect"`` is the same rule.

    Args:
        images: ``(N, C, H, W)`` images.
        kernels: ``(l, l)`` or ``(K, l, l)`` kernels with odd ``l``.

    Returns:
        ``(N, C, H, W)`` for one kernel, ``(N, K, C, H, W)`` for K kernels.

    Raises:
        ValueError: If the shapes do not fit or the image is too small for the border.

    Example:
        >>> x = torch.rand(1, 3, 16, 16)
        >>> torch.allclose(blur(x, gaussian_kernel(0.0, 9, dtype=x.dtype)), x)
        True
    """
    if images.dim() != 4:
        raise ValueError(f"expected 4-D (N, C, H, W) images, got shape {tuple(images.shape)}")
    stacked = kernels if kernels.dim() == 3 else kernels.unsqueeze(0)
    if stacked.dim() != 3 or stacked.shape[-1] != stacked.shape[-2] or stacked.shape[-1] % 2 == 0:
        raise ValueError(f"expected (l, l) or (K, l, l) kernels with odd l, got shape {tuple(kernels.shape)}")
    n, c, h, w = images.shape
    pad = stacked.shape[-1] // 2
    if pad >= h or pad >= w:
        raise ValueError(
            f"the image ({h}x{w}) must be larger than half the kernel ({stacked.shape[-1]}) in each dimension "
            "for the reflect-101 border"
        )
    padded = F.pad(images.reshape(n * c, 1, h, w), (pad, pad, pad, pad), mode="reflect")
    weight = stacked.to(dtype=images.dtype, device=images.device).unsqueeze(1)
    blurred = F.conv2d(padded, weight).reshape(n, c, -1, h, w).transpose(1, 2)
    return blurred[:, 0] if kernels.dim() == 2 else blurred


def blur_baseline(images: Tensor, sigma: float = 1.2, kernel_size: int = 9) -> Tensor:
    """The LAM baseline: the input blurred with the path's largest sigma; ``(N, C, H, W)`` images, or
    ``(N, T, C, H, W)`` clips frame by frame (video LAM's baseline).

    Example:
        >>> blur_baseline(torch.rand(2, 1, 12, 12)).shape
        torch.Size([2, 1, 12, 12])
        >>> clip = torch.rand(1, 3, 3, 12, 12)
        >>> torch.equal(blur_baseline(clip)[0, 1], blur_baseline(clip[:, 1])[0])
        True
    """
    kernel = gaussian_kernel(sigma, kernel_size, dtype=images.dtype, device=images.device)
    if images.dim() == 5:
        # The blur is per channel: a clip's frames are channels of one image, each blurred on its own.
        return blur(images.flatten(1, 2), kernel).unflatten(1, images.shape[1:3])
    return blur(images, kernel)


class PathKernels(NamedTuple):
    """The path of LAM expressed as kernels: step i is at ``blur(x, points[i])`` with derivative
    ``blur(x, derivatives[i])`` and weight ``weights[i]``, so that
    ``attribution = sum_i weights[i] * grad(D)(blur(x, points[i])) * blur(x, derivatives[i])``."""

    points: Tensor
    derivatives: Tensor
    weights: Tensor


@dataclasses.dataclass(frozen=True)
class PathSchedule:
    """The progressive-blur path as one sigma and one weight per step; its kernels are built on demand.

    The per-step numbers cost 8 bytes a step, the ``(l, l)`` kernels 162 times that at ``l = 9``: a caller
    that walks the path in chunks asks :meth:`kernels` for one chunk at a time, so kernel memory is bounded
    by the chunk, not by ``n_steps``. Build one with :func:`path_schedule`.

    Attributes:
        sigmas: ``"official"``: the ``n_steps + 1`` interval ends ``linspace(sigma, 0, n_steps + 1)``;
            the other rules: the ``n_steps`` nodes ``sigma * (1 - alpha)``.
        weights: ``(n_steps,)`` weights of the steps.
        sigma: Blur of the baseline.
        kernel_size: Odd side of the kernels.
        method: The integration rule.
    """

    sigmas: Tensor
    weights: Tensor
    sigma: float
    kernel_size: int
    method: IntegrationMethod

    @property
    def n_steps(self) -> int:
        return self.weights.shape[0]

    def kernels(self, start: int = 0, stop: int | None = None) -> PathKernels:
        """The kernels of steps ``start`` to ``stop - 1`` (default: all), the same numbers as the whole path's.

        Example:
            >>> schedule = path_schedule(1.2, 50, 9)
            >>> torch.equal(schedule.kernels(10, 12).points, schedule.kernels().points[10:12])
            True
        """
        stop = self.n_steps if stop is None else stop
        if not 0 <= start <= stop <= self.n_steps:
            raise ValueError(f"steps {start} to {stop} are not a run of the path's {self.n_steps} steps")
        if self.method == "official":
            # The demo's finite difference of kernels: step i needs the kernels at both ends of its interval.
            ends = gaussian_kernel(self.sigmas[start : stop + 1], self.kernel_size)
            return PathKernels(ends[1:], (ends[1:] - ends[:-1]) * self.n_steps, self.weights[start:stop])
        sigmas = self.sigmas[start:stop]
        derivatives = -self.sigma * gaussian_kernel_derivative(sigmas, self.kernel_size)
        return PathKernels(gaussian_kernel(sigmas, self.kernel_size), derivatives, self.weights[start:stop])


def _quadrature(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes alpha in [0, 1] (0 = baseline, 1 = input) and weights of the rules Captum names.

    The nodes are Captum's. The trapezoid weights differ on purpose: ours are the trapezoid rule on
    ``linspace(0, 1, n)`` and sum to 1, Captum's (``1 / n`` with the ends halved) sum to ``(n - 1) / n``.
    """
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return (nodes + 1) / 2, weights / 2
    step = 1.0 / n_steps
    if method == "riemann_trapezoid":
        if n_steps < 2:
            raise ValueError(f"`n_steps` must be >= 2 for riemann_trapezoid, got {n_steps}")
        weights = np.full(n_steps, 1.0 / (n_steps - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0, 1, n_steps), weights
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
    return (np.arange(n_steps) + offset) * step, np.full(n_steps, step)


def path_schedule(
    sigma: float = 1.2, n_steps: int = 50, kernel_size: int = 9, method: IntegrationMethod = "official"
) -> PathSchedule:
    """The steps of the progressive-blur path from ``blur(x, sigma)`` to ``x``, without their kernels.

    ``"official"`` is the demo's scheme: sigmas ``linspace(sigma, 0, n_steps + 1)``, points at the right
    end of each interval, derivatives as finite differences of kernels times ``n_steps`` and equal weights
    ``1 / n_steps``. The other methods integrate the path ``blur(x, sigma * (1 - alpha))`` with the rule of
    that name in Captum (the trapezoid's weights sum to 1 here, to ``(n - 1) / n`` in Captum) and the analytic
    derivative ``-sigma * dk/ds``.

    Raises:
        ValueError: For a negative or non-finite ``sigma``, ``n_steps < 1``, an unknown ``method``.
        TypeError: For a ``kernel_size`` that is not an integer.

    Example:
        >>> schedule = path_schedule(1.2, 4, 9)
        >>> [round(s, 6) for s in schedule.sigmas.tolist()], schedule.weights.tolist()
        ([1.2, 0.9, 0.6, 0.3, 0.0], [0.25, 0.25, 0.25, 0.25])
    """
    kernel_size = check_kernel_size(kernel_size)
    sigma, n_steps = check_path_arguments(sigma, n_steps)
    if method not in INTEGRATION_METHODS:
        raise ValueError(f"`method` must be one of {', '.join(INTEGRATION_METHODS)}, got {method!r}")
    if method == "official":
        sigmas = torch.linspace(sigma, 0, n_steps + 1, dtype=torch.float64)
        return PathSchedule(sigmas, torch.full((n_steps,), 1.0 / n_steps, dtype=torch.float64), sigma,
                            kernel_size, method)
    alphas, weights = _quadrature(method, n_steps)
    sigmas = torch.as_tensor(sigma * (1 - alphas), dtype=torch.float64).clamp_min(0)
    return PathSchedule(sigmas, torch.as_tensor(weights), sigma, kernel_size, method)


def path_kernels(
    sigma: float = 1.2, n_steps: int = 50, kernel_size: int = 9, method: IntegrationMethod = "official"
) -> PathKernels:
    """Kernels, derivative kernels and weights of the whole path (see :func:`path_schedule`).

    They take ``2 * kernel_size**2 * 8`` bytes a step; :meth:`PathSchedule.kernels` builds any run of steps
    alone, with the same numbers.

    Example:
        >>> kernels = path_kernels(1.2, 50, 9)
        >>> kernels.points.shape, float(kernels.weights.sum())
        (torch.Size([50, 9, 9]), 1.0)
    """
    return path_schedule(sigma, n_steps, kernel_size, method).kernels()


def blur_path(
    images: Tensor,
    sigma: float = 1.2,
    n_steps: int = 50,
    kernel_size: int = 9,
    method: IntegrationMethod = "official",
) -> tuple[Tensor, Tensor]:
    """Path points and path derivatives of LAM for a batch of images.

    Returns:
        ``(points, derivatives)``, each ``(N, n_steps, C, H, W)``; for ``"official"`` the last point is the
        input itself and ``mean_i(grad_i * derivatives_i)`` is the demo's attribution.

    Example:
        >>> x = torch.rand(1, 3, 10, 10)
        >>> points, derivatives = blur_path(x, n_steps=4)
        >>> torch.allclose(points[:, -1], x, atol=1e-6)
        True
    """
    kernels = path_kernels(sigma, n_steps, kernel_size, method)
    return blur(images, kernels.points), blur(images, kernels.derivatives)
