"""A fixed LR image and SR window that :class:`~lam_captum.callbacks.LAMMonitor` explains while training runs."""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path

from torch import Tensor

from lam_captum.functional import as_window
from lam_captum.functional._window import WindowLike
from lam_captum.imageio import load_input

# Probe names become TensorBoard tags (`lam/<name>/map`) and folder names: a slash would nest the tag.
NAME_PATTERN = re.compile(r"[\w.-]+")


@dataclasses.dataclass(frozen=True, eq=False)
class Probe:
    """One image and one window of the SR output to watch while a network learns.

    Args:
        image: The LR input, a ``(C, H, W)`` float tensor in the range the model expects (copied), or the
            path of an HR image file that is cropped to a multiple of ``scale`` and bicubic-downscaled
            by it as the CLI does, giving floats in [0, 1]; a one-band file stays grayscale.
        window: In SR-output pixels, as :meth:`lam_captum.LAM.attribute` takes it: ``(top, left, size)``,
            ``(top, left, height, width)`` or a :class:`~lam_captum.Window`.
        name: Names the probe in tags and folders: letters, digits, ``_``, ``-`` and ``.``.
        scale: The downscaling factor for an HR path; the model's own factor must match it. A tensor
            is used as is, and its scale is read from the model's output.

    Raises:
        TypeError: If ``image`` is neither a tensor nor a path, or is not floating, or ``scale`` is not an int.
        ValueError: For a tensor that is not ``(C, H, W)``, a bad window or name, or ``scale`` < 1.
        FileNotFoundError: If ``image`` is a path to no file.

    Example:
        >>> import torch
        >>> Probe(torch.rand(3, 16, 16), (8, 8, 16), "centre").window
        Window(top=8, left=8, height=16, width=16)
    """

    image: Tensor | str | os.PathLike
    window: WindowLike
    name: str
    scale: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", _check_image(self.image))
        object.__setattr__(self, "window", as_window(self.window))
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"`name` must be letters, digits, '_', '-' or '.', got {self.name!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, int):
            raise TypeError(f"`scale` must be an int, got {self.scale!r}")
        if self.scale < 1:
            raise ValueError(f"`scale` must be >= 1, got {self.scale}")
        if isinstance(self.image, Tensor) and self.scale != 4:
            warnings.warn(f"`scale`={self.scale} has no effect for probe {self.name!r}: a tensor is already the "
                          "LR input and its scale comes from the model", UserWarning, stacklevel=3)

    def load(self) -> tuple[Tensor, Tensor | None]:
        """The LR input and, for a path, the HR image cropped to ``scale`` times its size.

        Returns:
            ``(lr, hr)``: ``(C, H, W)`` tensors; ``hr`` is None for a tensor probe.

        Raises:
            ValueError: If the file cannot be decoded or is smaller than ``scale``.
        """
        if isinstance(self.image, Tensor):
            return self.image, None
        return load_input(self.image, scale=self.scale, mode=None)


def _check_image(image: object) -> Tensor | Path:
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"`image` {str(path)!r} is not an existing file")
        return path
    if not isinstance(image, Tensor):
        raise TypeError(f"`image` must be a (C, H, W) tensor or the path of an HR image, got {type(image).__name__}")
    if image.dim() != 3:
        raise ValueError(f"`image` must be one (C, H, W) LR image, got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"`image` must be a floating tensor in the range the model expects, got {image.dtype}")
    # A copy, so that the probe stays fixed whatever the caller does to the tensor later.
    return image.detach().clone()
