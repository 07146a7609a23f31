"""Many windows of one image for the price of one forward pass per path point.

The path images do not depend on the window: for K windows of the same image each path point needs one
forward pass and K input gradients, which one batched vector-Jacobian product computes
(``torch.autograd.grad(..., is_grads_batched=True)``: the backward pass vectorised over the K windows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor

from lam_captum._core._region import CropMode, compute_in_crop, detector_footprint
from lam_captum.functional._blur import PathSchedule, blur
from lam_captum.functional._detectors import Detector
from lam_captum.functional._window import Window, WindowLike, as_window

Inspect = Callable[[Tensor], None]
Integrate = Callable[[Callable[[Tensor], Tensor], Tensor, list[Window], "Inspect | None"], Tensor]


class GradientCleaner(Protocol):
    """Zeroes non-finite gradients of one window (as the official demo does) and keeps count."""

    def clean(self, sample: int, gradients: Tensor) -> Tensor: ...


class Progress(Protocol):
    def update(self, count: int) -> None: ...


def as_window_list(windows: Sequence[WindowLike] | Tensor) -> list[Window]:
    """K >= 1 windows from a sequence of windows or a ``(K, 3)`` / ``(K, 4)`` integer tensor.

    Raises:
        ValueError: If ``windows`` is empty, a single window, or holds something that is not a window.

    Example:
        >>> as_window_list([(0, 0, 8), (8, 8, 4)])
        [Window(top=0, left=0, height=8, width=8), Window(top=8, left=8, height=4, width=4)]
    """
    if isinstance(windows, Tensor) and windows.dim() == 2:
        windows = list(windows)
    is_window = [(isinstance(w, Sequence) and not isinstance(w, str)) or (isinstance(w, Tensor) and w.dim() == 1)
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
        output = forward_func(points)
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
    """``(K, *points.shape)`` vector-Jacobian products of the model, one per cotangent; one window alone
    skips the vectorisation, which costs time and gains nothing there."""
    if cotangents.shape[0] == 1:
        return torch.autograd.grad(output, points, grad_outputs=cotangents[0])[0].unsqueeze(0)
    return torch.autograd.grad(output, points, grad_outputs=cotangents, is_grads_batched=True)[0]


def _detector_cotangents(output: Tensor, windows: list[Window], detector: Detector) -> Tensor:
    """``d(sum of D_k)/d(output)`` for every window k, ``(K, *output.shape)``.

    Differentiating the detectors apart from the model keeps the batched backward pass to the model: with
    the detectors inside it, each of the K detector branches would be vectorised over all K windows.
    """
    detached = output.detach().requires_grad_(True)
    cotangents = []
    for window in windows:
        value = _one_per_row(detector(detached, window), output.shape[0]).sum()
        (cotangent,) = torch.autograd.grad(value, detached, allow_unused=True)
        cotangents.append(torch.zeros_like(output) if cotangent is None else cotangent)
    return torch.stack(cotangents)


def _one_per_row(value: Tensor, rows: int) -> Tensor:
    if not isinstance(value, Tensor) or value.shape != (rows,):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"`detector` must return one value per row, shape ({rows},), got {shape}")
    return value


def attribute_windows_in_crop(
    forward_func: Callable[[Tensor], Tensor],
    image: Tensor,
    windows: list[Window],
    detector: Detector,
    kernel_size: int,
    crop: CropMode,
    integrate: Integrate,
) -> Tensor:
    """``integrate(model, image, windows, inspect)`` on the smallest verified crop holding every window's
    region (see :mod:`lam_captum._core._region`), zero elsewhere; on the full image where there is none."""
    footprints = [detector_footprint(window, detector) for window in windows]
    if crop and all(footprint is not None for footprint in footprints):
        def on_crop(watch, cut) -> Tensor:
            return integrate(watch.model, cut.cut(image), [cut.window(window) for window in windows], watch.inspect)

        outcome = compute_in_crop(forward_func, image, footprints, kernel_size, on_crop)
        if outcome is not None:
            cut, values = outcome
            return cut.place(values, *image.shape[-2:])
    return integrate(forward_func, image, windows, None)


def window_values(forward_func: Callable[[Tensor], Tensor], image: Tensor, windows: list[Window],
                  detector: Detector) -> Tensor:
    """The detector of every window on the model's output for ``image`` (1, C, H, W): shape ``(K,)``."""
    with torch.no_grad():
        output = forward_func(image)
        return torch.cat([detector(output, window) for window in windows])
