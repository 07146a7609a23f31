"""The conditions every LAM computation runs under, whatever the caller's state."""

from __future__ import annotations

import contextlib
import dataclasses
import dis
import functools
import os
import sys
import threading
import types
from collections.abc import Callable, Iterable, Iterator

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
    """The module a forward function is: the module itself or the owner of a bound ``forward``; None for any
    other function. Its parameters' device and dtype are the inputs' (:func:`model_placement`); a wrapper
    decides those itself (``lambda x: model(x.cuda()).cpu()``), so its modules do not count here.

    Example:
        >>> model = torch.nn.Conv2d(3, 3, 1)
        >>> owning_module(model.forward) is model, owning_module(lambda x: model(2 * x))
        (True, None)
    """
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = _attribute(forward_func, "__self__")
    return owner if isinstance(owner, nn.Module) else None


# How deep :func:`modules_behind` follows references: a wrapper of a wrapper of an object holding a model...
_WRAPPER_DEPTH = 6
# The most items of one list, tuple or dict it looks through.
_CONTAINER_ITEMS = 64


def modules_behind(forward_func: Callable) -> list[nn.Module]:
    """The modules a forward function may run: the module itself, or those a wrapper reaches
    (``lambda x: model(x * 255) / 255``, a ``functools.partial``, an object whose ``__call__`` uses
    ``self.model``): through closures, default arguments, the globals a function loads, the attributes of
    the objects it holds and the items of its lists and dicts, a few levels deep.

    LAM holds every one of them in eval mode: a model in train mode behind a wrapper would otherwise mix the
    path's steps through BatchNorm's batch statistics (the numbers would depend on ``internal_batch_size``)
    and overwrite its running statistics.

    Example:
        >>> import functools
        >>> first, second = torch.nn.Conv2d(3, 3, 1), torch.nn.Conv2d(3, 3, 1)
        >>> modules_behind(lambda x: (first(x) + second(x)) / 2) == [first, second]
        True
        >>> modules_behind(functools.partial(torch.nn.functional.interpolate, scale_factor=2))
        []
    """
    found: dict[int, nn.Module] = {}
    seen: set[int] = set()

    def visit(value: object, depth: int) -> None:
        if id(value) in seen or depth > _WRAPPER_DEPTH or isinstance(value, (str, bytes, int, float, type(None))):
            return
        seen.add(id(value))
        if isinstance(value, nn.Module):
            found.setdefault(id(value), value)
            return
        if isinstance(value, (list, tuple, set, frozenset)):
            for item in list(value)[:_CONTAINER_ITEMS]:
                visit(item, depth + 1)
            return
        if isinstance(value, dict):
            for item in list(value.values())[:_CONTAINER_ITEMS]:
                visit(item, depth + 1)
            return
        if isinstance(value, functools.partial):
            for part in (value.func, *value.args, *value.keywords.values()):
                visit(part, depth + 1)
            return
        if isinstance(value, types.MethodType):
            visit(value.__self__, depth + 1)
            visit(value.__func__, depth)
            return
        if isinstance(value, types.FunctionType):
            for cell in value.__closure__ or ():
                try:
                    visit(cell.cell_contents, depth + 1)
                except ValueError:  # a cell not yet filled
                    continue
            for default in (*(value.__defaults__ or ()), *(value.__kwdefaults__ or {}).values()):
                visit(default, depth + 1)
            for name in _global_names(value.__code__):
                if name in value.__globals__:
                    visit(value.__globals__[name], depth + 1)
            return
        if isinstance(value, (types.ModuleType, type)) or callable(value) and not hasattr(value, "__dict__"):
            return  # Python modules, classes, builtins: nothing of the user's model
        attributes = _attribute(value, "__dict__")
        if isinstance(attributes, dict):  # an object holding what its methods use (self.model)
            visit(attributes, depth + 1)
        call = _attribute(type(value), "__call__")
        if isinstance(call, types.FunctionType):
            visit(call, depth + 1)

    try:
        visit(forward_func, 0)
    except RecursionError:  # a pathological graph of references: what was found so far
        pass
    return list(found.values())


def _attribute(value: object, name: str) -> object:
    """``getattr(value, name, None)``, also for objects whose ``__getattr__`` raises something else than
    ``AttributeError`` (a dict with attribute access raises ``KeyError``)."""
    try:
        return getattr(value, name, None)
    except Exception:  # noqa: BLE001 - whatever a user's __getattr__ raises means "not there"
        return None


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
            # A frozen TorchScript module (torch.jit.freeze) has no mode left to hold.
            held = [submodule for submodule in module.modules()
                    if isinstance(getattr(submodule, "training", None), bool)]
            for submodule in held:
                self._holds.setdefault(submodule, _Hold(0, submodule.training)).calls += 1
            if held:
                try:
                    module.eval()
                except NotImplementedError:  # torch.export's module: its mode was fixed when it was exported
                    pass
        return held

    def holds(self, module: nn.Module) -> bool:
        with self._lock:
            return module in self._holds

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


@functools.lru_cache(maxsize=256)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """The global names a function's code loads (not the attribute names that share ``co_names``)."""
    return tuple(dict.fromkeys(instruction.argval for instruction in dis.get_instructions(code)
                               if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME")))


def computation_dtype(forward_func: Callable | None, inputs: torch.Tensor) -> torch.dtype:
    """The dtype LAM and ERF compute in by default: the model's parameters'; for a function without parameters
    the inputs', float32 for half types (whose gradients underflow).

    Example:
        >>> computation_dtype(torch.nn.Conv2d(3, 3, 1), torch.rand(1, 3, 4, 4, dtype=torch.float64))
        torch.float32
        >>> computation_dtype(lambda x: 2 * x, torch.rand(1, 3, 4, 4, dtype=torch.float16))
        torch.float32
    """
    dtype = model_placement(forward_func)[1]
    if dtype is not None:
        return dtype
    return torch.float32 if inputs.dtype in (torch.float16, torch.bfloat16) else inputs.dtype


@contextlib.contextmanager
def eval_mode(module: nn.Module | Iterable[nn.Module] | None) -> Iterator[None]:
    """Put every submodule of ``module`` (or of each of several) in eval mode and give each its own previous mode
    back afterwards.

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
    modules = [] if module is None else [module] if isinstance(module, nn.Module) else list(module)
    held = [submodule for module in modules for submodule in _MODE_HOLDS.hold(module)]
    try:
        yield
    finally:
        _MODE_HOLDS.release(held)


@contextlib.contextmanager
def eval_mode_of_what_runs() -> Iterator[None]:
    """Put every module that this thread runs first inside ``with`` (not as a submodule of one that ran before, nor
    one held already) in eval mode before it runs, as :func:`eval_mode` would, and give each its mode back
    afterwards.

    :func:`modules_behind` finds a model behind a wrapper through references it can follow; a model reached
    otherwise (a class attribute, an object with ``__slots__``, a weak reference) ran in training mode: dropout
    drew other numbers on every call, and batch norm used the batch's statistics and overwrote its running ones.
    As with :func:`eval_mode`, its submodules are what its own ``eval()`` makes them (Monte Carlo dropout kept
    on by a ``train()`` override).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Dropout()).train()
        >>> with eval_mode_of_what_runs():
        ...     _ = model(torch.ones(2))
        ...     model.training
        False
        >>> model.training
        True
    """
    thread = threading.get_ident()
    held: list[nn.Module] = []
    covered: set[nn.Module] = set()  # the modules that ran first and their submodules

    def before(module: nn.Module, inputs: object) -> None:
        if threading.get_ident() != thread or module in covered:
            return
        covered.update(module.modules())
        if not _MODE_HOLDS.holds(module):
            held.extend(_MODE_HOLDS.hold(module))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(before)
    try:
        yield
    finally:
        handle.remove()
        _MODE_HOLDS.release(held)


@contextlib.contextmanager
def gradient_context(forward_func: Callable, device: torch.device) -> Iterator[None]:
    """Gradients on, inference mode, autocast and TF32 off, the model in eval mode, compiled code run eagerly.

    Lightning validates under ``no_grad`` and ``trainer.validate()`` under ``inference_mode``; mixed
    precision wraps the loop in autocast. LAM needs input gradients in full precision in all of them: on a
    GPU torch runs float32 convolutions in TF32 by default (10 bits of mantissa), which moves the numbers by
    about 1e-3 of their maximum and makes a crop disagree with the full image by as much.

    A model compiled with ``torch.compile`` (or ``Module.compile``, or with a compiled part) runs its Python code
    as written: a compiled backward pass frees its buffers and cannot run twice on one forward pass, which the K
    windows' gradients and the crop's reference pass do (torch raised "compiled with non-empty donated
    buffers"), and each crop's new shape would cost a compilation. The numbers are the same. The model is put in
    eval mode by :func:`evaluating`: found behind ``forward_func``, or as it runs.
    """
    modules = modules_behind(forward_func)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        # Compiled code may hide anywhere (a compiled forward, a compiled function around the model); where
        # torch._dynamo was never imported nothing was compiled, and importing it takes a second.
        if "torch._dynamo" in sys.modules:
            stack.enter_context(_EAGER.held())
        if device.type in ("cpu", "cuda", "xpu", "mps"):
            stack.enter_context(torch.autocast(device_type=device.type, enabled=False))
        if device.type == "cuda":
            stack.enter_context(_FULL_FLOAT32.held())
        stack.enter_context(evaluating(forward_func, modules))
        yield


@contextlib.contextmanager
def evaluating(forward_func: Callable, modules: list[nn.Module] | None = None) -> Iterator[None]:
    """The model behind ``forward_func`` in eval mode: the modules found behind it (``modules``, default
    :func:`modules_behind`) and any other that runs (:func:`eval_mode_of_what_runs`), each given its mode back.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Dropout()).train()
        >>> with evaluating(lambda x: model(x)):
        ...     model.training
        False
    """
    modules = modules_behind(forward_func) if modules is None else modules
    with contextlib.ExitStack() as stack:
        stack.enter_context(eval_mode(modules))
        # torch warns against global hooks beside a compiled module; a compiled model found is held already.
        if not any(_compiled(submodule) for module in modules for submodule in module.modules()):
            stack.enter_context(eval_mode_of_what_runs())
        yield


def _compiled(module: nn.Module) -> bool:
    return type(module).__name__ == "OptimizedModule" or getattr(module, "_compiled_call_impl", None) is not None


class _SharedSetting:
    """A setting of the whole process that LAM changes while any of its calls runs (``context()`` changes it and
    gives it back): the first call in changes it, the last one out gives it back. Two threads' calls that each
    saved and restored it would leave it changed (the second saves the first's)."""

    def __init__(self, context: Callable[[], contextlib.AbstractContextManager]) -> None:
        self._context = context
        self._lock = threading.Lock()
        self._calls = 0
        self._entered: contextlib.AbstractContextManager | None = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            if self._calls == 0:
                self._entered = self._context()
                self._entered.__enter__()
            self._calls += 1
        try:
            yield
        finally:
            with self._lock:
                self._calls -= 1
                if self._calls == 0 and self._entered is not None:
                    self._entered.__exit__(None, None, None)
                    self._entered = None


@contextlib.contextmanager
def _full_float32() -> Iterator[None]:
    """TF32 off for convolutions and matrix products, given back as it was."""
    convolutions, products = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = convolutions, products


_FULL_FLOAT32 = _SharedSetting(_full_float32)
_EAGER = _SharedSetting(lambda: torch.compiler.set_stance("force_eager"))
