"""The built-in models: EDSR presets and the project's trained default model."""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from lam_captum.models._loading import load_weights
from lam_captum.models.default import CompactSR
from lam_captum.models.edsr import edsr_baseline, edsr_full

_DEFAULT_WEIGHTS = "default_x4.pt"
_EDSR_PRESETS = {"edsr-baseline": edsr_baseline, "edsr": edsr_full}


def builtin_model_names() -> list[str]:
    """Names that :func:`build_model` and :func:`~lam_captum.models.load_model` accept.

    Returns:
        The sorted names.

    Example:
        >>> builtin_model_names()
        ['default', 'edsr', 'edsr-baseline']
    """
    return sorted(["default", *_EDSR_PRESETS])


def build_model(name: str, *, scale: int = 4, weights: str | Path | None = None, **kwargs: object) -> nn.Module:
    """Build a built-in model in eval mode.

    ``"default"`` is :class:`~lam_captum.models.CompactSR` with the weights trained by this project
    (x4 only). ``"edsr-baseline"`` (16 blocks, 64 channels) and ``"edsr"`` (32 blocks, 256 channels,
    ``res_scale`` 0.1) are :class:`~lam_captum.models.EDSR` models, randomly initialised unless
    ``weights`` is given.

    Args:
        name: One of :func:`builtin_model_names`.
        scale: Upscaling factor (2, 3, 4 or 8 for EDSR; 4 for ``"default"``).
        weights: A checkpoint to load (see :func:`~lam_captum.models.load_weights`); for
            ``"default"`` it replaces the packaged weights.
        **kwargs: Further :class:`~lam_captum.models.EDSR` arguments, e.g. ``rgb_range=255`` for the
            EDSR-PyTorch release weights. ``"default"`` takes none.

    Returns:
        The model, in eval mode.

    Raises:
        ValueError: If ``name``, ``scale`` or ``kwargs`` are not valid, or the weights do not fit.
        FileNotFoundError: If ``weights`` does not exist.

    Example:
        >>> build_model("edsr-baseline", scale=2, rgb_range=255).rgb_range
        255.0
    """
    if name == "default":
        return _build_default(scale, weights, kwargs).eval()
    if name not in _EDSR_PRESETS:
        raise ValueError(f"`name` must be one of {builtin_model_names()}, got {name!r}")
    model = _EDSR_PRESETS[name](scale, **kwargs)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def _build_default(scale: int, weights: str | Path | None, kwargs: Mapping[str, object]) -> nn.Module:
    if scale != 4:
        raise ValueError(f"`scale` must be 4 for the 'default' model (it is trained for x4 only), got {scale!r}")
    if kwargs:
        raise ValueError(f"the 'default' model has a fixed architecture and takes no options, got {sorted(kwargs)}")
    model = CompactSR()
    if weights is not None:
        return load_weights(model, weights)
    packaged = importlib.resources.files(__package__) / "weights" / _DEFAULT_WEIGHTS
    with importlib.resources.as_file(packaged) as path:
        return load_weights(model, path)
