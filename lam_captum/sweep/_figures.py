"""The comparison figure of every image of a study, drawn from what the probes saved.

The figures are drawn when the tables are assembled, on global rank 0, from the records, the maps
(``maps/<probe id>.npz``) and the SR outputs (``sr/<model>/<image>.png``) on disk, so a figure is the
same whether its probes were computed in this run or an earlier one. An image gets a figure once every
probe of it is finished; until then an earlier figure of it is removed rather than left stale. A figure
whose probes, settings and files are unchanged is not drawn again. Clip entries get no figure (the figure
compares models on one image; a clip's pictures are its probes' ``pictures: true``), and the figures of the
other images are the same with or without them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lam_captum.compare import Comparison
from lam_captum.explain import LAMResult
from lam_captum.imageio import load_image, load_input
from lam_captum.sweep._records import maps_path, sr_path
from lam_captum.sweep._study import ImageEntry, Study, StudyProbe


def figure_name(study: Study, image: ImageEntry, scale: int) -> str:
    """The stem of an image's figure files: the image's name, with the scale when the study mixes scales
    (a window is in SR pixels, so only models of one scale share a figure)."""
    return image.name if len({model.scale for model in study.models}) == 1 else f"{image.name}-x{scale}"


def write_figures(study: Study, rows: list[dict[str, Any]]) -> list[Path]:
    """Draw ``figures/<image>.<format>`` and ``figures/<image>.json`` for every image (not clip) whose probes are
    done.

    Args:
        study: The study; ``study.figures`` says how to draw.
        rows: The rows of ``probes.csv``.

    Returns:
        The figure files written (the summaries included) in this call.
    """
    by_id = {row["probe_id"]: row for row in rows}
    groups: dict[tuple[str, int], list[StudyProbe]] = {}
    for probe in study.probes():
        groups.setdefault((probe.image.name, probe.model.scale), []).append(probe)
    written: list[Path] = []
    for image in (image for image in study.images if not image.is_clip):
        for scale in dict.fromkeys(model.scale for model in study.models):
            written += _write_figure(study, image, scale, groups[image.name, scale], by_id)
    return written


def _write_figure(study: Study, image: ImageEntry, scale: int, probes: list[StudyProbe],
                  rows: dict[str, dict[str, Any]]) -> list[Path]:
    folder, name = study.output / "figures", figure_name(study, image, scale)
    settings = study.figures
    files = [folder / f"{name}.{kind}" for kind in settings.formats]
    summary_path = folder / f"{name}.json"
    if not all(rows[probe.id]["status"] == "ok" for probe in probes):
        for path in [*files, summary_path]:  # an earlier figure no longer shows the study's numbers
            path.unlink(missing_ok=True)
        return []
    identity = {"fingerprints": [probe.fingerprint for probe in probes], "figure": settings.model_dump()}
    if _is_current(summary_path, files, identity):
        return []
    models = tuple(dict.fromkeys(probe.model.name for probe in probes))
    windows = study.windows[image.name]
    lr, hr = load_input(image.path, scale=scale, crop=image.crop, lr=image.lr)
    results = {probe.id: _stored_result(study, probe, rows[probe.id], lr, hr) for probe in probes}
    grid = tuple(tuple(results[_probe_of(probes, model, window).id] for model in models) for window in windows)
    comparison = Comparison(models=models, windows=windows, results=grid, blend=settings.blend, zoom=settings.zoom)
    metadata = {"image": image.name, "path": str(image.path), "crop": list(image.crop) if image.crop else None,
                "probes": [[_probe_of(probes, model, window).id for model in models] for window in windows],
                **identity}
    return comparison.save(folder, settings.formats, name=name, metadata=metadata, summary_name=summary_path.name)


def _is_current(summary_path: Path, files: list[Path], identity: dict[str, Any]) -> bool:
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return False
    saved = {key: summary.get(key) for key in identity} if isinstance(summary, dict) else None
    return saved == identity and all(path.is_file() for path in files)


def _probe_of(probes: list[StudyProbe], model: str, window: Any) -> StudyProbe:
    return next(probe for probe in probes if probe.model.name == model and probe.window == window)


def _stored_result(study: Study, probe: StudyProbe, row: dict[str, Any], lr: torch.Tensor,
                   hr: torch.Tensor | None) -> LAMResult:
    """The probe's :class:`LAMResult` as saved: numbers from its record, maps from its ``.npz``, the SR
    output from its PNG (8 bits, as saved), the LR and HR images read again as the probe read them."""
    with np.load(maps_path(study.output, probe.id)) as saved:
        attribution, lam_map = torch.from_numpy(saved["attribution"]), torch.from_numpy(saved["map"])
    sr = load_image(sr_path(study.output, probe.model.name, probe.image.name))
    return LAMResult(
        attribution=attribution, map=lam_map, di=_number(row["di"]), gini=_number(row["gini"]),
        negative_share=row["negative_share"], area=row["area_50"], delta=row["convergence_delta"], lr=lr, sr=sr,
        window=probe.window, scale=probe.model.scale, settings=study.lam, alpha=study.alpha,
        seconds=row["seconds"], device=row["device"], hr=hr,
    )


def _number(value: float | None) -> float:
    # The record writes an all-zero map's missing DI and Gini as null; the result holds them as NaN.
    return math.nan if value is None else value
