"""A study on Lightning's engine: ``Trainer.predict`` over the pending probes, one record per probe.

The work is a dataset of passes: the windows of one model and image that share one LAM pass (at most the
study's ``windows_per_pass``). Global rank 0 decides which probes are still to do and broadcasts the list,
so that every process builds the same passes; Lightning's distributed sampler hands each process its share.
Each predict step runs :func:`lam_captum.explain.explain_windows` on one pass (one forward pass and K input
gradients per path step; :func:`lam_captum.explain.explain` for a pass of one window, exactly as the
single-image CLI does; :func:`lam_captum.video.explain_clip` for a clip's probe, always a pass of its own),
and a prediction writer stores each pending probe's result as soon as the step ends. A failing pass is
retried window by window, so that a failure is recorded for the probe that caused it; a failing probe
becomes a record with its reason and never stops the run.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from typing_extensions import override

from lam_captum._atomic import write_atomically
from lam_captum.explain import LAMResult, explain, explain_windows, score_or_none
from lam_captum.functional import attribution_area
from lam_captum.imageio import save_png
from lam_captum.pictures import sr_picture
from lam_captum.sweep._lock import OutputFolderError, OutputLock, prepare_output
from lam_captum.sweep._quality import sr_psnr
from lam_captum.sweep._records import (
    assemble,
    keeps_maps,
    maps_path,
    needs_sr,
    pending_probes,
    picture_names,
    pictures_folder,
    probe_row,
    record_path,
    remove_temporary_files,
    sr_path,
    write_json,
)
from lam_captum.sweep._study import ImageEntry, ModelEntry, Study, StudyProbe, load_study
from lam_captum.video import ClipResult, explain_clip


@dataclasses.dataclass(frozen=True)
class ProbeOutcome:
    """What one predict step returns: the probe, its table row, and the full result when it succeeded (a
    :class:`~lam_captum.video.ClipResult` for a clip's probe)."""

    probe: StudyProbe
    row: dict[str, Any]
    result: LAMResult | ClipResult | None = None


@dataclasses.dataclass(frozen=True)
class SweepReport:
    """The outcome of :func:`run_sweep`.

    Attributes:
        output: The results folder (``probes.csv``, ``probes.jsonl``, ``models.csv``, ``plots/``).
        rows: The rows of ``probes.csv``, one per probe of the study, sorted by probe id.
        computed: Probes computed (successfully or not) in this run.
    """

    output: Path
    rows: list[dict[str, Any]]
    computed: int

    def count(self, status: str) -> int:
        """Rows with ``status`` ``"ok"``, ``"error"`` or ``"pending"``."""
        return sum(row["status"] == status for row in self.rows)


@dataclasses.dataclass(frozen=True)
class ProbePass:
    """The windows of one model and image that share one LAM pass, and those of them this run records.

    Attributes:
        probes: Every probe of the pass as the study groups them (:meth:`Study.passes`): the numbers of a
            window depend, in the last bits, on the windows it shares its pass with, so a pass is computed
            whole even when some of its probes are finished.
        pending: The probes whose records this run writes.
    """

    probes: tuple[StudyProbe, ...]
    pending: tuple[StudyProbe, ...]


class PassDataset(Dataset):
    """The passes of one run, one per item (None for an idle item)."""

    def __init__(self, passes: list[ProbePass | None]) -> None:
        self.passes = passes

    def __len__(self) -> int:
        return len(self.passes)

    def __getitem__(self, index: int) -> ProbePass | None:
        return self.passes[index]


def _one_pass(batch: list[ProbePass | None]) -> ProbePass | None:
    return batch[0]


def pending_passes(study: Study, pending: list[StudyProbe]) -> list[ProbePass]:
    """The study's passes that hold a pending probe, in the study's order."""
    wanted = {probe.id for probe in pending}
    passes = [ProbePass(group, tuple(probe for probe in group if probe.id in wanted)) for group in study.passes()]
    return [item for item in passes if item.pending]


class ProbeDataModule(LightningDataModule):
    """Serves the probes of a study that are not finished yet.

    Global rank 0 reads the records, removes a killed run's temporary files and broadcasts the
    pending probe ids; every process then builds the same dataset, whatever it saw on disk.

    Args:
        study: The study.
        limit: Compute at most this many of the pending probes (None: all).
    """

    def __init__(self, study: Study, limit: int | None = None) -> None:
        super().__init__()
        self.study = study
        self.limit = limit
        self.pending: list[StudyProbe] = []
        self.passes: list[ProbePass] = []
        self.total = 0
        self.finished = 0
        self.started_ns = 0

    @override
    def setup(self, stage: str) -> None:
        probes = {probe.id: probe for probe in self.study.probes()}
        self.total = len(probes)
        state = None
        if self.trainer.is_global_zero:
            remove_temporary_files(self.study.output)
            pending = pending_probes(self.study)
            state = ([probe.id for probe in pending[: self.limit]], len(probes) - len(pending), time.time_ns())
        pending_ids, self.finished, self.started_ns = self.trainer.strategy.broadcast(state, src=0)
        self.pending = [probes[probe_id] for probe_id in pending_ids]
        self.passes = pending_passes(self.study, self.pending)

    @override
    def predict_dataloader(self) -> DataLoader:
        # Lightning's distributed sampler needs an item for every process; None marks an idle one.
        idle = [None] * max(0, self.trainer.world_size - len(self.passes))
        return DataLoader(PassDataset(self.passes + idle), batch_size=1, shuffle=False, collate_fn=_one_pass)

    @override
    def transfer_batch_to_device(self, batch: ProbePass | None, device: torch.device, dataloader_idx: int
                                 ) -> ProbePass | None:
        # A probe only names its model, image and window; the step loads the tensors onto the device.
        return batch


class LAMProbeModule(LightningModule):
    """LAM as a LightningModule: each predict step explains one :class:`ProbePass` and returns a
    :class:`ProbeOutcome` per pending probe.

    The networks are built on first use and kept while consecutive passes use them (the passes come
    model by model); a network or image that fails to load fails its probes without retrying.

    Args:
        study: The study whose models, images and LAM parameters the probes use.
    """

    def __init__(self, study: Study) -> None:
        super().__init__()
        self.study = study
        self._models = _LastLoaded(_build_model, "model")
        self._images = _LastLoaded(_read_input, "image")
        self._checked_scales: set[tuple[str, bool]] = set()

    @override
    def predict_step(self, batch: ProbePass | None, batch_idx: int) -> list[ProbeOutcome] | None:
        if batch is None:
            return None
        if len(batch.probes) > 1:
            outcomes = self._explain_pass(batch)
            if outcomes is not None:
                return outcomes
        return [self._explain_alone(probe) for probe in batch.pending]

    def _explain_pass(self, batch: ProbePass) -> list[ProbeOutcome] | None:
        """The pending probes of a pass explained together; None if the pass fails (then each window runs
        alone, and a failure is recorded for the probe that causes it)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model, lr, hr = self._inputs(batch.probes[0])
                results = explain_windows(model, lr, [probe.window for probe in batch.probes],
                                          settings=self.study.lam, hr=hr, alpha=self.study.alpha, device=self.device)
            except Exception:  # reported per probe by the runs that follow
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()  # a pass that ran out of memory leaves its windows room to run alone
                return None
        psnr = _psnr(results[0], hr)
        by_id = {probe.id: result for probe, result in zip(batch.probes, results)}
        warning = _warning_text(caught)
        return [self._succeeded(probe, by_id[probe.id], psnr, warning) for probe in batch.pending]

    def _explain_alone(self, probe: StudyProbe) -> ProbeOutcome:
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            # "always": the same warning on another probe is news about that probe.
            warnings.simplefilter("always")
            try:
                model, lr, hr = self._inputs(probe)
                result = self._explain(probe, model, lr, hr)
            except _ProbeFailure as failure:
                return self._failed(probe, str(failure), started, caught)
            except Exception as error:  # any failure of one probe is recorded and the run goes on
                return self._failed(probe, f"lam: {type(error).__name__}: {error}", started, caught)
        return self._succeeded(probe, result, _psnr(result, hr), _warning_text(caught))

    def _explain(self, probe: StudyProbe, model: nn.Module, lr: Tensor, hr: Tensor | None) -> LAMResult | ClipResult:
        if probe.image.is_clip:
            return explain_clip(model, lr, probe.window, self.study.lam, frame=probe.image.frame, hr=hr,
                                alpha=self.study.alpha, device=self.device)
        return explain(model, lr, probe.window, settings=self.study.lam, hr=hr, alpha=self.study.alpha,
                       device=self.device)

    def _inputs(self, probe: StudyProbe) -> tuple[nn.Module, Tensor, Tensor | None]:
        """The probe's network and its LR (and HR) image or clip, loaded once for consecutive probes."""
        model = self._models.get(probe.model.name, probe.model, self.device)
        lr, hr = self._images.get((probe.image.name, probe.model.scale), probe.image, probe.model.scale)
        self._check_scale(model, probe.model, lr)
        return model, lr, hr

    @staticmethod
    def _succeeded(probe: StudyProbe, result: LAMResult | ClipResult, psnr: float | None, warning: str | None
                   ) -> ProbeOutcome:
        # A window of a pass reports its share of the pass's time (explain_windows divides it).
        row = probe_row(probe, di=result.di, gini=result.gini, negative_share=result.negative_share,
                        convergence_delta=result.delta, psnr=psnr, seconds=result.seconds, device=result.device,
                        status="ok", warning=warning, **_area_and_frames(result))
        return ProbeOutcome(probe, row, result)

    def _check_scale(self, model: nn.Module, entry: ModelEntry, lr: Tensor) -> None:
        """Fail every probe of a model whose output is not ``scale`` times its input, once per model and kind of
        input; a clip that the model cannot take fails the probe, naming the model."""
        clip = lr.dim() == 4
        if (entry.name, clip) in self._checked_scales:
            return
        try:
            with torch.inference_mode():
                output = model(lr[None].to(self.device))
        except Exception as error:
            if clip:
                raise _ProbeFailure(f"model: `{entry.field}` fails on the clip (N, T, C, H, W) = "
                                    f"{tuple(lr[None].shape)} (is it a video SR model?): {type(error).__name__}: "
                                    f"{error}") from error
            raise _ProbeFailure(f"model: `{entry.field}` fails on the image (N, C, H, W) = {tuple(lr[None].shape)} "
                                f"(a video SR model takes clips: `clip: true` on a folder of frames): "
                                f"{type(error).__name__}: {error}") from error
        if not isinstance(output, Tensor) or output.dim() not in ((4, 5) if clip else (4,)):
            return  # not an SR output at all: explain() or explain_clip() reports it in the API's words
        expected = (lr.shape[-2] * entry.scale, lr.shape[-1] * entry.scale)
        if tuple(output.shape[-2:]) != expected:
            message = (f"model: `{entry.field}.scale` is {entry.scale}, but the model turns a {lr.shape[-2]}x"
                       f"{lr.shape[-1]} input into {output.shape[-2]}x{output.shape[-1]}")
            self._models.fail(entry.name, message)
            raise _ProbeFailure(message)
        self._checked_scales.add((entry.name, clip))

    def _failed(self, probe: StudyProbe, message: str, started: float, caught: list) -> ProbeOutcome:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        row = probe_row(probe, seconds=time.perf_counter() - started, device=str(self.device), status="error",
                        error=message, warning=_warning_text(caught))
        return ProbeOutcome(probe, row)


class TrainerSettingsError(ValueError):
    """Settings that Lightning's Trainer rejects (accelerator, devices, strategy, nodes)."""


class _ProbeFailure(Exception):
    """A probe's failure whose message is already written for the table."""


class _LastLoaded:
    """The most recently loaded value (or its failure), reused while the key stays the same.

    Only one is kept: two large networks may not fit in memory together, and the probes come in
    key order. A failure is kept as its message, so each probe gets a fresh exception to report.
    """

    def __init__(self, load: Callable[..., Any], what: str) -> None:
        self._load = load
        self._what = what
        self._key: object = None
        self._value: Any = None
        self._failure: str | None = None

    def get(self, key: object, *args: Any) -> Any:
        if key != self._key:
            self._value = self._failure = None  # free the old value before loading the next
            try:
                self._value = self._load(*args)
            except Exception as error:  # a broken model or image fails its probes, not the run
                self._failure = f"{self._what}: {type(error).__name__}: {error}"
            self._key = key
        if self._failure is not None:
            raise _ProbeFailure(self._failure)
        return self._value

    def fail(self, key: object, message: str) -> None:
        self._key, self._value, self._failure = key, None, message


def _build_model(entry: ModelEntry, device: torch.device) -> nn.Module:
    return entry.build().to(device)


def _read_input(entry: ImageEntry, scale: int) -> tuple[Tensor, Tensor | None]:
    """The LR input and, for an HR file, the HR image cropped to a multiple of ``scale``; for a clip, its frames
    read so, stacked ``(T, C, H, W)``."""
    from lam_captum.imageio import load_input

    if not entry.is_clip:
        return load_input(entry.path, scale=scale, crop=entry.crop, lr=entry.lr)
    frames = [load_input(path, scale=scale, crop=entry.crop, lr=entry.lr) for path in entry.frames]
    return torch.stack([lr for lr, _ in frames]), None if entry.lr else torch.stack([hr for _, hr in frames])


def _psnr(result: LAMResult | ClipResult, hr: Tensor | None) -> float | None:
    """The PSNR of the SR output against the HR image; for a clip, of the output frame against its HR frame."""
    if hr is None:
        return None
    return sr_psnr(result.sr, hr[result.frame] if isinstance(result, ClipResult) else hr, shave=result.scale)


def _area_and_frames(result: LAMResult | ClipResult) -> dict[str, Any]:
    """An image's ``area_50``; a clip's ``area_50`` over all its frames' pixels and its per-frame columns."""
    if not isinstance(result, ClipResult):
        return {"area_50": result.area}
    return {"area_50": int(attribution_area(result.maps.flatten())) or None, "frame": result.frame,
            "frame_di": [score_or_none(float(value)) for value in result.frame_di],
            "temporal_profile": result.profile.tolist()}


def _warning_text(caught: list[warnings.WarningMessage]) -> str | None:
    messages = dict.fromkeys(f"{item.category.__name__}: {item.message}" for item in caught)
    return " | ".join(messages) or None


class ProbeRecordWriter(BasePredictionWriter):
    """Stores each probe as its step ends: maps and pictures if asked for, then its JSON record.

    The record goes last and every file is written atomically, so a record on disk means a complete
    probe. When the predict loop ends (or is interrupted), global rank 0 assembles the tables.

    Args:
        study: The study, which names the output folder and what to save.
    """

    def __init__(self, study: Study) -> None:
        super().__init__(write_interval="batch")
        self.study = study
        self.rows: list[dict[str, Any]] = []

    @override
    def write_on_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, prediction: list[ProbeOutcome] | None,
        batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        for outcome in prediction or ():
            self._write(outcome)

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.strategy.barrier("lam_captum.sweep.assemble")
        if trainer.is_global_zero:
            self.rows = assemble(self.study)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        # No barrier here: the other processes may be gone. The tables show what is on disk now.
        if trainer.is_global_zero:
            self.rows = assemble(self.study)

    def _write(self, outcome: ProbeOutcome) -> None:
        output, probe_id, image = self.study.output, outcome.probe.id, outcome.probe.image
        if outcome.result is not None and keeps_maps(self.study, image):
            write_atomically(maps_path(output, probe_id), lambda stream: _save_maps(stream, outcome.result))
        if outcome.result is not None and needs_sr(self.study, image):
            # Every window of the image rewrites the same pixels: the file is current whichever wrote last.
            save_png(sr_picture(outcome.result.sr), sr_path(output, outcome.probe.model.name, outcome.probe.image.name))
        if outcome.result is not None and self.study.pictures:
            _save_pictures(pictures_folder(output, probe_id), outcome.result, picture_names(image))
        write_json(record_path(output, probe_id), {**outcome.row, "fingerprint": outcome.probe.fingerprint})


def _save_maps(stream: Any, result: LAMResult | ClipResult) -> None:
    # A clip's map is (T, H, W), normalised over the whole clip.
    lam_map = result.maps if isinstance(result, ClipResult) else result.map
    np.savez_compressed(stream, attribution=result.attribution.numpy(), map=lam_map.numpy())


def _save_pictures(folder: Path, result: LAMResult | ClipResult, names: tuple[str, ...]) -> None:
    for name in names:
        save_png(result.picture(name), folder / f"{name}.png")


class SweepProgress(Callback):
    """A progress bar on global rank 0: probes done out of the study's total, and the running rate.

    The count includes the records that the other processes write, read from the output folder.
    """

    def __init__(self) -> None:
        self._bar = None
        self._counted = 0

    @override
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        from tqdm.auto import tqdm

        data = trainer.datamodule
        self._bar = tqdm(total=data.total, initial=data.finished, desc="LAM sweep", unit="probe", dynamic_ncols=True)

    @override
    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._bar is not None:
            self._refresh(trainer.datamodule)

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._bar is not None:
            self._refresh(trainer.datamodule)
            self._bar.close()
            self._bar = None

    def _refresh(self, data: ProbeDataModule) -> None:
        written = sum(_modified_since(record_path(data.study.output, probe.id), data.started_ns)
                      for probe in data.pending)
        self._bar.update(written - self._counted)
        self._counted = written


def _modified_since(path: Path, since_ns: int) -> bool:
    try:
        return path.stat().st_mtime_ns >= since_ns
    except OSError:
        return False


def run_sweep(
    study: Study | str | Path | Mapping[str, Any],
    *,
    output: str | Path | None = None,
    maps: bool | None = None,
    pictures: bool | None = None,
    limit: int | None = None,
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    strategy: str = "auto",
    num_nodes: int = 1,
    progress: bool = True,
) -> SweepReport | None:
    """Run a study: LAM for every (model, image, window) probe that is not finished yet.

    Finished probes (a current record on disk) are skipped, so re-running a killed or limited run
    completes it. With several processes (``devices`` > 1, ``num_nodes`` > 1) the output folder must
    be shared by all of them; Lightning's ``ddp`` strategy starts the other processes by running the
    calling script again, so a script calling this needs an ``if __name__ == "__main__":`` guard
    (in a notebook use ``strategy="ddp_notebook"``).

    Args:
        study: A :class:`Study`, a study file (YAML or JSON) or its content as a mapping.
        output: Results folder; default the study's ``output``.
        maps: Save each probe's attribution and map as ``maps/<probe id>.npz``; default the study's.
        pictures: Save each probe's pictures under ``pictures/<probe id>/``; default the study's.
        limit: Compute at most this many pending probes in this run (0: only rebuild the tables).
            With the study's ``erf`` section, the models' ERFs that are not current are computed at the
            end of every run but one with ``limit`` 0 (see :mod:`lam_captum.sweep._erf`).
        accelerator, devices, strategy, num_nodes: Passed to :class:`lightning.pytorch.Trainer`.
        progress: Show a progress bar of the probes.

    Returns:
        A :class:`SweepReport` on global rank 0; None on the other processes.

    Raises:
        StudyError: If the study is not valid (before any work starts).
        ValueError: If ``limit`` is negative.
        OutputFolderError: If the output folder is empty text, a file, cannot be created, or another sweep is writing
            to it (the message names that sweep's process and host).
        TrainerSettingsError: If Lightning rejects the Trainer settings.

    Example:
        >>> import tempfile
        >>> report = run_sweep({"models": ["default"], "images": [{"path": "builtin", "crop": [0, 0, 48, 48],
        ...     "windows": [[16, 16, 8]]}], "lam": {"n_steps": 2}}, output=tempfile.mkdtemp(), progress=False)
        >>> report.count("ok"), report.computed, report.rows[0]["probe_id"]
        (1, 1, 'default/grace_hopper/t0016-l0016-8x8')
    """
    study = study if isinstance(study, Study) else load_study(study)
    if output is not None and not str(output).strip():
        # Path("") is the working folder: an empty `-o "$OUT"` is more likely a variable that was not set.
        raise OutputFolderError(f"`output` must name a folder, got {str(output)!r} (for the working folder write '.')")
    study = dataclasses.replace(
        study,
        output=Path(output).expanduser().resolve() if output is not None else study.output,
        maps=study.maps if maps is None else maps,
        pictures=study.pictures if pictures is None else pictures,
    )
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"`limit` must be None or an integer >= 0, got {limit!r}")
    prepare_output(study.output)
    pending = pending_probes(study)
    if limit == 0 or not pending:
        with OutputLock(study.output):
            rows = assemble(study)
            _write_erfs(study, _assembly_device(accelerator), compute=limit != 0)
            return SweepReport(study.output, rows, computed=0)
    trainer = _trainer(study, accelerator, devices, strategy, num_nodes, progress)
    data = ProbeDataModule(study, limit)
    # The process that starts the run holds the folder until it ends; the processes it starts (other
    # ranks) are part of the same run. The operating system frees the lock if the process is killed.
    lock = OutputLock(study.output)
    if trainer.is_global_zero:
        lock.acquire()
    try:
        with warnings.catch_warnings():
            # One probe is seconds of LAM; loading it is microseconds, so worker processes would not help.
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            _predict(trainer, LAMProbeModule(study), data)
        writer = next(callback for callback in trainer.callbacks if isinstance(callback, ProbeRecordWriter))
        if trainer.is_global_zero:
            if not writer.rows:
                # ddp_spawn and ddp_notebook ran the probes in processes of their own, whose callbacks kept the
                # rows: the records on disk are the run's outcome, and every study has probes.
                writer.rows = assemble(study)
            _write_erfs(study, trainer.strategy.root_device)
    finally:
        lock.release()
        _release_process_group()
    if not trainer.is_global_zero:
        return None
    return SweepReport(study.output, writer.rows, computed=len(pending[:limit]))


def _predict(trainer: Trainer, module: LightningModule, data: LightningDataModule) -> None:
    """``trainer.predict``, with Ctrl-C raised as ``KeyboardInterrupt``: Lightning turns it into ``SystemExit(1)``
    (the status of failed probes) and leaves Ctrl-C ignored for the rest of the process."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        trainer.predict(module, datamodule=data, return_predictions=False)
    except SystemExit as exit_request:
        if not isinstance(exit_request.__context__, KeyboardInterrupt):
            raise
        raise KeyboardInterrupt from None
    finally:
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)


def _write_erfs(study: Study, device: torch.device, *, compute: bool = True) -> None:
    if study.erf is not None:
        from lam_captum.sweep._erf import write_erfs

        write_erfs(study, device, compute=compute)


def _assembly_device(accelerator: str) -> torch.device:
    """The device of a run without a Trainer (nothing left to explain): the GPU unless told otherwise."""
    return torch.device("cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu")


def _release_process_group() -> None:
    # Lightning leaves the process group it started alive; gloo's threads then outlive the interpreter
    # and abort the process at exit ("terminate called without an active exception"), which turns a
    # finished sweep into a failed exit status now and then.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _trainer(study: Study, accelerator: str, devices: Any, strategy: str, num_nodes: int, progress: bool) -> Trainer:
    callbacks = [ProbeRecordWriter(study)] + ([SweepProgress()] if progress else [])
    try:
        return Trainer(
            accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes, logger=False,
            callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            inference_mode=False, default_root_dir=study.output,
        )
    except (MisconfigurationException, ValueError, TypeError, RuntimeError, ImportError) as error:
        settings = f"accelerator={accelerator!r}, devices={devices!r}, strategy={strategy!r}, num_nodes={num_nodes!r}"
        raise TrainerSettingsError(f"invalid Trainer settings ({settings}): {error}") from error
