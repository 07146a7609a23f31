"""The windows of one image share one LAM pass in a sweep, with the numbers of explain_windows and explain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from lam_captum.explain import explain, explain_windows
from lam_captum.imageio import load_input
from lam_captum.models import build_model
from lam_captum.sweep import StudyError, load_study, run_sweep
from lam_captum.sweep._engine import pending_passes
from sweep_helpers import N_STEPS, small_study

# Five windows spread over a 48x48 LR image, where the built-in model's windows each have a crop of their own.
SPREAD_WINDOWS = [[8, 8, 12], [8, 150, 12], [150, 8, 12], [150, 150, 12], [80, 80, 16]]


@pytest.fixture(scope="module")
def coffee(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("passes") / "coffee.png"
    Image.fromarray(data.coffee()[100:292, 200:392]).save(path)
    return path


def spread_study(coffee: Path, **changes: object) -> dict:
    return {"models": ["default"], "images": [{"path": str(coffee), "windows": SPREAD_WINDOWS}],
            "lam": {"n_steps": N_STEPS}, "figures": False, **changes}


def test_the_windows_of_one_model_and_image_form_passes_of_at_most_windows_per_pass(workspace: Path) -> None:
    study = load_study(small_study(workspace, models=["default", {"spec": "odd_models.py:Quick", "name": "quick"}],
                                   windows_per_pass=1), base_dir=workspace)
    assert [len(group) for group in study.passes()] == [1] * 8
    study = load_study(small_study(workspace, models=["default", {"spec": "odd_models.py:Quick", "name": "quick"}]),
                       base_dir=workspace)
    groups = study.passes()
    assert [len(group) for group in groups] == [2, 2, 2, 2]
    assert all(len({(probe.model.name, probe.image.name) for probe in group}) == 1 for group in groups)
    assert [probe.id for group in groups for probe in group] == [probe.id for probe in study.probes()]


def test_windows_per_pass_splits_a_long_list_in_the_study_order(coffee: Path) -> None:
    study = load_study(spread_study(coffee, windows_per_pass=2))
    assert [[tuple(probe.window)[:2] for probe in group] for group in study.passes()] == [
        [(8, 8), (8, 150)], [(150, 8), (150, 150)], [(80, 80)]]
    assert study.to_dict()["windows_per_pass"] == 2


@pytest.mark.parametrize("value", [0, -3, "4", 2.5, True])
def test_a_bad_windows_per_pass_is_refused_naming_it(coffee: Path, value: object) -> None:
    with pytest.raises(StudyError, match=r"`windows_per_pass`: must be"):
        load_study(spread_study(coffee, windows_per_pass=value))


def test_a_pass_with_a_finished_probe_is_computed_whole_and_records_only_the_pending(workspace: Path) -> None:
    study = load_study(small_study(workspace), base_dir=workspace)
    probes = study.probes()
    passes = pending_passes(study, [probes[1], probes[2], probes[3]])
    assert [len(item.probes) for item in passes] == [2, 2]
    assert [probe.id for probe in passes[0].pending] == [probes[1].id]


def test_the_table_holds_the_numbers_of_explain_windows_and_within_rounding_those_of_explain(
    coffee: Path, tmp_path: Path
) -> None:
    report = run_sweep(spread_study(coffee, maps=True), output=tmp_path / "together", accelerator="cpu", devices=1,
                       progress=False)
    alone = run_sweep(spread_study(coffee, maps=True, windows_per_pass=1), output=tmp_path / "alone",
                      accelerator="cpu", devices=1, progress=False)
    model = build_model("default")
    lr, hr = load_input(coffee, scale=4)
    together = explain_windows(model, lr, SPREAD_WINDOWS, hr=hr, n_steps=N_STEPS)
    assert report.count("ok") == alone.count("ok") == len(SPREAD_WINDOWS)
    by_window = {(row["window_top"], row["window_left"]): (row, other) for row, other in zip(report.rows, alone.rows)}
    for window, result in zip(SPREAD_WINDOWS, together):
        row, other = by_window[tuple(window[:2])]
        assert (row["di"], row["gini"], row["area_50"], row["convergence_delta"]) == (
            result.di, result.gini, result.area, result.delta)
        single = explain(model, lr, window, hr=hr, n_steps=N_STEPS)
        assert (other["di"], other["gini"], other["convergence_delta"]) == (single.di, single.gini, single.delta)
        assert row["di"] == pytest.approx(single.di, rel=1e-6)
        saved = torch.from_numpy(np.load(report.output / "maps" / f"{row['probe_id']}.npz")["attribution"])
        assert (saved - single.attribution).abs().max() <= 1e-5 * single.attribution.abs().max()


def test_a_resumed_study_gives_the_numbers_of_an_uninterrupted_one(coffee: Path, tmp_path: Path) -> None:
    whole = run_sweep(spread_study(coffee), output=tmp_path / "whole", accelerator="cpu", devices=1, progress=False)
    first = run_sweep(spread_study(coffee), output=tmp_path / "resumed", limit=2, accelerator="cpu", devices=1,
                      progress=False)
    assert (first.computed, first.count("ok"), first.count("pending")) == (2, 2, 3)
    resumed = run_sweep(spread_study(coffee), output=tmp_path / "resumed", accelerator="cpu", devices=1,
                        progress=False)
    assert resumed.computed == 3
    numbers = ("di", "gini", "area_50", "convergence_delta", "negative_share", "psnr")
    assert [[row[key] for key in numbers] for row in resumed.rows] == [[row[key] for key in numbers]
                                                                      for row in whole.rows]
