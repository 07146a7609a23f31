"""LAM for video SR: explain one window of one output frame of a clip model, with per-frame numbers and pictures.

The attribution comes from :meth:`lam_captum.LAM.attribute` on a clip ``(1, T, C, H, W)``; this module reads
it frame by frame: the map of each frame (normalised over the whole clip, so frames compare), the Diffusion
Index of each frame and of the clip, and the temporal profile, each input frame's share of the clip's map.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from lam_captum._core._context import evaluating, model_placement
from lam_captum._core.lam import LAM, OutputFrame, check_image
from lam_captum._core.settings import LAMSettings
from lam_captum.explain import DrawnOnce, map_scores, on_cpu, png_files, score_or_none, settings_with
from lam_captum.functional import Window, as_window, negative_share
from lam_captum.imageio import IMAGE_SUFFIXES, images_in
from lam_captum.pictures import check_alpha

Normalisation = Literal["clip", "frame"]
CLIP_PICTURE_NAMES = ("strip", "profile", "window")
CLIP_SAVED_FILES = (*(f"{name}.png" for name in CLIP_PICTURE_NAMES), "attribution.npy", "summary.json")


@dataclasses.dataclass(frozen=True)
class ClipResult(DrawnOnce):
    """Everything one video LAM run produces; each picture is drawn on first use.

    Attributes:
        attribution: ``(T, C, H, W)`` signed attribution on the CPU.
        maps: ``(T, H, W)`` maps ``|sum over channels|`` in [0, 1]: divided by the clip's maximum
            (``normalise="clip"``, frames compare) or each by its own (``"frame"``, the public tool's pictures).
        di: Diffusion Index of the whole clip's map (all frames as one set of pixels); NaN if all zero.
        gini: Gini coefficient of the whole clip's map; NaN if all zero.
        frame_di: ``(T,)`` Diffusion Index of each frame's map (NaN for a frame without attribution).
        profile: ``(T,)`` temporal profile: each frame's share of the clip's map total (sums to 1; all 0 for an
            all-zero attribution).
        negative_share: The share of the clip's map that pushes the detector down.
        delta: Captum's convergence delta, ``sum(attribution) - (D(input) - D(baseline))``.
        lr: ``(T, C, H, W)`` LR clip; ``sr``: ``(C, sH, sW)`` the output frame that holds the window.
        frame: Index of the input frame whose output holds the window.
        hr: ``(T, C, sH, sW)`` HR clip, if known.
    """

    attribution: Tensor
    maps: Tensor
    di: float
    gini: float
    frame_di: Tensor
    profile: Tensor
    negative_share: float
    delta: float
    lr: Tensor
    sr: Tensor
    window: Window
    frame: int
    scale: int
    normalise: Normalisation
    settings: LAMSettings
    alpha: float
    seconds: float
    device: str
    hr: Tensor | None = None
    _drawn: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    _PICTURES = CLIP_PICTURE_NAMES

    def picture(self, name: str) -> np.ndarray:
        """One picture, drawn on first use: ``"strip"`` (every frame's heat blend, the window on its frame),
        ``"profile"`` (the temporal profile as a bar chart) or ``"window"`` (the window on the HR frame, else on
        the SR output frame)."""
        return self._drawn_once(name)

    def _draw(self, name: str) -> np.ndarray:
        from lam_captum import pictures

        if name == "strip":
            return pictures.clip_strip(self.maps, self.lr, self.window, self.frame, self.scale, alpha=self.alpha)
        if name == "profile":
            return pictures.temporal_profile_chart(self.profile, self.frame)
        frame_image = self.hr[self.frame] if self.hr is not None else self.sr
        return pictures.draw_window(pictures.sr_picture(frame_image), self.window)

    def summary(self) -> dict[str, object]:
        """The plain numbers of the run, as written to ``summary.json``."""
        return {
            "di": score_or_none(self.di),
            "gini": score_or_none(self.gini),
            "frame_di": [score_or_none(float(value)) for value in self.frame_di],
            "temporal_profile": self.profile.tolist(),
            "negative_share": self.negative_share,
            "convergence_delta": self.delta,
            "window": self.window._asdict(),
            "frame": self.frame,
            "frames": self.lr.shape[0],
            "lr_size": list(self.lr_size),
            "scale": self.scale,
            "normalise": self.normalise,
            **self.settings.to_dict(),
            "seconds": self.seconds,
            "device": self.device,
        }

    def save(self, folder: str | Path, *, metadata: Mapping[str, object] | None = None) -> Path:
        """Write :data:`CLIP_SAVED_FILES` into ``folder`` as one set (as :meth:`lam_captum.explain.LAMResult.save`).

        Args:
            folder: Where to write; created with its parents if needed.
            metadata: JSON-ready entries written first in ``summary.json`` (the CLI records the frames and model).

        Returns:
            ``folder`` as a :class:`~pathlib.Path`.

        Raises:
            OSError: Naming ``folder``, if it cannot be written.

        Example:
            >>> import tempfile
            >>> model = lambda clip: torch.nn.functional.interpolate(clip.mean(1), scale_factor=2.0)
            >>> result = explain_clip(model, torch.rand(3, 3, 8, 8), (4, 4, 6), n_steps=2)
            >>> folder = result.save(Path(tempfile.mkdtemp()) / "clip")
            >>> sorted(path.name for path in folder.iterdir()) == sorted(CLIP_SAVED_FILES)
            True
        """
        return self._save(folder, metadata, lambda: png_files(self.pictures))


def explain_clip(
    model: Callable[[Tensor], Tensor],
    clip: Tensor,
    window,
    settings: LAMSettings | None = None,
    *,
    frame: int | None = None,
    hr: Tensor | None = None,
    normalise: Normalisation = "clip",
    alpha: float = 0.5,
    device: str | torch.device | None = None,
    show_progress: bool = False,
    **setting_values: object,
) -> ClipResult:
    """Run LAM on one LR clip and read it per frame: maps, DI per frame and of the clip, temporal profile.

    Args:
        model: A video SR network, ``(N, T, C, H, W) -> (N, T, C, sH, sW)`` (clip to clip, BasicVSR style) or
            ``-> (N, C, sH, sW)`` (clip to one frame, EDVR style); moved to ``device`` if it is a module.
        clip: ``(T, C, H, W)`` or ``(1, T, C, H, W)`` LR clip in the range the model expects.
        window: ``(top, left, size)``, ``(top, left, height, width)`` or a :class:`Window`, in SR pixels of the
            output frame.
        settings: The path settings (default: the paper's, :class:`~lam_captum.LAMSettings`).
        frame: The output frame that holds the window (clip-to-clip models); default the centre,
            ``ceil(T / 2) - 1``. A clip-to-frame model's output is the centre frame.
        hr: Optional ``(T, C, sH, sW)`` HR clip (drawn under the window).
        normalise: ``"clip"`` (one maximum for all frames, so they compare) or ``"frame"`` (each frame by its own
            maximum, as the public video LAM tool draws them).
        alpha: Weight of the LR frame in the blends.
        device: Where to compute; default the model's device.
        show_progress: Show a progress bar over the path steps.
        **setting_values: Fields of :class:`~lam_captum.LAMSettings` that replace those of ``settings``.

    Returns:
        A :class:`ClipResult`; ``result.save(folder)`` writes the files the CLI writes.

    Raises:
        ValueError: As :meth:`LAM.attribute`, for a bad ``normalise``, ``alpha`` or clip shape, a model output
            that is neither a clip nor a frame, and an ``hr`` that is not the size of the SR output.

    Example:
        >>> model = lambda clip: torch.nn.functional.interpolate(clip.flatten(0, 1), scale_factor=2.0).unflatten(
        ...     0, clip.shape[:2])
        >>> result = explain_clip(model, torch.rand(4, 1, 8, 8), (4, 4, 6), n_steps=4)
        >>> result.frame, tuple(result.maps.shape), round(float(result.profile.sum()), 6)
        (1, (4, 8, 8), 1.0)
    """
    settings = settings_with(settings, setting_values)
    check_alpha(alpha)
    if normalise not in ("clip", "frame"):
        raise ValueError(f"`normalise` must be 'clip' or 'frame', got {normalise!r}")
    check_image("clip", clip)
    if clip.dim() == 5 and clip.shape[0] == 1:
        clip = clip[0]
    if hr is not None and check_image("hr", hr).dim() == 5 and hr.shape[0] == 1:
        hr = hr[0]
    if clip.dim() != 4:
        raise ValueError(f"`clip` must be one (T, C, H, W) clip, got shape {tuple(clip.shape)}")
    window = as_window(window)
    model_device, model_dtype = model_placement(model)
    device = torch.device(device if device is not None else model_device or "cpu")
    dtype = model_dtype or torch.float32
    if isinstance(model, torch.nn.Module):
        model = model.to(device)
    inputs = clip.unsqueeze(0).to(device=device, dtype=dtype)
    # One forward pass first: it tells the kind of model and whether `hr` fits, before the path is paid for.
    target, sr = _output_frame(model, inputs, frame)
    if hr is not None and (hr.dim() != 4 or hr.shape[0] != clip.shape[0] or hr.shape[-2:] != sr.shape[-2:]):
        raise ValueError(f"the HR clip `hr` must be ({clip.shape[0]}, C, {sr.shape[-2]}, {sr.shape[-1]}): the clip's "
                         f"frames at the size of the model's output, got {tuple(hr.shape)}")
    started = time.perf_counter()
    attribution, delta = LAM(model).attribute(
        inputs, window, **settings.as_kwargs(), frame=target.index if target.chosen else None,
        return_convergence_delta=True, show_progress=show_progress,
    )
    seconds = time.perf_counter() - started
    attribution = on_cpu(attribution[0])
    magnitude = attribution.sum(dim=1).abs()
    di, clip_gini = map_scores(magnitude)
    return ClipResult(
        attribution=attribution, maps=_normalised(magnitude, normalise), di=di, gini=clip_gini,
        frame_di=torch.tensor([map_scores(frame_map)[0] for frame_map in magnitude], dtype=torch.float64),
        profile=temporal_profile(attribution),
        negative_share=float(negative_share(attribution.transpose(0, 1).flatten(1, 2))), delta=float(delta[0]),
        lr=clip.detach().cpu().float(), sr=sr, window=window, frame=target.index, scale=sr.shape[-1] // clip.shape[-1],
        normalise=normalise, settings=settings, alpha=alpha, seconds=seconds, device=str(device),
        hr=hr.detach().cpu().float() if hr is not None else None,
    )


def temporal_profile(attribution: Tensor) -> Tensor:
    """Each frame's share of a clip's LAM map total, ``(T,)`` in float64; all zero for an all-zero attribution.

    The map is ``|sum over channels|`` of the ``(T, C, H, W)`` attribution, as for images.

    Example:
        >>> temporal_profile(torch.tensor([[[[1.0]]], [[[-3.0]]]])).tolist()
        [0.25, 0.75]
    """
    if attribution.dim() != 4:
        raise ValueError(f"`attribution` must be a (T, C, H, W) clip attribution, got shape {tuple(attribution.shape)}")
    per_frame = attribution.to(torch.float64).sum(dim=1).abs().sum(dim=(1, 2))
    total = per_frame.sum()
    return per_frame / total if total > 0 else per_frame


def _normalised(magnitude: Tensor, normalise: Normalisation) -> Tensor:
    peaks = magnitude.amax() if normalise == "clip" else magnitude.amax(dim=(1, 2), keepdim=True)
    # A frame (or clip) with no attribution stays 0 instead of 0 / 0.
    return magnitude / torch.where(peaks > 0, peaks, torch.ones_like(peaks))


def _output_frame(model: Callable[[Tensor], Tensor], inputs: Tensor, frame: int | None) -> tuple[OutputFrame, Tensor]:
    """Which output frame holds the window, and that frame of the SR output ``(C, sH, sW)``."""
    target = OutputFrame.of(inputs, frame)
    with torch.inference_mode(), evaluating(model):
        output = model(inputs)
    sr = target.select(output, inputs)
    if not isinstance(sr, Tensor) or sr.dim() != 4:
        raise ValueError(f"the model must return a tensor (N, T, C, sH, sW) or (N, C, sH, sW), got {type(sr).__name__}")
    if output.dim() == 4:
        # A clip-to-frame model's output is its centre frame, whatever `frame` said (select has warned).
        target = OutputFrame.of(inputs, None)
    return target, sr[0].float().cpu()


def frame_paths(folder: str | Path) -> list[Path]:
    """The image files of a folder of frames, in the order of their names (``frame_0001.png``, ...).

    Raises:
        FileNotFoundError: If ``folder`` is not a folder.
        ValueError: If it holds no image file.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in ("b.png", "a.png", "notes.txt"):
        ...     _ = (folder / name).write_bytes(b"")
        >>> [path.name for path in frame_paths(folder)]
        ['a.png', 'b.png']
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"`frames` {str(folder)!r} is not an existing folder")
    paths = images_in(folder)
    if not paths:
        raise ValueError(f"`frames` {str(folder)!r} holds no image file ({', '.join(IMAGE_SUFFIXES)})")
    return paths
