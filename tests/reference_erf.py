"""A literal, independent re-statement of the published ERF computation, for parity tests.

It follows LAM_SPEC's "Effective receptive field" section with other machinery than the package: one image
at a time with ``.backward()``, numpy for the clamp, the channel sum and the mean, numpy index arithmetic
for the nearest resize, the square search as RepLKNet's analysis script loops (one square at a time,
stopping before the edge), and matplotlib's ``TwoSlopeNorm`` for the colour map centred at zero.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import torch
from matplotlib.colors import TwoSlopeNorm
from PIL import Image


def reference_image_map(model, image_chw: np.ndarray, position: tuple[int, int] | None = None) -> np.ndarray:
    """relu(d y[centre] / dx) summed over channels, for one (C, H, W) image, as float64 numpy."""
    model.eval()
    tensor = torch.tensor(image_chw[None], dtype=torch.float32, requires_grad=True)
    output = model(tensor)
    row, column = position if position is not None else (output.shape[2] // 2, output.shape[3] // 2)
    total = output[0, 0, row, column]
    for channel in range(1, output.shape[1]):
        total = total + output[0, channel, row, column]
    total.backward()
    gradient = tensor.grad[0].numpy().astype(np.float64)
    return np.maximum(gradient, 0.0).sum(axis=0)


def reference_nearest(image_chw: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest resize by its definition: output pixel i takes input pixel floor(i * in / out).

    PyTorch computes ``i * (in / out)`` in float32; so does this (the rounding decides some pixels).
    """
    rows = np.floor(np.arange(height, dtype=np.float32) * np.float32(image_chw.shape[1] / height))
    columns = np.floor(np.arange(width, dtype=np.float32) * np.float32(image_chw.shape[2] / width))
    rows, columns = np.minimum(rows, image_chw.shape[1] - 1), np.minimum(columns, image_chw.shape[2] - 1)
    return image_chw[:, rows.astype(int)][:, :, columns.astype(int)]


def reference_dataset_erf(model, paths, height: int = 120, width: int = 120) -> np.ndarray:
    maps = []
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
        maps.append(reference_image_map(model, reference_nearest(pixels, height, width)))
    return np.mean(maps, axis=0)


def reference_rectangle(data: np.ndarray, thresh: float):
    """RepLKNet's loop: squares of side 2i + 1 around (h // 2, w // 2), i = 1 .. h // 2 - 1."""
    h, w = data.shape
    whole = data.sum()
    for i in range(1, h // 2):
        square = data[h // 2 - i : h // 2 + i + 1, w // 2 - i : w // 2 + i + 1]
        if square.sum() / whole > thresh:
            side = 2 * i + 1
            return side, side / h * side / w
    return None


def reference_area_ratios(erf: np.ndarray, thresholds=(0.2, 0.3, 0.5, 0.99), log_scale: bool = True) -> dict:
    data = np.log10(erf + 1) if log_scale else erf.copy()
    data = data / data.max()
    return {thresh: reference_rectangle(data, thresh) for thresh in thresholds}


def reference_erf_picture(erf: np.ndarray) -> np.ndarray:
    """The published picture's colours: np.power((x + 1) - 1, 0.25) / max on RdYlGn, 0 at the centre."""
    data = np.power((erf + 1) - 1, 0.25)
    data = data / np.max(data)
    colours = matplotlib.colormaps["RdYlGn"](TwoSlopeNorm(vcenter=0.0, vmin=-1.0, vmax=1.0)(data))
    return (colours[..., :3] * 255).astype(np.uint8)
