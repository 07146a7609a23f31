"""Each model's effective receptive field over the study's images, and ``erf.csv``.

With the study's ``erf`` section, global rank 0 computes at the end of a run, for every model, the
mean ERF over the study's LR inputs (each image as the model's probes read it, resized to ``erf.size``
with nearest interpolation: :func:`lam_captum.erf.dataset_erf`) and RepLKNet's area ratios
(:func:`lam_captum.erf.erf_area_ratios`). It writes ``erf/<model>.npy`` (the map), ``erf/<model>.png``
(the published picture) and ``erf/<model>.json`` (the row, written last, with the fingerprint of the
model, the images and the size), and ``erf.csv`` with one row per model. A model whose ERF is current
is not computed again; a model that fails gets a row with its reason. The ERF is an image model's: clip
entries are left out (a study of clips alone gives every model a row saying so).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lam_captum._atomic import write_atomically
from lam_captum._core._context import eval_mode
from lam_captum.erf import REPLKNET_THRESHOLDS, dataset_erf, erf_area_ratios
from lam_captum.sweep._fingerprints import digest
from lam_captum.sweep._records import read_json, write_csv, write_json
from lam_captum.sweep._study import ImageEntry, ModelEntry, Study

ERF_COLUMNS = (
    "model", "images", "height", "width", *(f"{kind}_{100 * t:g}" for t in REPLKNET_THRESHOLDS
                                             for kind in ("area_ratio", "side")),
    "seconds", "device", "status", "error",
)  # fmt: skip
# The published pictures are about this many pixels across; a 120x120 ERF is small on screen.
_PICTURE_PIXELS = 480


def erf_path(output: Path, model: str, suffix: str) -> Path:
    """Where a model's ERF files live: ``erf/<model>.npy``, ``.png`` and ``.json``."""
    return output / "erf" / f"{model}.{suffix}"


def write_erfs(study: Study, device: torch.device, *, compute: bool = True) -> list[dict[str, Any]]:
    """Compute the ERF of every model whose ERF is not current, and write ``erf.csv``.

    Args:
        study: The study; ``study.erf`` holds the size.
        device: Where to run the models.
        compute: Compute missing ERFs (False: only list what is on disk; the others are ``pending``).

    Returns:
        The rows of ``erf.csv``, one per model in the study's order.
    """
    rows = []
    for model in study.models:
        fingerprint = _fingerprint(study, model.digest)
        fingerprints = {fingerprint, _fingerprint(study, model.earlier_digest or model.digest)}
        record = read_json(erf_path(study.output, model.name, "json"))
        if record is not None and record.get("fingerprint") in fingerprints and record.get("status") == "ok":
            row = {key: record.get(key) for key in ERF_COLUMNS}
            if record["fingerprint"] != fingerprint:  # an earlier version's fingerprint: now current
                write_json(erf_path(study.output, model.name, "json"), {**record, "fingerprint": fingerprint})
        elif compute:
            row = _model_erf(study, model, device)
            write_json(erf_path(study.output, model.name, "json"), {**row, "fingerprint": fingerprint})
        else:
            row = {**dict.fromkeys(ERF_COLUMNS), "model": model.name, "status": "pending"}
        rows.append(row)
    write_csv(study.output / "erf.csv", ERF_COLUMNS, rows)
    return rows


def _fingerprint(study: Study, model_digest: str) -> str:
    return digest([model_digest, [image.digest for image in _images(study)], list(study.erf.size)])


def _images(study: Study) -> list[ImageEntry]:
    """The entries the ERF averages over: the images, not the clips."""
    return [image for image in study.images if not image.is_clip]


def _model_erf(study: Study, model: ModelEntry, device: torch.device) -> dict[str, Any]:
    from lam_captum.imageio import load_input, save_png
    from lam_captum.pictures import erf_picture

    height, width = study.erf.size
    images = _images(study)
    row = {**dict.fromkeys(ERF_COLUMNS), "model": model.name, "images": len(images), "height": height,
           "width": width, "device": str(device)}
    if not images:
        return {**row, "status": "error", "error": "the study has no image entries (the ERF leaves clips out)"}
    started = time.perf_counter()
    try:
        network = model.build()
        inputs = [load_input(image.path, scale=model.scale, crop=image.crop, lr=image.lr)[0] for image in images]
        _check_takes_images(network, model, inputs[0].shape[-3], (height, width), device)
        erf = dataset_erf(network, inputs, size=(height, width), batch_size=study.erf.batch_size, device=device)
        ratios = erf_area_ratios(erf)
    except _NotAnImageModel as error:
        return {**row, "status": "error", "error": str(error)}
    except Exception as error:  # one model's failure is its row, as a probe's is
        return {**row, "status": "error", "error": f"{type(error).__name__}: {error}"}
    for threshold, square in ratios.items():
        row[f"area_ratio_{100 * threshold:g}"], row[f"side_{100 * threshold:g}"] = square.ratio, square.side
    write_atomically(erf_path(study.output, model.name, "npy"), lambda stream: np.save(stream, erf.numpy()))
    save_png(erf_picture(erf, scale=max(1, math.ceil(_PICTURE_PIXELS / max(height, width)))),
             erf_path(study.output, model.name, "png"))
    return {**row, "seconds": time.perf_counter() - started, "status": "ok"}


class _NotAnImageModel(Exception):
    """A model that fails on an image of the ERF's size (a video SR model, most often)."""


def _check_takes_images(network: torch.nn.Module, model: ModelEntry, channels: int, size: tuple[int, int],
                        device: torch.device) -> None:
    """Run ``network`` once on a zero image of the ERF's size, so that a model that cannot take images gets a row
    that says so, not its own unpacking error from inside the ERF."""
    image = torch.zeros(1, channels, *size, device=device)
    try:
        # no_grad, not inference_mode: a model that keeps a tensor it made (a mask per input size) must still
        # take gradients through it in the ERF that follows.
        with torch.no_grad(), eval_mode(network):
            network.to(device)(image)
    except Exception as error:
        raise _NotAnImageModel(f"model: `{model.field}` fails on an image (N, C, H, W) = {tuple(image.shape)} (the ERF "
                               f"is an image model's; a video SR model takes clips): {type(error).__name__}: {error}"
                               ) from error
