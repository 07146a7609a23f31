"""Turning a model spec (a built-in name, ``package.module:Class`` or ``path/to/file.py:Class``) into a model."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import pkgutil
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Literal

from torch import nn

from lam_captum.models._builtin import build_model, builtin_model_names
from lam_captum.models._loading import load_weights


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model spec, parsed: what :func:`parse_model_spec` returns and :func:`load_model` builds.

    Attributes:
        kind: ``"builtin"`` (a name of :func:`~lam_captum.models.builtin_model_names`), ``"module"``
            (an importable dotted module) or ``"file"`` (a ``.py`` file).
        target: The built-in name, the module's dotted name or the file's path.
        attribute: The class or factory function in the module or file (dotted for a nested one);
            None for a built-in name.

    Example:
        >>> spec = parse_model_spec("archs/rcan_arch.py:RCAN")
        >>> spec.kind, spec.target, spec.attribute, str(spec)
        ('file', 'archs/rcan_arch.py', 'RCAN', 'archs/rcan_arch.py:RCAN')
    """

    kind: Literal["builtin", "module", "file"]
    target: str
    attribute: str | None = None

    def __str__(self) -> str:
        return self.target if self.attribute is None else f"{self.target}:{self.attribute}"


def parse_model_spec(spec: str) -> ModelSpec:
    """Parse a model spec without importing anything.

    A target ending in ``.py`` or holding a path separator is a file; any other target is a dotted
    module name.

    Args:
        spec: A built-in model name, ``package.module:Class`` or ``path/to/file.py:Class``.

    Returns:
        The parsed spec.

    Raises:
        TypeError: If ``spec`` is not a string.
        ValueError: If ``spec`` is none of the three forms.

    Example:
        >>> parse_model_spec("torch.nn:Conv2d")
        ModelSpec(kind='module', target='torch.nn', attribute='Conv2d')
    """
    if not isinstance(spec, str):
        raise TypeError(f"`spec` must be a string, got {type(spec).__name__}")
    target, _, attribute = spec.rpartition(":")
    if not target or not attribute:
        if spec in builtin_model_names():
            return ModelSpec("builtin", spec)
        raise ValueError(
            f"`spec` must be a built-in model name {builtin_model_names()}, 'package.module:Class' "
            f"or 'path/to/file.py:Class', got {spec!r}"
        )
    if not _is_dotted_name(attribute):
        raise ValueError(f"{attribute!r} after ':' in `spec` {spec!r} is not a class or function name")
    if target.endswith(".py") or "/" in target or "\\" in target:
        return ModelSpec("file", target, attribute)
    if not _is_dotted_name(target):
        raise ValueError(f"{target!r} before ':' in `spec` {spec!r} is neither a dotted module name nor a .py file")
    return ModelSpec("module", target, attribute)


def load_model(
    spec: str | ModelSpec,
    model_args: Mapping[str, object] | None = None,
    *,
    weights: str | Path | None = None,
    scale: int | None = None,
) -> nn.Module:
    """Build a model from a spec, load its weights, and put it in eval mode: the one model loader.

    A file inside a package folder (``__init__.py`` files up the tree, as in BasicSR and most SR
    repositories) is imported as part of its package, so its relative imports (``from .arch_util
    import ...``) and absolute ones of its own package work; the folder above the top-most package
    is on ``sys.path`` while it imports. A file outside any package is imported on its own, with its
    folder on ``sys.path`` while it runs.

    Args:
        spec: A built-in name (see :func:`~lam_captum.models.build_model`), ``package.module:Class``
            or ``path/to/file.py:Class``, or a :class:`ModelSpec`. ``Class`` may also be a function
            returning a model.
        model_args: Keyword arguments for the class or function (for a built-in name, for
            :func:`~lam_captum.models.build_model`, e.g. ``{"rgb_range": 255}``).
        weights: A checkpoint to load (see :func:`~lam_captum.models.load_weights`).
        scale: The upscaling factor of a built-in model (None: its default). A class or function
            takes its arguments from ``model_args`` only (SR code names the factor ``scale``,
            ``upscale`` or ``upscale_factor``), so ``scale`` is not passed to it: callers check a
            model's factor by running it.

    Returns:
        The model, in eval mode.

    Raises:
        ValueError: If ``spec`` is none of the forms, names something that is not a class or
            function, ``model_args`` do not fit its signature or repeat ``scale`` / ``weights``
            with another value, or the weights do not fit.
        ImportError: If the module cannot be imported (the message says what failed), the file
            does not exist or lacks the attribute.
        FileNotFoundError: If ``weights`` does not exist.

    Example:
        >>> load_model("torch.nn:Conv2d", {"in_channels": 3, "out_channels": 3, "kernel_size": 1})
        Conv2d(3, 3, kernel_size=(1, 1), stride=(1, 1))
        >>> load_model("edsr-baseline", {"n_resblocks": 1}, scale=2).scale
        2
    """
    model_args = {} if model_args is None else model_args
    if not isinstance(model_args, Mapping):
        raise ValueError(f"`model_args` must be a mapping of argument names to values, got {model_args!r}")
    parsed = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
    if parsed.kind == "builtin":
        options = _merge_options(model_args, scale=scale, weights=weights)
        return build_model(parsed.target, **options)
    model = instantiate(str(parsed), import_factory(parsed), model_args)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def _is_dotted_name(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def _merge_options(model_args: Mapping[str, object], **options: object) -> dict[str, object]:
    """``model_args`` with the options that are given; an option given twice must agree."""
    merged = dict(model_args)
    for name, value in options.items():
        if value is None:
            continue
        if name in merged and merged[name] != value:
            raise ValueError(f"`{name}` is {value!r}, but `model_args` set {name}={merged[name]!r}; give it once")
        merged[name] = value
    return merged


def import_factory(spec: ModelSpec) -> Callable[..., object]:
    """Import the module or file of ``spec`` and return its callable attribute.

    Args:
        spec: A parsed ``"module"`` or ``"file"`` spec.

    Returns:
        The class or function.

    Raises:
        ImportError: If the module cannot be imported, the file does not exist or the attribute is
            missing.
        ValueError: If the attribute is not callable or is already a model instance.

    Example:
        >>> import_factory(parse_model_spec("torch.nn:Identity"))
        <class 'torch.nn.modules.linear.Identity'>
    """
    if spec.kind == "file":
        factory = _attribute(_import_file(spec, Path(spec.target)), spec)
    else:
        factory = _resolve_dotted(spec)
    if isinstance(factory, nn.Module):
        raise ValueError(f"`spec` '{spec}' names a model instance; name its class or a factory function")
    if not callable(factory):
        raise ValueError(f"`spec` '{spec}' names a {type(factory).__name__}, which is not a class or function")
    return factory


def _resolve_dotted(spec: ModelSpec) -> object:
    try:
        return pkgutil.resolve_name(str(spec))
    except AttributeError as error:
        # A module that imported fine is in sys.modules; otherwise its own code raised AttributeError.
        if spec.target in sys.modules:
            raise ImportError(f"'{spec.target}' has no attribute '{spec.attribute}' (from `spec` '{spec}')") from error
        raise _import_error(spec, error) from error
    except Exception as error:  # importing runs the module's code, which may raise anything
        raise _import_error(spec, error) from error


def _import_error(spec: ModelSpec, error: Exception) -> ImportError:
    return ImportError(f"cannot import module '{spec.target}' from `spec` '{spec}': {type(error).__name__}: {error}")


def _attribute(module: ModuleType, spec: ModelSpec) -> object:
    value: object = module
    for name in spec.attribute.split("."):
        if not hasattr(value, name):
            raise ImportError(f"'{spec.target}' has no attribute '{spec.attribute}' (from `spec` '{spec}')")
        value = getattr(value, name)
    return value


def _import_file(spec: ModelSpec, path: Path) -> ModuleType:
    if not path.is_file():
        raise ImportError(f"the model file '{path}' from `spec` '{spec}' does not exist")
    package = _package_of(path.resolve())
    if package is None:
        return _import_loose_file(spec, path)
    return _import_package_module(spec, path.resolve(), *package)


def _package_of(path: Path) -> tuple[Path, str] | None:
    """The folder above the top-most package that holds ``path``, and the file's dotted module name."""
    parts = [] if path.stem == "__init__" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file() and folder.name.isidentifier():
        parts.insert(0, folder.name)
        folder = folder.parent
    if folder == path.parent or not all(part.isidentifier() for part in parts):
        return None
    return folder, ".".join(parts)


def _import_package_module(spec: ModelSpec, path: Path, root: Path, name: str) -> ModuleType:
    top = name.partition(".")[0]
    loaded = sys.modules.get(top)
    if loaded is not None and not _is_package_in(loaded, root / top):
        raise ImportError(
            f"the model file '{path}' from `spec` '{spec}' belongs to the package '{top}' in '{root}', but another "
            f"'{top}' is already imported (from {_location(loaded)}); load models of one '{top}' per process"
        )
    # A package folder may have been written since the interpreter last listed it.
    importlib.invalidate_caches()
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(name)
    except Exception as error:  # importing runs the package's code, which may raise anything
        raise ImportError(
            f"importing '{path}' from `spec` '{spec}' as module '{name}' of the package in '{root}' failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    finally:
        sys.path.remove(str(root))
    if Path(getattr(module, "__file__", "") or "").resolve() != path:
        raise ImportError(f"importing '{name}' for `spec` '{spec}' gave {_location(module)}, not '{path}': another "
                          f"installed '{top}' takes precedence")
    return module


def _is_package_in(module: ModuleType, folder: Path) -> bool:
    return any(Path(entry).resolve() == folder.resolve() for entry in getattr(module, "__path__", []))


def _location(module: ModuleType) -> str:
    where = getattr(module, "__file__", None) or list(getattr(module, "__path__", []))
    return repr(str(where))


def _import_loose_file(spec: ModelSpec, path: Path) -> ModuleType:
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
