"""LAMMonitor inside real Lightning runs: what reaches the loggers, and what it leaves untouched."""

from __future__ import annotations

import csv
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lam_captum.callbacks import PICTURE_NAMES, LAMMonitor, Probe
from lam_captum.explain import explain, explain_windows
from lam_captum.imageio import load_image, save_png

SCALE = 2
LAM_ARGUMENTS = {"n_steps": 4, "sigma": 1.2, "kernel_size": 5}
DEFAULT_TAGS = ("map", "heat_blend", "kde_blend", "zoom", "sr")
# Lightning logs validation metrics at the number of optimizer steps before the epoch's last one.
LOGGED_STEPS = [1, 3]


class L1Training(LightningModule):
    """The training of the tests' SR modules: L1 loss to the HR target, ``val_loss`` logged, Adam."""

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
        lr, hr = batch
        return nn.functional.l1_loss(self(lr), hr)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> None:
        lr, hr = batch
        self.log("val_loss", nn.functional.l1_loss(self(lr), hr))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class TinySR(L1Training):
    """x2 SR with BatchNorm and dropout, so that the train/eval mode of every submodule matters."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2),
            nn.Conv2d(8, channels * SCALE**2, 3, padding=1), nn.PixelShuffle(SCALE),
        )

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.net(lr)


def sample_images(count: int = 8, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random LR images in [0, 1] and their nearest-upscaled HR targets."""
    generator = torch.Generator().manual_seed(1)
    coarse = torch.rand(count, 3, size // 3, size // 3, generator=generator)
    lr = nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    return lr, nn.functional.interpolate(lr, scale_factor=SCALE, mode="nearest")


def loader() -> DataLoader:
    return DataLoader(TensorDataset(*sample_images()), batch_size=4)


def probe(name: str = "centre", window: tuple[int, ...] = (8, 8, 8), index: int = 0) -> Probe:
    return Probe(sample_images()[0][index], window, name)


def trainer(tmp_path: Path, callbacks: list[Callback], **options) -> Trainer:
    settings = {"limit_train_batches": 2, "limit_val_batches": 1, "max_epochs": 2, "enable_progress_bar": False,
                "enable_model_summary": False, "default_root_dir": tmp_path, "callbacks": callbacks}
    return Trainer(**{**settings, **options})


def plain(value: object) -> object:
    """``value`` (a history, a state) with its tensors (the maps) as lists, to compare with ``==``."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def read_events(log_dir: str | Path) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return events


def steps(events: EventAccumulator, tag: str) -> list[int]:
    kind = events.Images if tag in events.Tags()["images"] else events.Scalars
    return [event.step for event in kind(tag)]


@pytest.fixture
def hr_file(tmp_path: Path) -> Path:
    """An HR image file 24x26: cropped to 24x26 and downscaled by 2 it gives a 12x13 LR input."""
    hr = nn.functional.interpolate(sample_images()[0][1:2], size=(24, 26), mode="bilinear", align_corners=False)[0]
    return save_png(hr, tmp_path / "probe_hr.png")


def test_logs_every_probe_every_epoch_to_tensorboard(tmp_path: Path, hr_file: Path) -> None:
    probes = [probe("centre"), Probe(hr_file, (4, 6, 10), "file", scale=SCALE)]
    monitor = LAMMonitor(probes, **LAM_ARGUMENTS, images=(*DEFAULT_TAGS, "window", "figure"))
    run = trainer(tmp_path, [monitor], num_sanity_val_steps=1)
    run.fit(TinySR(), loader(), loader())

    events = read_events(run.logger.log_dir)
    expected_images, expected_scalars = set(), {"lam/seconds", "val_loss", "epoch"}
    for name in ("centre", "file"):
        for tag in (*DEFAULT_TAGS, "figure"):
            assert steps(events, f"lam/{name}/{tag}") == LOGGED_STEPS
        assert steps(events, f"lam/{name}/window") == LOGGED_STEPS[:1]
        assert steps(events, f"lam/{name}/evolution") == [run.global_step]
        for tag in ("di", "gini", "negative_share", "delta"):
            assert steps(events, f"lam/{name}/{tag}") == LOGGED_STEPS
        expected_images |= {f"lam/{name}/{tag}" for tag in (*DEFAULT_TAGS, "figure", "window", "evolution")}
        expected_scalars |= {f"lam/{name}/{tag}" for tag in ("di", "gini", "negative_share", "delta")}
    assert set(events.Tags()["images"]) == expected_images
    assert set(events.Tags()["scalars"]) == expected_scalars
    # Sanity checking logs nothing, and DI shares its x axis with the validation loss.
    assert steps(events, "lam/seconds") == steps(events, "val_loss") == LOGGED_STEPS
    assert all(event.value > 0 for event in events.Scalars("lam/seconds"))
    assert [entry["epoch"] for entry in monitor.history["centre"]] == [0, 1]
    sizes = {(events.Images(f"lam/{name}/map")[0].height, events.Images(f"lam/{name}/map")[0].width)
             for name in ("centre", "file")}
    assert sizes == {(24, 24), (24, 26)}


def test_every_n_epochs_and_never_twice_on_the_same_weights(tmp_path: Path) -> None:
    monitor = LAMMonitor(probe(), every_n_epochs=2, **LAM_ARGUMENTS, images=())
    run = trainer(tmp_path, [monitor], max_epochs=3, logger=False, enable_checkpointing=False)
    model = TinySR()
    run.fit(model, loader(), loader())
    assert [(entry["epoch"], entry["step"]) for entry in monitor.history["centre"]] == [(0, 2), (2, 6)]

    run.validate(model, loader())
    assert len(monitor.history["centre"]) == 2, "the same weights were explained twice"
    # Other weights on the same trainer (a model per checkpoint, loaded by hand) are explained, each once;
    # a new model with the same weights is the same weights.
    for shift in (0.1, 0.2, 0.2):
        other = TinySR()
        with torch.no_grad():
            other.net[0].weight.add_(shift)
        run.validate(other, loader())
    assert len(monitor.history["centre"]) == 4
    model.load_state_dict(TinySR().state_dict())
    run.validate(model, loader())
    assert len(monitor.history["centre"]) == 5


class FusedAdamSR(TinySR):
    """Fused Adam updates the weights without bumping their tensors' version counters."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2, fused=True)


def test_weights_a_fused_optimizer_changed_are_new_weights(tmp_path: Path) -> None:
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, images=())
    trainer(tmp_path, [monitor], max_epochs=3, logger=False, enable_checkpointing=False).fit(
        FusedAdamSR(), loader(), loader())
    assert [entry["epoch"] for entry in monitor.history["centre"]] == [0, 1, 2]


@pytest.mark.parametrize(("every_n_epochs", "validated_every", "explained"),
                         [(2, 2, [1, 3, 5]), (4, 2, [1, 5]), (3, 3, [2, 5]), (1, 2, [1, 3, 5]), (2, 1, [0, 2, 4])])
def test_every_n_epochs_meets_lightnings_check_val_every_n_epoch(tmp_path: Path, every_n_epochs: int,
                                                                  validated_every: int, explained: list[int]) -> None:
    # Lightning validates after epochs k-1, 2k-1...: LAM runs in the first validated epoch from each multiple of n.
    monitor = LAMMonitor(probe(), every_n_epochs=every_n_epochs, **LAM_ARGUMENTS, images=())
    run = trainer(tmp_path, [monitor], max_epochs=6, logger=False, enable_checkpointing=False,
                  check_val_every_n_epoch=validated_every, num_sanity_val_steps=0)
    run.fit(TinySR(), loader(), loader())
    assert [entry["epoch"] for entry in monitor.history["centre"]] == explained


def test_validating_a_checkpoint_keeps_the_history_and_names_the_weights(tmp_path: Path) -> None:
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, images=())
    saver = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_top_k=-1)
    run = trainer(tmp_path, [monitor, saver], max_epochs=3, logger=False)
    run.fit(TinySR(), loader(), loader())
    first = tmp_path / "checkpoints" / "epoch=0-step=2.ckpt"
    run.validate(TinySR(), loader(), ckpt_path=first)
    assert [entry["epoch"] for entry in monitor.history["centre"][:3]] == [0, 1, 2]
    assert monitor.history["centre"][3]["checkpoint"] == {"path": str(first), "epoch": 0, "step": 2}

    # In a new process, the checkpoint's history is all there is: it is kept, and the run added to it.
    fresh = LAMMonitor(probe(), **LAM_ARGUMENTS, images=())
    trainer(tmp_path, [fresh], logger=False).validate(TinySR(), loader(), ckpt_path=tmp_path / "checkpoints" /
                                                       "epoch=1-step=4.ckpt")
    assert [entry["epoch"] for entry in fresh.history["centre"][:2]] == [0, 1]
    assert fresh.history["centre"][2]["checkpoint"]["step"] == 4


def test_checkpoints_validated_one_after_another_keep_their_own_pictures_and_steps(tmp_path: Path) -> None:
    saver = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_top_k=-1)
    trainer(tmp_path, [saver], max_epochs=3, logger=False).fit(TinySR(), loader(), loader())
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, images=("map",), save_dir=tmp_path / "pictures")
    explaining = trainer(tmp_path, [monitor])
    for epoch in range(3):  # the trainer's epoch and step stand still from one validate() to the next
        checkpoint = tmp_path / "checkpoints" / f"epoch={epoch}-step={2 * epoch + 2}.ckpt"
        explaining.validate(TinySR(), loader(), ckpt_path=checkpoint)
    assert sorted(path.name for path in (tmp_path / "pictures" / "centre").iterdir()) == [
        "epoch000_step000002", "epoch001_step000004", "epoch002_step000006"]
    events = read_events(explaining.logger.log_dir)
    assert steps(events, "lam/centre/map") == steps(events, "lam/centre/di") == [2, 4, 6]


def test_listed_after_lightnings_weight_averaging_it_warns_that_it_would_explain_other_weights(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import EMAWeightAveraging

    for order in ("first", "after"):
        monitor, averaging = LAMMonitor(probe(), **LAM_ARGUMENTS, images=()), EMAWeightAveraging(decay=0.5)
        callbacks = [monitor, averaging] if order == "first" else [averaging, monitor]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer(tmp_path, callbacks, max_epochs=1, logger=False).fit(TinySR(), loader(), loader())
        said = [str(w.message) for w in caught if "EMAWeightAveraging in the Trainer's callbacks" in str(w.message)]
        assert said == ([] if order == "first" else [
            "LAMMonitor comes after EMAWeightAveraging in the Trainer's callbacks, which puts the trained weights back "
            "at the end of validation before LAM runs: LAM would explain them, not the averaged weights the "
            "validation measured. List LAMMonitor before EMAWeightAveraging"])
    # Outside fitting Lightning's weight averaging swaps nothing: no warning.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(tmp_path, [EMAWeightAveraging(), LAMMonitor(probe(), **LAM_ARGUMENTS, images=())],
                logger=False).validate(TinySR(), loader())
    assert not [w for w in caught if "EMAWeightAveraging in the Trainer's callbacks" in str(w.message)]


def test_a_fit_without_validation_says_that_lam_never_ran(tmp_path: Path) -> None:
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, images=())
    run = trainer(tmp_path, [monitor], max_epochs=1, logger=False, enable_checkpointing=False, limit_val_batches=0)
    with pytest.warns(UserWarning, match="explained nothing while fitting: Lightning ran no validation epoch"):
        run.fit(TinySR(), loader(), loader())
    assert monitor.history["centre"] == []


class ModelState(Callback):
    """Records the model and the autograd state at the end of each validation epoch.

    Before LAMMonitor it also puts the BatchNorm layer back in train mode and gives one parameter a
    ``.grad``: a mix of modes and gradients that the monitor must leave as it found it.
    """

    def __init__(self, mix: bool) -> None:
        self.mix = mix
        self.records: list[dict[str, object]] = []

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.mix:
            pl_module.net[1].train()
            pl_module.net[0].weight.grad = torch.ones_like(pl_module.net[0].weight)
        self.records.append({
            "modes": [module.training for module in pl_module.modules()],
            "parameters": [parameter.detach().clone() for parameter in pl_module.parameters()],
            "grads": [None if p.grad is None else p.grad.clone() for p in pl_module.parameters()],
            "grad_enabled": torch.is_grad_enabled(),
            "inference_mode": torch.is_inference_mode_enabled(),
            "autocast": torch.is_autocast_enabled("cpu"),
        })


def assert_same_state(before: dict[str, object], after: dict[str, object]) -> None:
    assert after["modes"] == before["modes"]
    assert all(torch.equal(a, b) for a, b in zip(after["parameters"], before["parameters"], strict=True))
    assert [g is None for g in after["grads"]] == [g is None for g in before["grads"]]
    assert all(torch.equal(a, b) for a, b in zip(after["grads"], before["grads"], strict=True) if a is not None)
    for key in ("grad_enabled", "inference_mode", "autocast"):
        assert after[key] == before[key], key


def test_leaves_modes_parameters_and_grads_as_found(tmp_path: Path) -> None:
    before, after = ModelState(mix=True), ModelState(mix=False)
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, images=())
    trainer(tmp_path, [before, monitor, after], logger=False, enable_checkpointing=False).fit(
        TinySR(), loader(), loader())

    assert len(monitor.history["centre"]) == len(before.records) == len(after.records) == 2
    assert not before.records[-1]["grad_enabled"], "validation in fit() runs under no_grad"
    for first, second in zip(before.records, after.records, strict=True):
        assert_same_state(first, second)


def test_logged_di_equals_explain_under_bf16_mixed(tmp_path: Path) -> None:
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, method="riemann_trapezoid")
    model = TinySR()
    run = trainer(tmp_path, [monitor], precision="bf16-mixed")
    run.fit(model, loader(), loader())

    standalone = explain(model, probe().image, probe().window, **LAM_ARGUMENTS, method="riemann_trapezoid")
    logged = monitor.history["centre"][-1]
    assert (logged["di"], logged["gini"], logged["delta"]) == (standalone.di, standalone.gini, standalone.delta)
    assert logged["negative_share"] == standalone.negative_share
    di_events = read_events(run.logger.log_dir).Scalars("lam/centre/di")
    assert di_events[-1].value == pytest.approx(standalone.di, rel=1e-6)


def test_validate_under_inference_mode_and_autocast(tmp_path: Path) -> None:
    before, after = ModelState(mix=True), ModelState(mix=False)
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, images=("map",))
    model = TinySR()
    run = trainer(tmp_path, [before, monitor, after])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        run.validate(model, loader())

    assert before.records[0]["inference_mode"] and before.records[0]["autocast"]
    assert_same_state(before.records[0], after.records[0])
    standalone = explain(model, probe().image, probe().window, **LAM_ARGUMENTS)
    assert monitor.history["centre"][0]["di"] == standalone.di, "LAM must run in float32 whatever the caller's state"
    assert steps(read_events(run.logger.log_dir), "lam/centre/map") == [0]


def test_failing_probe_warns_and_the_others_still_log(tmp_path: Path) -> None:
    gray = Probe(torch.rand(1, 12, 12), (0, 0, 8), "gray")
    outside = probe("outside", window=(20, 20, 8))
    monitor = LAMMonitor([gray, outside, probe("good")], **LAM_ARGUMENTS)
    run = trainer(tmp_path, [monitor])
    with pytest.warns(RuntimeWarning) as caught:
        run.fit(TinySR(), loader(), loader())

    skipped = [str(warning.message) for warning in caught if "LAMMonitor skipped" in str(warning.message)]
    assert len(skipped) == 4, "one warning per failing probe per epoch"
    assert any("'gray'" in message and "channels" in message for message in skipped)
    assert any("'outside'" in message and "`window` must lie inside" in message for message in skipped)
    assert run.state.finished
    tags = read_events(run.logger.log_dir).Tags()
    assert {tag.split("/")[1] for tag in tags["images"] + tags["scalars"] if tag.startswith("lam/")} == {"good"} | {
        "seconds"}
    assert monitor.history["gray"] == monitor.history["outside"] == []


def test_probe_downscaled_by_another_factor_than_the_model_warns(tmp_path: Path, hr_file: Path) -> None:
    monitor = LAMMonitor([Probe(hr_file, (0, 0, 8), "wrong", scale=2 * SCALE), probe("good")], **LAM_ARGUMENTS)
    run = trainer(tmp_path, [monitor], max_epochs=1)
    with pytest.warns(RuntimeWarning, match=r"skipped probe 'wrong'.*the HR image `hr` is 24x24: downscale it by"):
        run.fit(TinySR(), loader(), loader())
    assert run.state.finished
    assert monitor.history["wrong"] == [] and len(monitor.history["good"]) == 1


def test_model_that_cannot_be_differentiated_warns(tmp_path: Path) -> None:
    class Detached(TinySR):
        def forward(self, lr: torch.Tensor) -> torch.Tensor:
            return self.net(lr).detach()

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
            lr, hr = batch
            return nn.functional.l1_loss(self.net(lr), hr)

    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS)
    with pytest.warns(RuntimeWarning, match="skipped probe 'centre'.*does not depend on its input"):
        trainer(tmp_path, [monitor], max_epochs=1).fit(Detached(), loader(), loader())


def no_image_logger_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(warning.message) for warning in caught if "no TensorBoardLogger" in str(warning.message)]


def test_csv_only_logs_scalars_and_saves_pictures(tmp_path: Path) -> None:
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, save_dir=tmp_path / "pictures")
    run = trainer(tmp_path, [monitor], logger=CSVLogger(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.fit(TinySR(), loader(), loader())
        run.validate(run.lightning_module, loader())

    assert len(no_image_logger_warnings(caught)) == 1
    with open(Path(run.logger.log_dir) / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row["lam/centre/di"]]
    assert [int(row["step"]) for row in rows] == LOGGED_STEPS
    assert float(rows[-1]["lam/centre/di"]) == pytest.approx(monitor.history["centre"][-1]["di"])
    assert rows[-1]["lam/centre/gini"] and rows[-1]["lam/centre/delta"] and rows[-1]["lam/seconds"]
    pictures = tmp_path / "pictures" / "centre"
    assert sorted(path.name for path in (pictures / "epoch000_step000002").iterdir()) == sorted(
        f"{name}.png" for name in (*DEFAULT_TAGS, "window"))
    assert sorted(path.name for path in (pictures / "epoch001_step000004").iterdir()) == sorted(
        f"{name}.png" for name in DEFAULT_TAGS)
    assert load_image(pictures / "evolution.png").shape[0] == 3


def test_no_logger_warns_once_and_keeps_the_history(tmp_path: Path) -> None:
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(tmp_path, [monitor], logger=False).fit(TinySR(), loader(), loader())

    messages = no_image_logger_warnings(caught)
    assert len(messages) == 1 and "pass `save_dir`" in messages[0]
    assert len(monitor.history["centre"]) == 2


def test_a_trainer_that_only_tests_or_predicts_is_not_told_it_lacks_an_image_logger(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = trainer(tmp_path, [LAMMonitor(probe(), **LAM_ARGUMENTS)], logger=False)
        run.predict(TinySR(), DataLoader(sample_images()[0], batch_size=4))
    assert no_image_logger_warnings(caught) == []


def test_scalars_only_does_not_warn(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, images=())
        trainer(tmp_path, [monitor], logger=False, max_epochs=1).fit(TinySR(), loader(), loader())
    assert no_image_logger_warnings(caught) == []


def test_state_round_trip_and_resumed_history(tmp_path: Path) -> None:
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, images=("map",))
    run = trainer(tmp_path, [monitor])
    run.fit(TinySR(), loader(), loader())

    torch.save(monitor.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert plain(state) == plain(monitor.state_dict())
    assert [(entry["epoch"], entry["map"].dtype, entry["map"].shape) for entry in state["history"]["centre"]] == [
        (0, torch.uint8, (12, 12)), (1, torch.uint8, (12, 12))]
    restored = LAMMonitor(probe(), **LAM_ARGUMENTS)
    restored.load_state_dict(state)
    assert plain(restored.history) == plain(monitor.history)
    earlier = LAMMonitor(probe(), **LAM_ARGUMENTS)
    earlier.load_state_dict(plain(state))  # earlier versions saved each map as lists of ints
    assert all(torch.equal(old["map"], new["map"])
               for old, new in zip(earlier.history["centre"], monitor.history["centre"], strict=True))

    checkpoint = next((Path(run.logger.log_dir) / "checkpoints").glob("*.ckpt"))
    assert plain(torch.load(checkpoint, weights_only=True)["callbacks"][monitor.state_key]) == plain(state)
    resumed = LAMMonitor(probe(), **LAM_ARGUMENTS, images=("map",))
    trainer(tmp_path, [resumed], max_epochs=3).fit(TinySR(), loader(), loader(), ckpt_path=checkpoint)
    assert [entry["epoch"] for entry in resumed.history["centre"]] == [0, 1, 2]
    assert plain(resumed.history["centre"][:2]) == plain(monitor.history["centre"])


def test_a_resumed_run_gets_the_window_picture_in_its_own_logs(tmp_path: Path) -> None:
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, images=("map", "window"))
    run = trainer(tmp_path, [monitor])
    run.fit(TinySR(), loader(), loader())
    checkpoint = next((Path(run.logger.log_dir) / "checkpoints").glob("*.ckpt"))
    resumed = LAMMonitor(probe(), **LAM_ARGUMENTS, images=("map", "window"))
    again = trainer(tmp_path, [resumed], max_epochs=3)
    again.fit(TinySR(), loader(), loader(), ckpt_path=checkpoint)
    assert again.logger.log_dir != run.logger.log_dir
    assert [len(steps(read_events(log.logger.log_dir), "lam/centre/window")) for log in (run, again)] == [1, 1]


def test_a_monitor_used_again_explains_every_epoch_of_the_new_fit(tmp_path: Path) -> None:
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, images=())
    for run in range(2):  # a notebook cell run twice: a new Trainer, the same callback
        fitting = trainer(tmp_path / str(run), [monitor], max_epochs=2, enable_checkpointing=False)
        fitting.fit(TinySR(), loader(), loader())
        assert steps(read_events(fitting.logger.log_dir), "lam/centre/di") == LOGGED_STEPS
        assert "custom_scalars__config__" in read_events(fitting.logger.log_dir).Tags()["tensors"]
    assert [entry["epoch"] for entry in monitor.history["centre"]] == [0, 1, 0, 1]


def test_fit_again_with_more_epochs_keeps_the_schedule_and_logs_the_window_once(tmp_path: Path) -> None:
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, images=("window",), every_n_epochs=2)
    run = trainer(tmp_path, [monitor], max_epochs=3, enable_checkpointing=False)
    run.fit(TinySR(), loader(), loader())
    run.fit_loop.max_epochs = 6  # then train on, in the same Trainer and logging run
    run.fit(run.lightning_module, loader(), loader())
    assert [entry["epoch"] for entry in monitor.history["centre"]] == [0, 2, 4]
    assert len(steps(read_events(run.logger.log_dir), "lam/centre/window")) == 1


def test_a_resume_from_a_checkpoint_without_the_monitors_state_explains_its_epochs(tmp_path: Path) -> None:
    saver = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_top_k=-1)
    trainer(tmp_path, [saver], max_epochs=2, logger=False).fit(TinySR(), loader(), loader())
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, images=())
    trainer(tmp_path, [monitor], max_epochs=4, logger=False, enable_checkpointing=False).fit(
        TinySR(), loader(), loader())  # an earlier fit in the same process: epochs 0 to 3
    trainer(tmp_path, [monitor], max_epochs=4, logger=False, enable_checkpointing=False).fit(
        TinySR(), loader(), loader(), ckpt_path=tmp_path / "checkpoints" / "epoch=0-step=2.ckpt")
    assert [entry["epoch"] for entry in monitor.history["centre"]] == [0, 1, 2, 3, 1, 2, 3]


def test_a_baseline_validated_from_a_checkpoint_then_fine_tuned_explains_the_fine_tuning(tmp_path: Path) -> None:
    saver = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    trainer(tmp_path, [LAMMonitor(probe(), **LAM_ARGUMENTS, images=()), saver], max_epochs=3,
            logger=False).fit(TinySR(), loader(), loader())
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, images=())
    fine_tuning = trainer(tmp_path, [monitor], max_epochs=2, logger=False, enable_checkpointing=False)
    model = TinySR()
    fine_tuning.validate(model, loader(), ckpt_path=tmp_path / "checkpoints" / "last.ckpt")
    fine_tuning.fit(model, loader(), loader())
    # The pretraining's entries, the baseline (the checkpoint of epoch 2), then the fine-tuning's epochs 0 and 1.
    assert [entry.get("checkpoint", {}).get("epoch", entry["epoch"]) for entry in monitor.history["centre"]] == [
        0, 1, 2, 2, 0, 1]
    assert ["checkpoint" in entry for entry in monitor.history["centre"]] == [False] * 3 + [True] + [False] * 2


def test_pickles_before_and_after_fitting(tmp_path: Path) -> None:
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, images=())
    assert pickle.loads(pickle.dumps(monitor)).state_key == monitor.state_key
    trainer(tmp_path, [monitor], logger=False, max_epochs=1).fit(TinySR(), loader(), loader())

    copy = pickle.loads(pickle.dumps(monitor))
    assert plain(copy.history) == plain(monitor.history) and len(copy.history["centre"]) == 1
    assert torch.equal(copy.probes[0].image, monitor.probes[0].image)


def test_compiled_module(tmp_path: Path) -> None:
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, images=("map",))
    model = TinySR()
    trainer(tmp_path, [monitor], max_epochs=1, logger=False).fit(torch.compile(model, backend="eager"), loader(),
                                                                  loader())
    standalone = explain(model, probe().image, probe().window, **LAM_ARGUMENTS)
    assert monitor.history["centre"][0]["di"] == standalone.di


def test_probe_reads_an_hr_file_as_the_cli_does(hr_file: Path) -> None:
    lr, hr = Probe(hr_file, (0, 0, 8), "file", scale=SCALE).load()
    assert tuple(lr.shape) == (3, 12, 13) and tuple(hr.shape) == (3, 24, 26)
    assert torch.equal(hr, load_image(hr_file))


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"image": torch.rand(1, 3, 8, 8)}, ValueError, r"`image` must be one \(C, H, W\) LR image, got shape"),
        ({"image": torch.zeros(3, 8, 8, dtype=torch.uint8)}, TypeError, "`image` must be a floating tensor"),
        ({"image": [[0.0]]}, TypeError, "`image` must be a .* tensor or the path"),
        ({"image": "no/such/file.png"}, FileNotFoundError, "`image` 'no/such/file.png'"),
        ({"window": (1, 2)}, ValueError, "`window` must be"),
        ({"name": "a/b"}, ValueError, "`name` must be letters, digits.*got 'a/b'"),
        ({"name": ""}, ValueError, "`name`"),
        ({"name": ".."}, ValueError, r"`name` must be .*\(not dots alone\), got '\.\.'"),
        ({"name": "."}, ValueError, r"not dots alone\), got '\.'"),
        ({"scale": 0}, ValueError, "`scale` must be >= 1, got 0"),
        ({"scale": 2.0}, TypeError, "`scale` must be an int, got 2.0"),
    ],
)
def test_probe_rejects_bad_arguments(arguments: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Probe(**{"image": torch.rand(3, 8, 8), "window": (0, 0, 4), "name": "p", **arguments})


def test_a_probe_file_that_is_no_image_too_small_or_outside_the_window_is_refused_when_made(tmp_path: Path,
                                                                                              hr_file: Path) -> None:
    # Found here, not as a warning in every epoch of the run with the probe dead.
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    with pytest.raises(ValueError, match=rf"`image` {str(notes)!r} is not an image file"):
        Probe(notes, (0, 0, 8), "p", scale=2)
    with pytest.raises(ValueError, match=r"\(24x26\) is smaller than `scale`=32"):
        Probe(hr_file, (0, 0, 8), "p", scale=32)
    with pytest.raises(ValueError, match=r"`window` \(20, 0, 8, 8\) of probe 'p' lies outside its SR output, 24x24 "
                                         r"\(the HR image .* at `scale`=3\)"):
        Probe(hr_file, (20, 0, 8), "p", scale=3)
    corner = Probe(hr_file, (16, 18, 8), "p", scale=2)  # flush with the corner of the 24x26 output
    assert corner.window == (16, 18, 8, 8)
    # The gradient detector reads one pixel below and right of the window: the monitor knows its detector.
    with pytest.raises(ValueError, match=r"`window` \(16, 18, 8, 8\) of probe 'p' lies outside its SR output, 24x26, "
                                         r"less the 1 pixel the detector reads below and right of it"):
        LAMMonitor(corner, **LAM_ARGUMENTS)
    LAMMonitor(corner, **LAM_ARGUMENTS, detector="intensity")
    LAMMonitor(Probe(hr_file, (15, 17, 8), "p", scale=2), **LAM_ARGUMENTS)


def test_probe_warns_that_scale_does_nothing_for_a_tensor() -> None:
    with pytest.warns(UserWarning, match="`scale`=2 has no effect for probe 'p'"):
        Probe(torch.rand(3, 8, 8), (0, 0, 4), "p", scale=2)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"probes": []}, ValueError, "`probes` must be a Probe or a non-empty sequence"),
        ({"probes": [torch.rand(3, 8, 8)]}, TypeError, "`probes` must hold Probe objects, got Tensor"),
        ({"probes": [probe("a"), probe("a")]}, ValueError, r"`probes` must have unique names .* got \['a', 'a'\]"),
        ({"every_n_epochs": 0}, ValueError, "`every_n_epochs` must be an integer >= 1, got 0"),
        ({"every_n_epochs": 1.5}, ValueError, "`every_n_epochs`.*got 1.5"),
        ({"n_steps": 0}, ValueError, "`n_steps` must be an integer >= 1, got 0"),
        ({"sigma": -1.0}, ValueError, "`sigma` must be a finite number >= 0, got -1.0"),
        ({"kernel_size": 4}, ValueError, "`kernel_size` must be a positive odd integer, got 4"),
        ({"method": "simpson"}, ValueError, "`method` must be one of .*got 'simpson'"),
        ({"detector": "edges"}, ValueError, "`detector` must be .*got 'edges'"),
        ({"internal_batch_size": 0}, ValueError, "`internal_batch_size` must be an integer >= 1 or None, got 0"),
        ({"images": "map"}, ValueError, "`images` must be a sequence of picture names"),
        ({"images": ("map", "heatmap")}, ValueError, r"`images` must name pictures from .*\['heatmap'\]"),
        ({"alpha": 1.5}, ValueError, r"`alpha` must be a number in \[0, 1\], got 1.5"),
        ({"alpha": float("nan")}, ValueError, "`alpha`.*got nan"),
        ({"save_dir": 3}, ValueError, "`save_dir` must be a folder path or None, got 3"),
    ],
)
def test_monitor_rejects_bad_arguments(arguments: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        LAMMonitor(**{"probes": probe(), **arguments})


def test_picture_names_are_the_documented_tags() -> None:
    assert PICTURE_NAMES == ("map", "heat_blend", "kde_blend", "zoom", "signed", "sr", "window", "figure")
    assert LAMMonitor(probe()).images == ("map", "heat_blend", "kde_blend", "zoom", "sr", "window")


def test_probes_of_one_image_share_one_run_with_the_numbers_of_explain(tmp_path: Path, monkeypatch) -> None:
    import lam_captum.callbacks._lam_monitor as monitor_module

    shared_runs = []

    def counting_explain_windows(*args, **kwargs):
        shared_runs.append(args[2])
        return explain_windows(*args, **kwargs)

    monkeypatch.setattr(monitor_module, "explain_windows", counting_explain_windows)
    probes = [probe("left", (8, 4, 8)), probe("right", (14, 12, 8)), probe("other", (8, 8, 8), index=1)]
    monitor = LAMMonitor(probes, **LAM_ARGUMENTS, images=())
    model = TinySR()
    trainer(tmp_path, [monitor], max_epochs=1, logger=False, enable_checkpointing=False).fit(model, loader(), loader())

    # The two probes of image 0 ran together; the probe of image 1 ran alone.
    assert [[tuple(window) for window in windows] for windows in shared_runs] == [[(8, 4, 8, 8), (14, 12, 8, 8)]]
    for one in probes:
        alone = explain(model, one.image, one.window, **LAM_ARGUMENTS)
        logged = monitor.history[one.name][-1]
        assert logged["di"] == pytest.approx(alone.di, rel=1e-5)
        assert logged["delta"] == pytest.approx(alone.delta, rel=1e-4, abs=1e-6)


def test_a_file_shared_by_probes_and_the_erf_is_read_once_per_run(tmp_path: Path, hr_file: Path, monkeypatch) -> None:
    reads = []
    read = Probe.load

    def counting_load(self):
        reads.append(self.name)
        return read(self)

    monkeypatch.setattr(Probe, "load", counting_load)
    probes = [Probe(hr_file, (4, 6, 8), "left", scale=SCALE), Probe(hr_file, (10, 12, 8), "right", scale=SCALE)]
    monitor = LAMMonitor(probes, **LAM_ARGUMENTS, images=(), erf=(12, 12))
    trainer(tmp_path, [monitor], max_epochs=1, logger=False, enable_checkpointing=False).fit(TinySR(), loader(),
                                                                                            loader())
    assert reads == ["left"]  # one run (epoch 0): one read for both probes' LAM and the ERF
    assert [len(monitor.history[name]) for name in ("left", "right")] == [1, 1]


def test_erf_of_the_probe_images_is_logged_each_epoch(tmp_path: Path) -> None:
    from lam_captum.erf import dataset_erf, erf_area_ratios

    monitor = LAMMonitor([probe("a"), probe("b", index=1)], **LAM_ARGUMENTS, images=("map",), erf=(24, 24))
    model = TinySR()
    run = trainer(tmp_path, [monitor])
    run.fit(model, loader(), loader())

    events = read_events(run.logger.log_dir)
    expected = erf_area_ratios(dataset_erf(model, [probe("a").image, probe("b", index=1).image], size=(24, 24)))
    for share, area in expected.items():
        logged = events.Scalars(f"lam/erf/area_{round(share * 100)}")
        assert [event.step for event in logged] == LOGGED_STEPS
        assert logged[-1].value == pytest.approx(area.ratio, rel=1e-6)
    assert steps(events, "lam/erf") == LOGGED_STEPS


def test_erf_picture_is_saved_where_no_logger_takes_images(tmp_path: Path) -> None:
    monitor = LAMMonitor(probe(), **LAM_ARGUMENTS, images=("map",), erf=(24, 24), save_dir=tmp_path / "pictures")
    trainer(tmp_path, [monitor], logger=CSVLogger(tmp_path)).fit(TinySR(), loader(), loader())
    saved = sorted(path.name for path in (tmp_path / "pictures").glob("erf_*.png"))
    assert saved == ["erf_epoch000_step000002.png", "erf_epoch001_step000004.png"]
    assert load_image(tmp_path / "pictures" / saved[0]).shape[-2:] == (240, 240)
    with pytest.raises(ValueError, match=r"`erf` must be True, False or a \(height, width\) of positive ints, got 3"):
        LAMMonitor(probe(), erf=3)
