"""The effective receptive field: the Captum method, the data-set mean, RepLKNet's area ratios, the picture
and the CLI, against the literal reference in reference_erf.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_sr
from denoisers import TinyDenoiser
from reference_erf import (
    reference_area_ratios,
    reference_dataset_erf,
    reference_erf_picture,
    reference_image_map,
    reference_nearest,
)
from torch import nn

import lam_captum
from lam_captum.cli import main
from lam_captum.erf import dataset_erf, erf_area_ratios
from lam_captum.imageio import default_image_path, load_image, save_png
from lam_captum.models import build_model
from lam_captum.pictures import erf_picture


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """Five crops of different sizes of the built-in photo, as PNG files."""
    folder = tmp_path_factory.mktemp("lr_images")
    photo = load_image(default_image_path())
    for index, (top, left, height, width) in enumerate([(0, 0, 40, 52), (120, 140, 33, 33), (300, 200, 64, 48),
                                                        (250, 50, 20, 30), (400, 300, 45, 45)]):
        save_png(photo[:, top : top + height, left : left + width], folder / f"{index}.png")
    return folder


def test_erf_of_a_linear_filter_is_its_clamped_kernel_around_the_centre():
    model = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    kernel = torch.tensor([[0.5, -1.0, 2.0], [-0.25, 1.0, 0.0], [3.0, -2.0, 0.75]])
    with torch.no_grad():
        model.weight.copy_(kernel)
    attribution = lam_captum.ERF(model).attribute(torch.rand(1, 1, 7, 7))
    expected = torch.zeros(7, 7)
    expected[2:5, 2:5] = kernel.clamp_min(0)  # output (3, 3) reads inputs (2..4, 2..4) with these weights
    assert torch.equal(attribution[0, 0], expected)


@pytest.mark.parametrize(("model", "channels"), [(tiny_sr(3, 4), 3), (tiny_sr(1, 2), 1), (TinyDenoiser(3), 3)],
                         ids=["x4 rgb", "x2 grey", "x1 denoiser"])
def test_erf_equals_the_literal_reference_per_image(model, channels, photo_lr):
    images = torch.cat([photo_lr, photo_lr.flip(-1)])[:, :channels]
    attribution = lam_captum.ERF(model).attribute(images)
    for index in range(2):
        expected = reference_image_map(model, images[index].numpy())
        assert relative_error(attribution[index].sum(0).double().numpy(), expected) < 1e-5


def test_erf_at_a_chosen_position_equals_the_reference(photo_lr):
    model = tiny_sr(3, 4)
    attribution = lam_captum.ERF(model).attribute(photo_lr, position=(10, 70))
    expected = reference_image_map(model, photo_lr[0].numpy(), position=(10, 70))
    assert relative_error(attribution[0].sum(0).double().numpy(), expected) < 1e-5


def test_erf_is_non_negative_and_zero_outside_the_receptive_field(photo_lr):
    attribution = lam_captum.ERF(TinyDenoiser(3)).attribute(photo_lr)  # 4 convolutions of 3x3: radius 4
    assert (attribution >= 0).all()
    centre = 12
    outside = attribution.sum((0, 1)).clone()
    outside[centre - 4 : centre + 5, centre - 4 : centre + 5] = 0
    assert not outside.any()


def test_erf_leaves_modes_and_parameter_gradients_as_it_found_them(photo_lr):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Dropout(0.5),
                          nn.Conv2d(8, 3, 3, padding=1)).train()
    expected = lam_captum.ERF(model.eval()).attribute(photo_lr)
    model.train()
    assert torch.equal(lam_captum.ERF(model).attribute(photo_lr), expected)
    assert all(module.training for module in model.modules())
    assert all(parameter.grad is None for parameter in model.parameters())


def test_erf_works_under_no_grad_and_inference_mode(photo_lr):
    model = tiny_sr()
    expected = lam_captum.ERF(model).attribute(photo_lr)
    with torch.no_grad():
        assert torch.equal(lam_captum.ERF(model).attribute(photo_lr), expected)
    with torch.inference_mode():
        assert torch.equal(lam_captum.ERF(model).attribute(photo_lr), expected)


def test_erf_is_a_captum_gradient_attribution_without_convergence_delta():
    from captum.attr import GradientAttribution

    erf = lam_captum.ERF(tiny_sr())
    assert isinstance(erf, GradientAttribution)
    assert not erf.has_convergence_delta()
    assert not erf.multiplies_by_inputs


@pytest.mark.parametrize(("position", "message"), [
    ((96, 0), "`position` must lie inside the 96x96 output, got row=96, column=0"),
    ((-1, 3), "`position` must lie inside"),
    ((1.5, 3), "`position` must be two ints"),
    ((1, 2, 3), "`position` must be two ints"),
])
def test_bad_positions_are_refused_with_the_value(photo_lr, position, message):
    with pytest.raises(ValueError, match=message.replace("(", "\\(").replace(")", "\\)")):
        lam_captum.ERF(tiny_sr()).attribute(photo_lr, position=position)


def test_bad_inputs_and_graph_cutting_models_get_clear_errors(photo_lr):
    with pytest.raises(ValueError, match="4-D \\(N, C, H, W\\)"):
        lam_captum.ERF(tiny_sr()).attribute(photo_lr[0])
    with pytest.raises(TypeError, match="floating"):
        lam_captum.ERF(tiny_sr()).attribute(photo_lr.to(torch.uint8))
    with pytest.raises(TypeError, match="`forward_func`"):
        lam_captum.ERF("model")
    with pytest.raises(ValueError, match="does not depend on its input"):
        lam_captum.ERF(lambda x: tiny_sr()(x).detach()).attribute(photo_lr)


def test_nearest_resize_matches_the_reference_definition(photo_lr):
    from torch.nn import functional as F

    for size in [(120, 120), (17, 40), (24, 24), (18, 30), (7, 11)]:
        resized = F.interpolate(photo_lr, size=size)[0].numpy()
        assert np.array_equal(resized, reference_nearest(photo_lr[0].numpy(), *size))


def test_dataset_erf_of_a_folder_equals_the_reference_mean(photo_folder):
    model = tiny_sr(3, 2)
    erf = dataset_erf(model, photo_folder, size=(30, 36), batch_size=2)
    expected = reference_dataset_erf(model, sorted(photo_folder.glob("*.png")), 30, 36)
    assert erf.shape == (30, 36) and erf.dtype == torch.float64
    assert relative_error(erf.numpy(), expected) < 1e-5


def test_dataset_erf_does_not_depend_on_the_batch_size_or_the_way_images_are_given(photo_folder):
    model = TinyDenoiser(3)
    files = sorted(photo_folder.glob("*.png"))
    by_folder = dataset_erf(model, photo_folder, size=(24, 24), batch_size=1)
    by_files = dataset_erf(model, [str(path) for path in files], size=(24, 24), batch_size=5)
    by_tensors = dataset_erf(model, [load_image(path) for path in files], size=(24, 24), batch_size=3)
    assert relative_error(by_files.numpy(), by_folder.numpy()) < 1e-6
    assert relative_error(by_tensors.numpy(), by_folder.numpy()) < 1e-6


def test_dataset_erf_default_size_is_120_by_120(photo_lr):
    assert dataset_erf(tiny_sr(3, 2), photo_lr[0]).shape == (120, 120)


def test_dataset_erf_reports_bad_arguments(photo_folder, tmp_path):
    model = tiny_sr()
    with pytest.raises(ValueError, match="`size` must be two positive ints"):
        dataset_erf(model, photo_folder, size=(0, 12))
    with pytest.raises(ValueError, match="`batch_size` must be a positive int, got 0"):
        dataset_erf(model, photo_folder, batch_size=0)
    with pytest.raises(FileNotFoundError, match="neither an image file nor a folder"):
        dataset_erf(model, tmp_path / "missing")
    with pytest.raises(ValueError, match="holds no images"):
        dataset_erf(model, tmp_path)
    with pytest.raises(ValueError, match="`images` holds no images"):
        dataset_erf(model, [])
    with pytest.raises(ValueError, match="share one channel count"):
        dataset_erf(tiny_sr(), [torch.rand(3, 8, 8), torch.rand(1, 8, 8)])


def gaussian_blob(size: int, width: float, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    rows, columns = np.mgrid[0:size, 0:size] - size // 2
    return 40 * np.exp(-((rows - offset[0]) ** 2 + (columns - offset[1]) ** 2) / (2 * width**2))


@pytest.mark.parametrize("log_scale", [True, False])
@pytest.mark.parametrize("width", [1.5, 4.0, 12.0, 30.0])
def test_area_ratios_equal_replknets_loop(width, log_scale):
    erf = gaussian_blob(120, width, offset=(2.3, -4.1)) + 0.01
    ratios = erf_area_ratios(torch.from_numpy(erf), log_scale=log_scale)
    expected = reference_area_ratios(erf, log_scale=log_scale)
    for threshold, square in ratios.items():
        assert expected[threshold] is not None
        assert (square.side, square.ratio) == pytest.approx(expected[threshold], rel=1e-12)


def test_area_ratios_of_a_real_network_equal_replknets_loop(photo_folder):
    erf = dataset_erf(TinyDenoiser(3), photo_folder, size=(40, 40))
    ratios = erf_area_ratios(erf)
    expected = reference_area_ratios(erf.numpy())
    for threshold, square in ratios.items():
        assert (square.side, square.ratio) == pytest.approx(expected[threshold], rel=1e-12)
    # A 4-layer 3x3 network sees a 9x9 square: 99% fits inside it.
    assert ratios[0.99].side <= 9


def test_area_ratios_grow_with_the_threshold_and_reach_the_whole_map_beyond_replknets_range():
    erf = torch.ones(11, 11)
    ratios = erf_area_ratios(erf, [0.2, 0.5, 0.95, 0.99])
    sides = [square.side for square in ratios.values()]
    assert sides == sorted(sides)
    assert reference_area_ratios(erf.numpy(), [0.99])[0.99] is None  # RepLKNet stops before the edge
    assert ratios[0.99].ratio == 1.0


def test_area_ratios_around_an_off_centre_position():
    erf = torch.zeros(20, 20)
    erf[2:5, 14:17] = 1.0
    assert erf_area_ratios(erf, [0.9], centre=(3, 15))[0.9] == (3, 9 / 400)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"erf": torch.zeros(5, 5)}, "all zero"),
    ({"erf": -torch.ones(5, 5)}, "finite and >= 0"),
    ({"erf": torch.ones(1, 5, 5)}, "2-D \\(H, W\\)"),
    ({"erf": torch.ones(5, 5), "thresholds": [1.0]}, "`thresholds` must hold shares in \\(0, 1\\), got 1.0"),
    ({"erf": torch.ones(5, 5), "centre": (5, 0)}, "`centre` must lie inside the 5x5 map"),
])
def test_area_ratios_report_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        erf_area_ratios(**kwargs)


def test_erf_picture_equals_the_published_recipe():
    erf = gaussian_blob(64, 6.0) + np.random.default_rng(0).random((64, 64))
    picture = erf_picture(erf)
    expected = reference_erf_picture(erf)
    assert picture.shape == (64, 64, 3) and picture.dtype == np.uint8
    assert np.abs(picture.astype(int) - expected).max() <= 1
    assert np.array_equal(erf_picture(erf, scale=3)[::3, ::3], picture)


def test_erf_picture_refuses_maps_it_cannot_draw():
    with pytest.raises(ValueError, match="all zero"):
        erf_picture(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=">= 0"):
        erf_picture(-np.ones((4, 4)))


def write_denoiser_file(folder: Path) -> Path:
    source = folder / "denoiser_model.py"
    source.write_text((Path(__file__).parent / "denoisers.py").read_text().replace(
        "from lam_captum.degrade import degrade\n", ""))
    return source


def test_cli_writes_the_picture_the_map_and_the_area_ratios(photo_folder, tmp_path, capsys):
    model_file = write_denoiser_file(tmp_path)
    output = tmp_path / "erf"
    status = main(["erf", str(photo_folder), "--model", f"{model_file}:TinyDenoiser", "--size", "32", "32",
                   "--output", str(output), "--device", "cpu"])
    assert status == 0, capsys.readouterr().err
    erf = np.load(output / "erf.npy")
    summary = json.loads((output / "summary.json").read_text())
    assert erf.shape == (32, 32) and summary["images"] == 5 and summary["size"] == [32, 32]
    ratios = erf_area_ratios(torch.from_numpy(erf))
    assert summary["area_ratios"] == {f"{100 * t:g}": {"side": s.side, "ratio": s.ratio} for t, s in ratios.items()}
    assert load_image(output / "erf.png").shape == (3, 480, 480)
    assert "area ratios 20%" in capsys.readouterr().out


def test_cli_reports_bad_input_on_one_line(tmp_path, capsys):
    assert main(["erf", str(tmp_path / "missing.png"), "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("lam-captum erf: error: ")
    assert main(["erf", str(default_image_path()), "--model-args", "[1]"]) == 2
    assert "`--model-args` must be a JSON object" in capsys.readouterr().err
    assert main(["erf", str(default_image_path()), "--size", "0", "12"]) == 2
    assert "`--size` must be two positive integers, got 0 12" in capsys.readouterr().err
    (tmp_path / "text.png").write_text("plain text")
    assert main(["erf", str(tmp_path / "text.png"), "--size", "16", "16", "--output", str(tmp_path / "out")]) == 2
    assert f"cannot read the image {str(tmp_path / 'text.png')!r} as an image" in capsys.readouterr().err
    assert main(["erf", str(default_image_path()), "--model", "nosuch"]) == 2
    assert "`--model` must be a built-in model name" in capsys.readouterr().err
    torch.save(build_model("edsr-baseline", scale=2).state_dict(), tmp_path / "x2.pt")
    x2 = str(tmp_path / "x2.pt")
    assert main(["erf", str(default_image_path()), "--model", "edsr-baseline", "--weights", x2]) == 2
    assert "they are x2 weights: give `--model-args '{\"scale\": 2}'`" in capsys.readouterr().err  # erf has no --scale
    with pytest.raises(SystemExit) as exit_status:
        main(["erf"])  # no images: argparse's usage error, on one line
    err = capsys.readouterr().err
    assert exit_status.value.code == 2 and err.count("\n") == 1 and err.endswith("(see --help)\n")


def test_cli_tells_a_grey_model_on_colour_images_to_add_grayscale(photo_folder, tmp_path, capsys):
    model_file = tmp_path / "grey.py"
    model_file.write_text("import torch\nclass Grey(torch.nn.Conv2d):\n"
                          "    def __init__(self):\n        super().__init__(1, 1, 3, padding=1)\n")
    assert main(["erf", str(photo_folder), "--model", f"{model_file}:Grey", "--size", "16", "16",
                 "--output", str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert "does not take 3-channel images (its first convolution wants 1 channel, got 3): add `--grayscale`" in (
        capsys.readouterr().err)
    assert main(["erf", str(photo_folder), "--model", f"{model_file}:Grey", "--size", "16", "16", "--grayscale",
                 "--output", str(tmp_path / "out"), "--device", "cpu"]) == 0


def test_dataset_erf_refuses_mixed_channel_counts_whatever_the_batches():
    model = nn.Upsample(scale_factor=2)
    images = [torch.rand(1, 8, 8), torch.rand(3, 8, 8)]
    for batch_size in (1, 2, 8):
        with pytest.raises(ValueError, match="`images` must share one channel count, got 1 and 3"):
            dataset_erf(model, images, size=(8, 8), batch_size=batch_size)


def test_dataset_erf_names_images_it_cannot_take_and_numbers_take_numpy_types():
    model = nn.Upsample(scale_factor=2)
    with pytest.raises(ValueError, match=r"got a tensor of shape \(8, 8\) \(a grey \(H, W\) image: image\[None\]\)"):
        dataset_erf(model, torch.rand(8, 8), size=(8, 8))
    with pytest.raises(TypeError, match="got ndarray"):
        dataset_erf(model, [np.zeros((8, 8, 3))], size=(8, 8))
    erf = dataset_erf(model, torch.rand(2, 3, 8, 8), size=(np.int64(8), np.int64(8)))
    assert erf_area_ratios(erf, [np.float32(0.5)], centre=(np.int64(3), np.int64(4))) == erf_area_ratios(
        erf, [np.float32(0.5)], centre=(3, 4))
