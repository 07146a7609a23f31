"""``lam-captum erf``: the effective receptive field of a network over a set of LR images."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lam_captum._flags import (
    OneLineParser,
    check_model_runs,
    device_from_flag,
    flags_named,
    model_flags,
    model_from_flags,
    run_reported,
)

# A 120x120 ERF is drawn 480 pixels wide: large enough to read, nearest so every pixel stays a square.
_PICTURE_PIXELS = 480


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="lam-captum erf",
        description="Effective receptive field (RepLKNet / MambaIR): the gradient of the output's centre pixel "
        "with respect to the input, clamped at zero, averaged over LR images resized to one size (nearest). "
        "Writes erf.png, erf.npy and summary.json with RepLKNet's area ratios.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="LR image files or folders of them")
    parser.add_argument("--model", default="default", help="built-in name (default, edsr-baseline, edsr), "
                        "package.module:Class or path/to/file.py:Class (default: 'default')")
    parser.add_argument("--model-args", default="{}", metavar="JSON", help="constructor arguments as a JSON object")
    parser.add_argument("--weights", metavar="PATH", help="checkpoint to load (weights only, never code)")
    parser.add_argument("--size", type=int, nargs=2, default=(120, 120), metavar=("HEIGHT", "WIDTH"),
                        help="every image is resized to this size with nearest interpolation (default: 120 120)")
    parser.add_argument("--grayscale", action="store_true", help="read the images as one channel")
    parser.add_argument("--linear", action="store_true", help="area ratios on the map itself instead of "
                        "RepLKNet's log10(map + 1)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model call (default: 8)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the GPU when there is one)")
    parser.add_argument("--output", default="erf_output", metavar="DIR", help="folder (default: erf_output)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``lam-captum erf``; returns the exit status (0 success, 2 bad input, 1 unexpected error, 130 Ctrl-C)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    status, outcome = run_reported("lam-captum erf", lambda: _run(args))
    if outcome is None:
        return status
    summary, folder = outcome
    ratios = ", ".join(f"{key}% {value['ratio']:.4f}" for key, value in summary["area_ratios"].items())
    print(f"ERF of {summary['images']} images ({summary['size'][0]}x{summary['size'][1]}): area ratios {ratios}")
    print(f"results in {folder}/: erf.png, erf.npy, summary.json")
    return 0


def _run(args: argparse.Namespace) -> tuple[dict[str, object], Path]:
    from lam_captum.erf import dataset_erf, erf_area_ratios, image_files
    from lam_captum.imageio import save_png
    from lam_captum.pictures import erf_picture

    _check_numbers(args)
    images = [path for source in args.images for path in (image_files(source) if Path(source).is_dir() else [Path(source)])]
    with flags_named(model_flags(scale_given=False)):
        model = model_from_flags(args.model, args.model_args, args.weights, None, scale_flag=False)
    device = device_from_flag(args.device)
    # The model once on an image of the images' channels and size: the wrong channels fail now, with the advice.
    check_model_runs(model, args.model, torch.full((1 if args.grayscale else 3, *args.size), 0.5), device,
                     grayscale=args.grayscale)
    started = time.perf_counter()
    with flags_named({"`path`": "the image"}):
        erf = dataset_erf(model, images, size=tuple(args.size), batch_size=args.batch_size,
                          mode="L" if args.grayscale else "RGB", device=device)
    seconds = time.perf_counter() - started
    ratios = erf_area_ratios(erf, log_scale=not args.linear)
    summary = {
        "model": args.model, "weights": args.weights, "images": len(images), "size": list(args.size),
        "log_scale": not args.linear,
        "area_ratios": {f"{100 * share:g}": square._asdict() for share, square in ratios.items()},
        "seconds": seconds, "device": str(device),
    }
    folder = Path(args.output)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "erf.npy", erf.numpy())
        (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    except OSError as error:
        raise OSError(f"cannot write the results to `--output` {str(folder)!r}: {error.strerror}") from error
    save_png(erf_picture(erf, scale=max(1, math.ceil(_PICTURE_PIXELS / max(args.size)))), folder / "erf.png")
    return summary, folder


def _check_numbers(args: argparse.Namespace) -> None:
    """Check the numeric flags up front, naming each flag as the user typed it."""
    if min(args.size) < 1:
        raise ValueError(f"`--size` must be two positive integers, got {args.size[0]} {args.size[1]}")
    if args.batch_size < 1:
        raise ValueError(f"`--batch-size` must be a positive integer, got {args.batch_size}")
