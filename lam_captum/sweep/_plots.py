"""Summary plots of a sweep: DI per model, and DI against PSNR (the paper's comparison of networks).

DI depends on the LR size, so every plot has one panel per LR size and never pools sizes; clips (DI over all
their frames' pixels) get panels of their own, one per number of frames. matplotlib's
object API on the Agg canvas: no pyplot state, no display needed, safe in any process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.lines import Line2D
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lam_captum._atomic import write_atomically
from lam_captum.sweep._quality import PSNR_LABEL
from lam_captum.sweep._records import input_text, lr_size_text

_DPI = 120
_POINT_SPREAD = 0.3
_IMAGE_COLOURS = matplotlib.colormaps["tab20"].colors


def plot_di_per_model(rows: list[dict[str, Any]], models: list[str], path: Path) -> bool:
    """Box plots of the DI of every finished probe, one panel per LR size (and clip length) and one box per
    model, with the probes drawn as points in one colour per image.

    Args:
        rows: Table rows (``model``, ``image``, ``lr_height``, ``lr_width``, ``frames``, ``status``, ``di``).
        models: The models, in the order to draw them.
        path: The PNG to write.

    Returns:
        Whether a plot was written (False when no probe has finished).
    """
    done = [row for row in rows if row["status"] == "ok" and row["di"] is not None]
    if not done:
        return False
    sizes = _sizes(done)
    images = list(dict.fromkeys(row["image"] for row in done))
    colours = {image: _IMAGE_COLOURS[index % len(_IMAGE_COLOURS)] for index, image in enumerate(images)}
    figure, panels = _panels(len(sizes), width=1.2 + 1.1 * len(models))
    for axes, size in zip(panels, sizes):
        _draw_di_boxes(axes, [row for row in done if _row_input(row) == size], models, colours)
        axes.set_title(f"DI per model, LR {size}")
    handles = [Line2D([], [], marker="o", linestyle="", color=colours[image]) for image in images]
    figure.legend(handles, images, title="image", loc="outside right upper")
    _save(figure, path)
    return True


def _draw_di_boxes(axes: Axes, rows: list[dict[str, Any]], models: list[str], colours: dict[str, Any]) -> None:
    shown = [name for name in models if any(row["model"] == name for row in rows)]
    values = {name: [row for row in rows if row["model"] == name] for name in shown}
    axes.boxplot([[row["di"] for row in values[name]] for name in shown], showfliers=False)
    for position, name in enumerate(shown, start=1):
        points = values[name]
        axes.scatter(_spread_points(position, len(points)), [row["di"] for row in points],
                     c=[colours[row["image"]] for row in points], alpha=0.8, s=16, zorder=3)
    axes.set_xticks(range(1, len(shown) + 1), shown, rotation=30, ha="right")
    axes.set_ylabel("Diffusion Index")


def plot_di_versus_psnr(summary: list[dict[str, Any]], path: Path) -> bool:
    """Mean DI against mean PSNR, one labelled point per model, one panel per LR size (and clip length); the
    bars are the 95% bootstrap confidence intervals of both means.

    Args:
        summary: Rows of ``models.csv`` (``model``, ``lr_size``, ``frames``, ``di_mean``, ``psnr_y_mean`` and their
            ``_ci_low`` / ``_ci_high``).
        path: The PNG to write.

    Returns:
        Whether a plot was written (False when no model has both a DI and a PSNR).
    """
    points = [row for row in summary if row["di_mean"] is not None and row["psnr_y_mean"] is not None
              and row["di_mean_ci_low"] is not None and row["psnr_y_mean_ci_low"] is not None]
    if not points:
        return False
    sizes = list(dict.fromkeys(input_text(row["lr_size"], row.get("frames")) for row in points))
    figure, panels = _panels(len(sizes), width=5.5)
    for axes, size in zip(panels, sizes):
        shown = [row for row in points if input_text(row["lr_size"], row.get("frames")) == size]
        axes.errorbar([row["di_mean"] for row in shown], [row["psnr_y_mean"] for row in shown],
                      xerr=_interval_bars(shown, "di_mean"), yerr=_interval_bars(shown, "psnr_y_mean"), fmt="o",
                      color="tab:blue", ecolor="tab:gray", capsize=3)
        for row in shown:
            axes.annotate(row["model"], (row["di_mean"], row["psnr_y_mean"]), textcoords="offset points",
                          xytext=(5, 5))
        axes.set_xlabel("Diffusion Index (mean over probes, bar: 95% CI)")
        axes.set_ylabel(f"{PSNR_LABEL}\nmean over images, bar: 95% CI")
        axes.set_title(f"DI versus PSNR, LR {size}")
    _save(figure, path)
    return True


def _interval_bars(rows: list[dict[str, Any]], column: str) -> list[list[float]]:
    """Matplotlib's asymmetric error bars: distances from each mean down to and up to its interval."""
    return [[row[column] - row[f"{column}_ci_low"] for row in rows], [row[f"{column}_ci_high"] - row[column]
                                                                       for row in rows]]


def _sizes(rows: list[dict[str, Any]]) -> list[str]:
    ordered = sorted({(row.get("frames") or 0, row["lr_height"], row["lr_width"]) for row in rows})
    return [input_text(f"{height}x{width}", frames or None) for frames, height, width in ordered]


def _row_input(row: dict[str, Any]) -> str:
    return input_text(lr_size_text(row), row.get("frames"))


def _panels(count: int, width: float) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(width * count + 1.5, 4.2), dpi=_DPI, layout="constrained")
    return figure, list(figure.subplots(1, count, squeeze=False)[0])


def _spread_points(position: int, count: int) -> list[float]:
    # Evenly spread rather than random jitter: the plot is the same on every run.
    if count == 1:
        return [float(position)]
    return [position - _POINT_SPREAD / 2 + _POINT_SPREAD * i / (count - 1) for i in range(count)]


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    write_atomically(path, lambda stream: figure.savefig(stream, format="png"))
