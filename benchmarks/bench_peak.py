"""Peak memory of the default call (a verified crop) against the full image, as the image and n_steps grow.

Each call runs in a fresh process, after a small warm-up call, and reports its peak memory above what was in
use before it (as ``bench_budget.py`` measures it: the peak resident set size, reset before the call, on a CPU;
CUDA's allocator peak on a GPU). *default*: ``LAM.attribute`` with its
defaults (``crop="auto"``: one forward and backward pass of the whole image finds and checks the region,
then the path runs on the crop); *full*: ``crop=False`` (every step on the whole image, in the default
chunks). *forward only*: one forward pass of the whole image without gradients, the least that any check
of a crop against the whole image costs. Window 16x16 at the centre.

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
from lam_captum.models import build_model

MODES = ("default", "full", "forward only")


def measure(name: str, height: int, width: int, mode: str, steps: int, device: torch.device) -> tuple[float, float]:
    """``(seconds, peak growth in MiB)`` of one call."""
    model = build_model(name).to(device)
    lam = LAM(model)
    lam.attribute(torch.rand(1, 3, 16, 16, device=device), (24, 24, 16), n_steps=1)  # kernels and libraries
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(device)
    window = (height * 4 // 2 - 8, width * 4 // 2 - 8, 16)
    if mode == "forward only":
        return measured(torch.no_grad()(lambda: model(image)), device)
    crop = "auto" if mode == "default" else False
    return measured(lambda: lam.attribute(image, window, n_steps=steps, crop=crop), device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="edsr-baseline,default")
    parser.add_argument("--sizes", default="64x64,128x128,256x256,339x510", help="LR sizes, HxW")
    parser.add_argument("--steps", default="10,50", help="n_steps of the default call")
    parser.add_argument("--full-steps", type=int, default=2,
                        help="n_steps of the full image (its peak is one chunk's, whatever the steps)")
    parser.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        name, height, width, mode, steps = args.one
        seconds, peak = measure(name, int(height), int(width), mode, int(steps), torch.device(args.device))
        print(f"{seconds} {peak}")
        return
    step_counts = [int(v) for v in args.steps.split(",")]
    cases = [("default", steps) for steps in step_counts] + [("full", args.full_steps), ("forward only", 0)]
    print(f"{args.device}, torch {torch.__version__}; peak growth (seconds) of each call, in a fresh process")
    header = " | ".join(f"{mode} ({steps} steps)" if steps else mode for mode, steps in cases)
    print(f"| model | LR size | {header} |")
    print("|---|---:|" + "---:|" * len(cases))
    for name in args.models.split(","):
        for size in args.sizes.split(","):
            height, width = size.split("x")
            cells = []
            for mode, steps in cases:
                command = [sys.executable, __file__, "--device", args.device, "--one", name, height, width, mode,
                           str(steps)]
                result = subprocess.run(command, capture_output=True, text=True)
                if result.returncode:
                    cells.append("failed")
                    continue
                seconds, peak = map(float, result.stdout.split())
                cells.append(f"{peak:.0f} MiB ({seconds:.1f} s)")
            print(f"| {name} | {size} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
