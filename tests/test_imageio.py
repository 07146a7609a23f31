from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from lam_captum.imageio import default_image_path, hr_to_lr, load_image, save_png, to_pil


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A small real RGB photo whose sides are not multiples of 3 or 4."""
    return Image.fromarray(data.astronaut()[100:199, 150:253])


def demo_degradation(image: Image.Image, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """The official demo's steps, written out with Pillow."""
    width, height = image.size
    cropped = image.crop((0, 0, width - width % scale, height - height % scale))
    lr = cropped.resize((width // scale, height // scale), Image.BICUBIC)
    return np.asarray(lr), np.asarray(cropped)


def as_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """Undo the [0, 1] scaling exactly and put the channels last."""
    pixels = torch.round(image * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return pixels[..., 0] if pixels.shape[2] == 1 else pixels


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_hr_to_lr_matches_pillow_by_hand(photo: Image.Image, scale: int) -> None:
    lr, hr_cropped = hr_to_lr(photo, scale)
    expected_lr, expected_hr = demo_degradation(photo, scale)
    assert lr.dtype == hr_cropped.dtype == torch.float32
    assert tuple(lr.shape) == (3, 99 // scale, 103 // scale)
    assert tuple(hr_cropped.shape) == (3, 99 - 99 % scale, 103 - 103 % scale)
    np.testing.assert_array_equal(as_uint8_hwc(lr), expected_lr)
    np.testing.assert_array_equal(as_uint8_hwc(hr_cropped), expected_hr)


def test_hr_to_lr_tensor_input_rounds_to_uint8_first(photo: Image.Image) -> None:
    exact = torch.from_numpy(np.array(photo)).permute(2, 0, 1) / 255.0
    nudged = exact + 0.4 / 255.0
    lr_exact, hr_exact = hr_to_lr(exact, 4)
    lr_nudged, hr_nudged = hr_to_lr(nudged, 4)
    torch.testing.assert_close(lr_nudged, lr_exact, rtol=0, atol=0)
    torch.testing.assert_close(hr_nudged, hr_exact, rtol=0, atol=0)


def test_hr_to_lr_grayscale(photo: Image.Image) -> None:
    gray = photo.convert("L")
    lr, hr_cropped = hr_to_lr(gray, 3)
    expected_lr, expected_hr = demo_degradation(gray, 3)
    assert lr.shape[0] == hr_cropped.shape[0] == 1
    np.testing.assert_array_equal(as_uint8_hwc(lr), expected_lr)
    np.testing.assert_array_equal(as_uint8_hwc(hr_cropped), expected_hr)


def test_hr_to_lr_image_exactly_scale_pixels() -> None:
    lr, hr_cropped = hr_to_lr(torch.rand(3, 4, 7), 4)
    assert tuple(lr.shape) == (3, 1, 1)
    assert tuple(hr_cropped.shape) == (3, 4, 4)


@pytest.mark.parametrize(("scale", "error", "message"), [
    (0, ValueError, "`scale` must be >= 1, got 0"),
    (2.0, TypeError, "`scale` must be an int, got 2.0"),
    (True, TypeError, "`scale` must be an int, got True"),
    (8, ValueError, "at least `scale`=8 pixels each way, got 5x9"),
])
def test_hr_to_lr_rejects_bad_scale(scale: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        hr_to_lr(torch.rand(3, 5, 9), scale)


def test_hr_to_lr_rejects_other_modes_and_types() -> None:
    with pytest.raises(ValueError, match="'RGB' or 'L' image, got mode 'RGBA'"):
        hr_to_lr(Image.new("RGBA", (8, 8)), 2)
    with pytest.raises(TypeError, match="got ndarray"):
        hr_to_lr(np.zeros((8, 8, 3), np.uint8), 2)


def test_save_load_round_trip(tmp_path: Path) -> None:
    image = torch.rand(3, 7, 11)
    written = save_png(image, tmp_path / "a" / "b" / "image.png")
    assert written == tmp_path / "a" / "b" / "image.png"
    loaded = load_image(written)
    assert loaded.dtype == torch.float32
    torch.testing.assert_close(loaded, torch.round(image * 255) / 255, rtol=0, atol=1e-7)


def test_save_png_uint8_array_round_trip(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    loaded = load_image(save_png(pixels, tmp_path / "pixels.png"))
    np.testing.assert_array_equal(as_uint8_hwc(loaded), pixels)


def test_save_png_clamps_out_of_range(tmp_path: Path) -> None:
    loaded = load_image(save_png(torch.tensor([[[-0.5, 1.5]]]).expand(3, 1, 2), tmp_path / "clamped.png"))
    assert loaded[:, 0, 0].tolist() == [0.0, 0.0, 0.0]
    assert loaded[:, 0, 1].tolist() == [1.0, 1.0, 1.0]


def test_grayscale_round_trip_and_modes(tmp_path: Path) -> None:
    path = save_png(torch.rand(1, 5, 6), tmp_path / "gray.png")
    assert Image.open(path).mode == "L"
    assert load_image(path, mode=None).shape == (1, 5, 6)
    assert load_image(path, mode="L").shape == (1, 5, 6)
    rgb = load_image(path)
    assert rgb.shape == (3, 5, 6)
    torch.testing.assert_close(rgb[0], rgb[2])


def test_load_rgba_drops_alpha(tmp_path: Path) -> None:
    path = save_png(np.full((3, 4, 4), 200, np.uint8), tmp_path / "rgba.png")
    assert load_image(path, mode=None).shape == (3, 3, 4)


def test_to_pil_layouts() -> None:
    assert to_pil(torch.zeros(4, 2, 3)).mode == "RGBA"
    assert to_pil(np.zeros((2, 3, 4), np.uint8)).mode == "RGBA"
    assert to_pil(torch.zeros(2, 3, 3, dtype=torch.uint8)).size == (3, 2)
    assert to_pil(torch.ones(3, 2, 3, requires_grad=True)).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(("image", "error", "message"), [
    (np.zeros((3, 4, 4), np.int32), TypeError, "got dtype int32"),
    (np.zeros((8, 8, 3), np.float32), ValueError, r"C in \{1, 3, 4\}, got shape \(8, 8, 3\)"),
    (np.zeros((3, 8, 8), np.uint8), ValueError, r"\(H, W, 3\) or \(H, W, 4\), got shape \(3, 8, 8\)"),
    (np.zeros((4, 4), np.uint8), ValueError, r"got shape \(4, 4\)"),
])
def test_to_pil_rejects(image: np.ndarray, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        to_pil(image)


def test_load_image_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not pixels")
    with pytest.raises(ValueError, match="cannot read `path` .*notes.png.* as an image"):
        load_image(not_an_image)
    with pytest.raises(ValueError, match="`mode` must be 'RGB', 'L' or None, got 'CMYK'"):
        load_image(not_an_image, mode="CMYK")


def test_save_png_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OSError, match="cannot write `path` .*blocker"):
        save_png(torch.zeros(3, 2, 2), blocker / "sub" / "image.png")


def test_default_image_is_the_demo_photo() -> None:
    path = default_image_path()
    assert path.is_file()
    assert path.name == "grace_hopper.jpg"
    image = load_image(path)
    assert image.shape == (3, 600, 512)
    assert 0.0 <= float(image.min()) < float(image.max()) <= 1.0


def test_default_image_degrades_like_the_demo() -> None:
    with Image.open(default_image_path()) as photo:
        lr, _ = hr_to_lr(photo.convert("RGB"), 4)
        expected_lr, _ = demo_degradation(photo.convert("RGB"), 4)
    np.testing.assert_array_equal(as_uint8_hwc(lr), expected_lr)
