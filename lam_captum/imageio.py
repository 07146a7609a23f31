"""Reading, degrading and writing images the way the official LAM demo does.

Tensors are (C, H, W) floats in [0, 1]; Pillow does the decoding, the bicubic downscaling and the
PNG encoding, so a low-resolution input made here has the demo's exact pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from matplotlib import cbook
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from lam_captum._atomic import write_atomically


def load_image(path: str | Path, *, mode: Literal["RGB", "L"] | None = "RGB") -> Tensor:
    """Read an image file as a (C, H, W) float32 tensor in [0, 1].

    Args:
        path: the image file.
        mode: ``"RGB"`` (3 channels), ``"L"`` (1 channel, grayscale), or ``None`` to keep a
            one-band file grayscale and read anything else as RGB (alpha is dropped).

    Returns:
        The image, (3, H, W) or (1, H, W), float32 in [0, 1].

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: if ``mode`` is not one of the above or Pillow cannot decode the file.

    Example:
        >>> load_image(default_image_path()).shape
        torch.Size([3, 600, 512])
    """
    if mode not in ("RGB", "L", None):
        raise ValueError(f"`mode` must be 'RGB', 'L' or None, got {mode!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path` {str(path)!r} is not an existing file")
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read `path` {str(path)!r} as an image: {error}") from error
    if mode is None:
        mode = "L" if len(image.getbands()) == 1 else "RGB"
    return _pil_to_tensor(image.convert(mode))


def hr_to_lr(hr: Image.Image | Tensor, scale: int) -> tuple[Tensor, Tensor]:
    """Make the demo's low-resolution input: crop to a multiple of ``scale``, then bicubic downscale.

    The crop keeps the top-left corner (``crop((0, 0, W - W % scale, H - H % scale))``) and the
    downscale is Pillow's ``resize((W // scale, H // scale), BICUBIC)`` on uint8 pixels.

    Args:
        hr: the high-resolution image, a Pillow ``"RGB"`` or ``"L"`` image, or a (C, H, W) float
            tensor in [0, 1] with C in {1, 3} (rounded to uint8 first, as a saved image would be).
        scale: the super-resolution factor, an int >= 1.

    Returns:
        ``(lr, hr_cropped)``: (C, H // scale, W // scale) and (C, H - H % scale, W - W % scale)
        float32 tensors in [0, 1].

    Raises:
        TypeError: if ``scale`` is not an int or ``hr`` is neither a Pillow image nor a tensor.
        ValueError: if ``scale`` < 1, the image is smaller than ``scale`` or has another mode.

    Example:
        >>> lr, hr_cropped = hr_to_lr(torch.rand(3, 10, 13), scale=4)
        >>> tuple(lr.shape), tuple(hr_cropped.shape)
        ((3, 2, 3), (3, 8, 12))
    """
    _check_scale(scale)
    image = to_pil(hr) if isinstance(hr, Tensor) else hr
    if not isinstance(image, Image.Image):
        raise TypeError(f"`hr` must be a PIL.Image.Image or a torch.Tensor, got {type(hr).__name__}")
    if image.mode not in ("RGB", "L"):
        raise ValueError(f"`hr` must be an 'RGB' or 'L' image, got mode {image.mode!r}")
    width, height = image.size
    if min(width, height) < scale:
        raise ValueError(f"`hr` must be at least `scale`={scale} pixels each way, got {height}x{width}")
    cropped = image.crop((0, 0, width - width % scale, height - height % scale))
    lr = cropped.resize((width // scale, height // scale), Image.Resampling.BICUBIC)
    return _pil_to_tensor(lr), _pil_to_tensor(cropped)


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


def _pil_to_tensor(image: Image.Image) -> Tensor:
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
    channels_first = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
    return channels_first.to(torch.float32) / 255.0
