"""Compute only where the window can look: the input region that influences it, and a crop that holds it.

LAM's attribution is zero wherever the window's detector does not depend on the input. For a local network
(a CNN of bounded receptive field) that leaves a small region around the window, and LAM on a crop that
holds the region plus the blur kernel's radius gives the full image's attribution: the blurred path images
agree on the region (the crop's own reflect-101 border only changes the outer ring), and the model's
padding at the crop's edge lies beyond the receptive field.

Nothing of this is assumed of the model. One pass over the full image at the input finds the region (the
support of the input gradient of a random projection of the detector's output pixels, which is zero only
where the window cannot look, not by accident) and is the reference every crop is checked against: the
window's output pixels and that input gradient must agree between crop and full image. The window's output
pixels must also agree at the path's other end, the baseline (one forward pass of the full image without
gradients): what the window sees can change along the path (a global maximum moving from a highlight near the
window to an area far away as the highlight blurs, units switched on in the dark by light blurred into it),
and the input alone does not show it. What the window sees only in the middle of the path, outside the crop,
escapes both: a model that computes a statistic of the whole image, where that is most likely (a detached
maximum crossing a threshold mid-path), gets the full image (:mod:`~lam_captum._core._statistics`, from the
operations of those forward passes); a local model whose units reach beyond the crop only mid-path escapes
(the README says so). Crops are tried
from the smallest, then aligned to partition grids (window attention pads and partitions on a fixed grid)
and widened; if none agrees the full image is used. While LAM runs on the crop, every path point's input
gradient must stay inside the region; if it leaves it, the region is widened and the crop recomputed.

Where that pass over the full image, with gradients, would not fit in the free memory (a 4000x4000 HR photo), the
full image runs forward only, without gradients, and the input gradient comes from crops around the window,
grown until their output pixels equal the full image's and their gradient keeps clear of the sides where they
cut the image: the memory of a forward pass, not of a LAM step, over the full image.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Literal, Protocol, TypeVar

import torch
from torch import Tensor

from lam_captum._core._context import modules_behind
from lam_captum._core._memory import available_memory, estimate_call_memory, warn_if_forward_too_large
from lam_captum._core._statistics import Operations, OperationsOf, whole_image_statistic
from lam_captum._core.settings import LAMSettings
from lam_captum.functional._blur import blur_baseline
from lam_captum.functional._detectors import Detector, gradient_detector, intensity_detector
from lam_captum.functional._window import Window

CropMode = Literal["auto", False]
Result = TypeVar("Result")

_log = logging.getLogger(__name__)

# Above this share of the image a crop saves too little to be worth its checks.
_MAX_CROP_FRACTION = 0.75
# The crop's ring around the region, where a gradient that leaves the region shows, is at least this wide.
_MIN_RING = 2
# Partition grids tried after the model's own `window_size` (SwinIR, HAT): multiples of the usual sizes.
_GRIDS = (8, 16, 32, 64)
_MAX_WIDENINGS = 2
# Where the full image's forward and backward pass does not fit in the free memory, a window's gradient comes
# from crops (`_gradient_from_crops`): the first is the window's LR pixels and this many more on every side.
_PROBE_MARGIN = 4
# Windows share a backward pass of the full-image reference only where their predicted regions lie at least
# this many pixels apart: a region that reaches further than predicted shows in the gap.
_REFERENCE_GAP = 2
# Agreement between crop and full image, relative to the largest magnitude compared: float rounding of
# the same sums in another order stays far below, a padding or global effect far above.
_RELATIVE_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-6}
_DEFAULT_TOLERANCE = 1e-6
# On a GPU the convolution kernels' rounding (Winograd, FFT) leaves noise where the exact gradient is zero:
# there the support of a gradient is where it stands above this share of its peak. Measured on an H100
# (benchmarks/README.md, run 4): at 1e-8 the noise made every region the whole image; 1e-7 gave crops a few
# pixels wider than 1e-6 for the same time, and 1e-6 once gave a crop 43 pixels wide that was 8.5e-5 (of
# the maximum) off the full image. (LAM turns TF32 off on GPUs, see `gradient_context`: in TF32 a crop and the
# full image agree to about 1e-3 of the maximum only.)
_GPU_SUPPORT_FLOOR = {torch.float64: 1e-14, torch.float32: 1e-7}
# On a GPU each new input shape costs every convolution a new cuDNN plan, built and cached per shape by
# PyTorch's cuDNN API. On the small crops LAM computes on, that can cost more than the computation: in the
# H100's run 3 (benchmarks/README.md) one window of the default model on its crop of about 47x47 took
# 0.078-0.081 s, on the full 128x128 image 0.072-0.076 s: seven times the pixels. Crops there are grown to sides
# that are multiples of this many pixels, and windows at a border get the size of one in the middle, so that
# the windows of an image, and the images of a study, share a few shapes (not yet timed on a GPU:
# benchmarks/gpu_check.sh compares). A CPU pays for every pixel and not for shapes (the default model's step
# took 31-33 ms on 20 new shapes of 40-44 pixels, 40 ms on one 48x48 shape), so its crops stay as small as
# they can.
_GPU_CROP_QUANTUM = 8


def relative_tolerance(values: Tensor) -> float:
    """How closely two computations of ``values`` agree, relative to their largest magnitude: float rounding
    of the same sums in another order."""
    return _RELATIVE_TOLERANCE.get(values.dtype, _DEFAULT_TOLERANCE)


def significant(values: Tensor) -> Tensor:
    """Where ``values`` are not zero (or not finite): exactly nonzero on a CPU, above the kernels' rounding
    noise (a share of the largest magnitude) on a GPU.

    Example:
        >>> significant(torch.tensor([0.0, 1e-9, float("nan")])).tolist()
        [False, True, True]
    """
    if values.device.type == "cpu":
        return values != 0
    finite = torch.isfinite(values)
    peak = torch.where(finite, values.abs(), torch.zeros_like(values)).amax()
    return (values.abs() > _GPU_SUPPORT_FLOOR.get(values.dtype, _DEFAULT_TOLERANCE) * peak) | ~finite


def check_crop(crop: object) -> None:
    """Raise unless ``crop`` is ``"auto"`` or ``False``.

    Example:
        >>> check_crop("auto")
    """
    if crop is not False and crop != "auto":
        raise ValueError(f"`crop` must be 'auto' (compute on the smallest verified crop) or False, got {crop!r}")


@dataclasses.dataclass(frozen=True)
class Box:
    """Rows ``top:bottom`` and columns ``left:right`` (half-open) of an image, in pixels.

    Example:
        >>> Box(2, 6, 0, 3).grown(2, 10, 10)
        Box(top=0, bottom=8, left=0, right=5)
    """

    top: int
    bottom: int
    left: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def area(self) -> int:
        return self.height * self.width

    @classmethod
    def of_window(cls, window: Window, extra: int = 0) -> Box:
        """The window's pixels and ``extra`` rows below and columns to the right of it."""
        return cls(window.top, window.top + window.height + extra, window.left, window.left + window.width + extra)

    @classmethod
    def of_support(cls, values: Tensor) -> Box | None:
        """The bounding box of the nonzero (or non-finite) pixels of ``(..., H, W)`` values; None if all zero.

        Values are a boolean mask, or numbers whose support is :func:`significant`.
        """
        support = (values if values.dtype == torch.bool else significant(values)).reshape(-1, *values.shape[-2:])
        support = support.any(dim=0)
        rows, cols = support.any(dim=1).nonzero(), support.any(dim=0).nonzero()
        if rows.numel() == 0:
            return None
        return cls(int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)

    def intersects(self, other: Box) -> bool:
        return (self.top < other.bottom and other.top < self.bottom
                and self.left < other.right and other.left < self.right)

    def union(self, other: Box) -> Box:
        return Box(min(self.top, other.top), max(self.bottom, other.bottom),
                   min(self.left, other.left), max(self.right, other.right))

    def contains(self, other: Box) -> bool:
        return (self.top <= other.top and other.bottom <= self.bottom
                and self.left <= other.left and other.right <= self.right)

    def shifted(self, rows: int, cols: int) -> Box:
        return Box(self.top + rows, self.bottom + rows, self.left + cols, self.right + cols)

    def scaled(self, scale: int) -> Box:
        return Box(self.top * scale, self.bottom * scale, self.left * scale, self.right * scale)

    def grown(self, margin: int, height: int, width: int) -> Box:
        """``margin`` more pixels on every side, clipped to a ``height`` x ``width`` image."""
        return Box(max(0, self.top - margin), min(height, self.bottom + margin),
                   max(0, self.left - margin), min(width, self.right + margin))

    def widened(self, margin: int) -> Box:
        """``margin`` more pixels on every side, as if the image went on (:meth:`grown` clips to it)."""
        return Box(self.top - margin, self.bottom + margin, self.left - margin, self.right + margin)

    def padded_to(self, quantum: int, height: int, width: int) -> Box:
        """The box grown about its centre to sides that are multiples of ``quantum`` (or the image's side),
        moved inward where it would leave a ``height`` x ``width`` image; it holds the part of this box
        that lies in the image.

        Example:
            >>> Box(3, 8, 0, 5).padded_to(8, 10, 20)
            Box(top=2, bottom=10, left=0, right=8)
        """

        def side(start: int, end: int, limit: int) -> tuple[int, int]:
            size = min(limit, -(-(end - start) // quantum) * quantum)
            first = min(max(0, start - (size - (end - start)) // 2), limit - size)
            return first, first + size

        return Box(*side(self.top, self.bottom, height), *side(self.left, self.right, width))

    def aligned(self, grid: int, height: int, width: int) -> Box:
        """The smallest box on multiples of ``grid`` that holds this one, clipped to the image."""
        return Box(self.top // grid * grid, min(height, -(-self.bottom // grid) * grid),
                   self.left // grid * grid, min(width, -(-self.right // grid) * grid))


@dataclasses.dataclass(frozen=True)
class Crop:
    """A box of the LR input and the model's scale: cuts inputs and shifts windows into the crop."""

    box: Box
    scale: int

    def cut(self, images: Tensor) -> Tensor:
        return images[(..., *self.box.slices())]

    def window(self, window: Window) -> Window:
        """``window`` (SR pixels of the full output) in SR pixels of the crop's output."""
        return window._replace(top=window.top - self.box.top * self.scale, left=window.left - self.box.left * self.scale)

    def place(self, values: Tensor, height: int, width: int) -> Tensor:
        """``values`` of the crop in a zero-filled tensor of the full ``height`` x ``width`` size."""
        full = values.new_zeros((*values.shape[:-2], height, width))
        full[(..., *self.box.slices())] = values
        return full


def detector_footprint(window: Window, detector: Detector) -> Box | None:
    """The SR-output pixels a built-in detector reads for ``window``; None for a user's detector.

    Example:
        >>> detector_footprint(Window(4, 8, 16, 16), gradient_detector)
        Box(top=4, bottom=21, left=8, right=25)
    """
    if detector is gradient_detector:
        return Box.of_window(window, extra=1)
    if detector is intensity_detector:
        return Box.of_window(window)
    return None


@dataclasses.dataclass(frozen=True)
class PathBlur:
    """The path's blur: its kernel's radius is the crop's margin around the region, and its baseline (the most
    blurred point of the path) is where crops are checked against the full image besides the input."""

    sigma: float
    kernel_size: int

    @classmethod
    def of(cls, settings: LAMSettings) -> PathBlur:
        """The blur of a LAM run's settings."""
        return cls(settings.sigma, settings.kernel_size)

    @property
    def margin(self) -> int:
        return crop_margin(self.kernel_size)

    def baseline(self, images: Tensor) -> Tensor:
        return blur_baseline(images, self.sigma, self.kernel_size)


@dataclasses.dataclass(frozen=True)
class Reference:
    """The full image for some footprints: its output on each footprint at the input and at the path's baseline,
    the weights of a random projection there, and the projection's input gradient at the input (the whole LR
    image). Only the footprints' pixels of the SR output are kept, so that the references of many windows of a
    large image hold little memory. ``operations``: those of the forward pass at the baseline, which a crop's are
    compared with (:func:`~lam_captum._core._statistics.whole_image_statistic`)."""

    outputs: list[Tensor]
    weights: list[Tensor]
    gradient: Tensor
    footprints: list[Box]
    scale: int
    baseline_outputs: list[Tensor]
    blur: PathBlur
    operations: Operations | None = None

    def projection(self, area: Box) -> Tensor:
        """The projection on the SR-output pixels of ``area``, which holds every footprint; zero elsewhere."""
        return _projection(self.weights, self.footprints, area)


def _projection(weights: list[Tensor], footprints: list[Box], area: Box) -> Tensor:
    first = weights[0]
    projection = first.new_zeros((*first.shape[:2], area.height, area.width))
    for values, footprint in zip(weights, footprints):
        projection[(..., *footprint.shifted(-area.top, -area.left).slices())] += values
    return projection


class GradientWatch:
    """Checks that every input gradient LAM computes on a crop stays inside the region (crop pixels)."""

    def __init__(self, region: Box, height: int, width: int) -> None:
        self.outside = torch.ones(height, width, dtype=torch.bool)
        self.outside[region.slices()] = False
        self.escaped: Box | None = None
        self.seen = 0

    def inspect(self, gradients: Tensor) -> None:
        """Record where ``(..., H, W)`` gradients are nonzero outside the region."""
        self.seen += 1
        escaped = Box.of_support(significant(gradients) & self.outside.to(gradients.device))
        if escaped is not None:
            self.escaped = escaped if self.escaped is None else self.escaped.union(escaped)

    def held(self) -> bool:
        return self.seen > 0 and self.escaped is None


class RowsIntegrate(Protocol):
    """LAM of every row of ``inputs`` (an image or a crop of one) with its window, the rows stacked into the
    same model calls; ``inspect(row, gradients)`` sees each row's input gradients, ``labels`` name the rows in
    warnings (default their indices)."""

    def __call__(self, inputs: Tensor, windows: list[Window], inspect: Callable[[int, Tensor], None] | None = None,
                 labels: list[int] | None = None) -> Tensor: ...

    def rows_per_call(self, inputs: Tensor) -> int:
        """Rows of ``inputs``' shape one model call may take (the memory budget of a path step)."""
        ...


class _WholeImage(Exception):
    """The model computes a statistic of the whole image, or its operations cannot tell (the message says which:
    :func:`whole_image_statistic`): no crop of any size can be trusted, though one may agree with the full image
    at both ends of the path."""


def compute_in_crop(
    forward_func: Callable[[Tensor], Tensor],
    image: Tensor,
    footprints: list[Box],
    blur: PathBlur,
    compute: Callable[[GradientWatch, Crop], Result],
    reference: Reference | None = None,
    region: Box | None = None,
) -> tuple[Crop, Result] | None:
    """Run ``compute(watch, crop)`` on the smallest crop of ``image`` verified to reproduce the full image.

    Args:
        forward_func: The model.
        image: ``(1, C, H, W)`` input.
        footprints: The SR-output pixels the detectors read.
        blur: The path's blur (its kernel's radius is the crop's margin around the region).
        compute: Runs LAM on ``crop.cut(image)``, passing every input gradient to ``watch.inspect``.
        reference: The full image's pass for these footprints, if already made (:func:`window_references`).
        region: The region to start from (default the reference's), when one was found too small on the path.

    Returns:
        The crop and what ``compute`` returned, or None where the full image must be used.
    """
    if reference is None:
        references = window_references(forward_func, image, footprints, blur)
        reference = None if references is None else merged_reference(references)
    if region is None and reference is not None:
        region = region_of(reference)
    if reference is None or region is None:
        _log.debug("LAM on the full image: the model's output or input gradient cannot be probed")
        return None
    for _ in range(_MAX_WIDENINGS + 1):
        try:
            box = _verified_crop(forward_func, image, reference, region, blur.margin)
        except _WholeImage as statistic:
            _log_whole_image(statistic)
            return None
        if box is None:
            return None
        crop = Crop(box, reference.scale)
        watch = GradientWatch(region.shifted(-box.top, -box.left), box.height, box.width)
        result = compute(watch, crop)
        if watch.held():
            _log_crop(box, *image.shape[-2:])
            return crop, result
        if watch.escaped is None:
            _log.debug("LAM on the full image: the input gradients on the crop could not be watched")
            return None
        region = _widened_on_the_path(region, watch.escaped, box)
    _log.debug("LAM on the full image: the region kept growing along the path")
    return None


def _log_crop(box: Box, height: int, width: int) -> None:
    _log.debug("LAM on the %dx%d crop at rows %d:%d, columns %d:%d of the %dx%d input", box.height, box.width,
               box.top, box.bottom, box.left, box.right, height, width)


def _log_whole_image(statistic: Exception) -> None:
    _log.debug("LAM on the full image: in the model's operations, %s: a crop may see less than the full image "
               "anywhere along the path", statistic)


def _widened_on_the_path(region: Box, escaped: Box, box: Box) -> Box:
    """The region and where the input gradient left it on the path (``escaped``, pixels of the crop ``box``)."""
    widened = region.union(escaped.shifted(box.top, box.left))
    _log.debug("the input gradient left the region on the path; widening it to %s", widened)
    return widened


def attribute_stacked(
    forward_func: Callable[[Tensor], Tensor],
    images: Tensor,
    windows: list[Window],
    references: list[Reference | None],
    blur: PathBlur,
    integrate: RowsIntegrate,
    stack: bool,
) -> tuple[Tensor, list[int]]:
    """Each row's window on its own verified crop of the row's image; with ``stack``, crops of one shape stacked
    into the same model calls, and checked together.

    The crops are found and checked as in :func:`compute_in_crop`, then the crops of a shape are integrated in
    one run of ``integrate`` (or one run each), each row's input gradients watched against its own region. A
    row whose gradient leaves its region on the path is redone alone on a wider crop (:func:`compute_in_crop`).

    Args:
        forward_func: The model.
        images: ``(N, C, H, W)``: one row per window (for K windows of one image, the image expanded K times).
        windows: One window per row.
        references: Each row's full-image reference (:func:`window_references`), None where there is none.
        blur: The path's blur.
        integrate: LAM on stacked crops.
        stack: Whether crops of one shape share runs and checks (:func:`stacks_crops`).

    Returns:
        The attribution, shape of ``images``, zero in the rows left for the full image, and those rows.
    """
    height, width = images.shape[-2:]
    attribution = images.new_zeros(images.shape)
    regions = [None if reference is None else region_of(reference) for reference in references]
    if any(reference is not None and region is None for reference, region in zip(references, regions)):
        _log.debug("LAM on the full image: the window's input gradient is zero on the full image")
    runs: dict[tuple[int, int], list[tuple[int, Crop, Box]]] = {}
    uncropped = []
    try:
        boxes = _verified_crops(forward_func, images, references, regions, blur.margin,
                                integrate.rows_per_call if stack else None)
    except _WholeImage as statistic:
        _log_whole_image(statistic)
        boxes = [None] * len(references)
    for n, box in enumerate(boxes):
        reference, region = references[n], regions[n]
        if box is None or reference is None or region is None:
            uncropped.append(n)
            continue
        run = (box.height, box.width) if stack else (-1, n)  # a run per crop shape, or per row
        runs.setdefault(run, []).append((n, Crop(box, reference.scale), region))
    for members in runs.values():
        watches = [GradientWatch(region.shifted(-crop.box.top, -crop.box.left), crop.box.height, crop.box.width)
                   for _, crop, region in members]
        values = integrate(torch.cat([crop.cut(images[n : n + 1]) for n, crop, _ in members]),
                           [crop.window(windows[n]) for n, crop, _ in members],
                           lambda m, gradients: watches[m].inspect(gradients), [n for n, _, _ in members])
        for (n, crop, region), watch, value in zip(members, watches, values):
            if watch.held():
                _log_crop(crop.box, height, width)
                attribution[n] = crop.place(value, height, width)
                continue

            def alone(watch: GradientWatch, crop: Crop, n: int = n) -> Tensor:
                return integrate(crop.cut(images[n : n + 1]), [crop.window(windows[n])],
                                 lambda _, gradients: watch.inspect(gradients), [n])[0]

            reference = references[n]
            if watch.escaped is None or reference is None:
                outcome = None
                _log.debug("LAM on the full image: the input gradients on the crop could not be watched")
            else:
                outcome = compute_in_crop(forward_func, images[n : n + 1], reference.footprints, blur, alone,
                                          reference, _widened_on_the_path(region, watch.escaped, crop.box))
            if outcome is None:
                uncropped.append(n)
                continue
            wider, values_alone = outcome
            attribution[n] = wider.place(values_alone, height, width)
    return attribution, sorted(uncropped)


def crop_shapes(forward_func: Callable[[Tensor], Tensor], image: Tensor, references: list[Reference],
                regions: list[Box | None], blur: PathBlur) -> int:
    """How many runs the windows' own crops would make stacked: their first candidates' distinct shapes, the full
    image counting as one (for windows without a region, or whose crop would be most of the image)."""
    shapes = set()
    for reference, region in zip(references, regions):
        first = None if region is None else _first_crop(forward_func, image, reference, region, blur.margin)
        shapes.add(tuple(image.shape[-2:]) if first is None else (first.height, first.width))
    return len(shapes)


def _first_crop(forward_func: Callable[[Tensor], Tensor], image: Tensor, reference: Reference, region: Box,
                margin: int) -> Box | None:
    """The first candidate crop (:func:`_candidates`), None where it would be most of the image."""
    first = next(_candidates(forward_func, image, reference, region, margin))
    return first if first.area <= _MAX_CROP_FRACTION * image.shape[-2] * image.shape[-1] else None


def _verified_crops(forward_func: Callable[[Tensor], Tensor], images: Tensor, references: list[Reference | None],
                    regions: list[Box | None], margin: int,
                    rows_per_call: Callable[[Tensor], int] | None) -> list[Box | None]:
    """Each row's smallest verified crop (:func:`_verified_crop`), None where the full image must be used.

    With ``rows_per_call`` (stacked crops) the rows' first candidates of one shape are checked together, as many
    per forward and backward pass (:func:`_agree_rows`) as ``rows_per_call(crops)`` allows (a check of a crop
    takes the memory of a path step on it); a row whose first candidate fails goes on to the others alone.
    """
    boxes: list[Box | None] = [None] * len(references)
    tried: list[Box | None] = [None] * len(references)
    if rows_per_call is not None:
        firsts: dict[tuple[int, int], list[tuple[int, Box]]] = {}
        for n, (reference, region) in enumerate(zip(references, regions)):
            first = None
            if reference is not None and region is not None:
                first = _first_crop(forward_func, images[n : n + 1], reference, region, margin)
            if first is not None:
                firsts.setdefault((first.height, first.width), []).append((n, first))
        for shape in firsts.values():
            row, first = shape[0]
            chunk = max(1, rows_per_call(images[row : row + 1][(..., *first.slices())]))
            for members in (shape[start : start + chunk] for start in range(0, len(shape), chunk)):
                agree = _agree_rows(forward_func, [images[n : n + 1] for n, _ in members],
                                    [references[n] for n, _ in members], [box for _, box in members])
                for (n, box), agrees in zip(members, agree):
                    if agrees:
                        boxes[n] = box
                    else:
                        tried[n] = box
                        _log_refused(box)
    for n, (reference, region) in enumerate(zip(references, regions)):
        if boxes[n] is None and reference is not None and region is not None:
            boxes[n] = _verified_crop(forward_func, images[n : n + 1], reference, region, margin, tried[n])
    return boxes


def window_references(
    forward_func: Callable[[Tensor], Tensor], image: Tensor, footprints: list[Box], blur: PathBlur
) -> list[Reference] | None:
    """One full-image reference per footprint, from one forward pass and one backward pass per footprint, or
    fewer (:func:`_reference_gradients`); where that pass would not fit in the free memory, from a forward pass
    without gradients and crops (:func:`_references_from_crops`). Then one forward pass without gradients at the
    path's baseline (``blur``) gives the footprints' outputs there.

    Each footprint gets a random projection of its own, so each reference's gradient is zero exactly where
    that window cannot look. The projections and gradients are linear in the footprints: the reference of a
    group of windows is :func:`merged_reference` of theirs, with no further pass over the full image.
    None where the model's output or input gradient cannot be probed.
    """
    available = available_memory(image.device)
    if not full_reference_fits(forward_func, image, available):
        references = _references_from_crops(forward_func, image, footprints, available, blur)
    else:
        references = _references_with_gradients(forward_func, image, footprints, blur)
    return None if references is None else _with_baseline_outputs(forward_func, image, references)


def _references_with_gradients(forward_func: Callable[[Tensor], Tensor], image: Tensor, footprints: list[Box],
                               blur: PathBlur) -> list[Reference] | None:
    """:func:`window_references` at the input, from one pass of the full image with gradients."""
    point = image.detach().clone().requires_grad_(True)
    output = forward_func(point)
    found = _footprint_outputs(output, point, footprints)
    if found is None or not output.requires_grad:
        return None
    scale, outputs, weights = found
    whole = Box(0, output.shape[-2], 0, output.shape[-1])

    def projection(windows: list[int]) -> Tensor:
        return _projection([weights[k] for k in windows], [footprints[k] for k in windows], whole)

    gradients = _reference_gradients(output, point, projection, [_lr_pixels([f], scale) for f in footprints])
    if gradients is None:
        return None
    return [Reference([expected], [values], gradient, [footprint], scale, [], blur)
            for expected, values, gradient, footprint in zip(outputs, weights, gradients, footprints)]


def _with_baseline_outputs(forward_func: Callable[[Tensor], Tensor], image: Tensor,
                           references: list[Reference]) -> list[Reference] | None:
    """The references with the full image's output on their footprints at the path's baseline, from one forward
    pass without gradients; None where that output is not a finite SR image of the same scale."""
    baseline = references[0].blur.baseline(image.detach())
    with torch.no_grad(), OperationsOf(baseline) as watch:
        output = forward_func(baseline)
    if _integer_scale(output, baseline) != references[0].scale or not torch.isfinite(output).all():
        return None
    return [dataclasses.replace(reference, baseline_outputs=[output[(..., *footprint.slices())].clone()
                                                             for footprint in reference.footprints],
                                operations=watch.operations())
            for reference in references]


def _footprint_outputs(output: object, point: Tensor,
                       footprints: list[Box]) -> tuple[int, list[Tensor], list[Tensor]] | None:
    """The full image's scale, and for each footprint its output pixels (detached) and the weights of its random
    projection (:func:`_random_weights`); None where the output is not a finite SR image of ``point`` or a
    footprint leaves it."""
    scale = _integer_scale(output, point)
    if scale is None or not torch.isfinite(output).all():
        return None
    whole = Box(0, output.shape[-2], 0, output.shape[-1])
    if not all(whole.contains(footprint) for footprint in footprints):
        return None
    outputs = [output.detach()[(..., *footprint.slices())].clone() for footprint in footprints]
    return scale, outputs, [_random_weights(output, footprint, seed=k) for k, footprint in enumerate(footprints)]


def full_reference_fits(forward_func: Callable[[Tensor], Tensor], image: Tensor, available: int | None) -> bool:
    """Whether one forward and backward pass of the full ``(1, C, H, W)`` image fits in the ``available`` bytes
    (:func:`~lam_captum._core._memory.available_memory`), as estimated by the probe forward pass
    (:func:`~lam_captum._core._memory.estimate_call_memory`); True where either cannot be told."""
    needed = None if available is None else estimate_call_memory(forward_func, image, 1)
    return needed is None or needed <= available


def _references_from_crops(
    forward_func: Callable[[Tensor], Tensor], image: Tensor, footprints: list[Box], available: int | None,
    blur: PathBlur,
) -> list[Reference] | None:
    """:func:`window_references` for an image whose forward and backward pass does not fit in memory (a
    4000x4000 HR photo): the full image only runs forward, without gradients, and each window's gradient comes
    from a crop (:func:`_gradient_from_crops`).

    The full image is still what every crop is checked against: the window's output pixels here are the full
    image's. The gradient is a crop's whose output pixels agree with the full image's and whose gradient keeps
    clear of the crop's cut sides, so that nothing the window sees was cut off. The peak memory is the full
    image's forward pass without gradients (0.4x of a forward and backward pass for EDSR-baseline at 339x510
    LR, ``benchmarks/bench_peak.py``) or a crop's step, not the full image's step.
    """
    _log.debug("one pass of the whole image with gradients would not fit in the free memory: the window's "
               "input gradient comes from crops checked against the whole image's output")
    warn_if_forward_too_large(forward_func, image, available)
    with torch.no_grad():
        found = _footprint_outputs(forward_func(image.detach()), image, footprints)
    if found is None:
        return None
    scale, outputs, weights = found
    references = []
    margin = _PROBE_MARGIN
    for footprint, expected, values in zip(footprints, outputs, weights):
        reference = Reference([expected], [values], image.new_zeros(0), [footprint], scale, [], blur)
        # The next window starts where this one's crop held: a model looks about as far from every window.
        found = _gradient_from_crops(forward_func, image, reference, margin)
        if found is None:
            return None
        gradient, margin = found
        references.append(dataclasses.replace(reference, gradient=gradient))
    return references


def _gradient_from_crops(forward_func: Callable[[Tensor], Tensor], image: Tensor, reference: Reference,
                         start: int) -> tuple[Tensor, int] | None:
    """The input gradient of the projection of ``reference`` (whose own gradient is not yet known and not read),
    full size and zero outside the crop it came from, and the crop's margin: the first crop's whose output pixels
    agree with the reference's and whose gradient stays :data:`_MIN_RING` pixels clear of the sides where the
    crop cuts the image. None where no crop under :data:`_MAX_CROP_FRACTION` of the image does, or the input
    gets no gradient.

    The crops are the window's LR pixels and ``start`` more on every side, the margin doubled while the gradient
    reaches a cut side (the model looks further; :func:`_probe_margins`); where the gradient keeps clear but the
    outputs differ (a partition on a fixed grid, as in window attention), the same crop aligned to each partition
    grid (:func:`_partition_grids`), as it is and one cell wider, then wider margins.
    """
    height, width = image.shape[-2:]
    windows = _lr_pixels(reference.footprints, reference.scale)
    for margin in _probe_margins(windows, height, width, start):
        first = windows.grown(margin, height, width)
        boxes = [first] + [box for grid in _partition_grids(forward_func)
                           for box in (first.aligned(grid, height, width),
                                       first.grown(grid, height, width).aligned(grid, height, width))]
        for box in dict.fromkeys(boxes):
            outcome = _crop_gradient(forward_func, image, reference, box)
            if outcome is None:
                return None
            agrees, gradient = outcome
            if gradient is not None and not _clear_of_cut_sides(gradient, box, height, width):
                break
            if agrees and gradient is not None:
                return Crop(box, reference.scale).place(gradient, height, width), margin
    _log.debug("LAM on the full image: no crop under %d%% of the image gave the window's output and a gradient "
               "clear of its cut sides", round(100 * _MAX_CROP_FRACTION))
    return None


def _probe_margins(windows: Box, height: int, width: int, start: int = _PROBE_MARGIN) -> Iterator[int]:
    """Margins around the LR pixels ``windows`` for :func:`_gradient_from_crops`: ``start``, doubled while the
    crop stays under :data:`_MAX_CROP_FRACTION` of the ``height`` x ``width`` image, then the largest that does
    (a model that looks 36 pixels far, as EDSR-baseline, needs no more than that on a 128x128 image).

    Example:
        >>> list(_probe_margins(Box(60, 65, 60, 65), 128, 128))
        [4, 8, 16, 32, 52]
        >>> list(_probe_margins(Box(60, 65, 60, 65), 128, 128, start=64))
        [52]
    """
    limit = _MAX_CROP_FRACTION * height * width
    largest = 0
    margin = start
    while windows.grown(margin, height, width).area <= limit:
        yield margin
        largest, margin = margin, 2 * margin
    last = largest
    while last + 1 < margin and windows.grown(last + 1, height, width).area <= limit:
        last += 1
    if last > largest:
        yield last


def _crop_gradient(forward_func: Callable[[Tensor], Tensor], image: Tensor, reference: Reference,
                   box: Box) -> tuple[bool, Tensor | None] | None:
    """Whether the crop's output agrees with the reference's on its footprints, and the input gradient of the
    reference's projection on the crop (crop pixels); ``(False, None)`` where the model refuses the crop's size,
    None where the input gets no gradient or the crop's output has another scale."""
    point = image[(..., *box.slices())].detach().clone().requires_grad_(True)
    output = _on_crop(lambda: forward_func(point), point)
    if output is _REFUSED:
        return False, None
    area = box.scaled(reference.scale)
    if _integer_scale(output, point) != reference.scale or not output.requires_grad:
        return None
    agrees = _outputs_agree(output, reference, area)
    gradient = _on_crop(lambda: torch.autograd.grad(output, point, grad_outputs=reference.projection(area),
                                                    allow_unused=True)[0], point, "the model's backward pass")
    if gradient is _REFUSED:
        return False, None
    return None if gradient is None else (agrees, gradient)


def _clear_of_cut_sides(gradient: Tensor, box: Box, height: int, width: int) -> bool:
    """Whether the gradient on the crop ``box`` is zero within :data:`_MIN_RING` pixels of every side where the
    crop cuts the ``height`` x ``width`` image (not where it meets the image's own border)."""
    support = Box.of_support(gradient)
    if support is None:
        return True
    ring = _MIN_RING
    return ((box.top == 0 or support.top >= ring) and (box.left == 0 or support.left >= ring)
            and (box.bottom == height or support.bottom <= box.height - ring)
            and (box.right == width or support.right <= box.width - ring))


def _reference_gradients(output: Tensor, point: Tensor, projection: Callable[[list[int]], Tensor],
                         windows: list[Box]) -> list[Tensor] | None:
    """The input gradient of each window's projection (``projection([k])``, on the whole output; ``windows``
    are their LR pixels); None if the input gets no gradient.

    The backward passes over the full image run one after the other rather than batched: on a large image one
    full-image pass is already the largest memory LAM needs with a crop, and batching would multiply it. Their
    number is cut where windows lie far apart: the first window's gradient shows how far past its LR pixels
    (``windows``) the model looks, and windows whose regions, predicted that far, lie at least
    :data:`_REFERENCE_GAP` pixels apart share one backward pass (their projections summed); each window's
    gradient is then the pass's inside its predicted region. Nothing is trusted: a pass whose gradient is
    nonzero outside its windows' predicted regions is redone one window at a time, and a region predicted too
    small fails the crop's check against this reference (:func:`compute_in_crop`), which then widens the crop
    or uses the full image: a wrong prediction costs time, never numbers.
    """

    passes = 0

    def gradient_of(cotangent: Tensor) -> Tensor | None:
        nonlocal passes
        passes += 1
        (gradient,) = torch.autograd.grad(output, point, grad_outputs=cotangent, retain_graph=True, allow_unused=True)
        return gradient

    first = gradient_of(projection([0]))
    if first is None:
        return None
    gradients: list[Tensor | None] = [first] + [None] * (len(windows) - 1)
    height, width = point.shape[-2:]
    predicted = _predicted_regions(first, windows, height, width)
    for colour in _colours(predicted[1:], offset=1):
        shared = gradient_of(projection(colour)) if len(colour) > 1 else None
        if shared is not None and _inside(shared, [predicted[k] for k in colour]):
            for k in colour:
                gradients[k] = _masked(shared, predicted[k])
            continue
        for k in colour:
            gradients[k] = gradient_of(projection([k]))
            if gradients[k] is None:
                return None
    _log.debug("the full image's reference: %d backward pass(es) for %d window(s)", passes, len(windows))
    return gradients


def _predicted_regions(first: Tensor, windows: list[Box], height: int, width: int) -> list[Box | None]:
    """Each window's region, predicted from the first window's: as far past its LR pixels on each side.

    None for every window where the first region tells nothing (no support) or spans the image on both
    sides of an axis (how far it would reach beyond is unknown); the first window's own region is its support.
    """
    region = Box.of_support(first)
    if region is None or (region.top == 0 and region.bottom == height) or (region.left == 0 and region.right == width):
        return [None] * len(windows)
    own = windows[0]
    reach = beyond_borders(region, own, height, width)
    # Where the SR window sits within its LR pixels moves the region by up to one pixel: one more each side.
    above, below = own.top - reach.top + 1, reach.bottom - own.bottom + 1
    before, after = own.left - reach.left + 1, reach.right - own.right + 1
    return [region] + [Box(max(0, w.top - above), min(height, w.bottom + below), max(0, w.left - before),
                           min(width, w.right + after)) for w in windows[1:]]


def _colours(regions: list[Box | None], offset: int) -> list[list[int]]:
    """Windows (by index + ``offset``) in groups whose regions lie at least :data:`_REFERENCE_GAP` pixels apart,
    greedily; a window without a region is a group of its own."""
    colours: list[list[int]] = []
    boxes: list[list[Box]] = []
    for k, region in enumerate(regions):
        if region is not None:
            grown = region.widened(_REFERENCE_GAP)
            for members, member_boxes in zip(colours, boxes):
                if member_boxes and not any(grown.intersects(box) for box in member_boxes):
                    members.append(k + offset)
                    member_boxes.append(region)
                    break
            else:
                colours.append([k + offset])
                boxes.append([region])
        else:
            colours.append([k + offset])
            boxes.append([])
    return colours


def _inside(gradient: Tensor, regions: list[Box | None]) -> bool:
    """Whether the gradient is zero (insignificant) outside the regions."""
    outside = torch.ones(gradient.shape[-2:], dtype=torch.bool, device=gradient.device)
    for region in regions:
        if region is None:
            return False
        outside[region.slices()] = False
    return not bool((significant(gradient) & outside).any())


def _masked(gradient: Tensor, region: Box) -> Tensor:
    """The gradient inside the region, zero outside."""
    masked = torch.zeros_like(gradient)
    masked[(..., *region.slices())] = gradient[(..., *region.slices())]
    return masked


def merged_reference(references: list[Reference]) -> Reference:
    """The reference of the union of several footprints' windows (their projections summed)."""
    first = references[0]
    if len(references) == 1:
        return first
    return Reference([output for reference in references for output in reference.outputs],
                     [values for reference in references for values in reference.weights],
                     sum(reference.gradient for reference in references),
                     [footprint for reference in references for footprint in reference.footprints], first.scale,
                     [output for reference in references for output in reference.baseline_outputs], first.blur,
                     first.operations)


def region_of(reference: Reference) -> Box | None:
    """The input pixels the reference's windows can see: the support of its input gradient."""
    return Box.of_support(reference.gradient)


def crop_margin(kernel_size: int) -> int:
    """The crop's ring around the region: the blur kernel's radius, and at least :data:`_MIN_RING`."""
    return max(kernel_size // 2, _MIN_RING)


def crop_area(region: Box | None, kernel_size: int, height: int, width: int, quantum: int = 1) -> int:
    """Pixels LAM computes on for a region: its crop with the blur margin (sides grown to multiples of
    ``quantum``), or the full image where a crop would not be used (no region, or one that needs over
    :data:`_MAX_CROP_FRACTION` of the image)."""
    if region is None:
        return height * width
    area = smallest_crop(region, crop_margin(kernel_size), quantum, height, width).area
    return height * width if area > _MAX_CROP_FRACTION * height * width else area


def smallest_crop(region: Box, margin: int, quantum: int, height: int, width: int, reach: Box | None = None) -> Box:
    """The region plus the blur margin, inside the image.

    With ``quantum`` > 1 (a GPU) the crop's sides are those of ``reach`` (the region as if the image went on,
    :func:`beyond_borders`; default the region) plus the margin, grown to multiples of ``quantum``, and the
    crop is moved inside the image: a window at a border gets the shape of one in the middle. Where that crop
    would not be worth making (over :data:`_MAX_CROP_FRACTION` of the image), the region plus margin as it is.

    Example:
        >>> smallest_crop(Box(0, 20, 30, 50), 4, 1, 100, 100)
        Box(top=0, bottom=24, left=26, right=54)
        >>> smallest_crop(Box(0, 20, 30, 50), 4, 8, 100, 100, reach=Box(-10, 20, 30, 50))
        Box(top=0, bottom=40, left=24, right=56)
    """
    smallest = region.grown(margin, height, width)
    if quantum == 1:
        return smallest
    reach = region if reach is None else reach
    padded = reach.widened(margin).padded_to(quantum, height, width)
    return padded if padded.area <= _MAX_CROP_FRACTION * height * width else smallest


def beyond_borders(region: Box, windows: Box, height: int, width: int) -> Box:
    """The region as if the image went on past its borders: where it meets a border (and not the opposite one),
    it reaches as far past the windows' LR pixels ``windows`` as it does on the opposite side.

    Example:
        >>> beyond_borders(Box(0, 14, 20, 34), Box(4, 8, 24, 30), 100, 100)
        Box(top=-2, bottom=14, left=20, right=34)
    """

    def side(start: int, end: int, first: int, last: int, limit: int) -> tuple[int, int]:
        if start == 0 and end < limit:
            return min(start, first - (end - last)), end
        if end == limit and start > 0:
            return start, max(end, last + (first - start))
        return start, end

    return Box(*side(region.top, region.bottom, windows.top, windows.bottom, height),
               *side(region.left, region.right, windows.left, windows.right, width))


def _integer_scale(output: object, point: Tensor) -> int | None:
    if not isinstance(output, Tensor) or output.dim() != 4 or output.shape[:2] != point.shape[:2]:
        return None
    (height, width), (out_height, out_width) = point.shape[-2:], output.shape[-2:]
    if out_height % height or out_width % width or out_height // height != out_width // width:
        return None
    return out_height // height


def _random_weights(output: Tensor, footprint: Box, seed: int) -> Tensor:
    """Random weights on every pixel of the footprint, so that the projection's input gradient is zero only
    where no footprint pixel depends on the input, not where the detector's own gradient happens to vanish."""
    generator = torch.Generator().manual_seed(seed)
    shape = (*output.shape[:2], footprint.height, footprint.width)
    return torch.randn(shape, generator=generator, dtype=output.dtype).to(output.device)


def _verified_crop(forward_func: Callable[[Tensor], Tensor], image: Tensor, reference: Reference, region: Box,
                   margin: int, tried: Box | None = None) -> Box | None:
    """The first candidate crop (:func:`_candidate_crops`) that reproduces the full image, after ``tried`` (a
    candidate already found not to); None where the full image must be used."""
    height, width = image.shape[-2:]
    for box in _candidates(forward_func, image, reference, region, margin):
        if box.area > _MAX_CROP_FRACTION * height * width:
            _log.debug("LAM on the full image: the window's region %s needs a %dx%d crop of the %dx%d input",
                       region, box.height, box.width, height, width)
            return None
        if box == tried:
            continue
        if _agrees(forward_func, image, reference, box):
            return box
        _log_refused(box)
    _log.debug("LAM on the full image: no crop reproduced the full image's output and gradient")
    return None


def _candidates(forward_func: Callable[[Tensor], Tensor], image: Tensor, reference: Reference, region: Box,
                margin: int) -> Iterator[Box]:
    height, width = image.shape[-2:]
    windows = _lr_pixels(reference.footprints, reference.scale)
    return _candidate_crops(region, margin, _partition_grids(forward_func), crop_quantum(image.device), height, width,
                            beyond_borders(region, windows, height, width))


def _log_refused(box: Box) -> None:
    _log.debug("the %dx%d crop at %s does not reproduce the full image; trying a larger or aligned one",
               box.height, box.width, box)


def _partition_grids(forward_func: Callable[[Tensor], Tensor]) -> list[int]:
    """The attention windows' sides of the model (``window_size`` of it or of a module behind its wrapper),
    then the usual grids."""
    sizes = [getattr(module, "window_size", None) for module in modules_behind(forward_func)]
    own = [size for size in sizes if isinstance(size, int) and not isinstance(size, bool) and size > 1]
    return list(dict.fromkeys(own + list(_GRIDS)))


def crop_quantum(device: torch.device) -> int:
    """The crops' sides are multiples of this (see :data:`_GPU_CROP_QUANTUM`); 1 on a CPU."""
    return 1 if device.type == "cpu" else _GPU_CROP_QUANTUM


def stacks_crops(device: torch.device) -> bool:
    """Whether crops of one shape run in the same model calls (:func:`attribute_stacked`), and the K windows of
    one image each get a crop of their own rather than windows close together sharing one: on a GPU, not on a
    CPU.

    On a GPU a small crop's pass costs about what the device's calls cost, not its pixels: in the H100's run 3
    (benchmarks/README.md) one window of the default model on its crop of about 47x47 took as long as on the
    whole 128x128 image, and crops there share a few shapes (:func:`crop_quantum`), so K crops in one call
    should cost little more than one (not yet timed on a GPU: ``benchmarks/gpu_check.sh`` compares). A CPU pays
    per pixel: 16 crops of 40x40 (48x48) of the default model, 50 steps, took 20.5 s (31.4 s) one after the
    other and 20.8 s (32.9 s) stacked; so there each crop runs alone, and windows close together share one crop
    and its forward passes.
    """
    return device.type != "cpu"


def _lr_pixels(footprints: list[Box], scale: int) -> Box:
    """The LR pixels under the SR-output ``footprints`` (their union)."""
    union = footprints[0]
    for footprint in footprints[1:]:
        union = union.union(footprint)
    return Box(union.top // scale, -(-union.bottom // scale), union.left // scale, -(-union.right // scale))


def _candidate_crops(region: Box, margin: int, grids: list[int], quantum: int, height: int, width: int,
                     reach: Box) -> Iterator[Box]:
    """:func:`smallest_crop`; then the region plus the blur margin aligned to each grid, as it is and one grid
    cell wider."""
    smallest = region.grown(margin, height, width)
    candidates = [smallest_crop(region, margin, quantum, height, width, reach)]
    for grid in grids:
        candidates += [smallest.aligned(grid, height, width), smallest.grown(grid, height, width).aligned(grid, height, width)]
    yield from dict.fromkeys(candidates)


def _agrees(forward_func: Callable[[Tensor], Tensor], image: Tensor, reference: Reference, box: Box) -> bool:
    """Whether the footprints' outputs and the projection's input gradient on the crop equal the full image's."""
    return _agree_rows(forward_func, [image], [reference], [box])[0]


def _agree_rows(forward_func: Callable[[Tensor], Tensor], images: list[Tensor], references: list[Reference],
                boxes: list[Box]) -> list[bool]:
    """:func:`_agrees` for each row's crop (``boxes`` of one shape, of ``(1, C, H, W)`` images), in one forward
    and one backward pass at the input and one forward pass at the crops' baselines (the crop blurred as LAM
    blurs it, with its own border): the rows of a model call are independent.

    Raises:
        _WholeImage: The forward pass at the crops' baselines shows a statistic of the whole image, compared with
            the full image's pass there (:attr:`Reference.operations`).
    """
    point = torch.cat([image[(..., *box.slices())] for image, box in zip(images, boxes)]).detach().clone()
    point.requires_grad_(True)
    output = _on_crop(lambda: forward_func(point), point)
    if output is _REFUSED:
        return [False] * len(boxes)
    scale = _integer_scale(output, point)
    areas = [box.scaled(reference.scale) for box, reference in zip(boxes, references)]
    agree = [scale == reference.scale and all(area.contains(f) for f in reference.footprints)
             for reference, area in zip(references, areas)]
    projections = []
    for row, (reference, area) in enumerate(zip(references, areas)):
        agree[row] = agree[row] and _outputs_agree(output[row : row + 1], reference, area)
        projections.append(reference.projection(area) if agree[row] else None)
    if not any(agree):
        return agree
    cotangent = torch.cat([torch.zeros_like(output[row : row + 1]) if projection is None else projection
                           for row, projection in enumerate(projections)])
    gradient = _on_crop(lambda: torch.autograd.grad((output * cotangent).sum(), point, allow_unused=True)[0], point,
                        "the model's backward pass")
    if gradient is None or gradient is _REFUSED:
        return [False] * len(boxes)
    agree = [agrees and _close(Crop(box, reference.scale).place(gradient[row : row + 1], *image.shape[-2:]),
                               reference.gradient)
             for row, (agrees, box, reference, image) in enumerate(zip(agree, boxes, references, images))]
    if not any(agree):
        return agree
    baselines = torch.cat([reference.blur.baseline(point[row : row + 1].detach())
                           for row, reference in enumerate(references)])
    # Recorded as the full image's pass was, without gradients: some modules take another path with them
    # (nn.MultiheadAttention's fast path), and passes that differ everywhere are slow to line up.
    with torch.no_grad(), OperationsOf(baselines) as watch:
        output = _on_crop(lambda: forward_func(baselines), baselines)
    if output is _REFUSED:
        return [False] * len(boxes)
    statistic = references[0].operations and whole_image_statistic(references[0].operations, watch.operations())
    if statistic:
        raise _WholeImage(statistic)
    return [agrees and _outputs_agree(output[row : row + 1], reference, area, at_baseline=True)
            for row, (agrees, reference, area) in enumerate(zip(agree, references, areas))]


def call_on_steps(forward_func: Callable[[Tensor], Tensor], points: Tensor) -> Tensor:
    """The model on a chunk of path steps. Where it fails on several but runs on one (a model written for one
    image at a time), the error says so and names ``internal_batch_size``; any other failure is raised as it is.
    """
    try:
        return forward_func(points)
    except torch.OutOfMemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - told apart below, then raised
        if points.shape[0] < 2 or not _runs_on_one(forward_func, points):
            raise
        said = (str(error).splitlines() or [""])[0]
        raise ValueError(f"the model fails on a batch of {points.shape[0]} path steps ({type(error).__name__}: "
                         f"{said}) but runs on one: pass internal_batch_size=1 (on the command line "
                         "--internal-batch-size 1)") from error


def _runs_on_one(forward_func: Callable[[Tensor], Tensor], points: Tensor) -> bool:
    """Whether the model runs on the first of ``points`` alone, as LAM would run it (with gradients)."""
    try:
        forward_func(points[:1].detach().clone().requires_grad_(points.requires_grad))
    except Exception:  # noqa: BLE001 - the model's own failure, whatever it is
        return False
    return True


class _Refused:
    """What :func:`_on_crop` returns where the model refuses the crops' size."""


_REFUSED = _Refused()


def _on_crop(run: Callable[[], Result], point: Tensor, who: str = "the model") -> Result | _Refused:
    """``run()``, a forward or backward pass of the model on crops ``point`` (``who`` runs it, for the log), or
    :data:`_REFUSED` where the model refuses their size: a U-Net whose skip connections need sides divisible by
    2^k, a learned position embedding of one size, a kernel written for even sides raise on a crop of an image
    they take. That refuses the crop, as a check that fails does (the full image, or another candidate, is
    used); running out of memory is not a refusal, and is raised."""
    try:
        return run()
    except torch.OutOfMemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever the model raises on a size it does not take
        _log.debug("%s refused a %dx%d crop (%s: %s)", who, point.shape[-2], point.shape[-1], type(error).__name__,
                   error)
        return _REFUSED


def _outputs_agree(output: Tensor, reference: Reference, area: Box, at_baseline: bool = False) -> bool:
    """Whether the output of a crop (``area``: its SR-output pixels, holding every footprint) equals the
    reference's on each footprint, at the input or ``at_baseline``."""
    expected_outputs = reference.baseline_outputs if at_baseline else reference.outputs
    return all(_close(output[(..., *footprint.shifted(-area.top, -area.left).slices())], expected)
               for footprint, expected in zip(reference.footprints, expected_outputs, strict=True))


def _close(values: Tensor, expected: Tensor) -> bool:
    tolerance = relative_tolerance(expected) * float(expected.abs().max())
    return bool(((values.detach() - expected).abs() <= tolerance).all())


def attribute_in_crops(
    forward_func: Callable[[Tensor], Tensor],
    images: Tensor,
    windows: list[Window],
    detector: Detector,
    blur: PathBlur,
    integrate: RowsIntegrate,
) -> Tensor:
    """LAM of every sample on its own verified crop, zero elsewhere; samples without one on the full image.

    On a GPU crops of one shape share model calls (:func:`attribute_stacked`): Captum's ``NoiseTunnel`` copies
    of one image run together.

    Args:
        forward_func: The model.
        images: ``(N, C, H, W)`` inputs.
        windows: One window per sample.
        detector: The detector (only the built-in ones have a known footprint).
        blur: The path's blur.
        integrate: LAM on stacked inputs (crops, or the samples left for the full image).

    Returns:
        The attribution, shape of ``images``.
    """

    def reference_of(n: int) -> Reference | None:
        footprint = detector_footprint(windows[n], detector)
        if footprint is None:
            _log.debug("LAM on the full image: a user's detector may read any output pixel")
            return None
        references = window_references(forward_func, images[n : n + 1], [footprint], blur)
        if references is None:
            _log.debug("LAM on the full image: the model's output or input gradient cannot be probed")
            return None
        return references[0]

    references = [reference_of(n) for n in range(images.shape[0])]
    attribution, uncropped = attribute_stacked(forward_func, images, windows, references, blur, integrate,
                                               stacks_crops(images.device))
    if uncropped:
        attribution[uncropped] = integrate(images[uncropped], [windows[n] for n in uncropped], labels=uncropped)
    return attribution
