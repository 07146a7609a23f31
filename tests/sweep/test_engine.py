"""Running a study: the table, parity with explain(), 1 versus 2 processes, resuming, broken entries, and
one sweep per output folder."""

from __future__ import annotations

import json
import math
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import finish_or_kill
from PIL import Image
from sweep_helpers import (
    N_STEPS,
    TIMEOUT_SECONDS,
    comparable,
    read_csv,
    record_times,
    run_cli,
    small_study,
)

from lam_captum.explain import PICTURE_NAMES, explain, explain_windows
from lam_captum.imageio import hr_to_lr, load_image
from lam_captum.models import build_model, load_model
from lam_captum.sweep import COLUMNS, OutputFolderError, load_study, run_sweep
from lam_captum.sweep._erf import _fingerprint as erf_fingerprint
from lam_captum.sweep._fingerprints import digest, file_digest
from lam_captum.sweep._lock import LOCK_NAME
from lam_captum.sweep._quality import sr_psnr
from lam_captum.sweep._records import record_path


@pytest.fixture(scope="module")
def single_run(workspace: Path):
    """The small study, with maps and pictures, run in this process."""
    study_file = workspace / "study.yaml"
    study_file.write_text(yaml.safe_dump(small_study(workspace, maps=True, pictures=True)))
    return run_sweep(study_file, output=workspace / "one-process", accelerator="cpu", devices=1, progress=False)


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

    def out_of_memory_with_that_window(model, lr, windows, **kwargs):
        if any(tuple(window)[:2] == (4, 4) for window in windows):
            raise RuntimeError("simulated out of memory")
        return explain_windows(model, lr, windows, **kwargs)

    # The pass of both windows fails; each window then runs alone, and only the one at fault fails.
    monkeypatch.setattr(engine, "explain", out_of_memory_on_one_window)
    monkeypatch.setattr(engine, "explain_windows", out_of_memory_with_that_window)
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
        # Four passes: the Ctrl-C after the first pass's records lands while later passes still run (with
        # one pass of all 16 windows the run could finish before the signal arrives).
        "windows_per_pass": 4,
    }))
    output = tmp_path / "results"
    interrupted = run_cli([str(study_file), "--accelerator", "cpu", "--devices", "1"],
                          interrupt_when=output / "records")
    assert interrupted.returncode == 130, interrupted.stdout[-3000:]
    assert "interrupted; the finished probes are kept" in interrupted.stdout
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


def test_a_model_that_returns_a_tuple_gets_the_api_error_in_its_row(workspace: Path, tmp_path: Path) -> None:
    study = load_study({"models": ["odd_models.py:TupleOut"], "images": ["astro.png"], "windows": [[20, 20, 16]],
                        "lam": {"n_steps": N_STEPS}, "output": str(tmp_path)}, base_dir=workspace)
    report = run_sweep(study, accelerator="cpu", devices=1, progress=False)
    lr, hr = hr_to_lr(load_image(workspace / "astro.png"), 4)
    with pytest.raises(ValueError, match=r"the model must return an \(N, C, sH, sW\) tensor") as caught:
        explain(load_model(study.models[0].spec), lr, (20, 20, 16), hr=hr, n_steps=N_STEPS)
    (row,) = report.rows
    assert (row["status"], row["error"]) == ("error", f"lam: ValueError: {caught.value}")


def test_an_output_path_that_is_a_file_is_refused_before_any_work(workspace: Path, tmp_path: Path) -> None:
    (tmp_path / "results").write_text("not a folder")
    with pytest.raises(OutputFolderError, match=r"the output folder '.*results' is a file, not a folder"):
        run_sweep(small_study(workspace), output=tmp_path / "results", progress=False)
    with pytest.raises(OutputFolderError, match=r"cannot create the output folder .*: '.*results' is a file"):
        run_sweep(small_study(workspace), output=tmp_path / "results" / "inner", progress=False)


HOLD_THE_LOCK = """
import sys
from pathlib import Path
from lam_captum.sweep._lock import OutputLock

OutputLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
sys.stdin.read()
"""


def test_a_second_sweep_on_a_busy_folder_is_refused_and_a_killed_owner_is_taken_over(
    workspace: Path, tmp_path: Path
) -> None:
    output = tmp_path / "results"
    output.mkdir()
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(small_study(workspace)))
    owner = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(output)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert owner.stdout.readline() == "held\n"
        second = run_cli([str(tmp_path / "study.yaml"), "--output", str(output), "--accelerator", "cpu"])
    finally:
        owner.kill()
        finish_or_kill(owner, TIMEOUT_SECONDS, "the lock holder")
    assert second.returncode == 2 and "Traceback" not in second.stdout, second.stdout[-3000:]
    line = second.stdout.splitlines()[-1]  # after Lightning's lines on the devices it found
    assert line.startswith(f"lam-captum sweep: error: another sweep is writing to '{output}'")
    assert f"process {owner.pid} on {socket.gethostname()}" in line
    assert not (output / "records").exists(), "the refused sweep computed probes"

    assert (output / LOCK_NAME).exists(), "the killed owner leaves its lock file behind"
    report = run_sweep(tmp_path / "study.yaml", output=output, accelerator="cpu", devices=1, progress=False)
    assert (report.count("ok"), report.computed) == (4, 4)
    assert not (output / LOCK_NAME).exists()


def test_a_class_in_a_models_args_is_written_by_name(workspace: Path, tmp_path: Path) -> None:
    model = {"spec": f"{workspace / 'odd_models.py'}:WithActivation", "args": {"act": torch.nn.GELU}}
    report = run_sweep(small_study(workspace, models=[model], lam={"n_steps": 2}, figures=False),
                       output=tmp_path / "out", accelerator="cpu", devices=1, progress=False)
    assert report.count("ok") == 4
    study = json.loads((tmp_path / "out" / "study.json").read_text())
    assert study["models"][0]["args"] == {"act": "torch.nn.modules.activation.GELU"}


def test_a_video_model_on_an_image_is_told_it_takes_clips(workspace: Path, tmp_path: Path) -> None:
    model = f"{workspace / 'odd_models.py'}:ClipsOnly"
    report = run_sweep(small_study(workspace, models=[model], figures=False, erf={"size": [16, 16]}),
                       output=tmp_path / "out", accelerator="cpu", devices=1, progress=False)
    assert report.count("error") == 4
    assert "(a video SR model takes clips: `clip: true` on a folder of frames)" in report.rows[0]["error"]
    (erf,) = read_csv(tmp_path / "out" / "erf.csv")
    assert erf["status"] == "error"
    assert erf["error"].startswith("model: `models[0]` fails on an image (N, C, H, W) = (1, 3, 16, 16) (the ERF is "
                                   "an image model's; a video SR model takes clips): ")


def test_the_erfs_check_that_a_model_takes_images_leaves_it_able_to_take_gradients(workspace: Path,
                                                                                     tmp_path: Path) -> None:
    study = small_study(workspace, models=[f"{workspace / 'odd_models.py'}:CachedMask"], figures=False,
                        erf={"size": [16, 16]}, lam={"n_steps": 2})
    run_sweep(study, output=tmp_path / "out", accelerator="cpu", devices=1, progress=False)
    (erf,) = read_csv(tmp_path / "out" / "erf.csv")
    assert (erf["status"], erf["error"]) == ("ok", "")


def test_ctrl_c_reaches_the_caller_as_keyboard_interrupt_and_ctrl_c_works_again(workspace: Path,
                                                                                 tmp_path: Path) -> None:
    model = f"{workspace / 'odd_models.py'}:Interrupted"
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(small_study(workspace, models=[model], figures=False), output=tmp_path / "out",
                  accelerator="cpu", devices=1, progress=False)
    assert signal.getsignal(signal.SIGINT) is handler


def test_an_empty_output_is_refused(workspace: Path) -> None:
    with pytest.raises(OutputFolderError, match="`output` must name a folder, got ''"):
        run_sweep(small_study(workspace), output="", progress=False)


def test_ddp_spawn_reports_what_its_processes_did(workspace: Path, tmp_path: Path) -> None:
    # The probes run in a process of their own: the report comes from the records they wrote.
    study = small_study(workspace, models=["default", f"{workspace / 'odd_models.py'}:Doubler"],
                        lam={"n_steps": 2}, figures=False)
    report = run_sweep(study, output=tmp_path / "out", accelerator="cpu", devices=1, strategy="ddp_spawn",
                       progress=False)
    assert (report.count("ok"), report.count("error"), report.computed) == (4, 4, 8)


def test_moving_the_project_keeps_a_file_models_results_and_earlier_records_stay_current(workspace: Path,
                                                                                         tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("astro.png", "odd_models.py"):
        (project / name).write_bytes((workspace / name).read_bytes())
    study = {"models": ["odd_models.py:Quick"], "lam": {"n_steps": 2}, "figures": False, "erf": {"size": [16, 16]},
             "images": [{"path": "astro.png", "windows": [[20, 20, 16], [8, 40, 8]]}], "output": "results"}
    (project / "study.yaml").write_text(yaml.safe_dump(study))
    first = run_sweep(project / "study.yaml", accelerator="cpu", devices=1, progress=False)
    assert (first.computed, first.count("ok")) == (2, 2)
    probes = load_study(project / "study.yaml").probes()
    # What earlier versions wrote: the file's absolute path in the model's part of the fingerprint.
    model = probes[0].model
    assert model.earlier_digest == digest([f"{project / 'odd_models.py'}:Quick", {}, 4,
                                           [file_digest(project / "odd_models.py")]])
    for probe in probes:
        record = json.loads(record_path(first.output, probe.id).read_text())
        record_path(first.output, probe.id).write_text(json.dumps({**record,
                                                                   "fingerprint": probe.earlier_fingerprint}))
    erf_record = project / "results" / "erf" / "Quick.json"
    erf_numbers = json.loads(erf_record.read_text())
    erf_record.write_text(json.dumps({**erf_numbers, "fingerprint": erf_fingerprint(load_study(project / "study.yaml"),
                                                                                    model.earlier_digest)}))

    in_place = run_sweep(project / "study.yaml", accelerator="cpu", devices=1, progress=False)
    assert (in_place.computed, comparable(in_place.rows)) == (0, comparable(first.rows))
    assert [json.loads(record_path(first.output, probe.id).read_text())["fingerprint"] for probe in probes] == [
        probe.fingerprint for probe in probes], "earlier records are given the new fingerprint"

    moved = tmp_path / "moved" / "elsewhere"
    shutil.move(project, moved)
    after_move = run_sweep(moved / "study.yaml", accelerator="cpu", devices=1, progress=False)
    assert (after_move.computed, comparable(after_move.rows)) == (0, comparable(first.rows))
    assert [probe.fingerprint for probe in load_study(moved / "study.yaml").probes()] == [
        probe.fingerprint for probe in probes]
    assert json.loads((moved / "results" / "erf" / "Quick.json").read_text()) == erf_numbers, "the ERF is not redone"

    with (moved / "odd_models.py").open("a") as source:
        source.write("\n# retrained\n")
    edited = run_sweep(moved / "study.yaml", accelerator="cpu", devices=1, progress=False)
    assert edited.computed == 2, "a changed model file still makes its results stale"
