"""The memory budget behind the default ``internal_batch_size``: time per path step and peak memory vs rows.

``default_internal_batch_size`` gives each model call a budget of LR pixels (``rows x H x W``): 2 x 64 x 64 on
a CPU, 50 x 64 x 64 on a GPU. This script measures what the budget buys: for each model, LR size and number
of windows K (K = 1: ``LAM.attribute``; K > 1: ``attribute_windows``, whose calls also hold K input
gradients), one full 50-step run (``crop=False``, so that the image size is the one named) at each chunk
size ``rows``, timed after a one-chunk warm-up, and the peak memory of that run. It then recommends the
smallest budget of LR pixels per call that brings every setting within ``--tolerance`` of its fastest
time per step, with the memory that budget costs, beside the current budget.

    python benchmarks/bench_budget.py --device cuda
    python benchmarks/bench_budget.py --models default --sizes 32 --rows 1,2,4 --steps 8   # a CPU check
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from lam_captum import LAM
from lam_captum._core.lam import default_internal_batch_size
from lam_captum.models import build_model


@dataclasses.dataclass(frozen=True)
class Setting:
    """One model, LR side and window count."""

    model: str
    size: int
    windows: int

    @property
    def label(self) -> str:
        return f"{self.model:<14} {f'{self.size}x{self.size}':>9} {self.windows:>3}"


@dataclasses.dataclass(frozen=True)
class Point:
    """One chunk size of one setting: seconds per path step and peak MiB (None: out of memory)."""

    rows: int
    step_seconds: float | None
    peak_mib: float | None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kib(field: str) -> int:
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith(field + ":"))


def measured(function, device: torch.device) -> tuple[float, float]:
    """``(seconds, peak MiB)`` of one call: CUDA's allocator peak above what was allocated before, or on a
    CPU the growth of the process's peak resident memory."""
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set size
        before = _status_kib("VmRSS") * 1024
    started = time.perf_counter()
    function()
    synchronize(device)
    elapsed = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _status_kib("VmHWM") * 1024
    return elapsed, (peak - before) / 2**20


def _is_out_of_memory(error: RuntimeError) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error)


def measure_setting(setting: Setting, rows_list: list[int], steps: int, device: torch.device) -> list[Point]:
    """Seconds per path step and peak memory of a ``steps``-step run at each chunk size in ``rows_list``."""
    model = build_model(setting.model, scale=4).to(device).eval()
    lam = LAM(model)
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, setting.size, setting.size, generator=generator).to(device)
    side = setting.size * 4
    tops = torch.randint(0, side - 16, (setting.windows, 2), generator=generator).tolist()
    windows = [(top, left, 16) for top, left in tops]

    def run(rows: int, n_steps: int) -> None:
        if setting.windows == 1:
            lam.attribute(image, windows[0], n_steps=n_steps, internal_batch_size=rows, crop=False)
        else:
            lam.attribute_windows(image, windows, n_steps=n_steps, internal_batch_size=rows, crop=False)

    points = []
    default_rows = min(default_internal_batch_size(device, setting.size, setting.size), steps)
    for rows in sorted({*rows_list, default_rows}):
        try:
            run(rows, rows)  # one chunk: loads kernels and grows the allocator's pool for this shape
            elapsed, peak = measured(lambda: run(rows, steps), device)
        except RuntimeError as error:
            if not _is_out_of_memory(error):
                raise
            points.append(Point(rows, None, None))
            break  # larger chunks need more memory still
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        points.append(Point(rows, elapsed / steps, peak))
        print(f"{setting.label} {rows:>5} {rows * setting.size ** 2:>10} {elapsed / steps * 1000:>10.2f} "
              f"{peak:>9.0f}", flush=True)
    return points


def fastest_rows(points: list[Point], tolerance: float) -> tuple[int, float]:
    """The smallest chunk within ``tolerance`` of the setting's fastest time per step, and that fastest time."""
    timed = [point for point in points if point.step_seconds is not None]
    best = min(point.step_seconds for point in timed)
    return next(point.rows for point in timed if point.step_seconds <= best * (1 + tolerance)), best


def at_budget(points: list[Point], rows: int) -> Point | None:
    """The measured point of the largest measured chunk size not above ``rows``."""
    below = [point for point in points if point.rows <= rows and point.step_seconds is not None]
    return below[-1] if below else None


def report(results: dict[Setting, list[Point]], tolerance: float, device: torch.device) -> None:
    print(f"\nPer setting: the smallest chunk within {tolerance:.0%} of its fastest time per step")
    print(f"{'model':<14} {'LR':>9} {'K':>3} {'rows':>5} {'LR px/call':>10} {'best ms/step':>13} {'peak MiB':>9} "
          f"{'MiB/row':>8}")
    needed = []
    for setting, points in results.items():
        rows, best = fastest_rows(points, tolerance)
        point = at_budget(points, rows)
        per_row = max(p.peak_mib / p.rows for p in points if p.peak_mib is not None)
        needed.append(rows * setting.size ** 2)
        print(f"{setting.label} {rows:>5} {rows * setting.size ** 2:>10} {best * 1000:>13.2f} {point.peak_mib:>9.0f} "
              f"{per_row:>8.1f}")
    # The budget default_internal_batch_size spends on this device, read back from the rows it gives.
    current = default_internal_batch_size(device, 1, 1)
    # Pixels are counted in 64x64 tiles, the unit the budget constants are written in.
    recommended = -(-max(needed) // 4096) * 4096
    for name, budget in (("current", current), ("recommended", recommended)):
        print(f"\n{name} budget: {budget} LR px per call = {budget / 4096:g} x 64x64; the rows it gives, their "
              "time per step against the fastest, and their peak memory:")
        for setting, points in results.items():
            rows = min(max(1, budget // setting.size ** 2), points[-1].rows)
            point = at_budget(points, rows)
            _, best = fastest_rows(points, tolerance)
            if point is None:
                print(f"  {setting.label}: {rows} rows, not measured (out of memory)")
                continue
            print(f"  {setting.label}: {rows} rows (measured at {point.rows}): {point.step_seconds / best:.2f}x the "
                  f"fastest time per step, peak {point.peak_mib:.0f} MiB")
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / 2**20
        print(f"\n{torch.cuda.get_device_name(device)}: {total:.0f} MiB in all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="edsr-baseline,default")
    parser.add_argument("--sizes", default="64,128", help="LR sides (K = 1)")
    parser.add_argument("--rows", default="1,2,4,8,16,25,50", help="chunk sizes (path steps per model call)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--windows", type=int, default=16, help="K of the attribute_windows settings (0: none)")
    parser.add_argument("--windows-size", type=int, default=64, help="LR side of the attribute_windows settings")
    parser.add_argument("--tolerance", type=float, default=0.10)
    args = parser.parse_args()
    device = torch.device(args.device)
    models = args.models.split(",")
    settings = [Setting(model, int(size), 1) for model in models for size in args.sizes.split(",")]
    if args.windows > 1:
        settings += [Setting(model, args.windows_size, args.windows) for model in models]
    rows_list = sorted({min(int(rows), args.steps) for rows in args.rows.split(",")})
    print(f"{device}, torch {torch.__version__}, {args.steps} steps per run, crop=False, one run each")
    print(f"{'model':<14} {'LR':>9} {'K':>3} {'rows':>5} {'LR px/call':>10} {'ms/step':>10} {'peak MiB':>9}")
    results = {setting: measure_setting(setting, rows_list, args.steps, device) for setting in settings}
    report(results, args.tolerance, device)


if __name__ == "__main__":
    main()
