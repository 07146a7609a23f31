"""Turning ``package.module:Class`` and ``path/to/file.py:Class`` into a model."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

from torch import nn


def import_factory(spec: str, target: str, attribute: str) -> Callable[..., object]:
    """Import the module or file ``target`` and return its callable ``attribute``.

    Args:
        spec: The whole spec, for error messages.
        target: A dotted module name or a path to a ``.py`` file.
        attribute: The class or factory function in it.

    Returns:
        The callable.

    Raises:
        ImportError: If the module cannot be imported, the file does not exist or the attribute is
            missing.
        ValueError: If the attribute is not callable or is already a model instance.

    Example:
        >>> import_factory("torch.nn:Identity", "torch.nn", "Identity")
        <class 'torch.nn.modules.linear.Identity'>
    """
    is_file = target.endswith(".py") or "/" in target or "\\" in target
    module = _import_file(spec, Path(target)) if is_file else _import_module(spec, target)
    if not hasattr(module, attribute):
        raise ImportError(f"'{target}' has no attribute '{attribute}' (from `spec` '{spec}')")
    factory = getattr(module, attribute)
    if isinstance(factory, nn.Module):
        raise ValueError(f"`spec` '{spec}' names a model instance; name its class or a factory function")
    if not callable(factory):
        raise ValueError(f"`spec` '{spec}' names a {type(factory).__name__}, which is not a class or function")
    return factory


def _import_module(spec: str, name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as error:
        raise ImportError(
            f"cannot import module '{name}' from `spec` '{spec}': {type(error).__name__}: {error}"
        ) from error


def _import_file(spec: str, path: Path) -> ModuleType:
    if not path.is_file():
        raise ImportError(f"the model file '{path}' from `spec` '{spec}' does not exist")
    # A name unique per file: two model files may share a stem, and sys.modules must hold the module
    # while it runs (dataclasses and typing look it up there).
    name = "lam_captum_model_file_" + re.sub(r"\W", "_", str(path.resolve()))
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"'{path}' from `spec` '{spec}' is not a Python module file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    # The file's folder goes on sys.path while it runs, so that it can import its sibling modules.
    sys.path.insert(0, str(path.parent))
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise ImportError(f"importing '{path}' from `spec` '{spec}' failed: {type(error).__name__}: {error}") from error
    finally:
        sys.path.remove(str(path.parent))
    return module


def instantiate(spec: str, factory: Callable[..., object], model_args: Mapping[str, object]) -> nn.Module:
    """Call ``factory(**model_args)``, checking the arguments against its signature first.

    Args:
        spec: The spec that named ``factory``, for error messages.
        factory: A model class or a function returning a model.
        model_args: Keyword arguments for it.

    Returns:
        The model.

    Raises:
        ValueError: If the arguments do not fit the signature or the result is not an ``nn.Module``.

    Example:
        >>> instantiate("torch.nn:Linear", nn.Linear, {"in_features": 2, "out_features": 1})
        Linear(in_features=2, out_features=1, bias=True)
    """
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some C callables expose no signature; calling still works
        signature = None
    if signature is not None:
        try:
            signature.bind(**model_args)
        except TypeError as error:
            raise ValueError(
                f"`model_args` {dict(model_args)!r} do not fit {getattr(factory, '__name__', spec)}{signature} "
                f"from `spec` '{spec}': {error}"
            ) from error
    model = factory(**model_args)
    if not isinstance(model, nn.Module):
        raise ValueError(f"`spec` '{spec}' built a {type(model).__name__}, not a torch.nn.Module")
    return model
