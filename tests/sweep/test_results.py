"""What a study shows: the comparison figure of every image, the tables and plots per LR size with
bootstrap intervals, the negative share beside DI, and each model's ERF."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader
from sweep_helpers import N_STEPS, read_csv

from lam_captum.erf import dataset_erf, erf_area_ratios
from lam_captum.explain import explain
from lam_captum.imageio import load_input
from lam_captum.models import build_model, load_model
from lam_captum.sweep import MODEL_COLUMNS, StudyError, load_study, run_sweep
from lam_captum.sweep._plots import plot_di_per_model, plot_di_versus_psnr
from lam_captum.sweep._quality import PSNR_LABEL
from lam_captum.sweep._records import BOOTSTRAP_RESAMPLES, bootstrap_interval

README = Path(__file__).parents[2] / "README.md"
IMAGES = ("astro", "cat")


def figure_study(root: Path, output: Path) -> dict:
    """Two models, two images of different LR sizes (16x16 and 16x12), three windows."""
    return {
        "models": ["default", {"spec": f"{root / 'odd_models.py'}:Quick", "name": "quick"}],
        "images": [
            {"path": str(root / "astro.png"), "windows": [[20, 20, 16], [40, 8, 12]]},
            {"path": str(root / "cat.png"), "crop": [0, 0, 64, 48], "windows": [[8, 8, 16]]},
        ],
        "lam": {"n_steps": N_STEPS},
        "figures": {"formats": ["png", "pdf"]},
        "output": str(output),
    }


@pytest.fixture(scope="module")
def resumed_run(workspace: Path, tmp_path_factory: pytest.TempPathFactory):
    """The study run in two parts: 3 of its 6 probes, then the rest; what the first part left is kept."""
    output = tmp_path_factory.mktemp("figures") / "out"
    study = load_study(figure_study(workspace, output))
    first = run_sweep(study, limit=3, accelerator="cpu", devices=1, progress=False)
    unfinished = sorted(path.name for path in (output / "figures").glob("*")) if (output / "figures").exists() else []
    report = run_sweep(study, accelerator="cpu", devices=1, progress=False)
    return first, unfinished, report, study


def figure_summary(output: Path, image: str) -> dict:
    return json.loads((output / "figures" / f"{image}.json").read_text())


def test_an_image_gets_its_figure_only_once_all_its_probes_are_done(resumed_run) -> None:
    first, unfinished, report, _ = resumed_run
    assert first.count("ok") == 3 and unfinished == []  # each image still lacks the second model's probes
    assert report.count("ok") == 6
    files = sorted(path.name for path in (report.output / "figures").iterdir())
    assert files == sorted(f"{image}.{kind}" for image in IMAGES for kind in ("json", "pdf", "png"))


def test_the_figure_cells_are_the_tables_numbers_after_a_resumed_run(resumed_run) -> None:
    report = resumed_run[2]
    rows = {row["probe_id"]: row for row in read_csv(report.output / "probes.csv")}
    for image, windows in (("astro", 2), ("cat", 1)):
        summary = figure_summary(report.output, image)
        assert summary["models"] == ["default", "quick"] and len(summary["windows"]) == windows
        assert len(summary["cells"]) == 2 * windows
        with Image.open(report.output / "figures" / f"{image}.png") as picture:
            width, height = picture.size
        for cell in summary["cells"]:
            row = rows[summary["probes"][cell["row"]][cell["column"]]]
            assert (row["model"], row["image"]) == (cell["model"], image)
            assert cell["di"] == float(row["di"]) and cell["negative_share"] == float(row["negative_share"])
            assert cell["label"].splitlines()[0] == cell["model"]
            assert f"DI {float(row['di']):.2f} (LR {row['lr_height']}x{row['lr_width']})" in cell["label"]
            top, left, box_height, box_width = cell["pixel_box"]
            assert 0 <= top and top + box_height <= height and 0 <= left and left + box_width <= width


def test_the_figure_shows_what_explain_gives_for_the_probe(workspace: Path, resumed_run) -> None:
    report = resumed_run[2]
    summary = figure_summary(report.output, "astro")
    cell = next(cell for cell in summary["cells"] if cell["model"] == "default" and cell["row"] == 1)
    lr, hr = load_input(workspace / "astro.png", scale=4)
    result = explain(build_model("default"), lr, (40, 8, 12), hr=hr, n_steps=N_STEPS)
    assert (cell["di"], cell["gini"], cell["negative_share"]) == (result.di, result.gini, result.negative_share)


def test_the_pdf_keeps_the_labels_as_text_and_the_maps_as_images(resumed_run) -> None:
    report = resumed_run[2]
    for image in IMAGES:
        summary = figure_summary(report.output, image)
        (page,) = PdfReader(report.output / "figures" / f"{image}.pdf").pages
        text = " ".join(page.extract_text().split())
        for cell in summary["cells"]:
            assert " ".join(cell["label"].split()) in text
        images = [item for item in page["/Resources"]["/XObject"].values() if item.get_object()["/Subtype"] == "/Image"]
        assert len(images) >= len(summary["cells"]) + 1  # every cell's map and the HR image


def test_an_unchanged_figure_is_not_drawn_again(resumed_run) -> None:
    output, study = resumed_run[2].output, resumed_run[3]
    before = {path.name: path.stat().st_mtime_ns for path in (output / "figures").iterdir()}
    again = run_sweep(study, limit=0, progress=False)
    assert again.count("ok") == 6
    assert {path.name: path.stat().st_mtime_ns for path in (output / "figures").iterdir()} == before


def test_models_csv_has_a_row_per_model_and_lr_size_with_bootstrap_intervals(resumed_run) -> None:
    output = resumed_run[2].output
    rows = read_csv(output / "probes.csv")
    summary = read_csv(output / "models.csv")
    assert [(row["model"], row["lr_size"]) for row in summary] == [
        ("default", "16x12"), ("default", "16x16"), ("quick", "16x12"), ("quick", "16x16")]
    for line in summary:
        probes = [row for row in rows if row["model"] == line["model"]
                  and f"{row['lr_height']}x{row['lr_width']}" == line["lr_size"]]
        di = [float(row["di"]) for row in probes]
        psnr = list({row["image"]: float(row["psnr"]) for row in probes}.values())
        assert math.isclose(float(line["di_mean"]), statistics.fmean(di))
        assert (float(line["di_mean_ci_low"]), float(line["di_mean_ci_high"])) == bootstrap_interval(di)
        assert float(line["di_mean_ci_low"]) <= float(line["di_mean"]) <= float(line["di_mean_ci_high"])
        assert (float(line["psnr_y_mean_ci_low"]), float(line["psnr_y_mean_ci_high"])) == bootstrap_interval(psnr)
        shares = [float(row["negative_share"]) for row in probes]
        assert math.isclose(float(line["negative_share_mean"]), statistics.fmean(shares))


def test_the_bootstrap_interval_is_seeded_and_covers_the_mean_of_a_real_spread() -> None:
    values = [3.1, 4.7, 5.2, 6.8, 2.9, 7.4, 5.5, 4.1]
    low, high = bootstrap_interval(values)
    assert bootstrap_interval(values) == (low, high) and BOOTSTRAP_RESAMPLES == 2000
    # The standard error of this mean is about 0.57; a 95% interval spans about 4 of them.
    assert low < statistics.fmean(values) < high and 1.5 < high - low < 3.0
    assert bootstrap_interval([4.0]) == (4.0, 4.0) and bootstrap_interval([]) == (None, None)


def test_the_psnr_is_named_by_its_colour_space_in_the_readme_the_table_and_the_plot() -> None:
    assert PSNR_LABEL in README.read_text()
    assert "psnr_y_mean" in MODEL_COLUMNS and "Y" in PSNR_LABEL and "dB" in PSNR_LABEL


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yes", r"`figures`: must be true, false or a mapping, got 'yes'"),
        ({"blend": "sharp"}, r"`figures\.blend`: must be one of heat, kde, got 'sharp'"),
        ({"formats": ["png", "jpg"]}, r"`figures\.formats\[1\]`: must be one of png, pdf, svg, got 'jpg'"),
        ({"zom": True}, r"`figures\.zom`: unknown key; did you mean 'zoom'\?"),
    ],
)
def test_a_bad_figures_key_is_reported_with_its_path(workspace: Path, value: object, message: str) -> None:
    study = figure_study(workspace, workspace / "unused")
    study["figures"] = value
    with pytest.raises(StudyError, match=message):
        load_study(study)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1, r"`erf`: must be true, false or a mapping, got 1"),
        ({"size": [120, 0]}, r"`erf\.size`: must be an integer >= 1 or a list of two, got \[120, 0\]"),
        ({"batch_size": 0}, r"`erf\.batch_size`: must be >= 1, got 0"),
    ],
)
def test_a_bad_erf_key_is_reported_with_its_path(workspace: Path, value: object, message: str) -> None:
    study = figure_study(workspace, workspace / "unused")
    study["erf"] = value
    with pytest.raises(StudyError, match=message):
        load_study(study)


def test_figures_false_draws_none_and_true_draws_heat_blends_in_png_and_pdf(workspace: Path) -> None:
    study = figure_study(workspace, workspace / "unused")
    assert load_study({**study, "figures": False}).figures is None
    figures = load_study({**study, "figures": True}).figures
    assert (figures.blend, figures.zoom, figures.formats) == ("heat", False, ["png", "pdf"])


def test_each_models_erf_is_dataset_erf_over_the_studys_lr_inputs(workspace: Path, tmp_path: Path) -> None:
    study = load_study({
        "models": [{"spec": f"{workspace / 'odd_models.py'}:Quick", "name": "quick"},
                   {"spec": f"{workspace / 'odd_models.py'}:TupleOut", "name": "tuple"}],
        "images": [str(workspace / "astro.png"), {"path": str(workspace / "cat.png"), "crop": [0, 0, 64, 48]}],
        "windows": [[20, 20, 16]], "lam": {"n_steps": 2}, "erf": {"size": [24, 20]}, "output": str(tmp_path),
    })
    run_sweep(study, limit=0, progress=False)
    assert [row["status"] for row in read_csv(tmp_path / "erf.csv")] == ["pending", "pending"]
    run_sweep(study, accelerator="cpu", devices=1, progress=False)
    quick, failed = read_csv(tmp_path / "erf.csv")
    inputs = [load_input(workspace / "astro.png", scale=4)[0],
              load_input(workspace / "cat.png", scale=4, crop=(0, 0, 64, 48))[0]]
    expected = dataset_erf(load_model(study.models[0].spec), inputs, size=(24, 20))
    saved = np.load(tmp_path / "erf" / "quick.npy")
    np.testing.assert_array_equal(saved, expected.numpy())
    for threshold, square in erf_area_ratios(expected).items():
        assert float(quick[f"area_ratio_{100 * threshold:g}"]) == square.ratio
        assert int(quick[f"side_{100 * threshold:g}"]) == square.side
    assert (quick["images"], quick["height"], quick["width"], quick["status"]) == ("2", "24", "20", "ok")
    with Image.open(tmp_path / "erf" / "quick.png") as picture:
        assert picture.size[0] >= 20 * 4  # upscaled to be seen
    assert failed["status"] == "error" and "tensor" in failed["error"]
    before = (tmp_path / "erf" / "quick.json").stat().st_mtime_ns
    run_sweep(study, accelerator="cpu", devices=1, progress=False)
    assert (tmp_path / "erf" / "quick.json").stat().st_mtime_ns == before, "a current ERF was computed again"


def test_the_plots_have_one_panel_per_lr_size(resumed_run, tmp_path: Path) -> None:
    output = resumed_run[2].output
    rows = read_rows(output)
    one_size = [row for row in rows if row["lr_width"] == 16]
    assert plot_di_per_model(one_size, ["default", "quick"], tmp_path / "one.png")
    summary = [row for row in read_summary(output) if row["lr_size"] == "16x16"]
    assert plot_di_versus_psnr(summary, tmp_path / "one_psnr.png")
    for name, single in (("di_per_model", "one"), ("di_versus_psnr", "one_psnr")):
        with Image.open(output / "plots" / f"{name}.png") as both, Image.open(tmp_path / f"{single}.png") as one:
            # Two panels side by side, each as wide as the single one (the margin for the legend is shared).
            assert both.height == one.height and both.width > 1.6 * one.width


def read_rows(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "probes.jsonl").read_text().splitlines()]


def read_summary(output: Path) -> list[dict]:
    return [{key: (float(value) if key.startswith(("di_", "psnr_")) and value else value or None)
             for key, value in row.items()} for row in read_csv(output / "models.csv")]


def test_models_of_different_scales_get_one_figure_per_scale(workspace: Path, tmp_path: Path) -> None:
    study = load_study({
        "models": [{"spec": f"{workspace / 'odd_models.py'}:Quick", "name": "quick"},
                   {"spec": f"{workspace / 'odd_models.py'}:Doubler", "name": "doubler", "scale": 2}],
        "images": [str(workspace / "astro.png")], "windows": [[20, 20, 16]], "lam": {"n_steps": 2},
        "figures": {"formats": ["svg"]}, "output": str(tmp_path),
    })
    run_sweep(study, accelerator="cpu", devices=1, progress=False)
    files = sorted(path.name for path in (tmp_path / "figures").iterdir())
    assert files == ["astro-x2.json", "astro-x2.svg", "astro-x4.json", "astro-x4.svg"]
    for scale, model, lr_size in ((2, "doubler", "32x32"), (4, "quick", "16x16")):
        (cell,) = figure_summary(tmp_path, f"astro-x{scale}")["cells"]
        assert cell["model"] == model and f"(LR {lr_size})" in cell["label"]
