"""LAM at paper scale: the default call (on the smallest verified crop) against the full-image computation,
and K windows of one image through ``attribute_windows`` against one window at a time. Side by side, one run.

Whole images: for each model and LR size, the default ``LAM.attribute`` call at ``--steps`` steps against
``crop=False`` (the whole image through the model at every step, the floor of the full-image computation).
The full image can take minutes per step on a CPU, so it runs ``--floor-steps`` steps per size and is
extrapolated per step; the maximum difference is measured between the two calls at those steps.

K windows: ``attribute_windows`` with K windows against K calls of ``attribute``, time per window.
``--backward`` picks how the K input gradients of a path step are computed (default: LAM's choice per device,
one vectorised pass on a GPU, K passes on a CPU), to measure the other choice on the same device; the default
chunk size follows it (K passes in sequence hold one window's gradients at a time, so their chunks are as
large as one window's). ``--crop-quantum`` sets the multiple the crops' sides are grown to (LAM's choice: 8 on a
GPU, where each new input shape costs every convolution a cuDNN plan, 1 on a CPU), to time the other choice.
``--stack-crops`` chooses how K windows use crops (LAM's choice: on a GPU each window on a crop of its own,
crops of one shape stacked into the same model calls; on a CPU windows close together sharing one crop).

    python benchmarks/bench_scale.py                       # the issue's table (slow on a CPU)
    python benchmarks/bench_scale.py --sizes 64x64 --models default --windows-steps 5
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time

import torch

from lam_captum import LAM
from lam_captum._core import _region, _windows
from lam_captum._core import lam as _lam
from lam_captum.models import build_model


def seconds(function) -> tuple[float, object]:
    """Wall time and result of ``function()``, waiting for the GPU's queued work before and after."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, result


def peak_mib(device: torch.device) -> str:
    """CUDA's allocator peak since the last :func:`seconds` call, in MiB ("-" on a CPU)."""
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}" if device.type == "cuda" else "-"


class _Decisions(logging.Handler):
    """Keeps what LAM logs (at debug level) about where it computes: a crop, or the full image and why."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("LAM on the "):
            self.messages.append(message.removeprefix("LAM on the "))


@contextlib.contextmanager
def decisions():
    """Collect LAM's crop decisions during the block (on a GPU, TF32 rounding can make a crop fail its check)."""
    logger = logging.getLogger("lam_captum._core._region")
    handler, level = _Decisions(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def warm_up(lam: LAM, device: torch.device) -> None:
    """One small call of each kind first, so that no figure pays for the first use of a kernel."""
    image = torch.rand(1, 3, 24, 24, device=device)
    lam.attribute(image, (40, 40, 16), n_steps=2)
    lam.attribute_windows(image, [(40, 40, 16), (8, 8, 16)], n_steps=2)


def centre_window(height: int, width: int, scale: int, size: int = 16) -> tuple[int, int, int]:
    return (height * scale // 2 - size // 2, width * scale // 2 - size // 2, size)


def best_of(repeats: int, function) -> tuple[float, object]:
    """The fastest of ``repeats`` timed calls (later calls find the image's shapes warm on a GPU)."""
    runs = [seconds(function) for _ in range(repeats)]
    return min(run[0] for run in runs), runs[-1][1]


def whole_images(models: list[str], sizes: list[tuple[int, int]], steps: int, floor_steps: dict[int, int],
                 device: torch.device, repeats: int = 1) -> None:
    print(f"\nWhole images: default call ({steps} steps) vs the full image (crop=False, per step x {steps}), "
          f"best of {repeats}")
    print(f"{'model':<14} {'LR HxW':>9} {'default s':>10} {'full s/step':>12} {'full s (x steps)':>17} "
          f"{'speed-up':>9} {'max diff / max':>15} {'peak MiB default':>17} {'peak MiB full':>14}")
    for name in models:
        model = build_model(name).to(device)
        lam = LAM(model)
        warm_up(lam, device)
        for height, width in sizes:
            image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(device)
            window = centre_window(height, width, 4)
            with decisions() as computed_on:
                default_s, _ = best_of(repeats, lambda: lam.attribute(image, window, n_steps=steps))
            default_peak = peak_mib(device)
            few = floor_steps.get(height * width, steps)
            full_s, full = best_of(repeats, lambda: lam.attribute(image, window, n_steps=few, crop=False))
            full_peak = peak_mib(device)
            cropped = lam.attribute(image, window, n_steps=few)
            difference = float((cropped - full).abs().max() / full.abs().max())
            per_step = full_s / few
            print(f"{name:<14} {f'{height}x{width}':>9} {default_s:10.3f} {per_step:12.4f} {per_step * steps:17.3f} "
                  f"{per_step * steps / default_s:8.1f}x {difference:15.1e} {default_peak:>17} {full_peak:>14}"
                  f"   (full measured at {few} steps; default computed on the {'; '.join(computed_on) or '?'})",
                  flush=True)


def many_windows(models: list[str], size: int, counts: list[int], steps: int, device: torch.device) -> None:
    print(f"\nK windows of one {size}x{size} image, {steps} steps: attribute_windows vs K calls of attribute")
    print(f"{'model':<14} {'crop':>6} {'K':>3} {'one at a time s/window':>23} {'together s/window':>18} "
          f"{'speed-up':>9} {'max diff / max':>15}")
    generator = torch.Generator().manual_seed(1)
    for name in models:
        model = build_model(name).to(device)
        lam = LAM(model)
        warm_up(lam, device)
        image = torch.rand(1, 3, size, size, generator=generator).to(device)
        for crop in (False, "auto"):
            for count in counts:
                tops = torch.randint(0, size * 4 - 17, (count, 2), generator=generator).tolist()
                windows = [(top, left, 16) for top, left in tops]
                alone_s, alone = seconds(lambda: torch.cat([lam.attribute(image, w, n_steps=steps, crop=crop)
                                                            for w in windows]))
                together_s, together = seconds(lambda: lam.attribute_windows(image, windows, n_steps=steps, crop=crop))
                difference = float((together - alone).abs().max() / alone.abs().max())
                print(f"{name:<14} {str(crop):>6} {count:>3} {alone_s / count:23.4f} {together_s / count:18.4f} "
                      f"{alone_s / together_s:8.2f}x {difference:15.1e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="edsr-baseline,default")
    parser.add_argument("--sizes", default="64x64,256x256,339x510", help="LR sizes, HxW")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--floor-steps", default="64x64:10,256x256:3,339x510:2",
                        help="steps of the full-image computation per size (extrapolated per step)")
    parser.add_argument("--windows-size", type=int, default=64)
    parser.add_argument("--windows", default="1,4,16", help="window counts K")
    parser.add_argument("--windows-steps", type=int, default=10)
    parser.add_argument("--windows-models", default="default,edsr-baseline")
    parser.add_argument("--skip", choices=["whole", "windows"], default=None)
    parser.add_argument("--backward", choices=["auto", "vectorised", "sequential"], default="auto",
                        help="K windows' input gradients: LAM's choice per device, or one of the two everywhere")
    parser.add_argument("--crop-quantum", type=int, default=None,
                        help="grow the crops' sides to multiples of this (default: LAM's choice per device)")
    parser.add_argument("--stack-crops", choices=["auto", "on", "off"], default="auto",
                        help="K windows: each on a crop of its own, crops of one shape in the same model calls "
                             "(on), or windows close together sharing one crop (off); default LAM's choice "
                             "per device (on for a GPU)")
    parser.add_argument("--repeats", type=int, default=1, help="whole images: best of this many calls of each")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--fp32", action="store_true",
                        help="on a GPU, full float32 convolutions and matmuls instead of torch's default TF32 "
                             "convolutions, whose rounding differs between a crop and the full image")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fp32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device(args.device)
    if args.backward != "auto":
        _windows._input_gradients = getattr(_windows, f"{args.backward}_gradients")
        # The memory budget follows the choice: K passes in sequence hold one window's gradients at a time
        # (chunks as large as one window's), one vectorised pass holds all K (chunks 1 + 0.5 (K - 1) times smaller).
        _lam._window_share = (lambda device, windows: 1.0) if args.backward == "sequential" else (
            lambda device, windows: 1 + _lam._MEMORY_PER_EXTRA_WINDOW * (windows - 1))
    if args.crop_quantum is not None:
        _region.crop_quantum = _windows.crop_quantum = lambda device: args.crop_quantum
    if args.stack_crops != "auto":
        _region.stacks_crops = _windows.stacks_crops = lambda device: args.stack_crops == "on"
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    floor_steps = {}
    for entry in args.floor_steps.split(","):
        size, count = entry.split(":")
        height, width = (int(v) for v in size.split("x"))
        floor_steps[height * width] = int(count)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    tf32 = f", TF32 convolutions {torch.backends.cudnn.allow_tf32}" if device.type == "cuda" else ""
    quantum = _region.crop_quantum(device)
    stacking = "each on its own crop, stacked" if _windows.stacks_crops(device) else "close ones sharing a crop"
    print(f"{device} ({card}), torch {torch.__version__}{tf32}, K windows' gradients: {args.backward}, crops' sides "
          f"multiples of {quantum}, K windows {stacking}, one run each")
    if args.skip != "whole":
        whole_images(args.models.split(","), sizes, args.steps, floor_steps, device, args.repeats)
    if args.skip != "windows":
        many_windows(args.windows_models.split(","), args.windows_size, [int(k) for k in args.windows.split(",")],
                     args.windows_steps, device)


if __name__ == "__main__":
    main()
