"""Make docs/comparison.png: LAM of three networks on two windows of the built-in photo, side by side.

The columns: bicubic upsampling (a network-free reference: its attribution can only reach the 4x4
neighbourhood of the bicubic kernel), the built-in ``default`` model (trained by this project) and
EDSR-baseline with random weights (no checkpoint ships with the package: a wide receptive field that
has learned nothing). The rows: the rim of the spectacles and the gold braid on the cap.

    python examples/make_comparison.py                      # the paper's 50 steps, a few minutes on a CPU
    python examples/make_comparison.py --steps 4 --output /tmp/quick
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from lam_captum.compare import compare
from lam_captum.imageio import default_image_path, hr_to_lr, load_image
from lam_captum.models import build_model

# The 256x256 face crop that `lam-captum` explains by default (LR 64x64, the paper's usual size).
CROP = (80, 120, 256, 256)
WINDOWS = [(106, 96, 16), (8, 152, 16)]  # the spectacles' rim, the cap's braid (SR pixels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="LAM path steps (default: 50)")
    parser.add_argument("--output", default="lam_compare", help="folder for the figure (PNG, PDF) and summary.json")
    parser.add_argument("--docs", type=Path, help="also write the PNG here (docs/comparison.png)")
    args = parser.parse_args()

    top, left, height, width = CROP
    lr, hr = hr_to_lr(load_image(default_image_path())[:, top : top + height, left : left + width], scale=4)
    torch.manual_seed(0)  # the random EDSR-baseline weights
    models = {
        "bicubic": torch.nn.Upsample(scale_factor=4, mode="bicubic"),
        "default (trained)": build_model("default"),
        "EDSR-baseline (random)": build_model("edsr-baseline"),
    }
    comparison = compare(models, lr, WINDOWS, hr=hr, n_steps=args.steps, zoom=True, output=args.output,
                         formats=("png", "pdf"), show_progress=True)
    for row, window in enumerate(comparison.windows):
        for column, name in enumerate(comparison.models):
            print(f"window {row + 1} ({window}), {name}: DI {comparison.results[row][column].di:.2f} (LR 64x64)")
    if args.docs is not None:
        args.docs.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(comparison.figure).save(args.docs, optimize=True)


if __name__ == "__main__":
    main()
