"""The comparison figure of LAM papers: one row per window, one column per model, each map with its DI.

:func:`compare` runs :func:`~lam_captum.explain.explain` for every (window, model) pair of one image and
returns a :class:`Comparison`: the figure as pixels, as a matplotlib figure for PDF and SVG, and the
numbers of every cell. All maps share one colour scale (each normalised by its own maximum, as LAM
defines the map) and one colour bar; every DI is printed with the LR size it belongs to.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from lam_captum._atomic import files_listed, write_text_atomically
from lam_captum._core.settings import LAMSettings
from lam_captum.explain import LAMResult, explain, settings_with
from lam_captum.functional import Window, as_window
from lam_captum.pictures import (
    FIGURE_FORMATS,
    FigureFormat,
    add_colour_bar,
    di_text,
    focus_box,
    render_figure,
    save_figure,
    sr_picture,
    upscale_bicubic,
    zoom as zoom_picture,
)

ComparisonBlend = Literal["heat", "kde"]
BLENDS = ("heat", "kde")
_CELL_INCHES = 2.4
_LABEL_INCHES = 0.55
_DPI = 100
# One colour per window, on the image and on its row's label, so a reader matches them at a glance.
_WINDOW_COLOURS = matplotlib.colormaps["tab10"].colors
_BAR_LABELS = {"heat": "map (0 none, 1 its max)", "kde": "KDE of the map (0 none, 1 its max)"}


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The LAM results of several models on several windows of one image, and their figure.

    Attributes:
        models: The models' names, one per column.
        windows: The windows in SR pixels, one per row.
        results: ``results[row][column]``, the :class:`~lam_captum.explain.LAMResult` of that window and model.
        blend: ``"heat"`` (the heat map on the LR image) or ``"kde"`` (the KDE picture on it) in the cells.
        zoom: Whether the cells of a row show only the part of the image that holds 99% of every model's
            attribution and the window (:meth:`zoom_box`), upscaled; the image marks that part.
    """

    models: tuple[str, ...]
    windows: tuple[Window, ...]
    results: tuple[tuple[LAMResult, ...], ...]
    blend: ComparisonBlend = "heat"
    zoom: bool = False

    def __post_init__(self) -> None:
        shape = [len(row) for row in self.results]
        if shape != [len(self.models)] * len(self.windows):
            raise ValueError(f"`results` must hold one row per window ({len(self.windows)}) and one column per model "
                             f"({len(self.models)}), got rows of lengths {shape}")
        if self.blend not in BLENDS:
            raise ValueError(f"`blend` must be one of {', '.join(BLENDS)}, got {self.blend!r}")

    @property
    def figure(self) -> np.ndarray:
        """The figure as a uint8 ``(H, W, 3)`` array, as :meth:`save` writes it to PNG."""
        return self._rendered[0]

    def draw(self) -> Figure:
        """The figure as a matplotlib figure: the image with the windows drawn, then the grid of cells."""
        return self._draw()[0]

    def cell_label(self, row: int, column: int) -> str:
        """The text under a cell: the model's name, and DI with the LR size it was measured at."""
        result = self.results[row][column]
        return f"{self.models[column]}\n{di_text(result.di)} (LR {result.lr_size[0]}x{result.lr_size[1]})"

    def zoom_box(self, row: int) -> Window:
        """The part of the SR image a row's cells show when zoomed: the smallest box around every model's
        :func:`~lam_captum.pictures.focus_box` (99% of its attribution and the window), the same for the row."""
        boxes = [focus_box(result.map, result.window, result.scale) for result in self.results[row]]
        top, left = min(box.top for box in boxes), min(box.left for box in boxes)
        bottom, right = max(box.top + box.height for box in boxes), max(box.left + box.width for box in boxes)
        return Window(top, left, bottom - top, right - left)

    def summary(self) -> dict[str, object]:
        """The numbers of every cell, row by row, with its label, its pixel box in the PNG figure and, when
        zoomed, the part of the SR image it shows."""
        boxes = self._rendered[1]
        cells = [
            {"row": row, "column": column, "model": self.models[column], "label": self.cell_label(row, column),
             "pixel_box": boxes[row][column], "zoom_box": list(self.zoom_box(row)) if self.zoom else None,
             **self.results[row][column].summary()}
            for row in range(len(self.windows)) for column in range(len(self.models))
        ]
        return {"models": list(self.models), "windows": [window._asdict() for window in self.windows],
                "blend": self.blend, "zoom": self.zoom, "cells": cells}

    def save(
        self,
        folder: str | Path,
        formats: Sequence[FigureFormat] = ("png",),
        *,
        name: str = "comparison",
        metadata: Mapping[str, object] | None = None,
        summary_name: str = "summary.json",
    ) -> list[Path]:
        """Write the figure in each format and its summary beside it.

        Args:
            folder: The output folder (created).
            formats: Any of ``"png"``, ``"pdf"``, ``"svg"``; PDF and SVG keep the labels as text.
            name: The figure files' stem.
            metadata: Extra entries for ``summary.json`` (the image's path, the models' weights, ...).
            summary_name: The summary's file name (several figures in one folder need one each).

        Returns:
            The files written, the figures first and the summary last.

        Raises:
            ValueError: If ``formats`` is empty or holds an unknown format.
            OSError: If a file cannot be written.
        """
        formats = _check_formats(formats)
        folder = Path(folder)
        earlier = files_listed(folder / summary_name, "figures", (f"{name}.{kind}" for kind in FIGURE_FORMATS))
        written = [save_figure(self.draw(), folder / f"{name}.{kind}", kind) for kind in formats]
        summary = {**(metadata or {}), "figures": [path.name for path in written], **self.summary()}
        written.append(write_text_atomically(folder / summary_name, json.dumps(summary, indent=2) + "\n"))
        # The figures the summary listed before, in formats this save does not write, were the earlier run's:
        # left, they would sit beside a summary that is not theirs.
        for figure in set(earlier) - {path.name for path in written}:
            (folder / figure).unlink(missing_ok=True)
        return written

    @functools.cached_property
    def _rendered(self) -> tuple[np.ndarray, list[list[list[int]]]]:
        figure, cell_axes = self._draw()
        pixels = render_figure(figure)
        return pixels, [[_pixel_box(axes, pixels.shape[0]) for axes in row] for row in cell_axes]

    def _draw(self) -> tuple[Figure, list[list[Axes]]]:
        rows, columns = len(self.windows), len(self.models)
        image_inches = _CELL_INCHES * min(1.5, columns)
        size = (_CELL_INCHES * columns + 1.6, image_inches + 0.4 + rows * (_CELL_INCHES + _LABEL_INCHES))
        figure = Figure(figsize=size, dpi=_DPI, layout="constrained")
        grid = figure.add_gridspec(rows + 1, columns, height_ratios=[image_inches] + [_CELL_INCHES] * rows)
        self._draw_image(figure.add_subplot(grid[0, :]))
        cell_axes = [[figure.add_subplot(grid[row + 1, column]) for column in range(columns)] for row in range(rows)]
        for row, axes_row in enumerate(cell_axes):
            for column, axes in enumerate(axes_row):
                self._draw_cell(axes, row, column)
        add_colour_bar(figure, [axes for axes_row in cell_axes for axes in axes_row], label=_BAR_LABELS[self.blend])
        return figure, cell_axes

    def _draw_image(self, axes: Axes) -> None:
        first = self.results[0][0]
        image = sr_picture(first.hr) if first.hr is not None else upscale_bicubic(first.lr, first.scale)
        axes.imshow(image, interpolation="none")
        axes.set_axis_off()
        axes.set_title("HR image" if first.hr is not None else "LR image, bicubic-upscaled")
        for row, window in enumerate(self.windows):
            colour = _WINDOW_COLOURS[row % len(_WINDOW_COLOURS)]
            # Pixel centres sit on integer coordinates in imshow, so a pixel's outer edge is half a pixel off.
            axes.add_patch(Rectangle((window.left - 0.5, window.top - 0.5), window.width, window.height,
                                     fill=False, edgecolor=colour, linewidth=1.5))
            axes.text(window.left + window.width + 1, window.top, str(row + 1), color=colour, fontsize=9,
                      fontweight="bold", va="top")
            if self.zoom:
                box = self.zoom_box(row)
                axes.add_patch(Rectangle((box.left - 0.5, box.top - 0.5), box.width, box.height, fill=False,
                                         edgecolor=colour, linewidth=1.0, linestyle="--"))

    def _draw_cell(self, axes: Axes, row: int, column: int) -> None:
        picture = self.results[row][column].picture(f"{self.blend}_blend")
        if self.zoom:
            picture = zoom_picture(picture, self.zoom_box(row))
        # "none": PDF and SVG embed each map at its own resolution instead of resampling it.
        axes.imshow(picture, interpolation="none")
        # Hide the ticks but keep the axes, so that the labels show beside and under the map.
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_xlabel(self.cell_label(row, column))
        if column == 0:
            window = self.windows[row]
            colour = _WINDOW_COLOURS[row % len(_WINDOW_COLOURS)]
            axes.set_ylabel(f"window {row + 1}\n{window.top}, {window.left}, {window.height}x{window.width}",
                            color=colour)


def compare(
    models: Mapping[str, Callable[[Tensor], Tensor]],
    lr: Tensor,
    windows: Sequence[Window | Sequence[int]],
    settings: LAMSettings | None = None,
    *,
    hr: Tensor | None = None,
    blend: ComparisonBlend = "heat",
    zoom: bool = False,
    alpha: float = 0.5,
    device: str | torch.device | None = None,
    output: str | Path | None = None,
    formats: Sequence[FigureFormat] = ("png",),
    show_progress: bool = False,
    **setting_values: object,
) -> Comparison:
    """Explain every window for every model on one image and draw the comparison figure of LAM papers.

    Args:
        models: The SR networks by name, in column order (all of one scale).
        lr: The ``(C, H, W)`` LR image, in the range the models expect.
        windows: The windows in SR pixels, in row order: ``(top, left, size)``, ``(top, left, height, width)``
            or :class:`~lam_captum.Window`.
        settings: The path settings (default: the paper's, :class:`~lam_captum.LAMSettings`).
        hr: Optional HR image, drawn with the windows (else the bicubic-upscaled LR image).
        blend: ``"heat"`` (the heat map on the LR image) or ``"kde"`` (the KDE picture on it) in the cells.
        zoom: Show in each row only the part of the image that holds 99% of every model's attribution and
            the window, upscaled (see :meth:`Comparison.zoom_box`).
        alpha: Weight of the LR image in the blends.
        device: Where to compute; default each model's device.
        output: A folder to write the figure and ``summary.json`` to (see :meth:`Comparison.save`).
        formats: The figure's formats when ``output`` is given: ``"png"``, ``"pdf"``, ``"svg"``.
        show_progress: Show a progress bar over the path steps of each run.
        **setting_values: Fields of :class:`~lam_captum.LAMSettings` (``n_steps=25``, ...).

    Returns:
        The :class:`Comparison`; ``.figure`` is the figure as a uint8 ``(H, W, 3)`` array.

    Raises:
        ValueError: If ``models`` or ``windows`` is empty, the models' scales differ, ``blend`` or a format is
            unknown, and as
            :func:`~lam_captum.explain.explain` for a window, image or model that does not fit.
        TypeError: If ``models`` is not a mapping of names to models.

    Example:
        >>> def make_model(seed):
        ...     torch.manual_seed(seed)
        ...     return torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2))
        >>> comparison = compare({"a": make_model(0), "b": make_model(1)}, torch.rand(3, 16, 16),
        ...                      [(8, 8, 8), (0, 20, 8)], n_steps=4)
        >>> len(comparison.results), len(comparison.results[0]), comparison.figure.dtype
        (2, 2, dtype('uint8'))
    """
    names = _check_models(models)
    checked_windows = _check_windows(windows)
    # Checked before the runs too, so that a typo costs no computation.
    if blend not in BLENDS:
        raise ValueError(f"`blend` must be one of {', '.join(BLENDS)}, got {blend!r}")
    if output is not None:
        _check_formats(formats)
    settings = settings_with(settings, setting_values)
    results = []
    for window in checked_windows:
        results.append(tuple(explain(models[name], lr, window, settings, hr=hr, alpha=alpha, device=device,
                                     show_progress=show_progress) for name in names))
        _check_one_scale(names, results[0])
    comparison = Comparison(models=names, windows=checked_windows, results=tuple(results), blend=blend, zoom=zoom)
    if output is not None:
        comparison.save(output, formats)
    return comparison


def _check_models(models: Mapping[str, Callable[[Tensor], Tensor]]) -> tuple[str, ...]:
    if not isinstance(models, Mapping):
        raise TypeError(f"`models` must be a mapping of names to models, got {type(models).__name__}")
    if not models:
        raise ValueError("`models` must hold at least one model, got none")
    bad_names = [name for name in models if not isinstance(name, str) or not name]
    if bad_names:
        raise TypeError(f"`models` must be keyed by non-empty names, got keys {bad_names!r}")
    not_callable = [name for name, model in models.items() if not callable(model)]
    if not_callable:
        raise TypeError(f"`models` must map names to models (callables), got non-callables for {not_callable}")
    return tuple(models)


def _check_windows(windows: Sequence[Window | Sequence[int]]) -> tuple[Window, ...]:
    if isinstance(windows, (str, bytes)) or not isinstance(windows, Sequence) or not windows:
        raise ValueError(f"`windows` must be a non-empty sequence of windows, got {windows!r}")
    if not isinstance(windows[0], (Sequence, Tensor)):
        raise ValueError(f"`windows` must be a sequence of windows, such as [(top, left, size)], got {windows!r}")
    return tuple(as_window(window) for window in windows)


def _check_one_scale(names: tuple[str, ...], row: tuple[LAMResult, ...]) -> None:
    """A window means the same part of the image for every model only if they all upscale by one factor."""
    scales = {name: result.scale for name, result in zip(names, row)}
    if len(set(scales.values())) > 1:
        raise ValueError(f"`models` must share one scale (windows are in SR pixels), got scales {scales}")


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = (formats,)
    unknown = [kind for kind in formats if kind not in FIGURE_FORMATS]
    if not formats or unknown:
        raise ValueError(f"`formats` must name some of {', '.join(FIGURE_FORMATS)}, got {list(formats)!r}")
    return tuple(dict.fromkeys(formats))


def _pixel_box(axes: Axes, figure_height: int) -> list[int]:
    """An axes' image area as ``[top, left, height, width]`` in the rendered figure's pixels."""
    extent = axes.get_window_extent()
    # Display coordinates count from the bottom edge; image rows count from the top.
    top, left = figure_height - extent.y1, extent.x0
    return [round(top), round(left), round(extent.height), round(extent.width)]
