"""``LAM.attribute_windows``: K windows of one image, one forward pass per path step, the same numbers."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import tiny_sr
from test_region import WindowAttentionSR, assert_same_attribution

from lam_captum import LAM, Window
from lam_captum._core import _windows
from lam_captum._core._region import Box
from lam_captum._core._windows import group_windows
from lam_captum.functional import blur_baseline

WINDOWS = [(0, 0, 16), (40, 36, 16), Window(80, 10, 8, 12), (79, 79, 16)]


@pytest.mark.parametrize("method", ["official", "gausslegendre"])
def test_windows_together_equal_one_window_at_a_time(photo_lr, method):
    lam = LAM(tiny_sr())
    together = lam.attribute_windows(photo_lr, WINDOWS, n_steps=5, method=method, crop=False)
    assert together.shape == (len(WINDOWS), *photo_lr.shape[1:])
    for row, window in zip(together, WINDOWS):
        assert torch.equal(row, lam.attribute(photo_lr, window, n_steps=5, method=method, crop=False)[0])


def test_the_gpus_vectorised_gradients_give_the_same_numbers_as_one_window_at_a_time(monkeypatch, photo_lr):
    # A GPU computes the K gradients in one batched backward pass, a CPU in K passes: the GPU's path, here.
    monkeypatch.setattr(_windows, "_input_gradients", _windows.vectorised_gradients)
    lam = LAM(tiny_sr())
    together = lam.attribute_windows(photo_lr, WINDOWS, n_steps=5, crop=False, internal_batch_size=2)
    for row, window in zip(together, WINDOWS):
        torch.testing.assert_close(row, lam.attribute(photo_lr, window, n_steps=5, crop=False)[0],
                                   rtol=1e-5, atol=1e-7)


def test_windows_together_on_a_crop_equal_the_full_image(photo_lr):
    lam = LAM(tiny_sr())
    windows = [(30, 30, 8), (40, 36, 16)]
    together = lam.attribute_windows(photo_lr, windows, n_steps=5)
    for row, window in zip(together, windows):
        assert_same_attribution(row, lam.attribute(photo_lr, window, n_steps=5, crop=False)[0])


def test_windows_together_on_window_attention_equal_one_at_a_time():
    lam = LAM(WindowAttentionSR().eval())
    image = torch.rand(1, 3, 62, 58, generator=torch.Generator().manual_seed(4))
    windows = [(60, 52, 8), (64, 50, 8), (0, 0, 8)]
    together = lam.attribute_windows(image, windows, n_steps=3)
    for row, window in zip(together, windows):
        assert_same_attribution(row, lam.attribute(image, window, n_steps=3, crop=False)[0])


@pytest.mark.parametrize("rows", [1, 2, 5])
def test_internal_batch_size_does_not_change_the_windows(photo_lr, rows):
    lam = LAM(tiny_sr())
    reference = lam.attribute_windows(photo_lr, WINDOWS[:2], n_steps=5, crop=False)
    chunked = lam.attribute_windows(photo_lr, WINDOWS[:2], n_steps=5, crop=False, internal_batch_size=rows)
    torch.testing.assert_close(chunked, reference, rtol=1e-5, atol=1e-7)


def test_each_windows_convergence_delta_equals_compute_convergence_delta(photo_lr):
    lam = LAM(tiny_sr())
    attribution, delta = lam.attribute_windows(photo_lr, WINDOWS, n_steps=5, return_convergence_delta=True)
    assert delta.shape == (len(WINDOWS),)
    baseline = blur_baseline(photo_lr)
    for k, window in enumerate(WINDOWS):
        expected = lam.compute_convergence_delta(attribution[k : k + 1], baseline, photo_lr, window=window)
        torch.testing.assert_close(delta[k : k + 1], expected, rtol=1e-5, atol=1e-5)


def test_windows_as_a_tensor(photo_lr):
    lam = LAM(tiny_sr())
    as_tensor = lam.attribute_windows(photo_lr, torch.tensor([[0, 0, 16], [40, 36, 16]]), n_steps=3, crop=False)
    assert torch.equal(as_tensor, lam.attribute_windows(photo_lr, WINDOWS[:2], n_steps=3, crop=False))


@pytest.mark.parametrize(
    ("inputs", "windows", "message"),
    [
        ("pair", [(0, 0, 8)], r"`inputs` must hold one image, shape \(1, C, H, W\), got \(2, 3, 24, 24\)"),
        ("one", (0, 0, 8), r"`windows` must be a non-empty sequence of windows.* got \(0, 0, 8\)"),
        ("one", [], r"`windows` must be a non-empty sequence of windows.* got \[\]"),
        ("one", [(0, 0, 8), "top"], r"`windows` must be a non-empty sequence"),
        ("one", [(90, 0, 8)], r"`window` must lie inside the 96x96 SR output"),
    ],
)
def test_bad_inputs_and_windows_get_clear_errors(photo_lr, inputs, windows, message):
    images = photo_lr if inputs == "one" else torch.cat([photo_lr, photo_lr])
    with pytest.raises(ValueError, match=message):
        LAM(tiny_sr()).attribute_windows(images, windows, n_steps=2)


def test_flat_window_warns_and_gives_zero_not_nan():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.PixelShuffle(2)).eval()
    torch.nn.init.zeros_(model[0].weight)
    with pytest.warns(RuntimeWarning, match="zero at every path step"):
        attribution = LAM(model).attribute_windows(torch.rand(1, 1, 12, 12), [(0, 0, 8), (4, 4, 8)], n_steps=3)
    assert torch.equal(attribution, torch.zeros_like(attribution))


def test_windows_far_apart_get_crops_of_their_own_and_near_ones_share_one(caplog):
    lam = LAM(tiny_sr())
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    # Two windows at the top left that see almost the same pixels, one at the bottom right.
    windows = [(8, 8, 8), (12, 10, 8), (230, 230, 8)]
    with caplog.at_level(logging.DEBUG, logger="lam_captum._core._region"):
        together = lam.attribute_windows(image, windows, n_steps=4)
    crops = [record.getMessage() for record in caplog.records if record.getMessage().startswith("LAM on the")]
    assert len(crops) == 2 and all("crop" in message for message in crops)
    for row, window in zip(together, windows):
        assert_same_attribution(row, lam.attribute(image, window, n_steps=4, crop=False)[0])


def test_grouping_saves_work_by_the_cost_of_a_pass():
    # The same region for every window: one crop, one pass.
    assert group_windows([Box(0, 20, 0, 20)] * 4, 9, 200, 200) == [[0, 1, 2, 3]]
    # Regions far apart: a crop each. Windows without a region (the full image) share one pass.
    assert group_windows([Box(0, 20, 0, 20), Box(150, 170, 150, 170), None, None], 9, 200, 200) == [[0], [1], [2, 3]]


def test_grouping_counts_the_crops_grown_to_the_gpus_shapes():
    # Two 24x24 regions 9 columns apart: their crops (with the blur's 4-pixel margin) are 32x32 each, and
    # the crop of both is 32x41. Cost (crop pixels x (1 + windows)): 2 x 1024 x 2 = 4096 apart, 32 x 41 x 3 =
    # 3936 together, so they merge; with the GPU's sides of multiples of 8 the crop of both is 32x48, 4608.
    regions = [Box(50, 74, 50, 74), Box(50, 74, 59, 83)]
    assert group_windows(regions, 9, 200, 200) == [[0, 1]]
    assert group_windows(regions, 9, 200, 200, quantum=8) == [[0], [1]]
