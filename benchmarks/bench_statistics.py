"""What the search for a statistic of the whole image costs: forward passes watched and not, side by side.

Every default call (``crop="auto"``) records the operations of two forward passes it makes anyway, the full
image's at the baseline and the first crop's check (``lam_captum._core._statistics``), and lines them up. This
times, for each model and size, a forward pass without gradients plain and watched (median of ``--repeats``),
the comparison of the full image's record with a crop's, and the default call of 50 steps, and prints what the
watching adds to the call.

    python benchmarks/bench_statistics.py                    # CPU: EDSR-baseline, the built-in model, an RRDBNet
    python benchmarks/bench_statistics.py --device cuda --sizes 256x256,339x510
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from lam_captum import LAM
from lam_captum._core._statistics import OperationsOf, whole_image_statistic
from lam_captum.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from architectures import TinyRRDBNet  # noqa: E402 - the tests' RRDBNet, at ESRGAN's size below


def median_seconds(run, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def watched(model, image):
    with torch.no_grad(), OperationsOf(image) as watch:
        model(image)
    return watch.operations()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="64x64,256x256")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-steps", type=int, default=50)
    args = parser.parse_args()
    device = torch.device(args.device)
    models = {"EDSR-baseline": build_model("edsr-baseline"), "default": build_model("default"),
              "RRDBNet (23 blocks, 64 ch)": TinyRRDBNet(channels=64, growth=32, n_blocks=23)}
    print("| model | LR | ops recorded | forward s | watched s | comparing s | default call s | added to the call |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, model in models.items():
        model = model.eval().to(device)
        # ESRGAN's RRDBNet at its first size only: the full image is what it computes on (its receptive field
        # is wider than these images), at 1.5 s a forward pass of 64x64 on two CPU cores.
        for size in args.sizes.split(",")[: 1 if name.startswith("RRDBNet") else None]:
            height, width = (int(side) for side in size.split("x"))
            image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(device)
            crop = image[..., : height * 3 // 4, : width * 3 // 4].contiguous()

            def plain(model=model, image=image):
                with torch.no_grad():
                    model(image)

            plain_s = median_seconds(plain, args.repeats, device)
            watched_s = median_seconds(lambda model=model, image=image: watched(model, image), args.repeats, device)
            full, cropped = watched(model, image), watched(model, crop)
            comparing_s = median_seconds(lambda full=full, cropped=cropped: whole_image_statistic(full, cropped),
                                      args.repeats, device)
            with torch.no_grad():
                scale = model(image[..., :8, :8]).shape[-1] // 8
            window = (height * scale // 2 - 8, width * scale // 2 - 8, 16)
            call_s = median_seconds(lambda model=model, image=image: LAM(model).attribute(
                image, window, n_steps=args.n_steps), 1, device)
            # The call watches the full image's pass and one crop's; the crop's costs less.
            added = 2 * (watched_s - plain_s) + comparing_s
            print(f"| {name} | {size} | {len(full.names)} | {plain_s:.3f} | {watched_s:.3f} | {comparing_s:.4f} | "
                  f"{call_s:.2f} | {added:.3f} s ({100 * added / call_s:.1f}%) |")


if __name__ == "__main__":
    main()
