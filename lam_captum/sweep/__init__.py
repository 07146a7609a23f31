"""Attribution at scale: DI studies over many images, windows and models.

A study file names the models, the images and the windows of each image, and the LAM parameters
(see ``examples/study.yaml``); :func:`run_sweep` (or ``lam-captum sweep STUDY``) explains every
(model, image, window) probe on Lightning's engine, on one CPU, one GPU or many processes and nodes.
The study is validated as a whole before any work starts, without importing Lightning.

The output folder holds ``records/<probe id>.json`` (one per finished probe, written atomically; the
source of truth), ``probes.csv`` and ``probes.jsonl`` (one row per probe of the study, sorted by probe
id, rebuilt from the records at the end of every run; columns :data:`COLUMNS`), ``models.csv`` (per
model and LR size: probe counts, DI statistics, mean PSNR, with 95% bootstrap intervals of the means;
:data:`MODEL_COLUMNS`), ``plots/`` (DI per model, DI versus PSNR, one panel per LR size),
``study.json`` (the study as resolved), ``figures/<image>.png`` / ``.pdf`` / ``.json`` (the comparison
figure of each image, unless ``figures: false``, with the maps and SR outputs it needs in ``maps/`` and
``sr/<model>/<image>.png``), and on request ``maps/<probe id>.npz``, ``pictures/<probe id>/`` and ``erf/<model>.npy`` /
``.png`` with ``erf.csv`` (each model's effective receptive field). A re-run skips the probes whose
record is current and successful. One sweep at a time writes to a folder: a second one is refused with
the first one's process id and host.

Columns: ``di``, ``gini``, ``area_50`` (fewest LR pixels holding half the map) and
``convergence_delta`` and ``negative_share`` (the share of the absolute attribution that is negative) as
:func:`lam_captum.explain.explain` reports them; ``psnr`` of the model on the HR image (PSNR on Y, dB
(BT.601 luma, ``scale`` px shaved); empty for LR inputs); ``seconds`` (the
attribution) and ``device`` depend on the run; ``status`` is ``ok``, ``error`` (with ``error``, the
reason) or ``pending``; ``warning`` holds the warnings LAM raised on the probe.

Clips: an ``images`` entry with ``clip: true`` is one clip of a video SR model, a folder of frames in the
order of their names (optional ``frame``: the output frame that holds the windows, default the centre). Its
probes run :func:`lam_captum.video.explain_clip`, each in a pass of its own, and fill ``frames``, ``frame``,
``frame_di`` and ``temporal_profile`` (lists in ``probes.jsonl``, space-separated numbers in ``probes.csv``;
empty for images); ``di``, ``gini``, ``negative_share``, ``convergence_delta`` and ``area_50`` are the whole
clip's, ``psnr`` the output frame's against its HR frame. ``models.csv`` gives clips rows of their own
(``frames``), the comparison figures and the ERF leave clips out.

Example:
    >>> from lam_captum.sweep import load_study
    >>> study = load_study({"models": ["default"], "images": [{"path": "builtin", "crop": [0, 0, 64, 64],
    ...                     "windows": [{"grid": [1, 2], "size": 16}]}]})
    >>> [probe.id for probe in study.probes()]
    ['default/grace_hopper/t0023-l0000-16x16', 'default/grace_hopper/t0023-l0047-16x16']
"""

from __future__ import annotations

import importlib
from typing import Any

from lam_captum.sweep._lock import OutputFolderError
from lam_captum.sweep._records import COLUMNS, MODEL_COLUMNS
from lam_captum.sweep._study import (
    MAX_STUDY_BYTES,
    MAX_STUDY_NODES,
    ImageEntry,
    ModelEntry,
    Study,
    StudyError,
    StudyProbe,
    load_study,
)

# These need Lightning, which takes seconds to import: a study is checked (and a typo reported) first.
_ENGINE_NAMES = (
    "LAMProbeModule", "ProbeDataModule", "ProbeOutcome", "ProbeRecordWriter", "SweepProgress", "SweepReport",
    "TrainerSettingsError", "run_sweep",
)  # fmt: skip

__all__ = [
    "COLUMNS", "MAX_STUDY_BYTES", "MAX_STUDY_NODES", "MODEL_COLUMNS", "ImageEntry", "ModelEntry",
    "OutputFolderError", "Study", "StudyError", "StudyProbe", "load_study", *_ENGINE_NAMES,
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _ENGINE_NAMES:
        return getattr(importlib.import_module("lam_captum.sweep._engine"), name)
    raise AttributeError(f"module 'lam_captum.sweep' has no attribute {name!r}")
