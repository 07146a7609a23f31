"""Whether a model computes a statistic of the whole image: a value whose size does not follow the image's.

A crop reproduces the full image only where the window's output depends on nearby pixels alone. The checks of
:mod:`~lam_captum._core._region` compare crop and full image at both ends of LAM's path; a statistic of the
whole image (a global maximum, a standard deviation, the top-k pixels, a channel attention's average, a group
norm's mean) can change what the window sees in the middle of the path only, where no check looks: a detached
maximum that crosses a threshold, a top-1 attention that jumps to a far pixel and back.

Such a statistic shows in the model's operations, not in its numbers: a tensor derived from the image whose
number of values is the same on the full image and on a crop of it, while everything local shrinks with the
crop. :class:`Operations` records, for one forward pass, every operation whose output derives from the input
and how many values each output holds; :func:`whole_image_statistic` lines up the passes of the full image and
of a crop and names the first such tensor.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterator
from types import TracebackType

from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary


@dataclasses.dataclass(frozen=True)
class Operations:
    """The operations of one forward pass on ``rows`` images that took a value derived from them, in order
    (``names``), and the number of values of each output (``sizes``: an operation with two outputs counts
    twice)."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    rows: int


class OperationsOf:
    """Records the :class:`Operations` that run on ``images`` (and what derives from them) inside ``with``.

    Example:
        >>> import torch
        >>> images = torch.ones(1, 1, 4, 4)
        >>> with OperationsOf(images) as watch:
        ...     _ = (images * 2).amax() + torch.zeros(3).sum()
        >>> watch.operations().names
        ('aten.mul.Tensor', 'aten.amax.default', 'aten.add.Tensor')
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
        return Operations(tuple(self._mode.names), tuple(self._mode.sizes), self._mode.rows)


class _Watch(TorchDispatchMode):
    """Below autograd, sees every ATen operation (of modules, functions, TorchScript alike); an output derives
    from the images where an input does (in-place operations mark the tensor they change)."""

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
        self.names: list[str] = []
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
        result = func(*args, **(kwargs or {}))
        if any(value in self.derived for value in _tensors((args, kwargs))):
            for value in _tensors(result):
                self.derived[value] = True
                self.names.append(str(func))
                self.sizes.append(value.numel())
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


def whole_image_statistic(full: Operations, crops: Operations) -> str | None:
    """The first operation that gives a tensor of the same number of values per image on the full image
    (one row) and on the crops (each smaller than it), said in words; None where every tensor derived from
    the image shrinks with it.

    The two passes are lined up by their operations' names: a model may run a few operations on one size and
    not on the other (padding to a multiple of its attention window). On a batch of crops, a statistic of the
    whole batch (batch norm in training mode) has the full image's size too.

    Example:
        >>> full = Operations(("aten.convolution.default", "aten.amax.default"), (4096, 1), rows=1)
        >>> whole_image_statistic(full, Operations(full.names, (1600, 1), rows=1))
        'aten.amax.default gives 1 value per image on the full image and on a crop'
    """
    if full.names == crops.names:
        pairs = zip(full.sizes, crops.sizes)
        names = iter(full.names)
    else:
        blocks = difflib.SequenceMatcher(None, full.names, crops.names, autojunk=False).get_matching_blocks()
        matched = [(block.a + k, block.b + k) for block in blocks for k in range(block.size)]
        pairs = ((full.sizes[a], crops.sizes[b]) for a, b in matched)
        names = (full.names[a] for a, _ in matched)
    for name, (size, crop_size) in zip(names, pairs):
        if size and crop_size in (size, size * crops.rows):
            values = "value" if size == 1 else "values"
            return f"{name} gives {size} {values} per image on the full image and on a crop"
    return None
