"""Clip entries: a study explains video SR models on a folder of frames with explain_clip's numbers."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from lam_captum.imageio import load_input
from lam_captum.models import load_model
from lam_captum.sweep import COLUMNS, StudyError, load_study, run_sweep
from lam_captum.sweep._quality import sr_psnr
from lam_captum.video import CLIP_PICTURE_NAMES, explain_clip
from sweep_helpers import N_STEPS, comparable, read_csv, record_times

VIDEO_MODELS = Path(__file__).resolve().parents[1] / "video_models.py"
FRAMES = 5
WINDOWS = [[6, 6, 10], [16, 14, 8]]
RECURRENT = {"spec": f"{VIDEO_MODELS}:TinyRecurrentVSR", "name": "recurrent"}
IMAGE_MODEL = '''
import torch
from torch import nn


class StillSR(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.conv(x))
'''
SLIDING = {"spec": f"{VIDEO_MODELS}:TinySlidingWindowVSR", "name": "sliding", "args": {"frames": FRAMES}}


def save_panning_frames(folder: Path, sizes: list[int] | None = None) -> Path:
    """Frames of a photo panning right by 2 pixels a frame, 32x32 HR (16x16 LR at x2) unless ``sizes`` says."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = data.astronaut()
    for index, size in enumerate(sizes or [32] * FRAMES):
        Image.fromarray(photo[100:100 + size, 150 + 2 * index:150 + 2 * index + size]).save(
            folder / f"frame_{index:02d}.png")
    return folder


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_panning_frames(tmp_path_factory.mktemp("clips") / "pan")


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A seeded x2 image SR model, so that two runs give the same numbers."""
    path = tmp_path_factory.mktemp("models") / "image_models.py"
    path.write_text(IMAGE_MODEL)
    return {"spec": f"{path}:StillSR", "name": "still-sr"}


def clip_study(clip: Path, **changes: object) -> dict:
    study = {"scale": 2, "models": [RECURRENT, SLIDING],
             "images": [{"path": str(clip), "clip": True, "frame": 3, "windows": WINDOWS}],
             "lam": {"n_steps": N_STEPS}, "maps": True, "pictures": True}
    study.update(changes)
    return study


@pytest.fixture(scope="module")
def resumed_clips(clip_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    """The clip study run in two parts (2 probes, then the rest), and the record times after the first."""
    output = tmp_path_factory.mktemp("clip-sweep")
    first = run_sweep(clip_study(clip_folder), output=output, limit=2, accelerator="cpu", devices=1, progress=False)
    times = record_times(output)
    report = run_sweep(clip_study(clip_folder), output=output, accelerator="cpu", devices=1, progress=False)
    return first, times, report


def standalone(clip_folder: Path, model: dict, window: list[int]):
    frames = [load_input(path, scale=2) for path in sorted(clip_folder.iterdir())]
    clip, hr = torch.stack([lr for lr, _ in frames]), torch.stack([hr for _, hr in frames])
    network = load_model(model["spec"], model.get("args", {}), scale=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sliding model ignores `frame`: its row's warning says so
        return explain_clip(network, clip, window, frame=3, hr=hr, n_steps=N_STEPS, device="cpu"), hr


def test_a_clip_entry_is_one_probe_per_model_and_window_named_after_its_folder(clip_folder: Path) -> None:
    study = load_study(clip_study(clip_folder))
    assert [probe.id for probe in study.probes()] == [
        "recurrent/pan/t0006-l0006-10x10", "recurrent/pan/t0016-l0014-8x8",
        "sliding/pan/t0006-l0006-10x10", "sliding/pan/t0016-l0014-8x8"]
    (entry,) = study.images
    assert entry.is_clip and entry.size == (32, 32) and [path.name for path in entry.frames] == [
        f"frame_{index:02d}.png" for index in range(FRAMES)]
    assert [len(group) for group in study.passes()] == [1, 1, 1, 1], "a clip's probe is a pass of its own"
    assert study.to_dict()["images"][0]["frame"] == 3


def test_the_table_holds_the_numbers_of_explain_clip(clip_folder: Path, resumed_clips) -> None:
    report = resumed_clips[2]
    assert report.count("ok") == 4
    rows = {row["probe_id"]: row for row in report.rows}
    for model, frame in ((RECURRENT, 3), (SLIDING, FRAMES // 2)):
        for window in WINDOWS:
            result, hr = standalone(clip_folder, model, window)
            top, left, size = window
            row = rows[f"{model['name']}/pan/t{top:04d}-l{left:04d}-{size}x{size}"]
            assert (row["di"], row["gini"], row["negative_share"], row["convergence_delta"]) == (
                result.di, result.gini, result.negative_share, result.delta)
            assert row["frame_di"] == result.frame_di.tolist()
            assert row["temporal_profile"] == result.profile.tolist()
            assert (row["frames"], row["frame"], row["lr_height"], row["lr_width"]) == (FRAMES, frame, 16, 16)
            assert result.frame == frame
            assert row["psnr"] == sr_psnr(result.sr, hr[frame], shave=2)
            saved = np.load(report.output / "maps" / f"{row['probe_id']}.npz")
            assert np.array_equal(saved["attribution"], result.attribution.numpy())
            assert np.array_equal(saved["map"], result.maps.numpy())
    assert "has no effect" in rows["sliding/pan/t0006-l0006-10x10"]["warning"]


def test_the_clip_columns_are_lists_in_jsonl_and_space_separated_numbers_in_csv(resumed_clips) -> None:
    output = resumed_clips[2].output
    table = read_csv(output / "probes.csv")
    lines = [json.loads(line) for line in (output / "probes.jsonl").read_text().splitlines()]
    assert list(table[0]) == list(COLUMNS) and {"frames", "frame", "frame_di", "temporal_profile"} <= set(COLUMNS)
    for row, line in zip(table, lines):
        assert isinstance(line["frame_di"], list) and len(line["frame_di"]) == FRAMES
        assert [float(value) for value in row["frame_di"].split(" ")] == line["frame_di"]
        assert [float(value) for value in row["temporal_profile"].split(" ")] == line["temporal_profile"]
        assert sum(line["temporal_profile"]) == pytest.approx(1.0)
        assert (int(row["frames"]), int(row["frame"])) == (line["frames"], line["frame"])


def test_a_resumed_clip_study_computes_only_the_rest_and_keeps_the_finished_records(
    clip_folder: Path, resumed_clips
) -> None:
    first, times, report = resumed_clips
    assert (first.computed, first.count("ok"), first.count("pending")) == (2, 2, 2)
    assert report.computed == 2
    assert all(record_times(report.output)[name] == time for name, time in times.items())
    again = run_sweep(clip_study(clip_folder), output=report.output, accelerator="cpu", devices=1, progress=False)
    assert again.computed == 0 and again.rows == report.rows


def test_a_clip_probe_saves_the_clip_pictures_and_no_comparison_figure(resumed_clips) -> None:
    output = resumed_clips[2].output
    for probe_id in ("recurrent/pan/t0006-l0006-10x10", "sliding/pan/t0016-l0014-8x8"):
        assert sorted(path.name for path in (output / "pictures" / probe_id).iterdir()) == sorted(
            f"{name}.png" for name in CLIP_PICTURE_NAMES)
    assert not (output / "figures").exists() or not any((output / "figures").iterdir())
    assert not (output / "sr").exists()


def test_an_image_model_fails_on_a_clip_and_models_csv_keeps_clips_apart_from_images(
    clip_folder: Path, image_model: dict, tmp_path: Path
) -> None:
    frame = str(sorted(clip_folder.iterdir())[0])
    study = clip_study(clip_folder, models=[image_model], maps=False, pictures=False, erf=True,
                       images=[{"path": str(clip_folder), "clip": True, "windows": [WINDOWS[0]]},
                               {"path": frame, "name": "still", "windows": [WINDOWS[0]]}])
    report = run_sweep(study, output=tmp_path / "mixed", accelerator="cpu", devices=1, progress=False)
    rows = {row["image"]: row for row in report.rows}
    assert rows["pan"]["status"] == "error"
    assert "`models[0]` fails on the clip (N, T, C, H, W) = (1, 5, 3, 16, 16)" in rows["pan"]["error"]
    assert rows["still"]["status"] == "ok" and rows["still"]["frames"] is None
    summary = read_csv(tmp_path / "mixed" / "models.csv")
    assert [(line["lr_size"], line["frames"], line["ok"], line["failed"]) for line in summary] == [
        ("16x16", "", "1", "0"), ("16x16", str(FRAMES), "0", "1")]
    (erf,) = read_csv(tmp_path / "mixed" / "erf.csv")
    assert (erf["status"], erf["images"]) == ("ok", "1"), "the ERF leaves the clip out"
    alone = run_sweep({**study, "images": study["images"][1:]}, output=tmp_path / "alone", accelerator="cpu",
                      devices=1, progress=False)
    assert sorted(path.name for path in (tmp_path / "mixed" / "figures").iterdir()) == ["still.json", "still.pdf",
                                                                                         "still.png"]
    cells = [[comparable([cell]) for cell in json.loads((output / "figures" / "still.json").read_text())["cells"]]
             for output in (tmp_path / "mixed", alone.output)]
    assert cells[0] == cells[1], "the image's figure is the same with or without a clip in the study"


def test_a_changed_frame_or_frame_file_makes_clip_results_stale(clip_folder: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(clip_folder, tmp_path / "pan")
    before = load_study(clip_study(copy)).probes()[0].fingerprint
    assert load_study(clip_study(copy)).probes()[0].fingerprint == before
    other_frame = clip_study(copy)
    other_frame["images"][0]["frame"] = 1
    assert load_study(other_frame).probes()[0].fingerprint != before
    Image.fromarray(data.camera()[:32, :32]).convert("RGB").save(copy / "frame_04.png")
    assert load_study(clip_study(copy)).probes()[0].fingerprint != before


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"frame": 7}, r"`images\[0\]\.frame`: must be < 5, the number of frames in the clip '.*pan', got 7"),
        ({"frame": -1}, r"`images\[0\]\.frame`: must be >= 0, got -1"),
        ({"clip": False, "frame": 2}, r"`images\[0\]\.frame`: chooses the output frame of a clip \(`clip: true`\), "
                                      r"got 2"),
        ({"clip": "yes"}, r"`images\[0\]\.clip`: must be true or false, got 'yes'"),
    ],
)
def test_a_bad_clip_entry_is_refused_naming_the_field_and_value(clip_folder: Path, entry: dict, message: str) -> None:
    study = clip_study(clip_folder)
    study["images"][0].update(entry)
    with pytest.raises(StudyError, match=message):
        load_study(study)


def test_a_clip_of_frames_of_two_sizes_is_refused_naming_the_frames(tmp_path: Path) -> None:
    folder = save_panning_frames(tmp_path / "mixed", sizes=[32, 32, 40])
    with pytest.raises(StudyError, match=r"`images\[0\]\.path`: the frames of the clip '.*mixed' must all have one "
                                         r"size, got frame_00\.png 32x32, frame_01\.png 32x32, frame_02\.png 40x40"):
        load_study(clip_study(folder, models=[RECURRENT]))


def test_clip_true_on_a_file_is_refused_naming_the_path(clip_folder: Path) -> None:
    frame = sorted(clip_folder.iterdir())[0]
    with pytest.raises(StudyError, match=r"`images\[0\]\.clip`: true needs `path` to be a folder of frames, got "
                                         r"'.*frame_00\.png' \(.*: a file\)"):
        load_study(clip_study(frame))


def test_a_window_outside_the_clips_frames_is_refused_at_the_entry(clip_folder: Path) -> None:
    study = clip_study(clip_folder)
    study["images"][0]["windows"] = [[28, 0, 8]]
    with pytest.raises(StudyError, match=r"`images\[0\]\.windows\[0\]`"):
        load_study(study)


def test_a_clip_with_a_broken_frame_gets_an_error_row_and_the_other_clip_completes(
    clip_folder: Path, tmp_path: Path
) -> None:
    broken = shutil.copytree(clip_folder, tmp_path / "broken")
    encoded = (broken / "frame_02.png").read_bytes()
    (broken / "frame_02.png").write_bytes(encoded[: len(encoded) // 2])  # its header reads, its pixels do not
    study = clip_study(clip_folder, models=[RECURRENT], maps=False, pictures=False,
                       images=[{"path": str(broken), "clip": True, "windows": [WINDOWS[0]]},
                               {"path": str(clip_folder), "clip": True, "windows": [WINDOWS[0]]}])
    report = run_sweep(study, output=tmp_path / "out", accelerator="cpu", devices=1, progress=False)
    rows = {row["image"]: row for row in report.rows}
    assert rows["broken"]["status"] == "error" and rows["broken"]["error"].startswith("image: ")
    assert rows["pan"]["status"] == "ok"
