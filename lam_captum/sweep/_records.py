"""Per-probe records on disk and the tables assembled from them.

Every file is written to a temporary name in its folder, flushed to disk and renamed over the target
(``os.replace`` is atomic), so a run killed at any moment leaves each file either complete or absent.
A probe's JSON record is written last, after its maps and pictures: a record on disk means the whole
probe is done. The tables are rebuilt from the records at the end of every run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from lam_captum._atomic import TEMPORARY_SUFFIX, write_atomically, write_text_atomically
from lam_captum.explain import PICTURE_NAMES
from lam_captum.sweep._study import ImageEntry, Study, StudyProbe
from lam_captum.video import CLIP_PICTURE_NAMES

COLUMNS = (
    "probe_id", "model", "image", "lr_height", "lr_width", "scale", "frames", "window_top", "window_left",
    "window_height", "window_width", "di", "gini", "negative_share", "area_50", "convergence_delta", "psnr", "frame",
    "frame_di", "temporal_profile", "seconds", "device", "status", "error", "warning",
)  # fmt: skip
# A clip's per-frame numbers: lists in probes.jsonl, space-separated numbers in probes.csv.
LIST_COLUMNS = ("frame_di", "temporal_profile")
MODEL_COLUMNS = (
    "model", "lr_size", "frames", "probes", "ok", "failed", "pending", "di_mean", "di_mean_ci_low", "di_mean_ci_high",
    "di_median", "di_std", "gini_mean", "negative_share_mean", "psnr_y_mean", "psnr_y_mean_ci_low",
    "psnr_y_mean_ci_high", "images_with_psnr", "seconds_mean",
)  # fmt: skip
# Resamples of the bootstrap confidence intervals, and their fixed seed: the tables are the same every run.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
_CONFIDENCE = 0.95
_RESULT_COLUMNS = COLUMNS[COLUMNS.index("di"):]


def record_path(output: Path, probe_id: str) -> Path:
    """Where a probe's JSON record lives."""
    return output / "records" / f"{probe_id}.json"


def maps_path(output: Path, probe_id: str) -> Path:
    """Where a probe's attribution and map (``.npz``) live."""
    return output / "maps" / f"{probe_id}.npz"


def sr_path(output: Path, model: str, image: str) -> Path:
    """Where a model's SR output of an image lives (8-bit PNG), kept for the comparison figures."""
    return output / "sr" / model / f"{image}.png"


def keeps_maps(study: Study, image: ImageEntry) -> bool:
    """Whether the maps of an image's probes are saved: asked for, or needed by the comparison figures (which
    leave clips out)."""
    return study.maps or (study.figures is not None and not image.is_clip)


def needs_sr(study: Study, image: ImageEntry) -> bool:
    """Whether the SR output of an image is kept for the comparison figures (which leave clips out)."""
    return study.figures is not None and not image.is_clip


def picture_names(image: ImageEntry) -> tuple[str, ...]:
    """The pictures a probe of ``image`` saves when asked: an image's, or a clip's strip, profile and window."""
    return CLIP_PICTURE_NAMES if image.is_clip else PICTURE_NAMES


def pictures_folder(output: Path, probe_id: str) -> Path:
    """Where a probe's PNG pictures live."""
    return output / "pictures" / probe_id


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON atomically (NaN and infinities as null, which every reader accepts; Python
    objects, such as a class given in a model's ``args`` from Python, by name)."""
    text = json.dumps(_finite(value), indent=1, allow_nan=False, default=_named) + "\n"
    write_text_atomically(path, text)


def _named(value: Any) -> str:
    """A value JSON has no type for: a class or function by its import path, anything else by its ``repr``.

    Example:
        >>> import torch
        >>> _named(torch.nn.GELU), _named(object)
        ('torch.nn.modules.activation.GELU', 'builtins.object')
    """
    module, name = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    return f"{module}.{name}" if isinstance(module, str) and isinstance(name, str) else repr(value)


def remove_temporary_files(output: Path) -> int:
    """Delete temporary files left by a killed run; returns how many.

    Call it only while no other process writes to ``output`` (before the work is handed out).
    """
    removed = 0
    for path in output.rglob(f".*{TEMPORARY_SUFFIX}") if output.is_dir() else ():
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None if absent, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_record(output: Path, probe: StudyProbe) -> dict[str, Any] | None:
    """The probe's record, or None if absent, unreadable or stale (another fingerprint)."""
    record = read_json(record_path(output, probe.id))
    return record if record is not None and record.get("fingerprint") in probe.fingerprints else None


def pending_probes(study: Study) -> list[StudyProbe]:
    """The probes of the study that are not finished, in the study's order.

    A probe is finished when its record is current (same fingerprint) and successful, and the maps,
    pictures and SR output that the study asks for (or its figures need) are on disk. Failed probes are
    pending: a re-run retries them.
    """
    return [probe for probe in study.probes() if not _is_finished(study, probe)]


def _is_finished(study: Study, probe: StudyProbe) -> bool:
    record = read_record(study.output, probe)
    if record is None or record.get("status") != "ok":
        return False
    if keeps_maps(study, probe.image) and not maps_path(study.output, probe.id).is_file():
        return False
    if needs_sr(study, probe.image) and not sr_path(study.output, probe.model.name, probe.image.name).is_file():
        return False
    folder = pictures_folder(study.output, probe.id)
    return not study.pictures or all((folder / f"{name}.png").is_file() for name in picture_names(probe.image))


def probe_row(probe: StudyProbe, **values: Any) -> dict[str, Any]:
    """A table row for ``probe``: its static columns filled in, the rest from ``values`` or None."""
    lr_height, lr_width = probe.image.lr_size(probe.model.scale)
    top, left, height, width = probe.window
    row = dict.fromkeys(COLUMNS)
    row.update(probe_id=probe.id, model=probe.model.name, image=probe.image.name, lr_height=lr_height,
               lr_width=lr_width, scale=probe.model.scale, frames=len(probe.image.frames) or None, window_top=top,
               window_left=left, window_height=height, window_width=width, status="pending")
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown table columns {sorted(unknown)}")
    row.update(values)
    return row


def assemble(study: Study) -> list[dict[str, Any]]:
    """Rebuild ``probes.csv``, ``probes.jsonl``, ``models.csv``, ``study.json``, the plots and the figures.

    Every probe of the study gets a row, sorted by probe id: its record's values if the record is
    current, else status ``pending``.

    Returns:
        The rows of ``probes.csv``.
    """
    from lam_captum.sweep._plots import plot_di_per_model, plot_di_versus_psnr

    rows = []
    for probe in sorted(study.probes(), key=lambda probe: probe.id):
        record = read_record(study.output, probe)
        if record is not None and record["fingerprint"] != probe.fingerprint:  # an earlier version's: now current
            write_json(record_path(study.output, probe.id), {**record, "fingerprint": probe.fingerprint})
        values = {key: record.get(key) for key in _RESULT_COLUMNS} if record else {}
        rows.append(probe_row(probe, **values))
    summary = model_summary(rows, [model.name for model in study.models])
    write_json(study.output / "study.json", study.to_dict())
    write_csv(study.output / "probes.csv", COLUMNS, [_with_lists_spelled(row) for row in rows])
    _write_jsonl(study.output / "probes.jsonl", rows)
    write_csv(study.output / "models.csv", MODEL_COLUMNS, summary)
    plot_di_per_model(rows, [model.name for model in study.models], study.output / "plots" / "di_per_model.png")
    plot_di_versus_psnr(summary, study.output / "plots" / "di_versus_psnr.png")
    if study.figures is not None:
        from lam_captum.sweep._figures import write_figures

        write_figures(study, rows)
    return rows


def model_summary(rows: Iterable[dict[str, Any]], models: list[str]) -> list[dict[str, Any]]:
    """One row per model, LR size and clip length: probe counts, DI statistics and the mean PSNR over its images.

    DI depends on the LR size, so it is only compared at one size: a model's probes on inputs of
    different sizes make different rows. A clip's DI spreads over all its frames' pixels, so clips make rows
    of their own, one per number of frames (``frames``; empty for images), never pooled with images. PSNR is
    per (model, image); each image counts once however many windows it has. The means have 95% bootstrap
    confidence intervals (:func:`bootstrap_interval`).

    Example:
        >>> rows = [{"model": "a", "image": "x", "lr_height": 16, "lr_width": 16, "status": "ok", "di": 2.0,
        ...          "gini": 0.9, "negative_share": 0.1, "psnr": 30.0, "seconds": 1.0},
        ...         {"model": "a", "image": "x", "lr_height": 16, "lr_width": 16, "status": "ok", "di": 4.0,
        ...          "gini": 0.8, "negative_share": 0.3, "psnr": 30.0, "seconds": 3.0}]
        >>> summary = model_summary(rows, ["a"])[0]
        >>> summary["lr_size"], summary["di_mean"], summary["psnr_y_mean"], summary["images_with_psnr"]
        ('16x16', 3.0, 30.0, 1)
        >>> summary["di_mean_ci_low"], summary["di_mean_ci_high"]
        (2.0, 4.0)
    """
    grouped: dict[tuple[str, str, int | None], list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda row: (models.index(row["model"]), row.get("frames") or 0, row["lr_height"],
                                             row["lr_width"])):
        grouped.setdefault((row["model"], lr_size_text(row), row.get("frames")), []).append(row)
    return [_summarise(name, size, frames, size_rows) for (name, size, frames), size_rows in grouped.items()]


def lr_size_text(row: dict[str, Any]) -> str:
    """A row's LR size as ``HxW``, as the tables and plots group DI by it."""
    return f"{row['lr_height']}x{row['lr_width']}"


def input_text(lr_size: str, frames: int | None) -> str:
    """What a group of DIs was measured on, for the plots' panels: ``48x48``, or ``48x48, clips of 5 frames``.

    Example:
        >>> input_text("48x48", None), input_text("48x48", 5)
        ('48x48', '48x48, clips of 5 frames')
    """
    return lr_size if frames is None else f"{lr_size}, clips of {frames} frames"


def _summarise(name: str, lr_size: str, frames: int | None, rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = [row for row in rows if row["status"] == "ok"]
    di = [row["di"] for row in done if row["di"] is not None]
    psnr = {row["image"]: row["psnr"] for row in done if row["psnr"] is not None}
    shares = [row["negative_share"] for row in done if row["negative_share"] is not None]
    di_low, di_high = bootstrap_interval(di)
    psnr_low, psnr_high = bootstrap_interval(list(psnr.values()))
    return {
        "model": name,
        "lr_size": lr_size,
        "frames": frames,
        "probes": len(rows),
        "ok": len(done),
        "failed": sum(row["status"] == "error" for row in rows),
        "pending": sum(row["status"] == "pending" for row in rows),
        "di_mean": statistics.fmean(di) if di else None,
        "di_mean_ci_low": di_low,
        "di_mean_ci_high": di_high,
        "di_median": statistics.median(di) if di else None,
        "di_std": statistics.pstdev(di) if di else None,
        "gini_mean": _mean(row["gini"] for row in done),
        "negative_share_mean": statistics.fmean(shares) if shares else None,
        "psnr_y_mean": statistics.fmean(psnr.values()) if psnr else None,
        "psnr_y_mean_ci_low": psnr_low,
        "psnr_y_mean_ci_high": psnr_high,
        "images_with_psnr": len(psnr),
        "seconds_mean": statistics.fmean(row["seconds"] for row in done) if done else None,
    }


def _mean(values: Iterable[float | None]) -> float | None:
    # An all-zero map has no DI or Gini (None): it has no spread to average.
    present = [value for value in values if value is not None]
    return statistics.fmean(present) if present else None


def bootstrap_interval(values: list[float]) -> tuple[float | None, float | None]:
    """The 95% percentile bootstrap confidence interval of the mean of ``values``.

    :data:`BOOTSTRAP_RESAMPLES` resamples with replacement, drawn with :data:`BOOTSTRAP_SEED`, so the
    tables are the same on every run. One value gives the interval ``(value, value)``; none, or a value
    that is not finite (the PSNR of an exact output), gives ``(None, None)``.

    Example:
        >>> low, high = bootstrap_interval([1.0, 2.0, 3.0, 4.0])
        >>> 1.0 <= low < 2.5 < high <= 4.0
        True
    """
    if not values or not all(math.isfinite(value) for value in values):
        return None, None
    samples = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = samples[rng.integers(0, len(samples), size=(BOOTSTRAP_RESAMPLES, len(samples)))].mean(axis=1)
    tail = (1 - _CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as CSV with ``columns``, atomically."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, lambda stream: stream.write(text.getvalue().encode()))


def _with_lists_spelled(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its lists as space-separated numbers for CSV (``nan`` for a frame without a DI)."""
    return {key: " ".join("nan" if item is None else str(item) for item in value) if key in LIST_COLUMNS
            and value is not None else value for key, value in row.items()}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(_finite(row), allow_nan=False) + "\n" for row in rows)
    write_text_atomically(path, text)


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (strict JSON has no spelling for them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
