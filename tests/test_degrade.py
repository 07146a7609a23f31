"""Degraded inputs for restoration models: reproducible, and the degradations benchmarks use."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from lam_captum.degrade import Degradation, degrade, parse_degradation


@pytest.fixture
def clean(photo_lr: torch.Tensor) -> torch.Tensor:
    return photo_lr[0]


def test_noise_is_reproducible_from_its_seed_and_differs_between_seeds(clean):
    first, again, other = degrade(clean, "noise:25", seed=3), degrade(clean, "noise:25", seed=3), degrade(clean, "noise:25", seed=4)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_noise_has_the_requested_sigma_on_the_0_255_scale_and_zero_mean():
    flat = torch.full((3, 128, 128), 0.5)
    noise = (degrade(flat, "noise:15", seed=0) - flat) * 255
    assert abs(float(noise.std()) - 15) < 0.3
    assert abs(float(noise.mean())) < 0.3


def test_noise_field_depends_on_the_seed_only_not_on_the_image(clean):
    other = torch.rand_like(clean)
    assert torch.allclose(degrade(clean, "noise:50") - clean, degrade(other, "noise:50") - other, atol=1e-6)


def test_noise_is_not_clipped_as_denoising_benchmarks_leave_it():
    noisy = degrade(torch.zeros(1, 32, 32), "noise:25")
    assert float(noisy.min()) < 0


def test_noise_zero_returns_the_image_itself(clean):
    assert torch.equal(degrade(clean, "noise:0"), clean)


def test_blur_equals_scipy_gaussian_filter_with_the_mirror_border(clean):
    sigma = 1.5
    radius = math.ceil(3 * sigma)
    reference = np.stack([
        ndimage.gaussian_filter(channel.astype(np.float64), sigma, mode="mirror", truncate=radius / sigma)
        for channel in clean.numpy()
    ])
    blurred = degrade(clean, f"blur:{sigma}")
    assert np.abs(blurred.numpy() - reference).max() < 1e-4


def test_jpeg_matches_a_pillow_round_trip_and_lower_quality_loses_more(clean):
    pixels = np.round(np.clip(clean.numpy(), 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=30)
    reference = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float64).transpose(2, 0, 1) / 255
    assert np.abs(degrade(clean, "jpeg:30").numpy() - reference).max() < 1e-6
    error = {quality: float((degrade(clean, f"jpeg:{quality}") - clean).abs().mean()) for quality in (10, 50, 95)}
    assert error[10] > error[50] > error[95]


def test_grayscale_jpeg_keeps_one_channel(clean):
    assert degrade(clean[:1], "jpeg:40").shape == (1, 24, 24)


def test_degradations_keep_shape_and_dtype(clean):
    image = clean.double()
    for spec in ("noise:10", "jpeg:75", "blur:0.8"):
        degraded = degrade(image, spec)
        assert degraded.shape == image.shape and degraded.dtype == torch.float64


def test_parse_degradation_reads_the_three_kinds():
    assert parse_degradation("noise:25") == Degradation("noise", 25.0)
    assert parse_degradation("jpeg:10") == Degradation("jpeg", 10.0)
    assert parse_degradation("blur:1.6") == Degradation("blur", 1.6)


@pytest.mark.parametrize(("spec", "message"), [
    ("rain:3", "noise:SIGMA, jpeg:Q or blur:S"),
    ("noise", "noise:SIGMA, jpeg:Q or blur:S"),
    ("noise:abc", "must end in a number"),
    ("noise:-1", "sigma must be >= 0"),
    ("noise:nan", "finite"),
    ("jpeg:0", "integer in \\[1, 100\\]"),
    ("jpeg:40.5", "integer in \\[1, 100\\]"),
    ("blur:0", "must be > 0"),
])
def test_bad_specs_name_the_argument_and_the_value(clean, spec, message):
    with pytest.raises(ValueError, match=f"`spec`.*{message}"):
        degrade(clean, spec)


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match="one \\(C, H, W\\) image"):
        degrade(torch.rand(1, 3, 8, 8), "noise:5")
    with pytest.raises(TypeError, match="floating"):
        degrade(torch.zeros(3, 8, 8, dtype=torch.uint8), "noise:5")
    with pytest.raises(ValueError, match="1 or 3 channels"):
        degrade(torch.rand(2, 8, 8), "jpeg:50")
    with pytest.raises(ValueError, match="larger than half the kernel"):
        degrade(torch.rand(3, 8, 8), "blur:3")
