"""An image whose forward and backward pass does not fit in the free memory (a 4000x4000 HR photo at x4):
``crop="auto"`` finds each window's region from crops, checked against a forward pass of the whole image
without gradients, and gives the same numbers as where that pass fits."""

from __future__ import annotations

import logging
import warnings

import pytest
import test_region
import torch
from architectures import SCALE, PlainCNN, TinyRRDBNet, TinySwinIR
from captum.attr import NoiseTunnel
from conftest import tiny_sr
from test_region import (
    CORNERS_AND_BORDERS,
    REGION_LOG,
    GlobalPoolingSR,
    PositionEmbeddingSR,
    SkipUNet,
    WindowAttentionSR,
    assert_same_attribution,
    crop_box,
    dilated_cnn,
)
from torch import nn

from lam_captum import LAM
from lam_captum._core import _memory, _region
from lam_captum._core._region import Box
from lam_captum.functional import Window

SCARCE_LOG = "would not fit in the free memory"
FORWARD_WARNING = "even one forward pass of the whole image"
# At 1 KiB even the forward pass does not fit: the tests of numbers need not hear it each time (tested below).
pytestmark = pytest.mark.filterwarnings(f"ignore:.*{FORWARD_WARNING}:RuntimeWarning")
# Bytes free: not enough for one pass of any test image with gradients (LAM's own estimate for a 24x24 image of
# the tiny model is a few hundred kB).
FREE = 1 << 10


@pytest.fixture
def scarce(monkeypatch):
    """A machine with :data:`FREE` bytes free."""
    monkeypatch.setattr(_region, "available_memory", lambda device: FREE)


class Recording(nn.Module):
    """The model, keeping the size ``(H, W)`` of every input it runs on with gradients and without."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.with_grad: list[tuple[int, int]] = []
        self.without_grad: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (self.with_grad if torch.is_grad_enabled() else self.without_grad).append(tuple(x.shape[-2:]))
        return self.model(x)


def crops_logged(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if "crop at rows" in record.getMessage()]


def test_the_whole_image_runs_only_forward_without_gradients_where_its_pass_would_not_fit(monkeypatch, caplog):
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    roomy = Recording(tiny_sr())
    LAM(roomy).attribute(image, (80, 80, 16), n_steps=4)
    assert (48, 48) in roomy.with_grad  # the reference pass, where it fits

    monkeypatch.setattr(_region, "available_memory", lambda device: FREE)
    scarce = Recording(tiny_sr())
    with caplog.at_level(logging.DEBUG, logger=REGION_LOG):
        LAM(scarce).attribute(image, (80, 80, 16), n_steps=4)
    assert SCARCE_LOG in caplog.text
    assert (48, 48) not in scarce.with_grad
    # The whole image forward at the input and at the path's baseline; the crop's own check at its baseline.
    assert scarce.without_grad[:2] == [(48, 48), (48, 48)]
    assert max(h * w for h, w in scarce.with_grad + scarce.without_grad[2:]) < 48 * 48 / 2


def test_a_forward_pass_of_the_whole_image_too_large_for_the_free_memory_is_warned_before_it_runs(scarce, photo_lr):
    with pytest.warns(RuntimeWarning, match=rf"LAM on 24x24 inputs needs about .* {FORWARD_WARNING} .* but only "
                                            r"0.00102 MB of cpu memory is free.*explain a crop") as caught:
        LAM(tiny_sr()).attribute(photo_lr, (40, 36, 16), n_steps=2)
    assert {w.filename for w in caught.list if FORWARD_WARNING in str(w.message)} == {__file__}


def test_where_the_forward_pass_fits_but_a_step_does_not_nothing_is_warned(monkeypatch, caplog):
    model, image = tiny_sr(), torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.enable_grad():
        forward = _memory.estimate_forward_memory(model, image)
        step = _region.estimate_call_memory(model, image, 1)
    assert forward < step
    monkeypatch.setattr(_region, "available_memory", lambda device: (forward + step) // 2)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG, logger=REGION_LOG):
        warnings.simplefilter("always")
        LAM(model).attribute(image, (120, 120, 16), n_steps=2)
    assert SCARCE_LOG in caplog.text
    assert not [w for w in caught if FORWARD_WARNING in str(w.message)]


def test_the_choice_follows_the_estimate_of_one_pass_against_the_free_memory():
    model, image = tiny_sr(), torch.rand(1, 3, 64, 64)
    with torch.enable_grad():
        needed = _region.estimate_call_memory(model, image, 1)
        for free, fits in [(None, True), (needed, True), (needed - 1, False), (needed // 10, False)]:
            assert _region.full_reference_fits(model, image, free) is fits


@pytest.mark.parametrize(("top", "left"), CORNERS_AND_BORDERS)
def test_cnn_crops_at_every_border_and_corner_are_those_found_with_memory_and_exact(monkeypatch, caplog, top, left):
    model, image = tiny_sr(), torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(top + left))
    lam = LAM(model)
    with caplog.at_level(logging.DEBUG, logger=REGION_LOG):
        roomy = lam.attribute(image, (top, left, 16), n_steps=4)
        roomy_crops = crops_logged(caplog)
        caplog.clear()
        monkeypatch.setattr(_region, "available_memory", lambda device: FREE)
        scarce = lam.attribute(image, (top, left, 16), n_steps=4)
    assert SCARCE_LOG in caplog.text
    assert crops_logged(caplog) == roomy_crops and len(roomy_crops) == 1
    assert torch.equal(scarce, roomy)
    assert_same_attribution(scarce, lam.attribute(image, (top, left, 16), n_steps=4, crop=False))


@pytest.mark.parametrize(("model", "radius", "scale"), [(tiny_sr(), 3, 4), (dilated_cnn(), 5, 2)])
def test_the_region_of_a_cnn_is_its_receptive_field(scarce, model, radius, scale):
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    window = Window(20 * scale, 22 * scale, 4 * scale, 2 * scale)
    region = Box(20 - radius, 25 + radius, 22 - radius, 25 + radius)
    with torch.enable_grad():
        assert crop_box(model, image, window) == region.grown(4, 48, 48)


@pytest.mark.parametrize("window", [(20, 20, 8), (0, 0, 8)])
def test_a_global_pooling_branch_falls_back_to_the_full_image(scarce, photo_lr, window, caplog):
    model = GlobalPoolingSR().eval()
    with caplog.at_level(logging.DEBUG, logger=REGION_LOG):
        cropped = LAM(model).attribute(photo_lr, window, n_steps=4)
    assert "no crop under 75% of the image" in caplog.text
    assert torch.equal(cropped, LAM(model).attribute(photo_lr, window, n_steps=4, crop=False))


@pytest.mark.parametrize("expose_window_size", [True, False])
@pytest.mark.parametrize("window", [(60, 52, 8), (72, 36, 6), (0, 0, 8), (115, 107, 8)])
def test_window_attention_gets_the_crop_it_gets_with_memory_and_exact(monkeypatch, expose_window_size, window):
    # Aligned to the 4-pixel grid in the middle; at the top left corner the cyclic roll makes the region the
    # whole image, with memory or without.
    model = WindowAttentionSR(expose_window_size=expose_window_size).eval()
    image = torch.rand(1, 3, 62, 58, generator=torch.Generator().manual_seed(2))
    lam = LAM(model)
    with torch.enable_grad():
        roomy = crop_box(model, image, Window.square(*window))
        monkeypatch.setattr(_region, "available_memory", lambda device: FREE)
        box = crop_box(model, image, Window.square(*window))
    assert box == roomy
    assert (box is None) == (window == (0, 0, 8))
    assert box is None or (box.top % 4 == 0 and box.left % 4 == 0 and box.area < 62 * 58 / 2)
    assert_same_attribution(lam.attribute(image, window, n_steps=4),
                            lam.attribute(image, window, n_steps=4, crop=False))


def test_a_gradient_leaving_the_region_on_the_path_widens_the_crop(scarce, caplog):
    test_region.test_gradient_leaving_the_region_on_the_path_widens_the_crop(caplog)
    assert SCARCE_LOG in caplog.text


@pytest.mark.parametrize(("model", "scale"), [(tiny_sr(), 4), (GlobalPoolingSR().eval(), 2)], ids=["cnn", "global"])
def test_many_windows_give_the_numbers_they_get_with_memory(monkeypatch, model, scale):
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(6))
    last = 40 * scale - 13  # the gradient detector reads one pixel past the window
    windows = [(top, left, 12) for top in (0, last // 2, last) for left in (0, last // 2, last)]
    lam = LAM(model)
    roomy = lam.attribute_windows(image, windows, n_steps=4)
    monkeypatch.setattr(_region, "available_memory", lambda device: FREE)
    assert_same_attribution(lam.attribute_windows(image, windows, n_steps=4), roomy)


def test_captums_noise_tunnel_gets_the_numbers_it_gets_with_memory(monkeypatch, photo_lr):
    tunnel = NoiseTunnel(LAM(tiny_sr()))
    arguments = dict(nt_type="smoothgrad", nt_samples=3, stdevs=0.05, window=(40, 36, 16), n_steps=4)
    torch.manual_seed(0)
    roomy = tunnel.attribute(photo_lr, **arguments)
    monkeypatch.setattr(_region, "available_memory", lambda device: FREE)
    torch.manual_seed(0)
    assert_same_attribution(tunnel.attribute(photo_lr, **arguments), roomy)


class CutsTheGraph(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = tiny_sr()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).detach()


def test_a_model_that_cuts_the_graph_gets_the_error_it_gets_with_memory(monkeypatch, photo_lr):
    with pytest.raises(ValueError) as roomy:
        LAM(CutsTheGraph()).attribute(photo_lr, (40, 36, 16), n_steps=2)
    monkeypatch.setattr(_region, "available_memory", lambda device: FREE)
    with pytest.raises(ValueError) as scarce:
        LAM(CutsTheGraph()).attribute(photo_lr, (40, 36, 16), n_steps=2)
    assert str(scarce.value) == str(roomy.value)


@pytest.mark.parametrize("architecture", [PlainCNN, TinyRRDBNet, TinySwinIR], ids=["plain", "rrdb", "swinir"])
def test_the_papers_architectures_get_the_crop_and_numbers_they_get_with_memory(monkeypatch, caplog, architecture):
    torch.manual_seed(0)
    model = architecture().eval()
    image = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    window = (64 * SCALE, 60 * SCALE, 16)
    with caplog.at_level(logging.DEBUG, logger=REGION_LOG):
        roomy = LAM(model).attribute(image, window, n_steps=2)
        roomy_crops = crops_logged(caplog)
        caplog.clear()
        monkeypatch.setattr(_region, "available_memory", lambda device: FREE)
        scarce = LAM(model).attribute(image, window, n_steps=2)
    assert SCARCE_LOG in caplog.text
    assert crops_logged(caplog) == roomy_crops and len(roomy_crops) == 1
    assert torch.equal(scarce, roomy)


@pytest.mark.usefixtures("scarce")
@pytest.mark.parametrize(("model", "side", "window"), [(SkipUNet(), 48, (20, 20, 6)), (SkipUNet(), 48, (0, 40, 6)),
                                                       (PositionEmbeddingSR(), 32, (10, 10, 8))])
def test_a_model_that_refuses_crop_sizes_gets_the_numbers_it_gets_with_memory(model, side, window, monkeypatch):
    image = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(3))
    scarce = LAM(model.eval()).attribute(image, window, n_steps=4)
    monkeypatch.undo()
    assert_same_attribution(scarce, LAM(model).attribute(image, window, n_steps=4, crop=False))
