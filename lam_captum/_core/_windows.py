"""Many windows of one image for the price of one forward pass per path point.

The path images do not depend on the window: for K windows of the same image each path point needs one
forward pass and K input gradients: K vector-Jacobian products through the same graph, vectorised into one
backward pass on a GPU (``torch.autograd.grad(..., is_grads_batched=True)``), one after the other on a CPU.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from lam_captum._core._region import (
    Box,
    CropMode,
    PathBlur,
    RowsIntegrate,
    attribute_stacked,
    call_on_steps,
    compute_in_crop,
    crop_area,
    crop_quantum,
    crop_shapes,
    detector_footprint,
    merged_reference,
    region_of,
    stacks_crops,
    window_references,
)
from lam_captum.functional._blur import PathSchedule, blur
from lam_captum.functional._detectors import Detector
from lam_captum.functional._window import Window, WindowLike, as_window

_log = logging.getLogger(__name__)

Inspect = Callable[[Tensor], None]


class Integrate(Protocol):
    """LAM of K windows of one image in one pass, ``(K, C, H, W)``; ``inspect`` sees every chunk's input
    gradients, ``labels`` name the windows in warnings (default their indices)."""

    def __call__(self, image: Tensor, windows: list[Window], inspect: Inspect | None = None,
                 labels: list[int] | None = None) -> Tensor: ...


class GradientCleaner(Protocol):
    """Zeroes non-finite gradients of one window (as the official demo does) and keeps count."""

    def clean(self, sample: int, gradients: Tensor) -> Tensor: ...


class Progress(Protocol):
    def update(self, count: int) -> None: ...


def as_window_list(windows: Sequence[WindowLike] | Tensor) -> list[Window]:
    """K >= 1 windows from a sequence of windows or a ``(K, 3)`` / ``(K, 4)`` integer tensor or numpy array.

    Raises:
        ValueError: If ``windows`` is empty, a single window, or holds something that is not a window.

    Example:
        >>> as_window_list([(0, 0, 8), (8, 8, 4)])
        [Window(top=0, left=0, height=8, width=8), Window(top=8, left=8, height=4, width=4)]
    """
    if isinstance(windows, (Tensor, np.ndarray)) and windows.ndim == 2:
        windows = list(windows)
    is_window = [(isinstance(w, Sequence) and not isinstance(w, str)) or (isinstance(w, (Tensor, np.ndarray))
                                                                          and w.ndim == 1)
                 for w in _items(windows)]
    if not is_window or not all(is_window):
        raise ValueError("`windows` must be a non-empty sequence of windows, each (top, left, size), (top, left, "
                         f"height, width) or a Window (for one window write [window]), got {windows!r}")
    return [as_window(window) for window in windows]


def _items(windows: object) -> list[object]:
    if isinstance(windows, Window) or not isinstance(windows, Sequence):
        return []
    return list(windows)


def integrate_windows(
    forward_func: Callable[[Tensor], Tensor],
    image: Tensor,
    windows: list[Window],
    detector: Detector,
    schedule: PathSchedule,
    rows_per_call: int,
    *,
    check_output: Callable[[Tensor, Tensor, list[Window]], None],
    cleaner: GradientCleaner,
    progress: Progress,
    inspect: Inspect | None = None,
) -> Tensor:
    """``sum_i weight_i * grad(D_k)(point_i) * derivative_i`` for every window ``k``: ``(K, C, H, W)``.

    Path steps run through the model ``rows_per_call`` at a time, as for one window (their kernels built
    for that chunk only), and the K gradients of each chunk come from one batched backward pass. ``inspect``
    sees every chunk's ``(K, S, C, H, W)`` input gradients (the crop's premise check).
    """
    attribution = image.new_zeros((len(windows), *image.shape[1:]))
    for start in range(0, schedule.n_steps, rows_per_call):
        kernels = schedule.kernels(start, min(start + rows_per_call, schedule.n_steps))
        weights = kernels.weights.to(dtype=image.dtype, device=image.device)
        points = blur(image, kernels.points)[0].requires_grad_(True)
        output = call_on_steps(forward_func, points)
        check_output(output, points, windows)
        gradients = _input_gradients(output, points, _detector_cotangents(output, windows, detector))
        if inspect is not None:
            inspect(gradients)
        derivatives = blur(image, kernels.derivatives)[0]
        for k, window_gradients in enumerate(gradients):
            attribution[k] += torch.einsum("s,schw->chw", weights, cleaner.clean(k, window_gradients) * derivatives)
        progress.update(points.shape[0])
    return attribution


def _input_gradients(output: Tensor, points: Tensor, cotangents: Tensor) -> Tensor:
    """``(K, *points.shape)`` vector-Jacobian products of the model, one per cotangent.

    On a GPU one vectorised backward pass computes all K (``is_grads_batched``), which fills the device; on a
    CPU K backward passes one after the other through the same graph were faster (16 windows, 64x64, 2 rows:
    0.95 s against 1.6 s vectorised for the default model, 4.7-5.7 s against 6.4-7.3 s for EDSR-baseline) and
    hold one window's gradients at a time.
    """
    if cotangents.shape[0] > 1 and points.device.type != "cpu":
        return vectorised_gradients(output, points, cotangents)
    return sequential_gradients(output, points, cotangents)


def vectorised_gradients(output: Tensor, points: Tensor, cotangents: Tensor) -> Tensor:
    """The K vector-Jacobian products in one batched backward pass."""
    return torch.autograd.grad(output, points, grad_outputs=cotangents, is_grads_batched=True)[0]


def sequential_gradients(output: Tensor, points: Tensor, cotangents: Tensor) -> Tensor:
    """The K vector-Jacobian products by K backward passes through the same graph."""
    last = cotangents.shape[0] - 1
    return torch.stack([torch.autograd.grad(output, points, grad_outputs=cotangent, retain_graph=k < last)[0]
                        for k, cotangent in enumerate(cotangents)])


def _detector_cotangents(output: Tensor, windows: list[Window], detector: Detector) -> Tensor:
    """``d(sum of D_k)/d(output)`` for every window k, ``(K, *output.shape)``.

    Differentiating the detectors apart from the model keeps the batched backward pass to the model: with
    the detectors inside it, each of the K detector branches would be vectorised over all K windows.
    """
    detached = output.detach().requires_grad_(True)
    cotangents = []
    for window in windows:
        value = detected_rows(detector(detached, window), output.shape[0]).sum()
        (cotangent,) = torch.autograd.grad(value, detached, allow_unused=True)
        if cotangent is None:  # it depends on something, not on the output (`.detach()` then a learned module)
            raise ValueError(DETECTOR_WITHOUT_GRAPH)
        cotangents.append(cotangent)
    return torch.stack(cotangents)


# A detector's value that autograd cannot take back to the model's output.
DETECTOR_WITHOUT_GRAPH = (
    "`detector` must be differentiable: its value does not depend on the model's output through autograd (a count "
    "or threshold, .item(), .detach() or torch.no_grad() inside it), and LAM integrates its gradient")


def detected_rows(value: object, rows: int) -> Tensor:
    """A detector's ``value`` for ``rows`` rows of an output that requires grad, checked: one value per row, which
    autograd can differentiate (LAM integrates its gradient)."""
    if not isinstance(value, Tensor) or value.shape != (rows,):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"`detector` must return one value per row, shape ({rows},), got {shape}")
    if not value.requires_grad:
        raise ValueError(DETECTOR_WITHOUT_GRAPH)
    return value


def reaches(value: Tensor, output: Tensor) -> bool:
    """Whether autograd's graph of ``value`` leads back to ``output`` (a detector's value to the model's output).
    Walks the detector's few nodes only: the model's graph lies behind ``output``, where the walk stops."""
    target, seen = output.grad_fn, set()
    todo = [value.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        if node is target:
            return True
        seen.add(node)
        todo.extend(next_node for next_node, _ in node.next_functions)
    return False


def attribute_windows_in_crop(
    forward_func: Callable[[Tensor], Tensor],
    image: Tensor,
    windows: list[Window],
    detector: Detector,
    path_blur: PathBlur,
    crop: CropMode,
    integrate: Integrate,
    integrate_rows: RowsIntegrate,
) -> Tensor:
    """The K windows' attributions on verified crops (see :mod:`lam_captum._core._region`), zero elsewhere; on
    the full image where there is none.

    On a CPU, windows whose regions lie close together share one crop and one pass (``integrate``); windows
    far apart get crops of their own, where that costs fewer pixels through the model: a pass over a crop of
    ``A`` pixels with ``K`` windows costs about ``A * (1 + K)`` (one forward pass, and K input gradients that
    each cost about as much), so two groups merge when the merged crop costs less than the two apart. Where
    :func:`stacks_crops` (a GPU), every window gets its own crop and crops of one shape run in the same model
    calls (``integrate_rows``, :func:`~lam_captum._core._region.attribute_stacked`), unless the windows' crops
    have more shapes than shared crops would have groups (a small image, where crops near its borders cannot
    all have one size): there a GPU's cost is in its calls, a run per shape or per group.
    """
    footprints = [detector_footprint(window, detector) for window in windows]
    if not crop or any(footprint is None for footprint in footprints):
        return integrate(image, windows)
    if len(windows) == 1:
        references, groups = None, [[0]]
    else:
        references = window_references(forward_func, image, footprints, path_blur)
        if references is None:
            _log.debug("LAM on the full image: the model's output or input gradient cannot be probed")
            return integrate(image, windows)
        regions = [region_of(reference) for reference in references]
        groups = group_windows(regions, path_blur.kernel_size, *image.shape[-2:], crop_quantum(image.device))
        # On a GPU the calls decide: stacked crops make a run per crop shape, shared crops one per group.
        if stacks_crops(image.device) and crop_shapes(forward_func, image, references, regions,
                                                      path_blur) <= len(groups):
            attribution, uncropped = attribute_stacked(forward_func, image.expand(len(windows), -1, -1, -1), windows,
                                                       references, path_blur, integrate_rows, stack=True)
            if uncropped:
                attribution[uncropped] = integrate(image, [windows[k] for k in uncropped], labels=uncropped)
            return attribution
    attribution = image.new_zeros((len(windows), *image.shape[1:]))
    uncropped: list[int] = []
    for group in groups:
        members = [windows[k] for k in group]

        def on_crop(watch, cut, members: list[Window] = members, group: list[int] = group) -> Tensor:
            return integrate(cut.cut(image), [cut.window(window) for window in members], watch.inspect, group)

        reference = merged_reference([references[k] for k in group]) if references is not None else None
        outcome = compute_in_crop(forward_func, image, [footprints[k] for k in group], path_blur, on_crop, reference)
        if outcome is None:
            uncropped += group
            continue
        cut, values = outcome
        attribution[group] = cut.place(values, *image.shape[-2:])
    if uncropped:
        attribution[uncropped] = integrate(image, [windows[k] for k in uncropped], labels=uncropped)
    return attribution


def group_windows(regions: list[Box | None], kernel_size: int, height: int, width: int,
                  quantum: int = 1) -> list[list[int]]:
    """The windows (by index) in groups that share a crop, merged greedily while merging saves work.

    ``regions`` are the windows' input regions (None: the full image). Each step merges the two groups
    whose merge saves the most, by the cost ``crop pixels * (1 + windows)`` of a pass (the crops' sides
    multiples of ``quantum``, as :func:`~lam_captum._core._region.crop_quantum` gives them; an estimate at
    the image's borders, where a GPU's crops are larger).

    Example:
        >>> near, far = Box(10, 20, 10, 20), Box(200, 210, 200, 210)
        >>> group_windows([near, Box(12, 22, 12, 22), far], 9, 256, 256)
        [[0, 1], [2]]
    """
    groups = [[k] for k in range(len(regions))]
    boxes = list(regions)

    def cost(box: Box | None, size: int) -> int:
        return crop_area(box, kernel_size, height, width, quantum) * (1 + size)

    while True:
        best: tuple[int, int, int, Box | None] | None = None
        for i, j in itertools.combinations(range(len(groups)), 2):
            merged = None if boxes[i] is None or boxes[j] is None else boxes[i].union(boxes[j])
            saving = (cost(boxes[i], len(groups[i])) + cost(boxes[j], len(groups[j]))
                      - cost(merged, len(groups[i]) + len(groups[j])))
            if saving > 0 and (best is None or saving > best[0]):
                best = (saving, i, j, merged)
        if best is None:
            return groups
        _, i, j, merged = best
        groups[i], boxes[i] = sorted(groups[i] + groups[j]), merged
        del groups[j], boxes[j]


def window_values(forward_func: Callable[[Tensor], Tensor], image: Tensor, windows: list[Window],
                  detector: Detector) -> Tensor:
    """The detector of every window on the model's output for ``image`` (1, C, H, W): shape ``(K,)``."""
    with torch.no_grad():
        output = forward_func(image)
        return torch.cat([detector(output, window) for window in windows])
