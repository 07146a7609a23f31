"""The settings of one LAM computation, declared and validated in one place.

:meth:`lam_captum.LAM.attribute` keeps Captum's flat keyword arguments and builds a :class:`LAMSettings`
from them; :func:`lam_captum.explain.explain`, the callback, the command line and the sweep take or store
one. The command-line flags and the study schema are derived from its fields (each field's ``metadata``
holds its flag, aliases and help), so a new setting is declared here, and only here.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np
import torch

from lam_captum.functional._blur import (
    INTEGRATION_METHODS,
    IntegrationMethod,
    PathKernels,
    PathSchedule,
    gaussian_kernel,
    path_kernels,
    path_schedule,
)
from lam_captum.functional._detectors import DETECTOR_NAMES, Detector, DetectorLike, resolve_detector

# A path of more steps than this is refused up front: the cost is one forward and one backward pass of
# the model per step and sample, and at 50 steps the demo's scheme is already within a few percent.
MAX_STEPS = 10_000


class SettingsError(ValueError):
    """A LAM setting that cannot be used; ``field`` names the setting (as :class:`LAMSettings` spells it).

    Callers that expose the setting under another name (a command-line flag, a field of a study file)
    catch it and name the setting their own way.

    Example:
        >>> error = SettingsError("n_steps", "`n_steps` must be an integer >= 1, got 0")
        >>> error.field, str(error)
        ('n_steps', '`n_steps` must be an integer >= 1, got 0')
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _flag(flag: str, kind: type, help: str, *aliases: str, choices: tuple[str, ...] | None = None,
          switch: bool = False) -> dict[str, Any]:
    """A field's command-line flag; a ``switch`` takes no value and sets the field to True."""
    return {"flag": flag, "aliases": aliases, "type": kind, "help": help, "choices": choices, "switch": switch}


@dataclasses.dataclass(frozen=True)
class LAMSettings:
    """How LAM integrates along the blur path: the settings shared by the API, callback, CLI and sweep.

    Numbers may be Python or numpy scalars (stored as Python ``int`` / ``float``). The defaults are the
    paper's: 50 steps, sigma 1.2, a 9x9 kernel, the demo's integration scheme, the gradient detector.

    Args:
        n_steps: Steps along the path (the demo's ``fold``), 1 to :data:`MAX_STEPS`.
        sigma: Blur of the baseline (the path's largest sigma), finite and > 0.
        kernel_size: Odd side of the Gaussian kernel (the demo's ``l``).
        method: ``"official"`` (the demo's scheme) or one of the rules ``"riemann_left"``,
            ``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"``, ``"gausslegendre"``.
        detector: ``"gradient"``, ``"intensity"`` or a callable ``(output (B, C, sH, sW), window) -> (B,)``.
        internal_batch_size: Path steps per model call, or None for a budget measured per device.
        full_image: Compute on the whole image at every step (``LAM.attribute``'s ``crop=False``) instead of
            the smallest verified crop; the same numbers to float rounding, at the full image's cost.

    Raises:
        SettingsError: (a ``ValueError``) naming the first setting that cannot be used.

    Example:
        >>> settings = LAMSettings(n_steps=25)
        >>> settings.n_steps, settings.sigma, settings.method
        (25, 1.2, 'official')
        >>> LAMSettings(sigma=0)
        Traceback (most recent call last):
        ...
        lam_captum._core.settings.SettingsError: `sigma` must be > 0: at sigma 0 the baseline is the input itself, so every attribution is 0
    """

    n_steps: int = dataclasses.field(
        default=50, metadata=_flag("--steps", int, "path steps (default: 50)", "--fold"))
    sigma: float = dataclasses.field(
        default=1.2, metadata=_flag("--sigma", float, "baseline blur (default: 1.2)"))
    kernel_size: int = dataclasses.field(
        default=9, metadata=_flag("--kernel-size", int, "odd Gaussian kernel size (default: 9)", "--l"))
    method: IntegrationMethod = dataclasses.field(
        default="official",
        metadata=_flag("--method", str, "integration rule (default: official, the demo's numbers)",
                       choices=INTEGRATION_METHODS))
    detector: DetectorLike = dataclasses.field(
        default="gradient", metadata=_flag("--detector", str, "what the window measures (default: gradient)",
                                           choices=DETECTOR_NAMES))
    internal_batch_size: int | None = dataclasses.field(
        default=None, metadata=_flag("--internal-batch-size", int, "path steps per model call (default: measured "
                                                              "per device); the numbers do not depend on it"))
    full_image: bool = dataclasses.field(
        default=False, metadata=_flag("--full-image", bool, "compute on the whole image at every step instead of "
                                                            "the smallest verified crop (the same numbers to float "
                                                            "rounding, slower)", switch=True))

    def __post_init__(self) -> None:
        set_field = object.__setattr__
        set_field(self, "n_steps", _integer("n_steps", self.n_steps, 1, "`n_steps` must be an integer >= 1"))
        if self.n_steps > MAX_STEPS:
            raise SettingsError("n_steps", f"`n_steps` must be at most {MAX_STEPS}, got {self.n_steps}: every step "
                                f"costs one forward and one backward pass of the model per image, so this run would "
                                f"take {self.n_steps:,} of each (50 give the paper's numbers)")
        set_field(self, "sigma", _sigma(self.sigma))
        set_field(self, "kernel_size", _kernel_size(self.kernel_size))
        _check_blur(self.sigma, self.kernel_size)
        if self.method not in INTEGRATION_METHODS:
            raise SettingsError("method", f"`method` must be one of {', '.join(INTEGRATION_METHODS)}, "
                                          f"got {self.method!r}")
        if self.method == "riemann_trapezoid" and self.n_steps < 2:
            raise SettingsError("n_steps", f"`n_steps` must be >= 2 for riemann_trapezoid, got {self.n_steps}")
        try:
            resolve_detector(self.detector)
        except ValueError as error:
            raise SettingsError("detector", str(error)) from None
        if not isinstance(self.full_image, (bool, np.bool_)):
            raise SettingsError("full_image", f"`full_image` must be True or False, got {self.full_image!r}")
        set_field(self, "full_image", bool(self.full_image))
        if self.internal_batch_size is not None:
            set_field(self, "internal_batch_size", _integer(
                "internal_batch_size", self.internal_batch_size, 1,
                "`internal_batch_size` must be an integer >= 1 or None"))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LAMSettings:
        """The named settings of :data:`PRESETS`, with some fields replaced.

        Args:
            name: A key of :data:`PRESETS`: ``"official"`` (the paper's numbers) or ``"fast"``.
            **overrides: Fields to change, e.g. ``internal_batch_size=8``. The measured error of a preset
                holds for its own ``n_steps``, ``sigma``, ``kernel_size`` and ``method``.

        Returns:
            The settings, validated like any :class:`LAMSettings`.

        Raises:
            SettingsError: If ``name`` is not a preset (the message lists them) or an override cannot be used.

        Example:
            >>> LAMSettings.preset("official") == LAMSettings()
            True
            >>> LAMSettings.preset("official", n_steps=100).n_steps
            100
            >>> LAMSettings.preset("quick")
            Traceback (most recent call last):
            ...
            lam_captum._core.settings.SettingsError: `preset` must be one of official, fast, got 'quick'
        """
        if not isinstance(name, str) or name not in PRESETS:
            raise SettingsError("preset", f"`preset` must be one of {', '.join(PRESETS)}, got {name!r}")
        unknown = sorted(set(overrides) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise SettingsError(unknown[0], f"`{unknown[0]}` is not a LAM setting; the settings are "
                                            f"{', '.join(field.name for field in dataclasses.fields(cls))}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def path_kernels(self) -> PathKernels:
        """The path's kernels, derivative kernels and weights (see :func:`lam_captum.functional.path_kernels`)."""
        return path_kernels(self.sigma, self.n_steps, self.kernel_size, self.method)

    def path_schedule(self) -> PathSchedule:
        """The path's steps, whose kernels are built per run of steps (see :func:`lam_captum.functional.path_schedule`).

        Example:
            >>> LAMSettings(n_steps=8).path_schedule().kernels(0, 2).points.shape
            torch.Size([2, 9, 9])
        """
        return path_schedule(self.sigma, self.n_steps, self.kernel_size, self.method)

    def resolved_detector(self) -> Detector:
        """The detector as a function ``(output, window) -> (B,)``."""
        return resolve_detector(self.detector)

    def as_kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments of :meth:`lam_captum.LAM.attribute` (values as they are;
        ``full_image`` as its ``crop``).

        Example:
            >>> sorted(LAMSettings().as_kwargs())[:3]
            ['crop', 'detector', 'internal_batch_size']
            >>> LAMSettings(full_image=True).as_kwargs()["crop"]
            False
        """
        kwargs = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        kwargs["crop"] = False if kwargs.pop("full_image") else "auto"
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values (a callable detector by its qualified name), for JSON and logs.

        Example:
            >>> LAMSettings().to_dict()["kernel_size"]
            9
        """
        values = dataclasses.asdict(self)
        if callable(self.detector):
            values["detector"] = getattr(self.detector, "__qualname__", type(self.detector).__name__)
        return values


def setting_fields() -> tuple[dataclasses.Field, ...]:
    """The fields of :class:`LAMSettings`, each with ``metadata`` ``flag``, ``aliases``, ``type``, ``help``,
    ``choices`` (None for an open set) and ``switch`` (a flag without a value, that sets True).

    Example:
        >>> [field.metadata["flag"] for field in setting_fields()][:2]
        ['--steps', '--sigma']
    """
    return dataclasses.fields(LAMSettings)


def _integer(name: str, value: object, minimum: int, message: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise SettingsError(name, f"{message}, got {value!r}")
    return int(value)


def _sigma(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise SettingsError("sigma", f"`sigma` must be a finite number >= 0, got {value!r}")
    if value == 0:
        raise SettingsError("sigma", "`sigma` must be > 0: at sigma 0 the baseline is the input itself, so every "
                                     "attribution is 0")
    return float(value)


def _kernel_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SettingsError("kernel_size", f"`kernel_size` must be an int, got {value!r}")
    if value < 1 or value % 2 == 0:
        raise SettingsError("kernel_size", f"`kernel_size` must be a positive odd integer, got {value}")
    if value == 1:
        raise SettingsError("kernel_size", "`kernel_size` must be at least 3: a 1x1 kernel leaves the image as it is, "
                                           "so the baseline is the input itself and every attribution is 0")
    return int(value)


def _check_blur(sigma: float, kernel_size: int) -> None:
    """Raise where the baseline's kernel is the identity in float32: its centre weight rounds to 1, so the
    blurred baseline is the input itself (sigma below about 0.17) and every attribution would be 0."""
    centre = gaussian_kernel(sigma, kernel_size, dtype=torch.float32)[kernel_size // 2, kernel_size // 2]
    if float(centre) == 1.0:
        raise SettingsError("sigma", f"`sigma` {sigma} is too small to blur: its {kernel_size}x{kernel_size} kernel "
                                     "leaves the image as it is in float32, so the baseline is the input itself and "
                                     "every attribution is 0 (the paper's sigma is 1.2)")


PRESETS: dict[str, LAMSettings] = {
    "official": LAMSettings(),
    "fast": LAMSettings(n_steps=32, method="riemann_trapezoid"),
}
"""Named settings for :meth:`LAMSettings.preset`.

- ``"official"``: the paper's demo (50 steps of its own scheme), the default.
- ``"fast"``: 32 steps of the trapezoid rule (0.64x the official path's model passes), within 1% of the
  Diffusion Index and 2e-2 of the normalised map of a converged integral (400-step Gauss-Legendre), measured
  on five models (the trained default, EDSR-baseline, a plain CNN, an RRDB net, a Swin-style net), real
  photos and 2-3 windows each at 16x16 to 32x32 LR: worst errors 0.51% and 0.017 (the default model).
  The official 50 steps miss that bound on the default model (map error 0.021 even at 100 steps); see
  ``benchmarks/README.md``. Other sigmas and kernel sizes were not measured.
"""
