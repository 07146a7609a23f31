from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from lam_captum.imageio import InputError, default_image_path, hr_to_lr, load_image, load_input, save_png, to_pil


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
    with pytest.warns(UserWarning, match="has transparent pixels: their stored colour is used"):
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


# --- every mode Pillow opens, at its true range --------------------------------------------------


@pytest.fixture(scope="module")
def grey16() -> np.ndarray:
    """A real photo in 16-bit grey: the astronaut's 8-bit grey times 257 plus fine detail below 1/255."""
    grey = np.asarray(Image.fromarray(data.astronaut()[100:199, 150:253]).convert("L"), dtype=np.uint32)
    detail = np.random.default_rng(0).integers(0, 257, grey.shape)
    return np.clip(grey * 257 + detail, 0, 65535).astype(np.uint16)


def test_16_bit_png_is_read_at_its_true_range(tmp_path: Path, grey16: np.ndarray) -> None:
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as image:
        assert image.mode == "I;16"
    image = load_image(tmp_path / "grey16.png", mode="L")
    np.testing.assert_array_equal(image[0].numpy(), grey16.astype(np.float32) / 65535)
    assert int((image == 1.0).sum()) == int((grey16 == 65535).sum())
    rgb = load_image(tmp_path / "grey16.png")
    assert rgb.shape == (3, *grey16.shape) and torch.equal(rgb[0], image[0]) and torch.equal(rgb[2], image[0])


def test_16_bit_hr_file_is_downscaled_in_16_bits(tmp_path: Path, grey16: np.ndarray) -> None:
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    lr, hr = load_input(tmp_path / "grey16.png", scale=4, mode="L")
    by_hand = Image.fromarray(grey16).crop((0, 0, 100, 96)).resize((25, 24), Image.BICUBIC)
    np.testing.assert_array_equal(lr[0].numpy(), np.asarray(by_hand, dtype=np.float32) / 65535)
    np.testing.assert_array_equal(hr[0].numpy(), grey16[:96, :100].astype(np.float32) / 65535)
    # The demo's bicubic filter with 16-bit pixels where the demo has 8-bit ones: each of Pillow's two
    # passes (across, then down) clipped to the range and rounded.
    across = Image.fromarray(grey16.astype(np.float32)).crop((0, 0, 100, 96)).resize((25, 96), Image.BICUBIC)
    across = Image.fromarray(np.clip(np.round(np.asarray(across)), 0, 65535))
    down = np.clip(np.round(np.asarray(across.resize((25, 24), Image.BICUBIC))), 0, 65535)
    np.testing.assert_array_equal(lr[0].numpy(), down.astype(np.float32) / 65535)
    assert len(np.unique(lr.numpy())) > 256


def test_big_endian_16_bit_tiff_reads_and_downscales_like_little_endian(tmp_path: Path, grey16: np.ndarray) -> None:
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "big.tif", grey16, byteorder=">")
    Image.fromarray(grey16).save(tmp_path / "little.tif")
    with Image.open(tmp_path / "big.tif") as big, Image.open(tmp_path / "little.tif") as little:
        assert (big.mode, little.mode) == ("I;16B", "I;16")
    for big, little in zip(load_input(tmp_path / "big.tif", scale=3), load_input(tmp_path / "little.tif", scale=3)):
        assert torch.equal(big, little)


def test_32_bit_integer_image_in_the_16_bit_range_reads_as_16_bit(tmp_path: Path, grey16: np.ndarray) -> None:
    Image.fromarray(grey16.astype(np.int32)).save(tmp_path / "int32.tif")
    with Image.open(tmp_path / "int32.tif") as image:
        assert image.mode == "I"
    np.testing.assert_array_equal(load_image(tmp_path / "int32.tif", mode="L")[0].numpy(),
                                  grey16.astype(np.float32) / 65535)


def test_32_bit_integers_beyond_16_bits_are_scaled_by_the_int32_range_with_a_warning(tmp_path: Path) -> None:
    pixels = np.array([[0, 2**20], [2**30, 2**31 - 1]], dtype=np.int32)
    Image.fromarray(pixels).save(tmp_path / "int32.tif")
    with pytest.warns(UserWarning, match=r"32-bit integers in \[0, 2147483647\].*divided by 2147483647"):
        image = load_image(tmp_path / "int32.tif", mode="L")
    np.testing.assert_allclose(image[0].numpy(), pixels / (2**31 - 1), rtol=1e-7)


def test_float_tiff_is_kept_as_it_is(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    pixels = np.random.default_rng(1).random((9, 13), dtype=np.float32)
    Image.fromarray(pixels).save(tmp_path / "float.tif")
    with Image.open(tmp_path / "float.tif") as image:
        assert image.mode == "F"
    np.testing.assert_array_equal(load_image(tmp_path / "float.tif", mode="L")[0].numpy(), pixels)
    assert not [warning for warning in recwarn.list if warning.category is UserWarning]


def test_float_tiff_outside_0_1_is_not_clipped_and_warns(tmp_path: Path) -> None:
    pixels = np.linspace(-0.5, 1.75, 8 * 12, dtype=np.float32).reshape(8, 12)
    Image.fromarray(pixels).save(tmp_path / "hdr.tif")
    with pytest.warns(UserWarning, match=r"values in \[-0\.5, 1\.75\], outside \[0, 1\].*not clipped"):
        lr, hr = load_input(tmp_path / "hdr.tif", scale=2, mode="L")
    np.testing.assert_array_equal(hr[0].numpy(), pixels)
    by_hand = np.asarray(Image.fromarray(pixels).resize((6, 4), Image.BICUBIC))
    np.testing.assert_array_equal(lr[0].numpy(), by_hand)
    assert float(lr.min()) < 0 and float(lr.max()) > 1


def test_float_tiff_with_nan_is_refused(tmp_path: Path) -> None:
    pixels = np.zeros((4, 4), np.float32)
    pixels[1, 2] = np.nan
    Image.fromarray(pixels).save(tmp_path / "nan.tif")
    with pytest.raises(ValueError, match=r"`path` .*nan\.tif.* holds NaN or infinite pixel values"):
        load_image(tmp_path / "nan.tif")


def test_a_colour_float_tiff_which_pillow_cannot_read_is_refused_saying_so(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")  # scikit-image's dependency
    path = tmp_path / "rgb_float.tif"
    tifffile.imwrite(path, np.random.default_rng(0).random((16, 16, 3)).astype(np.float32), photometric="rgb")
    with pytest.raises(ValueError, match="Pillow reads float TIFFs of one channel only, not colour float TIFFs"):
        load_image(path)


def test_animated_gif_reads_frame_0_with_a_warning(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (6, 5), colour) for colour in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    with pytest.warns(UserWarning, match=r"anim\.gif' has 3 frames; frame 0 is used") as caught:
        image = load_image(tmp_path / "anim.gif")
    assert [w.filename for w in caught.list] == [__file__]  # the user's call, not the reader inside the package
    with Image.open(tmp_path / "anim.gif") as gif:
        expected = np.asarray(gif.convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), expected)
    assert image[0].mean() > image[1].mean()


def test_palette_png_is_read_in_colour(tmp_path: Path, photo: Image.Image) -> None:
    palette = photo.quantize(colors=64)
    palette.save(tmp_path / "palette.png")
    image = load_image(tmp_path / "palette.png", mode=None)
    assert image.shape[0] == 3
    np.testing.assert_array_equal(as_uint8_hwc(image), np.asarray(palette.convert("RGB")))


def test_palette_of_greys_stays_one_channel(tmp_path: Path, photo: Image.Image) -> None:
    grey = photo.convert("L")
    grey.convert("P").save(tmp_path / "grey_palette.png")
    with Image.open(tmp_path / "grey_palette.png") as image:
        assert image.mode == "P"
    image = load_image(tmp_path / "grey_palette.png", mode=None)
    np.testing.assert_array_equal(as_uint8_hwc(image), np.asarray(grey))


def test_grey_with_alpha_stays_grey_and_opaque_alpha_is_dropped_silently(
    tmp_path: Path, photo: Image.Image, recwarn: pytest.WarningsRecorder
) -> None:
    photo.convert("LA").save(tmp_path / "la.png")
    image = load_image(tmp_path / "la.png", mode=None)
    np.testing.assert_array_equal(as_uint8_hwc(image), np.asarray(photo.convert("L")))
    assert not [warning for warning in recwarn.list if warning.category is UserWarning]


def test_transparent_pixels_warn_that_alpha_is_dropped(tmp_path: Path, photo: Image.Image) -> None:
    rgba = photo.convert("RGBA")
    rgba.putpixel((3, 4), (10, 20, 30, 0))
    rgba.save(tmp_path / "rgba.png")
    with pytest.warns(UserWarning, match="has transparent pixels: their stored colour is used"):
        image = load_image(tmp_path / "rgba.png")
    assert as_uint8_hwc(image)[4, 3].tolist() == [10, 20, 30]


def test_cmyk_is_converted_to_rgb(tmp_path: Path, photo: Image.Image) -> None:
    cmyk = photo.convert("CMYK")
    cmyk.save(tmp_path / "cmyk.tif")
    image = load_image(tmp_path / "cmyk.tif")
    np.testing.assert_array_equal(as_uint8_hwc(image), np.asarray(cmyk.convert("RGB")))
    np.testing.assert_allclose(as_uint8_hwc(image).astype(int), np.asarray(photo).astype(int), atol=1)


def write_rgb16_png(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit RGB PNG, which Pillow cannot write, chunk by chunk as the PNG specification lays it out."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def test_16_bit_colour_png_warns_that_pillow_reads_8_bits(tmp_path: Path) -> None:
    pixels = np.random.default_rng(2).integers(0, 65536, (5, 7, 3)).astype(np.uint16)
    write_rgb16_png(tmp_path / "rgb16.png", pixels)
    with pytest.warns(UserWarning, match="16 bits per channel, but Pillow reads colour images at 8 bits"):
        image = load_image(tmp_path / "rgb16.png")
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), pixels / 65535, rtol=0, atol=1 / 255)


def test_an_image_too_large_to_decode_safely_is_refused(tmp_path: Path) -> None:
    write_rgb16_png(tmp_path / "bomb.png", np.zeros((1, 1, 3), np.uint16))
    content = bytearray((tmp_path / "bomb.png").read_bytes())
    content[16:24] = struct.pack(">II", 40_000, 40_000)  # the header claims 1.6 gigapixels
    content[29:33] = struct.pack(">I", zlib.crc32(bytes(content[12:29])))
    (tmp_path / "bomb.png").write_bytes(bytes(content))
    with pytest.raises(ValueError, match=r"cannot read `path` .*bomb\.png.* as an image: .*decompression bomb"):
        load_image(tmp_path / "bomb.png")


# --- load_input: the one image loader -------------------------------------------------------------


def test_load_input_of_an_8_bit_file_gives_the_demo_pixels(tmp_path: Path, photo: Image.Image) -> None:
    photo.save(tmp_path / "photo.png")
    lr, hr = load_input(tmp_path / "photo.png", scale=3, crop=(5, 7, 80, 91))
    expected_lr, expected_hr = demo_degradation(photo.crop((7, 5, 98, 85)), 3)
    np.testing.assert_array_equal(as_uint8_hwc(lr), expected_lr)
    np.testing.assert_array_equal(as_uint8_hwc(hr), expected_hr)
    reference_lr, reference_hr = hr_to_lr(load_image(tmp_path / "photo.png")[:, 5:85, 7:98], 3)
    assert torch.equal(lr, reference_lr) and torch.equal(hr, reference_hr)


def test_load_input_of_an_lr_file_is_the_file(tmp_path: Path, photo: Image.Image) -> None:
    photo.convert("L").save(tmp_path / "lr.png")
    lr, hr = load_input(tmp_path / "lr.png", scale=4, lr=True, mode=None)
    assert hr is None
    assert torch.equal(lr, load_image(tmp_path / "lr.png", mode="L"))


@pytest.mark.parametrize(("crop", "scale", "argument", "message"), [
    ((0, 0, 100, 10), 2, "crop", "`crop` must lie inside the 99x103 image, got top=0, left=0, height=100, width=10"),
    ((-1, 0, 5, 5), 2, "crop", "`crop` must lie inside the 99x103 image, got top=-1"),
    ((0, 0, 5), 2, "crop", "`crop` must be four integers (top, left, height, width), got (0, 0, 5)"),
    ((0, 0, 3, 9), 4, "scale", "`scale`=4 is larger than the 3x9 image"),
])
def test_load_input_names_the_argument_that_does_not_fit(
    tmp_path: Path, photo: Image.Image, crop: tuple, scale: int, argument: str, message: str
) -> None:
    photo.save(tmp_path / "photo.png")
    with pytest.raises(InputError, match=re.escape(message)) as info:
        load_input(tmp_path / "photo.png", scale=scale, crop=crop)
    assert info.value.argument == argument


def test_hr_to_lr_keeps_16_bit_and_float_images_in_their_mode(grey16: np.ndarray) -> None:
    lr16, _ = hr_to_lr(Image.fromarray(grey16), 2)
    expected16 = np.asarray(Image.fromarray(grey16).crop((0, 0, 102, 98)).resize((51, 49), Image.BICUBIC))
    np.testing.assert_array_equal(lr16[0].numpy(), expected16.astype(np.float32) / 65535)
    floats = grey16.astype(np.float32) / 65535
    lr_float, hr_float = hr_to_lr(Image.fromarray(floats), 2)
    np.testing.assert_array_equal(hr_float[0].numpy(), floats[:98, :102])
    expected_float = np.asarray(Image.fromarray(floats).crop((0, 0, 102, 98)).resize((51, 49), Image.BICUBIC))
    np.testing.assert_array_equal(lr_float[0].numpy(), expected_float)
    # Float is not clipped: the bicubic overshoot below black stays, where 16 bits stop at 0.
    assert float(lr_float.min()) < 0.0
    assert float(lr16.min()) == 0.0
