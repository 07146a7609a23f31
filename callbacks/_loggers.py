"""How :class:`~lam_captum.callbacks.LAMMonitor` reaches each kind of Lightning logger, through the logger's own API.

TensorBoard takes pictures through its ``SummaryWriter`` (``experiment.add_image``), a custom-scalars layout
and text; Weights & Biases, and any other logger with a ``log_image(key, images, step=...)`` method, through
that method. Loggers with neither (CSV, MLflow) get the scalars only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.loggers import Logger, TensorBoardLogger


def takes_images(logger: Logger) -> bool:
    """Whether ``logger`` can show pictures: a TensorBoardLogger, or one with a ``log_image`` method (W&B's).

    Example:
        >>> from lightning.pytorch.loggers import CSVLogger
        >>> takes_images(CSVLogger("logs")), takes_images(TensorBoardLogger("logs"))
        (False, True)
    """
    return isinstance(logger, TensorBoardLogger) or callable(getattr(logger, "log_image", None))


def image_loggers(trainer: pl.Trainer) -> list[Logger]:
    """The Trainer's loggers that can show pictures (see :func:`takes_images`)."""
    return [logger for logger in trainer.loggers if takes_images(logger)]


def tensorboards(trainer: pl.Trainer) -> list[TensorBoardLogger]:
    """The Trainer's TensorBoard loggers, the ones that take a custom-scalars layout and text."""
    return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def add_images(logger: Logger, pictures: Mapping[str, np.ndarray], step: int) -> None:
    """Give ``logger`` uint8 ``(H, W, 3)`` pictures, one per tag, at ``step``.

    Raises:
        Exception: Whatever the logger raises; the caller decides what a failure costs.
    """
    for tag, picture in pictures.items():
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, picture, step, dataformats="HWC")
        else:
            # WandbLogger's signature, which other loggers with a `log_image` method follow.
            logger.log_image(key=tag, images=[picture], step=step)


def custom_scalars_layout(
    sections: Mapping[str, Sequence[str]],
    validation_metrics: Sequence[str],
    profiles: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """A TensorBoard custom-scalars layout: per section, one chart of every DI tag and one of the validation metrics,
    and one chart per clip probe with the temporal profile, a line per frame.

    Args:
        sections: Per section title, the exact DI tags to draw together.
        validation_metrics: The metric names the LightningModule logs in validation (none: no such chart).
        profiles: Per section title, the clip probes' names and the prefix of their per-frame profile tags
            (``{"clip": "lam/clip/profile"}`` for the tags ``lam/clip/profile/<t>``).

    Returns:
        The layout as ``SummaryWriter.add_custom_scalars`` takes it; tags become anchored regular expressions,
        since TensorBoard reads every tag of a chart as one.

    Example:
        >>> layout = custom_scalars_layout({"LAM": ["lam/a/di"]}, ["val_loss"])
        >>> layout["LAM"]["DI of every probe"], layout["LAM"]["validation metrics"]
        (['Multiline', ['^lam/a/di$']], ['Multiline', ['^val_loss$']])
        >>> layout = custom_scalars_layout({"LAM": []}, [], {"LAM": {"c": "lam/c/profile"}})
        >>> print(*layout["LAM"]["temporal profile of c"][1])
        ^lam/c/profile/\\d+$
    """
    layout = {}
    for title, di_tags in sections.items():
        charts = {"DI of every probe": ["Multiline", [_exact(tag) for tag in di_tags]]}
        if validation_metrics:
            charts["validation metrics"] = ["Multiline", [_exact(name) for name in validation_metrics]]
        for probe, prefix in (profiles or {}).get(title, {}).items():
            charts[f"temporal profile of {probe}"] = ["Multiline", [rf"^{re.escape(prefix)}/\d+$"]]
        layout[title] = charts
    return layout


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of equal keys as a Markdown table, the form TensorBoard's text dashboard draws as a table.

    Example:
        >>> print(markdown_table([{"name": "a", "window": (0, 0, 8, 8)}]))
        | name | window |
        |---|---|
        | a | (0, 0, 8, 8) |
    """
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[key]) for key in header) + " |" for row in rows]
    return "\n".join(lines)


def _exact(tag: str) -> str:
    return f"^{re.escape(tag)}$"
