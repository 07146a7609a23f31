"""The effective receptive field (ERF) of a network over a data set, and RepLKNet's area ratios.

RepLKNet (Ding et al., CVPR 2022) measures how far a network looks by the gradient of its output's centre
pixel with respect to the input, clamped at zero and summed over channels (:class:`lam_captum.ERF`);
averaged over a data set it is the network's ERF. MambaIR and later SR papers show it for SR networks on
LR images resized to 120x120 with nearest interpolation. RepLKNet condenses it into the area ratio of
the smallest centred square that holds t% of the total, t = 20, 30, 50, 99 (:func:`erf_area_ratios`).

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2))
    >>> erf = dataset_erf(model, [torch.rand(3, 20, 30), torch.rand(3, 40, 40)], size=(16, 16))
    >>> erf.shape
    torch.Size([16, 16])
    >>> sorted(erf_area_ratios(erf))
    [0.2, 0.3, 0.5, 0.99]
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from lam_captum._core._context import model_placement
from lam_captum._core.erf import ERF
from lam_captum.imageio import IMAGE_SUFFIXES, images_in

__all__ = ["ERF", "SquareArea", "dataset_erf", "erf_area_ratios", "image_files"]

REPLKNET_THRESHOLDS = (0.2, 0.3, 0.5, 0.99)

ImageSource = str | Path | Tensor


class SquareArea(NamedTuple):
    """The smallest centred square that holds a share of the ERF: its side and its share of the input."""

    side: int
    ratio: float


def dataset_erf(
    model: Callable[[Tensor], Tensor],
    images: ImageSource | Iterable[ImageSource],
    *,
    size: tuple[int, int] = (120, 120),
    position: tuple[int, int] | None = None,
    batch_size: int = 8,
    mode: Literal["RGB", "L"] = "RGB",
    device: str | torch.device | None = None,
) -> Tensor:
    """The network's ERF: the mean over ``images`` of each image's channel-summed :class:`ERF` map.

    Every image is resized to ``size`` with ``F.interpolate``'s default nearest mode, as MambaIR does,
    so that the maps add up pixel for pixel.

    Args:
        model: The network (moved to ``device`` if it is a module).
        images: A folder (its image files, sorted by name), an image file, a ``(C, H, W)`` tensor, or an
            iterable of files and tensors. Images are in [0, 1] as :func:`lam_captum.imageio.load_image`
            reads them.
        size: ``(height, width)`` every image is resized to.
        position: Output pixel ``(row, column)``; default the centre of the output.
        batch_size: Images per model call; the result does not depend on it.
        mode: ``"RGB"`` or ``"L"`` (one channel) for image files.
        device: Where to compute; default the model's device.

    Returns:
        The ``(height, width)`` ERF, float64 on the CPU, >= 0.

    Raises:
        ValueError: For a bad ``size``, ``batch_size`` or ``position``, no images, or an image that is not
            ``(C, H, W)``; as :meth:`ERF.attribute` otherwise.
        FileNotFoundError: For a path that does not exist.
    """
    _check_size(size)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
    device = torch.device(device if device is not None else model_placement(model)[0] or "cpu")
    if isinstance(model, torch.nn.Module):
        model = model.to(device)
    attribution = ERF(model)
    total, count = torch.zeros(size, dtype=torch.float64), 0
    for batch in _batches(_resized(images, size, mode), batch_size):
        gradient = attribution.attribute(batch.to(device), position)
        total += gradient.sum(dim=(0, 1)).double().cpu()
        count += batch.shape[0]
    if count == 0:
        raise ValueError(f"`images` holds no images, got {images!r}")
    return total / count


def erf_area_ratios(
    erf: Tensor,
    thresholds: Iterable[float] = REPLKNET_THRESHOLDS,
    *,
    centre: tuple[int, int] | None = None,
    log_scale: bool = True,
) -> dict[float, SquareArea]:
    """RepLKNet's high-contribution area ratios: per threshold t, the smallest square centred on
    ``centre`` whose sum is more than t of the whole map's, and its area over the map's.

    As RepLKNet's analysis script, the map is first taken as ``log10(erf + 1)`` (``log_scale``; the scores
    span orders of magnitude), squares have odd sides from 3 up, and a share must be exceeded, not
    just reached. Squares that grow past the map's edge are clipped to it (RepLKNet stops before the
    edge and reports nothing), so the whole map, ratio 1, always answers.

    Args:
        erf: ``(H, W)`` ERF, >= 0, as :func:`dataset_erf` returns it.
        thresholds: Shares in (0, 1); default RepLKNet's 20%, 30%, 50% and 99%.
        centre: ``(row, column)`` of the squares' centre; default the map's centre ``(H // 2, W // 2)``,
            where the output's centre pixel lies.
        log_scale: Take ``log10(erf + 1)`` first, as RepLKNet does; ``False`` uses the map as it is.

    Returns:
        ``{t: SquareArea(side, ratio)}`` in the order of ``thresholds``; ``ratio`` is the square's pixels
        (clipped to the map) over ``H * W``.

    Raises:
        ValueError: If ``erf`` is not a finite, non-negative, non-zero 2-D map, a threshold is outside
            (0, 1) or ``centre`` is outside the map.

    Example:
        >>> erf = torch.zeros(9, 9)
        >>> erf[3:6, 3:6] = 1.0
        >>> erf_area_ratios(erf, [0.5])
        {0.5: SquareArea(side=3, ratio=0.1111111111111111)}
    """
    values = _check_erf(erf).double()
    height, width = values.shape
    row, column = _check_centre(centre, height, width)
    if log_scale:
        values = torch.log10(values + 1)
    # Square sums from an integral image: one cumulative sum, then four look-ups per square.
    integral = F.pad(values.cumsum(0).cumsum(1), (1, 0, 1, 0))
    halves = torch.arange(1, max(row, height - 1 - row, column, width - 1 - column, 1) + 1)
    top, bottom = (row - halves).clamp_min(0), (row + halves + 1).clamp_max(height)
    left, right = (column - halves).clamp_min(0), (column + halves + 1).clamp_max(width)
    sums = integral[bottom, right] - integral[top, right] - integral[bottom, left] + integral[top, left]
    shares = sums / integral[-1, -1]
    pixels = (bottom - top) * (right - left)
    ratios = {}
    for threshold in thresholds:
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0 < threshold < 1:
            raise ValueError(f"`thresholds` must hold shares in (0, 1), got {threshold!r}")
        # The last square holds the whole map (share 1 > threshold), so a first exceeding one exists.
        first = int(torch.nonzero(shares > threshold)[0])
        ratios[float(threshold)] = SquareArea(2 * int(halves[first]) + 1, float(pixels[first]) / (height * width))
    return ratios


def image_files(folder: str | Path) -> list[Path]:
    """The image files of a folder (by suffix, see :data:`lam_captum.imageio.IMAGE_SUFFIXES`), sorted by name.

    Raises:
        ValueError: If the folder holds no image files.

    Example:
        >>> import tempfile
        >>> from lam_captum.imageio import save_png
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = save_png(torch.zeros(3, 2, 2), folder / "b.png"), save_png(torch.ones(3, 2, 2), folder / "a.PNG")
        >>> [path.name for path in image_files(folder)]
        ['a.PNG', 'b.png']
    """
    folder = Path(folder)
    files = images_in(folder)
    if not files:
        raise ValueError(f"the folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _resized(images: ImageSource | Iterable[ImageSource], size: tuple[int, int], mode: str) -> Iterator[Tensor]:
    """Each image as a ``(1, C, *size)`` float tensor, read lazily so a large folder never fills memory."""
    from lam_captum.imageio import load_image

    for source in _sources(images):
        image = source if isinstance(source, Tensor) else load_image(source, mode=mode)
        if image.dim() != 3 or not image.is_floating_point():
            raise ValueError(f"`images` must hold floating (C, H, W) images, got {image.dtype} of shape "
                             f"{tuple(image.shape)}")
        yield F.interpolate(image[None].float(), size=size)


def _sources(images: ImageSource | Iterable[ImageSource]) -> Iterator[ImageSource]:
    if isinstance(images, Tensor):
        if images.dim() not in (3, 4):
            raise ValueError(f"`images` must be a (C, H, W) image, an (N, C, H, W) batch, files or folders, got a "
                             f"tensor of shape {tuple(images.shape)} (a grey (H, W) image: image[None])")
        yield from (images,) if images.dim() == 3 else images
        return
    for source in [images] if isinstance(images, (str, Path)) else images:
        if isinstance(source, Tensor):
            yield source
        elif not isinstance(source, (str, Path)):
            raise TypeError(f"`images` must hold (C, H, W) tensors, image files or folders, got "
                            f"{type(source).__name__} (a numpy image: torch.from_numpy(image).permute(2, 0, 1))")
        elif Path(source).is_dir():
            yield from image_files(source)
        elif not Path(source).is_file():
            raise FileNotFoundError(f"`images`: {str(source)!r} is neither an image file nor a folder")
        else:
            yield Path(source)


def _batches(images: Iterator[Tensor], batch_size: int) -> Iterator[Tensor]:
    """The images in batches; all of one channel count, whatever batch they fall in (a grey image's ERF sums one
    channel, a colour image's three: averaged together, they would weigh differently)."""
    batch: list[Tensor] = []
    channels = None
    for image in images:
        channels = image.shape[1] if channels is None else channels
        if image.shape[1] != channels:
            raise ValueError(f"`images` must share one channel count, got {channels} and {image.shape[1]} (files "
                             "are read with one `mode`: 'RGB' or 'L')")
        batch.append(image)
        if len(batch) == batch_size:
            yield torch.cat(batch)
            batch = []
    if batch:
        yield torch.cat(batch)


def _check_size(size: tuple[int, int]) -> None:
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(side, numbers.Integral) and not isinstance(side, bool) and side > 0
                       for side in size)):
        raise ValueError(f"`size` must be two positive ints (height, width), got {size!r}")


def _check_erf(erf: Tensor) -> Tensor:
    if not isinstance(erf, Tensor) or erf.dim() != 2:
        shape = tuple(erf.shape) if isinstance(erf, Tensor) else type(erf).__name__
        raise ValueError(f"`erf` must be a 2-D (H, W) map, got {shape}")
    if not torch.isfinite(erf).all() or (erf < 0).any():
        raise ValueError("`erf` must be finite and >= 0 (a clamped gradient map)")
    if not erf.any():
        raise ValueError("`erf` is all zero: the output position does not depend on the input")
    return erf


def _check_centre(centre: tuple[int, int] | None, height: int, width: int) -> tuple[int, int]:
    if centre is None:
        return height // 2, width // 2
    if (not isinstance(centre, (tuple, list)) or len(centre) != 2
            or not all(isinstance(value, numbers.Integral) and not isinstance(value, bool) for value in centre)):
        raise ValueError(f"`centre` must be two ints (row, column), got {centre!r}")
    row, column = (int(value) for value in centre)
    if not (0 <= row < height and 0 <= column < width):
        raise ValueError(f"`centre` must lie inside the {height}x{width} map, got row={row}, column={column}")
    return row, column
