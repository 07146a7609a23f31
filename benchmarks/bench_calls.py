"""K windows of one image on a GPU: how many model calls and backward passes each way of using crops makes.

On a GPU a small crop's pass costs about what its calls cost, not its pixels (benchmarks/README.md, run 3), so
the number of calls through the model is what decides there. This script counts them for K windows of one
image, three ways: one ``attribute`` call per window; ``attribute_windows`` with windows close together
sharing one crop (``stacks_crops`` off); and ``attribute_windows`` as on a GPU, every window on a crop of its
own, crops of one shape stacked into the same calls and checked together (unless the crops have more shapes
than shared crops have groups: then the shared crops, the row repeats the one above). It also counts
the rows and pixels through the model, times each way and compares the attributions with one window at a time.

On a CPU it makes the GPU's choices (crop sides multiples of 8, the GPU's budget of pixels per call without
the free-memory cap, one vectorised backward pass for the K gradients of a shared crop), so the counts are
those of a GPU run; the times are the CPU's and say nothing about a GPU's. On a GPU it uses LAM's own choices.

    python benchmarks/bench_calls.py                        # default model, 16 windows of 128x128, 50 steps
    python benchmarks/bench_calls.py --steps 5 --size 64    # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn

from lam_captum import LAM
from lam_captum._core import _region, _windows
from lam_captum._core import lam as _lam
from lam_captum.models import build_model


class Counted(nn.Module):
    """The model, counting its calls, rows and pixels."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = self.rows = self.pixels = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        self.pixels += x.shape[0] * x.shape[-2] * x.shape[-1]
        return self.model(x)


@contextlib.contextmanager
def counting_backward() -> Iterator[list[int]]:
    """Count the calls of ``torch.autograd.grad`` (one per backward pass, a vectorised one included)."""
    grad, count = torch.autograd.grad, [0]

    def counted(*args, **kwargs):
        count[0] += 1
        return grad(*args, **kwargs)

    torch.autograd.grad = counted
    try:
        yield count
    finally:
        torch.autograd.grad = grad


def gpu_choices_on_the_cpu() -> None:
    """LAM's GPU choices, on the CPU: crop shapes, the budget of pixels per call, vectorised K gradients."""
    for module in (_region, _windows):
        module.crop_quantum = lambda device: _region._GPU_CROP_QUANTUM
    budget = _lam.default_internal_batch_size
    _lam.default_internal_batch_size = lambda device, height, width, windows=1, **_: budget(
        torch.device("cuda"), height, width, windows)
    _lam._window_share = lambda device, windows: 1 + _lam._MEMORY_PER_EXTRA_WINDOW * (windows - 1)
    _windows._input_gradients = _windows.vectorised_gradients


def stacking(on: bool) -> None:
    for module in (_region, _windows):
        module.stacks_crops = lambda device: on


def measured(model: Counted, run: Callable[[], torch.Tensor], device: torch.device) -> dict:
    model.calls = model.rows = model.pixels = 0
    with counting_backward() as backward:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        attribution = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
    return {"calls": model.calls, "backward": backward[0], "rows": model.rows, "pixels": model.pixels,
            "seconds": seconds, "attribution": attribution}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="default")
    parser.add_argument("--size", type=int, default=128, help="LR side")
    parser.add_argument("--windows", type=int, default=16, help="random 16x16 windows (SR pixels)")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        gpu_choices_on_the_cpu()
    torch.manual_seed(0)
    model = Counted(build_model(args.model).eval()).to(device)
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, args.size, args.size, generator=generator).to(device)
    scale = 4
    tops = torch.randint(0, args.size * scale - 17, (args.windows, 2), generator=generator).tolist()
    windows = [(top, left, 16) for top, left in tops]
    lam = LAM(model)
    lam.attribute_windows(image, windows[:2], n_steps=2)  # first use of the kernels, not counted
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU, with the GPU's choices"
    print(f"{args.model}, {args.windows} random 16x16 windows of one {args.size}x{args.size} image, {args.steps} "
          f"steps; {card}; torch {torch.__version__}")
    print(f"{'way':<34} {'calls':>6} {'backward':>9} {'rows':>6} {'Mpx':>7} {'s':>7} {'max diff / max':>15}")
    stacking(False)
    alone = measured(model, lambda: torch.cat([lam.attribute(image, w, n_steps=args.steps) for w in windows]), device)
    shared = measured(model, lambda: lam.attribute_windows(image, windows, n_steps=args.steps), device)
    stacking(True)
    stacked = measured(model, lambda: lam.attribute_windows(image, windows, n_steps=args.steps), device)
    reference = alone["attribution"]
    for name, row in [("one attribute call per window", alone), ("attribute_windows, shared crops", shared),
                      ("attribute_windows, GPU's choice", stacked)]:
        difference = float((row["attribution"] - reference).abs().max() / reference.abs().max())
        print(f"{name:<34} {row['calls']:>6} {row['backward']:>9} {row['rows']:>6} {row['pixels'] / 1e6:>7.2f} "
              f"{row['seconds']:>7.2f} {difference:>15.1e}", flush=True)


if __name__ == "__main__":
    main()
