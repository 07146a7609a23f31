"""The conditions every LAM computation runs under, whatever the caller's state."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
from collections.abc import Callable, Iterator

import captum
import torch
from torch import nn

# Folders whose stack frames a warning skips to reach the user's call: ours, and Captum's decorators around
# `attribute`.
_LIBRARY_FOLDERS = (os.path.dirname(os.path.dirname(__file__)) + os.sep, os.path.dirname(captum.__file__) + os.sep)


def outside_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside lam_captum and Captum.

    Pass it to :func:`warnings.warn` directly: level 1 is the function that warns. The user's call may lie at
    any depth below it (a crop's or a window group's inner ``attribute``), which a fixed level cannot follow.
    """
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_FOLDERS):
        level, frame = level + 1, frame.f_back
    return level


def owning_module(forward_func: Callable) -> nn.Module | None:
    """The module behind a forward function: the module itself or the owner of a bound ``forward``."""
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


@dataclasses.dataclass
class _Hold:
    """One module held in eval mode by running LAM calls."""

    calls: int  # running LAM calls that hold the module in eval mode
    training: bool  # its mode before the first of them


class _ModeHolds:
    """Which modules LAM holds in eval mode, how many running calls hold each, and the mode each had before.

    Two threads may run LAM on one model at once (a callback beside a notebook, a server). If each call
    saved and restored the modes on its own, the second would save the first's eval mode and restore it
    last, leaving a training model in eval mode. Here the first call to hold a module saves its mode and
    the last one to let go restores it; a lock makes each step atomic.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entrant: a module's own train() override may run LAM
        self._holds: dict[nn.Module, _Hold] = {}

    def hold(self, module: nn.Module) -> list[nn.Module]:
        with self._lock:
            held = list(module.modules())
            for submodule in held:
                self._holds.setdefault(submodule, _Hold(0, submodule.training)).calls += 1
            module.eval()
        return held

    def release(self, held: list[nn.Module]) -> None:
        with self._lock:
            for submodule in held:
                hold = self._holds[submodule]
                hold.calls -= 1
                if hold.calls == 0:
                    submodule.training = hold.training
                    del self._holds[submodule]


_MODE_HOLDS = _ModeHolds()


def model_placement(forward_func: Callable | None) -> tuple[torch.device | None, torch.dtype | None]:
    """The device and dtype of the model's first floating parameter; ``(None, None)`` for a function without one.

    Example:
        >>> model_placement(torch.nn.Linear(2, 2).double())
        (device(type='cpu'), torch.float64)
    """
    module = owning_module(forward_func)
    for parameter in module.parameters() if module is not None else ():
        if parameter.is_floating_point():
            return parameter.device, parameter.dtype
    return None, None


@contextlib.contextmanager
def eval_mode(module: nn.Module | None) -> Iterator[None]:
    """Put every submodule in eval mode and give each its own previous mode back afterwards.

    The demo never calls ``eval()``: BatchNorm and dropout in train mode make the samples of a batched
    path interact. Restoring per submodule keeps deliberate mixes (a frozen, always-eval part) intact.
    Safe when several threads use the same model: the modes come back when the last of them is done.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Dropout()).train()
        >>> with eval_mode(model):
        ...     model.training
        False
        >>> model.training
        True
    """
    if module is None:
        yield
        return
    held = _MODE_HOLDS.hold(module)
    try:
        yield
    finally:
        _MODE_HOLDS.release(held)


@contextlib.contextmanager
def gradient_context(forward_func: Callable, device: torch.device) -> Iterator[None]:
    """Gradients on, inference mode, autocast and TF32 off, the model in eval mode.

    Lightning validates under ``no_grad`` and ``trainer.validate()`` under ``inference_mode``; mixed
    precision wraps the loop in autocast. LAM needs input gradients in full precision in all of them: on a
    GPU torch runs float32 convolutions in TF32 by default (10 bits of mantissa), which moves the numbers by
    about 1e-3 of their maximum and makes a crop disagree with the full image by as much.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        if device.type in ("cpu", "cuda", "xpu", "mps"):
            stack.enter_context(torch.autocast(device_type=device.type, enabled=False))
        if device.type == "cuda":
            stack.enter_context(_full_float32())
        stack.enter_context(eval_mode(owning_module(forward_func)))
        yield


@contextlib.contextmanager
def _full_float32() -> Iterator[None]:
    """TF32 off for convolutions and matrix products, given back as it was."""
    convolutions, products = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = convolutions, products
