"""The pictures of the official LAM demo, as uint8 RGB arrays (H, W, 3).

Colours come from matplotlib's "seismic" colormap at ``0.5 + 0.5 * m`` (0 white, 1 dark red),
resizing from Pillow, and figures from matplotlib's object API on the Agg canvas: no pyplot state,
so these functions are safe in threads and on machines without a display.
"""

from __future__ import annotations

import math
from numbers import Integral

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from torch import Tensor

from lam_captum.functional import kde_map
from lam_captum.imageio import _check_scale, to_pil

_PANEL_INCHES = 3.0
_FIGURE_DPI = 100
_LAM_PANEL_TITLES = ("window", "LAM heat map", "heat blend", "KDE blend", "SR output")
# The evolution grid: four columns of 160-pixel maps with 16-point labels read in a 335-pixel card.
_EVOLUTION_COLUMNS = 4
_EVOLUTION_PANEL_INCHES = 1.6
_EVOLUTION_LABEL_INCHES = 0.6
_EVOLUTION_LABEL_POINTS = 16
_EVOLUTION_MARGIN_INCHES = 0.05


def heat_map(attribution_map: Tensor | np.ndarray, scale: int) -> np.ndarray:
    """Colour an attribution map and upscale it to the SR size with nearest neighbour.

    Args:
        attribution_map: an (h, w) map with values in [0, 1] (LAM's map, normalised by its max).
        scale: the super-resolution factor, an int >= 1.

    Returns:
        A uint8 (scale * h, scale * w, 3) RGB array.

    Raises:
        TypeError: if ``scale`` is not an int.
        ValueError: if the map is not 2-D, not finite or outside [0, 1], or ``scale`` < 1.

    Example:
        >>> heat_map(np.eye(3), scale=2).shape
        (6, 6, 3)
    """
    _check_scale(scale)
    colours = _seismic(_attribution_array(attribution_map))
    return _upscale(colours, scale, Image.Resampling.NEAREST)


def kde_picture(attribution_map: Tensor | np.ndarray, scale: int) -> np.ndarray:
    """Colour the map's weighted Gaussian KDE and upscale it to the SR size with bicubic.

    Args:
        attribution_map: an (h, w) map with values in [0, 1], not concentrated on a point or line.
        scale: the super-resolution factor, an int >= 1.

    Returns:
        A uint8 (scale * h, scale * w, 3) RGB array.

    Raises:
        TypeError: if ``scale`` is not an int.
        ValueError: as :func:`heat_map`, and as :func:`lam_captum.functional.kde_map` for an
            all-zero or degenerate map.

    Example:
        >>> kde_picture(np.random.default_rng(0).random((4, 5)), scale=3).shape
        (12, 15, 3)
    """
    _check_scale(scale)
    density = kde_map(torch.from_numpy(_attribution_array(attribution_map))).numpy()
    return _upscale(_seismic(density), scale, Image.Resampling.BICUBIC)


def blend(heat: np.ndarray, lr_image: Tensor | np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Mix a picture with the bicubic-upscaled LR input: ``heat * (1 - alpha) + lr * alpha``.

    Args:
        heat: a uint8 (s * h, s * w, 3) picture, such as :func:`heat_map`'s.
        lr_image: the (C, h, w) LR input in [0, 1], C in {1, 3}; grayscale is shown as gray RGB.
        alpha: the LR image's share, in [0, 1].

    Returns:
        The uint8 (s * h, s * w, 3) blend, truncated to integers as the demo does.

    Raises:
        TypeError: if ``lr_image`` is not floating.
        ValueError: if ``alpha`` is outside [0, 1], a shape is wrong or the sizes do not differ
            by one integer factor.

    Example:
        >>> int(blend(heat_map(np.zeros((2, 2)), scale=2), torch.zeros(3, 2, 2), alpha=1.0).max())
        0
    """
    check_alpha(alpha)
    heat = _rgb_array(heat, "heat")
    lr_picture = to_pil(_channels_first(lr_image, "lr_image"))
    height, width = heat.shape[:2]
    scale = height // lr_picture.height
    if (lr_picture.height * scale, lr_picture.width * scale) != (height, width):
        raise ValueError(
            f"`heat` ({height}x{width}) must be `lr_image` ({lr_picture.height}x{lr_picture.width}) "
            "upscaled by one integer factor"
        )
    return (heat * (1.0 - alpha) + upscale_bicubic(lr_image, scale) * alpha).astype(np.uint8)


def check_alpha(alpha: float) -> float:
    """Raise unless ``alpha`` (the LR image's share in a blend) is a number in [0, 1]; return it as a float."""
    # NaN fails the range test too.
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"`alpha` must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def upscale_bicubic(lr_image: Tensor | np.ndarray, scale: int) -> np.ndarray:
    """The LR input as a uint8 RGB picture, upscaled by ``scale`` with Pillow's bicubic filter.

    Example:
        >>> upscale_bicubic(torch.zeros(1, 2, 3), 4).shape
        (8, 12, 3)
    """
    _check_scale(scale)
    lr_picture = to_pil(_channels_first(lr_image, "lr_image")).convert("RGB")
    size = (lr_picture.width * scale, lr_picture.height * scale)
    return np.asarray(lr_picture.resize(size, Image.Resampling.BICUBIC))


def draw_window(
    image_sr_size: Tensor | np.ndarray,
    window: tuple[int, int, int, int],
    *,
    color: tuple[int, int, int] = (255, 0, 0),
    width: int = 2,
) -> np.ndarray:
    """Draw the LAM window's outline, inside its bounds, on a copy of an SR-size image.

    Args:
        image_sr_size: a uint8 (H, W, 3) array, or a (C, H, W) float image in [0, 1].
        window: ``(top, left, height, width)`` in SR pixels, inside the image.
        color: the outline's RGB colour.
        width: the outline's thickness in pixels, an int >= 1.

    Returns:
        A uint8 (H, W, 3) copy with the outline drawn; pixels outside the window are unchanged.

    Raises:
        ValueError: if the window is not four ints, is empty or crosses the image edge,
            or ``width`` < 1.

    Example:
        >>> framed = draw_window(np.zeros((8, 8, 3), np.uint8), (2, 2, 4, 4), width=1)
        >>> framed[2, 2].tolist(), framed[3, 3].tolist()
        ([255, 0, 0], [0, 0, 0])
    """
    picture = _rgb_array(image_sr_size, "image_sr_size")
    top, left, window_height, window_width = _check_window(window, picture.shape[:2])
    if not isinstance(width, Integral) or width < 1:
        raise ValueError(f"`width` must be an int >= 1, got {width!r}")
    if len(color) != 3 or not all(isinstance(level, Integral) and 0 <= level <= 255 for level in color):
        raise ValueError(f"`color` must be three ints in [0, 255], got {color!r}")
    canvas = Image.fromarray(picture)
    bounds = (left, top, left + window_width - 1, top + window_height - 1)
    ImageDraw.Draw(canvas).rectangle(bounds, outline=tuple(int(level) for level in color), width=width)
    return np.asarray(canvas).copy()


def sr_picture(sr_output: Tensor | np.ndarray) -> np.ndarray:
    """Turn an SR output into a uint8 RGB picture.

    Args:
        sr_output: a (C, sH, sW) float image, C in {1, 3}; values are clamped to [0, 1].

    Returns:
        A uint8 (sH, sW, 3) RGB array; grayscale is repeated over the three channels.

    Raises:
        TypeError: if ``sr_output`` is not floating.
        ValueError: if the shape is not (C, sH, sW) with C in {1, 3}.

    Example:
        >>> sr_picture(torch.full((1, 2, 3), 2.0))[0, 0].tolist()
        [255, 255, 255]
    """
    return np.asarray(to_pil(_channels_first(sr_output, "sr_output")).convert("RGB"))


def lam_figure(
    window_image: np.ndarray,
    heat: np.ndarray,
    heat_blend: np.ndarray,
    kde_blend: np.ndarray,
    sr: Tensor | np.ndarray,
    *,
    di: float,
    lr_size: tuple[int, int],
    title: str | None = None,
) -> np.ndarray:
    """Render the demo's five panels in one row, with the Diffusion Index and the LR size.

    Save it with :func:`lam_captum.imageio.save_png`.

    Args:
        window_image: the SR-size image with the window drawn (:func:`draw_window`).
        heat: the heat map (:func:`heat_map`).
        heat_blend: the heat map blended with the LR input (:func:`blend`).
        kde_blend: the KDE picture blended with the LR input.
        sr: the SR output, a uint8 (sH, sW, 3) picture or a (C, sH, sW) float image.
        di: the Diffusion Index.
        lr_size: the LR input's ``(height, width)``; DI depends on it, so it is printed with it.
        title: an optional first line, such as the model's name.

    Returns:
        The rendered figure as a uint8 (H, W, 3) RGB array.

    Raises:
        ValueError: if a panel is not an RGB image, the panels differ in size, ``di`` is not
            finite or ``lr_size`` is not two positive ints.

    Example:
        >>> panel = np.zeros((8, 8, 3), np.uint8)
        >>> lam_figure(panel, panel, panel, panel, panel, di=1.5, lr_size=(2, 2)).shape[2]
        3
    """
    names = ("window_image", "heat", "heat_blend", "kde_blend", "sr")
    images = (window_image, heat, heat_blend, kde_blend, sr)
    panels = [_rgb_array(image, name) for image, name in zip(images, names)]
    shapes = [panel.shape for panel in panels]
    if len(set(shapes)) != 1:
        raise ValueError(f"the five panels must share one SR size, got shapes {shapes}")
    if not math.isfinite(di):
        raise ValueError(f"`di` must be finite, got {di}")
    if len(lr_size) != 2:
        raise ValueError(f"`lr_size` must be (height, width), got {lr_size!r}")
    if not all(isinstance(side, Integral) and side > 0 for side in lr_size):
        raise ValueError(f"`lr_size` must hold two positive ints, got {lr_size!r}")
    caption = f"DI {di:.2f} (LR {lr_size[0]}x{lr_size[1]})"
    figure = _figure(len(panels), caption_inches=0.8)
    for axes, panel, panel_title in zip(figure.subplots(1, len(panels)), panels, _LAM_PANEL_TITLES):
        axes.imshow(panel, interpolation="nearest")
        axes.set_title(panel_title)
        axes.set_axis_off()
    figure.suptitle(caption if title is None else f"{title}\n{caption}")
    return _render(figure)


def evolution_figure(maps: list[Tensor | np.ndarray], labels: list[str]) -> np.ndarray:
    """Show attribution maps heat-coloured in rows of at most four, each with a label under it.

    Sized for a TensorBoard image card: shown 335 pixels wide (the Time Series dashboard's smallest card),
    a row of four maps keeps capitals and digits about 8 pixels high (an 11-pixel font), and a panel is wide
    enough for two short lines such as ``"epoch 3\\nDI 10.2"``.
    Every panel has the same size whatever the map's, so one to four maps make one row of that many panels.

    Args:
        maps: (h, w) maps with values in [0, 1], for example one per training epoch.
        labels: one caption per map, such as ``"epoch 3\\nDI 10.2"``.

    Returns:
        The rendered figure as a uint8 (H, W, 3) RGB array.

    Raises:
        ValueError: if ``maps`` is empty, the counts differ, or a map is invalid (see :func:`heat_map`).

    Example:
        >>> evolution_figure([np.eye(4), np.ones((4, 4))], ["epoch 1", "epoch 2"]).shape
        (220, 320, 3)
    """
    if not maps:
        raise ValueError("`maps` must hold at least one map, got none")
    if len(labels) != len(maps):
        raise ValueError(f"`labels` must give one label per map: {len(maps)} maps, got {len(labels)}")
    colours = [_seismic(_attribution_array(attribution_map)) for attribution_map in maps]
    columns = min(len(maps), _EVOLUTION_COLUMNS)
    rows = math.ceil(len(maps) / columns)
    cell_height = _EVOLUTION_PANEL_INCHES + _EVOLUTION_LABEL_INCHES
    figure = Figure(figsize=(_EVOLUTION_PANEL_INCHES * columns, cell_height * rows), dpi=_FIGURE_DPI)
    for index, (picture, label) in enumerate(zip(colours, labels)):
        row, column = divmod(index, columns)
        _evolution_cell(figure, picture, label, left=column * _EVOLUTION_PANEL_INCHES,
                        bottom=(rows - 1 - row) * cell_height)
    return _render(figure)


def _evolution_cell(figure: Figure, picture: np.ndarray, label: str, left: float, bottom: float) -> None:
    """Draw one map and its label in the cell whose lower left corner is at (``left``, ``bottom``) inches.

    Placed by hand rather than by a layout engine: every map gets the same square whatever its label
    holds, so that the text keeps its size relative to the card.
    """
    width, height = figure.get_size_inches()
    margin, side = _EVOLUTION_MARGIN_INCHES, _EVOLUTION_PANEL_INCHES - 2 * _EVOLUTION_MARGIN_INCHES
    map_bottom = bottom + _EVOLUTION_LABEL_INCHES + margin
    axes = figure.add_axes(((left + margin) / width, map_bottom / height, side / width, side / height))
    axes.imshow(picture, interpolation="nearest")
    # A map wider than high sits on its label rather than in the middle of its square.
    axes.set_anchor("S")
    axes.set_axis_off()
    label_top = bottom + _EVOLUTION_LABEL_INCHES
    figure.text((left + _EVOLUTION_PANEL_INCHES / 2) / width, label_top / height, label, ha="center", va="top",
                fontsize=_EVOLUTION_LABEL_POINTS, linespacing=1.1)


def _attribution_array(attribution_map: Tensor | np.ndarray) -> np.ndarray:
    values = _as_numpy(attribution_map).astype(np.float64)
    if values.ndim != 2:
        raise ValueError(f"`attribution_map` must be a 2-D (h, w) map, got shape {values.shape}")
    if not np.isfinite(values).all():
        non_finite = np.count_nonzero(~np.isfinite(values))
        raise ValueError(f"`attribution_map` must be finite, got {non_finite} NaN or inf values")
    if values.min() < 0.0 or values.max() > 1.0:
        value_range = f"[{values.min():.3g}, {values.max():.3g}]"
        raise ValueError(f"`attribution_map` must lie in [0, 1] (divide it by its max), got {value_range}")
    return values


def _check_window(window: tuple[int, ...], image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    if len(window) != 4 or not all(isinstance(value, Integral) for value in window):
        raise ValueError(f"`window` must be four ints (top, left, height, width), got {window!r}")
    top, left, height, width = (int(value) for value in window)
    if height < 1 or width < 1:
        raise ValueError(f"`window` must have a positive size, got height={height}, width={width}")
    image_height, image_width = image_size
    if top < 0 or left < 0 or top + height > image_height or left + width > image_width:
        raise ValueError(
            f"`window` must lie inside the {image_height}x{image_width} image, "
            f"got top={top}, left={left}, height={height}, width={width}"
        )
    return top, left, height, width


def _channels_first(image: Tensor | np.ndarray, name: str) -> np.ndarray:
    values = _as_numpy(image)
    if not np.issubdtype(values.dtype, np.floating):
        raise TypeError(f"`{name}` must be a floating image in [0, 1], got dtype {values.dtype}")
    if values.ndim != 3 or values.shape[0] not in (1, 3):
        raise ValueError(f"`{name}` must be a (C, H, W) image, C in {{1, 3}}, got shape {values.shape}")
    return values.astype(np.float32)


def _rgb_array(image: Tensor | np.ndarray, name: str) -> np.ndarray:
    """A uint8 (H, W, 3) picture as is, or a (C, H, W) float image converted to one."""
    values = _as_numpy(image)
    if values.dtype != np.uint8:
        return sr_picture(_channels_first(values, name))
    if values.ndim != 3 or values.shape[2] != 3:
        raise ValueError(f"`{name}` must be a uint8 (H, W, 3) RGB picture, got shape {values.shape}")
    return values


def _as_numpy(image: Tensor | np.ndarray) -> np.ndarray:
    # LAM's maps may still carry autograd history; numpy() refuses those without detach().
    return image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)


def _seismic(values: np.ndarray) -> np.ndarray:
    colours = matplotlib.colormaps["seismic"](0.5 + 0.5 * values)
    return (255 * colours[..., :3]).astype(np.uint8)


def _upscale(picture: np.ndarray, scale: int, resample: Image.Resampling) -> np.ndarray:
    height, width = picture.shape[:2]
    return np.asarray(Image.fromarray(picture).resize((width * scale, height * scale), resample))


def _figure(panel_count: int, caption_inches: float) -> Figure:
    size = (_PANEL_INCHES * panel_count, _PANEL_INCHES + caption_inches)
    return Figure(figsize=size, dpi=_FIGURE_DPI, layout="constrained")


def _render(figure: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
