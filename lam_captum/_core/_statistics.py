"""Whether a model computes a statistic of the whole image: a value that combines pixels from all over it.

A crop reproduces the full image only where the window's output depends on nearby pixels alone. The checks of
:mod:`~lam_captum._core._region` compare crop and full image at both ends of LAM's path; a statistic of the
whole image (a global maximum, a standard deviation, the top-k pixels, a channel attention's average, a group
norm's mean, a maximum along each row) can change what the window sees in the middle of the path only, where no
check looks: a detached maximum that crosses a threshold, a top-1 attention that jumps to a far pixel and back.

Such a statistic shows in the model's operations, not in its numbers. :class:`Operations` records, for one
forward pass, every operation that takes a value derived from the input; :func:`whole_image_statistic` lines up
the passes of the full image and of a crop and names the first operation that, on both:

- reduces, scans, sorts or normalises along a dimension whose size differs between them: a spatial one (a
  reduction over channels or over an attention window's tokens has the same size on both);
- turns tensors that differ in size into one of the same number of values per image (an adaptive pooling to
  1x1, a group norm's mean, a resize to a fixed size; also a padding to a multiple that brings the crop to the
  full image's size, after which sizes tell nothing, and the crop would save nothing).

A value the model's own code reads into Python to branch on (``.item()``, ``if tensor:``) is one of these
first: a reduction, or one pixel at a fixed position, which a crop moves. So is a check of the input such as
``torch.isfinite(x).all()``, which can only raise: such a model gets the full image. Values taken out of torch
without an operation (``.numpy()``, ``.tolist()``) are not seen.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterator
from types import TracebackType

from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary

# Operations whose output depends on their inputs' shape, dtype and device only, not on their values.
_VALUE_FREE = frozenset({
    "aten.new_zeros", "aten.new_ones", "aten.new_empty", "aten.new_empty_strided", "aten.new_full",
    "aten.zeros_like", "aten.ones_like", "aten.empty_like", "aten.full_like", "aten.rand_like", "aten.randn_like",
    "aten.randint_like", "aten._shape_as_tensor",
})
# Operations that combine the values along dimensions (their ``dim`` argument, or all of them).
_ALONG = frozenset({
    "aten.sum", "aten.mean", "aten.amax", "aten.amin", "aten.max", "aten.min", "aten.argmax", "aten.argmin",
    "aten.std", "aten.var", "aten.std_mean", "aten.var_mean", "aten.norm", "aten.linalg_vector_norm",
    "aten.logsumexp", "aten.prod", "aten.any", "aten.all", "aten.count_nonzero", "aten.topk", "aten.sort",
    "aten.kthvalue", "aten.median", "aten.nanmedian", "aten.mode", "aten.cumsum", "aten.cumprod", "aten.cummax",
    "aten.cummin", "aten.logcumsumexp", "aten._softmax", "aten._log_softmax", "aten.bincount", "aten.histc",
    "aten.nonzero", "aten.unique_dim", "aten._unique", "aten._unique2", "aten.unique_consecutive",
})
# Two passes whose operations differ over more than this many are not lined up (difflib's matching grows with
# the square of it): the crop is then refused.
_MAX_UNMATCHED = 4000


@dataclasses.dataclass(frozen=True)
class Operation:
    """One output of an operation on values derived from the images: the number of its values (``size``), the
    most values of one of its derived inputs (``inputs``), the sizes of the dimensions it combines along
    (``along``; empty where it combines none), and whether it holds floating-point values (``values``): an
    integer output of a size of its own is bookkeeping (the random seed and offset a GPU's attention kernel
    returns), and an index of a selection comes from an operation that combines along the dimensions."""

    name: str
    size: int
    inputs: int
    along: tuple[int, ...] = ()
    values: bool = True


@dataclasses.dataclass(frozen=True)
class Operations:
    """The :class:`Operation` of one forward pass on ``rows`` images, in order."""

    done: tuple[Operation, ...]
    rows: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(operation.name for operation in self.done)


class OperationsOf:
    """Records the :class:`Operations` that run on ``images`` (and what derives from them) inside ``with``.

    Example:
        >>> import torch
        >>> images = torch.ones(1, 1, 4, 4)
        >>> with OperationsOf(images) as watch:
        ...     _ = (images * 2).amax() + torch.zeros(3).sum() + images.new_zeros(1)
        >>> watch.operations().names
        ('aten.mul', 'aten.amax', 'aten.add', 'aten.add')
    """

    def __init__(self, images: Tensor) -> None:
        self._mode = _Watch(images)

    def __enter__(self) -> OperationsOf:
        self._mode.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._mode.__exit__(kind, error, traceback)

    def operations(self) -> Operations:
        return Operations(tuple(self._mode.done), self._mode.rows)


class _Watch(TorchDispatchMode):
    """Below autograd, sees every ATen operation (of modules, functions, TorchScript alike); an output derives
    from the images where an input does. An operation that writes into a view (``buffer[..., :h, :w] = x``)
    makes the view's base derived too."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Else torch wraps __torch_dispatch__ to keep torch.compile out of it, importing torch._dynamo on the first
        # operation: 1.2 s of a process's first call on a 2-core machine. Nothing here is compiled.
        return False

    def __init__(self, images: Tensor) -> None:
        super().__init__()
        self.derived: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.derived[images] = True
        self.rows = images.shape[0]
        self.done: list[Operation] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = str(func.overloadpacket)
        inputs = [value for value in _tensors((args, kwargs)) if value in self.derived]
        if not inputs or name in _VALUE_FREE:
            return result
        largest = max(value.numel() for value in inputs)
        along = _combined_sizes(func, args, kwargs) if name in _ALONG else ()
        for value in _tensors(result):
            self.derived[value] = True
            if func._schema.is_mutable and value._base is not None:
                self.derived[value._base] = True
            self.done.append(Operation(name, value.numel(), largest, along,
                                       value.is_floating_point() or value.is_complex()))
        return result


def _tensors(values: object) -> Iterator[Tensor]:
    if isinstance(values, Tensor):
        yield values
    elif isinstance(values, (list, tuple)):
        for value in values:
            yield from _tensors(value)
    elif isinstance(values, dict):
        for value in values.values():
            yield from _tensors(value)


def _combined_sizes(func, args: tuple, kwargs: dict) -> tuple[int, ...]:  # noqa: ANN001 - an OpOverload
    """The sizes of the dimensions of the first input that the operation combines along: its ``dim`` argument,
    or every dimension where it has none (or an empty list, ``sum``'s way of saying all)."""
    values = args[0] if args and isinstance(args[0], Tensor) else None
    if values is None or any(argument.name == "other" for argument in func._schema.arguments):
        return ()  # ``max(a, b)``: elementwise
    dims = None
    for position, argument in enumerate(func._schema.arguments):
        if argument.name == "dim":
            default = argument.default_value if argument.has_default_value() else None
            dims = kwargs.get("dim", args[position] if position < len(args) else default)
    if isinstance(dims, int):
        dims = [dims]
    if not dims or values.dim() == 0:
        return tuple(values.shape)
    return tuple(values.shape[dim % values.dim()] for dim in dims)


def whole_image_statistic(full: Operations, crops: Operations) -> str | None:
    """The first operation that computes a statistic of the whole image (see the module's docstring), compared
    between the full image (one row) and crops of it, said in words; None where there is none.

    The passes are lined up by their operations' names: a model may run a few operations on one size and not on
    the other (padding to a multiple of its attention window only where needed).

    Example:
        >>> convolution = Operation("aten.convolution", 4096, 192)
        >>> full = Operations((convolution, Operation("aten.amax", 1, 4096, (1, 64, 64))), rows=1)
        >>> crops = Operations((Operation("aten.convolution", 1600, 75), Operation("aten.amax", 1, 1600, (1, 40, 40))), 1)
        >>> whole_image_statistic(full, crops)
        'aten.amax combines values along dimensions of (1, 64, 64) on the full image and of (1, 40, 40) on a crop'
    """
    pairs = _lined_up(full.done, crops.done)
    if pairs is None:
        return f"it runs other operations on a crop than on the full image ({len(crops.done)} and {len(full.done)})"
    for whole, crop in pairs:
        said = _statistic(whole, crop, crops.rows)
        if said is not None:
            return said
    return None


def _lined_up(full: tuple[Operation, ...], crops: tuple[Operation, ...]) -> list[tuple[Operation, Operation]] | None:
    """The operations of two passes paired by name: all of them where the names agree, else those difflib
    matches beyond the common start and end; None where the rest is too long to match."""
    start = 0
    while start < min(len(full), len(crops)) and full[start].name == crops[start].name:
        start += 1
    end = 0
    while end < min(len(full), len(crops)) - start and full[-1 - end].name == crops[-1 - end].name:
        end += 1
    middle_full, middle_crops = full[start : len(full) - end], crops[start : len(crops) - end]
    if len(middle_full) > _MAX_UNMATCHED or len(middle_crops) > _MAX_UNMATCHED:
        return None
    pairs = list(zip(full[:start], crops[:start]))
    if middle_full and middle_crops:
        matcher = difflib.SequenceMatcher(None, [operation.name for operation in middle_full],
                                          [operation.name for operation in middle_crops], autojunk=False)
        for block in matcher.get_matching_blocks():
            pairs += zip(middle_full[block.a : block.a + block.size], middle_crops[block.b : block.b + block.size])
    return pairs + list(zip(full[len(full) - end :], crops[len(crops) - end :]))


def _statistic(whole: Operation, crop: Operation, rows: int) -> str | None:
    if whole.along != crop.along:
        return (f"{whole.name} combines values along dimensions of {whole.along} on the full image and of "
                f"{crop.along} on a crop")
    if whole.values and 0 < whole.size == crop.size / rows and whole.inputs != crop.inputs / rows:
        if whole.size >= whole.inputs:
            return f"{whole.name} brings a crop to the full image's size ({whole.size} values per image)"
        values = "value" if whole.size == 1 else "values"
        return f"{whole.name} gives {whole.size} {values} per image on the full image and on a crop"
    return None
