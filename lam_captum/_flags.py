"""What every ``lam-captum`` command shares: the LAM flags, and models and images named by flags.

Each command (``lam-captum``, ``compare``, ``erf``) declares its own parser; the LAM settings' flags come
from :class:`~lam_captum.LAMSettings`' fields, and errors from the settings, the model loader and the
image loader are re-worded here to name the flag the user typed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar

import torch

from lam_captum._core.settings import PRESETS, LAMSettings, SettingsError, setting_fields

# What a bad input raises: exit status 2 and its message. Anything else is unexpected: status 1.
BAD_INPUT = (ValueError, TypeError, OSError, ImportError, torch.OutOfMemoryError)
Outcome = TypeVar("Outcome")


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (the full usage is many lines; ``--help`` shows it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


@contextlib.contextmanager
def flags_named(flags: dict[str, str]) -> Iterator[None]:
    """In a bad-input error of the library, name what the user typed (`` `--model` ``) instead of the
    library's parameter (`` `spec` ``); ``flags`` maps the one to the other."""
    try:
        yield
    except (ValueError, OSError, ImportError) as error:
        message = str(error)
        for name, flag in flags.items():
            message = message.replace(name, flag)
        if message == str(error):
            raise
        raise ValueError(message) from None


def model_flags(scale_given: bool) -> dict[str, str]:
    """The model loader's parameters, as the flags that gave them (``--scale`` only where it was given)."""
    flags = {"`spec`": "`--model`", "`model_args`": "`--model-args`", "`path`": "`--weights`"}
    if scale_given:
        flags["`scale`"] = "`--scale`"
    return flags


def run_reported(prog: str, run: Callable[[], Outcome]) -> tuple[int, Outcome | None]:
    """Run a command's work; every failure becomes one line on stderr, never a traceback.

    Returns:
        ``(0, outcome)``, or ``(status, None)``: 2 for bad input (:data:`BAD_INPUT`), 1 for an unexpected
        error (named by its type), 130 for Ctrl-C.
    """
    try:
        with warnings.catch_warnings():
            warnings.showwarning = functools.partial(_show_warning, prog)
            return 0, run()
    except KeyboardInterrupt:
        pass
    except BAD_INPUT as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 2, None
    except Exception as error:
        print(f"{prog}: error: unexpected {type(error).__name__}: {one_line(error)}", file=sys.stderr)
        return 1, None
    # Said once the interrupted frames are gone, so that a progress bar they held has closed its line.
    print(f"{prog}: interrupted", file=sys.stderr)
    return 130, None


def _show_warning(prog: str, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """A warning of a command as its own line, ``prog: warning: ...``: the code location Python would print
    points into the library or Python's own ``runpy``, nothing a user of the command can act on."""
    print(f"{prog}: warning: {one_line(message) if isinstance(message, BaseException) else message}", file=sys.stderr)


def one_line(error: BaseException) -> str:
    """The error's message on one line (PyTorch's often span several).

    Example:
        >>> one_line(ValueError("shapes differ:\\n  (1, 3)\\n  (1, 4)"))
        'shapes differ: (1, 3) (1, 4)'
    """
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


def add_setting_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--preset`` and one flag per :class:`~lam_captum.LAMSettings` field, as its ``metadata`` declares it.

    A flag left out takes the preset's value (the paper's by default), so its parsed value is None.
    """
    parser.add_argument("--preset", choices=tuple(PRESETS), default="official",
                        help="named settings (default: official, the paper's); 'fast' is 32 trapezoid steps, "
                        "within 1%% of DI of a converged integral on the models measured; flags override it")
    for field in setting_fields():
        flag = field.metadata
        if flag["switch"]:
            parser.add_argument(flag["flag"], *flag["aliases"], dest=field.name, action="store_const", const=True,
                                default=None, help=flag["help"])
        else:
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
                     owner: str = "", scale_flag: bool = True) -> torch.nn.Module:
    """``--model`` with its ``--model-args`` (JSON), ``--weights`` and ``--scale``, in eval mode.

    The x4 ``default`` model is never rebuilt for ``--scale``: it is trained for x4 only, and the run
    then reports a model whose output does not fit the requested scale.

    Example:
        >>> model_from_flags("torch.nn:Upsample", '{"scale_factor": 2}', None, None)
        Upsample(scale_factor=2.0, mode='nearest')
    """
    from lam_captum.models import builtin_model_names, load_model

    arguments = parse_model_args(model_args, owner=owner)
    try:
        return load_model(spec, arguments, weights=weights, scale=None if spec == "default" else scale)
    except ValueError as error:
        if weights is None or scale is not None or spec == "default" or "do not fit" not in str(error) or \
                spec not in builtin_model_names() or "scale" in arguments:
            raise
        # The built-in EDSRs are built x4 unless told: weights of another scale differ in their upsampler only.
        other = next((other for other in (2, 3, 8) if _loads(spec, arguments, weights, other)), None)
        if other is None:
            raise
        give = f"`--scale {other}`" if scale_flag else f"`--model-args '{{\"scale\": {other}}}'`"
        raise ValueError(f"{error}; they are x{other} weights: give {give}") from None


def _loads(spec: str, arguments: dict, weights: str, scale: int) -> bool:
    """Whether the built-in model ``spec`` built for ``scale`` takes the ``weights``."""
    from lam_captum.models import load_model

    try:
        load_model(spec, arguments, weights=weights, scale=scale)
    except ValueError:
        return False
    return True


def input_from_flags(path: str | Path, *, scale: int, crop: tuple[int, int, int, int] | None, lr: bool,
                     grayscale: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The LR input (and the HR image unless ``--lr``); an error about an argument names its flag."""
    from lam_captum.imageio import InputError, load_input

    try:
        return load_input(path, scale=scale, crop=crop, lr=lr, mode="L" if grayscale else "RGB")
    except InputError as error:
        flag = {"crop": "--crop", "scale": "--scale"}[error.argument]
        raise ValueError(str(error).replace(f"`{error.argument}`", f"`{flag}`")) from None


def device_from_flag(name: str | None) -> torch.device:
    """``--device``, checked; by default the GPU when there is one."""
    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"`--device` must be a torch device such as cpu or cuda:0, got {name!r}") from None
    if device.type == "meta":
        raise ValueError(f"`--device` {name!r} holds shapes only, no values, so nothing can be computed there: "
                         "use cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`--device` {name!r} asks for a GPU, but torch sees none")
    return device


def checked_scale(args: argparse.Namespace, scale: int, model_scale: int | None) -> int:
    """The scale to place windows by (``args`` has the flags ``--scale`` and ``--lr``): the model's own, as its
    output on the image showed (``model_scale``; None where the output could not tell, and ``scale`` stands). An
    HR image downscaled by another factor, or a ``--scale`` the model does not have, is an error that names the
    flag before the path is paid for."""
    if model_scale is None or model_scale == scale:
        return scale if model_scale is None else model_scale
    if args.scale is not None:
        raise ValueError(f"`--scale` {args.scale} does not match the model, which is x{model_scale}: give `--scale "
                         f"{model_scale}` or leave it out")
    if not args.lr:
        raise ValueError(f"the model is x{model_scale}, but the HR image was downscaled by {scale} (the model has no "
                         f"`scale` attribute to tell): give `--scale {model_scale}`")
    return model_scale


def check_model_runs(model: torch.nn.Module, spec: str, lr: torch.Tensor, device: torch.device, *,
                      grayscale: bool) -> int | None:
    """Run the model once on the LR image, on ``device``, before the path: a model that cannot run there
    or cannot take the image fails now, in one line, instead of inside the path (one forward pass is a small
    part of a run that makes two per step). Returns the scale its output shows, None where it shows none
    (LAM then names what is wrong with the output)."""
    try:
        model.to(device).eval()
    except Exception as error:
        raise ValueError(f"`--device` {str(device)!r} cannot run the model {spec!r}: "
                         f"{type(error).__name__}: {one_line(error)}") from None
    fed: list[tuple[int, int]] = []

    def record_first_convolution(convolution: torch.nn.Conv2d, inputs: tuple) -> None:
        if not fed and inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() == 4:
            fed.append((convolution.in_channels, inputs[0].shape[1]))

    hooks = [module.register_forward_pre_hook(record_first_convolution)
             for module in model.modules() if isinstance(module, torch.nn.Conv2d)]
    try:
        with torch.inference_mode():
            output = model(lr.unsqueeze(0).to(device))
    except Exception as error:
        raise ValueError(_forward_failure(spec, lr, device, error, fed[0] if fed else None, grayscale)) from None
    finally:
        for hook in hooks:
            hook.remove()
    if not isinstance(output, torch.Tensor) or output.dim() < 4:
        return None
    (height, width), (out_height, out_width) = lr.shape[-2:], output.shape[-2:]
    if out_height % height or out_width % width or out_height // height != out_width // width:
        return None
    return out_height // height


def _forward_failure(spec: str, lr: torch.Tensor, device: torch.device, error: Exception,
                     first_convolution: tuple[int, int] | None, grayscale: bool) -> str:
    """Say why the model failed on the image: the channels when its first convolution got the wrong number."""
    if first_convolution is not None and first_convolution[0] != first_convolution[1]:
        wanted, given = first_convolution
        advice = ": leave out `--grayscale`" if grayscale else ": add `--grayscale`" if wanted == 1 else ""
        return (f"the model {spec!r} does not take {lr.shape[0]}-channel images (its first convolution wants "
                f"{_channels(wanted)}, got {given}){advice}")
    shape = "x".join(map(str, (1, *lr.shape)))
    return (f"the model {spec!r} raised {type(error).__name__} in forward on the {shape} LR image on {device}: "
            f"{one_line(error)}")


def _channels(count: int) -> str:
    return f"{count} channel" if count == 1 else f"{count} channels"
