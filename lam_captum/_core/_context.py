"""The conditions every LAM computation runs under, whatever the caller's state."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn


def owning_module(forward_func: Callable) -> nn.Module | None:
    """The module behind a forward function: the module itself or the owner of a bound ``forward``."""
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


@contextlib.contextmanager
def eval_mode(module: nn.Module | None) -> Iterator[None]:
    """Put every submodule in eval mode and give each its own previous mode back afterwards.

    The demo never calls ``eval()``: BatchNorm and dropout in train mode make the samples of a batched
    path interact. Restoring per submodule keeps deliberate mixes (a frozen, always-eval part) intact.
    """
    if module is None:
        yield
        return
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training


@contextlib.contextmanager
def gradient_context(forward_func: Callable, device: torch.device) -> Iterator[None]:
    """Gradients on, inference mode and autocast off, the model in eval mode.

    Lightning validates under ``no_grad`` and ``trainer.validate()`` under ``inference_mode``; mixed
    precision wraps the loop in autocast. LAM needs input gradients in full precision in all of them.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        if device.type in ("cpu", "cuda", "xpu", "mps"):
            stack.enter_context(torch.autocast(device_type=device.type, enabled=False))
        stack.enter_context(eval_mode(owning_module(forward_func)))
        yield
