"""LAM's speed and memory against a literal loop of the demo and against the floor, side by side.

On an EDSR-baseline-sized model (16 blocks, 64 channels, x4) at 64x64 LR with 50 steps, in one run:
- the demo's scheme as a literal loop: one path point at a time, ``.backward()`` (fills parameter grads);
- the floor: the same path points through forward + input-gradient backward, nothing else;
- ``LAM.attribute`` at several ``internal_batch_size`` values, with peak memory.

    python benchmarks/bench_lam.py                 # CPU, the issue's setting
    python benchmarks/bench_lam.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from lam_captum import LAM
from lam_captum._core.lam import default_internal_batch_size
from lam_captum.functional import Window, blur_path, gradient_detector
from lam_captum.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_lam import demo_gradient_detector  # noqa: E402  (the literal reference of the tests)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device: torch.device, repeats: int) -> float:
    """Median wall time of ``function()`` over ``repeats`` runs, after one warm-up run."""
    function()
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def demo_loop(model, x: torch.Tensor, window: Window, n_steps: int) -> torch.Tensor:
    """The official demo's loop: one point at a time, ``.backward()``, NaN -> 0, mean of grad * derivative."""
    points, derivatives = blur_path(x, n_steps=n_steps)
    total = torch.zeros_like(x[0])
    for point, derivative in zip(points[0], derivatives[0]):
        point = point.clone().requires_grad_(True)
        demo_gradient_detector(model(point[None]), window.top, window.left, window.height).backward()
        total += torch.nan_to_num(point.grad) * derivative
    model.zero_grad(set_to_none=True)
    return total / n_steps


def floor(model, x: torch.Tensor, window: Window, n_steps: int, rows: int) -> None:
    """Only the unavoidable work: the path points through forward and input-gradient backward."""
    points = blur_path(x, n_steps=n_steps)[0][0]
    for start in range(0, n_steps, rows):
        chunk = points[start : start + rows].clone().requires_grad_(True)
        torch.autograd.grad(gradient_detector(model(chunk), window).sum(), chunk)


def peak_memory(function, device: torch.device) -> float:
    """Peak memory of one call in MiB: CUDA's allocator peak above what was allocated before, or the growth
    of the peak RSS on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        function()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set size
    before = _status_kib("VmRSS")
    function()
    return (_status_kib("VmHWM") - before) / 1024


def _status_kib(field: str) -> int:
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith(field + ":"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=64, help="LR side")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,4,8,16,50", help="internal_batch_size values to measure")
    parser.add_argument("--fp32", action="store_true", help="TF32 off for the demo loop and the floor too, as "
                        "LAM turns it off on a GPU: every side computes the same numbers")
    args = parser.parse_args()
    if args.fp32:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model("edsr-baseline", scale=4).to(device).eval()
    x = torch.rand(1, 3, args.size, args.size, device=device)
    window = Window.square(args.size * 2 - 8, args.size * 2 - 8, 16)
    lam = LAM(model)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"EDSR-baseline x4 (16x64), LR {args.size}x{args.size}, {args.steps} steps, {device} ({card}), "
          f"torch {torch.__version__}, median of {args.repeats}")

    demo = timed(lambda: demo_loop(model, x, window, args.steps), device, args.repeats)
    demo_memory = peak_memory(lambda: demo_loop(model, x, window, args.steps), device)
    print(f"{'demo loop (batch 1, .backward())':<36} {demo:8.3f} s, peak {demo_memory:.0f} MiB, TF32 convolutions "
          f"{torch.backends.cudnn.allow_tf32} outside LAM")
    rows_list = [int(value) for value in args.batch_sizes.split(",")]
    results = []
    for rows in rows_list:
        seconds = timed(lambda: lam.attribute(x, window, n_steps=args.steps, internal_batch_size=rows), device,
                        args.repeats)
        floor_seconds = timed(lambda: floor(model, x, window, args.steps, rows), device, args.repeats)
        memory = peak_memory(lambda: lam.attribute(x, window, n_steps=args.steps, internal_batch_size=rows), device)
        results.append((rows, seconds, floor_seconds, memory))
    print(f"{'internal_batch_size':>20} {'LAM s':>8} {'floor s':>8} {'LAM/demo':>9} {'LAM/floor':>10} {'peak MiB':>9}")
    for rows, seconds, floor_seconds, memory in results:
        print(f"{rows:>20} {seconds:8.3f} {floor_seconds:8.3f} {seconds / demo:9.2f} {seconds / floor_seconds:10.2f} "
              f"{memory:9.0f}")
    default = default_internal_batch_size(device, args.size, args.size)
    seconds = timed(lambda: lam.attribute(x, window, n_steps=args.steps), device, args.repeats)
    memory = peak_memory(lambda: lam.attribute(x, window, n_steps=args.steps), device)
    print(f"default ({default}): {seconds:.2f} s = {seconds / demo:.2f}x the demo loop "
          f"({demo / seconds:.1f}x faster), peak {memory:.0f} MiB")


if __name__ == "__main__":
    main()
