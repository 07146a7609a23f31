"""A fixed LR image or clip and an SR window that :class:`~lam_captum.callbacks.LAMMonitor` explains in training."""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from lam_captum._core.lam import check_image
from lam_captum.functional import as_window
from lam_captum.functional._window import WindowLike
from lam_captum.imageio import IMAGE_SUFFIXES, load_input
from lam_captum.video import frame_paths

# Probe names become TensorBoard tags (`lam/<name>/map`) and folder names: a slash would nest the tag, and
# "." or ".." name a folder that is already there (save_dir itself, its parent).
NAME_PATTERN = re.compile(r"(?!\.+$)[\w.-]+")


@dataclasses.dataclass(frozen=True, eq=False)
class Probe:
    """One image or clip and one window of the SR output to watch while a network learns.

    An image probe is explained with :func:`lam_captum.explain.explain`, a clip probe (for video SR models)
    with :func:`lam_captum.video.explain_clip`.

    Args:
        image: The LR input, a ``(C, H, W)`` float tensor in the range the model expects (copied), or the
            path of an HR image file that is cropped to a multiple of ``scale`` and bicubic-downscaled
            by it as the CLI does, giving floats in [0, 1]; a one-band file stays grayscale. A clip probe
            takes a ``(T, C, H, W)`` LR clip of ``T >= 2`` frames (one frame would read as a batch of one
            image), or the path of a folder of HR frames, in the order of their names, each read as an
            HR image file is (as ``lam-captum --frames`` reads them); all frames must have one size.
        window: In SR-output pixels, as :meth:`lam_captum.LAM.attribute` takes it: ``(top, left, size)``,
            ``(top, left, height, width)`` or a :class:`~lam_captum.Window`.
        name: Names the probe in tags and folders: letters, digits, ``_``, ``-`` and ``.``.
        scale: The downscaling factor for an HR path; the model's own factor must match it. A tensor
            is used as is, and its scale is read from the model's output.
        frame: For a clip probe, the output frame that holds the window; default the centre,
            ``ceil(T / 2) - 1``, as :func:`~lam_captum.video.explain_clip` chooses. None for an image probe.

    Raises:
        TypeError: If ``image`` is neither a tensor nor a path, or is not floating, or ``scale`` or ``frame``
            is not an int.
        ValueError: For a tensor that is neither ``(C, H, W)`` nor ``(T, C, H, W)``, a folder without image
            files or with frames of several sizes, a bad window or name, ``scale`` < 1, a ``frame`` outside
            the clip or given for an image.
        FileNotFoundError: If ``image`` is a path to no file or folder.

    Example:
        >>> import torch
        >>> Probe(torch.rand(3, 16, 16), (8, 8, 16), "centre").window
        Window(top=8, left=8, height=16, width=16)
        >>> clip = Probe(torch.rand(5, 3, 16, 16), (8, 8, 16), "clip")
        >>> clip.is_clip, clip.frames, clip.output_frame
        (True, 5, 2)
    """

    image: Tensor | str | os.PathLike
    window: WindowLike
    name: str
    scale: int = 4
    frame: int | None = None
    # The frame files of a folder probe, listed once: the clip stays the one the probe was made with.
    _frame_files: tuple[Path, ...] = dataclasses.field(default=(), init=False, repr=False)
    # The SR output's size of a path probe (the HR file cropped to a multiple of ``scale``), read when made.
    _sr_size: tuple[int, int] | None = dataclasses.field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", _check_image(self.image))
        if isinstance(self.image, Path) and self.image.is_dir():
            object.__setattr__(self, "_frame_files", _check_frame_folder(self.image))
        object.__setattr__(self, "window", as_window(self.window))
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"`name` must be letters, digits, '_', '-' or '.' (not dots alone), got {self.name!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, int):
            raise TypeError(f"`scale` must be an int, got {self.scale!r}")
        if self.scale < 1:
            raise ValueError(f"`scale` must be >= 1, got {self.scale}")
        self._check_frame()
        if isinstance(self.image, Path):
            self._check_file_window()
        if isinstance(self.image, Tensor) and self.scale != 4:
            warnings.warn(f"`scale`={self.scale} has no effect for probe {self.name!r}: a tensor is already the "
                          "LR input and its scale comes from the model", UserWarning, stacklevel=3)

    @property
    def is_clip(self) -> bool:
        """Whether the probe is a clip (a ``(T, C, H, W)`` tensor or a folder of frames) rather than an image."""
        return bool(self._frame_files) or (isinstance(self.image, Tensor) and self.image.dim() == 4)

    @property
    def frames(self) -> int | None:
        """The number of frames of a clip probe; None for an image probe."""
        if not self.is_clip:
            return None
        return len(self._frame_files) or self.image.shape[0]

    @property
    def output_frame(self) -> int | None:
        """The output frame that holds the window: ``frame``, or the centre of the clip; None for an image."""
        if not self.is_clip:
            return None
        return self.frame if self.frame is not None else (self.frames + 1) // 2 - 1

    def load(self) -> tuple[Tensor, Tensor | None]:
        """The LR input and, for a path, the HR image (or frames) cropped to ``scale`` times its size.

        Returns:
            ``(lr, hr)``: ``(C, H, W)`` tensors for an image probe, ``(T, C, H, W)`` for a clip probe; ``hr``
            is None for a tensor probe.

        Raises:
            FileNotFoundError: If the file, or a frame file, is gone.
            ValueError: If a file cannot be decoded or is smaller than ``scale``, or the LR frames differ in shape.
        """
        if isinstance(self.image, Tensor):
            return self.image, None
        if not self.is_clip:
            return load_input(self.image, scale=self.scale, mode=None)
        frames = [load_input(path, scale=self.scale, mode=None) for path in self._frame_files]
        shapes = sorted({tuple(lr.shape) for lr, _ in frames})
        if len(shapes) > 1:
            raise ValueError(f"the LR frames of `image` {str(self.image)!r} must have one shape, got {shapes}")
        return torch.stack([lr for lr, _ in frames]), torch.stack([hr for _, hr in frames])

    def _check_file_window(self) -> None:
        """Read the size of the HR file (or first frame) now, so that a file that is no image, one smaller than
        ``scale`` or a window outside its SR output is refused here, not warned about in every epoch."""
        path = self._frame_files[0] if self._frame_files else self.image
        try:
            with Image.open(path) as picture:
                width, height = picture.size
        except OSError as error:
            raise ValueError(f"`image` {str(path)!r} is not an image file: {error}") from error
        if height < self.scale or width < self.scale:
            raise ValueError(f"`image` {str(path)!r} ({height}x{width}) is smaller than `scale`={self.scale}")
        object.__setattr__(self, "_sr_size", (height // self.scale * self.scale, width // self.scale * self.scale))
        self.check_window_room(0)

    def check_window_room(self, margin: int) -> None:
        """Raise unless the window, and the ``margin`` the detector reads below and right of it, lie inside the SR
        output of a path probe (a tensor probe's SR size is the model's to tell, when it runs)."""
        if self._sr_size is None:
            return
        (sr_height, sr_width), window = self._sr_size, self.window
        if not window.fits(sr_height, sr_width, margin):
            room = f", less the {margin} pixel the detector reads below and right of it" if margin else ""
            path = self._frame_files[0] if self._frame_files else self.image
            raise ValueError(f"`window` {tuple(window)} of probe {self.name!r} lies outside its SR output, "
                             f"{sr_height}x{sr_width}{room} (the HR image {str(path)!r} at `scale`={self.scale})")

    def _check_frame(self) -> None:
        if self.frame is None:
            return
        if not self.is_clip:
            raise ValueError(f"`frame` chooses the output frame of a clip probe; probe {self.name!r} is an image, "
                             f"got frame={self.frame!r}")
        if isinstance(self.frame, bool) or not isinstance(self.frame, int):
            raise TypeError(f"`frame` must be an int or None, got {self.frame!r}")
        if not 0 <= self.frame < self.frames:
            raise ValueError(f"`frame` must be an integer from 0 to {self.frames - 1} for the {self.frames} frames of "
                             f"probe {self.name!r}, got {self.frame}")


def _check_image(image: object) -> Tensor | Path:
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if path.is_file() or path.is_dir():
            return path
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise FileNotFoundError(f"`image` {str(path)!r} is not an existing file")
        raise FileNotFoundError(f"`image` {str(path)!r} is neither an existing file nor an existing folder of frames")
    if not isinstance(image, Tensor):
        raise TypeError(f"`image` must be a (C, H, W) tensor or the path of an HR image, got {type(image).__name__}")
    if image.dim() == 4 and image.shape[0] == 1:
        raise ValueError(f"`image` must be one (C, H, W) LR image, got shape {tuple(image.shape)}: a batch of one "
                         "image? A (T, C, H, W) clip needs T >= 2 frames")
    if image.dim() not in (3, 4):
        raise ValueError(f"`image` must be one (C, H, W) LR image or one (T, C, H, W) LR clip, got shape "
                         f"{tuple(image.shape)}")
    check_image("image", image)
    # A copy, so that the probe stays fixed whatever the caller does to the tensor later.
    return image.detach().clone()


def _check_frame_folder(folder: Path) -> tuple[Path, ...]:
    """The frame files of a folder probe, checked for one size now rather than at the first monitored epoch."""
    try:
        paths = frame_paths(folder)
    except ValueError as error:
        raise ValueError(str(error).replace("`frames`", "`image`")) from None
    sizes = {}
    for path in paths:
        try:
            with Image.open(path) as frame:
                sizes.setdefault(frame.size, path.name)
        except OSError as error:
            raise ValueError(f"cannot read frame {path.name!r} of `image` {str(folder)!r}: {error}") from error
    if len(sizes) > 1:
        listed = ", ".join(f"{height}x{width} ({name})" for (width, height), name in sorted(sizes.items()))
        raise ValueError(f"the frames of `image` {str(folder)!r} must all have one size, got {listed}")
    return tuple(paths)
