"""Named settings (LAMSettings.preset), the tiny architectures that the step study runs on, and the settings' way
to every entry point (full_image)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from architectures import PlainCNN, TinyRRDBNet, TinySwinIR
from conftest import tiny_sr

from lam_captum import LAM, LAMSettings, SettingsError
from lam_captum._core.settings import PRESETS
from lam_captum.callbacks import LAMMonitor, Probe
from lam_captum.cli import main
from lam_captum.explain import explain
from lam_captum.functional import attribution_map, diffusion_index
from lam_captum.sweep import load_study

# The bound the "fast" preset was chosen to hold (benchmarks/README.md, bench_steps.py).
DI_TOLERANCE = 0.01
MAP_TOLERANCE = 2e-2


def test_official_preset_is_the_default_settings():
    assert LAMSettings.preset("official") == LAMSettings()


def test_presets_are_validated_settings_of_their_own_names():
    assert set(PRESETS) >= {"official", "fast"}
    assert all(isinstance(settings, LAMSettings) for settings in PRESETS.values())
    assert LAMSettings.preset("fast").n_steps < LAMSettings().n_steps


def test_unknown_preset_is_refused_naming_preset_and_listing_the_names():
    with pytest.raises(SettingsError, match=r"`preset` must be one of official, fast.*got 'quick'") as error:
        LAMSettings.preset("quick")
    assert error.value.field == "preset"


def test_preset_overrides_replace_fields_and_are_validated():
    fast = LAMSettings.preset("fast", internal_batch_size=4)
    assert fast.internal_batch_size == 4
    assert (fast.method, fast.n_steps) == (PRESETS["fast"].method, PRESETS["fast"].n_steps)
    with pytest.raises(SettingsError, match="`sigma` must be > 0"):
        LAMSettings.preset("fast", sigma=0)
    with pytest.raises(SettingsError, match="`steps` is not a LAM setting"):
        LAMSettings.preset("fast", steps=8)


@pytest.mark.parametrize("architecture", [PlainCNN, TinyRRDBNet, TinySwinIR])
@pytest.mark.parametrize("size", [(8, 8), (13, 21)])
def test_tiny_architectures_super_resolve_x4_at_any_size(architecture, size):
    torch.manual_seed(0)
    model = architecture().eval()
    x = torch.rand(2, 3, *size, requires_grad=True)
    output = model(x)
    assert output.shape == (2, 3, 4 * size[0], 4 * size[1])
    (gradient,) = torch.autograd.grad(output[0, :, :4, :4].sum(), x)
    assert gradient[0].abs().sum() > 0 and gradient[1].abs().sum() == 0


@pytest.mark.parametrize(("architecture", "equivariant"), [(PlainCNN, True), (TinySwinIR, False)])
def test_only_the_swin_windows_sit_on_a_fixed_grid(architecture, equivariant):
    torch.manual_seed(0)
    model = architecture().eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        whole, shifted = model(x), model(x[:, :, :, 2:])
    # LR rows and columns 10..21 are far from every border for the plain CNN (receptive radius 7).
    interior = (slice(None), slice(None), slice(40, 88))
    same = torch.allclose(whole[interior][..., 40:88], shifted[interior][..., 32:80], atol=1e-5)
    assert same == equivariant


def test_fast_preset_holds_the_bound_against_a_400_step_gauss_legendre_integral(photo_lr):
    torch.manual_seed(0)
    model = PlainCNN().eval()
    windows = [(40, 40, 16), (8, 56, 16)]
    lam = LAM(model)
    fast = LAMSettings.preset("fast")
    for window in windows:
        reference = attribution_map(lam.attribute(photo_lr, window, n_steps=400, method="gausslegendre"))
        candidate = attribution_map(lam.attribute(photo_lr, window, **fast.as_kwargs()))
        di_error = (diffusion_index(candidate) - diffusion_index(reference)).abs() / diffusion_index(reference)
        assert float(di_error.max()) <= DI_TOLERANCE
        assert float((candidate - reference).abs().max()) <= MAP_TOLERANCE


# The switch of the verified crop, in every place a setting goes


def test_full_image_is_a_setting_that_reaches_attribute_as_crop_false():
    assert LAMSettings().as_kwargs()["crop"] == "auto" and LAMSettings(full_image=True).as_kwargs()["crop"] is False
    assert "full_image" not in LAMSettings().as_kwargs() and LAMSettings(full_image=True).to_dict()["full_image"]
    with pytest.raises(SettingsError, match="`full_image` must be True or False, got 'yes'"):
        LAMSettings(full_image="yes")


def test_explain_callback_cli_and_study_take_full_image(tmp_path, caplog):
    model = tiny_sr()
    image = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.DEBUG, logger="lam_captum._core._region"):
        result = explain(model, image, (40, 40, 16), n_steps=3, full_image=True)
    assert "crop at rows" not in caplog.text
    assert torch.equal(result.attribution, LAM(model).attribute(image[None], (40, 40, 16), n_steps=3, crop=False)[0])

    assert LAMMonitor(Probe(image, (40, 40, 16), "probe"), full_image=True).settings.full_image
    assert main(["--full-image", "--steps", "2", "--no-progress", "--output", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["full_image"] is True
    study = load_study({"models": ["default"], "lam": {"full_image": True, "n_steps": 2},
                        "images": [{"path": "builtin", "crop": [0, 0, 32, 32], "windows": [[8, 8, 16]]}]})
    assert study.lam.full_image
