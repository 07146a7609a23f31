"""Summary plots of a sweep: DI per model, and DI against PSNR (the paper's comparison of networks).

matplotlib's object API on the Agg canvas: no pyplot state, no display needed, safe in any process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lam_captum._atomic import write_atomically

_DPI = 120
_POINT_SPREAD = 0.3


def plot_di_per_model(rows: list[dict[str, Any]], models: list[str], path: Path) -> bool:
    """Box plot of the DI of every finished probe, one box per model, with the probes drawn as points.

    Args:
        rows: Table rows (``model``, ``status``, ``di``).
        models: The models, in the order to draw them.
        path: The PNG to write.

    Returns:
        Whether a plot was written (False when no probe has finished).
    """
    values = {name: [row["di"] for row in rows if row["model"] == name and row["status"] == "ok"] for name in models}
    shown = [name for name in models if values[name]]
    if not shown:
        return False
    figure = Figure(figsize=(1.2 + 1.1 * len(shown), 4.0), dpi=_DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.boxplot([values[name] for name in shown], showfliers=False)
    for position, name in enumerate(shown, start=1):
        axes.plot(_spread_points(position, len(values[name])), values[name], "o", color="tab:red", alpha=0.6,
                  markersize=4)
    axes.set_xticks(range(1, len(shown) + 1), shown, rotation=30, ha="right")
    axes.set_ylabel("Diffusion Index")
    axes.set_title("DI per model")
    _save(figure, path)
    return True


def plot_di_versus_psnr(summary: list[dict[str, Any]], path: Path) -> bool:
    """Mean DI against mean PSNR, one labelled point per model (the paper's Figure of networks).

    Args:
        summary: Rows of ``models.csv`` (``model``, ``di_mean``, ``di_std``, ``psnr_mean``).
        path: The PNG to write.

    Returns:
        Whether a plot was written (False when no model has both a DI and a PSNR).
    """
    points = [row for row in summary if row["di_mean"] is not None and row["psnr_mean"] is not None]
    if not points:
        return False
    figure = Figure(figsize=(5.5, 4.0), dpi=_DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.errorbar([row["di_mean"] for row in points], [row["psnr_mean"] for row in points],
                  xerr=[row["di_std"] for row in points], fmt="o", color="tab:blue", ecolor="tab:gray", capsize=3)
    for row in points:
        axes.annotate(row["model"], (row["di_mean"], row["psnr_mean"]), textcoords="offset points", xytext=(5, 5))
    axes.set_xlabel("Diffusion Index (mean over probes, bar: std)")
    axes.set_ylabel("PSNR on Y (dB, mean over images)")
    axes.set_title("DI versus PSNR")
    _save(figure, path)
    return True


def _spread_points(position: int, count: int) -> list[float]:
    # Evenly spread rather than random jitter: the plot is the same on every run.
    if count == 1:
        return [float(position)]
    return [position - _POINT_SPREAD / 2 + _POINT_SPREAD * i / (count - 1) for i in range(count)]


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    write_atomically(path, lambda stream: figure.savefig(stream, format="png"))
