"""Watch the Local Attribution Maps of fixed probes change while an SR network trains."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lam_captum import pictures
from lam_captum.callbacks._probe import Probe
from lam_captum.explain import LAMResult, explain
from lam_captum import LAMSettings
from lam_captum.explain import settings_with
from lam_captum.imageio import save_png

PictureName = Literal["map", "heat_blend", "kde_blend", "sr", "window", "figure"]
PICTURE_NAMES: tuple[str, ...] = PictureName.__args__
DEFAULT_PICTURES: tuple[str, ...] = ("map", "heat_blend", "kde_blend", "sr", "window")

# More panels than this make the evolution picture too wide to read; epochs in between are left out.
_EVOLUTION_PANELS = 10


class LAMMonitor(Callback):
    r"""Log the Local Attribution Maps of fixed probes at the end of validation epochs.

    For every :class:`Probe` it runs :func:`lam_captum.explain.explain` on the LightningModule's current
    weights, so each logged number equals a standalone run. The LightningModule's ``forward`` must map
    ``(N, C, H, W)`` LR images to ``(N, C, sH, sW)`` SR images. Logged at the step Lightning logs
    validation metrics at, so that DI lines up with the validation loss:

    - to every logger: the scalars ``lam/<probe>/di``, ``lam/<probe>/gini``, ``lam/<probe>/delta`` (the
      convergence delta) and ``lam/seconds``, the time the callback took;
    - to every :class:`~lightning.pytorch.loggers.TensorBoardLogger`: the pictures chosen by ``images`` as
      ``lam/<probe>/<picture>``, and at the end of fitting ``lam/<probe>/evolution``, the maps of the
      logged epochs (at most 10, evenly spread) side by side with their DI. ``window`` is logged once, drawn
      on the HR image of a path probe or else on the bicubic-upscaled LR input.

    It runs in epochs 0, ``every_n_epochs``, ``2 * every_n_epochs``... of fitting and in every
    ``trainer.validate()``, never during the sanity check, at most once per global step, and only on global
    rank zero: it calls the bare LightningModule, never the DDP wrapper, so it starts no collective.
    Gradients are switched on, inference mode and autocast off, and every submodule's train/eval mode is
    given back; parameters and their ``.grad`` are left untouched. A failing probe is skipped with a warning.

    Args:
        probes: The probes (unique names), or one probe.
        every_n_epochs: Run in every n-th epoch of fitting.
        settings: The path settings (default: the paper's, :class:`~lam_captum.LAMSettings`).
        images: Pictures to log, from ``"map"`` (heat map), ``"heat_blend"``, ``"kde_blend"``, ``"sr"``,
            ``"window"``, ``"figure"`` (the demo's five panels); empty for scalars only.
        alpha: Weight of the LR image in the blends.
        save_dir: Also write the pictures as PNG files, ``save_dir/<probe>/epoch<E>_step<S>/<picture>.png``
            and ``save_dir/<probe>/evolution.png``: the way to keep them when no logger can take images.
        **setting_values: Fields of :class:`~lam_captum.LAMSettings` (``n_steps=25``, ...) that replace
            those of ``settings``.

    Attributes:
        history: Per probe name, one dict per run with ``epoch``, ``step`` (the global step), ``di``,
            ``gini``, ``delta``, ``seconds`` (LAM's own time) and ``map`` (nested lists of ints 0-255, one
            per LR pixel). Saved in checkpoints in plain types, so a resumed run continues it.

    Raises:
        TypeError: If ``probes`` holds something other than :class:`Probe`, or ``kernel_size`` is not an int.
        ValueError: For any other bad argument; the message names it.

    Example:
        >>> import torch
        >>> probe = Probe(torch.rand(3, 16, 16), (8, 8, 16), "centre")
        >>> monitor = LAMMonitor(probe, every_n_epochs=5, n_steps=8)
        >>> monitor.state_key
        "LAMMonitor{'probes': ['centre']}"
    """

    def __init__(
        self,
        probes: Probe | Sequence[Probe],
        every_n_epochs: int = 1,
        settings: LAMSettings | None = None,
        images: Sequence[PictureName] = DEFAULT_PICTURES,
        alpha: float = 0.5,
        save_dir: str | Path | None = None,
        **setting_values: Any,
    ) -> None:
        super().__init__()
        self.probes = _check_probes(probes)
        self.every_n_epochs = _check_every_n_epochs(every_n_epochs)
        # Built (and so validated) now rather than after the first training epoch.
        self.settings = settings_with(settings, setting_values)
        self.images = _check_images(images)
        self.alpha = pictures.check_alpha(alpha)
        self.save_dir = _check_save_dir(save_dir)
        self.history: dict[str, list[dict[str, Any]]] = {probe.name: [] for probe in self.probes}
        self._last_step: int | None = None
        self._warned_no_image_logger = False

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(probes=[probe.name for probe in self.probes])

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero or self._warned_no_image_logger or not self.images:
            return
        if _image_loggers(trainer):
            return
        self._warn_no_image_logger()

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.global_step == self._last_step:
            return
        if trainer.state.fn == TrainerFn.FITTING and trainer.current_epoch % self.every_n_epochs:
            return
        self._monitor(trainer, pl_module)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or not self.images or not self._has_picture_sink(trainer):
            return
        self._log_evolution(trainer)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": copy.deepcopy(self.history), "last_step": self._last_step}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = copy.deepcopy(state_dict["history"])
        for probe in self.probes:
            self.history.setdefault(probe.name, [])
        self._last_step = state_dict["last_step"]

    def _monitor(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Explain every probe, log the pictures as they come and all scalars at once."""
        started = time.perf_counter()
        self._last_step = trainer.global_step
        forward = _uncompiled_forward(pl_module)
        draw = bool(self.images) and self._has_picture_sink(trainer)
        metrics: dict[str, float] = {}
        # Validation runs under no_grad or inference_mode, and maybe autocast: tensors made here (a probe
        # read from disk, the pictures' sources) must be ordinary float32 tensors autograd can use.
        with torch.inference_mode(False), torch.autocast(pl_module.device.type, enabled=False):
            for probe in self.probes:
                result = self._explain(probe, forward, pl_module.device, trainer)
                if result is None:
                    continue
                self._record(probe, result, trainer)
                metrics.update(_scalars(probe, result))
                if draw:
                    self._log_pictures(probe, result, trainer)
        metrics["lam/seconds"] = time.perf_counter() - started
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=_logging_step(trainer))
            # Writes the CSV and flushes TensorBoard's writer, so the results show while training runs.
            logger.save()

    def _explain(
        self, probe: Probe, forward: Callable[[Tensor], Tensor], device: torch.device, trainer: pl.Trainer
    ) -> LAMResult | None:
        try:
            lr, hr = probe.load()
            result = explain(forward, lr, probe.window, self.settings, hr=hr, alpha=self.alpha, device=device)
        except Exception as error:  # whatever fails, training must go on
            self._warn_failure(probe, error, trainer)
            return None
        return result

    def _record(self, probe: Probe, result: LAMResult, trainer: pl.Trainer) -> None:
        self.history.setdefault(probe.name, []).append({
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "di": result.di,
            "gini": result.gini,
            "delta": result.delta,
            "seconds": result.seconds,
            # Quantised to 0-255: the evolution picture needs no more, and checkpoints stay small.
            "map": (result.map * 255).round().to(torch.uint8).tolist(),
        })

    def _log_pictures(self, probe: Probe, result: LAMResult, trainer: pl.Trainer) -> None:
        first_time = len(self.history[probe.name]) == 1
        names = [name for name in self.images if name != "window" or first_time]
        try:
            # The callback's "map" is the result's heat-map picture; its tag keeps the name.
            drawn = {name: result.picture("heat" if name == "map" else name) for name in names}
        except Exception as error:  # the scalars are logged all the same
            self._warn_failure(probe, error, trainer)
            return
        folder = f"epoch{trainer.current_epoch:03d}_step{trainer.global_step:06d}"
        self._publish(probe, drawn, trainer, folder)

    def _log_evolution(self, trainer: pl.Trainer) -> None:
        for probe in self.probes:
            entries = _evenly_spaced(self.history.get(probe.name, []), _EVOLUTION_PANELS)
            if not entries:
                continue
            maps = [np.asarray(entry["map"], dtype=np.float64) / 255 for entry in entries]
            try:
                picture = pictures.evolution_figure(maps, [_evolution_label(entry) for entry in entries])
            except Exception as error:  # fitting must not fail for a picture
                self._warn_failure(probe, error, trainer)
                continue
            self._publish(probe, {"evolution": picture}, trainer, folder="")
        for logger in _image_loggers(trainer):
            logger.save()

    def _publish(self, probe: Probe, drawn: dict[str, np.ndarray], trainer: pl.Trainer, folder: str) -> None:
        """Add the pictures to every TensorBoard and, if asked, write them to ``save_dir/<probe>/<folder>``."""
        for logger in _image_loggers(trainer):
            for name, picture in drawn.items():
                logger.experiment.add_image(f"lam/{probe.name}/{name}", picture, _logging_step(trainer),
                                            dataformats="HWC")
        if self.save_dir is None:
            return
        for name, picture in drawn.items():
            save_png(picture, self.save_dir / probe.name / folder / f"{name}.png")

    def _has_picture_sink(self, trainer: pl.Trainer) -> bool:
        return self.save_dir is not None or bool(_image_loggers(trainer))

    def _warn_failure(self, probe: Probe, error: Exception, trainer: pl.Trainer) -> None:
        hint = ""
        if isinstance(error, torch.cuda.OutOfMemoryError):
            # Give the memory back to the training step that comes next.
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            hint = "; a smaller `internal_batch_size` needs less memory"
        rank_zero_warn(f"LAMMonitor skipped probe {probe.name!r} at epoch {trainer.current_epoch}, step "
                       f"{trainer.global_step}: {type(error).__name__}: {error}{hint}", category=RuntimeWarning)

    def _warn_no_image_logger(self) -> None:
        self._warned_no_image_logger = True
        where = (f"they are written to `save_dir` {str(self.save_dir)!r} only" if self.save_dir is not None
                 else "pass `save_dir` to write them as PNG files, or `images=()` to log scalars only")
        rank_zero_warn(f"LAMMonitor found no TensorBoardLogger to take its pictures; {where}", category=UserWarning)


def _image_loggers(trainer: pl.Trainer) -> list[Logger]:
    return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def _logging_step(trainer: pl.Trainer) -> int:
    """The step Lightning logs validation metrics at (one less than ``global_step`` at the end of a training
    epoch), so that DI lines up with ``val_loss`` in TensorBoard; Lightning's own monitors use it too."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def _uncompiled_forward(pl_module: pl.LightningModule) -> Callable[[Tensor], Tensor]:
    """The module's forward without ``torch.compile``.

    LAM calls the model with its own batch size and with gradients on; a compiled forward would recompile
    for both (slow, and past the recompile limit it falls back anyway). Lightning keeps the original
    forward of a compiled LightningModule in ``_compiler_ctx``.
    """
    compiler_context = pl_module._compiler_ctx
    return compiler_context["original_forward"] if compiler_context else pl_module


def _scalars(probe: Probe, result: LAMResult) -> dict[str, float]:
    return {f"lam/{probe.name}/di": result.di, f"lam/{probe.name}/gini": result.gini,
            f"lam/{probe.name}/delta": result.delta}


def _evenly_spaced(entries: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """At most ``count`` entries, spread evenly from the first to the last."""
    if len(entries) <= count:
        return entries
    indices = np.linspace(0, len(entries) - 1, count).round().astype(int)
    return [entries[index] for index in indices]


def _evolution_label(entry: dict[str, Any]) -> str:
    height, width = len(entry["map"]), len(entry["map"][0])
    return f"epoch {entry['epoch']}, step {entry['step']}\nDI {entry['di']:.2f} (LR {height}x{width})"


def _check_probes(probes: Probe | Sequence[Probe]) -> list[Probe]:
    probes = [probes] if isinstance(probes, Probe) else probes
    if not isinstance(probes, Sequence) or isinstance(probes, str) or not probes:
        raise ValueError(f"`probes` must be a Probe or a non-empty sequence of them, got {probes!r}")
    for probe in probes:
        if not isinstance(probe, Probe):
            raise TypeError(f"`probes` must hold Probe objects, got {type(probe).__name__}")
    names = [probe.name for probe in probes]
    if len(set(names)) != len(names):
        raise ValueError(f"`probes` must have unique names (they name the tags), got {names}")
    return list(probes)


def _check_every_n_epochs(every_n_epochs: int) -> int:
    if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
        raise ValueError(f"`every_n_epochs` must be an integer >= 1, got {every_n_epochs!r}")
    return every_n_epochs


def _check_images(images: Sequence[str]) -> tuple[str, ...]:
    if isinstance(images, str) or not isinstance(images, Sequence):
        raise ValueError(f"`images` must be a sequence of picture names from {PICTURE_NAMES}, got {images!r}")
    unknown = [name for name in images if name not in PICTURE_NAMES]
    if unknown:
        raise ValueError(f"`images` must name pictures from {PICTURE_NAMES}, got unknown {unknown}")
    return tuple(dict.fromkeys(images))


def _check_save_dir(save_dir: str | Path | None) -> Path | None:
    if save_dir is None:
        return None
    if not isinstance(save_dir, (str, os.PathLike)) or not str(save_dir):
        raise ValueError(f"`save_dir` must be a folder path or None, got {save_dir!r}")
    return Path(save_dir)
