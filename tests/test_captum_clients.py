"""Captum's own wrappers and metrics on LAM: NoiseTunnel, sensitivity_max, infidelity (Captum's code, not copies)."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel
from captum.metrics import infidelity, sensitivity_max
from conftest import tiny_sr

from lam_captum import ERF, LAM, Window
from lam_captum.functional import as_windows, gradient_detector

WINDOWS = [(2, 2, 8), (8, 6, 10)]
STEPS = 3


@pytest.fixture
def model() -> torch.nn.Module:
    return tiny_sr(channels=1, scale=2, width=8)


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(5)
    return torch.rand(2, 1, 12, 12)


def same_noisy_copies(images: torch.Tensor, stdev: float, copies_per_call: list[int]) -> list[torch.Tensor]:
    """The inputs NoiseTunnel builds from the random stream: each sample repeated in a row, plus normal noise,
    one batch per call of the method (drawn in the same order, so the same seed gives the same noise)."""
    batches = []
    for copies in copies_per_call:
        shape = (images.shape[0] * copies,) + tuple(images.shape[1:])
        noise = torch.normal(0, torch.full(shape, stdev))
        batches.append(images.repeat_interleave(copies, dim=0) + noise)
    return batches


def lam_by_sample(lam: LAM, batches: list[torch.Tensor], copies_per_call: list[int]) -> list[torch.Tensor]:
    """LAM of every noisy copy of sample n with window n, one call per sample: ``(copies, C, H, W)`` per sample."""
    per_sample = []
    for n, window in enumerate(WINDOWS):
        runs = [batch[n * copies : (n + 1) * copies] for batch, copies in zip(batches, copies_per_call)]
        per_sample.append(torch.cat([lam.attribute(run, window, n_steps=STEPS) for run in runs]))
    return per_sample


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("batch_size", [None, 2])
def test_noise_tunnel_equals_lam_over_the_same_noisy_inputs_with_one_window_per_sample(model, images, nt_type,
                                                                                      batch_size):
    lam = LAM(model)
    torch.manual_seed(11)
    smoothed = NoiseTunnel(lam).attribute(images, nt_type=nt_type, nt_samples=3, nt_samples_batch_size=batch_size,
                                          stdevs=0.05, window=WINDOWS, n_steps=STEPS)
    copies_per_call = [3] if batch_size is None else [2, 1]
    torch.manual_seed(11)
    per_sample = lam_by_sample(lam, same_noisy_copies(images, 0.05, copies_per_call), copies_per_call)
    mean = torch.stack([a.mean(dim=0) for a in per_sample])
    mean_square = torch.stack([(a**2).mean(dim=0) for a in per_sample])
    expected = {"smoothgrad": mean, "smoothgrad_sq": mean_square, "vargrad": mean_square - mean**2}[nt_type]
    assert smoothed.shape == images.shape
    torch.testing.assert_close(smoothed, expected, rtol=1e-5, atol=1e-8)


def test_noise_tunnel_returns_the_convergence_delta_of_every_noisy_copy(model, images):
    lam = LAM(model)
    torch.manual_seed(3)
    smoothed, delta = NoiseTunnel(lam).attribute(images, nt_samples=3, nt_samples_batch_size=2, stdevs=0.05,
                                                 window=WINDOWS, n_steps=STEPS, return_convergence_delta=True)
    torch.manual_seed(3)
    batches = same_noisy_copies(images, 0.05, [2, 1])
    expected = torch.cat([lam.attribute(batch, WINDOWS, n_steps=STEPS, return_convergence_delta=True)[1]
                          for batch in batches])
    assert smoothed.shape == images.shape and delta.shape == (6,)
    torch.testing.assert_close(delta, expected)


def test_noise_tunnel_with_tiny_noise_is_lam(model, images):
    smoothed = NoiseTunnel(LAM(model)).attribute(images, nt_samples=2, stdevs=1e-12, window=WINDOWS, n_steps=STEPS)
    torch.testing.assert_close(smoothed, LAM(model).attribute(images, WINDOWS, n_steps=STEPS), rtol=1e-4, atol=1e-7)


def test_noise_tunnel_keeps_a_one_tuple_input_a_one_tuple(model, images):
    smoothed = NoiseTunnel(LAM(model)).attribute((images,), nt_samples=2, stdevs=0.01, window=(4, 4, 8),
                                                 n_steps=STEPS)
    assert isinstance(smoothed, tuple) and len(smoothed) == 1 and smoothed[0].shape == images.shape


def test_attribute_takes_a_one_tuple_and_returns_one_as_captum_methods_do(model, images):
    lam = LAM(model)
    expected, expected_delta = lam.attribute(images, WINDOWS, n_steps=STEPS, return_convergence_delta=True)
    (attribution,) = lam.attribute((images,), WINDOWS, n_steps=STEPS)
    (with_delta,), delta = lam.attribute((images,), WINDOWS, n_steps=STEPS, return_convergence_delta=True)
    torch.testing.assert_close(attribution, expected)
    torch.testing.assert_close(with_delta, expected)
    torch.testing.assert_close(delta, expected_delta)


def test_a_tuple_of_two_inputs_is_a_clear_error(model, images):
    with pytest.raises(ValueError, match=r"`inputs` must be a tensor or a tuple of one tensor .* got a tuple of 2"):
        LAM(model).attribute((images, images), (2, 2, 8), n_steps=STEPS)


def test_convergence_delta_takes_one_tuples(model, images):
    lam = LAM(model)
    attribution = lam.attribute(images, WINDOWS, n_steps=STEPS)
    baseline = images * 0.5
    expected = lam.compute_convergence_delta(attribution, baseline, images, window=WINDOWS)
    from_tuples = lam.compute_convergence_delta((attribution,), (baseline,), (images,), window=WINDOWS)
    torch.testing.assert_close(from_tuples, expected)


def wobble(inputs: torch.Tensor, radius: float) -> torch.Tensor:
    """A deterministic perturbation of each pixel by at most ``radius`` (it depends on the value only)."""
    return inputs + radius * torch.sin(97.0 * inputs)


@pytest.mark.parametrize("max_examples_per_batch", [None, 4])
def test_sensitivity_max_of_lam_equals_the_formula_with_one_window_per_sample(model, images,
                                                                              max_examples_per_batch):
    lam = LAM(model)
    sensitivity = sensitivity_max(lam.attribute, images, perturb_func=wobble, perturb_radius=0.05,
                                  n_perturb_samples=3, max_examples_per_batch=max_examples_per_batch,
                                  window=WINDOWS, n_steps=STEPS)
    expected = []
    for n, window in enumerate(WINDOWS):
        original = lam.attribute(images[n : n + 1], window, n_steps=STEPS)
        perturbed = lam.attribute(wobble(images[n : n + 1], 0.05), window, n_steps=STEPS)
        expected.append(torch.linalg.norm(perturbed - original) / torch.linalg.norm(original))
    assert sensitivity.shape == (2,)
    torch.testing.assert_close(sensitivity, torch.stack(expected), rtol=1e-4, atol=1e-7)


def test_sensitivity_max_of_lam_is_zero_without_perturbation(model, images):
    sensitivity = sensitivity_max(LAM(model).attribute, images, perturb_func=lambda inputs: inputs,
                                  n_perturb_samples=2, window=(4, 4, 8), n_steps=STEPS)
    assert torch.equal(sensitivity, torch.zeros(2))


def test_objective_is_the_detector_of_each_window_on_the_model_output(model, images):
    expected = torch.cat([gradient_detector(model(images[n : n + 1]), Window.square(*w)) for n, w in enumerate(WINDOWS)])
    torch.testing.assert_close(LAM(model).objective(WINDOWS)(images), expected)


def test_objective_runs_the_model_in_eval_mode_and_leaves_its_mode(images):
    model = torch.nn.Sequential(tiny_sr(channels=1, scale=2, width=8), torch.nn.Dropout(0.5)).train()
    objective = LAM(model).objective((2, 2, 8))
    torch.testing.assert_close(objective(images), objective(images))
    assert model.training


def test_infidelity_of_lam_equals_the_formula(model, images):
    lam = LAM(model)
    attribution = lam.attribute(images, WINDOWS, n_steps=STEPS)

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        perturbation = 0.02 * torch.sin(31.0 * inputs)
        return perturbation, inputs - perturbation

    objective = lam.objective(WINDOWS, repeats="each")
    score = infidelity(objective, perturb, images, attribution, n_perturb_samples=3)
    perturbation, perturbed = perturb(images)
    explained = (perturbation * attribution).flatten(1).sum(dim=1)
    expected = (explained - (objective(images) - objective(perturbed))) ** 2
    assert score.shape == (2,)
    torch.testing.assert_close(score, expected, rtol=1e-4, atol=1e-10)


# ERF is a Captum attribution too: the same tools take it


def test_noise_tunnel_of_erf_is_erf_over_the_same_noisy_inputs(model, images):
    erf = ERF(model)
    torch.manual_seed(11)
    smoothed = NoiseTunnel(erf).attribute(images, nt_type="smoothgrad", nt_samples=3, stdevs=0.05, position=(10, 12))
    torch.manual_seed(11)
    (noisy,) = same_noisy_copies(images, 0.05, [3])
    expected = erf.attribute(noisy, (10, 12)).reshape(2, 3, *images.shape[1:]).mean(dim=1)
    torch.testing.assert_close(smoothed, expected, rtol=1e-5, atol=1e-8)


def test_erf_takes_a_one_tuple_and_sensitivity_max_runs_it(model, images):
    (erf,) = ERF(model).attribute((images,), (10, 12))
    assert torch.equal(erf, ERF(model).attribute(images, (10, 12)))
    assert sensitivity_max(ERF(model).attribute, images, position=(10, 12)).shape == (2,)


def test_integrated_gradients_of_the_objective_gives_each_image_its_own_window(model, images):
    # IntegratedGradients repeats the whole batch at each step: with the consecutive order NoiseTunnel needs,
    # windows went to the wrong images (0.71 of the maximum off), silently.
    lam = LAM(model)
    together = IntegratedGradients(lam.objective(WINDOWS, repeats="batch")).attribute(images, n_steps=4)
    alone = torch.cat([IntegratedGradients(lam.objective(window)).attribute(images[n : n + 1], n_steps=4)
                       for n, window in enumerate(WINDOWS)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-8)


def test_an_objective_of_several_windows_on_repeated_samples_asks_how_they_repeat(model, images):
    with pytest.raises(ValueError, match=r"`repeats` must say how the 8 samples repeat the images of the 2 windows"):
        IntegratedGradients(LAM(model).objective(WINDOWS)).attribute(images, n_steps=4)
    with pytest.raises(ValueError, match=r"`repeats` must be 'each', 'batch' or None, got 'tiled'"):
        LAM(model).objective(WINDOWS, repeats="tiled")
    with pytest.raises(ValueError, match=r"`window` holds 2 windows for 5 samples"):
        LAM(model).objective(WINDOWS)(torch.cat([images, images, images[:1]]))
    with pytest.raises(ValueError, match=r"`repeats` must be 'each' or 'batch', got 'batches'"):
        as_windows(WINDOWS, 4, repeats="batches")
    assert LAM(model).objective(WINDOWS)(images).shape == (2,)
