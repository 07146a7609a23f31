"""Named settings (LAMSettings.preset) and the tiny architectures that the step study runs on."""

from __future__ import annotations

import pytest
import torch
from architectures import PlainCNN, TinyRRDBNet, TinySwinIR

from lam_captum import LAM, LAMSettings, SettingsError
from lam_captum._core.settings import PRESETS
from lam_captum.functional import attribution_map, diffusion_index

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
