"""A statistic of the whole image in a model's operations: what sends LAM to the full image before any crop
can agree by chance at both ends of the path."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from architectures import PlainCNN, TinyRRDBNet, TinySwinIR
from conftest import tiny_sr
from test_region import GlobalPoolingSR, SkipUNet, WindowAttentionSR
from torch import nn

from lam_captum import LAM
from lam_captum._core._statistics import Operation, Operations, OperationsOf, whole_image_statistic
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


class LoopsOverImages(nn.Module):
    """Runs one image at a time and stacks the results: 3 crops of the stack hold about what the image does."""

    def __init__(self) -> None:
        super().__init__()
        self.body = tiny_sr(scale=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.body(image[None]) for image in x])


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
    lambda: build_model("edsr-baseline"), lambda: Normalised(nn.BatchNorm2d(8)).eval(), lambda: LoopsOverImages(),
], ids=["tiny", "plain-cnn", "rrdb", "swin", "window-attention", "u-net", "pads-when-needed", "built-in",
        "edsr-baseline", "batch-norm-eval", "loops-over-images"])
@pytest.mark.parametrize("rows", [1, 3])
def test_local_models_compute_no_statistic_of_the_whole_image(model, rows):
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    assert statistic(model().eval(), image, rows) is None


@pytest.mark.parametrize(("model", "said"), [
    (GlobalPoolingSR, "aten.mean combines values along dimensions of (48, 48) on the full image and of (36, 36)"),
    (lambda: Normalised(nn.GroupNorm(2, 8)), "aten.native_group_norm gives 2 values per image"),
    (lambda: Normalised(nn.InstanceNorm2d(8)), "aten.native_batch_norm gives 8 values per image"),
    (CachesTheMaximum, "aten.amax combines values along dimensions of (1, 3, 48, 48)"),
    (lambda: Reads(lambda x: x.amax(dim=-1, keepdim=True)), "aten.amax combines values along dimensions of (48,)"),
    (lambda: Reads(lambda x: x.sort(dim=-2).values), "aten.sort combines values along dimensions of (48,)"),
    (lambda: Reads(lambda x: x.cummax(dim=-1).values), "aten.cummax combines values along dimensions of (48,)"),
    (lambda: Reads(lambda x: x * (x[:, :1, :1, :1] > 0.5)), "aten.slice gives 1 value per image"),
    (lambda: Reads(buffer_maximum), "aten.amax combines values along dimensions of (1, 3, 52, 52)"),
    (lambda: Reads(lambda x: torch.bincount((x * 255).long().flatten(), minlength=256)),
     "aten.bincount combines values along dimensions of"),
    (lambda: Reads(lambda x: F.interpolate(x, size=(16, 16))), "aten.upsample_nearest2d gives 768 values per image"),
    (lambda: Reads(lambda x: F.pad(x, (0, -x.shape[-1] % 64, 0, -x.shape[-2] % 64))),
     "aten.constant_pad_nd brings a crop to the full image's size (12288 values per image)"),
], ids=["channel-attention", "group-norm", "instance-norm", "cached-in-place", "row-maximum", "sorted-columns",
        "running-maximum-along-rows", "a-pixel-at-a-fixed-place", "buffer-maximum", "histogram",
        "fixed-size-resize", "padded-to-the-same-size"])
@pytest.mark.parametrize("rows", [1, 3])
def test_a_statistic_of_the_whole_image_is_named(model, said, rows):
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    found = statistic(model(), image, rows)
    assert found is not None and found.startswith(said)


class Reads(nn.Module):
    """The tiny model, its output scaled by what ``reading`` makes of the image (then by 1)."""

    def __init__(self, reading) -> None:
        super().__init__()
        self.reading, self.body = reading, tiny_sr(scale=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * (1 + 0 * self.reading(x.detach()).sum())


def buffer_maximum(x: torch.Tensor) -> torch.Tensor:
    """The maximum of the image copied into a larger zero buffer made apart from it."""
    buffer = torch.zeros(x.shape[0], x.shape[1], x.shape[2] + 4, x.shape[3] + 4)
    buffer[..., 2:-2, 2:-2] = x
    return buffer.amax()


def test_an_in_place_write_of_the_image_marks_what_it_writes():
    image = torch.rand(1, 1, 8, 8)
    buffer = torch.zeros(1)
    with OperationsOf(image) as watch:
        buffer.copy_(image.amax())
        (buffer * 2).sum()
    assert watch.operations().names == ("aten.amax", "aten.copy_", "aten.mul", "aten.sum")


def test_operations_on_the_weights_alone_are_not_recorded():
    model = nn.Conv2d(1, 1, 3, padding=1)
    image = torch.rand(1, 1, 8, 8)
    with OperationsOf(image) as watch:
        model.weight.detach().abs().sum()
        model(image)
    assert watch.operations().names == ("aten.convolution",)


def test_values_made_from_the_images_shape_alone_do_not_count():
    with OperationsOf(image := torch.rand(1, 3, 8, 8)) as watch:
        torch._shape_as_tensor(image)
        image.new_zeros(3) + image.new_ones(3).sum()
        torch.zeros_like(image)
    assert watch.operations().done == ()


CONVOLUTION, RELU, PAD = "aten.convolution", "aten.relu", "aten.reflection_pad2d"


def test_passes_that_differ_by_an_operation_are_lined_up():
    full = Operations((Operation(CONVOLUTION, 512, 192), Operation(RELU, 512, 512),
                       Operation("aten.amax", 1, 512, (8, 8, 8))), rows=1)
    padded = Operations((Operation(PAD, 147, 75), Operation(CONVOLUTION, 392, 147), Operation(RELU, 392, 392),
                         Operation("aten.amax", 1, 392, (8, 7, 7))), rows=1)
    assert whole_image_statistic(full, padded).startswith("aten.amax combines values along dimensions of (8, 8, 8)")
    local = Operations(full.done[:2], rows=1)
    assert whole_image_statistic(local, Operations(padded.done[:3], rows=1)) is None


def test_stacked_crops_as_large_as_the_image_together_are_no_statistic():
    # 4 crops of 32x32 hold as many values as the 64x64 image: compared per image, they are a quarter of it.
    full = Operations((Operation(CONVOLUTION, 64 * 64 * 8, 64 * 64 * 3),), rows=1)
    crops = Operations((Operation(CONVOLUTION, 4 * 32 * 32 * 8, 4 * 32 * 32 * 3),), rows=4)
    assert whole_image_statistic(full, crops) is None


def test_passes_too_different_to_line_up_refuse_the_crop():
    full = Operations(tuple(Operation(f"aten.op{k}", 64, 64) for k in range(4100)), rows=1)
    crops = Operations(tuple(Operation(f"aten.other{k}", 36, 36) for k in range(4100)), rows=1)
    assert whole_image_statistic(full, crops) == ("it runs other operations on a crop than on the full image "
                                                  "(4100 and 4100)")


class TakesAnotherPathWithoutGradients(nn.Module):
    """Runs other operations with gradients than without them, as nn.MultiheadAttention's fast path does."""

    def __init__(self) -> None:
        super().__init__()
        self.body = tiny_sr(scale=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) if torch.is_grad_enabled() else self.body(x.clone()).clone()


def test_the_passes_compared_both_run_without_gradients(monkeypatch, caplog):
    from lam_captum._core import _statistics

    def no_lining_up(*args, **kwargs):
        raise AssertionError("the passes should have the same operations")

    monkeypatch.setattr(_statistics.difflib, "SequenceMatcher", no_lining_up)
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.DEBUG, logger="lam_captum._core._region"):
        LAM(TakesAnotherPathWithoutGradients()).attribute(image, (40, 40, 8), n_steps=2)
    assert "crop at rows" in caplog.text


def test_stacked_crops_of_a_model_that_runs_one_image_at_a_time_are_no_statistic():
    # A GPU stacks crops of one shape: 4 crops of 32x32 hold as many values as the 64x64 image, and the model's
    # stack of its 4 results as many as its result on the image.
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    crops = torch.cat([image[..., :32, :32], image[..., 32:, :32], image[..., :32, 32:], image[..., 32:, 32:]])
    model = LoopsOverImages()
    assert whole_image_statistic(operations(model, image), operations(model, crops)) is None


def test_integer_bookkeeping_of_a_size_of_its_own_is_no_statistic():
    # A GPU's attention kernels return a random seed and offset (integers) even without dropout.
    attention = "aten._scaled_dot_product_efficient_attention"
    full = Operations((Operation(attention, 4096, 4096), Operation(attention, 1, 4096, values=False)), rows=1)
    crops = Operations((Operation(attention, 1600, 1600), Operation(attention, 1, 1600, values=False)), rows=1)
    assert whole_image_statistic(full, crops) is None
