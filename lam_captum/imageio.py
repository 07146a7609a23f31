"""Reading, degrading and writing images the way the official LAM demo does.

Tensors are (C, H, W) float32. Pillow does the decoding, the bicubic downscaling and the PNG encoding,
so the low-resolution input made from an 8-bit file has the demo's exact pixels (in [0, 1], steps of
1/255). Files of a higher bit depth keep it, at their true range:

- 16-bit grey (Pillow's ``I;16`` modes) is divided by 65535 and downscaled by Pillow in 16 bits: the
  demo's bicubic filter with 16-bit pixels where the demo has 8-bit ones (each of Pillow's two
  passes, across then down, is clipped to the range and rounded, as at 8 bits).
- 32-bit integers (mode ``I``) holding values in [0, 65535] (Pillow's container for 16-bit PGM and
  older 16-bit PNG readers) are read as 16-bit; larger or negative values are divided by 2**31 - 1,
  with a warning.
- Floats (mode ``F``: a one-channel float32 TIFF) are kept as they are, downscaled in float without
  clipping, with a warning if they lie outside [0, 1]; NaN or infinite pixels are refused. Pillow reads
  no colour float TIFF: such a file is refused, saying so.

Nothing is clipped silently. Palette, bilevel, CMYK, YCbCr, HSV and LAB files go through Pillow's
conversions; alpha is dropped, with a warning when some pixels are not opaque. Of an animated or
multi-page file, frame 0 is read, with a warning. Pillow reads 16-bit colour files at 8 bits per
channel (it has no 16-bit colour mode); that gives a warning too.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
from matplotlib import cbook
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from lam_captum._atomic import write_atomically
from lam_captum._core._context import outside_stacklevel

__all__ = [
    "InputError",
    "default_image_path",
    "hr_to_lr",
    "load_image",
    "load_input",
    "save_png",
    "to_pil",
]

ImageMode = Literal["RGB", "L"]

# What each kind of decoded image is divided by to bring it to [0, 1].
_FULL_SCALE = {"L": 255.0, "RGB": 255.0, "I;16": 65535.0, "F": 1.0}
_UINT16_MAX = 65535
_INT32_MAX = 2**31 - 1
_GREY_MODES = ("1", "L", "LA", "La")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
# Pillow's modes for one band of 16-bit unsigned integers (native, little and big endian).
_UINT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class InputError(ValueError):
    """An argument of :func:`load_input` that does not fit the image; ``argument`` names it.

    Callers that expose the argument under another name (a command-line flag, a field of a study
    file) catch it and name the argument their own way.

    Example:
        >>> error = InputError("crop", "`crop` must lie inside the 8x8 image, got top=9")
        >>> error.argument, str(error)
        ('crop', '`crop` must lie inside the 8x8 image, got top=9')
    """

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


# The file types read as images when a folder is given (a study's image folder, an ERF data set, video frames).
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".pgm", ".ppm", ".tif", ".tiff", ".webp")


def images_in(folder: Path) -> list[Path]:
    """The image files of ``folder`` (by suffix, :data:`IMAGE_SUFFIXES`), sorted by name; hidden files (a name
    starting with a dot: macOS's ``._frame.png`` resource forks beside every copied file) are not images.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in ("b.png", "a.PNG", "._a.png", "notes.txt"):
        ...     _ = (folder / name).write_bytes(b"")
        >>> [path.name for path in images_in(folder)]
        ['a.PNG', 'b.png']
    """
    return sorted(path for path in folder.iterdir()
                  if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES)


def load_image(path: str | Path, *, mode: ImageMode | None = "RGB") -> Tensor:
    """Read an image file as a (C, H, W) float32 tensor at its true range (see the module's notes).

    Args:
        path: The image file.
        mode: ``"RGB"`` (3 channels; a grey file is repeated), ``"L"`` (1 channel, grey), or ``None``
            to keep a grey file (a palette of greys included) grey and read anything else as RGB.

    Returns:
        The image, (3, H, W) or (1, H, W), float32; in [0, 1] except for a float file.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If ``mode`` is not one of the above, Pillow cannot decode the file, or it holds
            NaN or infinite values.

    Example:
        >>> load_image(default_image_path()).shape
        torch.Size([3, 600, 512])
    """
    image, channels = _decode(path, mode)
    return _to_tensor(image, channels)


def load_input(
    path: str | Path,
    *,
    scale: int,
    crop: Sequence[int] | None = None,
    lr: bool = False,
    mode: ImageMode | None = "RGB",
) -> tuple[Tensor, Tensor | None]:
    """Read an image file as the LR input of a model, the one way the CLI, the sweep and the callback do.

    An HR file (``lr=False``) is degraded as the official demo does (see :func:`hr_to_lr`), at the
    file's own bit depth; an LR file is used as it is.

    Args:
        path: The image file.
        scale: The SR factor the HR image is downscaled by, an int >= 1.
        crop: ``(top, left, height, width)`` of the file to use, in file pixels; None for all of it.
        lr: Whether the file already is the LR input.
        mode: The channels, as :func:`load_image` takes them.

    Returns:
        ``(lr, hr)``: (C, h, w) float32 tensors. ``hr`` is the (cropped) HR image cut to ``scale``
        times the LR size, or None for an LR file.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        TypeError: If ``scale`` is not an int.
        InputError: If ``crop`` does not lie inside the image or the image is smaller than ``scale``.
        ValueError: If ``scale`` < 1, or for the reasons :func:`load_image` gives.

    Example:
        >>> lr, hr = load_input(default_image_path(), scale=4, crop=(80, 120, 256, 256))
        >>> tuple(lr.shape), tuple(hr.shape)
        ((3, 64, 64), (3, 256, 256))
    """
    _check_scale(scale)
    image, channels = _decode(path, mode)
    if crop is not None:
        image = image.crop(_crop_box(crop, image.size))
    if lr:
        return _to_tensor(image, channels), None
    width, height = image.size
    if min(width, height) < scale:
        raise InputError("scale", f"`scale`={scale} is larger than the {height}x{width} image {str(path)!r}"
                                  f"{' after `crop`' if crop is not None else ''}: it cannot be downscaled")
    low, high = _degrade(image, scale)
    return _to_tensor(low, channels), _to_tensor(high, channels)


def hr_to_lr(hr: Image.Image | Tensor, scale: int) -> tuple[Tensor, Tensor]:
    """Make the demo's low-resolution input: crop to a multiple of ``scale``, then bicubic downscale.

    The crop keeps the top-left corner (``crop((0, 0, W - W % scale, H - H % scale))``) and the
    downscale is Pillow's ``resize((W // scale, H // scale), BICUBIC)``, in the image's own mode:
    on uint8 pixels for ``"RGB"`` and ``"L"`` (the demo's exact pixels), in 16 bits for ``"I;16"``,
    in float (unclipped) for ``"F"``.

    Args:
        hr: The high-resolution image: a Pillow image in mode ``"RGB"``, ``"L"``, ``"I;16"`` or
            ``"F"``, or a (C, H, W) float tensor in [0, 1] with C in {1, 3} (rounded to uint8 first,
            as a saved 8-bit image would be; :func:`load_input` keeps a file's bit depth instead).
        scale: The super-resolution factor, an int >= 1.

    Returns:
        ``(lr, hr_cropped)``: (C, H // scale, W // scale) and (C, H - H % scale, W - W % scale)
        float32 tensors, scaled as :func:`load_image` scales the mode.

    Raises:
        TypeError: If ``scale`` is not an int or ``hr`` is neither a Pillow image nor a tensor.
        ValueError: If ``scale`` < 1, the image is smaller than ``scale`` or has another mode.

    Example:
        >>> lr, hr_cropped = hr_to_lr(torch.rand(3, 10, 13), scale=4)
        >>> tuple(lr.shape), tuple(hr_cropped.shape)
        ((3, 2, 3), (3, 8, 12))
    """
    _check_scale(scale)
    image = to_pil(hr) if isinstance(hr, Tensor) else hr
    if not isinstance(image, Image.Image):
        raise TypeError(f"`hr` must be a PIL.Image.Image or a torch.Tensor, got {type(hr).__name__}")
    if image.mode not in _FULL_SCALE:
        raise ValueError(f"`hr` must be an 'I;16', 'F', 'RGB' or 'L' image, got mode {image.mode!r}")
    width, height = image.size
    if min(width, height) < scale:
        raise ValueError(f"`hr` must be at least `scale`={scale} pixels each way, got {height}x{width}")
    low, high = _degrade(image, scale)
    return _to_tensor(low), _to_tensor(high)


def to_pil(image: Tensor | np.ndarray) -> Image.Image:
    """Convert an image tensor or array to a Pillow image.

    Args:
        image: a (C, H, W) floating tensor or array in [0, 1] with C in {1, 3, 4} (clamped, then
            ``round(x * 255)``), or a (H, W, 3) / (H, W, 4) uint8 array or tensor.

    Returns:
        A Pillow image in mode ``"L"``, ``"RGB"`` or ``"RGBA"``.

    Raises:
        TypeError: if the dtype is neither floating nor uint8.
        ValueError: if the shape does not fit the dtype's layout.

    Example:
        >>> to_pil(torch.ones(1, 2, 5)).size, to_pil(np.zeros((2, 5, 3), np.uint8)).mode
        ((5, 2), 'RGB')
    """
    array = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if array.dtype == np.uint8:
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"a uint8 `image` must be (H, W, 3) or (H, W, 4), got shape {array.shape}")
        return Image.fromarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"`image` must be floating (C, H, W) or uint8 (H, W, 3|4), got dtype {array.dtype}")
    if array.ndim != 3 or array.shape[0] not in (1, 3, 4):
        raise ValueError(f"a floating `image` must be (C, H, W), C in {{1, 3, 4}}, got shape {array.shape}")
    pixels = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    # Pillow wants channels last, and a single channel without its axis.
    return Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))


def save_png(image: Tensor | np.ndarray, path: str | Path) -> Path:
    """Write an image as PNG, creating the parent folders.

    Args:
        image: anything :func:`to_pil` takes.
        path: where to write; the PNG format is used whatever the suffix.

    Returns:
        The path written.

    Raises:
        OSError: if the folder cannot be created or the file cannot be written.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     written = save_png(torch.zeros(3, 4, 4), Path(folder) / "out" / "black.png")
        ...     tuple(load_image(written).shape)
        (3, 4, 4)
    """
    picture = to_pil(image)
    path = Path(path)
    try:
        write_atomically(path, lambda stream: picture.save(stream, format="PNG"))
    except OSError as error:
        raise OSError(f"cannot write `path` {str(path)!r}: {error}") from error
    return path


def write_png(picture: Tensor | np.ndarray, stream: BinaryIO) -> None:
    """Encode a picture (anything :func:`to_pil` takes) as PNG into a binary stream, for sets of files."""
    to_pil(picture).save(stream, format="PNG")


def default_image_path() -> Path:
    """The demo photo bundled with matplotlib (Grace Hopper, 512x600 RGB JPEG).

    Returns:
        The path of matplotlib's ``grace_hopper.jpg``.

    Example:
        >>> default_image_path().name
        'grace_hopper.jpg'
    """
    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def _check_scale(scale: int) -> None:
    # bool is an int subclass, but scale=True is surely a mistake.
    if not isinstance(scale, int) or isinstance(scale, bool):
        raise TypeError(f"`scale` must be an int, got {scale!r}")
    if scale < 1:
        raise ValueError(f"`scale` must be >= 1, got {scale}")


def _crop_box(crop: Sequence[int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Pillow's ``(left, upper, right, lower)`` box of ``crop``, checked against the image ``size``."""
    width, height = size
    if len(crop) != 4 or not all(isinstance(value, (int, np.integer)) for value in crop):
        raise InputError("crop", f"`crop` must be four integers (top, left, height, width), got {crop!r}")
    top, left, crop_height, crop_width = (int(value) for value in crop)
    if min(top, left) < 0 or min(crop_height, crop_width) < 1 or top + crop_height > height or left + crop_width > width:
        raise InputError("crop", f"`crop` must lie inside the {height}x{width} image, got top={top}, left={left}, "
                                 f"height={crop_height}, width={crop_width}")
    return left, top, left + crop_width, top + crop_height


def _degrade(image: Image.Image, scale: int) -> tuple[Image.Image, Image.Image]:
    """The demo's top-left crop to a multiple of ``scale`` and bicubic downscale, in the image's mode."""
    width, height = image.size
    cropped = image.crop((0, 0, width - width % scale, height - height % scale))
    return cropped.resize((width // scale, height // scale), Image.Resampling.BICUBIC), cropped


def _to_tensor(image: Image.Image, channels: int | None = None) -> Tensor:
    """(C, H, W) float32 in the mode's true range; a grey image is repeated when 3 ``channels`` are asked for."""
    if image.mode in ("L", "RGB"):
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).to(torch.float32) / 255.0
    else:
        pixels = torch.from_numpy(np.array(image, dtype=np.float32)) / _FULL_SCALE[image.mode]
    channels_first = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
    if channels == 3 and channels_first.shape[0] == 1:
        return channels_first.repeat(3, 1, 1)
    return channels_first


def _decode(path: str | Path, mode: ImageMode | None) -> tuple[Image.Image, int]:
    """Frame 0 of the file as an ``L``, ``RGB``, ``I;16`` or ``F`` image, and the channels to give."""
    if mode not in ("RGB", "L", None):
        raise ValueError(f"`mode` must be 'RGB', 'L' or None, got {mode!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path` {str(path)!r} is not an existing file")
    image = _open(path)
    if image.mode in ("I", "F", *_UINT16_MODES):
        return _deep_grey(image, path), 3 if mode == "RGB" else 1
    colour = _eight_bit(image, path, mode)
    return colour, len(colour.getbands())


def _open(path: Path) -> Image.Image:
    """Decode frame 0, warning about the other frames and about precision that Pillow drops."""
    try:
        with Image.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            # Read before load(), which empties the tile list: a 16-bit colour file is decoded to 8 bits.
            sixteen_bit_colour = len(image.getbands()) > 1 and any(
                ";16" in _raw_mode(tile) for tile in image.tile)
            image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as error:
        hint = ("; Pillow reads float TIFFs of one channel only, not colour float TIFFs: save one channel per file "
                "or convert to 16 bits" if path.suffix.lower() in (".tif", ".tiff")
                and isinstance(error, UnidentifiedImageError) else "")
        raise ValueError(f"cannot read `path` {str(path)!r} as an image: {error}{hint}") from error
    if frames > 1:
        warnings.warn(f"{str(path)!r} has {frames} frames; frame 0 is used", UserWarning,
                      stacklevel=outside_stacklevel())
    if sixteen_bit_colour:
        warnings.warn(f"{str(path)!r} has 16 bits per channel, but Pillow reads colour images at 8 bits: the "
                      "pixels are rounded down to steps of 1/255 (16-bit grey files keep their precision)",
                      UserWarning, stacklevel=outside_stacklevel())
    return image


def _raw_mode(tile: object) -> str:
    # A tile's arguments are the raw mode, or a tuple starting with it, depending on the format.
    arguments = getattr(tile, "args", None)
    return str(arguments[0] if isinstance(arguments, tuple) and arguments else arguments)


def _deep_grey(image: Image.Image, path: Path) -> Image.Image:
    """A one-band image of more than 8 bits as ``I;16`` (integers) or ``F`` (floats), never clipped."""
    pixels = np.array(image)
    if image.mode in _UINT16_MODES:
        return Image.fromarray(pixels.astype(np.uint16))
    if image.mode == "I":
        if 0 <= pixels.min() and pixels.max() <= _UINT16_MAX:
            return Image.fromarray(pixels.astype(np.uint16))
        warnings.warn(f"{str(path)!r} holds 32-bit integers in [{pixels.min()}, {pixels.max()}], beyond the "
                      f"16-bit range: they are divided by {_INT32_MAX} (2**31 - 1)", UserWarning,
                      stacklevel=outside_stacklevel())
        pixels = (pixels / _INT32_MAX).astype(np.float32)
    if not np.isfinite(pixels).all():
        raise ValueError(f"`path` {str(path)!r} holds NaN or infinite pixel values")
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0.0 or high > 1.0:
        warnings.warn(f"{str(path)!r} holds values in [{low:.6g}, {high:.6g}], outside [0, 1]; they are kept as "
                      "they are (not clipped): check that the model expects this range", UserWarning,
                      stacklevel=outside_stacklevel())
    return Image.fromarray(pixels.astype(np.float32, copy=False))


def _eight_bit(image: Image.Image, path: Path, mode: ImageMode | None) -> Image.Image:
    """An 8-bit image in mode ``mode`` (``None``: ``L`` for grey content, else ``RGB``), alpha dropped."""
    target = mode or ("L" if _is_grey(image) else "RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        image = image.convert("LA" if image.mode in _GREY_MODES else "RGBA")
        if image.getchannel("A").getextrema()[0] < 255:
            warnings.warn(f"{str(path)!r} has transparent pixels: their stored colour is used, the alpha channel "
                          "is dropped", UserWarning, stacklevel=outside_stacklevel())
    try:
        return image.convert(target)
    except ValueError as error:
        raise ValueError(f"cannot convert `path` {str(path)!r} from mode {image.mode!r} to {target!r}: {error}") from error


def _is_grey(image: Image.Image) -> bool:
    if image.mode in _GREY_MODES:
        return True
    if image.mode not in ("P", "PA"):
        return False
    # A palette of greys (as some tools write grey images) stays one channel.
    red, green, blue = np.array(image.convert("RGB")).transpose(2, 0, 1)
    return bool((red == green).all() and (green == blue).all())
