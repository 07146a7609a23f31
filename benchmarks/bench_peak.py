"""Peak memory of the default call (a verified crop) against the full image, as the image and n_steps grow.

Each call runs in a fresh process, after a small warm-up call, and reports its peak memory above what was in
use before it (as ``bench_budget.py`` measures it: the peak resident set size, reset before the call, on a CPU;
CUDA's allocator peak on a GPU). *default*: ``LAM.attribute`` with its
defaults (``crop="auto"``: one forward and backward pass of the whole image finds and checks the region,
then the path runs on the crop); *scarce*: the default call where that pass would not fit (the free memory
reported as 90% of LAM's own estimate for it), so that the whole image runs forward only, without gradients,
and the window's gradient comes from crops; *full*: ``crop=False`` (every step on the whole image, in the
default chunks). *forward only*: one forward pass of the whole image without gradients, the least that any
check of a crop against the whole image costs. Window 16x16 at the centre. A second table compares the
attributions of *default* and *scarce*; a third does both for K random windows of ``attribute_windows``
on the largest image.

    python benchmarks/bench_peak.py
    python benchmarks/bench_peak.py --device cuda --sizes 256x256,339x510
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import torch
from bench_budget import measured

from lam_captum import LAM
from lam_captum._core import _region
from lam_captum._core._memory import estimate_call_memory
from lam_captum.models import build_model

MODES = ("default", "scarce", "full", "forward only")


def scarce_memory(model: torch.nn.Module, image: torch.Tensor) -> None:
    """Report as free 90% of what LAM estimates one forward and backward pass of ``image`` needs, as on a machine
    where it would not fit; only LAM's choice of how to find the region reads it."""
    with torch.enable_grad():
        needed = estimate_call_memory(model, image, 1)
    _region.available_memory = lambda device: int(0.9 * needed)


def setup(name: str, height: int, width: int, windows: int, device: torch.device):
    """The model (seeded, so that every process builds the same one), the image and the windows: the 16x16 one at
    the centre, or ``windows`` random ones."""
    torch.manual_seed(0)
    model = build_model(name).to(device)
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(device)
    if not windows:
        return model, image, (height * 4 // 2 - 8, width * 4 // 2 - 8, 16)
    corners = torch.rand(windows, 2, generator=torch.Generator().manual_seed(1))
    return model, image, [(int(top * (height * 4 - 17)), int(left * (width * 4 - 17)), 16) for top, left in corners]


def explain(lam: LAM, image: torch.Tensor, window, steps: int, crop="auto") -> torch.Tensor:
    if isinstance(window, list):
        return lam.attribute_windows(image, window, n_steps=steps, crop=crop)
    return lam.attribute(image, window, n_steps=steps, crop=crop)


def measure(name: str, height: int, width: int, mode: str, steps: int, windows: int,
            device: torch.device) -> tuple[float, float]:
    """``(seconds, peak growth in MiB)`` of one call."""
    model, image, window = setup(name, height, width, windows, device)
    lam = LAM(model)
    lam.attribute(torch.rand(1, 3, 16, 16, device=device), (24, 24, 16), n_steps=1)  # kernels and libraries
    if mode == "forward only":
        return measured(torch.no_grad()(lambda: model(image)), device)
    if mode == "scarce":
        scarce_memory(model, image)
    return measured(lambda: explain(lam, image, window, steps, crop=False if mode == "full" else "auto"), device)


def compare(name: str, height: int, width: int, steps: int, windows: int, device: torch.device) -> float:
    """Max difference of the default call's attribution with and without the memory for the full image's pass
    with gradients, relative to the attribution's max."""
    model, image, window = setup(name, height, width, windows, device)
    default = explain(LAM(model), image, window, steps)
    found = _region.available_memory
    try:
        scarce_memory(model, image)
        scarce = explain(LAM(model), image, window, steps)
    finally:
        _region.available_memory = found
    return float((scarce - default).abs().max() / default.abs().max())


def run_one(device: str, name: str, size: str, mode: str, steps: int, windows: int) -> str:
    """A table cell: one call in a fresh process."""
    height, width = size.split("x")
    command = [sys.executable, __file__, "--device", device, "--one", name, height, width, mode, str(steps),
               str(windows)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        return "failed"
    seconds, peak = map(float, result.stdout.split())
    return f"{peak:.0f} MiB ({seconds:.1f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="edsr-baseline,default")
    parser.add_argument("--sizes", default="64x64,128x128,256x256,339x510", help="LR sizes, HxW")
    parser.add_argument("--steps", default="10,50", help="n_steps of the default call")
    parser.add_argument("--full-steps", type=int, default=2,
                        help="n_steps of the full image (its peak is one chunk's, whatever the steps)")
    parser.add_argument("--windows", type=int, default=16,
                        help="K random windows of attribute_windows in the last table (0: leave it out)")
    parser.add_argument("--one", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        name, height, width, mode, steps, windows = args.one
        seconds, peak = measure(name, int(height), int(width), mode, int(steps), int(windows),
                                torch.device(args.device))
        print(f"{seconds} {peak}")
        return
    models, sizes = args.models.split(","), args.sizes.split(",")
    step_counts = [int(v) for v in args.steps.split(",")]
    cases = [("default", steps) for steps in step_counts] + [("scarce", step_counts[0]), ("full", args.full_steps),
                                                              ("forward only", 0)]
    print(f"{args.device}, torch {torch.__version__}; peak growth (seconds) of each call, in a fresh process")
    header = " | ".join(f"{mode} ({steps} steps)" if steps else mode for mode, steps in cases)
    print(f"| model | LR size | {header} |")
    print("|---|---:|" + "---:|" * len(cases))
    for name in models:
        for size in sizes:
            cells = [run_one(args.device, name, size, mode, steps, 0) for mode, steps in cases]
            print(f"| {name} | {size} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n*default* against *scarce*, {step_counts[0]} steps: max difference / max, the same call in one process")
    print("| model | LR size | max difference / max |")
    print("|---|---:|---:|")
    for name in models:
        for size in sizes:
            height, width = map(int, size.split("x"))
            difference = compare(name, height, width, step_counts[0], 0, torch.device(args.device))
            print(f"| {name} | {size} | {difference:.2g} |", flush=True)
    if not args.windows:
        return
    steps = step_counts[0]
    print(f"\n`attribute_windows` of {args.windows} random 16x16 windows, {steps} steps, at {sizes[-1]}: peak growth "
          "(seconds) in a fresh process, and max difference / max in one process")
    print("| model | default | scarce | max difference / max |")
    print("|---|---:|---:|---:|")
    height, width = map(int, sizes[-1].split("x"))
    for name in models:
        cells = [run_one(args.device, name, sizes[-1], mode, steps, args.windows) for mode in ("default", "scarce")]
        difference = compare(name, height, width, steps, args.windows, torch.device(args.device))
        print(f"| {name} | " + " | ".join(cells) + f" | {difference:.2g} |", flush=True)


if __name__ == "__main__":
    main()
