"""What LAMMonitor leaves in TensorBoard's event files and a W&B offline run, read back from disk."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from PIL import Image
from tensorboard.plugins.custom_scalar import layout_pb2
from test_callback import DEFAULT_TAGS, LAM_ARGUMENTS, LOGGED_STEPS, TinySR, loader, probe, read_events, trainer

from lam_captum.callbacks import LAMMonitor
from lam_captum.pictures import evolution_figure

# TensorBoard's Time Series dashboard lays cards out at least this wide and fits an image to its card.
CARD_WIDTH = 335


class ImageListCSV(CSVLogger):
    """A CSV logger that also takes pictures through a W&B-style ``log_image``, keeping what it was given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.images: list[tuple[str, tuple[int, ...], int | None]] = []

    def log_image(self, key: str, images: list[np.ndarray], step: int | None = None) -> None:
        self.images += [(key, image.shape, step) for image in images]


def test_layout_and_settings_text_are_written_once(tmp_path: Path) -> None:
    monitor = LAMMonitor([probe("centre"), probe("corner.1", window=(0, 0, 8))], **LAM_ARGUMENTS, images=("map",))
    run = trainer(tmp_path, [monitor], num_sanity_val_steps=1)
    run.fit(TinySR(), loader(), loader())

    events = read_events(run.logger.log_dir)
    layouts = events.Tensors("custom_scalars__config__")
    assert len(layouts) == 1
    layout = layout_pb2.Layout.FromString(layouts[0].tensor_proto.string_val[0])
    assert [category.title for category in layout.category] == ["LAM"]
    charts = {chart.title: list(chart.multiline.tag) for chart in layout.category[0].chart}
    assert list(charts) == ["DI of every probe", "validation metrics"]
    scalar_tags = events.Tags()["scalars"]
    drawn = {name: sorted(tag for tag in scalar_tags if any(re.fullmatch(regex, tag) for regex in regexes))
             for name, regexes in charts.items()}
    assert drawn == {"DI of every probe": ["lam/centre/di", "lam/corner.1/di"], "validation metrics": ["val_loss"]}

    assert len(events.Tensors("lam/settings/text_summary")) == 1


class EpochPSNR(TinySR):
    """Logs a PSNR over the whole validation set in its own ``on_validation_epoch_end``, and only after the sanity
    check, as SR modules do."""

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.log("val_psnr", 30.0 + self.current_epoch)


def test_the_layout_holds_the_metrics_a_module_logs_at_its_validation_epoch_end(tmp_path: Path) -> None:
    run = trainer(tmp_path, [LAMMonitor(probe(), **LAM_ARGUMENTS, images=())], num_sanity_val_steps=1)
    run.fit(EpochPSNR(), loader(), loader())
    (layout,) = read_events(run.logger.log_dir).Tensors("custom_scalars__config__")
    charts = {chart.title: list(chart.multiline.tag)
              for chart in layout_pb2.Layout.FromString(layout.tensor_proto.string_val[0]).category[0].chart}
    assert charts["validation metrics"] == ["^val_loss$", "^val_psnr$"]


def test_settings_text_names_every_probe_and_lam_parameter(tmp_path: Path) -> None:
    monitor = LAMMonitor([probe("centre"), probe("corner", window=(0, 0, 8))], **LAM_ARGUMENTS, images=())
    run = trainer(tmp_path, [monitor], max_epochs=1)
    run.fit(TinySR(), loader(), loader())

    text = read_events(run.logger.log_dir).Tensors("lam/settings/text_summary")[0].tensor_proto.string_val[0].decode()
    tables = [table.splitlines() for table in text.split("\n\n")]
    probes, settings = table_rows(tables[0]), table_rows(tables[1])
    assert probes == [{"probe": "centre", "image": "tensor 3x12x12", "window": "(8, 8, 8, 8)", "scale": "model's"},
                      {"probe": "corner", "image": "tensor 3x12x12", "window": "(0, 0, 8, 8)", "scale": "model's"}]
    assert settings == [{key: str(value) for key, value in monitor.settings.to_dict().items()}]
    assert settings[0]["n_steps"] == "4" and settings[0]["sigma"] == "1.2"


def table_rows(lines: list[str]) -> list[dict[str, str]]:
    """The rows of a Markdown table as dicts keyed by its header."""
    header, _, *rows = ([cell.strip() for cell in line.strip("|").split("|")] for line in lines)
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_two_monitors_share_one_layout_with_a_section_each(tmp_path: Path) -> None:
    monitors = [LAMMonitor(probe("centre"), **LAM_ARGUMENTS, images=()),
                LAMMonitor(probe("corner", window=(0, 0, 8)), **LAM_ARGUMENTS, images=(), name="lam_ema")]
    run = trainer(tmp_path, monitors, max_epochs=1, num_sanity_val_steps=0)
    run.fit(TinySR(), loader(), loader())

    layouts = read_events(run.logger.log_dir).Tensors("custom_scalars__config__")
    assert len(layouts) == 1
    layout = layout_pb2.Layout.FromString(layouts[0].tensor_proto.string_val[0])
    sections = {category.title: {chart.title: list(chart.multiline.tag) for chart in category.chart}
                for category in layout.category}
    assert sections == {
        "LAM": {"DI of every probe": ["^lam/centre/di$"], "validation metrics": ["^val_loss$"]},
        "LAM lam_ema": {"DI of every probe": ["^lam_ema/corner/di$"], "validation metrics": ["^val_loss$"]},
    }


def decoded(image_event: Any) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image_event.encoded_image_string)))


def test_evolution_picture_in_tensorboard_is_a_card_shaped_grid(tmp_path: Path) -> None:
    monitor = LAMMonitor(probe("centre"), **LAM_ARGUMENTS, images=("map",))
    run = trainer(tmp_path, [monitor], max_epochs=6)
    run.fit(TinySR(), loader(), loader())

    (event,) = read_events(run.logger.log_dir).Images("lam/centre/evolution")
    picture = decoded(event)
    # Six epochs: a row of four and a row of two, each under its label.
    assert (event.width, event.height) == (picture.shape[1], picture.shape[0])
    assert len(text_bands(picture)) == 4, "two rows of two-line labels"
    assert 1.0 <= event.width / event.height <= 2.0


def text_bands(picture: np.ndarray) -> list[tuple[int, int]]:
    """(first row, height) of each horizontal band of dark gray pixels: the lines of text. Heat maps are
    white to dark red, never gray."""
    channels = picture[..., :3].astype(int)
    gray = (channels.max(axis=2) < 120) & (np.ptp(channels, axis=2) < 30)
    rows = np.flatnonzero(gray.any(axis=1))
    groups = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
    return [(int(group[0]), int(group[-1] - group[0] + 1)) for group in groups if group.size]


@pytest.mark.parametrize("count", [1, 2, 4, 5, 12])
def test_evolution_labels_are_legible_in_a_tensorboard_card(count: int) -> None:
    rng = np.random.default_rng(0)
    maps = [rng.random((12, 16)) for _ in range(count)]
    labels = [f"epoch {epoch}\nDI {10 + epoch / 3:.2f}" for epoch in range(100, 100 + count)]
    picture = evolution_figure(maps, labels)

    height, width = picture.shape[:2]
    rows = -(-count // 4)
    assert width == 160 * min(count, 4) and height == 220 * rows, "at most four columns"
    assert 0.7 <= width / height <= 3.0, "today's strip of 10 was 6.7 times wider than high"
    shown = min(1.0, CARD_WIDTH / width)
    bands = text_bands(picture)
    assert len(bands) == 2 * rows
    # "epoch 1xx" spans ascender to descender; "DI 1x.xx" is capitals and digits only.
    epoch_line, di_line = bands[0][1] * shown, bands[1][1] * shown
    assert epoch_line >= 10 and di_line >= 8, f"{epoch_line:.1f} and {di_line:.1f} pixels high in the card"


def test_any_logger_with_log_image_gets_the_pictures(tmp_path: Path) -> None:
    logger = ImageListCSV(tmp_path)
    monitor = LAMMonitor(probe("centre"), **LAM_ARGUMENTS)
    trainer(tmp_path, [monitor], logger=logger).fit(TinySR(), loader(), loader())

    expected = [(f"lam/centre/{tag}", step) for step in LOGGED_STEPS for tag in (*DEFAULT_TAGS, "window")
                if tag != "window" or step == LOGGED_STEPS[0]] + [("lam/centre/evolution", 4)]
    assert [(key, step) for key, _, step in logger.images] == expected
    assert all(shape[2] == 3 and len(shape) == 3 for _, shape, _ in logger.images)


def wandb_records(run_file: Path) -> Iterator[Any]:
    """The records of a W&B transaction log (``run-<id>.wandb``): a 7-byte ``:W&B`` header, then LevelDB's log
    format, 32 KiB blocks of chunks with a 7-byte header (checksum, little-endian length, type: 1 whole
    record, 2 first, 3 middle, 4 last chunk of one)."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, pending = run_file.read_bytes(), 32768, 7, b""
    while position + 7 <= len(data):
        left_in_block = block - position % block
        if left_in_block < 7:
            position += left_in_block
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(pending)
            pending = b""


def wandb_history(run_file: Path) -> list[Mapping[str, str]]:
    return [{item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
            for record in wandb_records(run_file) if record.WhichOneof("record_type") == "history"]


def test_wandb_offline_run_holds_every_picture_and_the_di_history(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    for variable in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monitor = LAMMonitor([probe("centre"), probe("corner", window=(0, 0, 8))], **LAM_ARGUMENTS,
                         images=(*DEFAULT_TAGS, "window", "figure"))
    logger = WandbLogger(save_dir=tmp_path, project="lam", offline=True)
    try:
        trainer(tmp_path, [monitor], logger=logger).fit(TinySR(), loader(), loader())
    finally:
        # Lightning leaves the run open for the user to log more; finishing it and stopping W&B's service
        # (which writes the transaction log in another process) leaves the run folder complete.
        logger.experiment.finish()
        wandb.teardown()

    (run_folder,) = (tmp_path / "wandb").glob("offline-run-*")
    media = run_folder / "files" / "media" / "images"
    for name in ("centre", "corner"):
        # W&B names a picture file <last part of the key>_<its own step>_<hash>.png.
        saved = sorted(re.sub(r"_\d+_[0-9a-f]+\.png$", "", path.name) for path in (media / "lam" / name).glob("*.png"))
        expected = [tag for tag in (*DEFAULT_TAGS, "figure") for _ in LOGGED_STEPS] + ["window", "evolution"]
        assert saved == sorted(expected)
    history = wandb_history(next(run_folder.glob("run-*.wandb")))
    for name in ("centre", "corner"):
        logged = [(int(row["trainer/global_step"]), float(row[f"lam/{name}/di"])) for row in history
                  if f"lam/{name}/di" in row]
        assert logged == [(step, entry["di"]) for step, entry in zip(LOGGED_STEPS, monitor.history[name],
                                                                     strict=True)]
