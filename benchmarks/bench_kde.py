"""Time scipy's ``gaussian_kde`` against ``kde_map`` on LAM-like maps, side by side in one run.

scipy evaluates the weighted KDE point by point (O(n^2) in the pixel count); ``kde_map`` gives
the same numbers from one FFT convolution. Usage::

    python benchmarks/bench_kde.py --sizes 64 128 256
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lam_captum.functional import kde_map

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_lam import demo_kde_map  # noqa: E402  (the literal reference of the tests)


def lam_like_map(size: int, seed: int = 0) -> np.ndarray:
    """A square map like LAM's: a bright elongated blob off centre on weak noise, max 1."""
    rows, columns = np.mgrid[0:size, 0:size] / size
    blob = np.exp(-((rows - 0.45) ** 2 / 0.004 + (columns - 0.55) ** 2 / 0.01))
    noisy = blob + 0.03 * np.random.default_rng(seed).random((size, size)) ** 4
    return noisy / noisy.max()


def fastest_seconds(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    """The best wall time of ``repeats`` calls, and the last result."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256], help="square map sides")
    parser.add_argument("--repeats", type=int, default=20, help="kde_map calls per size (best is kept)")
    arguments = parser.parse_args()
    print(f"kde_map: best of {arguments.repeats} calls; scipy gaussian_kde: timed once per size")
    print(f"{'size':>9} {'scipy s':>10} {'kde_map s':>10} {'speed-up':>9} {'max |diff|':>11}")
    for size in arguments.sizes:
        attribution_map = lam_like_map(size)
        weights = torch.from_numpy(attribution_map)
        kde_map(weights)  # the first call pays one-off FFT planning and allocation
        fft_seconds, density = fastest_seconds(lambda: kde_map(weights), arguments.repeats)
        scipy_seconds, reference = fastest_seconds(lambda: demo_kde_map(attribution_map), 1)
        difference = float(np.abs(density.numpy() - reference).max())
        print(
            f"{f'{size}x{size}':>9} {scipy_seconds:>10.3f} {fft_seconds:>10.5f} "
            f"{scipy_seconds / fft_seconds:>8.0f}x {difference:>11.2e}"
        )


if __name__ == "__main__":
    main()
