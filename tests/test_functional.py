from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_lam import demo_filter, demo_gradient_detector, demo_kernel

from lam_captum import functional as LF
from lam_captum.functional import Window


@pytest.mark.parametrize("sigma", [0.0, 0.3, 1.2, 4.0])
@pytest.mark.parametrize("size", [1, 5, 9])
def test_kernel_matches_the_demo_and_sums_to_one(sigma, size):
    kernel = LF.gaussian_kernel(sigma, size)
    np.testing.assert_allclose(kernel.numpy(), demo_kernel(size, sigma), rtol=1e-12, atol=1e-15)
    assert float(kernel.sum()) == pytest.approx(1.0, abs=1e-12)


def test_kernel_at_zero_sigma_is_the_identity():
    kernel = LF.gaussian_kernel(0.0, 9)
    assert float(kernel[4, 4]) == 1.0 and float(kernel.sum()) == 1.0


def test_batched_kernels_equal_single_ones():
    sigmas = torch.linspace(1.2, 0, 5, dtype=torch.float64)
    batched = LF.gaussian_kernel(sigmas, 9)
    for sigma, kernel in zip(sigmas, batched):
        torch.testing.assert_close(kernel, LF.gaussian_kernel(float(sigma), 9))


def test_kernel_derivative_matches_finite_differences():
    sigmas = torch.tensor([0.2, 0.7, 1.2, 3.0], dtype=torch.float64)
    step = 1e-6
    finite = (LF.gaussian_kernel(sigmas + step) - LF.gaussian_kernel(sigmas - step)) / (2 * step)
    torch.testing.assert_close(LF.gaussian_kernel_derivative(sigmas), finite, rtol=1e-6, atol=1e-9)


def test_blur_uses_the_reflect_101_border():
    image = torch.rand(2, 3, 11, 13, dtype=torch.float64)
    kernel = torch.rand(7, 7, dtype=torch.float64)
    expected = np.stack([demo_filter(sample, kernel.numpy()) for sample in image.numpy()])
    torch.testing.assert_close(LF.blur(image, kernel), torch.from_numpy(expected))


def test_blur_with_several_kernels_stacks_them_on_dimension_one():
    image = torch.rand(2, 3, 10, 10)
    kernels = LF.gaussian_kernel(torch.tensor([0.5, 1.0, 2.0]), 5, dtype=torch.float32)
    stacked = LF.blur(image, kernels)
    assert stacked.shape == (2, 3, 3, 10, 10)
    torch.testing.assert_close(stacked[:, 1], LF.blur(image, kernels[1]))


def test_blur_gradcheck():
    image = torch.rand(1, 2, 7, 8, dtype=torch.float64, requires_grad=True)
    kernel = LF.gaussian_kernel(1.0, 5)
    assert torch.autograd.gradcheck(lambda x: LF.blur(x, kernel), (image,))


def test_blur_keeps_device_and_dtype():
    image = torch.rand(1, 1, 9, 9, dtype=torch.float64)
    blurred = LF.blur_baseline(image)
    assert blurred.dtype == torch.float64 and blurred.device == image.device


def test_blur_errors():
    with pytest.raises(ValueError, match=r"4-D \(N, C, H, W\) images, got shape \(9, 9\)"):
        LF.blur(torch.rand(9, 9), LF.gaussian_kernel(1.0, 3))
    with pytest.raises(ValueError, match=r"must be larger than half the kernel \(9\)"):
        LF.blur(torch.rand(1, 1, 4, 20), LF.gaussian_kernel(1.0, 9))
    with pytest.raises(ValueError, match="odd l"):
        LF.blur(torch.rand(1, 1, 9, 9), torch.ones(4, 4))


@pytest.mark.parametrize("method", LF.INTEGRATION_METHODS)
def test_path_runs_from_the_baseline_to_the_input(method):
    image = torch.rand(1, 3, 12, 12, dtype=torch.float64)
    kernels = LF.path_kernels(1.2, 16, 9, method)
    assert float(kernels.weights.sum()) == pytest.approx(1.0)
    points, derivatives = LF.blur_path(image, 1.2, 16, 9, method)
    assert points.shape == derivatives.shape == (1, 16, 3, 12, 12)
    # The weighted derivatives integrate to input - baseline (up to the rule's error).
    integral = torch.einsum("s,nschw->nchw", kernels.weights, derivatives)
    difference = image - LF.blur_baseline(image)
    tolerance = 1e-9 if method == "official" else 0.1
    assert float((integral - difference).abs().max()) <= tolerance * float(difference.abs().max())


def test_official_path_ends_at_the_input():
    image = torch.rand(1, 3, 12, 12)
    points, _ = LF.blur_path(image, n_steps=5)
    torch.testing.assert_close(points[:, -1], image)


def test_gradient_detector_equals_the_demo_where_not_flat():
    output = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    ours = LF.gradient_detector(output, Window(5, 7, 16, 16))
    demo = torch.stack([demo_gradient_detector(output[i : i + 1], 5, 7, 16) for i in range(2)])
    torch.testing.assert_close(ours, demo)


def test_gradient_detector_has_zero_gradient_on_flat_output():
    output = torch.zeros(1, 1, 10, 10, dtype=torch.float64, requires_grad=True)
    (gradient,) = torch.autograd.grad(LF.gradient_detector(output, Window(2, 2, 4, 4)).sum(), output)
    assert torch.isfinite(gradient).all() and not gradient.any()


def test_gradient_detector_gradcheck_away_from_flat():
    output = torch.rand(1, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y: LF.gradient_detector(y, Window(1, 1, 5, 5)), (output,))


def test_intensity_detector():
    output = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert float(LF.intensity_detector(output, Window(1, 1, 2, 2))[0]) == 5 + 6 + 9 + 10


def test_windows_parse_and_validate():
    assert LF.as_window(Window(1, 2, 3, 4)) == Window(1, 2, 3, 4)
    assert LF.as_window(torch.tensor([1, 2, 3])) == Window(1, 2, 3, 3)
    assert LF.as_window((np.int64(1), 2, 3)) == Window(1, 2, 3, 3)
    assert LF.as_windows(torch.tensor([[0, 0, 4], [1, 1, 4]]), 2)[1] == Window(1, 1, 4, 4)
    with pytest.raises(ValueError, match="size >= 1"):
        LF.as_window((0, 0, 0))
    with pytest.raises(ValueError, match=r"`window` must be \(top, left, size\)"):
        LF.as_window("0,0,16")


def test_attribution_map_sums_channels_before_the_absolute_value():
    attribution = torch.tensor([[[2.0, -1.0]], [[-2.0, -1.0]]])
    torch.testing.assert_close(LF.attribution_map(attribution), torch.tensor([[0.0, 1.0]]))


def test_attribution_map_of_zeros_warns_and_stays_finite():
    with pytest.warns(RuntimeWarning, match="all zero"):
        lam_map = LF.attribution_map(torch.zeros(2, 3, 4, 4))
    assert lam_map.shape == (2, 4, 4) and not lam_map.any()


def test_attribution_map_rejects_nan():
    with pytest.raises(ValueError, match="NaN or infinite"):
        LF.attribution_map(torch.full((1, 2, 2), float("nan")))


def reference_gini(values: np.ndarray) -> float:
    flat = values.flatten().astype(np.float64)
    if flat.min() < 0:
        flat -= flat.min()
    flat = np.sort(flat + 1e-7)
    n = flat.size
    index = np.arange(1, n + 1)
    return float(np.sum((2 * index - n - 1) * flat) / (n * np.sum(flat)))


def test_gini_and_di_match_the_formula():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 16, 16)) ** 4
    maps[1] -= 0.5
    ours = LF.gini(torch.from_numpy(maps))
    np.testing.assert_allclose(ours.numpy(), [reference_gini(m) for m in maps], rtol=1e-12)
    torch.testing.assert_close(LF.diffusion_index(torch.from_numpy(maps)), (1 - ours) * 100)


def test_di_of_the_same_blob_falls_with_image_size():
    def blob(size: int) -> torch.Tensor:
        grid = torch.arange(size, dtype=torch.float64) - size / 2
        return torch.exp(-(grid[:, None] ** 2 + grid[None] ** 2) / 8)

    di = [float(LF.diffusion_index(blob(size))) for size in (32, 64, 128)]
    assert di[0] > di[1] > di[2]


def test_attribution_area():
    values = torch.tensor([[[0.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    assert LF.attribution_area(values, 0.5).tolist() == [1, 2]
    assert int(LF.attribution_area(values[1], 1.0)) == 4
    with pytest.raises(ValueError, match=r"`fraction` must be in \(0, 1\], got 0"):
        LF.attribution_area(values, 0)
