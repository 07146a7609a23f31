"""The pictures of the official LAM demo, as uint8 RGB arrays (H, W, 3), and figures that read at a glance.

Colours come from matplotlib's "seismic" colormap at ``0.5 + 0.5 * m`` (0 white, 1 dark red),
resizing from Pillow, and figures from matplotlib's object API on the Agg canvas: no pyplot state,
so these functions are safe in threads and on machines without a display. Figures are matplotlib
:class:`~matplotlib.figure.Figure` objects until :func:`render_figure` turns them into pixels, so
:func:`save_figure` can also write them as vector PDF and SVG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real
from pathlib import Path
from typing import BinaryIO, Literal

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image, ImageDraw
from torch import Tensor

from lam_captum._atomic import write_atomically
from lam_captum.functional import Window, as_window, attribution_area, kde_map
from lam_captum.imageio import _check_scale, to_pil

_PANEL_INCHES = 3.0
# A figure of many panels shrinks them so that it stays within this width.
_MAX_FIGURE_INCHES = 18.0
_COLOUR_BAR_INCHES = 0.8
_FIGURE_DPI = 100
_LAM_PANEL_TITLES = ("window", "LAM heat map", "heat blend", "KDE blend", "SR output")
FIGURE_FORMATS = ("png", "pdf", "svg")
FigureFormat = Literal["png", "pdf", "svg"]
# The half of "seismic" that the pictures use (0.5 + 0.5 * m), as its own colormap for the colour bars.
HEAT_COLOURS = ListedColormap(matplotlib.colormaps["seismic"](np.linspace(0.5, 1.0, 256)), name="lam_heat")
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
        lr_image: the (C, h, w) LR input in [0, 1]; grayscale is shown as gray RGB, and other channel counts
            than 1 and 3 as the grey of their mean.
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
    """Raise unless ``alpha`` (the LR image's share in a blend) is a number in [0, 1] (Python or numpy); return it as
    a float."""
    # NaN fails the range test too.
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0 <= alpha <= 1:
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
        sr_output: a (C, sH, sW) float image; values are clamped to [0, 1]; channel counts other than 1 and 3
            are shown as the grey of their mean.

    Returns:
        A uint8 (sH, sW, 3) RGB array; grayscale is repeated over the three channels.

    Raises:
        TypeError: if ``sr_output`` is not floating.
        ValueError: if the shape is not (C, sH, sW).

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
    di: float | None,
    lr_size: tuple[int, int],
    title: str | None = None,
    zoom_box: Window | tuple[int, int, int, int] | None = None,
    map_max: float | None = None,
) -> np.ndarray:
    """The demo's five panels in one row, with DI and the LR size, rendered to pixels.

    The pixels of :func:`draw_lam_figure` (see there for the arguments); save them with
    :func:`lam_captum.imageio.save_png`, or save the figure itself with :func:`save_figure`.

    Returns:
        The rendered figure as a uint8 (H, W, 3) RGB array.

    Example:
        >>> panel = np.zeros((8, 8, 3), np.uint8)
        >>> lam_figure(panel, panel, panel, panel, panel, di=1.5, lr_size=(2, 2)).shape[2]
        3
    """
    return render_figure(draw_lam_figure(
        window_image, heat, heat_blend, kde_blend, sr, di=di, lr_size=lr_size, title=title, zoom_box=zoom_box,
        map_max=map_max,
    ))


def draw_lam_figure(
    window_image: np.ndarray,
    heat: np.ndarray,
    heat_blend: np.ndarray,
    kde_blend: np.ndarray,
    sr: Tensor | np.ndarray,
    *,
    di: float | None,
    lr_size: tuple[int, int],
    title: str | None = None,
    zoom_box: Window | tuple[int, int, int, int] | None = None,
    map_max: float | None = None,
) -> Figure:
    """Draw the demo's five panels in one row, with the Diffusion Index, the LR size and a colour bar.

    With ``zoom_box`` (such as :func:`focus_box`'s) the heat map and the heat blend are shown a second
    time, cropped to the box and upscaled, right after the full views; the box is outlined on the blend.

    Args:
        window_image: the SR-size image with the window drawn (:func:`draw_window`).
        heat: the heat map (:func:`heat_map`).
        heat_blend: the heat map blended with the LR input (:func:`blend`).
        kde_blend: the KDE picture blended with the LR input.
        sr: the SR output, a uint8 (sH, sW, 3) picture or a (C, sH, sW) float image.
        di: the Diffusion Index, or None for an all-zero map, which has none (the caption says so).
        lr_size: the LR input's ``(height, width)``; DI depends on it, so it is printed with it.
        title: an optional first line, such as the model's name.
        zoom_box: ``(top, left, height, width)`` in SR pixels to zoom into, or None for no zoom.
        map_max: the map's normalisation, the largest ``|channel sum of the attribution|``, printed
            with the caption when given.

    Returns:
        A matplotlib figure (no pyplot state); see :func:`render_figure` and :func:`save_figure`.

    Raises:
        ValueError: if a panel is not an RGB image, the panels differ in size, ``di`` or ``map_max`` is
            not finite, ``lr_size`` is not two positive ints or ``zoom_box`` is not inside the panels.

    Example:
        >>> panel = np.zeros((8, 8, 3), np.uint8)
        >>> figure = draw_lam_figure(panel, panel, panel, panel, panel, di=1.5, lr_size=(2, 2), zoom_box=(2, 2, 4, 4))
        >>> [axes.get_title() for axes in figure.axes][3:5]
        ['heat map, zoom x2', 'heat blend, zoom x2']
    """
    names = ("window_image", "heat", "heat_blend", "kde_blend", "sr")
    images = (window_image, heat, heat_blend, kde_blend, sr)
    panels = [_rgb_array(image, name) for image, name in zip(images, names)]
    shapes = [panel.shape for panel in panels]
    if len(set(shapes)) != 1:
        raise ValueError(f"the five panels must share one SR size, got shapes {shapes}")
    if di is not None and not math.isfinite(di):
        raise ValueError(f"`di` must be finite, got {di}")
    _check_lr_size(lr_size)
    titles = list(_LAM_PANEL_TITLES)
    if zoom_box is not None:
        zoom_box = Window(*_check_window(tuple(zoom_box), shapes[0][:2]))
        zoomed = [zoom(panels[1], zoom_box), zoom(panels[2], zoom_box)]
        factor = zoomed[0].shape[1] // zoom_box.width
        panels[3:3] = zoomed
        titles[3:3] = [f"heat map, zoom x{factor}", f"heat blend, zoom x{factor}"]
    figure = _panel_figure(len(panels))
    all_axes = figure.subplots(1, len(panels))
    for axes, panel, panel_title in zip(all_axes, panels, titles):
        # "none": PDF and SVG embed each panel at its own resolution instead of resampling it.
        axes.imshow(panel, interpolation="none")
        axes.set_title(panel_title)
        axes.set_axis_off()
    if zoom_box is not None:
        all_axes[2].add_patch(_outline(zoom_box, colour="black", linestyle="--"))
    add_colour_bar(figure, list(all_axes))
    figure.suptitle(_lam_caption(di, lr_size, title, map_max))
    return figure


def channels_last(attribution: Tensor | np.ndarray) -> np.ndarray:
    """LAM's ``(C, H, W)`` or ``(1, C, H, W)`` attribution as a channels-last ``(H, W, C)`` numpy array.

    That is the layout of Captum's ``captum.attr.visualization.visualize_image_attr``.

    Raises:
        ValueError: if ``attribution`` is not one (C, H, W) image.

    Example:
        >>> channels_last(torch.zeros(1, 3, 4, 5)).shape
        (4, 5, 3)
    """
    values = _as_numpy(attribution)
    if values.ndim == 4 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 3:
        raise ValueError(f"`attribution` must be one (C, H, W) or (1, C, H, W) attribution, got shape {values.shape}")
    return np.ascontiguousarray(values.transpose(1, 2, 0))


def focus_box(
    attribution_map: Tensor | np.ndarray,
    window: Window | tuple[int, ...],
    scale: int,
    *,
    fraction: float = 0.99,
    padding: int = 2,
) -> Window:
    """The part of the SR image worth zooming into: where the attribution is, and the window.

    The box holds the fewest LR pixels that carry ``fraction`` of the map's total and the window's
    LR footprint, padded by ``padding`` LR pixels, widened to a square where the image allows.

    Args:
        attribution_map: the (h, w) map in [0, 1].
        window: the LAM window in SR pixels, ``(top, left, size)`` or ``(top, left, height, width)``.
        scale: the super-resolution factor, an int >= 1.
        fraction: the share of the attribution the box must hold, in (0, 1].
        padding: LR pixels added on every side, an int >= 0.

    Returns:
        The box as a :class:`~lam_captum.Window` in SR pixels, inside the SR image.

    Raises:
        TypeError: if ``scale`` is not an int.
        ValueError: if the map is invalid (see :func:`heat_map`), the window is outside the SR image,
            ``fraction`` is outside (0, 1] or ``padding`` is not an int >= 0.

    Example:
        >>> attribution_map = np.zeros((16, 16))
        >>> attribution_map[4, 10] = 1.0
        >>> focus_box(attribution_map, (16, 16, 8), scale=4, padding=1)  # LR rows 4-5, columns 4-10, padded
        Window(top=0, left=12, height=36, width=36)
    """
    _check_scale(scale)
    values = _attribution_array(attribution_map)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"`fraction` must be a number in (0, 1], got {fraction!r}")
    if isinstance(padding, bool) or not isinstance(padding, Integral) or padding < 0:
        raise ValueError(f"`padding` must be an int >= 0, got {padding!r}")
    height, width = values.shape
    window = Window(*_check_window(as_window(window), (height * scale, width * scale)))
    rows = (window.top // scale, -(-(window.top + window.height) // scale))
    columns = (window.left // scale, -(-(window.left + window.width) // scale))
    held = _pixels_holding(values, fraction)
    if held.any():
        held_rows, held_columns = np.flatnonzero(held.any(axis=1)), np.flatnonzero(held.any(axis=0))
        rows = (min(rows[0], int(held_rows[0])), max(rows[1], int(held_rows[-1]) + 1))
        columns = (min(columns[0], int(held_columns[0])), max(columns[1], int(held_columns[-1]) + 1))
    side = max(rows[1] - rows[0], columns[1] - columns[0]) + 2 * padding
    top, bottom = _centred_span(rows, side, height)
    left, right = _centred_span(columns, side, width)
    return Window(top * scale, left * scale, (bottom - top) * scale, (right - left) * scale)


def zoom(picture: Tensor | np.ndarray, box: Window | tuple[int, int, int, int]) -> np.ndarray:
    """Crop a picture to ``box`` and upscale the crop with nearest neighbour.

    The factor is the largest integer that keeps the crop within the picture's own size, so every
    pixel becomes an equal square.

    Args:
        picture: a uint8 (H, W, 3) picture, or a (C, H, W) float image in [0, 1].
        box: ``(top, left, height, width)`` in the picture's pixels, inside it.

    Returns:
        The uint8 (k * height, k * width, 3) zoomed crop, k >= 1.

    Raises:
        ValueError: if the picture is not an image or ``box`` is not inside it.

    Example:
        >>> zoom(np.zeros((16, 16, 3), np.uint8), (4, 4, 4, 8)).shape
        (8, 16, 3)
    """
    picture = _rgb_array(picture, "picture")
    top, left, height, width = _check_window(tuple(box), picture.shape[:2])
    factor = max(1, min(picture.shape[0] // height, picture.shape[1] // width))
    crop = picture[top : top + height, left : left + width]
    return np.repeat(np.repeat(crop, factor, axis=0), factor, axis=1)


def add_colour_bar(figure: Figure, axes: list[Axes], *, label: str = "map (0 none, 1 its max)") -> None:
    """Add the heat maps' colour bar (white 0 to dark red 1, as :func:`heat_map` colours) beside ``axes``.

    Example:
        >>> figure = Figure()
        >>> add_colour_bar(figure, [figure.add_subplot()])
        >>> len(figure.axes)
        2
    """
    bar = figure.colorbar(ScalarMappable(Normalize(0.0, 1.0), HEAT_COLOURS), ax=axes, shrink=0.8, aspect=15)
    bar.set_label(label)


def render_figure(figure: Figure) -> np.ndarray:
    """Draw a matplotlib figure on the Agg canvas and return its pixels.

    Returns:
        A uint8 (H, W, 3) RGB array.

    Example:
        >>> render_figure(Figure(figsize=(2, 1), dpi=50)).shape
        (50, 100, 3)
    """
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(figure: Figure, path: str | Path, format: FigureFormat = "png") -> Path:
    """Write a figure as PNG (pixels), PDF or SVG (vector: text stays text, images stay embedded images).

    PDF fonts are embedded as TrueType (``pdf.fonttype`` 42) and SVG text is written as ``<text>``,
    so labels can be searched, selected and edited in a paper's figure. The file is written atomically.
    Those two settings are matplotlib's global ``rcParams``, set only while the file is written: unlike
    the drawing functions, do not call this from several threads at once.

    Args:
        figure: a matplotlib figure, such as :func:`draw_lam_figure`'s.
        path: the file to write; its suffix is not changed.
        format: ``"png"``, ``"pdf"`` or ``"svg"``.

    Returns:
        The path written.

    Raises:
        ValueError: if ``format`` is not one of :data:`FIGURE_FORMATS`.
        OSError: if the file cannot be written.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> save_figure(Figure(figsize=(1, 1)), folder / "empty.pdf", "pdf").read_bytes()[:5]
        b'%PDF-'
    """
    path = Path(path)
    try:
        write_atomically(path, figure_writer(figure, format))
    except OSError as error:
        raise OSError(f"cannot write `path` {str(path)!r}: {error}") from error
    return path


def figure_writer(figure: Figure, format: FigureFormat = "png") -> Callable[[BinaryIO], None]:
    """A function that writes ``figure`` to a binary stream as :func:`save_figure` does (for sets of files).

    Raises:
        ValueError: if ``format`` is not one of :data:`FIGURE_FORMATS`.

    Example:
        >>> import io
        >>> stream = io.BytesIO()
        >>> figure_writer(Figure(figsize=(1, 1)), "svg")(stream)
        >>> b"<svg" in stream.getvalue()
        True
    """
    if format not in FIGURE_FORMATS:
        raise ValueError(f"`format` must be one of {', '.join(FIGURE_FORMATS)}, got {format!r}")

    def write(stream: BinaryIO) -> None:
        # rcParams are read while the file is written; the context restores them afterwards.
        with matplotlib.rc_context({"pdf.fonttype": 42, "svg.fonttype": "none"}):
            figure.savefig(stream, format=format, dpi=figure.dpi)

    return write


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
    return render_figure(figure)


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
    if values.ndim != 3 or values.shape[0] < 1:
        raise ValueError(f"`{name}` must be a (C, H, W) image, got shape {values.shape}")
    if values.shape[0] not in (1, 3):
        # Two, four or more channels (RGBA, packed RAW, multispectral) have no one colour reading: the grey of
        # their mean shows where the image has content, which is what the pictures put the map on.
        values = values.mean(axis=0, keepdims=True)
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


def _pixels_holding(values: np.ndarray, fraction: float) -> np.ndarray:
    """The mask of the fewest pixels that hold ``fraction`` of the total (all-False for an all-zero map)."""
    if not values.any():
        return np.zeros(values.shape, bool)
    count = int(attribution_area(torch.from_numpy(values), fraction))
    threshold = np.sort(values, axis=None)[::-1][count - 1]
    return (values >= threshold) & (values > 0)


def _centred_span(span: tuple[int, int], side: int, limit: int) -> tuple[int, int]:
    """A run of ``side`` pixels (at most ``limit``) centred on ``span``, shifted to lie within [0, limit)."""
    side = min(side, limit)
    start = min(max((span[0] + span[1] - side) // 2, 0), limit - side)
    return start, start + side


def _check_lr_size(lr_size: tuple[int, int]) -> None:
    if len(lr_size) != 2:
        raise ValueError(f"`lr_size` must be (height, width), got {lr_size!r}")
    if not all(isinstance(side, Integral) and side > 0 for side in lr_size):
        raise ValueError(f"`lr_size` must hold two positive ints, got {lr_size!r}")


def di_text(di: float | None) -> str:
    """DI as the pictures and commands write it: ``DI 12.34``, and for an all-zero map (DI None or NaN), which has
    none, ``no DI: the map is all zero``.

    Example:
        >>> di_text(12.3456), di_text(float("nan"))
        ('DI 12.35', 'no DI: the map is all zero')
    """
    return "no DI: the map is all zero" if di is None or math.isnan(di) else f"DI {di:.2f}"


def _lam_caption(di: float | None, lr_size: tuple[int, int], title: str | None, map_max: float | None) -> str:
    score = di_text(di)
    caption = f"{score} (LR {lr_size[0]}x{lr_size[1]})"
    if map_max is not None:
        if not math.isfinite(map_max):
            raise ValueError(f"`map_max` must be finite, got {map_max}")
        caption += f"; map = |channel sum of the attribution| / {map_max:.3g}"
    return caption if title is None else f"{title}\n{caption}"


def _outline(box: Window, *, colour: str, linestyle: str = "-") -> Rectangle:
    # Pixel centres sit on integer coordinates in imshow, so a pixel's outer edge is half a pixel off.
    corner = (box.left - 0.5, box.top - 0.5)
    return Rectangle(corner, box.width, box.height, fill=False, edgecolor=colour, linestyle=linestyle, linewidth=1.5)


def _panel_figure(panel_count: int) -> Figure:
    panel_inches = min(_PANEL_INCHES, _MAX_FIGURE_INCHES / panel_count)
    size = (panel_inches * panel_count + _COLOUR_BAR_INCHES, panel_inches + 0.8)
    return Figure(figsize=size, dpi=_FIGURE_DPI, layout="constrained")


def signed_map_picture(attribution: Tensor | np.ndarray, scale: int = 1) -> np.ndarray:
    """Draw the signed attribution: the channel sum on "seismic", centred at zero, upscaled with nearest.

    LAM's map is ``|sum over channels|``; this picture keeps the sign. The channel sum is divided by its
    largest magnitude and drawn at ``0.5 + 0.5 * value``: zero is white, positive red (the heat map's
    colours), negative blue. An all-zero attribution is drawn white.

    Args:
        attribution: a ``(C, h, w)`` signed attribution (summed over channels here) or an ``(h, w)`` map
            already summed.
        scale: the super-resolution factor, an int >= 1.

    Returns:
        A uint8 (scale * h, scale * w, 3) RGB array.

    Raises:
        TypeError: if ``scale`` is not an int.
        ValueError: if the attribution is not 2-D or 3-D or holds NaN or inf.

    Example:
        >>> picture = signed_map_picture(np.array([[[1.0, 0.0, -1.0]]]), scale=1)
        >>> picture[0].tolist()
        [[127, 0, 0], [255, 253, 253], [0, 0, 76]]
    """
    _check_scale(scale)
    values = _as_numpy(attribution).astype(np.float64)
    if values.ndim not in (2, 3):
        raise ValueError(f"`attribution` must be (C, h, w) or (h, w), got shape {values.shape}")
    signed = values.sum(axis=0) if values.ndim == 3 else values
    if not np.isfinite(signed).all():
        raise ValueError(f"`attribution` must be finite, got {np.count_nonzero(~np.isfinite(signed))} NaN or inf values")
    peak = np.abs(signed).max()
    return _upscale(_seismic(signed / peak if peak > 0 else signed), scale, Image.Resampling.NEAREST)


def erf_picture(erf: Tensor | np.ndarray, scale: int = 1) -> np.ndarray:
    """Draw an effective receptive field as RepLKNet and MambaIR publish it.

    ``erf ** 0.25`` divided by its maximum, on matplotlib's diverging "RdYlGn" centred at zero (at
    ``0.5 + 0.5 * value``: 0 is the middle yellow, the maximum dark green), as seaborn's
    ``heatmap(center=0)`` draws values in [0, 1]; upscaled with nearest neighbour.

    Args:
        erf: an (h, w) map >= 0, such as :func:`lam_captum.erf.dataset_erf`'s.
        scale: the upscaling factor, an int >= 1 (a 120x120 ERF is small on screen).

    Returns:
        A uint8 (scale * h, scale * w, 3) RGB array.

    Raises:
        TypeError: if ``scale`` is not an int.
        ValueError: if the map is not 2-D, not finite, negative somewhere or all zero.

    Example:
        >>> erf_picture(np.array([[0.0, 1.0]]), scale=2).shape
        (2, 4, 3)
    """
    _check_scale(scale)
    values = _as_numpy(erf).astype(np.float64)
    if values.ndim != 2:
        raise ValueError(f"`erf` must be a 2-D (h, w) map, got shape {values.shape}")
    if not np.isfinite(values).all() or values.min() < 0:
        raise ValueError("`erf` must be finite and >= 0 (a clamped gradient map)")
    if values.max() == 0:
        raise ValueError("`erf` is all zero: there is nothing to draw")
    rooted = values**0.25
    colours = matplotlib.colormaps["RdYlGn"](0.5 + 0.5 * rooted / rooted.max())
    return _upscale((255 * colours[..., :3]).astype(np.uint8), scale, Image.Resampling.NEAREST)


def clip_strip(
    maps: Tensor | np.ndarray,
    clip: Tensor | np.ndarray,
    window: Window | tuple[int, int, int, int],
    frame: int,
    scale: int,
    *,
    alpha: float = 0.5,
    gap: int = 4,
) -> np.ndarray:
    """The heat blends of a clip's frames side by side, the window drawn on the frame that holds it.

    Args:
        maps: ``(T, h, w)`` maps in [0, 1], one per frame (normalised together, so the frames compare).
        clip: the ``(T, C, h, w)`` LR clip in [0, 1] (other channel counts than 1 and 3 as grey).
        window: ``(top, left, height, width)`` in SR pixels.
        frame: the index of the frame whose output holds the window.
        scale: the super-resolution factor, an int >= 1.
        alpha: the LR frame's share in each blend.
        gap: white pixels between two frames.

    Returns:
        A uint8 ``(s * h, T * s * w + (T - 1) * gap, 3)`` RGB array for scale ``s``.

    Raises:
        ValueError: if the shapes do not fit, ``frame`` is not a frame of the clip, the window leaves the SR
            frame or ``gap`` < 0.

    Example:
        >>> clip_strip(np.zeros((3, 2, 2)), torch.zeros(3, 3, 2, 2), (0, 0, 4, 4), 1, 2, gap=2).shape
        (4, 16, 3)
    """
    maps, frames = _as_numpy(maps), _as_numpy(clip)
    if maps.ndim != 3 or frames.ndim != 4 or maps.shape[0] != frames.shape[0] or maps.shape[1:] != frames.shape[2:]:
        raise ValueError(f"`maps` (T, h, w) and `clip` (T, C, h, w) must describe the same frames, got shapes "
                         f"{maps.shape} and {frames.shape}")
    if isinstance(frame, bool) or not isinstance(frame, Integral) or not 0 <= frame < maps.shape[0]:
        raise ValueError(f"`frame` must be an integer from 0 to {maps.shape[0] - 1}, got {frame!r}")
    if not isinstance(gap, Integral) or gap < 0:
        raise ValueError(f"`gap` must be an int >= 0, got {gap!r}")
    blends = [blend(heat_map(frame_map, scale), frame_image, alpha) for frame_map, frame_image in zip(maps, frames)]
    blends[frame] = draw_window(blends[frame], tuple(as_window(window)))
    spacer = np.full((blends[0].shape[0], gap, 3), 255, dtype=np.uint8)
    pieces = [piece for picture in blends for piece in (picture, spacer)][:-1]
    return np.concatenate(pieces, axis=1)


def temporal_profile_chart(profile: Tensor | np.ndarray, frame: int) -> np.ndarray:
    """The temporal profile as a bar chart: each input frame's share of the clip's attribution.

    Args:
        profile: ``(T,)`` shares that sum to 1 (see :class:`lam_captum.video.ClipResult`).
        frame: the index of the frame whose output holds the window, drawn in the heat maps' red.

    Returns:
        The rendered chart as a uint8 (H, W, 3) RGB array.

    Raises:
        ValueError: if ``profile`` is not 1-D and finite, or ``frame`` is not one of its frames.

    Example:
        >>> temporal_profile_chart(np.array([0.2, 0.5, 0.3]), 1).shape
        (250, 400, 3)
    """
    shares = _as_numpy(profile).astype(np.float64)
    if shares.ndim != 1 or shares.size == 0 or not np.isfinite(shares).all():
        raise ValueError(f"`profile` must be a finite 1-D array of shares, got shape {shares.shape}")
    if isinstance(frame, bool) or not isinstance(frame, Integral) or not 0 <= frame < shares.size:
        raise ValueError(f"`frame` must be an integer from 0 to {shares.size - 1}, got {frame!r}")
    figure = Figure(figsize=(4.0, 2.5), dpi=_FIGURE_DPI, layout="constrained")
    axes = figure.add_subplot()
    colours = [HEAT_COLOURS(0.85) if index == frame else (0.6, 0.6, 0.6) for index in range(shares.size)]
    axes.bar(np.arange(shares.size), shares, color=colours)
    axes.set_xticks(np.arange(shares.size))
    axes.set_xlabel(f"input frame (window on frame {frame})")
    axes.set_ylabel("share of attribution")
    axes.set_ylim(0, max(1e-12, shares.max()) * 1.15)
    return render_figure(figure)
