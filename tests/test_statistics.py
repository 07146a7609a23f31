"""A statistic of the whole image in a model's operations: what sends LAM to the full image before any crop
can agree by chance at both ends of the path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from architectures import PlainCNN, TinyRRDBNet, TinySwinIR
from conftest import tiny_sr
from test_region import GlobalPoolingSR, SkipUNet, WindowAttentionSR
from torch import nn

from lam_captum._core._statistics import Operations, OperationsOf, whole_image_statistic
from lam_captum.models import build_model


def operations(model: nn.Module, images: torch.Tensor) -> Operations:
    with torch.no_grad(), OperationsOf(images) as watch:
        model(images)
    return watch.operations()


def statistic(model: nn.Module, image: torch.Tensor, rows: int = 1) -> str | None:
    """The statistic found between the full image and ``rows`` copies of a crop of about half its area."""
    height, width = image.shape[-2:]
    crops = image[..., 4 : 4 + height * 3 // 4, 4 : 4 + width * 3 // 4].expand(rows, -1, -1, -1).contiguous()
    return whole_image_statistic(operations(model, image), operations(model, crops))


class PadsWhenNeeded(nn.Module):
    """Pads to a multiple of 8 only where the side is not one: the passes differ by an operation."""

    def __init__(self) -> None:
        super().__init__()
        self.body = tiny_sr(scale=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % 8 or width % 8:
            x = F.pad(x, (0, -width % 8, 0, -height % 8), mode="reflect")
        return self.body(x)[..., : 2 * height, : 2 * width]


class Normalised(nn.Module):
    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.first, self.norm, self.last = nn.Conv2d(3, 8, 3, padding=1), norm, nn.Conv2d(8, 12, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.last(self.norm(self.first(x))), 2)


class CachesTheMaximum(nn.Module):
    """Writes a detached maximum into a buffer of its own, in place, and scales by it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = tiny_sr(scale=2)
        self.register_buffer("peak", torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.peak.copy_(x.detach().amax())
        return self.body(x) * self.peak


@pytest.mark.parametrize("model", [
    lambda: tiny_sr(), lambda: PlainCNN(), lambda: TinyRRDBNet(), lambda: TinySwinIR(), lambda: WindowAttentionSR(),
    lambda: SkipUNet(), lambda: PadsWhenNeeded(), lambda: build_model("default"),
    lambda: build_model("edsr-baseline"), lambda: Normalised(nn.BatchNorm2d(8)).eval(),
], ids=["tiny", "plain-cnn", "rrdb", "swin", "window-attention", "u-net", "pads-when-needed", "built-in",
        "edsr-baseline", "batch-norm-eval"])
@pytest.mark.parametrize("rows", [1, 3])
def test_local_models_compute_no_statistic_of_the_whole_image(model, rows):
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    assert statistic(model().eval(), image, rows) is None


@pytest.mark.parametrize(("model", "operation"), [
    (GlobalPoolingSR, "aten.mean.dim gives 8 values"),
    (lambda: Normalised(nn.GroupNorm(2, 8)), "aten.native_group_norm.default gives 2 values"),
    (lambda: Normalised(nn.InstanceNorm2d(8)), "aten.native_batch_norm.default gives 8 values"),
    (lambda: Normalised(nn.BatchNorm2d(8)).train(), "aten.native_batch_norm.default gives 8 values"),
    (CachesTheMaximum, "aten.amax.default gives 1 value"),
], ids=["channel-attention", "group-norm", "instance-norm", "batch-norm-training", "cached-in-place"])
@pytest.mark.parametrize("rows", [1, 3])
def test_a_statistic_of_the_whole_image_is_named(model, operation, rows):
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    said = statistic(model(), image, rows)
    assert said is not None and said.startswith(operation)


def test_an_in_place_write_of_the_image_marks_what_it_writes():
    image = torch.rand(1, 1, 8, 8)
    buffer = torch.zeros(1)
    with OperationsOf(image) as watch:
        buffer.copy_(image.amax())
        (buffer * 2).sum()
    assert watch.operations().names == ("aten.amax.default", "aten.copy_.default", "aten.mul.Tensor",
                                        "aten.sum.default")


def test_operations_on_the_weights_alone_are_not_recorded():
    model = nn.Conv2d(1, 1, 3, padding=1)
    image = torch.rand(1, 1, 8, 8)
    with OperationsOf(image) as watch:
        model.weight.detach().abs().sum()
        model(image)
    assert watch.operations().names == ("aten.convolution.default",)


def test_passes_that_differ_by_an_operation_are_lined_up():
    names = ("aten.convolution.default", "aten.relu.default", "aten.amax.default")
    full = Operations(names, (64, 64, 1), rows=1)
    padded = ("aten.reflection_pad2d.default", *names)
    said = "aten.amax.default gives 1 value per image on the full image and on a crop"
    assert whole_image_statistic(full, Operations(padded, (49, 36, 36, 1), rows=1)) == said
    assert whole_image_statistic(full, Operations(padded, (98, 72, 72, 2), rows=2)) == said
    local = Operations(names, (64, 64, 16), rows=1)
    assert whole_image_statistic(local, Operations(padded, (98, 72, 72, 18), rows=2)) is None
