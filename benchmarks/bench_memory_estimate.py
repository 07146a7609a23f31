"""LAM's memory estimate (the one behind its "needs more memory than is free" warning) against real peaks.

Each setting runs in a fresh process: the estimate from the probe forward pass, then one model call of
``rows`` path steps; on a CPU the growth of the process's peak resident memory is measured, on a GPU
``torch.cuda.max_memory_allocated``. A ratio near 1 means the warning fires where runs stop fitting. A second
table does the same for one forward pass of the whole image without gradients (``rows`` 0): the least that
checking a crop against the whole image costs, which LAM estimates where a pass with gradients would not fit.

    python benchmarks/bench_memory_estimate.py                  # CPU
    python benchmarks/bench_memory_estimate.py --device cuda    # GPU
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys

import torch

from lam_captum import LAM
from lam_captum._core._memory import estimate_call_memory, estimate_forward_memory
from lam_captum.models import build_model

SETTINGS = [("edsr-baseline", 128, 1), ("edsr-baseline", 128, 2), ("edsr-baseline", 256, 1), ("default", 128, 4),
            ("default", 192, 2)]
FORWARD_SETTINGS = [("edsr-baseline", 256, 0), ("edsr-baseline", 512, 0), ("default", 256, 0), ("default", 512, 0),
                    ("default", 1000, 0)]


def measure(model_name: str, size: int, rows: int, device: torch.device) -> tuple[int, int]:
    """``(estimated bytes, measured peak bytes)`` of one model call of ``rows`` steps of ``size`` x ``size`` (0: one
    forward pass without gradients)."""
    model = build_model(model_name, scale=4).eval().to(device)
    lam = LAM(model)
    lam.attribute(torch.rand(1, 3, 16, 16, device=device), (0, 0, 8), n_steps=1)  # loads kernels and libraries
    inputs = torch.rand(1, 3, size, size, device=device)
    with torch.enable_grad():
        estimate = estimate_call_memory(model, inputs, rows) if rows else estimate_forward_memory(model, inputs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if rows:
        lam.attribute(inputs, (0, 0, 8), n_steps=rows, internal_batch_size=rows, crop=False)
    else:
        with torch.no_grad():
            model(inputs)
    if device.type == "cuda":
        return estimate, torch.cuda.max_memory_allocated(device) - before
    return estimate, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "SIZE", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.one:
        estimate, peak = measure(args.one[0], int(args.one[1]), int(args.one[2]), device)
        print(f"{estimate} {peak}")
        return
    for settings in (SETTINGS, FORWARD_SETTINGS):
        print("\n| model | LR size | rows | estimate MB | measured peak MB | estimate / peak |")
        print("|---|---:|---:|---:|---:|---:|")
        for model_name, size, rows in settings:
            command = [sys.executable, __file__, "--device", args.device, "--one", model_name, str(size), str(rows)]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            estimate, peak = map(int, result.stdout.split())
            print(f"| {model_name} | {size}x{size} | {rows or 'forward only'} | {estimate / 1e6:.0f} | "
                  f"{peak / 1e6:.0f} | {estimate / max(peak, 1):.2f} |", flush=True)


if __name__ == "__main__":
    main()
