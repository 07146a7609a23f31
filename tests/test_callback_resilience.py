"""LAMMonitor never stops training: broken loggers and folders, changed probe lists, two monitors, LightningCLI."""

from __future__ import annotations

import csv
import warnings
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from test_callback import (
    DEFAULT_TAGS, LAM_ARGUMENTS, LOGGED_STEPS, SCALE, TinySR, loader, plain, probe, read_events, steps, trainer,
)

from lam_captum import LAMSettings
from lam_captum.callbacks import LAMMonitor
from lam_captum.imageio import save_png


class ImagelessTensorBoard(TensorBoardLogger):
    """A TensorBoardLogger whose writer refuses pictures, as one whose disk is full would."""

    @property
    def experiment(self):
        writer = super().experiment
        writer.add_image = self._refuse_image
        return writer

    @staticmethod
    def _refuse_image(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")


class SlashRejectingCSV(CSVLogger):
    """A CSVLogger that refuses metric names with a slash (some tracking servers do): Lightning's own pass."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        rejected = sorted(name for name in metrics if "/" in name)
        if rejected:
            raise ValueError(f"invalid metric names {rejected}")
        super().log_metrics(metrics, step)


def fit_recording_warnings(run: Trainer, **fit_arguments: object) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.fit(TinySR(), loader(), loader(), **fit_arguments)
    return [str(warning.message) for warning in caught]


def test_loggers_that_raise_cost_one_warning_each_and_training_goes_on(tmp_path: Path) -> None:
    loggers = [ImagelessTensorBoard(tmp_path, name="broken"), SlashRejectingCSV(tmp_path, name="csv"),
               TensorBoardLogger(tmp_path, name="good")]
    monitor = LAMMonitor([probe("centre"), probe("corner", window=(0, 0, 8))], **LAM_ARGUMENTS)
    run = trainer(tmp_path, [monitor], logger=loggers)
    messages = fit_recording_warnings(run)

    assert run.state.finished and run.current_epoch == 2
    for name in ("centre", "corner"):
        given = [m for m in messages if f"could not give the pictures of probe {name!r} to ImagelessTensorBoard" in m]
        # One per epoch and one for the evolution picture at fit end, each with the cause.
        assert len(given) == 3 and all("OSError: No space left on device" in m for m in given)
    failure = "could not log the scalars of probes ['centre', 'corner'] to SlashRejectingCSV"
    scalars = [m for m in messages if failure in m]
    assert len(scalars) == 2 and "invalid metric names ['lam/centre/delta'" in scalars[0]

    good = read_events(loggers[2].log_dir)
    for name in ("centre", "corner"):
        for tag in (*DEFAULT_TAGS, "di"):
            assert steps(good, f"lam/{name}/{tag}") == LOGGED_STEPS
        assert steps(good, f"lam/{name}/evolution") == [run.global_step]
    broken = read_events(loggers[0].log_dir)
    assert broken.Tags()["images"] == [] and steps(broken, "lam/centre/di") == LOGGED_STEPS
    with open(Path(loggers[1].log_dir) / "metrics.csv") as file:
        assert [row["val_loss"] != "" for row in csv.DictReader(file)] == [True, True], "Lightning's own metrics"


def test_unwritable_save_dir_warns_and_the_loggers_still_get_everything(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    save_dir = tmp_path / "a_file" / "pictures"
    monitor = LAMMonitor([probe("centre")], **LAM_ARGUMENTS, save_dir=save_dir)
    run = trainer(tmp_path, [monitor])
    messages = fit_recording_warnings(run)

    assert run.state.finished
    failures = [m for m in messages if f"could not save the pictures of probe 'centre' in `save_dir` {str(save_dir)!r}"
                in m]
    assert len(failures) == 3 and all("Not a directory" in m for m in failures)
    events = read_events(run.logger.log_dir)
    assert {f"lam/centre/{tag}" for tag in (*DEFAULT_TAGS, "window", "evolution")} == set(events.Tags()["images"])
    assert [entry["epoch"] for entry in monitor.history["centre"]] == [0, 1]


def test_failing_evolution_picture_warns_at_fit_end(tmp_path: Path) -> None:
    monitor = LAMMonitor([probe("centre"), probe("corner", window=(0, 0, 8))], **LAM_ARGUMENTS, images=("map",))
    run = trainer(tmp_path, [monitor], max_epochs=1)
    run.fit(TinySR(), loader(), loader())
    # A history corrupted on disk (a map no longer in 0-255) must not make the next fit fail at its very end.
    monitor.history["centre"][0]["map"] = torch.full((12, 12), 999)
    with pytest.warns(RuntimeWarning, match=r"could not draw the evolution of probe 'centre'.*must lie in \[0, 1\]"):
        monitor.on_fit_end(run, run.lightning_module)
    events = read_events(run.logger.log_dir)
    assert len(events.Images("lam/corner/evolution")) == 2 and len(events.Images("lam/centre/evolution")) == 1


def checkpoint_of(run: Trainer) -> Path:
    return next((Path(run.logger.log_dir) / "checkpoints").glob("*.ckpt"))


def test_resuming_with_another_probe_list_keeps_the_history_of_the_probes_still_there(tmp_path: Path) -> None:
    first = LAMMonitor([probe("kept"), probe("removed", window=(0, 0, 8)), probe("moved", window=(0, 0, 8))],
                       **LAM_ARGUMENTS, images=())
    run = trainer(tmp_path, [first])
    run.fit(TinySR(), loader(), loader())
    checkpoint = checkpoint_of(run)
    saved = torch.load(checkpoint, weights_only=True)["callbacks"][first.state_key]
    assert [entry["epoch"] for entry in saved["history"]["kept"]] == [0, 1]

    resumed = LAMMonitor([probe("new", window=(4, 4, 8)), probe("moved", window=(8, 8, 8)), probe("kept")],
                         **LAM_ARGUMENTS, images=())
    with pytest.warns(UserWarning, match=r"dropped the DI history of probes \['removed', 'moved'\].*kept \['kept'\]"):
        trainer(tmp_path, [resumed], max_epochs=3).fit(TinySR(), loader(), loader(), ckpt_path=checkpoint)

    assert plain(resumed.history["kept"][:2]) == plain(first.history["kept"])
    assert [entry["epoch"] for entry in resumed.history["kept"]] == [0, 1, 2]
    assert [entry["epoch"] for entry in resumed.history["new"]] == [entry["epoch"] for entry in
                                                                    resumed.history["moved"]] == [2]
    assert list(resumed.history) == ["new", "moved", "kept"]


def test_two_monitors_in_one_trainer_with_their_own_names(tmp_path: Path) -> None:
    pictures = tmp_path / "pictures"
    fast = LAMMonitor(probe("centre"), n_steps=2, kernel_size=5, images=("map",), save_dir=pictures)
    fine = LAMMonitor(probe("centre"), **LAM_ARGUMENTS, images=("map",), name="lam_fine", save_dir=pictures)
    run = trainer(tmp_path, [fast, fine])
    run.fit(TinySR(), loader(), loader())

    events = read_events(run.logger.log_dir)
    for prefix, monitor in (("lam", fast), ("lam_fine", fine)):
        assert steps(events, f"{prefix}/centre/di") == steps(events, f"{prefix}/centre/map") == LOGGED_STEPS
        assert events.Scalars(f"{prefix}/centre/di")[-1].value == pytest.approx(monitor.history["centre"][-1]["di"])
        assert steps(events, f"{prefix}/seconds") == LOGGED_STEPS
    assert fast.history["centre"][-1]["di"] != fine.history["centre"][-1]["di"], "each with its own settings"
    for folder in (pictures / "centre", pictures / "lam_fine" / "centre"):
        assert sorted(path.name for path in folder.iterdir()) == ["epoch000_step000002", "epoch001_step000004",
                                                                  "evolution.png"]
    states = torch.load(checkpoint_of(run), weights_only=True)["callbacks"]
    assert plain(states[fast.state_key]["history"]) == plain(fast.history)
    assert plain(states[fine.state_key]["history"]) == plain(fine.history)

    restored = [LAMMonitor(probe("centre"), images=()), LAMMonitor(probe("centre"), images=(), name="lam_fine")]
    trainer(tmp_path, restored, max_epochs=2).fit(TinySR(), loader(), loader(), ckpt_path=checkpoint_of(run))
    assert plain(restored[0].history) == plain(fast.history) and plain(restored[1].history) == plain(fine.history)


def test_two_monitors_with_one_name_are_refused_with_the_way_out() -> None:
    with pytest.raises(RuntimeError, match="state_key` must be unique"):
        Trainer(callbacks=[LAMMonitor(probe()), LAMMonitor(probe())], logger=False)
    assert LAMMonitor(probe(), name="lam_ema").state_key == "LAMMonitor{'name': 'lam_ema'}"


@pytest.mark.parametrize("name", ["a/b", "", 3, ".", ".."])
def test_monitor_rejects_a_bad_name(name: object) -> None:
    with pytest.raises(ValueError, match=f"`name` must be letters, digits.*got {name!r}"):
        LAMMonitor(probe(), name=name)


def cli_config(tmp_path: Path, monitor_arguments: dict[str, object]) -> Path:
    config = {"trainer": {"logger": False, "enable_checkpointing": False, "callbacks": [
        {"class_path": "lam_captum.callbacks.LAMMonitor", "init_args": monitor_arguments}]}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(config: Path) -> LightningCLI:
    return LightningCLI(TinySR, run=False, args=["--config", str(config)], save_config_callback=None)


def test_cli_probe_with_a_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_image.png"
    config = cli_config(tmp_path, {"probes": [{"image": str(missing), "window": [0, 0, 8], "name": "p"}]})
    with pytest.raises(ValueError) as caught:
        run_cli(config)
    message = str(caught.value)
    reasons = [line.strip() for line in message.splitlines() if line.strip().startswith("- ")]
    # The probe's own error is one of the reasons Lightning's callback union lists, not buried under the
    # failed try of another form of `probes`.
    assert f"- `image` {str(missing)!r} is not an existing file" in reasons
    assert "Not a valid subclass of Probe" not in message


def test_cli_yaml_sets_probes_and_lam_settings(tmp_path: Path) -> None:
    hr_path = save_png(torch.rand(3, 24, 24), tmp_path / "hr.png")
    config = cli_config(tmp_path, {
        "probes": [{"image": str(hr_path), "window": [4, 4, 8], "name": "file", "scale": SCALE}],
        "settings": {"n_steps": 8, "sigma": 0.8, "method": "riemann_trapezoid"},
        "images": ["map", "sr"], "name": "lam_cli", "every_n_epochs": 2,
    })
    monitor = next(callback for callback in run_cli(config).trainer.callbacks if isinstance(callback, LAMMonitor))

    assert monitor.settings == LAMSettings(n_steps=8, sigma=0.8, method="riemann_trapezoid")
    assert (monitor.name, monitor.every_n_epochs, monitor.images) == ("lam_cli", 2, ("map", "sr"))
    assert [(p.name, p.image, tuple(p.window), p.scale) for p in monitor.probes] == [
        ("file", hr_path, (4, 4, 8, 8), SCALE)]


def test_cli_yaml_with_a_bad_setting_names_it(tmp_path: Path) -> None:
    config = cli_config(tmp_path, {"probes": [{"image": str(save_png(torch.rand(3, 8, 8), tmp_path / "hr.png")),
                                               "window": [0, 0, 8], "name": "p"}], "settings": {"n_steps": 0}})
    with pytest.raises(ValueError, match="`n_steps` must be an integer >= 1, got 0"):
        run_cli(config)

