"""The full-image reference pass of ``attribute_windows``: K windows' backward passes, shared or one each.

Before LAM computes K windows on crops it passes the whole image once: one forward pass, and an input gradient
per window that finds the window's region and is the reference its crop is checked against. Windows far apart
share one backward pass (their regions predicted from the first window's, the shared gradient checked to stay
inside them). This script times that pass side by side in one run, shared against one backward pass per window
(the previous behaviour), and checks that both give the same gradients.

    python benchmarks/bench_references.py                       # 16 random windows, 128x128 and 256x256 LR
    python benchmarks/bench_references.py --sizes 64x64 --windows 4
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from lam_captum import LAMSettings
from lam_captum._core import _region
from lam_captum.functional import Window, gradient_detector
from lam_captum.models import build_model


def one_each(regions: list, offset: int) -> list[list[int]]:
    return [[k + offset] for k in range(len(regions))]


class PassCount(logging.Handler):
    """The number of backward passes ``window_references`` reports at debug level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.passes = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "full image's reference" in record.msg:
            self.passes = record.args[0]


def timed(model, image, footprints, shared: bool) -> tuple[float, int, list]:
    logger = logging.getLogger(_region.__name__)
    count, level = PassCount(), logger.level
    logger.addHandler(count)
    logger.setLevel(logging.DEBUG)
    colours = _region._colours
    if not shared:
        _region._colours = one_each
    try:
        started = time.perf_counter()
        with torch.enable_grad():
            references = _region.window_references(model, image, footprints, _region.PathBlur.of(LAMSettings()))
        if image.device.type == "cuda":
            torch.cuda.synchronize(image.device)
        seconds = time.perf_counter() - started
    finally:
        _region._colours = colours
        logger.removeHandler(count)
        logger.setLevel(level)
    return seconds, count.passes, references


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="default,edsr-baseline")
    parser.add_argument("--sizes", default="128x128,256x256", help="LR sizes, HxW")
    parser.add_argument("--windows", type=int, default=16, help="random 16x16 windows (SR pixels)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":  # full float32, as LAM computes (TF32 off)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    print(f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads; {args.windows} random 16x16 windows")
    print(f"{'model':<14} {'LR size':>8} {'one each s':>11} {'passes':>7} {'shared s':>9} {'passes':>7} "
          f"{'speed-up':>9} {'max diff / max':>15} {'same regions':>13}")
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = build_model(name).to(device).eval()
        for size in args.sizes.split(","):
            height, width = (int(v) for v in size.split("x"))
            generator = torch.Generator().manual_seed(1)
            image = torch.rand(1, 3, height, width, generator=generator).to(device)
            corners = torch.stack([torch.randint(0, 4 * height - 17, (args.windows,), generator=generator),
                                   torch.randint(0, 4 * width - 17, (args.windows,), generator=generator)], 1)
            footprints = [_region.detector_footprint(Window.square(top, left, 16), gradient_detector)
                          for top, left in corners.tolist()]
            timed(model, image, footprints[:1], shared=False)  # warm-up: the first pass at a size is slower
            alone_s, alone_passes, alone = timed(model, image, footprints, shared=False)
            shared_s, shared_passes, shared = timed(model, image, footprints, shared=True)
            difference = max(float((a.gradient - b.gradient).abs().max() / b.gradient.abs().max())
                             for a, b in zip(shared, alone))
            regions = all(_region.region_of(a) == _region.region_of(b) for a, b in zip(shared, alone))
            print(f"{name:<14} {size:>8} {alone_s:11.2f} {alone_passes:7d} {shared_s:9.2f} {shared_passes:7d} "
                  f"{alone_s / shared_s:8.2f}x {difference:15.1e} {str(regions):>13}", flush=True)


if __name__ == "__main__":
    main()
