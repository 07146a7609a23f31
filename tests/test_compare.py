from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_sr
from PIL import Image
from pypdf import PdfReader

from lam_captum.cli import main
from lam_captum.compare import Comparison, compare
from lam_captum.compare_cli import build_parser
from lam_captum.explain import explain
from lam_captum.functional import Window
from lam_captum.imageio import default_image_path, load_image, save_png
from lam_captum.models import build_model, load_model
from lam_captum.pictures import focus_box, zoom

WINDOWS = [(8, 8, 16), (56, 64, 16)]
STEPS = 4
BICUBIC_SPEC = ("torch.nn:Upsample", '{"scale_factor": 4, "mode": "bicubic"}')


def font_outlines(page) -> set[str]:
    """The kind of glyph programs of a PDF page's fonts (a Type0 font's are those of its descendant)."""
    fonts = [reference.get_object() for reference in page["/Resources"]["/Font"].values()]
    return {(font["/DescendantFonts"][0].get_object() if font["/Subtype"] == "/Type0" else font)["/Subtype"]
            for font in fonts}


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return {"narrow": tiny_sr(width=8, seed=0), "wide": tiny_sr(width=24, seed=1), "third": tiny_sr(seed=2)}


@pytest.fixture(scope="module")
def lr(photo_lr: torch.Tensor) -> torch.Tensor:
    """The shared real 24x24 crop of the built-in photo, as one (3, H, W) image."""
    return photo_lr[0]


@pytest.fixture(scope="module")
def saved(models: dict[str, torch.nn.Module], lr: torch.Tensor, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("comparison")
    comparison = compare(models, lr, WINDOWS, n_steps=STEPS, output=folder, formats=("png", "pdf", "svg"))
    return comparison, folder, json.loads((folder / "summary.json").read_text())


def test_every_cell_is_the_explain_result_of_its_window_and_model(
    saved, models: dict[str, torch.nn.Module], lr: torch.Tensor,
) -> None:
    comparison = saved[0]
    assert comparison.models == ("narrow", "wide", "third")
    assert len(comparison.results) == len(WINDOWS)
    for row, window in enumerate(WINDOWS):
        for column, model in enumerate(models.values()):
            alone = explain(model, lr, window, n_steps=STEPS)
            cell = comparison.results[row][column]
            assert cell.window == alone.window
            assert cell.di == alone.di
            torch.testing.assert_close(cell.attribution, alone.attribution, rtol=0, atol=0)


def test_summary_beside_the_figure_reads_back_every_cell_and_its_di_label(saved) -> None:
    comparison, folder, summary = saved
    assert summary["figures"] == ["comparison.png", "comparison.pdf", "comparison.svg"]
    assert all((folder / name).is_file() for name in summary["figures"])
    assert summary["models"] == ["narrow", "wide", "third"]
    assert [(window["top"], window["left"], window["height"]) for window in summary["windows"]] == WINDOWS
    assert len(summary["cells"]) == len(WINDOWS) * 3
    for cell in summary["cells"]:
        result = comparison.results[cell["row"]][cell["column"]]
        assert cell["model"] == comparison.models[cell["column"]]
        assert cell["di"] == pytest.approx(result.di, rel=1e-12)
        assert cell["lr_size"] == [24, 24]
        assert cell["n_steps"] == STEPS
        assert cell["label"] == f"{cell['model']}\nDI {result.di:.2f} (LR 24x24)"


def test_png_cells_show_their_own_blend_in_their_pixel_box(saved) -> None:
    comparison, folder, summary = saved
    figure = np.asarray(Image.open(folder / "comparison.png").convert("RGB")).astype(np.float64)
    np.testing.assert_array_equal(figure, comparison.figure)
    for cell in summary["cells"]:
        top, left, height, width = cell["pixel_box"]
        shown = figure[top : top + height, left : left + width]
        errors = {}
        for row in range(len(WINDOWS)):
            blend = comparison.results[row][cell["column"]].picture("heat_blend")
            resized = np.asarray(Image.fromarray(blend).resize((width, height), Image.Resampling.NEAREST))
            errors[row] = np.abs(shown - resized).mean()
        assert errors[cell["row"]] < 6, f"cell {cell['row']},{cell['column']} shows its blend (mean error in 0-255)"
        assert errors[cell["row"]] < errors[1 - cell["row"]], "and not the other window's"


def test_pdf_keeps_labels_as_searchable_text_and_maps_as_embedded_images(saved) -> None:
    _, folder, summary = saved
    page = PdfReader(folder / "comparison.pdf").pages[0]
    text = page.extract_text()
    for cell in summary["cells"]:
        for line in cell["label"].splitlines():
            assert line in text
    assert "window 2" in text and "HR image" not in text and "LR image, bicubic-upscaled" in text
    assert font_outlines(page) == {"/CIDFontType2"}, "TrueType fonts (pdf.fonttype 42), not Type 3 glyph drawings"
    image_sizes = [(image.image.width, image.image.height) for image in page.images]
    assert image_sizes.count((96, 96)) >= len(summary["cells"]) + 1, "each map and the image embedded at full size"


def test_svg_keeps_labels_as_text_and_maps_as_images(saved) -> None:
    _, folder, summary = saved
    root = ElementTree.parse(folder / "comparison.svg").getroot()
    namespace = "{http://www.w3.org/2000/svg}"
    text = "\n".join("".join(element.itertext()) for element in root.iter(f"{namespace}text"))
    for cell in summary["cells"]:
        for line in cell["label"].splitlines():
            assert line in text
    assert len(list(root.iter(f"{namespace}image"))) >= len(summary["cells"]) + 1


def test_kde_cells_show_the_kde_blend(models: dict[str, torch.nn.Module], lr: torch.Tensor) -> None:
    heat = compare({"narrow": models["narrow"]}, lr, WINDOWS[:1], n_steps=STEPS)
    kde = compare({"narrow": models["narrow"]}, lr, WINDOWS[:1], n_steps=STEPS, blend="kde")
    assert kde.results[0][0].di == heat.results[0][0].di
    assert not np.array_equal(kde.figure, heat.figure)
    assert "KDE" in kde.draw().axes[-1].get_ylabel()


@pytest.mark.parametrize(("arguments", "error", "message"), [
    ({"models": {}}, ValueError, "`models` must hold at least one model, got none"),
    ({"models": [tiny_sr()]}, TypeError, "`models` must be a mapping of names to models, got list"),
    ({"models": {"": tiny_sr()}}, TypeError, "`models` must be keyed by non-empty names"),
    ({"models": {"a": 3}}, TypeError, r"non-callables for \['a'\]"),
    ({"windows": []}, ValueError, r"`windows` must be a non-empty sequence of windows, got \[\]"),
    ({"windows": (8, 8, 16)}, ValueError, r"`windows` must be a sequence of windows, such as \[\(top, left, size\)\]"),
    ({"blend": "sr"}, ValueError, "`blend` must be one of heat, kde, got 'sr'"),
    ({"output": "out", "formats": ("jpg",)}, ValueError, r"`formats` must name some of png, pdf, svg, got \['jpg'\]"),
    ({"windows": [(90, 0, 16)]}, ValueError, "`window` must lie inside the 96x96 SR output"),
])
def test_compare_rejects(arguments: dict, error: type[Exception], message: str, lr: torch.Tensor) -> None:
    call = {"models": {"a": tiny_sr()}, "windows": [(8, 8, 8)], **arguments}
    with pytest.raises(error, match=message):
        compare(call.pop("models"), lr, call.pop("windows"), n_steps=2, **call)


def test_command_options_belong_to_the_model_they_follow() -> None:
    args = build_parser().parse_args([
        "photo.png", "--model", "default", "--model", "edsr-baseline", "--weights", "b.pt", "--name", "B",
        "--model", "x.py:Net", "--model-args", '{"depth": 2}', "--window", "1", "2", "16", "--window", "3", "4", "8",
    ])
    assert [(model["spec"], model["weights"], model["name"], model["model_args"]) for model in args.models] == [
        ("default", None, None, None), ("edsr-baseline", "b.pt", "B", None), ("x.py:Net", None, None, '{"depth": 2}'),
    ]
    assert args.windows == [[1, 2, 16], [3, 4, 8]]
    assert args.formats == ["png"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--weights", "w.pt", "--model", "default", "--window", "1", "2", "3"],
     "`--weights` must follow the `--model` it belongs to, got 'w.pt' before any `--model`"),
    (["--model", "default", "--name", "a", "--name", "b", "--window", "1", "2", "3"],
     "`--name` given twice for `--model` 'default': 'a' and 'b'"),
    (["--window", "1", "2", "3"], "the following arguments are required: --model"),
    (["--model", "default"], "the following arguments are required: --window"),
    (["--model", "default", "--window", "1", "2", "3", "--format", "jpg"], "invalid choice: 'jpg'"),
])
def test_command_rejects_misplaced_options(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "default", "--model-args", "[1]"], "`--model-args` of `--model` 'default' must be a JSON object, got '[1]'"),
    (["--model", "default", "--model", "default"], "two models are named 'default': give each a `--name`"),
    (["--model", "default", "--steps", "0"], "`--steps` must be"),
    (["--model", "default", "--weights", "missing.pt"], "missing.pt"),
])
def test_command_reports_bad_input_in_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture,
                                               tmp_path: Path) -> None:
    assert main(["compare", *argv, "--window", "1", "2", "3", "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("lam-captum compare: error: ") and message in error
    assert not (tmp_path / "out").exists()


def test_command_writes_the_figure_and_summary_of_each_model_with_its_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture,
) -> None:
    hr_path = save_png(load_image(default_image_path())[:, 120:184, 200:264], tmp_path / "face.png")
    perturbed = build_model("default")
    with torch.no_grad():
        for parameter in perturbed.parameters():
            parameter.mul_(1.5)
    torch.save(perturbed.state_dict(), tmp_path / "perturbed.pt")
    argv = ["compare", str(hr_path), "--model", "default", "--model", "default", "--weights", str(tmp_path / "perturbed.pt"),
            "--name", "perturbed", "--model", BICUBIC_SPEC[0], "--model-args", BICUBIC_SPEC[1], "--name", "bicubic",
            "--window", "8", "8", "16", "--window", "40", "24", "8", "--steps", "2", "--format", "png", "pdf",
            "--output", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["comparison.pdf", "comparison.png", "summary.json"]
    assert summary["models"] == ["default", "perturbed", "bicubic"]
    assert summary["specs"]["perturbed"]["weights"] == str(tmp_path / "perturbed.pt")
    lr = torch.from_numpy(np.asarray(Image.open(hr_path).resize((16, 16), Image.Resampling.BICUBIC), np.float32) / 255)
    references = {"default": build_model("default"), "perturbed": perturbed,
                  "bicubic": load_model(BICUBIC_SPEC[0], json.loads(BICUBIC_SPEC[1]))}
    for cell in summary["cells"]:
        window = (cell["window"]["top"], cell["window"]["left"], cell["window"]["height"])
        alone = explain(references[cell["model"]], lr.permute(2, 0, 1), window, n_steps=2)
        assert cell["di"] == pytest.approx(alone.di, rel=1e-6), cell["label"]
        assert cell["lr_size"] == [16, 16]
    di = {(cell["row"], cell["model"]): cell["di"] for cell in summary["cells"]}
    assert di[0, "default"] != di[0, "perturbed"], "the weights went to the model they follow"
    printed = capsys.readouterr().out
    assert f"window 2 (top=40, left=24, height=8, width=8), bicubic: DI {di[1, 'bicubic']:.2f} (LR 16x16)" in printed


def test_zoomed_rows_show_where_every_model_holds_99_percent(models: dict[str, torch.nn.Module], lr: torch.Tensor,
                                                             tmp_path: Path) -> None:
    comparison = compare(models, lr, WINDOWS, n_steps=STEPS, zoom=True, output=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    figure = comparison.draw()
    cells = [axes for axes in figure.axes if axes.get_xlabel()]
    for cell, axes in zip(summary["cells"], cells):
        box = Window(*cell["zoom_box"])
        assert box == comparison.zoom_box(cell["row"])
        for result in comparison.results[cell["row"]]:
            held = focus_box(result.map, result.window, result.scale)
            assert box.top <= held.top and box.left <= held.left
            assert box.top + box.height >= held.top + held.height and box.left + box.width >= held.left + held.width
        blend = comparison.results[cell["row"]][cell["column"]].picture("heat_blend")
        np.testing.assert_array_equal(axes.get_images()[0].get_array(), zoom(blend, box))
    assert summary["zoom"] is True
    assert not np.array_equal(comparison.figure, compare(models, lr, WINDOWS, n_steps=STEPS).figure)


def test_compare_rejects_models_of_different_scales(lr: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"`models` must share one scale \(windows are in SR pixels\), "
                       r"got scales \{'x4': 4, 'x2': 2\}"):
        compare({"x4": tiny_sr(scale=4), "x2": tiny_sr(scale=2)}, lr, [(8, 8, 8)], n_steps=2)


def test_comparison_of_existing_results_must_fill_its_grid(saved) -> None:
    comparison = saved[0]
    rebuilt = Comparison(models=comparison.models, windows=comparison.windows, results=comparison.results)
    np.testing.assert_array_equal(rebuilt.figure, comparison.figure)
    with pytest.raises(ValueError, match=r"one row per window \(2\) and one column per model \(2\), "
                       r"got rows of lengths \[3, 3\]"):
        Comparison(models=comparison.models[:2], windows=comparison.windows, results=comparison.results)


@pytest.mark.parametrize(("arguments", "message"), [
    (["{missing}"], "the image argument '{missing}' is not an existing file"),
    (["--output", "{file}"], "`--output` '{file}'"),
    (["--scale", "2"], "`--scale` 2 does not match the model, which is x4"),
    (["--model", "{grey}:Grey"], "does not take 3-channel images (its first convolution wants 1 channel, got 3): "
                                 "add `--grayscale`"),
    (["--model", "nosuch"], "`--model` must be a built-in model name"),
    (["{text}"], "cannot read the image argument '{text}' as an image"),
    (["--window", "0", "0", "0"], "`--window` needs top, left >= 0 and a size >= 1"),
])
def test_compare_cli_names_bad_input_before_any_path(arguments, message, tmp_path, capsys):
    grey = tmp_path / "grey.py"
    grey.write_text("import torch\nclass Grey(torch.nn.Sequential):\n    scale = 4\n    def __init__(self):\n"
                    "        super().__init__(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.PixelShuffle(4))\n")
    (tmp_path / "a_file").write_text("")
    (tmp_path / "text.png").write_text("plain text")
    values = {"{missing}": str(tmp_path / "missing.png"), "{file}": str(tmp_path / "a_file"), "{grey}": str(grey),
              "{text}": str(tmp_path / "text.png")}
    filled = [values.get(argument, argument).replace("{grey}", str(grey)) for argument in arguments]
    status = main(["compare", *filled, "--model", "default", "--window", "8", "8", "16", "--steps", "2",
                   "--no-progress", *([] if "--output" in arguments else ["--output", str(tmp_path / "out")])])
    assert status == 2
    expected = message
    for key, value in values.items():
        expected = expected.replace(key, value)
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("arguments", [["--model", "default"], ["--model", "default", "--window", "a", "b", "c"]])
def test_compare_usage_errors_are_one_line(arguments, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(["compare", *arguments])
    assert exit_status.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lam-captum compare: error: ") and err.endswith("(see --help)\n")


def test_saving_again_removes_the_figures_of_formats_this_run_does_not_write(saved, tmp_path) -> None:
    comparison, _, _ = saved
    comparison.save(tmp_path, ("png", "pdf"))
    comparison.save(tmp_path, ("svg",))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["comparison.svg", "summary.json"]
    # A figure no earlier summary listed is the user's, whatever its name.
    (tmp_path / "fig3.pdf").write_bytes(b"the user's figure")
    comparison.save(tmp_path, ("png",), name="fig3", summary_name="fig3.json")
    assert (tmp_path / "fig3.pdf").read_bytes() == b"the user's figure"


def test_a_dead_model_is_labelled_without_a_di(lr) -> None:
    dead = torch.nn.Sequential(torch.nn.Conv2d(3, 48, 3, padding=1), torch.nn.PixelShuffle(4), torch.nn.Hardtanh(5, 6))
    with pytest.warns(RuntimeWarning):
        comparison = compare({"dead": dead}, lr, [(8, 8, 16)], n_steps=2)
    assert comparison.cell_label(0, 0) == "dead\nno DI: the map is all zero (LR 24x24)"
