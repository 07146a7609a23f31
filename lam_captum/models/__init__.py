"""SR models to explain: EDSR, the project's trained default model, and safe loading of weights.

Example:
    >>> import torch
    >>> from lam_captum.models import build_model
    >>> model = build_model("default")
    >>> model(torch.rand(1, 3, 8, 8)).shape
    torch.Size([1, 3, 32, 32])
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from lam_captum.models._loading import check_keys, fit_keys, read_checkpoint
from lam_captum.models._spec import import_factory, instantiate
from lam_captum.models.default import CompactSR
from lam_captum.models.edsr import EDSR, edsr_baseline, edsr_full

__all__ = [
    "EDSR",
    "CompactSR",
    "build_model",
    "builtin_model_names",
    "edsr_baseline",
    "edsr_full",
    "load_model_spec",
    "load_weights",
]

_DEFAULT_WEIGHTS = "default_x4.pt"
_EDSR_PRESETS = {"edsr-baseline": edsr_baseline, "edsr": edsr_full}


def builtin_model_names() -> list[str]:
    """Names that :func:`build_model` and :func:`load_model_spec` accept.

    Returns:
        The sorted names.

    Example:
        >>> builtin_model_names()
        ['default', 'edsr', 'edsr-baseline']
    """
    return sorted(["default", *_EDSR_PRESETS])


def build_model(name: str, *, scale: int = 4, weights: str | Path | None = None, **kwargs: object) -> nn.Module:
    """Build a built-in model in eval mode.

    ``"default"`` is :class:`CompactSR` with the weights trained by this project (x4 only).
    ``"edsr-baseline"`` (16 blocks, 64 channels) and ``"edsr"`` (32 blocks, 256 channels,
    ``res_scale`` 0.1) are :class:`EDSR` models, randomly initialised unless ``weights`` is given.

    Args:
        name: One of :func:`builtin_model_names`.
        scale: Upscaling factor (2, 3, 4 or 8 for EDSR; 4 for ``"default"``).
        weights: A checkpoint to load (see :func:`load_weights`); for ``"default"`` it replaces the
            packaged weights.
        **kwargs: Further :class:`EDSR` arguments, e.g. ``rgb_range=255`` for the EDSR-PyTorch
            release weights. ``"default"`` takes none.

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
    with importlib.resources.as_file(importlib.resources.files(__name__) / "weights" / _DEFAULT_WEIGHTS) as path:
        return load_weights(model, path)


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = True) -> nn.Module:
    """Load a checkpoint into ``model`` without ever running code stored in the file.

    Accepts a plain state dict, a Lightning checkpoint (``{"state_dict": ...}``; a prefix such as
    ``model.`` or ``net.`` that the LightningModule added is removed), a BasicSR checkpoint
    (``{"params_ema": ...}`` preferred over ``{"params": ...}``), and DDP's ``module.`` prefix.
    Half-precision weights are cast to the model's dtype.

    Args:
        model: The model to fill.
        path: The checkpoint file.
        strict: Whether every key of the model and of the checkpoint must match. Shapes must
            always match.

    Returns:
        ``model``, with the weights loaded.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a torch checkpoint, would need arbitrary unpickling, or its
            keys or shapes do not fit the model (the message lists them).

    Example:
        >>> import tempfile, torch
        >>> path = Path(tempfile.mkdtemp()) / "lightning.ckpt"
        >>> torch.save({"state_dict": {"net.weight": torch.ones(1, 1)}, "epoch": 3}, path)
        >>> load_weights(nn.Linear(1, 1, bias=False), path).weight
        Parameter containing:
        tensor([[1.]], requires_grad=True)
    """
    state_dict = fit_keys(read_checkpoint(path), set(model.state_dict()))
    check_keys(state_dict, model, Path(path), strict)
    model.load_state_dict(state_dict, strict=strict)
    return model


def load_model_spec(spec: str, model_args: Mapping[str, object] | None = None) -> nn.Module:
    """Build a model from a built-in name, ``package.module:Class`` or ``path/to/file.py:Class``.

    Args:
        spec: What to build. ``Class`` may also be a function returning a model.
        model_args: Keyword arguments for the class or function (for a built-in name, for
            :func:`build_model`, e.g. ``{"scale": 2, "weights": "edsr_x2.pt"}``).

    Returns:
        The model, in eval mode.

    Raises:
        ValueError: If ``spec`` has no ``:`` and is no built-in name, names something that is not
            a class or function, or ``model_args`` do not fit its signature.
        ImportError: If the module cannot be imported (the message says what failed), the file
            does not exist or lacks the attribute.

    Example:
        >>> load_model_spec("torch.nn:Conv2d", {"in_channels": 3, "out_channels": 3, "kernel_size": 1})
        Conv2d(3, 3, kernel_size=(1, 1), stride=(1, 1))
    """
    model_args = {} if model_args is None else model_args
    if not isinstance(model_args, Mapping):
        raise ValueError(f"`model_args` must be a mapping of argument names to values, got {model_args!r}")
    target, _, attribute = spec.rpartition(":")
    if not target or not attribute:
        if spec in builtin_model_names():
            return build_model(spec, **model_args)
        raise ValueError(
            f"`spec` must be a built-in model name {builtin_model_names()}, 'package.module:Class' "
            f"or 'path/to/file.py:Class', got {spec!r}"
        )
    return instantiate(spec, import_factory(spec, target, attribute), model_args).eval()
