from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from lam_captum.cli import DEFAULT_CROP, main
from lam_captum.models import build_model

FAST = ["--steps", "3", "--no-progress"]


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
    assert summary["crop"] == list(DEFAULT_CROP) and summary["weights"] is None
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
    assert first["crop"] is None and second["crop"] is None
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


UPSAMPLE = ["--model", "torch.nn:Upsample", "--model-args"]


@pytest.mark.parametrize("factor", [2, 3])
def test_lr_input_centres_the_window_by_the_models_own_scale(factor, tmp_path, capsys):
    # torch's Upsample has no `scale` attribute: only its output tells the factor.
    lr = tmp_path / "lr.png"
    Image.fromarray((np.random.default_rng(0).random((24, 24, 3)) * 255).astype(np.uint8)).save(lr)
    status = main([str(lr), "--lr", *UPSAMPLE, json.dumps({"scale_factor": factor, "mode": "bicubic"}), "--size", "8",
                   *FAST, "--output", str(tmp_path / "out")])
    assert status == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    centre = (24 * factor - 8) // 2
    assert summary["scale"] == factor and (summary["window"]["top"], summary["window"]["left"]) == (centre, centre)


@pytest.mark.parametrize(("arguments", "message"), [
    (["--lr", "--scale", "2"], "`--scale` 2 does not match the model, which is x4: give `--scale 4` or leave it out"),
    ([*UPSAMPLE, '{"scale_factor": 2}'], "the model is x2, but the HR image was downscaled by 4 (the model has no "
                                          "`scale` attribute to tell): give `--scale 2`"),
])
def test_a_scale_the_model_does_not_have_is_named_before_the_path(arguments, message, hr_photo, tmp_path, capsys):
    assert main([str(hr_photo), *arguments, *FAST, "--output", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


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
        (["{photo}", "--top", "90", "--left", "0"], "the window .* must lie inside the 96x80 SR output"),
        (["{photo}", "--kernel-size", "8"], "`--kernel-size` must be a positive odd integer, got 8"),
        (["{photo}", "--fold", "0"], "`--steps` must be an integer >= 1, got 0"),
        (["{photo}", "--alpha", "2"], r"`--alpha` must be in \[0, 1\], got 2.0"),
        (["{photo}", "--model", "no_such_package.models:Net"], "no_such_package"),
        (["{photo}", "--model", "edsr-baseline", "--model-args", "{oops"], "`--model-args` must be a JSON object"),
        (["{photo}", "--weights", "{weights}"], "missing"),
        (["{photo}", "--output", "{file}/sub"], "cannot write|Not a directory|exists"),
        (["{photo}", "--device", "cuda:0"], "GPU|cuda"),
        (["{photo}", "--crop", "0", "0", "97", "80"], "`--crop` must lie inside the 96x80 image"),
        (["{photo}", "--scale", "2"], r"`--scale` 2 does not match the model, which is x4: give `--scale 4`"),
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
    assert re.search(message, error_lines[0]), error_lines[0]


BROKEN_MODEL = """
import torch
class Broken(torch.nn.Module):
    scale = 2
    def forward(self, x):
        raise RuntimeError("weights not loaded")
"""
GRAY_MODEL = """
import torch
class Gray(torch.nn.Sequential):
    scale = 2
    def __init__(self):
        super().__init__(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.PixelShuffle(2))
"""


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["{photo}", "--grayscale"], "^the model 'default' does not take 1-channel images \\(its first convolution "
                                     "wants 3 channels, got 1\\): leave out `--grayscale`$"),
        (["{photo}", "--model", "{models}/gray.py:Gray"], "does not take 3-channel images \\(its first convolution "
                                                          "wants 1 channel, got 3\\): add `--grayscale`$"),
        (["{photo}", "--model", "{models}/broken.py:Broken"], "^the model '.*broken.py:Broken' raised RuntimeError in "
                                                              "forward on the 1x3x48x40 LR image on cpu: weights not loaded$"),
        (["{photo}", "--device", "meta"], "^`--device` 'meta' holds shapes only"),
        (["{photo}", "--device", "mps"], "^`--device` 'mps' cannot run the model 'default': "),
        (["{photo}", "--steps", "100000000"], "^`--steps` must be at most 10000, got 100000000"),
        (["missing.png"], "^the image argument 'missing.png' is not an existing file$"),
        (["--imgpath", "missing.png"], "^`--imgpath` 'missing.png' is not an existing file$"),
        (["--imgpath", "{not_an_image}"], "^cannot read `--imgpath` '.*notes.png' as an image"),
        (["{photo}", "--model", "no_such_model"], "^`--model` must be a built-in model name"),
        (["{photo}", "--weights", "missing.pt"], "`--weights` does not exist"),
        (["{photo}", "--model", "edsr-baseline", "--scale", "5"], "^`--scale` must be 2, 3, 4 or 8, got 5$"),
        (["{photo}", "--top", "90", "--left", "0"], r"^the window \(`--top` 90, `--left` 0, `--size` 16\) must lie "
                                                     r"inside the 96x80 SR output less 1 pixel at the bottom and right "
                                                     r"\(the gradient detector reads one more\) \(the 24x20 LR input "
                                                     r"at x4\)$"),
        (["{photo}", "--size", "100"], r"^the window \(`--size` 100\) must lie inside the 96x80 SR output"),
        (["{photo}", "--top", "80", "--left", "0"], r"^the window \(`--top` 80, `--left` 0, `--size` 16\) must lie "
                                                     r"inside the 96x80 SR output less 1 pixel at the bottom and right"),
        (["{photo}", "--weights", "{not_an_image}"], "^`--weights` '.*notes.png' is not a torch checkpoint nor a "
                                                     "safetensors file"),
        (["{photo}", "--weights", "{x2_weights}"], "^the weights in `--weights` '.*x2.pt' do not fit EDSR: .*; they "
                                                   "are x2 weights: give `--scale 2`$"),
        (["{photo}", "--model", "edsr", "--weights", "{x2_weights}"], "^the weights in `--weights` '.*x2.pt' do not "
                                                                      "fit EDSR: [^;]*$"),
    ],
    ids=["grayscale with an RGB model", "RGB with a grayscale model", "model raises in forward", "meta device",
         "device torch cannot use", "huge step count", "missing image", "missing --imgpath", "not an image",
         "unknown model", "missing weights", "scale the model refuses", "window past the output",
         "window larger than the output", "window flush with the bottom", "weights that are no checkpoint",
         "x2 weights without --scale", "weights of another architecture"],
)
def test_bad_input_is_one_line_naming_the_flag(hr_photo, tmp_path, capsys, monkeypatch, arguments, message):
    if "mps" in arguments and torch.backends.mps.is_available():
        pytest.skip("this torch runs on mps")
    (tmp_path / "broken.py").write_text(BROKEN_MODEL)
    (tmp_path / "gray.py").write_text(GRAY_MODEL)
    (tmp_path / "notes.png").write_text("plain text")
    if "{x2_weights}" in arguments:
        torch.save(build_model("edsr-baseline", scale=2).state_dict(), tmp_path / "x2.pt")
    values = {"{photo}": hr_photo, "{models}": tmp_path, "{not_an_image}": tmp_path / "notes.png",
              "{x2_weights}": tmp_path / "x2.pt"}
    monkeypatch.chdir(tmp_path)
    assert main([*FAST, "--output", str(tmp_path / "out"), *(_fill(argument, values) for argument in arguments)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("lam-captum: error: "), captured.err
    assert re.search(message, captured.err.strip().removeprefix("lam-captum: error: ")), captured.err
    assert not (tmp_path / "out").exists()


def test_usage_error_is_one_line_and_closed_sets_are_choices(capsys):
    for arguments in (["--method", "simpson"], ["--detector", "edges"], ["--kde", "maybe"], ["--steps", "many"]):
        with pytest.raises(SystemExit) as exit_info:
            main(arguments)
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and error.startswith("lam-captum: error: argument "), error
        assert "invalid choice" in error or "invalid int value" in error


def test_unexpected_error_is_one_line_naming_its_type_and_exit_1(hr_photo, tmp_path, capsys, monkeypatch):
    import lam_captum.explain

    def failing_explain(*args, **kwargs):
        raise ZeroDivisionError("a bug\nover two lines")

    monkeypatch.setattr(lam_captum.explain, "explain", failing_explain)
    assert main([str(hr_photo), *FAST, "--output", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == "lam-captum: error: unexpected ZeroDivisionError: a bug over two lines\n"


def test_output_folder_is_checked_before_the_model_is_loaded(hr_photo, tmp_path, capsys, monkeypatch):
    import lam_captum.cli

    (tmp_path / "notes.txt").write_text("a file")
    monkeypatch.setattr(lam_captum.cli, "model_from_flags", lambda *args: pytest.fail("the model was loaded"))
    assert main([str(hr_photo), *FAST, "--output", str(tmp_path / "notes.txt" / "out")]) == 2
    assert capsys.readouterr().err == (f"lam-captum: error: cannot write the results to `--output` "
                                       f"'{tmp_path}/notes.txt/out': '{tmp_path}/notes.txt' is a file, not a folder\n")


def test_output_folder_refusing_writes_is_reported_before_the_model_is_loaded(hr_photo, tmp_path, capsys,
                                                                            monkeypatch):
    import tempfile

    import lam_captum.cli

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    monkeypatch.setattr(lam_captum.cli, "model_from_flags", lambda *args: pytest.fail("the model was loaded"))
    assert main([str(hr_photo), *FAST, "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"lam-captum: error: cannot write the results to `--output` '{tmp_path}/out': "
                                       "Permission denied\n")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes in any folder")
def test_read_only_output_folder_is_refused_before_the_model_is_loaded(hr_photo, tmp_path, capsys, monkeypatch):
    import lam_captum.cli

    (tmp_path / "locked").mkdir(mode=0o500)
    monkeypatch.setattr(lam_captum.cli, "model_from_flags", lambda *args: pytest.fail("the model was loaded"))
    assert main([str(hr_photo), *FAST, "--output", str(tmp_path / "locked" / "out")]) == 2
    assert "cannot write the results to `--output`" in capsys.readouterr().err


def test_failed_run_leaves_the_previous_results_untouched(hr_photo, tmp_path, capsys, monkeypatch):
    from lam_captum import pictures

    output = tmp_path / "out"
    assert main([str(hr_photo), *FAST, "--output", str(output)]) == 0
    (output / "notes.txt").write_text("the user's own file")
    before = {path.name: path.read_bytes() for path in output.iterdir()}

    def failing_figure(*args, **kwargs):
        raise RuntimeError("the figure cannot be drawn")

    monkeypatch.setattr(pictures, "draw_lam_figure", failing_figure)
    assert main([str(hr_photo), *FAST, "--steps", "4", "--output", str(output)]) == 1
    assert {path.name: path.read_bytes() for path in output.iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["face.png", "out"]


class _Explained(Exception):
    """Raised instead of explaining, once the image and window are known."""


def test_built_in_photo_is_cropped_only_when_no_image_is_given(tmp_path, capsys, monkeypatch):
    import lam_captum.explain
    from lam_captum.imageio import default_image_path

    def stop(model, lr, window, *args, **kwargs):
        raise _Explained(tuple(lr.shape), window)

    monkeypatch.setattr(lam_captum.explain, "explain", stop)
    for image in ([], [str(default_image_path())], ["--imgpath", str(default_image_path())]):
        assert main([*image, *FAST, "--output", str(tmp_path / "out")]) == 1
    shapes_and_windows = [line.removeprefix("lam-captum: error: unexpected _Explained: ")
                          for line in capsys.readouterr().err.splitlines()]
    assert shapes_and_windows == ["((3, 64, 64), (106, 96, 16))", *["((3, 150, 128), (292, 248, 16))"] * 2]


def test_summary_records_the_image_crop_model_and_weights(hr_photo, tmp_path, capsys):
    weights = tmp_path / "edsr.pt"
    from lam_captum.models import load_model

    torch.save(load_model("edsr-baseline", {"scale": 2}).state_dict(), weights)
    assert main([str(hr_photo), "--crop", "8", "4", "40", "36", "--weights", str(weights), "--scale", "2", *FAST,
                 "--output", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["image"] == str(hr_photo) and summary["crop"] == [8, 4, 40, 36]
    assert summary["model"] == "edsr-baseline" and summary["weights"] == str(weights) and summary["model_args"] == {}
    assert summary["lr_size"] == [20, 18]


def test_ctrl_c_stops_with_one_line_exit_130_and_leaves_the_results_untouched(hr_photo, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "summary.json").write_text("the previous run's")
    process = subprocess.Popen([sys.executable, "-m", "lam_captum", str(hr_photo), "--steps", "10000", "--output",
                                str(output)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        started, deadline = b"", time.monotonic() + 120
        while b"LAM path steps" not in started and time.monotonic() < deadline:
            started += os.read(process.stderr.fileno(), 256)
        assert b"LAM path steps" in started, "the path never started"
        process.send_signal(signal.SIGINT)
        _, error = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    last_line = error.decode().replace("\r", "\n").strip().splitlines()[-1]
    assert last_line == "lam-captum: interrupted" and b"Traceback" not in error
    assert [path.name for path in output.iterdir()] == ["summary.json"]
    assert (output / "summary.json").read_text() == "the previous run's"


def test_degrade_makes_the_restoration_input_from_the_clean_image(hr_photo, tmp_path, capsys):
    from lam_captum.degrade import degrade
    from lam_captum.explain import explain
    from lam_captum.imageio import load_input
    from lam_captum.models import load_model

    denoiser = tmp_path / "denoiser.py"
    denoiser.write_text("import torch\n\nclass Denoiser(torch.nn.Conv2d):\n"
                        "    def __init__(self):\n        torch.manual_seed(0)\n"
                        "        super().__init__(3, 3, 3, padding=1)\n")
    output = tmp_path / "out"
    arguments = [str(hr_photo), "--model", f"{denoiser}:Denoiser", "--scale", "1", "--degrade", "noise:25",
                 "--seed", "3", "--top", "10", "--left", "12", "--size", "8", *FAST, "--output", str(output)]
    assert main(arguments) == 0, capsys.readouterr().err
    summary = json.loads((output / "summary.json").read_text())
    assert summary["degrade"] == "noise:25" and summary["seed"] == 3 and summary["scale"] == 1
    clean, _ = load_input(hr_photo, scale=1)
    noisy = degrade(clean, "noise:25", seed=3)
    expected = explain(load_model(f"{denoiser}:Denoiser"), noisy, (10, 12, 8), n_steps=3).attribution
    np.testing.assert_allclose(np.load(output / "attribution.npy"), expected.numpy(), rtol=1e-5, atol=1e-7)
    on_clean = explain(load_model(f"{denoiser}:Denoiser"), clean, (10, 12, 8), n_steps=3).attribution
    assert not np.allclose(np.load(output / "attribution.npy"), on_clean.numpy(), rtol=1e-3)


def test_bad_degradation_names_the_flag(hr_photo, tmp_path, capsys):
    assert main([str(hr_photo), "--degrade", "rain:3", *FAST, "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == ("lam-captum: error: `--degrade` must be noise:SIGMA, jpeg:Q or "
                                               "blur:S, got 'rain:3'")
    assert not (tmp_path / "out").exists()


def test_signed_map_and_vector_figures_are_written_on_request(hr_photo, tmp_path, capsys):
    output = tmp_path / "out"
    assert main([str(hr_photo), "--signed", "--format", "png", "pdf", "svg", *FAST, "--output", str(output)]) == 0
    assert "signed.png" in capsys.readouterr().out
    assert (output / "figure.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in (output / "figure.svg").read_bytes()[:400]
    signed = np.asarray(Image.open(output / "signed.png"))
    summary = json.loads((output / "summary.json").read_text())
    # Red (positive) and, unless no pixel is negative, blue pixels: the sign is what this picture adds.
    assert (signed[..., 0] > signed[..., 2] + 50).any()
    assert ((signed[..., 2] > signed[..., 0] + 50).any()) == (summary["negative_share"] > 0)


def test_preset_sets_the_path_and_flags_override_it(hr_photo, tmp_path, capsys):
    from lam_captum import LAMSettings

    output = tmp_path / "out"
    assert main([str(hr_photo), "--preset", "fast", "--kernel-size", "7", "--no-progress", "--output", str(output)]) == 0
    summary = json.loads((output / "summary.json").read_text())
    fast = LAMSettings.preset("fast")
    assert (summary["n_steps"], summary["method"], summary["kernel_size"]) == (fast.n_steps, fast.method, 7)
    with pytest.raises(SystemExit) as exit_status:
        main([str(hr_photo), "--preset", "quick", *FAST, "--output", str(output)])
    assert exit_status.value.code == 2
    assert "argument --preset: invalid choice: 'quick'" in capsys.readouterr().err


def test_an_empty_output_flag_is_refused_and_warnings_are_lines_of_the_command(tmp_path, capsys, monkeypatch):
    assert main(["--output", "", *FAST]) == 2
    assert "`--output` must name a folder, got '' (for the working folder write '.')" in capsys.readouterr().err
    black = tmp_path / "black.png"
    Image.new("RGB", (32, 32)).save(black)
    monkeypatch.chdir(tmp_path)
    assert main([str(black), *FAST, "--output", "out"]) == 0
    err = capsys.readouterr().err
    assert "lam-captum: warning: the attribution of sample(s) [0] is all zero although the input gradients" in err
    assert "runpy" not in err and ".py:" not in err
