"""Reading checkpoints safely (torch.save files and safetensors) and fitting their keys to a model."""

from __future__ import annotations

import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

# How many missing / unexpected keys an error message shows before summarising with a count.
_KEYS_SHOWN = 5
# Training frameworks wrap the weights in these keys; EMA weights are the better ones to explain.
_WRAPPER_KEYS = ("params_ema", "params", "state_dict")
# The PROTO opcode that starts every pickle of protocol 2 or later (legacy torch.save uses 2).
_PICKLE_PROTO = b"\x80"
_FORMATS = "torch.save files (.pt, .pth, .ckpt: a zip archive or a pickle) and safetensors files (.safetensors)"


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = True) -> nn.Module:
    """Load a checkpoint into ``model`` without ever running code stored in the file.

    Reads ``torch.save`` files and ``.safetensors`` files (told apart by their contents). Accepts a
    plain state dict, a Lightning checkpoint (``{"state_dict": ...}``; a prefix such as ``model.``
    or ``net.`` that the LightningModule added is removed), a BasicSR checkpoint (``{"params_ema":
    ...}`` preferred over ``{"params": ...}``; in a flat safetensors file, keys ``params_ema.*``
    preferred over ``params.*``), and DDP's ``module.`` prefix. Half-precision weights are cast to
    the model's dtype.

    Args:
        model: The model to fill.
        path: The checkpoint file.
        strict: Whether every key of the model and of the checkpoint must match. Shapes must
            always match.

    Returns:
        ``model``, with the weights loaded.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is in neither format (the message lists the accepted ones), would
            need arbitrary unpickling, or its keys or shapes do not fit the model (the message
            lists them).

    Example:
        >>> import tempfile
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


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint without ever running code from it and return its state dict.

    ``torch.load(..., weights_only=True)`` unpickles tensors and plain containers only, so a
    malicious or merely exotic checkpoint fails here instead of executing; a safetensors file holds
    tensors only and is read by the ``safetensors`` library.

    Args:
        path: A file written by ``torch.save`` (a plain state dict, a Lightning checkpoint
            ``{"state_dict": ...}`` or a BasicSR one ``{"params": ...}`` / ``{"params_ema": ...}``),
            or a safetensors file.

    Returns:
        The state dict, with any DDP ``module.`` prefix removed.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is in neither format, holds objects other than tensors and plain
            containers, or holds no state dict.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "w.pt"
        >>> torch.save({"params": {"module.weight": torch.ones(1)}}, path)
        >>> read_checkpoint(path)
        {'weight': tensor([1.])}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint `path` does not exist or is not a file: '{path}'")
    if _is_safetensors_file(path):
        checkpoint = _read_safetensors(path)
    elif _is_torch_file(path):
        checkpoint = _read_torch(path)
    else:
        raise ValueError(f"`path` '{path}' is not a torch checkpoint nor a safetensors file; the accepted weight "
                         f"formats are {_FORMATS}")
    return _strip_prefix(_unwrap(checkpoint, path), "module.")


def _read_torch(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        culprit = re.search(r"GLOBAL (\S+)", str(error))
        raise ValueError(
            f"refusing to load `path` '{path}': it holds a Python object other than tensors and plain "
            f"containers{f' ({culprit.group(1)})' if culprit else ''}, and unpickling it could run code"
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"`path` '{path}' is not a readable torch checkpoint: {error}") from error


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"`path` '{path}' is not a readable safetensors file: {error}") from error


def _is_safetensors_file(path: Path) -> bool:
    """A safetensors file starts with the length of its JSON header (u64, little endian), then the header."""
    with path.open("rb") as file:
        start = file.read(9)
    if len(start) < 9:
        return False
    (header_length,) = struct.unpack("<Q", start[:8])
    return start[8:9] == b"{" and 8 + header_length <= path.stat().st_size


def _is_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (since torch 1.6) or, in the legacy format, a pickle."""
    with path.open("rb") as file:
        if zipfile.is_zipfile(file):
            return True
        file.seek(0)
        return file.read(1) == _PICKLE_PROTO


def _unwrap(checkpoint: object, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside a training framework's checkpoint."""
    if isinstance(checkpoint, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(checkpoint.get(key), Mapping):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, Mapping) or not checkpoint:
        raise ValueError(f"`path` '{path}' holds no state dict, got {type(checkpoint).__name__}")
    not_tensors = [key for key, value in checkpoint.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"`path` '{path}' is not a state dict: entries {_preview(not_tensors)} are not tensors "
            f"(expected a plain state dict or one under {', '.join(map(repr, _WRAPPER_KEYS))})"
        )
    return dict(checkpoint)


def _strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Drop ``prefix`` from the keys that start with it; keep the other keys unchanged."""
    return {key.removeprefix(prefix): value for key, value in state_dict.items()}


def fit_keys(state_dict: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Strip the leading ``name.`` that a wrapper module put on the keys, if that fits better.

    A LightningModule holding the network as ``self.model`` (or ``self.net``) saves keys like
    ``model.head.0.weight``, possibly next to keys of other submodules (a loss network). Every
    first key component is tried as a prefix; the one leaving most keys that the model knows wins.
    The keys as they are win ties, then the training frameworks' wrapper keys (``params_ema.``
    before ``params.``, as a flat safetensors file may spell them), then the others by name.

    Args:
        state_dict: The checkpoint's state dict.
        model_keys: The keys of the model's own state dict.

    Returns:
        The state dict restricted to the chosen prefix and with it removed, or unchanged.

    Example:
        >>> fit_keys({"net.w": 1, "loss.mse": 2}, {"w"})
        {'w': 1}
    """
    best, best_overlap = state_dict, len(model_keys & state_dict.keys())
    prefixes = {key.split(".", 1)[0] + "." for key in state_dict if "." in key}
    # The training frameworks' wrapper keys first, EMA before plain, so that they win ties.
    wrappers = [f"{key}." for key in _WRAPPER_KEYS if f"{key}." in prefixes]
    for prefix in wrappers + sorted(prefixes - set(wrappers)):
        candidate = {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}
        overlap = len(model_keys & candidate.keys())
        if overlap > best_overlap:
            best, best_overlap = candidate, overlap
    return best


def check_keys(state_dict: dict[str, torch.Tensor], model: nn.Module, path: Path, strict: bool) -> None:
    """Raise a ValueError describing missing / unexpected keys (if ``strict``) and shape mismatches.

    Example:
        >>> check_keys({"weight": torch.zeros(1, 1)}, nn.Linear(1, 1, bias=False), Path("w.pt"), True)
    """
    expected = model.state_dict()
    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    if strict and (missing or unexpected):
        raise ValueError(
            f"the weights in `path` '{path}' do not fit {type(model).__name__}: "
            f"{len(missing)} missing keys {_preview(missing)}, "
            f"{len(unexpected)} unexpected keys {_preview(unexpected)}"
        )
    for key in sorted(expected.keys() & state_dict.keys()):
        if expected[key].shape != state_dict[key].shape:
            raise ValueError(
                f"the weights in `path` '{path}' do not fit {type(model).__name__}: '{key}' has shape "
                f"{tuple(state_dict[key].shape)} in the checkpoint but {tuple(expected[key].shape)} in the model"
            )


def _preview(keys: list[str]) -> str:
    shown = ", ".join(repr(key) for key in keys[:_KEYS_SHOWN])
    more = f", ... ({len(keys) - _KEYS_SHOWN} more)" if len(keys) > _KEYS_SHOWN else ""
    return f"[{shown}{more}]"
