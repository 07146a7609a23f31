"""A literal, independent re-statement of the official LAM demo's computation, for parity tests.

It follows LAM_SPEC step by step with different machinery from the package: numpy float64 kernels,
``scipy.ndimage.correlate`` with the mirror border (reflect-101), one path point at a time with a batch of
one and ``.backward()``, the detector on the whole image then sliced, NaN gradients set to 0.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage, stats


def demo_kernel(size: int, sigma: float) -> np.ndarray:
    axis = np.arange(-size // 2 + 1.0, size // 2 + 1.0)
    xx, yy = np.meshgrid(axis, axis)
    kernel = np.exp(-(xx**2 + yy**2) / (2.0 * (sigma + 1e-5) ** 2))
    return kernel / np.sum(kernel)


def demo_filter(image_chw: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return np.stack([ndimage.correlate(channel, kernel, mode="mirror") for channel in image_chw])


def demo_path(image_chw: np.ndarray, sigma: float, fold: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    sigmas = np.linspace(sigma, 0, fold + 1)
    kernels = [demo_kernel(size, s) for s in sigmas]
    points = np.stack([demo_filter(image_chw, kernels[i + 1]) for i in range(fold)])
    derivatives = np.stack([demo_filter(image_chw, (kernels[i + 1] - kernels[i]) * fold) for i in range(fold)])
    return points.astype(np.float32), derivatives.astype(np.float32)


def demo_gradient_detector(output: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    dh = (output[:, :, :-1, :] - output[:, :, 1:, :]) ** 2
    dw = (output[:, :, :, :-1] - output[:, :, :, 1:]) ** 2
    magnitude = torch.sqrt(dh[:, :, :, :-1] + dw[:, :, :-1, :])
    return magnitude[:, :, top : top + size, left : left + size].sum()


def demo_lam(model, image_chw: np.ndarray, top: int, left: int, size: int, sigma=1.2, fold=50, kernel_size=9):
    """The demo's attribution (C, H, W) for one LR image in [0, 1], as float64 numpy."""
    points, derivatives = demo_path(image_chw.astype(np.float64), sigma, fold, kernel_size)
    total = np.zeros(image_chw.shape, dtype=np.float64)
    for point, derivative in zip(points, derivatives):
        tensor = torch.from_numpy(point).requires_grad_(True)
        target = demo_gradient_detector(model(tensor.unsqueeze(0)), top, left, size)
        target.backward()
        gradient = tensor.grad.numpy().astype(np.float64)
        gradient[np.isnan(gradient)] = 0.0
        total += gradient * derivative
    return total / fold


def demo_kde_map(attribution_map: np.ndarray) -> np.ndarray:
    """The demo's KDE picture values: scipy's weighted gaussian_kde of the pixel coordinates at every pixel."""
    height, width = attribution_map.shape
    rows, columns = np.mgrid[0:height, 0:width]
    points = np.vstack([columns.ravel(), rows.ravel()])
    density = stats.gaussian_kde(points, weights=attribution_map.ravel())(points).reshape(height, width)
    return density / density.max()
