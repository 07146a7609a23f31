"""Crops of one shape stacked into the same model calls: the K windows of one image on a GPU (forced on the CPU
here, with the GPU's crop shapes), and the samples of one ``attribute`` call, such as Captum's NoiseTunnel's
noisy copies, on every device."""

from __future__ import annotations

import logging

import pytest
import torch
from captum.attr import NoiseTunnel
from conftest import tiny_sr
from test_region import (
    CORNERS_AND_BORDERS,
    REGION_LOG,
    GatedReachSR,
    GlobalPoolingSR,
    WindowAttentionSR,
    assert_same_attribution,
)
from torch import nn

from lam_captum import LAM


class Recording(nn.Module):
    """The model, keeping the shape ``(rows, H, W)`` of every input it is called on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[int, int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.shape[0], *x.shape[-2:]))
        return self.model(x)

    def integration_calls(self, height: int, width: int) -> list[int]:
        """Rows of the calls on ``height`` x ``width`` inputs with more than one row (the memory probe and a
        single crop's check pass one)."""
        return [rows for rows, h, w in self.calls if (h, w) == (height, width) and rows > 1]


@pytest.fixture
def stacked(monkeypatch):
    """The GPU's choices on the CPU: crops of one shape stacked, each window on a crop of its own, crop sides
    multiples of 8."""
    from lam_captum._core import _region, _windows

    for module in (_region, _windows):
        monkeypatch.setattr(module, "stacks_crops", lambda device: True)
        monkeypatch.setattr(module, "crop_quantum", lambda device: 8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_windows_at_every_border_and_corner_run_stacked_and_equal_one_at_a_time(stacked, caplog, dtype):
    model = Recording(tiny_sr()).to(dtype)
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(8))
    lam = LAM(model)
    with caplog.at_level(logging.DEBUG, logger=REGION_LOG):
        together = lam.attribute_windows(image, [(top, left, 16) for top, left in CORNERS_AND_BORDERS], n_steps=4,
                                         internal_batch_size=12, dtype=dtype)
    assert together.dtype == dtype
    # Every window's crop is 24x24 (test_region): one call checks the 9 crops against the full image at the input
    # and one at the path's baseline, then 9 windows of 4 steps are 36 rows, 3 calls of 12.
    assert model.integration_calls(24, 24) == [9, 9, 12, 12, 12]
    assert caplog.text.count("LAM on the 24x24 crop") == len(CORNERS_AND_BORDERS)
    for k, (top, left) in enumerate(CORNERS_AND_BORDERS):
        assert_same_attribution(together[k : k + 1],
                                lam.attribute(image, (top, left, 16), n_steps=4, crop=False, dtype=dtype))


def test_a_stacked_window_whose_gradient_leaves_its_region_is_redone_on_a_wider_crop(stacked, caplog):
    # GatedReachSR reaches further once the path has blurred the sharp checkerboard (test_region).
    model = GatedReachSR().eval()
    rows, cols = torch.meshgrid(torch.arange(48), torch.arange(48), indexing="ij")
    image = ((rows + cols) % 2).float()[None, None]
    windows = [(40, 40, 8), (16, 64, 8), (72, 8, 8)]
    lam = LAM(model)
    with caplog.at_level(logging.DEBUG, logger=REGION_LOG):
        together = lam.attribute_windows(image, windows, n_steps=5)
    assert "left the region on the path; widening" in caplog.text
    for k, window in enumerate(windows):
        assert_same_attribution(together[k : k + 1], lam.attribute(image, window, n_steps=5, crop=False))


def test_stacked_window_attention_crops_are_exact(stacked, caplog):
    model = WindowAttentionSR().eval()
    image = torch.rand(1, 3, 62, 58, generator=torch.Generator().manual_seed(2))
    windows = [(60, 52, 8), (72, 36, 6), (0, 0, 8), (115, 107, 8)]
    lam = LAM(model)
    with caplog.at_level(logging.DEBUG, logger=REGION_LOG):
        together = lam.attribute_windows(image, windows, n_steps=4)
    # Crops off the attention grid fail the check made together and go on, alone, to grid-aligned ones.
    assert "does not reproduce the full image" in caplog.text and "crop at rows" in caplog.text
    for k, window in enumerate(windows):
        assert_same_attribution(together[k : k + 1], lam.attribute(image, window, n_steps=4, crop=False))


def test_stacked_windows_of_a_global_model_fall_back_to_the_full_image_exactly(stacked, caplog):
    model = GlobalPoolingSR().eval()
    image = torch.rand(1, 3, 56, 56, generator=torch.Generator().manual_seed(3))
    windows = [(8, 8, 8), (40, 44, 8), (100, 20, 8)]
    lam = LAM(model)
    with caplog.at_level(logging.DEBUG, logger=REGION_LOG):
        together = lam.attribute_windows(image, windows, n_steps=4)
    assert "LAM on the full image" in caplog.text and "crop at rows" not in caplog.text
    assert torch.equal(together, lam.attribute_windows(image, windows, n_steps=4, crop=False))


def test_noise_tunnel_copies_run_stacked_on_their_crops_and_equal_the_full_image(stacked):
    model = Recording(tiny_sr())
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(9))
    lam = LAM(model)
    torch.manual_seed(4)
    cropped = NoiseTunnel(lam).attribute(image, nt_samples=4, stdevs=0.02, window=(60, 70, 16), n_steps=4,
                                         internal_batch_size=8)
    # The noisy copies' regions are the receptive field around one window: crops of one shape, checked in one
    # call at the input and one at the baseline, then 16 rows in 2 calls.
    crop_calls = [(rows, h, w) for rows, h, w in model.calls if rows > 1 and (h, w) != (40, 40)]
    assert [rows for rows, _, _ in crop_calls] == [4, 4, 8, 8] and len({call[1:] for call in crop_calls}) == 1
    torch.manual_seed(4)
    full = NoiseTunnel(lam).attribute(image, nt_samples=4, stdevs=0.02, window=(60, 70, 16), n_steps=4, crop=False)
    assert_same_attribution(cropped, full)


def dead_where_dark() -> nn.Module:
    """x2; every output pixel is ReLU(mean of its 3x3 input neighbourhood - 0.5): flat, with zero gradient,
    wherever the input is dark."""
    conv = nn.Conv2d(1, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight.fill_(1 / 9)
        conv.bias.fill_(-0.5)
    return nn.Sequential(conv, nn.PixelShuffle(2), nn.ReLU()).eval()


def test_the_warning_for_a_dead_sample_names_its_index_in_the_call():
    bright = 0.6 + 0.4 * torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(1))
    images = torch.cat([bright, torch.zeros(1, 1, 24, 24)])
    with pytest.warns(RuntimeWarning, match=r"sample\(s\) \[2\] are zero at every path step"):
        LAM(dead_where_dark()).attribute(images, (16, 16, 8), n_steps=3)


@pytest.mark.parametrize("stacking", [False, True])
def test_the_warning_for_a_dead_window_names_its_index_in_the_call(monkeypatch, stacking):
    from lam_captum._core import _region, _windows

    for module in (_region, _windows):
        monkeypatch.setattr(module, "stacks_crops", lambda device: stacking)
    image = torch.zeros(1, 1, 32, 32)
    image[..., :, :16] = 0.6 + 0.4 * torch.rand(32, 16, generator=torch.Generator().manual_seed(1))
    windows = [(8, 4, 8), (30, 40, 8), (50, 10, 8)]  # the second lies on the dark half
    with pytest.warns(RuntimeWarning, match=r"window\(s\) \[1\] are zero at every path step"):
        LAM(dead_where_dark()).attribute_windows(image, windows, n_steps=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_windows_of_an_image_run_stacked_on_crops_of_one_shape_and_are_exact():
    model = Recording(tiny_sr()).cuda()
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(8)).cuda()
    windows = [(top, left, 16) for top, left in CORNERS_AND_BORDERS]
    lam = LAM(model)
    together = lam.attribute_windows(image, windows, n_steps=4)
    crop_calls = [(rows, h, w) for rows, h, w in model.calls if rows > 1 and (h, w) != (40, 40)]
    assert {call[1:] for call in crop_calls} == {(24, 24)}
    # Checks at the input and at the baseline, and 4 steps, per window.
    assert sum(rows for rows, _, _ in crop_calls) == 6 * len(windows)
    assert max(rows for rows, _, _ in crop_calls) > 4  # rows of more than one window in a call
    for k, window in enumerate(windows):
        assert_same_attribution(together[k : k + 1], lam.attribute(image, window, n_steps=4, crop=False))


def test_the_crops_checked_together_stay_within_the_calls_memory_budget(stacked):
    model = Recording(tiny_sr())
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(8))
    windows = [(top, left, 16) for top, left in CORNERS_AND_BORDERS]
    LAM(model).attribute_windows(image, windows, n_steps=4, internal_batch_size=4)
    # 9 crops of 24x24, at most 4 rows a call: the checks take 3 calls (4, 4, 1) at the input and 3 at the
    # baseline, as the 36 path rows take 9.
    assert model.integration_calls(24, 24) == [4, 4, 4, 4] + [4] * 9


def test_windows_whose_crops_would_have_more_shapes_than_shared_crops_have_groups_share_a_crop(stacked, caplog):
    # On a 24x24 image the GPU's padded crops would be most of the image, so each window gets its smallest crop,
    # of a size that depends on the border: two shapes, two runs, where one shared crop is one.
    model = Recording(tiny_sr())
    image = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    windows = [(0, 0, 16), (8, 8, 16)]
    lam = LAM(model)
    with caplog.at_level(logging.DEBUG, logger=REGION_LOG):
        together = lam.attribute_windows(image, windows, n_steps=4, internal_batch_size=8)
    assert caplog.text.count("crop at rows") == 1
    crop_calls = [rows for rows, h, w in model.calls if rows > 1 and (h, w) != (24, 24)]
    assert crop_calls == [4]  # one shared crop: the 4 steps of both windows in one call
    for k, window in enumerate(windows):
        assert_same_attribution(together[k : k + 1], lam.attribute(image, window, n_steps=4, crop=False))
