"""A literal, independent re-statement of the public video LAM tool's ``Path_gradient``, for parity tests.

As LAM_SPEC's "Video LAM" states it, with other machinery than the package: numpy float64 kernels,
``scipy.ndimage.correlate`` per frame and channel with the mirror border (reflect-101), one path point at a
time with ``.backward()``, the detector on the whole chosen output frame then sliced, NaN gradients set to 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage


def tool_kernel(size: int, sigma: float) -> np.ndarray:
    axis = np.arange(-size // 2 + 1.0, size // 2 + 1.0)
    xx, yy = np.meshgrid(axis, axis)
    kernel = np.exp(-(xx**2 + yy**2) / (2.0 * (sigma + 1e-5) ** 2))
    return kernel / np.sum(kernel)


def tool_filter_clip(clip_tchw: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Every channel of every frame correlated with ``kernel``."""
    return np.stack([
        np.stack([ndimage.correlate(channel, kernel, mode="mirror") for channel in frame]) for frame in clip_tchw
    ])


def tool_gradient_detector(output: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    dh = (output[:, :, :-1, :] - output[:, :, 1:, :]) ** 2
    dw = (output[:, :, :, :-1] - output[:, :, :, 1:]) ** 2
    magnitude = torch.sqrt(dh[:, :, :, :-1] + dw[:, :, :-1, :])
    return magnitude[:, :, top : top + size, left : left + size].sum()


def tool_video_lam(model, clip_tchw: np.ndarray, top: int, left: int, size: int, frame: int | None = None,
                   sigma: float = 1.2, fold: int = 50, kernel_size: int = 9) -> np.ndarray:
    """The tool's attribution (T, C, H, W) of one clip, as float64 numpy; ``frame`` defaults to ceil(T/2)-1."""
    frame = math.ceil(clip_tchw.shape[0] / 2) - 1 if frame is None else frame
    sigmas = np.linspace(sigma, 0, fold + 1)
    kernels = [tool_kernel(kernel_size, s) for s in sigmas]
    clip = clip_tchw.astype(np.float64)
    total = np.zeros(clip.shape, dtype=np.float64)
    for step in range(fold):
        point = tool_filter_clip(clip, kernels[step + 1]).astype(np.float32)
        derivative = tool_filter_clip(clip, (kernels[step + 1] - kernels[step]) * fold).astype(np.float32)
        tensor = torch.from_numpy(point).requires_grad_(True)
        output = model(tensor.unsqueeze(0))
        target_frame = output[:, frame] if output.dim() == 5 else output
        tool_gradient_detector(target_frame, top, left, size).backward()
        gradient = tensor.grad.numpy().astype(np.float64)
        gradient[np.isnan(gradient)] = 0.0
        total += gradient * derivative
    return total / fold
