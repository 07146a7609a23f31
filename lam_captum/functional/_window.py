"""The window in SR-output pixels that LAM explains."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Literal, NamedTuple, Union

import numpy as np
import torch
from torch import Tensor


class Window(NamedTuple):
    """A rectangle of the SR output: top row, left column, height and width, in SR pixels.

    Example:
        >>> Window.square(120, 80, 16)
        Window(top=120, left=80, height=16, width=16)
    """

    top: int
    left: int
    height: int
    width: int

    @classmethod
    def square(cls, top: int, left: int, size: int) -> Window:
        """A ``size`` x ``size`` window, the paper's usual shape."""
        return cls(top, left, size, size)

    def fits(self, height: int, width: int, margin: int = 0) -> bool:
        """Whether the window lies inside a ``height`` x ``width`` image less ``margin`` at the bottom and right
        (the pixels a detector reads beyond it).

        Example:
            >>> Window.square(8, 8, 8).fits(16, 16), Window.square(8, 8, 8).fits(16, 16, margin=1)
            (True, False)
        """
        return self.top + self.height <= height - margin and self.left + self.width <= width - margin

    def __str__(self) -> str:
        return f"top={self.top}, left={self.left}, height={self.height}, width={self.width}"


WindowLike = Union[Window, Sequence[int], Tensor, np.ndarray]


def _is_int(value: object) -> bool:
    if isinstance(value, Tensor):
        return value.dim() == 0 and not value.is_floating_point() and value.dtype != torch.bool
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_window_like(value: object) -> bool:
    return ((isinstance(value, Sequence) and not isinstance(value, (str, bytes)))
            or (isinstance(value, (Tensor, np.ndarray)) and value.ndim == 1))


def as_window(window: WindowLike) -> Window:
    """Turn ``(top, left, size)``, ``(top, left, height, width)`` or a :class:`Window` into a :class:`Window`.

    The numbers may be Python, numpy or 0-d tensor integers; a 1-D integer tensor or numpy array works too.

    Raises:
        ValueError: If it has the wrong length, non-integer entries, negative corners or an empty size.

    Example:
        >>> as_window((8, 4, 16))
        Window(top=8, left=4, height=16, width=16)
    """
    values = window.tolist() if isinstance(window, Tensor) else None
    if isinstance(window, (Sequence, np.ndarray)):
        values = list(window)
    if values is None or len(values) not in (3, 4) or not all(_is_int(v) for v in values):
        raise ValueError(f"`window` must be (top, left, size) or (top, left, height, width) integers, got {window!r}")
    values = [int(v) for v in values]
    parsed = Window(*values) if len(values) == 4 else Window.square(*values)
    if parsed.top < 0 or parsed.left < 0 or parsed.height < 1 or parsed.width < 1:
        raise ValueError(f"`window` needs top, left >= 0 and a size >= 1, got {parsed}")
    return parsed


def as_windows(window: WindowLike | Sequence[WindowLike], n_samples: int,
               repeats: Literal["each", "batch"] = "each") -> list[Window]:
    """One :class:`Window` per sample, from one window for all or a sequence of windows.

    ``M`` windows for ``N = k * M`` samples give each window to ``k`` consecutive samples (``repeats="each"``),
    the order in which Captum's ``NoiseTunnel`` and its metrics repeat every sample of a batch (as Captum
    expands a per-sample ``target``); with ``repeats="batch"`` the windows go round the samples, the order in
    which ``IntegratedGradients`` and the perturbation methods repeat the whole batch. A 2-D integer tensor or
    numpy array holds one window per row.

    Raises:
        ValueError: For a bad window, a number of windows that does not divide ``n_samples``, or a ``repeats``
            other than those.

    Example:
        >>> as_windows((0, 0, 8), 2)
        [Window(top=0, left=0, height=8, width=8), Window(top=0, left=0, height=8, width=8)]
        >>> [w.top for w in as_windows([(0, 0, 8), (4, 4, 8)], 6)]
        [0, 0, 0, 4, 4, 4]
        >>> [w.top for w in as_windows([(0, 0, 8), (4, 4, 8)], 6, repeats="batch")]
        [0, 4, 0, 4, 0, 4]
    """
    if repeats not in ("each", "batch"):
        raise ValueError(f"`repeats` must be 'each' or 'batch', got {repeats!r}")
    windows = windows_listed(window)
    if windows is None:
        return [as_window(window)] * n_samples
    if n_samples % len(windows):
        raise ValueError(f"`window` holds {len(windows)} windows for {n_samples} samples; give one, one per sample, "
                         "or one per run of consecutive samples (as Captum's NoiseTunnel repeats each sample)")
    parsed = [as_window(w) for w in windows]
    if repeats == "batch":
        return [parsed[n % len(parsed)] for n in range(n_samples)]
    return [w for w in parsed for _ in range(n_samples // len(parsed))]


def windows_listed(window: WindowLike | Sequence[WindowLike]) -> list[WindowLike] | None:
    """The windows of a sequence of them (or of a 2-D tensor or array, one per row); None for one window."""
    if isinstance(window, (Tensor, np.ndarray)) and window.ndim == 2:
        window = list(window)
    if _is_window_like(window) and len(window) > 0 and _is_window_like(window[0]):
        return list(window)
    return None


def check_window_inside(window: Window, height: int, width: int, *, margin: int = 0, what: str = "SR output") -> None:
    """Raise unless ``window`` lies inside a ``height`` x ``width`` image less ``margin`` at the bottom and right.

    The official demo silently truncates a window that crosses the edge, which quietly changes what is
    explained; we refuse it instead.
    """
    if not window.fits(height, width, margin):
        limit = f"the {height}x{width} {what}" + (f" less {margin} pixel at the bottom and right" if margin else "")
        raise ValueError(f"`window` must lie inside {limit}, got {window}")
