"""``lam-captum sweep``: one line and exit status 2 for every bad input, before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sweep_helpers import TIMEOUT_SECONDS, edit, read_csv, small_study

from lam_captum._core.settings import MAX_STEPS
from lam_captum.sweep.cli import main


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


def test_the_cli_refuses_an_output_that_is_a_file_in_one_line(workspace: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(small_study(workspace)))
    (tmp_path / "results").write_text("not a folder")
    assert main([str(tmp_path / "study.yaml"), "--output", str(tmp_path / "results")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("lam-captum sweep: error: the output folder ") and "is a file, not a folder" in error
    assert error.count("\n") == 1


def test_check_refuses_a_huge_step_count_with_its_cost(workspace: Path, tmp_path: Path, capsys) -> None:
    steps = 10_000 * MAX_STEPS
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(small_study(workspace, lam={"n_steps": steps})))
    assert main([str(tmp_path / "study.yaml"), "--check"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"lam-captum sweep: error: `lam.n_steps`: must be at most {MAX_STEPS}, got {steps}")
    assert f"{steps:,}" in error and error.count("\n") == 1
