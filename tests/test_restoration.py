"""Restoration models (scale 1: the output is the input's size) through LAM, explain() and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from denoisers import trained_denoiser
from reference_lam import demo_lam

from lam_captum import LAM
from lam_captum.cli import main
from lam_captum.degrade import degrade
from lam_captum.explain import PICTURE_NAMES, explain
from lam_captum.imageio import default_image_path, load_image, save_png


def psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((image - reference) ** 2).mean()))


@pytest.fixture(scope="module")
def clean() -> torch.Tensor:
    """A 64x64 crop of the built-in photo (the face), the ground truth for denoising."""
    return load_image(default_image_path())[:, 140:204, 200:264]


@pytest.fixture(scope="module")
def denoiser(clean) -> torch.nn.Module:
    return trained_denoiser(clean, sigma=25, steps=60)


@pytest.fixture(scope="module")
def noisy(clean) -> torch.Tensor:
    return degrade(clean, "noise:25", seed=7)


def test_the_denoiser_is_real_it_removes_noise(denoiser, clean, noisy):
    with torch.no_grad():
        restored = denoiser(noisy[None])[0]
    assert restored.shape == noisy.shape
    assert psnr(restored, clean) > psnr(noisy, clean) + 1.0


def test_lam_of_a_denoiser_equals_the_literal_demo(denoiser, noisy):
    window = (20, 24, 8)
    ours = LAM(denoiser).attribute(noisy[None], window, n_steps=12)[0]
    reference = demo_lam(denoiser, noisy.numpy(), *window, fold=12)
    assert float((ours.double() - torch.from_numpy(reference)).abs().max() / np.abs(reference).max()) <= 1e-4


def test_lam_of_a_denoiser_is_local_and_complete(denoiser, noisy):
    window = (28, 28, 8)
    attribution, delta = LAM(denoiser).attribute(noisy[None], window, n_steps=25, return_convergence_delta=True)
    magnitude = attribution[0].sum(0).abs()
    # The detector reads the window and one pixel below and right of it; four 3x3 layers see 4 pixels
    # further. Nothing beyond can matter (the path derivative only multiplies the gradient).
    outside = magnitude.clone()
    outside[28 - 4 : 36 + 1 + 4, 28 - 4 : 36 + 1 + 4] = 0
    assert not outside.any()
    assert magnitude.sum() > 0
    assert abs(float(delta[0])) < 0.2 * float(attribution.sum().abs())


def test_explain_handles_a_denoiser_with_the_clean_image_as_reference(denoiser, noisy, clean, tmp_path):
    result = explain(denoiser, noisy, (20, 24, 8), hr=clean, n_steps=10)
    assert result.scale == 1
    assert result.map.shape == (64, 64) and 0 < result.di < 100
    for name in PICTURE_NAMES[:-1]:
        assert result.pictures[name].shape == (64, 64, 3), name
    folder = result.save(tmp_path / "denoiser")
    assert json.loads((folder / "summary.json").read_text())["scale"] == 1
    assert {f"{name}.png" for name in PICTURE_NAMES} <= {path.name for path in folder.iterdir()}


def test_explain_handles_a_grayscale_denoiser(clean):
    grey = clean.mean(0, keepdim=True)
    model = trained_denoiser(grey, sigma=15, steps=5)
    result = explain(model, degrade(grey, "noise:15"), (30, 30, 4), n_steps=6)
    assert result.scale == 1 and result.attribution.shape == (1, 64, 64)


def test_explain_refuses_a_clean_image_of_another_size(denoiser, noisy, clean):
    with pytest.raises(ValueError, match="`hr` is 32x32"):
        explain(denoiser, noisy, (20, 24, 8), hr=clean[:, :32, :32], n_steps=4)


def test_cli_explains_a_denoiser_on_its_noisy_input(denoiser, noisy, tmp_path, capsys):
    model_file = tmp_path / "denoiser_model.py"
    model_file.write_text((Path(__file__).parent / "denoisers.py").read_text())
    weights = tmp_path / "denoiser.pt"
    torch.save(denoiser.state_dict(), weights)
    image = save_png(noisy, tmp_path / "noisy.png")
    output = tmp_path / "out"
    status = main([str(image), "--lr", "--scale", "1", "--model", f"{model_file}:TinyDenoiser", "--weights",
                   str(weights), "--top", "20", "--left", "24", "--size", "8", "--steps", "8", "--output", str(output),
                   "--device", "cpu", "--no-progress"])
    assert status == 0, capsys.readouterr().err
    summary = json.loads((output / "summary.json").read_text())
    assert summary["scale"] == 1 and summary["lr_size"] == [64, 64]
    assert np.load(output / "attribution.npy").shape == (3, 64, 64)
