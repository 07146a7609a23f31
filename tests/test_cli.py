from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lam_captum.cli import main

FAST = ["--steps", "3", "--no-progress"]


@pytest.fixture
def hr_photo(tmp_path):
    """A 96x80 HR crop of the built-in photo, saved as PNG."""
    from lam_captum.imageio import default_image_path

    path = tmp_path / "face.png"
    with Image.open(default_image_path()) as image:
        image.convert("RGB").crop((180, 140, 260, 236)).save(path)
    return path


def test_python_dash_m_runs_the_built_in_default(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "lam_captum", *FAST, "--output", str(tmp_path / "out")],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "DI " in completed.stdout and "results in" in completed.stdout
    names = {path.name for path in (tmp_path / "out").iterdir()}
    assert names == {"window.png", "heat.png", "heat_blend.png", "kde_blend.png", "sr.png", "figure.png",
                     "attribution.npy", "summary.json"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["lr_size"] == [64, 64] and summary["scale"] == 4 and summary["n_steps"] == 3
    assert summary["window"] == {"top": 106, "left": 96, "height": 16, "width": 16}
    assert 0 < summary["di"] < 100 and summary["model"] == "default" and summary["device"] == "cpu"
    for key in ("gini", "sigma", "convergence_delta", "seconds"):
        assert key in summary
    assert np.load(tmp_path / "out" / "attribution.npy").shape == (3, 64, 64)


def test_unofficial_tool_flags_are_aliases(hr_photo, tmp_path, capsys):
    clean = ["--top", "20", "--left", "24", "--size", "12", "--steps", "3", "--sigma", "1.0", "--kernel-size", "7",
             "--alpha", "0.3", "--scale", "4"]
    alias = ["--h", "20", "--w", "24", "--window_size", "12", "--fold", "3", "--sigma", "1.0", "--l", "7",
             "--alpha", "0.3", "--zoomfactor", "4", "--kde", "True"]
    assert main([str(hr_photo), *clean, "--no-progress", "--output", str(tmp_path / "clean")]) == 0
    assert main(["--imgpath", str(hr_photo), *alias, "--no-progress", "--output_dir", str(tmp_path / "alias")]) == 0
    first, second = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("clean", "alias"))
    for key in ("di", "gini", "window", "n_steps", "sigma", "kernel_size", "lr_size"):
        assert first[key] == second[key]
    np.testing.assert_array_equal(np.load(tmp_path / "clean" / "attribution.npy"),
                                  np.load(tmp_path / "alias" / "attribution.npy"))


def test_lr_input_and_own_model_file(tmp_path, capsys):
    model_file = tmp_path / "tiny_model.py"
    model_file.write_text(
        "import torch\n"
        "class Tiny(torch.nn.Sequential):\n"
        "    def __init__(self, channels=1, scale=2):\n"
        "        super().__init__(torch.nn.Conv2d(channels, channels * scale * scale, 3, padding=1),\n"
        "                         torch.nn.PixelShuffle(scale))\n"
    )
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in _tiny_state(1, 2).items()}}, weights)
    lr = tmp_path / "lr.png"
    Image.fromarray((np.random.default_rng(0).random((20, 24)) * 255).astype(np.uint8), mode="L").save(lr)
    code = main([str(lr), "--lr", "--grayscale", "--model", f"{model_file}:Tiny", "--model-args", '{"scale": 2}',
                 "--weights", str(weights), "--top", "4", "--left", "6", "--size", "8", *FAST,
                 "--output", str(tmp_path / "out")])
    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["scale"] == 2 and summary["lr_size"] == [20, 24]
    assert np.load(tmp_path / "out" / "attribution.npy").shape == (1, 20, 24)


def _fill(argument: str, values: dict) -> str:
    for key, value in values.items():
        argument = argument.replace(key, str(value))
    return argument


def _tiny_state(channels: int, scale: int) -> dict[str, torch.Tensor]:
    return torch.nn.Sequential(torch.nn.Conv2d(channels, channels * scale * scale, 3, padding=1)).state_dict()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.png"], "is not an existing file"),
        (["{not_an_image}"], "cannot read"),
        (["{photo}", "--top", "90", "--left", "0"], "`window` must lie inside the 96x80 SR output"),
        (["{photo}", "--kernel-size", "8"], "`--kernel-size` must be a positive odd integer, got 8"),
        (["{photo}", "--fold", "0"], "`--steps` must be an integer >= 1, got 0"),
        (["{photo}", "--alpha", "2"], r"`--alpha` must be in \[0, 1\], got 2.0"),
        (["{photo}", "--model", "no_such_package.models:Net"], "no_such_package"),
        (["{photo}", "--model", "edsr-baseline", "--model-args", "{oops"], "`--model-args` must be a JSON object"),
        (["{photo}", "--weights", "{weights}"], "missing"),
        (["{photo}", "--output", "{file}/sub"], "cannot write|Not a directory|exists"),
        (["{photo}", "--device", "cuda:0"], "GPU|cuda"),
        (["{photo}", "--crop", "0", "0", "97", "80"], "`--crop` must lie inside the 96x80 image"),
        (["{photo}", "--scale", "2"], r"into 192x160, but the HR image `hr` is 96x80: downscale it by the model's"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(hr_photo, tmp_path, capsys, arguments, message):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("plain text")
    weights = tmp_path / "wrong.pt"
    torch.save(_tiny_state(3, 2), weights)
    if "cuda" in arguments and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    values = {"{photo}": hr_photo, "{not_an_image}": not_an_image, "{weights}": weights, "{file}": not_an_image}
    filled = [_fill(argument, values) for argument in arguments]
    output = [] if "--output" in filled else ["--output", str(tmp_path / "out")]
    assert main([*FAST, *output, *filled]) == 2
    captured = capsys.readouterr()
    error_lines = captured.err.strip().splitlines()
    assert len(error_lines) == 1 and error_lines[0].startswith("lam-captum: error: ")
    assert "Traceback" not in captured.err
    import re

    assert re.search(message, error_lines[0]), error_lines[0]
