from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from reference_lam import demo_kde_map
from skimage import data, filters, transform

from lam_captum.functional import kde_map


def blob_map(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A LAM-like map: a bright blob off centre on a floor of weak noise."""
    rows, columns = np.mgrid[0:height, 0:width]
    blob = np.exp(-((rows - 0.4 * height) ** 2 + (columns - 0.6 * width) ** 2) / (0.02 * height * width))
    noisy = blob + 0.05 * np.random.default_rng(seed).random((height, width))
    return noisy / noisy.max()


def photo_edge_map() -> np.ndarray:
    """Edge strength of a real photo, as a map: many scattered maxima."""
    edges = filters.sobel(transform.resize(data.camera().astype(np.float64), (36, 36), anti_aliasing=True))
    return edges / edges.max()


def sparse_map() -> np.ndarray:
    """Three weighted pixels, not on one line; every other pixel has zero weight."""
    attribution = np.zeros((24, 30))
    attribution[3, 4], attribution[15, 20], attribution[7, 27] = 1.0, 0.5, 0.2
    return attribution


@pytest.mark.parametrize(
    "attribution_map",
    [
        blob_map(32, 32),
        blob_map(40, 57),
        np.random.default_rng(1).random((23, 41)),
        photo_edge_map(),
        sparse_map(),
    ],
    ids=["blob-32x32", "blob-40x57", "random-23x41", "photo-edges", "sparse"],
)
def test_matches_scipy(attribution_map: np.ndarray) -> None:
    density = kde_map(torch.from_numpy(attribution_map))
    np.testing.assert_allclose(density.numpy(), demo_kde_map(attribution_map), rtol=0, atol=1e-6)


def test_matches_scipy_from_float32() -> None:
    attribution_map = blob_map(20, 28).astype(np.float32)
    density = kde_map(torch.from_numpy(attribution_map))
    np.testing.assert_allclose(density.numpy(), demo_kde_map(attribution_map), rtol=0, atol=1e-6)


def test_unchanged_by_weight_scale() -> None:
    attribution_map = torch.from_numpy(blob_map(16, 18))
    torch.testing.assert_close(kde_map(attribution_map), kde_map(7.5 * attribution_map))


def test_normalised_and_non_negative() -> None:
    density = kde_map(torch.from_numpy(blob_map(30, 20)))
    assert float(density.max()) == 1.0
    assert float(density.min()) >= 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA"))],
)
def test_dtype_and_device_preserved(dtype: torch.dtype, device: str) -> None:
    attribution_map = torch.from_numpy(blob_map(12, 15)).to(dtype=dtype, device=device)
    density = kde_map(attribution_map)
    assert density.shape == (12, 15)
    assert density.dtype == dtype
    assert density.device.type == device


def test_non_contiguous_input() -> None:
    attribution_map = torch.from_numpy(blob_map(14, 22))
    transposed = attribution_map.T
    assert not transposed.is_contiguous()
    torch.testing.assert_close(kde_map(transposed), kde_map(transposed.contiguous()))


def test_input_requiring_grad() -> None:
    attribution_map = torch.from_numpy(blob_map(10, 10)).requires_grad_()
    assert not kde_map(attribution_map).requires_grad


def test_rejects_non_tensor() -> None:
    with pytest.raises(TypeError, match="`attribution_map` must be a torch.Tensor, got ndarray"):
        kde_map(blob_map(8, 8))


@pytest.mark.parametrize("shape", [(8,), (1, 8, 8), (2, 3, 8, 8)])
def test_rejects_wrong_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=re.escape(f"must be 2-D (H, W), got shape {shape}")):
        kde_map(torch.ones(shape))


def test_rejects_negative() -> None:
    attribution_map = torch.from_numpy(blob_map(8, 8))
    attribution_map[2, 3] = -0.25
    with pytest.raises(ValueError, match="must be non-negative, got min -0.25"):
        kde_map(attribution_map)


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_rejects_non_finite(bad_value: float) -> None:
    attribution_map = torch.from_numpy(blob_map(8, 8))
    attribution_map[1, 1] = bad_value
    with pytest.raises(ValueError, match="must be finite, got 1 NaN or inf values"):
        kde_map(attribution_map)


def test_rejects_all_zero() -> None:
    with pytest.raises(ValueError, match="is all zero"):
        kde_map(torch.zeros(8, 8))


def test_rejects_single_pixel() -> None:
    attribution_map = torch.zeros(8, 8)
    attribution_map[4, 5] = 1.0
    with pytest.raises(ValueError, match="all its weight on one pixel"):
        kde_map(attribution_map)


@pytest.mark.parametrize("line", ["row", "column", "diagonal"])
def test_rejects_weight_on_a_line(line: str) -> None:
    attribution_map = torch.zeros(9, 9)
    if line == "row":
        attribution_map[4, 1:7] = torch.linspace(0.2, 1.0, 6)
    elif line == "column":
        attribution_map[:, 2] = 1.0
    else:
        attribution_map.fill_diagonal_(0.5)
    with pytest.raises(ValueError, match="all its weight on a single line"):
        kde_map(attribution_map)


def test_rejects_one_row_map() -> None:
    with pytest.raises(ValueError, match="single line"):
        kde_map(torch.rand(1, 16) + 0.1)
