"""What the sign says: the negative share of LAM's attribution and the signed-map picture."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from conftest import tiny_sr
from matplotlib.colors import TwoSlopeNorm

from lam_captum import LAM
from lam_captum.functional import attribution_map, negative_share
from lam_captum.pictures import heat_map, signed_map_picture


def reference_negative_share(attribution: np.ndarray) -> float:
    """Pixel by pixel: the channel sum's negative magnitudes over all its magnitudes."""
    negative = total = 0.0
    for row in range(attribution.shape[1]):
        for column in range(attribution.shape[2]):
            value = sum(float(attribution[channel, row, column]) for channel in range(attribution.shape[0]))
            total += abs(value)
            if value < 0:
                negative -= value
    return negative / total


@pytest.fixture(scope="module")
def lam_attribution() -> torch.Tensor:
    torch.manual_seed(0)
    return LAM(tiny_sr()).attribute(torch.rand(2, 3, 16, 16), window=(24, 24, 16), n_steps=8)


def test_negative_share_of_a_real_attribution_equals_the_pixel_loop(lam_attribution):
    shares = negative_share(lam_attribution)
    assert shares.shape == (2,)
    for index in range(2):
        expected = reference_negative_share(lam_attribution[index].double().numpy())
        assert 0 < expected < 1  # a real LAM attribution has both signs
        assert float(shares[index]) == pytest.approx(expected, rel=1e-5)


def test_negative_share_is_the_share_of_lams_map_on_negative_pixels(lam_attribution):
    attribution = lam_attribution[0]
    lam_map = attribution_map(attribution)
    negative_pixels = attribution.sum(0) < 0
    assert float(negative_share(attribution)) == pytest.approx(float(lam_map[negative_pixels].sum() / lam_map.sum()), rel=1e-5)


def test_negative_share_is_0_for_positive_1_for_negative_and_0_for_zero_attributions():
    positive = torch.rand(3, 5, 5)
    assert float(negative_share(positive)) == 0.0
    assert float(negative_share(-positive)) == 1.0
    assert float(negative_share(torch.zeros(3, 5, 5))) == 0.0


def test_negative_share_uses_the_signed_channel_sum_where_channels_cancel():
    attribution = torch.tensor([[[2.0, -1.0]], [[-3.0, 1.0]]])  # channel sums: -1 and 0
    assert float(negative_share(attribution)) == 1.0


def test_negative_share_refuses_bad_attributions():
    with pytest.raises(ValueError, match="\\(C, H, W\\) or \\(N, C, H, W\\)"):
        negative_share(torch.rand(5, 5))
    with pytest.raises(ValueError, match="NaN or infinite"):
        negative_share(torch.tensor([[[float("nan")]]]))


def test_signed_picture_equals_seismic_centred_at_zero(lam_attribution):
    attribution = lam_attribution[0].double().numpy()
    signed = attribution.sum(0)
    peak = np.abs(signed).max()
    colours = matplotlib.colormaps["seismic"](TwoSlopeNorm(vcenter=0.0, vmin=-peak, vmax=peak)(signed))
    expected = (255 * colours[..., :3]).astype(np.uint8)
    picture = signed_map_picture(lam_attribution[0], scale=1)
    assert np.abs(picture.astype(int) - expected).max() <= 1
    assert np.array_equal(signed_map_picture(lam_attribution[0], scale=4)[::4, ::4], picture)


def test_signed_picture_of_a_positive_attribution_is_lams_heat_map():
    attribution = torch.rand(3, 6, 7)
    assert np.array_equal(signed_map_picture(attribution, scale=2), heat_map(attribution_map(attribution), scale=2))


def test_signed_picture_takes_a_summed_map_and_draws_zero_white():
    picture = signed_map_picture(np.zeros((3, 3)))
    assert (picture >= 253).all()


def test_signed_picture_refuses_bad_input():
    with pytest.raises(ValueError, match="\\(C, h, w\\) or \\(h, w\\)"):
        signed_map_picture(np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        signed_map_picture(np.full((1, 2, 2), np.inf))
    with pytest.raises(TypeError, match="`scale`"):
        signed_map_picture(np.zeros((2, 2)), scale=1.5)
