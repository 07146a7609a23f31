"""What every ``lam-captum`` command shares: the LAM flags, and models and images named by flags.

Each command (``lam-captum``, ``compare``, ``erf``) declares its own parser; the LAM settings' flags come
from :class:`~lam_captum.LAMSettings`' fields, and errors from the settings, the model loader and the
image loader are re-worded here to name the flag the user typed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lam_captum._core.settings import PRESETS, LAMSettings, SettingsError, setting_fields


def add_setting_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--preset`` and one flag per :class:`~lam_captum.LAMSettings` field, as its ``metadata`` declares it.

    A flag left out takes the preset's value (the paper's by default), so its parsed value is None.
    """
    parser.add_argument("--preset", choices=tuple(PRESETS), default="official",
                        help="named settings (default: official, the paper's); 'fast' is 32 trapezoid steps, "
                        "within 1%% of DI of a converged integral on the models measured; flags override it")
    for field in setting_fields():
        flag = field.metadata
        parser.add_argument(flag["flag"], *flag["aliases"], dest=field.name, type=flag["type"], default=None,
                            choices=flag["choices"], help=flag["help"])


def settings_from_flags(args: argparse.Namespace) -> LAMSettings:
    """The LAM settings from ``--preset`` and the flags given; an error names the flag instead of the setting.

    Raises:
        ValueError: Naming the flag, e.g. "`--steps` must be an integer >= 1, got 0".
    """
    given = {field.name: getattr(args, field.name) for field in setting_fields() if getattr(args, field.name) is not None}
    try:
        return LAMSettings.preset(args.preset, **given)
    except SettingsError as error:
        flags = {field.name: field.metadata["flag"] for field in setting_fields()} | {"preset": "--preset"}
        raise ValueError(str(error).replace(f"`{error.field}`", f"`{flags[error.field]}`")) from None


def parse_model_args(text: str | None, *, owner: str = "") -> dict[str, object]:
    """The JSON object of ``--model-args`` (``owner`` says which ``--model`` it belongs to, if several).

    Example:
        >>> parse_model_args('{"rgb_range": 255}')
        {'rgb_range': 255}
    """
    flag = f"`--model-args`{f' of `--model` {owner!r}' if owner else ''}"
    try:
        arguments = json.loads(text or "{}")
    except json.JSONDecodeError as error:
        raise ValueError(f"{flag} must be a JSON object, got {text!r} ({error.msg})") from None
    if not isinstance(arguments, dict):
        raise ValueError(f"{flag} must be a JSON object, got {text!r}")
    return arguments


def model_from_flags(spec: str, model_args: str | None, weights: str | None, scale: int | None, *,
                     owner: str = "") -> torch.nn.Module:
    """``--model`` with its ``--model-args`` (JSON), ``--weights`` and ``--scale``, in eval mode.

    The x4 ``default`` model is never rebuilt for ``--scale``: it is trained for x4 only, and the run
    then reports a model whose output does not fit the requested scale.

    Example:
        >>> model_from_flags("torch.nn:Upsample", '{"scale_factor": 2}', None, None)
        Upsample(scale_factor=2.0, mode='nearest')
    """
    from lam_captum.models import load_model

    arguments = parse_model_args(model_args, owner=owner)
    return load_model(spec, arguments, weights=weights, scale=None if spec == "default" else scale)


def input_from_flags(path: str | Path, *, scale: int, crop: tuple[int, int, int, int] | None, lr: bool,
                     grayscale: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The LR input (and the HR image unless ``--lr``); an error about an argument names its flag."""
    from lam_captum.imageio import InputError, load_input

    try:
        return load_input(path, scale=scale, crop=crop, lr=lr, mode="L" if grayscale else "RGB")
    except InputError as error:
        flag = {"crop": "--crop", "scale": "--scale"}[error.argument]
        raise ValueError(str(error).replace(f"`{error.argument}`", f"`{flag}`")) from None
