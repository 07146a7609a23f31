"""Watch the Local Attribution Maps of fixed probes change while an SR network trains."""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lam_captum import LAMSettings, pictures
from lam_captum.callbacks._loggers import add_images, custom_scalars_layout, image_loggers, markdown_table, tensorboards
from lam_captum.callbacks._probe import NAME_PATTERN, Probe
from lam_captum.erf import dataset_erf, erf_area_ratios
from lam_captum.explain import LAMResult, explain, explain_windows, settings_with
from lam_captum.functional._detectors import detector_margin
from lam_captum.imageio import save_png
from lam_captum.video import ClipResult, explain_clip

try:
    from lightning.pytorch.callbacks import WeightAveraging
except ImportError:  # an older Lightning, without weight averaging callbacks
    WeightAveraging = None

PictureName = Literal["map", "heat_blend", "kde_blend", "zoom", "signed", "sr", "window", "figure"]
PICTURE_NAMES: tuple[str, ...] = PictureName.__args__
DEFAULT_PICTURES: tuple[str, ...] = ("map", "heat_blend", "kde_blend", "zoom", "sr", "window")
# A clip probe's pictures (ClipResult's), logged whenever `images` is not empty; "window" as for an image.
CLIP_PICTURES: tuple[str, ...] = ("strip", "profile")

# A group of probes on one LR image, and that image's (lr, hr) as read for this run (None: unreadable).
_Loaded = tuple[list[Probe], tuple[Tensor, Tensor | None] | None]
# Three rows of four maps still read in a TensorBoard card; epochs in between are left out.
_EVOLUTION_PANELS = 12
DEFAULT_NAME = "lam"


class LAMMonitor(Callback):
    r"""Log the Local Attribution Maps of fixed probes at the end of validation epochs.

    For every :class:`Probe` it runs :func:`lam_captum.explain.explain` (an image probe) or
    :func:`lam_captum.video.explain_clip` (a clip probe) on the LightningModule's current weights, so each
    logged number equals a standalone run. The LightningModule's ``forward`` must map ``(N, C, H, W)`` LR
    images to ``(N, C, sH, sW)`` SR images, or for clip probes ``(N, T, C, H, W)`` LR clips to clips
    ``(N, T, C, sH, sW)`` (BasicVSR style) or to one frame ``(N, C, sH, sW)`` (EDVR style). Logged at the
    step Lightning logs validation metrics at, so that DI lines up with the validation loss (``lam`` is the
    default ``name``):

    - to every logger: the scalars ``lam/<probe>/di``, ``lam/<probe>/gini``, ``lam/<probe>/negative_share``
      (the share of the map from pixels whose attribution is negative), ``lam/<probe>/delta`` (the
      convergence delta) and ``lam/seconds``, the time the callback took. For a clip probe these are the
      whole clip's, and per input frame ``t`` there are also ``lam/<probe>/frame_di/<t>`` (the frame's DI)
      and ``lam/<probe>/profile/<t>`` (its share of the clip's attribution, the temporal profile); ``t``
      is zero-padded to the digits of the last frame (``frame_di/00`` ... ``frame_di/11`` for 12 frames),
      so the tags sort in frame order in every logger;
    - to every logger that takes pictures, through its own API (TensorBoard's ``add_image``, W&B's
      ``log_image``, or the ``log_image(key, images, step=...)`` of any other logger): the pictures chosen by
      ``images`` as ``lam/<probe>/<picture>``, and at the end of fitting ``lam/<probe>/evolution``, the maps of
      the logged epochs (at most 12, evenly spread) in rows of four, each with its epoch and DI. ``window`` is
      logged once, drawn on the HR image of a path probe or else on the bicubic-upscaled LR input. A clip
      probe has pictures of its own (:data:`lam_captum.video.CLIP_PICTURE_NAMES`): whenever ``images`` is not
      empty it logs ``lam/<probe>/strip`` (every frame's heat blend, the window on its frame) and
      ``lam/<probe>/profile`` (the temporal profile as bars), and once ``lam/<probe>/window`` (on the HR
      frame, else on the SR output frame) if ``images`` holds ``"window"``; the other names of ``images``
      are an image's pictures. Its evolution shows the clip's frames side by side;
    - to every :class:`~lightning.pytorch.loggers.TensorBoardLogger`: at fit start, the probes and the LAM
      settings as text (``lam/settings``), and at the end of the first validation of fitting (the sanity
      check, if there is one: the first moment the names of the validation metrics are known) a
      custom-scalars layout, a section "LAM" with the DI of every probe in one chart and the validation metrics
      the LightningModule logs in the chart next to it, and for each clip probe a chart of its temporal profile,
      one line per frame.

    It runs at the end of validation epochs: in fitting, those of epochs 0, ``every_n_epochs``,
    ``2 * every_n_epochs``... (where Lightning validates every k-th epoch, the first validated epoch from each
    multiple on); and in every ``trainer.validate()``. Never during the sanity check, never twice on the same
    weights (a ``validate()`` right after fitting; an optimizer's step or loaded weights are new ones), and only
    on global rank zero: it calls the bare LightningModule, never the DDP wrapper, so it starts no collective.
    Gradients are switched on, inference mode and autocast off, and every submodule's train/eval mode is
    given back; parameters and their ``.grad`` are left untouched.

    It never stops training: each part of its work (LAM for one probe, drawing, giving pictures or scalars to
    one logger, writing to ``save_dir``, the evolution picture) that raises becomes one ``RuntimeWarning``
    naming the probe, the part and the error, and the other parts go on.

    Args:
        probes: The probes (unique names); one :class:`Probe` alone is accepted too.
        every_n_epochs: Run in every n-th epoch of fitting (as above).
        settings: The path settings (default: the paper's, :class:`~lam_captum.LAMSettings`); in a
            LightningCLI config, ``settings: {n_steps: 8}``.
        images: Pictures to log, from ``"map"`` (heat map), ``"heat_blend"``, ``"kde_blend"``, ``"zoom"``
            (the map and the blend cropped to where 99% of the attribution is, upscaled), ``"signed"`` (the
            signed attribution), ``"sr"``, ``"window"``, ``"figure"`` (the demo's panels with a zoom and a
            colour bar); empty for scalars only. Clip probes log their own pictures whenever it is not
            empty (see above).
        alpha: Weight of the LR image in the blends.
        save_dir: Also write the pictures as PNG files, ``save_dir/<probe>/epoch<E>_step<S>/<picture>.png``,
            ``save_dir/<probe>/evolution.png`` and with ``erf``, ``save_dir/erf_epoch<E>_step<S>.png``
            (``save_dir/<name>/...`` for a ``name`` other than ``lam``): the way to keep them when no logger can
            take images.
        name: The first part of every tag and the key of the monitor's state in checkpoints. Two monitors in
            one Trainer need two names (Lightning refuses two with the same ``state_key``).
        erf: Also log the network's effective receptive field over the image probes' LR images (clip probes
            take no part; at least one image probe is needed), resized to 120x120 with nearest
            interpolation, as the published ERFs are, or to a given ``(height, width)``: the
            scalars ``lam/erf/area_{20,30,50,99}`` (RepLKNet's area ratios) and the picture ``lam/erf``, to
            watch how far the network looks while it learns.
        **setting_values: Fields of :class:`~lam_captum.LAMSettings` (``n_steps=25``, ...) that replace
            those of ``settings``.

    Attributes:
        history: Per probe name, one dict per run with ``epoch``, ``step`` (the global step), ``di``,
            ``gini``, ``negative_share``, ``delta``, ``seconds`` (LAM's own time) and ``map`` (a uint8 tensor,
            0-255 per LR pixel; for a clip, its frames' maps side by side, ``H`` rows of ``T * W``), and
            for a clip probe also ``frame_di`` and ``profile``, lists of one float per frame; a run of
            ``trainer.validate(ckpt_path=...)`` also has ``checkpoint``: the ``path`` of the weights it explained
            and their ``epoch`` and ``step`` (the entry's own are the trainer's counters). Saved in checkpoints
            in types ``torch.load(weights_only=True)`` reads, so a resumed run continues it; resumed with another
            probe list, it keeps the history of the probes still there and warns about the others.

    Raises:
        TypeError: If ``probes`` holds something other than :class:`Probe`.
        ValueError: For any other bad argument; the message names it (a bad LAM setting, ``kernel_size`` of
            another type than int included, raises :class:`~lam_captum.SettingsError`, a ValueError).

    Example:
        >>> import torch
        >>> probe = Probe(torch.rand(3, 16, 16), (8, 8, 16), "centre")
        >>> monitor = LAMMonitor([probe], every_n_epochs=5, n_steps=8)
        >>> monitor.state_key
        "LAMMonitor{'name': 'lam'}"
    """

    def __init__(
        self,
        # Annotated as a sequence only: LightningCLI would otherwise bury a probe's own error (a missing file)
        # under a failed try of the single-probe form.
        probes: Sequence[Probe],
        every_n_epochs: int = 1,
        settings: LAMSettings | None = None,
        images: Sequence[PictureName] = DEFAULT_PICTURES,
        alpha: float = 0.5,
        save_dir: str | Path | None = None,
        name: str = DEFAULT_NAME,
        erf: bool | tuple[int, int] = False,
        **setting_values: Any,
    ) -> None:
        super().__init__()
        self.probes = _check_probes(probes)
        self.every_n_epochs = _check_every_n_epochs(every_n_epochs)
        # Built (and so validated) now rather than after the first training epoch.
        self.settings = settings_with(settings, setting_values)
        for probe in self.probes:
            probe.check_window_room(detector_margin(self.settings.detector))
        self.images = _check_images(images)
        self.alpha = pictures.check_alpha(alpha)
        self.save_dir = _check_save_dir(save_dir)
        self.name = _check_name(name)
        self.erf_size = _check_erf(erf, self.probes)
        self.history: dict[str, list[dict[str, Any]]] = {probe.name: [] for probe in self.probes}
        self._last_weights: tuple[float, ...] | None = None  # see `_weights_state`
        self._last_fit_epoch: int | None = None
        self._validated_in_fit = False
        self._restoring_fit = True
        self._checkpoint: dict[str, Any] | None = None  # the checkpoint `validate()` / `test()` loaded
        self._warned_no_image_logger = False
        self._warned_weight_averaging = False
        self._metrics_before_validation: set[str] | None = None
        self._layout_run: tuple[str, ...] | None = None  # the logging run the layout was written to
        # The probes whose window picture went to the loggers' run `_window_run` (it is drawn once per run).
        self._window_logged: set[str] = set()
        self._window_run: tuple[str, ...] | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        if stage == "fit":  # Lightning's weight averaging swaps weights while fitting only
            self._warn_if_after_weight_averaging(trainer)
        # LAM runs at the end of validation epochs: a trainer that only tests or predicts needs no pictures.
        if self._warned_no_image_logger or not self.images or stage not in ("fit", "validate") \
                or image_loggers(trainer):
            return
        self._warn_no_image_logger()

    def _warn_if_after_weight_averaging(self, trainer: pl.Trainer) -> None:
        """Lightning's weight averaging (``EMAWeightAveraging``) validates the averaged weights and puts the
        trained ones back in its own ``on_validation_epoch_end``; listed before this monitor, that runs first, and
        LAM would explain other weights than those of the validation loss."""
        if WeightAveraging is None or self._warned_weight_averaging:
            return
        position = next((k for k, callback in enumerate(trainer.callbacks) if callback is self), 0)
        before = trainer.callbacks[:position]
        averaging = [type(callback).__name__ for callback in before if isinstance(callback, WeightAveraging)]
        if averaging:
            self._warned_weight_averaging = True
            rank_zero_warn(f"{self._who()} comes after {averaging[0]} in the Trainer's callbacks, which puts the "
                           "trained weights back at the end of validation before LAM runs: LAM would explain them, "
                           f"not the averaged weights the validation measured. List {self._who()} before "
                           f"{averaging[0]}", category=UserWarning)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Here Lightning has restored a resumed fit's epoch (not yet in `on_fit_start`). A fit that starts at or
        # before the last epoch explained is a new one (a monitor used again, a fine-tuning after `validate()` of a
        # pretrained checkpoint, a resume from a checkpoint without this monitor's state): its epochs are its own.
        # A fit that goes on after it (a resume, `fit()` again with more epochs) keeps to the schedule.
        if self._last_fit_epoch is not None and trainer.current_epoch <= self._last_fit_epoch:
            self._last_fit_epoch = None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validated_in_fit = False
        if not trainer.is_global_zero:
            return
        self._write_settings_text(trainer)

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._owes_layout(trainer):
            self._metrics_before_validation = set(trainer.callback_metrics)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the LightningModule's own `on_validation_epoch_end`, which runs after the callbacks': the metrics it
        # logs there (a PSNR over the whole validation set) are among the validation's.
        if self._owes_layout(trainer) and self._metrics_before_validation is not None:
            self._write_layout(trainer)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        fitting = trainer.state.fn == TrainerFn.FITTING
        self._validated_in_fit = self._validated_in_fit or fitting
        if fitting and not self._due(trainer.current_epoch):
            return
        weights = _weights_state(pl_module)
        if weights is not None and weights == self._last_weights:
            return
        self._last_weights = weights
        if fitting:
            self._last_fit_epoch = trainer.current_epoch
        self._monitor(trainer, pl_module)

    def _due(self, epoch: int) -> bool:
        """Whether a validation of fitting in ``epoch`` runs LAM: in every validation of the first validated
        epoch of each run of ``every_n_epochs`` epochs (0, n, 2n... where every epoch validates; where
        Lightning validates every k-th epoch, the first validated one after each multiple of n)."""
        last = self._last_fit_epoch
        return last is None or epoch == last or epoch // self.every_n_epochs > last // self.every_n_epochs

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if not self._validated_in_fit:
            rank_zero_warn(f"{self._who()} explained nothing while fitting: Lightning ran no validation epoch (no "
                           "val_dataloaders, limit_val_batches=0, or check_val_every_n_epoch larger than the epochs "
                           "trained), and LAM runs at the end of validation epochs", category=UserWarning)
        if self.images and self._has_picture_sink(trainer):
            self._log_evolution(trainer)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": copy.deepcopy(self.history), "last_fit_epoch": self._last_fit_epoch,
                "probes": {probe.name: _identity(probe) for probe in self.probes}}

    @override
    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # Lightning calls this just before `load_state_dict`, with the whole checkpoint: which weights these are.
        self._restoring_fit = trainer.state.fn == TrainerFn.FITTING
        self._checkpoint = None if self._restoring_fit else {
            "path": str(trainer.ckpt_path), "epoch": checkpoint.get("epoch"), "step": checkpoint.get("global_step")}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._restoring_fit and any(self.history.values()):
            # `trainer.validate(ckpt_path=...)` after fitting: the checkpoint's history is older than this one.
            return
        kept, dropped = self._split_history(state_dict)
        if dropped:
            rank_zero_warn(f"{self._who()} dropped the DI history of probes {dropped} from the checkpoint: they are "
                           f"no longer among its probes, or their image or window changed; kept {sorted(kept)}",
                           category=UserWarning)
        self.history = {probe.name: kept.get(probe.name, []) for probe in self.probes}
        self._last_fit_epoch = state_dict.get("last_fit_epoch")

    def _split_history(self, state_dict: dict[str, Any]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
        """The saved history of the probes still here (same name, image and window), and the names of the others."""
        # A state saved before probe identities were recorded has none: its probes are taken by name.
        saved_identities = state_dict.get("probes", {})
        current = {probe.name: _identity(probe) for probe in self.probes}
        kept, dropped = {}, []
        for probe_name, entries in state_dict["history"].items():
            if probe_name in current and saved_identities.get(probe_name, current[probe_name]) == current[probe_name]:
                # Checkpoints of earlier versions hold each map as lists of ints.
                kept[probe_name] = [{**entry, "map": torch.as_tensor(entry["map"], dtype=torch.uint8)}
                                    if "map" in entry else dict(entry) for entry in copy.deepcopy(entries)]
            elif entries:
                dropped.append(probe_name)
        return kept, dropped

    def _monitor(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Explain every probe, log the pictures as they come and all scalars at once."""
        started = time.perf_counter()
        forward = _uncompiled_forward(pl_module)
        draw = bool(self.images) and self._has_picture_sink(trainer)
        metrics: dict[str, float] = {}
        # Validation runs under no_grad or inference_mode, and maybe autocast: tensors made here (a probe
        # read from disk, the pictures' sources) must be ordinary float32 tensors autograd can use.
        with torch.inference_mode(False), torch.autocast(pl_module.device.type, enabled=False):
            inputs = [(group, self._load(group, trainer)) for group in _same_image_groups(self.probes)]
            results = self._explain_all(inputs, forward, pl_module.device, trainer)
            for probe in self.probes:
                result = results[probe.name]
                if result is None:
                    continue
                self._record(probe, result, trainer)
                metrics.update(self._scalars(probe, result))
                if draw:
                    self._log_pictures(probe, result, trainer)
            if self.erf_size is not None:
                metrics.update(self._log_erf(inputs, forward, pl_module.device, trainer, draw))
        metrics[f"{self.name}/seconds"] = time.perf_counter() - started
        self._log_metrics(metrics, trainer)

    def _log_erf(self, inputs: list[_Loaded], forward: Callable[[Tensor], Tensor], device: torch.device,
                 trainer: pl.Trainer, draw: bool) -> dict[str, float]:
        """The network's ERF over the probes' LR images: RepLKNet's area ratios as scalars, and its picture."""
        # The ERF is an image model's: clip probes do not take part.
        image_probes = [probe for probe in self.probes if not probe.is_clip]
        lr_of = {probe.name: None if loaded is None else loaded[0] for group, loaded in inputs for probe in group}
        with self._isolated(trainer, f"skipped the ERF of probes {[probe.name for probe in image_probes]}"):
            unread = [probe.name for probe in image_probes if lr_of[probe.name] is None]
            if unread:
                raise ValueError(f"the LR images of probes {unread} could not be read")
            erf = dataset_erf(forward, [lr_of[probe.name] for probe in image_probes], size=self.erf_size, device=device)
            ratios = {f"{self.name}/erf/area_{round(share * 100)}": area.ratio
                      for share, area in erf_area_ratios(erf).items()}
            if draw:
                scale = max(1, 240 // max(self.erf_size))
                picture = {f"{self.name}/erf": pictures.erf_picture(erf, scale=scale)}
                for logger in image_loggers(trainer):
                    with self._isolated(trainer, f"could not give the ERF picture to {type(logger).__name__}"):
                        add_images(logger, picture, self._step(trainer))
                if self.save_dir is not None:
                    failure = f"could not save the ERF picture in `save_dir` {str(self.save_dir)!r}"
                    with self._isolated(trainer, failure):
                        path = self._picture_folder() / f"erf_{self._folder(trainer)}.png"
                        save_png(picture[f"{self.name}/erf"], path)
            return ratios
        return {}

    def _load(self, group: list[Probe], trainer: pl.Trainer) -> tuple[Tensor, Tensor | None] | None:
        """The LR input and HR image the group's probes share, read once per run for the LAM runs and the ERF;
        None, with one warning per probe, if it cannot be read."""
        try:
            return group[0].load()
        except Exception as error:  # training must go on
            for probe in group:
                self._warn_failure(f"skipped probe {probe.name!r}", error, trainer)
            return None

    def _explain_all(
        self, inputs: list[_Loaded], forward: Callable[[Tensor], Tensor], device: torch.device, trainer: pl.Trainer
    ) -> dict[str, LAMResult | ClipResult | None]:
        """Every probe's result (None where it failed); probes on one image share the path's forward passes."""
        results: dict[str, LAMResult | ClipResult | None] = {}
        for group, loaded in inputs:
            if loaded is None:
                results.update((probe.name, None) for probe in group)
                continue
            shared = self._explain_together(group, loaded, forward, device) if len(group) > 1 else None
            if shared is not None:
                results.update((probe.name, result) for probe, result in zip(group, shared))
            else:
                results.update((probe.name, self._explain(probe, loaded, forward, device, trainer)) for probe in group)
        return results

    def _explain_together(
        self, group: list[Probe], loaded: tuple[Tensor, Tensor | None], forward: Callable[[Tensor], Tensor],
        device: torch.device,
    ) -> list[LAMResult] | None:
        """The probes of one image in one run, or None if it fails: then each probe runs alone, so that the
        warning names the probe at fault."""
        lr, hr = loaded
        try:
            return explain_windows(forward, lr, [probe.window for probe in group], self.settings, hr=hr,
                                   alpha=self.alpha, device=device)
        except Exception:  # reported per probe by the runs that follow
            return None

    def _explain(
        self, probe: Probe, loaded: tuple[Tensor, Tensor | None], forward: Callable[[Tensor], Tensor],
        device: torch.device, trainer: pl.Trainer,
    ) -> LAMResult | ClipResult | None:
        lr, hr = loaded
        with self._isolated(trainer, f"skipped probe {probe.name!r}"):
            if probe.is_clip:
                return explain_clip(forward, lr, probe.window, self.settings, frame=probe.frame, hr=hr,
                                    alpha=self.alpha, device=device)
            return explain(forward, lr, probe.window, self.settings, hr=hr, alpha=self.alpha, device=device)
        return None

    def _record(self, probe: Probe, result: LAMResult | ClipResult, trainer: pl.Trainer) -> None:
        entry = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "di": result.di,
            "gini": result.gini,
            "negative_share": result.negative_share,
            "delta": result.delta,
            "seconds": result.seconds,
            # Quantised to 0-255: the evolution picture needs no more. A tensor, not lists of ints: 1000 maps of 64x64
            # were 8.7 MB in a checkpoint and took 1.8 s to save and 3.8 s to load; as tensors 4.4 MB and 0.07 s.
            "map": (_flat_map(result) * 255).round().to(torch.uint8),
        }
        if isinstance(result, ClipResult):
            entry["frame_di"] = result.frame_di.tolist()
            entry["profile"] = result.profile.tolist()
        checkpoint = self._explained_checkpoint(trainer)
        if checkpoint is not None:
            entry["checkpoint"] = dict(checkpoint)
        self.history.setdefault(probe.name, []).append(entry)

    def _explained_checkpoint(self, trainer: pl.Trainer) -> dict[str, Any] | None:
        """The checkpoint whose weights this validation (or test) explains, as `validate(ckpt_path=...)` loaded it
        (path, epoch, step); None while fitting or for weights of no checkpoint."""
        if (trainer.state.fn != TrainerFn.FITTING and self._checkpoint is not None and trainer.ckpt_path is not None
                and str(trainer.ckpt_path) == self._checkpoint["path"]):
            return self._checkpoint
        return None

    def _counts(self, trainer: pl.Trainer) -> tuple[int, int] | None:
        """The epoch and global step of the checkpoint this run explains, if it records them."""
        checkpoint = self._explained_checkpoint(trainer)
        if checkpoint is None or not all(isinstance(checkpoint[key], int) for key in ("epoch", "step")):
            return None
        return checkpoint["epoch"], checkpoint["step"]

    def _folder(self, trainer: pl.Trainer) -> str:
        """This run's folder of pictures in ``save_dir``, ``epoch<E>_step<S>``: the trainer's, or the explained
        checkpoint's, so that checkpoints validated one after another (whose trainer counts stand still) keep a
        folder each."""
        counts = self._counts(trainer)
        return _run_folder(trainer) if counts is None else f"epoch{counts[0]:03d}_step{counts[1]:06d}"

    def _step(self, trainer: pl.Trainer) -> int:
        """The step this run logs at (:func:`_logging_step`), or the explained checkpoint's global step, so that
        its points stand where its weights were trained, not all at the step the trainer was left at."""
        counts = self._counts(trainer)
        return _logging_step(trainer) if counts is None else counts[1]

    def _scalars(self, probe: Probe, result: LAMResult | ClipResult) -> dict[str, float]:
        prefix = f"{self.name}/{probe.name}"
        scalars = {f"{prefix}/di": result.di, f"{prefix}/gini": result.gini, f"{prefix}/delta": result.delta,
                   f"{prefix}/negative_share": result.negative_share}
        if isinstance(result, ClipResult):
            scalars.update(_per_frame(f"{prefix}/frame_di", result.frame_di))
            scalars.update(_per_frame(f"{prefix}/profile", result.profile))
        return scalars

    def _log_metrics(self, metrics: dict[str, float], trainer: pl.Trainer) -> None:
        probe_names = [probe.name for probe in self.probes]
        for logger in trainer.loggers:
            with self._isolated(trainer, f"could not log the scalars of probes {probe_names} to "
                                         f"{type(logger).__name__}"):
                logger.log_metrics(metrics, step=self._step(trainer))
                # Writes the CSV and flushes TensorBoard's writer, so the results show while training runs.
                logger.save()

    def _log_pictures(self, probe: Probe, result: LAMResult | ClipResult, trainer: pl.Trainer) -> None:
        run = _logging_run(trainer)
        if run != self._window_run:
            self._window_logged.clear()
            self._window_run = run
        first_time = probe.name not in self._window_logged
        self._window_logged.add(probe.name)
        names = [name for name in self._picture_names(probe) if name != "window" or first_time]
        with self._isolated(trainer, f"could not draw the pictures of probe {probe.name!r}"):
            # The callback's "map" is the result's heat-map picture; its tag keeps the name.
            drawn = {name: result.picture("heat" if name == "map" else name) for name in names}
            self._publish(probe, drawn, trainer, self._folder(trainer))

    def _picture_names(self, probe: Probe) -> tuple[str, ...]:
        """The pictures of ``probe``: those of ``images`` for an image, the clip pictures for a clip."""
        if not probe.is_clip:
            return self.images
        return (*CLIP_PICTURES, *(("window",) if "window" in self.images else ()))

    def _log_evolution(self, trainer: pl.Trainer) -> None:
        for probe in self.probes:
            entries = _evenly_spaced(self.history.get(probe.name, []), _EVOLUTION_PANELS)
            if not entries:
                continue
            with self._isolated(trainer, f"could not draw the evolution of probe {probe.name!r}"):
                maps = [np.asarray(entry["map"], dtype=np.float64) / 255 for entry in entries]
                picture = pictures.evolution_figure(maps, [_evolution_label(entry) for entry in entries])
                self._publish(probe, {"evolution": picture}, trainer, folder="")
        for logger in image_loggers(trainer):
            with self._isolated(trainer, f"could not save {type(logger).__name__}"):
                logger.save()

    def _publish(self, probe: Probe, drawn: dict[str, np.ndarray], trainer: pl.Trainer, folder: str) -> None:
        """Give the pictures to every logger that takes them and, if asked, write them to ``save_dir``."""
        tagged = {f"{self.name}/{probe.name}/{name}": picture for name, picture in drawn.items()}
        for logger in image_loggers(trainer):
            with self._isolated(trainer, f"could not give the pictures of probe {probe.name!r} to "
                                         f"{type(logger).__name__}"):
                add_images(logger, tagged, self._step(trainer))
        if self.save_dir is None:
            return
        with self._isolated(trainer, f"could not save the pictures of probe {probe.name!r} in `save_dir` "
                                     f"{str(self.save_dir)!r}"):
            for name, picture in drawn.items():
                save_png(picture, self._picture_folder() / probe.name / folder / f"{name}.png")

    def _write_settings_text(self, trainer: pl.Trainer) -> None:
        # A frame column only where there are clips, with "-" for the images beside them.
        columns = ["probe", "image", "window", *(["frame"] if any(p.is_clip for p in self.probes) else []), "scale"]
        # A tensor probe is the LR input already: its scale is the model's, whatever the Probe's field says.
        rows = [{"probe": probe.name, **_identity(probe), "scale": "model's" if isinstance(probe.image, Tensor)
                 else probe.scale} for probe in self.probes]
        probes = [{column: row.get(column, "-") for column in columns} for row in rows]
        monitor = {"every_n_epochs": self.every_n_epochs, "images": ", ".join(self.images) or "none",
                   "alpha": self.alpha, "save_dir": self.save_dir}
        text = "\n\n".join([markdown_table(probes), markdown_table([self.settings.to_dict()]),
                            markdown_table([monitor])])
        for logger in tensorboards(trainer):
            with self._isolated(trainer, f"could not write the settings of probes {[p.name for p in self.probes]} "
                                         f"to {type(logger).__name__}"):
                logger.experiment.add_text(f"{self.name}/settings", text, global_step=trainer.global_step)

    def _owes_layout(self, trainer: pl.Trainer) -> bool:
        """Whether this monitor writes the custom-scalars layout now: the first LAMMonitor of the Trainer
        writes one layout for all of them (TensorBoard keeps one per run), once, during fitting, at its first
        validation after the sanity check (which may log fewer metrics).

        True on every rank, not only on rank zero: reading ``callback_metrics`` reduces metrics logged with
        ``sync_dist``, a collective that every process must enter at the same point.
        """
        if (trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking
                or self._layout_run == _logging_run(trainer)):
            return False
        monitors = [callback for callback in trainer.callbacks if isinstance(callback, LAMMonitor)]
        return monitors[0] is self and bool(tensorboards(trainer))

    def _write_layout(self, trainer: pl.Trainer) -> None:
        self._layout_run = _logging_run(trainer)
        validation_metrics = sorted(set(trainer.callback_metrics) - self._metrics_before_validation)
        if not trainer.is_global_zero:
            return
        monitors = [callback for callback in trainer.callbacks if isinstance(callback, LAMMonitor)]
        sections = {monitor._section_title(): [f"{monitor.name}/{probe.name}/di" for probe in monitor.probes]
                    for monitor in monitors}
        profiles = {monitor._section_title(): {probe.name: f"{monitor.name}/{probe.name}/profile"
                                               for probe in monitor.probes if probe.is_clip} for monitor in monitors}
        layout = custom_scalars_layout(sections, validation_metrics, profiles)
        for logger in tensorboards(trainer):
            with self._isolated(trainer, f"could not write the custom-scalars layout to {type(logger).__name__}"):
                logger.experiment.add_custom_scalars(layout)

    def _picture_folder(self) -> Path:
        # A second monitor's pictures get their own folder, so that two monitors can share one `save_dir`.
        return self.save_dir if self.name == DEFAULT_NAME else self.save_dir / self.name

    def _section_title(self) -> str:
        return "LAM" if self.name == DEFAULT_NAME else f"LAM {self.name}"

    def _has_picture_sink(self, trainer: pl.Trainer) -> bool:
        return self.save_dir is not None or bool(image_loggers(trainer))

    @contextlib.contextmanager
    def _isolated(self, trainer: pl.Trainer, failure: str) -> Iterator[None]:
        """Run one part of the work; whatever it raises becomes one warning, because training must go on."""
        try:
            yield
        except Exception as error:
            self._warn_failure(failure, error, trainer)

    def _warn_failure(self, failure: str, error: Exception, trainer: pl.Trainer) -> None:
        hint = ""
        if isinstance(error, torch.cuda.OutOfMemoryError):
            # Give the memory back to the training step that comes next.
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            hint = "; a smaller `internal_batch_size` needs less memory"
        rank_zero_warn(f"{self._who()} {failure} at epoch {trainer.current_epoch}, step {trainer.global_step}: "
                       f"{type(error).__name__}: {error}{hint}", category=RuntimeWarning)

    def _warn_no_image_logger(self) -> None:
        self._warned_no_image_logger = True
        where = (f"they are written to `save_dir` {str(self.save_dir)!r} only" if self.save_dir is not None
                 else "pass `save_dir` to write them as PNG files, or `images=()` to log scalars only")
        rank_zero_warn(f"{self._who()} found no logger to take its pictures (no TensorBoardLogger, WandbLogger or "
                       f"other logger with a `log_image` method); {where}", category=UserWarning)

    def _who(self) -> str:
        return "LAMMonitor" if self.name == DEFAULT_NAME else f"LAMMonitor {self.name!r}"


def _logging_run(trainer: pl.Trainer) -> tuple[str, ...]:
    """The runs the trainer's loggers write to (a TensorBoard folder, a CSV folder, a W&B run): a new run gets the
    window picture and the custom-scalars layout again, a fit that goes on in the same run does not."""
    return tuple(f"{type(logger).__name__}:{getattr(logger, 'log_dir', None) or getattr(logger, 'version', None)}"
                 for logger in trainer.loggers)


def _logging_step(trainer: pl.Trainer) -> int:
    """The step Lightning logs validation metrics at (one less than ``global_step`` at the end of a training
    epoch), so that DI lines up with ``val_loss`` in TensorBoard; Lightning's own monitors use it too."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def _same_image_groups(probes: Sequence[Probe]) -> list[list[Probe]]:
    """The probes in groups that explain the same LR image (the same file at the same scale, or equal tensors);
    a clip probe is a group of its own, since the shared run (``explain_windows``) takes images only."""
    groups: list[list[Probe]] = []
    for probe in probes:
        group = None if probe.is_clip else next(
            (group for group in groups if not group[0].is_clip and _same_image(group[0], probe)), None)
        if group is None:
            groups.append([probe])
        else:
            group.append(probe)
    return groups


def _same_image(first: Probe, second: Probe) -> bool:
    if isinstance(first.image, Tensor) and isinstance(second.image, Tensor):
        return first.image.shape == second.image.shape and bool(torch.equal(first.image, second.image))
    return not isinstance(first.image, Tensor) and first.image == second.image and first.scale == second.scale


def _uncompiled_forward(pl_module: pl.LightningModule) -> Callable[[Tensor], Tensor]:
    """The module's forward without ``torch.compile``.

    LAM calls the model with its own batch size and with gradients on; a compiled forward would recompile
    for both (slow, and past the recompile limit it falls back anyway). Lightning keeps the original
    forward of a compiled LightningModule in ``_compiler_ctx``.
    """
    compiler_context = pl_module._compiler_ctx
    return compiler_context["original_forward"] if compiler_context else pl_module


def _identity(probe: Probe) -> dict[str, str]:
    """What makes a probe's history its own beyond its name, in plain strings for checkpoints and text.

    A path probe is known by its path (a folder of frames with their count), a tensor probe by its shape
    only: its values may differ in the last bit between a run and its resumption (a crop recomputed on
    another device) and still be the same probe. A clip probe is also known by its output frame; an image
    probe has no ``frame`` key, so that histories saved before clips existed still match.
    """
    window = probe.window
    image = probe.image
    if isinstance(image, Tensor):
        source = f"tensor {'x'.join(map(str, image.shape))}"
    else:
        source = f"{image} ({probe.frames} frames)" if probe.is_clip else str(image)
    identity = {"image": source, "window": f"({window.top}, {window.left}, {window.height}, {window.width})"}
    if probe.is_clip:
        identity["frame"] = str(probe.output_frame)
    return identity


def _flat_map(result: LAMResult | ClipResult) -> Tensor:
    """The map of an image, or a clip's per-frame maps side by side ``(H, T * W)``: one picture either way."""
    if isinstance(result, ClipResult):
        return result.maps.permute(1, 0, 2).flatten(1)
    return result.map


def _per_frame(prefix: str, values: Tensor) -> dict[str, float]:
    """One scalar per frame, ``<prefix>/<t>``; ``t`` is zero-padded (``07`` in a clip of 12) so that the tags
    sort in frame order wherever a logger sorts them as text (CSV columns, W&B panels)."""
    digits = len(str(len(values) - 1))
    return {f"{prefix}/{index:0{digits}d}": float(value) for index, value in enumerate(values)}


def _evenly_spaced(entries: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """At most ``count`` entries, spread evenly from the first to the last."""
    if len(entries) <= count:
        return entries
    indices = np.linspace(0, len(entries) - 1, count).round().astype(int)
    return [entries[index] for index in indices]


def _evolution_label(entry: dict[str, Any]) -> str:
    # Two short lines: a quarter of a TensorBoard card is about 80 pixels wide.
    return f"epoch {entry['epoch']}\nDI {entry['di']:.2f}"


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


def _check_erf(erf: bool | tuple[int, int], probes: Sequence[Probe]) -> tuple[int, int] | None:
    """None for no ERF; ``True`` means the published size, 120x120."""
    size = _erf_size(erf)
    if size is not None and all(probe.is_clip for probe in probes):
        raise ValueError(f"`erf`={erf!r} needs at least one image probe: the ERF is taken over the LR images of "
                         f"the image probes, and probes {[probe.name for probe in probes]} are all clips")
    return size


def _erf_size(erf: bool | tuple[int, int]) -> tuple[int, int] | None:
    if erf is True:
        return (120, 120)
    if erf is False or erf is None:
        return None
    if (isinstance(erf, Sequence) and len(erf) == 2
            and all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in erf)):
        return (erf[0], erf[1])
    raise ValueError(f"`erf` must be True, False or a (height, width) of positive ints, got {erf!r}")


def _run_folder(trainer: pl.Trainer) -> str:
    """The name of one run's pictures in ``save_dir``: ``epoch<E>_step<S>``."""
    return f"epoch{trainer.current_epoch:03d}_step{trainer.global_step:06d}"


def _weights_state(module: torch.nn.Module) -> tuple[float, ...] | None:
    """Which weights a module holds, by their values: the sum and the sum of squares of each parameter and
    buffer, in float64 (one pass over the weights, milliseconds beside LAM's seconds). Version counters would
    be cheaper, but fused optimizers (``Adam(fused=True)``) and ``.data`` updates leave them as they were.
    None where they cannot be read (the run then goes ahead).

    Example:
        >>> model = torch.nn.Linear(2, 2)
        >>> before = _weights_state(model)
        >>> with torch.no_grad():
        ...     _ = model.weight.data.add_(0.5)
        >>> _weights_state(model) == before
        False
    """
    try:
        with torch.no_grad():
            by_device: dict[torch.device, list[Tensor]] = {}
            for tensor in (*module.parameters(), *module.buffers()):
                values = tensor.detach()
                if values.is_complex() or values.dtype == torch.bool:
                    continue
                # The norm reads a float tensor in place; an integer buffer (BatchNorm's count) is small.
                norm = (torch.linalg.vector_norm(values, dtype=torch.float64) if values.is_floating_point()
                        else values.to(torch.float64).square().sum())
                by_device.setdefault(values.device, []).extend([values.sum(dtype=torch.float64), norm])
            return tuple(value for stats in by_device.values() for value in torch.stack(stats).tolist())
    except Exception:  # noqa: BLE001 - sharded or meta weights, exotic dtypes: not a reason to skip LAM
        return None


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


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"`name` must be letters, digits, '_', '-' or '.', not dots alone (it starts every tag and "
                         f"names a folder), got {name!r}")
    return name
