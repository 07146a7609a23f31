"""The windows of an image: explicit ones checked, grids spread evenly, random ones drawn reproducibly.

Everything here works on one image at a time, in SR pixels, against the SR output that every model of
the study covers (``bounds``). Problems are returned as ``(location, message)`` pairs, the location
relative to the window list, so that the study reports them all at once under its own field names.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from lam_captum.functional import Window

if TYPE_CHECKING:
    from lam_captum.sweep._schema import GridWindows, RandomWindows

Location = tuple[str | int, ...]
Problem = tuple[Location, str]


def expand_windows(
    specs: Sequence[Window | GridWindows | RandomWindows], bounds: tuple[int, int], margin: int, seed: int,
    image_name: str,
) -> tuple[tuple[Window, ...], list[Problem]]:
    """The windows that ``specs`` describe on one image (duplicates dropped), and the problems found.

    Args:
        specs: Explicit windows, grids and random draws, as the study lists them.
        bounds: ``(height, width)`` of the SR output the windows must lie in.
        margin: Pixels the detector needs below and right of a window.
        seed: The seed of random draws that name none.
        image_name: The image's name (mixed into random draws, and named in messages).

    Returns:
        The windows, in the order of ``specs``, and ``(location, message)`` problems.

    Example:
        >>> windows, problems = expand_windows([Window(0, 0, 8, 8)], (16, 16), 0, seed=0, image_name="x")
        >>> windows, problems
        ((Window(top=0, left=0, height=8, width=8),), [])
    """
    windows: list[Window] = []
    problems: list[Problem] = []
    where = _bounds_text(image_name, bounds, margin)
    for index, spec in enumerate(specs):
        if isinstance(spec, Window):
            fits = spec.fits(*bounds, margin)
            windows += [spec] if fits else []
            problems += [] if fits else [((index,), f"window {spec} lies outside {where}")]
            continue
        generated, problem = _generated(spec, bounds, margin, seed, image_name)
        windows += generated
        problems += [((index, *problem[0]), problem[1])] if problem else []
    return tuple(dict.fromkeys(windows)), problems


def _generated(
    spec: GridWindows | RandomWindows, bounds: tuple[int, int], margin: int, seed: int, image_name: str
) -> tuple[list[Window], Problem | None]:
    size = spec.size
    where = _bounds_text(image_name, bounds, margin)
    room = (bounds[0] - margin - size[0] + 1, bounds[1] - margin - size[1] + 1)
    if min(room) < 1:
        return [], (("size",), f"a {size[0]}x{size[1]} window does not fit {where}")
    if hasattr(spec, "grid"):
        shape = spec.grid
        if shape[0] > room[0] or shape[1] > room[1]:
            return [], (("grid",), f"a {shape[0]}x{shape[1]} grid of {size[0]}x{size[1]} windows needs more "
                                   f"distinct positions than image {image_name!r} has ({room[0]}x{room[1]})")
        return grid_windows(shape, size, room), None
    if spec.random > room[0] * room[1]:
        return [], (("random",), f"{spec.random} distinct {size[0]}x{size[1]} windows do not fit {where} "
                                 f"({room[0] * room[1]} positions)")
    return random_windows(spec.random, size, room, seed if spec.seed is None else spec.seed, image_name), None


def grid_windows(shape: tuple[int, int], size: tuple[int, int], room: tuple[int, int]) -> list[Window]:
    """A ``shape`` grid of ``size`` windows over ``room`` top-left positions, corners included.

    Example:
        >>> [tuple(w)[:2] for w in grid_windows((1, 2), (16, 16), (49, 49))]
        [(24, 0), (24, 48)]
    """
    tops, lefts = _spread(shape[0], room[0] - 1), _spread(shape[1], room[1] - 1)
    return [Window(top, left, *size) for top in tops for left in lefts]


def _spread(count: int, last: int) -> list[int]:
    """``count`` distinct integers from 0 to ``last``, evenly spaced and rounded; one is centred."""
    if count == 1:
        return [last // 2]
    return [(2 * i * last + count - 1) // (2 * (count - 1)) for i in range(count)]


def random_windows(count: int, size: tuple[int, int], room: tuple[int, int], seed: int, image_name: str
                   ) -> list[Window]:
    """``count`` distinct window positions drawn uniformly; the same for the same seed and image name.

    The image name is mixed into the seed so that one study-level setting gives each image its own
    windows; the draw depends on nothing else, so every process of a run draws the same windows.

    Example:
        >>> random_windows(2, (16, 16), (49, 49), seed=0, image_name="baby") == \\
        ...     random_windows(2, (16, 16), (49, 49), seed=0, image_name="baby")
        True
    """
    generator = np.random.default_rng([seed, zlib.crc32(image_name.encode())])
    positions = generator.choice(room[0] * room[1], size=count, replace=False)
    return [Window(int(p) // room[1], int(p) % room[1], *size) for p in positions]


def _bounds_text(image_name: str, bounds: tuple[int, int], margin: int) -> str:
    text = f"the {bounds[0]}x{bounds[1]} SR output of image {image_name!r}"
    return text + (" (the gradient detector also needs one pixel below and right of it)" if margin else "")
