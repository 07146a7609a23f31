"""lam-captum sweep: validation up front, the table, 1 versus 2 processes, resuming, broken entries, the CLI."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import finish_or_kill
from PIL import Image
from skimage import data

from lam_captum.explain import PICTURE_NAMES, explain
from lam_captum.imageio import hr_to_lr, load_image
from lam_captum.models import build_model
from lam_captum.sweep import COLUMNS, StudyError, load_study, run_sweep
from lam_captum.sweep._quality import sr_psnr
from lam_captum.sweep._records import record_path
from lam_captum.sweep.cli import main

# Two gloo processes start in seconds and the study takes seconds; a run still going after this hangs.
TIMEOUT_SECONDS = 180
RUN_DEPENDENT = ("seconds", "device")
N_STEPS = 4

TEST_MODELS = '''
import torch
from torch import nn


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        raise RuntimeError("weights server unreachable")


class Doubler(nn.Module):
    """An x2 model, for a study that wrongly declares it x4."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.conv(x))
'''


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 64x64 HR photos (16x16 LR at x4), a truncated PNG and a file of odd models."""
    root = tmp_path_factory.mktemp("sweep")
    Image.fromarray(data.astronaut()[100:164, 150:214]).save(root / "astro.png")
    Image.fromarray(data.chelsea()[50:114, 100:164]).save(root / "cat.png")
    encoded = (root / "cat.png").read_bytes()
    (root / "truncated.png").write_bytes(encoded[: len(encoded) // 2])
    (root / "odd_models.py").write_text(TEST_MODELS)
    return root


def small_study(root: Path, **changes: object) -> dict:
    """The tiny study of most tests: the built-in model, 2 images, 4 windows."""
    study = {
        "models": ["default"],
        "images": [
            {"path": str(root / "astro.png"), "windows": [[20, 20, 16], {"random": 1, "size": 12, "seed": 3}]},
            {"path": str(root / "cat.png"), "windows": [{"grid": [1, 2], "size": 16}]},
        ],
        "lam": {"n_steps": N_STEPS},
    }
    study.update(changes)
    return study


@pytest.fixture(scope="module")
def single_run(workspace: Path):
    """The small study, with maps and pictures, run in this process."""
    study_file = workspace / "study.yaml"
    study_file.write_text(yaml.safe_dump(small_study(workspace, maps=True, pictures=True)))
    return run_sweep(study_file, output=workspace / "one-process", accelerator="cpu", devices=1, progress=False)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def comparable(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key not in RUN_DEPENDENT} for row in rows]


def run_cli(args: list[str], *, interrupt_when: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m lam_captum.sweep ARGS`` in its own session, killed (and failed) if it hangs.

    With ``interrupt_when``, a SIGINT (Ctrl-C) goes to the run as soon as that folder holds a file.
    """
    environment = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen([sys.executable, "-m", "lam_captum.sweep", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=environment, start_new_session=True)
    if interrupt_when is not None:
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            if interrupt_when.is_dir() and any(interrupt_when.rglob("*.json")):
                process.send_signal(signal.SIGINT)
                break
            time.sleep(0.05)
    return finish_or_kill(process, TIMEOUT_SECONDS, "the sweep")


# ----------------------------------------------------------------------------------------------------------
# The study file: every problem reported with its field path, before any work starts
# ----------------------------------------------------------------------------------------------------------


def edit(study: dict, path: str, value: object) -> dict:
    """Set ``study[a][b]...`` for ``path`` "a.b.0.c" (a digit indexes a list)."""
    *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
    node = study
    for part in parents:
        node = node[part]
    node[last] = value
    return study


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("lamm", {}, r"`lamm`: unknown key; did you mean 'lam'\?"),
        ("images.0.windws", [], r"`images\[0\]\.windws`: unknown key; did you mean 'windows'\?"),
        ("images.0.windows.0", [60, 20, 16], r"`images\[0\]\.windows\[0\]`: window top=60, .* outside the 64x64 SR"),
        ("images.0.windows.0", [48, 20, 16], r"`images\[0\]\.windows\[0\]`: .* one pixel below and right"),
        ("images.0.windows.0", [1, 2], r"`images\[0\]\.windows\[0\]`: must be \[top, left, size\]"),
        ("images.0.windows.1.random", 5000, r"`images\[0\]\.windows\[1\]\.random`: 5000 distinct 12x12"),
        ("images.0.windows.1", {"grid": 2}, r"`images\[0\]\.windows\[1\]\.size`: is required"),
        ("images.1.windows.0.grid", [60, 1], r"`images\[1\]\.windows\[0\]\.grid`: a 60x1 grid .* more distinct"),
        ("images.1.path", "missing.png", r"`images\[1\]\.path`: 'missing.png' is neither an existing file"),
        ("images.1.crop", [0, 0, 65, 8], r"`images\[1\]\.crop`: \[0, 0, 65, 8\] does not fit the 64x64 image"),
        ("images.1.crop", [0, 0, 12, 12], r"`images\[1\]`: the 3x3 x4 LR input .* larger than `lam.kernel_size`"),
        ("images.1.lr", "yes", r"`images\[1\]\.lr`: must be true or false, got 'yes'"),
        ("models.0", {"spec": "default", "weights": "none.pt"}, r"`models\[0\]\.weights`: 'none.pt' is not an"),
        ("models.0", "edsr-tiny", r"`models\[0\]\.spec`: 'edsr-tiny' is neither a built-in model"),
        ("models.0", "nowhere.py:Net", r"`models\[0\]\.spec`: 'nowhere.py' is not an existing file"),
        ("models.0", {"spec": "default", "scale": "4"}, r"`models\[0\]\.scale`: must be an integer, got '4'"),
        ("models", [], r"`models`: must be a non-empty list"),
        ("lam.n_steps", "4", r"`lam\.n_steps`: must be an integer, got '4'"),
        ("lam.sigma", -1, r"`lam\.sigma`: must be >= 0.0, got -1"),
        ("lam.kernel_size", 8, r"`lam\.kernel_size`: must be odd"),
        ("lam.method", "simpson", r"`lam\.method`: must be one of official, .*, got 'simpson'"),
        ("lam.alpha", 1.5, r"`lam\.alpha`: must be in \[0.0, 1.0\], got 1.5"),
        ("lam.detector", "edges", r"`lam\.detector`: must be one of gradient, intensity, got 'edges'"),
    ],
)
def test_a_bad_value_is_reported_with_its_field(workspace: Path, path: str, value: object, message: str) -> None:
    study = edit(small_study(workspace), path, value)
    with pytest.raises(StudyError, match=message):
        load_study(study, base_dir=workspace)


def test_every_problem_is_reported_at_once(workspace: Path) -> None:
    study = small_study(workspace, models=["default", "default"], scale=0)
    study["lam"]["n_steps"] = 0
    with pytest.raises(StudyError) as caught:
        load_study(study)
    assert caught.value.problems == [
        "`scale`: must be >= 1, got 0",
        "`lam.n_steps`: must be >= 1, got 0",
        "`models[1].name`: 'default' is already the name of `models[0]`; give one of them another `name`",
    ]


def test_a_bad_study_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("models: [default\nimages: []\n")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(StudyError, match=r"`study`: cannot read .*broken\.yaml"):
        load_study(tmp_path / "broken.yaml")
    with pytest.raises(StudyError, match=r"`study`: must be a mapping with `models` and `images`, got list"):
        load_study(tmp_path / "list.json")
    with pytest.raises(StudyError, match=r"`study`: .*absent\.yaml' is not an existing file"):
        load_study(tmp_path / "absent.yaml")


def test_paths_start_from_the_study_file_and_folders_expand(workspace: Path, tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    for name in ("b.png", "a.png"):
        (folder / name).write_bytes((workspace / "cat.png").read_bytes())
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "study.json").write_text(json.dumps({
        "models": ["default"], "images": [{"path": "set", "name": "set5"}], "windows": [[0, 0, 8]],
    }))
    study = load_study(tmp_path / "study.json")
    assert [image.name for image in study.images] == ["set5-a", "set5-b"]
    assert study.output == tmp_path / "study-sweep"


def test_generated_windows_are_deterministic_and_inside(workspace: Path) -> None:
    study = small_study(workspace, windows=[{"random": 3, "size": 8}, {"grid": 2, "size": 8}])
    del study["images"][0]["windows"], study["images"][1]["windows"]
    first, again = load_study(study).windows, load_study(study).windows
    assert first == again
    astro, cat = first["astro"], first["cat"]
    assert astro[:3] != cat[:3], "each image draws its own random windows"
    assert [tuple(w[:2]) for w in astro[3:]] == [(0, 0), (0, 55), (55, 0), (55, 55)]
    assert all(w.top + 8 < 64 and w.left + 8 < 64 for w in astro + cat)


def test_a_changed_setting_or_file_makes_results_stale(workspace: Path, tmp_path: Path) -> None:
    image = tmp_path / "astro.png"
    image.write_bytes((workspace / "astro.png").read_bytes())
    study = small_study(workspace)
    study["images"][0]["path"] = str(image)
    fingerprints = {probe.id: probe.fingerprint for probe in load_study(study).probes()}
    study["lam"]["sigma"] = 1.0
    assert all(probe.fingerprint != fingerprints[probe.id] for probe in load_study(study).probes())
    study["lam"]["sigma"] = 1.2
    Image.fromarray(data.astronaut()[:64, :64]).save(image)
    changed = {probe.id for probe in load_study(study).probes() if fingerprints[probe.id] != probe.fingerprint}
    assert changed == {probe_id for probe_id in fingerprints if "/astro/" in probe_id}


def test_the_example_study_is_valid() -> None:
    study = load_study(Path(__file__).parents[1] / "examples" / "study.yaml")
    assert len(study.probes()) == 20


# ----------------------------------------------------------------------------------------------------------
# Running: the table, parity with explain(), 1 versus 2 processes
# ----------------------------------------------------------------------------------------------------------


def test_the_table_holds_the_numbers_of_explain(workspace: Path, single_run) -> None:
    model = build_model("default")
    assert single_run.count("ok") == 4 and single_run.computed == 4
    for row in single_run.rows:
        lr, hr = hr_to_lr(load_image(workspace / f"{row['image']}.png"), 4)
        window = (row["window_top"], row["window_left"], row["window_height"], row["window_width"])
        result = explain(model, lr, window, hr=hr, n_steps=N_STEPS)
        numbers = (row["di"], row["gini"], row["area_50"], row["convergence_delta"])
        assert numbers == (result.di, result.gini, result.area, result.delta)
        assert row["psnr"] == sr_psnr(result.sr, hr, shave=4)
        assert (row["lr_height"], row["lr_width"], row["scale"], row["status"]) == (16, 16, 4, "ok")
        saved = np.load(single_run.output / "maps" / f"{row['probe_id']}.npz")
        np.testing.assert_array_equal(saved["attribution"], result.attribution.numpy())
        pictures = single_run.output / "pictures" / row["probe_id"]
        assert sorted(p.stem for p in pictures.iterdir()) == sorted(PICTURE_NAMES)


def test_the_tables_are_complete_sorted_and_agree(single_run) -> None:
    output = single_run.output
    table = read_csv(output / "probes.csv")
    lines = [json.loads(line) for line in (output / "probes.jsonl").read_text().splitlines()]
    assert list(table[0]) == list(COLUMNS) == list(lines[0])
    ids = [row["probe_id"] for row in table]
    assert ids == sorted(ids) == [row["probe_id"] for row in single_run.rows]
    for row, line in zip(table, lines):
        assert float(row["di"]) == line["di"] and row["status"] == line["status"] == "ok"
    (summary,) = read_csv(output / "models.csv")
    assert (summary["model"], summary["ok"], summary["images_with_psnr"]) == ("default", "4", "2")
    assert math.isclose(float(summary["di_mean"]), np.mean([row["di"] for row in single_run.rows]))
    for plot in ("di_per_model", "di_versus_psnr"):
        with Image.open(output / "plots" / f"{plot}.png") as picture:
            assert picture.format == "PNG"


def test_two_processes_give_the_same_table(workspace: Path, single_run) -> None:
    output = workspace / "two-processes"
    args = [str(workspace / "study.yaml"), "--output", str(output), "--accelerator", "cpu", "--devices", "2",
            "--strategy", "ddp"]
    # One probe for two processes first: one of them idles, and the second run resumes under DDP.
    started = run_cli([*args, "--limit", "1"])
    assert started.returncode == 0, started.stdout[-3000:]
    assert "4 probes: 1 ok, 0 failed, 3 pending (1 computed in this run)" in started.stdout
    finished = run_cli(args)
    assert finished.returncode == 0, finished.stdout[-3000:]
    assert "4 probes: 4 ok, 0 failed, 0 pending (3 computed in this run)" in finished.stdout
    rows = [json.loads(line) for line in (output / "probes.jsonl").read_text().splitlines()]
    assert comparable(rows) == comparable(single_run.rows)
    assert read_csv(output / "models.csv")[0]["di_mean"] == read_csv(single_run.output / "models.csv")[0]["di_mean"]


# ----------------------------------------------------------------------------------------------------------
# Resuming and failures
# ----------------------------------------------------------------------------------------------------------


def record_times(output: Path) -> dict[str, int]:
    return {str(path.relative_to(output)): path.stat().st_mtime_ns for path in (output / "records").rglob("*.json")}


def test_a_rerun_computes_only_what_is_missing(workspace: Path, tmp_path: Path) -> None:
    study = load_study(small_study(workspace, output=str(tmp_path)))
    first = run_sweep(study, limit=2, accelerator="cpu", devices=1, progress=False)
    assert (first.computed, first.count("ok"), first.count("pending")) == (2, 2, 2)
    assert [row["status"] for row in read_csv(tmp_path / "probes.csv")].count("pending") == 2
    before = record_times(tmp_path)

    second = run_sweep(study, accelerator="cpu", devices=1, progress=False)
    assert (second.computed, second.count("ok")) == (2, 4)
    after = record_times(tmp_path)
    assert {name: after[name] for name in before} == before, "finished probes were computed again"

    lost = record_path(tmp_path, second.rows[-1]["probe_id"])
    lost.unlink()
    leftover = lost.with_name(f".{lost.name}.999.tmp")
    leftover.write_text('{"half": ')
    third = run_sweep(study, accelerator="cpu", devices=1, progress=False)
    assert (third.computed, third.count("ok")) == (1, 4)
    assert not leftover.exists()
    assert comparable(third.rows) == comparable(second.rows)
    assert run_sweep(study, progress=False).computed == 0


def test_broken_entries_are_recorded_and_the_rest_completes(workspace: Path, tmp_path: Path, monkeypatch) -> None:
    import lam_captum.sweep._engine as engine

    def out_of_memory_on_one_window(model, lr, window, **kwargs):
        if tuple(window)[:2] == (4, 4):
            raise RuntimeError("simulated out of memory")
        return explain(model, lr, window, **kwargs)

    monkeypatch.setattr(engine, "explain", out_of_memory_on_one_window)
    study = load_study({
        "models": ["default", "odd_models.py:Broken", {"spec": "odd_models.py:Doubler", "scale": 4}],
        "images": ["astro.png", "truncated.png"], "windows": [[20, 20, 16], [4, 4, 16]], "lam": {"n_steps": N_STEPS},
        "output": str(tmp_path),
    }, base_dir=workspace)
    report = run_sweep(study, accelerator="cpu", devices=1, progress=False)
    errors = {row["probe_id"]: row["error"] for row in report.rows if row["status"] == "error"}
    assert [row["probe_id"] for row in report.rows if row["status"] == "ok"] == ["default/astro/t0020-l0020-16x16"]
    assert errors["default/astro/t0004-l0004-16x16"] == "lam: RuntimeError: simulated out of memory"
    assert errors["default/truncated/t0020-l0020-16x16"].startswith("image: ")
    assert errors["Broken/astro/t0020-l0020-16x16"] == "model: RuntimeError: weights server unreachable"
    assert "`models[2].scale` is 4, but the model turns a 16x16 input into 32x32" in errors[
        "Doubler/astro/t0020-l0020-16x16"]
    assert len(errors) == 11 and all(row["seconds"] is not None for row in report.rows)

    monkeypatch.setattr(engine, "explain", explain)
    retried = run_sweep(study, accelerator="cpu", devices=1, progress=False)
    assert retried.computed == 11 and retried.count("ok") == 2


def test_ctrl_c_leaves_complete_files_and_the_rerun_finishes(workspace: Path, tmp_path: Path) -> None:
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump({
        "models": ["default"], "images": [str(workspace / "astro.png")],
        "windows": [{"grid": 4, "size": 12}], "lam": {"n_steps": 8}, "output": "results",
    }))
    output = tmp_path / "results"
    interrupted = run_cli([str(study_file), "--accelerator", "cpu", "--devices", "1"],
                          interrupt_when=output / "records")
    assert interrupted.returncode != 0, interrupted.stdout[-3000:]
    assert not list(output.rglob("*.tmp"))
    records = {path: json.loads(path.read_text()) for path in (output / "records").rglob("*.json")}
    assert records and all(record["status"] == "ok" for record in records.values())
    table = read_csv(output / "probes.csv")
    assert len(table) == 16 and sum(row["status"] == "ok" for row in table) == len(records)
    before = record_times(output)

    report = run_sweep(study_file, accelerator="cpu", devices=1, progress=False)
    assert report.count("ok") == 16 and report.computed == 16 - len(before)
    after = record_times(output)
    assert {name: after[name] for name in before} == before


# ----------------------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------------------


def test_the_cli_reports_a_bad_study_in_one_line_before_any_work(workspace: Path, tmp_path: Path, capsys) -> None:
    study = edit(small_study(workspace, output=str(tmp_path / "never")), "images.0.windows.0", [60, 20, 16])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(study))
    assert main([str(tmp_path / "bad.yaml")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("lam-captum sweep: error: `images[0].windows[0]`: window top=60")
    assert error.count("\n") == 1 and not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit", "-1"], "argument --limit: must be an integer >= 0, got '-1'"),
        (["--num-nodes", "0"], "argument --num-nodes: must be an integer >= 1, got '0'"),
        (["--accelerator", "cpu", "--devices", "0"], "invalid Trainer settings (accelerator='cpu', devices=0"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_the_cli_rejects_bad_arguments(workspace: Path, tmp_path: Path, capsys, args: list[str], message: str
                                       ) -> None:
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(small_study(workspace)))
    assert main([str(tmp_path / "study.yaml"), *args]) == 2
    error = capsys.readouterr().err
    assert error.startswith("lam-captum sweep: error: ") and message in error and error.count("\n") == 1


def test_the_cli_checks_and_rebuilds_tables(workspace: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(small_study(workspace)))
    assert main([str(tmp_path / "study.yaml"), "--check"]) == 0
    assert "valid; 4 probes (1 models, 2 images)" in capsys.readouterr().out
    assert main([str(tmp_path / "study.yaml"), "--limit", "0"]) == 0
    assert "4 probes: 0 ok, 0 failed, 4 pending (0 computed in this run)" in capsys.readouterr().out
    assert [row["status"] for row in read_csv(tmp_path / "study-sweep" / "probes.csv")] == ["pending"] * 4


def test_importing_lam_captum_or_the_study_api_does_not_import_lightning() -> None:
    code = ("import sys, lam_captum, lam_captum.sweep, lam_captum.sweep.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))")
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    assert finished.returncode == 0 and finished.stdout.strip() == "[]", finished.stderr
