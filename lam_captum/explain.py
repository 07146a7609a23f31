"""One call for notebooks and scripts: explain one window of one image, with numbers and pictures."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from lam_captum._atomic import check_writable_folder, files_listed, write_files_atomically
from lam_captum._core._context import evaluating, model_placement
from lam_captum._core._windows import as_window_list
from lam_captum._core.lam import LAM, check_dtype, check_image, naming_dtype_errors
from lam_captum._core.settings import LAMSettings
from lam_captum.functional import (
    Window,
    as_window,
    attribution_area,
    attribution_map,
    diffusion_index,
    gini,
    negative_share,
)
from lam_captum.functional._kde import DegenerateMapError
from lam_captum.imageio import write_png
from lam_captum.pictures import FIGURE_FORMATS, check_alpha

PICTURE_NAMES = ("window", "heat", "heat_blend", "kde_blend", "sr", "figure")
# Pictures drawn on request only, not by default: the signed attribution on a colour map centred at zero, and
# the heat map and heat blend zoomed to where 99% of the attribution is.
EXTRA_PICTURES = ("signed", "zoom")
SAVED_FILES = (*(f"{name}.png" for name in PICTURE_NAMES), "attribution.npy", "summary.json")


class DrawnOnce:
    """What the results of :func:`explain` and :func:`~lam_captum.video.explain_clip` share: the LR size,
    pictures drawn on first use and kept, and saving them with the attribution and the summary as one set.

    A subclass is a frozen dataclass with ``attribution`` and ``lr`` tensors, a ``_drawn`` dict and a
    ``summary()``; it names its pictures in ``_PICTURES`` (those of :attr:`pictures`) and ``_ON_REQUEST`` (drawn
    only when asked for), and draws one in ``_draw(name)``.
    """

    _PICTURES: tuple[str, ...] = ()
    _ON_REQUEST: tuple[str, ...] = ()
    attribution: Tensor
    lr: Tensor
    _drawn: dict[str, np.ndarray]

    @property
    def lr_size(self) -> tuple[int, int]:
        return (self.lr.shape[-2], self.lr.shape[-1])

    @property
    def pictures(self) -> dict[str, np.ndarray]:
        """The pictures as ``(H, W, 3)`` uint8 arrays, keyed by name (those drawn on request left out)."""
        return {name: self.picture(name) for name in self._PICTURES}

    def picture(self, name: str) -> np.ndarray:
        return self._drawn_once(name)

    def _drawn_once(self, name: str) -> np.ndarray:
        names = self._PICTURES + self._ON_REQUEST
        if name not in names:
            raise ValueError(f"`name` must be one of {', '.join(names)}, got {name!r}")
        if name not in self._drawn:
            self._drawn[name] = self._draw(name)
        return self._drawn[name]

    def _draw(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def _save(self, folder: str | Path, metadata: Mapping[str, object] | None,
              pictures: Callable[[], dict[str, Callable]]) -> Path:
        """Write ``pictures()`` (file name -> writer), ``attribution.npy`` and ``summary.json`` into ``folder``
        as one set: the folder checked and every picture drawn before a file is touched."""
        folder = check_writable_folder(folder, "folder")
        files = pictures()
        files["attribution.npy"] = functools.partial(np.save, arr=self.attribution.numpy())
        names = sorted([*files, "summary.json"])
        summary = json.dumps({**(metadata or {}), **self.summary(), "files": names}, indent=2) + "\n"
        files["summary.json"] = lambda stream: stream.write(summary.encode())
        try:
            return write_files_atomically(folder, files, stale=_earlier_result_files(Path(folder)))
        except OSError as error:
            raise OSError(f"cannot write the results to `folder` {str(folder)!r}: {error.strerror or error}") from error


def _earlier_result_files(folder: Path) -> list[str]:
    """The files the result saved last into ``folder`` wrote, as its ``summary.json`` lists them: those this
    save does not write are removed, so that the folder holds one run's results (a clip's strip beside an
    image's heat map would read as one run). Only names a result can have count: a file of the user's, or a
    summary that lists none (or another tool's), removes nothing."""
    from lam_captum.video import ClipResult

    kinds = (LAMResult, ClipResult)
    ours = {*(f"{name}.png" for kind in kinds for name in (*kind._PICTURES, *kind._ON_REQUEST)),
            *(f"figure.{form}" for form in FIGURE_FORMATS)}
    return files_listed(folder / "summary.json", "files", ours)


def png_files(pictures: Mapping[str, np.ndarray]) -> dict[str, Callable]:
    """``<name>.png`` -> a writer of that picture, for :func:`~lam_captum._atomic.write_files_atomically`."""
    return {f"{name}.png": functools.partial(write_png, picture) for name, picture in pictures.items()}


@dataclasses.dataclass(frozen=True)
class LAMResult(DrawnOnce):
    """Everything one LAM run produces; each picture is drawn on first use.

    Attributes:
        attribution: ``(C, H, W)`` signed attribution on the CPU.
        map: ``(H, W)`` normalised map in [0, 1].
        di: Diffusion Index (depends on the LR size: report ``lr_size`` with it); NaN for an all-zero map,
            which has none (``summary.json`` writes null).
        gini: Gini coefficient of the map; NaN for an all-zero map.
        area: Fewest LR pixels that hold half of the map's total; None for an all-zero map (``summary.json``
            writes null).
        delta: Captum's convergence delta, ``sum(attribution) - (D(input) - D(baseline))``.
        lr: ``(C, H, W)`` LR input; ``sr``: ``(C, sH, sW)`` SR output; ``hr``: the HR image, if known.
        settings: The :class:`~lam_captum.LAMSettings` the attribution was computed with.
    """

    attribution: Tensor
    map: Tensor
    di: float
    gini: float
    negative_share: float
    area: int | None
    delta: float
    lr: Tensor
    sr: Tensor
    window: Window
    scale: int
    settings: LAMSettings
    alpha: float
    seconds: float
    device: str
    hr: Tensor | None = None
    _drawn: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    _PICTURES = PICTURE_NAMES
    _ON_REQUEST = EXTRA_PICTURES

    def picture(self, name: str) -> np.ndarray:
        """One picture, drawn on first use: ``"window"`` (on the HR image, else the bicubic-upscaled LR
        input, since an SR output may show little), ``"heat"``, ``"heat_blend"``, ``"kde_blend"``, ``"sr"``
        or ``"figure"`` (the five in one row, with DI and the LR size, a zoom and a colour bar); and on
        request ``"signed"`` (the signed channel sum on a colour map centred at zero: red positive, blue
        negative) and ``"zoom"`` (the heat map and the heat blend side by side, cropped to the box that
        holds 99% of the attribution and the window, upscaled: a small map reads at a glance)."""
        return self._drawn_once(name)

    def _draw(self, name: str) -> np.ndarray:
        from lam_captum import pictures

        if name == "window":
            if self.hr is not None:
                return pictures.draw_window(pictures.sr_picture(self.hr), self.window)
            return pictures.draw_window(pictures.upscale_bicubic(self.lr, self.scale), self.window)
        if name == "heat":
            return pictures.heat_map(self.map, self.scale)
        if name == "heat_blend":
            return pictures.blend(self.picture("heat"), self.lr, self.alpha)
        if name == "kde_blend":
            return pictures.blend(self._density_picture(), self.lr, self.alpha)
        if name == "sr":
            return pictures.sr_picture(self.sr)
        if name == "signed":
            return pictures.signed_map_picture(self.attribution, self.scale)
        if name == "zoom":
            box = pictures.focus_box(self.map, self.window, self.scale)
            heat, heat_blend = pictures.zoom(self.picture("heat"), box), pictures.zoom(self.picture("heat_blend"), box)
            gap = np.full((heat.shape[0], max(2, heat.shape[1] // 32), 3), 255, np.uint8)
            return np.concatenate([heat, gap, heat_blend], axis=1)
        return pictures.render_figure(self.draw_figure())

    def draw_figure(self) -> Figure:
        """The ``"figure"`` picture as a matplotlib figure: the five panels, a zoom into where the map holds 99%
        of the attribution, a colour bar and the map's normalisation; :func:`~lam_captum.pictures.save_figure`
        writes it as PNG, PDF or SVG."""
        from lam_captum import pictures

        panels = [self.picture(panel) for panel in PICTURE_NAMES[:-1]]
        return pictures.draw_lam_figure(
            *panels, di=score_or_none(self.di), lr_size=self.lr_size,
            zoom_box=pictures.focus_box(self.map, self.window, self.scale),
            map_max=float(self.attribution.sum(dim=0).abs().max()),
        )

    def _density_picture(self) -> np.ndarray:
        """The KDE picture of the map; the heat map where the map has no density: an all-zero map (zero
        everywhere, the heat map's colour of zero) or one on a single pixel or line (a KDE of no width)."""
        from lam_captum import pictures

        if not self.map.any():
            return self.picture("heat")
        try:
            return pictures.kde_picture(self.map, self.scale)
        except DegenerateMapError:
            return self.picture("heat")

    def summary(self) -> dict[str, object]:
        """The plain numbers of the run, as written to ``summary.json``."""
        return {
            "di": score_or_none(self.di),
            "gini": score_or_none(self.gini),
            "negative_share": self.negative_share,
            "area_50": self.area,
            "convergence_delta": self.delta,
            "window": self.window._asdict(),
            "lr_size": list(self.lr_size),
            "scale": self.scale,
            **self.settings.to_dict(),
            "seconds": self.seconds,
            "device": self.device,
        }

    def save(
        self,
        folder: str | Path,
        *,
        metadata: Mapping[str, object] | None = None,
        extra_pictures: Sequence[str] = (),
        figure_formats: Sequence[str] = (),
    ) -> Path:
        """Write :data:`SAVED_FILES` into ``folder``: the pictures (PNG), the raw attribution
        (``attribution.npy``) and ``summary.json``, as one set.

        The folder is checked first and every picture is drawn before a file is touched; the files then
        replace the previous ones all together (see :func:`lam_captum._atomic.write_files_atomically`).
        A failure (a folder that cannot be written, a picture that cannot be drawn, a full disk, Ctrl-C)
        leaves the previous results untouched. Other files in ``folder`` are kept.

        Args:
            folder: Where to write; created with its parents if needed.
            metadata: JSON-ready entries written first in ``summary.json``, before :meth:`summary`'s
                (the CLI records the image, its crop, the model and its weights).
            extra_pictures: Pictures of :data:`EXTRA_PICTURES` to write as well, as ``<name>.png``.
            figure_formats: Also write the figure as ``figure.pdf`` / ``figure.svg`` (vector; see
                :func:`lam_captum.pictures.save_figure`).

        Returns:
            ``folder`` as a :class:`~pathlib.Path`.

        Raises:
            OSError: Naming ``folder``, if it cannot be written.
            TypeError: If ``metadata`` holds a value JSON cannot write.

        Example:
            >>> import tempfile
            >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2))
            >>> result = explain(model, torch.rand(3, 8, 8), (4, 4, 4), n_steps=2)
            >>> folder = result.save(Path(tempfile.mkdtemp()) / "lam", metadata={"model": "two layers"})
            >>> sorted(path.name for path in folder.iterdir()) == sorted(SAVED_FILES)
            True
            >>> json.loads((folder / "summary.json").read_text())["model"]
            'two layers'
        """
        from lam_captum.pictures import figure_writer


        def pictures() -> dict[str, Callable]:
            drawn = {**self.pictures, **{name: self.picture(name) for name in extra_pictures}}
            files = png_files(drawn)
            for format in dict.fromkeys(figure_formats):
                if format != "png":
                    files[f"figure.{format}"] = figure_writer(self.draw_figure(), format)
            return files

        return self._save(folder, metadata, pictures)


def explain(
    model: Callable[[Tensor], Tensor],
    lr: Tensor,
    window,
    settings: LAMSettings | None = None,
    *,
    hr: Tensor | None = None,
    alpha: float = 0.5,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    show_progress: bool = False,
    **setting_values: object,
) -> LAMResult:
    """Run LAM on one LR image and summarise it: attribution, map, DI, Gini, SR output, delta, pictures.

    Args:
        model: The SR network (moved to ``device`` if it is a module).
        lr: ``(C, H, W)`` or ``(1, C, H, W)`` LR image in the range the model expects.
        window: ``(top, left, size)``, ``(top, left, height, width)`` or a :class:`Window`, in SR pixels.
        settings: The path settings (default: the paper's, :class:`~lam_captum.LAMSettings`).
        hr: Optional HR image (drawn under the window instead of the SR output).
        alpha: Weight of the LR image in the blends.
        device: Where to compute; default the model's device (the GPU if the model is there).
        dtype: The computation dtype: default the model's parameter dtype, float32 for a function without
            parameters (:meth:`LAM.attribute` gives a function the inputs' dtype; here the image is cast).
        show_progress: Show a progress bar over the path steps.
        **setting_values: Fields of :class:`~lam_captum.LAMSettings` (``n_steps=25``, ...) that replace
            those of ``settings``.

    Returns:
        A :class:`LAMResult`; ``result.save(folder)`` writes the files the CLI writes.

    Raises:
        ValueError: As :meth:`LAM.attribute`, for a bad ``alpha`` or image shape, and for an ``hr`` that is not
            the size of the SR output (an HR image downscaled by another factor than the model's).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2))
        >>> result = explain(model, torch.rand(3, 16, 16), (8, 8, 8), n_steps=4)
        >>> result.scale, result.map.shape, 0 <= result.di <= 100
        (2, torch.Size([16, 16]), True)
    """
    settings = settings_with(settings, setting_values)
    return explain_windows(model, lr, [as_window(window)], settings, hr=hr, alpha=alpha, device=device, dtype=dtype,
                           show_progress=show_progress)[0]


def explain_windows(
    model: Callable[[Tensor], Tensor],
    lr: Tensor,
    windows: Sequence,
    settings: LAMSettings | None = None,
    *,
    hr: Tensor | None = None,
    alpha: float = 0.5,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    show_progress: bool = False,
    **setting_values: object,
) -> list[LAMResult]:
    """:func:`explain` for K windows of one image, sharing the forward passes of the path.

    Each path step runs the model once for all K windows (:meth:`LAM.attribute_windows`), so K windows
    cost about one forward pass and K input gradients per step instead of K of each; the numbers are those
    of :func:`explain` per window. ``seconds`` of each result is the shared run's time divided by K.

    Args:
        windows: K >= 1 windows, each as :func:`explain` takes one.
        model, lr, settings, hr, alpha, device, dtype, show_progress, setting_values: As :func:`explain`.

    Returns:
        One :class:`LAMResult` per window, in order.

    Raises:
        ValueError: As :func:`explain`, and for an empty ``windows``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2))
        >>> results = explain_windows(model, torch.rand(3, 16, 16), [(8, 8, 8), (0, 16, 8)], n_steps=4)
        >>> [result.window.left for result in results]
        [8, 16]
    """
    settings = settings_with(settings, setting_values)
    check_alpha(alpha)
    check_image("lr", lr)
    check_dtype(dtype)
    if lr.dim() == 4 and lr.shape[0] == 1:
        lr = lr[0]
    if hr is not None and check_image("hr", hr).dim() == 4 and hr.shape[0] == 1:
        hr = hr[0]
    if lr.dim() != 3:
        raise ValueError(f"`lr` must be one (C, H, W) image, got shape {tuple(lr.shape)}")
    windows = as_window_list(windows)
    model_device, model_dtype = model_placement(model)
    device = torch.device(device if device is not None else model_device or "cpu")
    if isinstance(model, torch.nn.Module):
        model = model.to(device)
    inputs = lr.unsqueeze(0).to(device=device, dtype=dtype or model_dtype or torch.float32)
    # The SR output first: one forward pass that tells whether `hr` fits, before the whole path is paid for.
    with naming_dtype_errors(model, inputs.dtype):
        sr = _super_resolve(model, inputs)
    if hr is not None and tuple(hr.shape[-2:]) != tuple(sr.shape[-2:]):
        raise ValueError(f"the model turns the {lr.shape[-2]}x{lr.shape[-1]} input into {sr.shape[-2]}x{sr.shape[-1]}, "
                         f"but the HR image `hr` is {hr.shape[-2]}x{hr.shape[-1]}: downscale it by the model's own "
                         "factor")
    started = time.perf_counter()
    lam = LAM(model)
    options = {**settings.as_kwargs(), "return_convergence_delta": True, "dtype": dtype, "show_progress": show_progress}
    if len(windows) == 1:
        attributions, deltas = lam.attribute(inputs, windows[0], **options)
    else:
        attributions, deltas = lam.attribute_windows(inputs, windows, **options)
    seconds = (time.perf_counter() - started) / len(windows)
    lr, hr = lr.detach().cpu().float(), hr.detach().cpu().float() if hr is not None else None
    return [_result(on_cpu(attribution), float(delta), window, lr, sr, hr, settings, alpha, seconds, device)
            for attribution, delta, window in zip(attributions, deltas, windows)]


def on_cpu(attribution: Tensor) -> Tensor:
    """The attribution on the CPU, in float32 where it was computed in a half type (a bfloat16 model's): numpy,
    the pictures and ``attribution.npy`` have no bfloat16, and float32 holds either type exactly."""
    attribution = attribution.detach().cpu()
    return attribution.float() if attribution.dtype in (torch.float16, torch.bfloat16) else attribution


def _result(attribution: Tensor, delta: float, window: Window, lr: Tensor, sr: Tensor, hr: Tensor | None,
            settings: LAMSettings, alpha: float, seconds: float, device: torch.device) -> LAMResult:
    lam_map = attribution_map(attribution)
    di, map_gini = map_scores(lam_map)
    return LAMResult(
        attribution=attribution, map=lam_map, di=di, gini=map_gini, negative_share=float(negative_share(attribution)),
        area=int(attribution_area(lam_map)) or None, delta=delta, lr=lr, sr=sr, window=window,
        scale=sr.shape[-1] // lr.shape[-1], settings=settings, alpha=alpha, seconds=seconds, device=str(device), hr=hr,
    )


def settings_with(settings: LAMSettings | None, values: dict[str, object]) -> LAMSettings:
    """``settings`` (default :class:`~lam_captum.LAMSettings`) with the fields in ``values`` replaced.

    Raises:
        TypeError: If ``settings`` is not a LAMSettings or ``values`` names no field of it.

    Example:
        >>> settings_with(None, {"n_steps": 8}).n_steps
        8
    """
    if settings is None:
        settings = LAMSettings()
    if not isinstance(settings, LAMSettings):
        raise TypeError(f"`settings` must be a LAMSettings or None, got {type(settings).__name__}")
    unknown = sorted(set(values) - {field.name for field in dataclasses.fields(LAMSettings)})
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {unknown}: LAM's settings are "
                        f"{[field.name for field in dataclasses.fields(LAMSettings)]}")
    return dataclasses.replace(settings, **values) if values else settings


def map_scores(values: Tensor) -> tuple[float, float]:
    """DI and Gini of one map of any shape (a clip's maps count as one); NaN for an all-zero map, whose
    cause LAM has already warned about.

    Example:
        >>> map_scores(torch.zeros(2, 3))
        (nan, nan)
    """
    if not values.any():
        return math.nan, math.nan
    flat = values.flatten()
    return float(diffusion_index(flat)), float(gini(flat))


def score_or_none(value: float) -> float | None:
    """A score for JSON and captions: None where it is undefined (NaN), never a number it lacks.

    Example:
        >>> score_or_none(float("nan")) is None, score_or_none(1.5)
        (True, 1.5)
    """
    return None if math.isnan(value) else value


def _super_resolve(model: Callable[[Tensor], Tensor], inputs: Tensor) -> Tensor:
    with torch.inference_mode(), evaluating(model):
        return model(inputs)[0].float().cpu()
