"""The ``lam-captum`` command: explain one window of one image in one command.

``lam-captum`` alone runs the built-in model on the built-in photo. ``lam-captum sweep STUDY`` runs a
whole study (see :mod:`lam_captum.sweep`). The flags of the popular unofficial LAM tool are accepted as
aliases (``--imgpath``, ``--modelpath``, ``--w``, ``--h``, ``--window_size``, ``--fold``, ...).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from pathlib import Path

import torch

from lam_captum._atomic import check_writable_folder
from lam_captum._core.settings import LAMSettings
from lam_captum._flags import (
    OneLineParser,
    add_setting_flags,
    check_model_runs,
    checked_scale,
    device_from_flag,
    flags_named,
    input_from_flags,
    model_flags,
    model_from_flags,
    run_reported,
    settings_from_flags,
)
from lam_captum.functional import Window
from lam_captum.functional._detectors import detector_margin
from lam_captum.pictures import FIGURE_FORMATS, di_text

# The built-in photo is explained on a 256x256 crop of the face (LR 64x64, the paper's usual size), with
# the window on the rim of the spectacles, where an SR network must rebuild a sharp, curved edge.
DEFAULT_CROP = (80, 120, 256, 256)
DEFAULT_WINDOW = (106, 96, 16)
# `lam-captum NAME ...` runs the module's own command line; anything else is the single-image command.
SUBCOMMANDS = {"sweep": "lam_captum.sweep.cli", "compare": "lam_captum.compare_cli", "erf": "lam_captum._erf_cli"}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="lam-captum",
        description="Local Attribution Map of one window of a super-resolution network's output. "
        "With no arguments: the built-in x4 model on the built-in photo. Other commands: `lam-captum sweep` (studies), "
        "`lam-captum compare` (the comparison figure), `lam-captum erf` (effective receptive field); each has --help.",
    )
    source = parser.add_argument_group("image and model")
    source.add_argument("image", nargs="?", help="HR image to downscale (default: the built-in photo)")
    source.add_argument("--imgpath", dest="image_option", metavar="PATH", help="alias of the image argument")
    source.add_argument("--frames", metavar="DIR", help="explain a video SR model on this folder of frames (in the "
                        "order of their names; HR frames, downscaled like an image unless --lr)")
    source.add_argument("--lr", action="store_true", help="the image already is the LR input: do not downscale")
    source.add_argument("--crop", type=int, nargs=4, metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"),
                        help="explain this part of the image only (image pixels; default on the built-in photo: "
                        f"{' '.join(map(str, DEFAULT_CROP))})")
    source.add_argument("--grayscale", action="store_true", help="read the image as one channel (Y / grey models)")
    source.add_argument("--degrade", metavar="SPEC", help="degrade the LR input first, for restoration models: "
                        "noise:SIGMA (0-255 scale), jpeg:Q or blur:S (the clean image stays the reference)")
    source.add_argument("--seed", type=int, default=0, help="seed of --degrade noise (default: 0)")
    source.add_argument("--model", help="built-in name (default, edsr-baseline, edsr), package.module:Class or "
                        "path/to/file.py:Class (default: 'default'; 'edsr-baseline' when only weights are given)")
    source.add_argument("--model-args", default="{}", metavar="JSON", help='constructor arguments, e.g. \'{"rgb_range": 255}\'')
    source.add_argument("--weights", "--modelpath", metavar="PATH", help="checkpoint to load (weights only, never code)")
    source.add_argument("--scale", "--zoomfactor", type=int, metavar="S",
                        help="SR scale used to downscale the HR image (default: the model's, else 4)")
    window = parser.add_argument_group("window, in SR-output pixels")
    window.add_argument("--top", "--h", type=int, help=f"top row (default: {DEFAULT_WINDOW[0]} on the built-in photo, "
                        "else the centre)")
    window.add_argument("--left", "--w", type=int, help="left column")
    window.add_argument("--size", "--window_size", type=int, default=16, help="window side (default: 16)")
    window.add_argument("--frame", type=int, help="with --frames: the output frame that holds the window "
                        "(default: the centre, ceil(T / 2) - 1)")
    lam = parser.add_argument_group("LAM")
    add_setting_flags(lam)
    lam.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the GPU when there is one)")
    output = parser.add_argument_group("output")
    output.add_argument("--alpha", type=float, default=0.5, help="weight of the LR image in the blends (default: 0.5)")
    output.add_argument("--output", "--output_dir", default="lam_output", metavar="DIR", help="folder (default: lam_output)")
    output.add_argument("--kde", nargs="?", const="true", type=str.lower, choices=("true", "false"),
                        help="accepted for the unofficial tool's users; the KDE blend is always drawn (it is fast here)")
    output.add_argument("--signed", action="store_true", help="also write signed.png: the signed attribution, "
                        "red positive and blue negative (the map itself takes the absolute value)")
    output.add_argument("--format", dest="formats", nargs="+", choices=FIGURE_FORMATS, default=["png"],
                        help="formats of the figure (default: png); pdf and svg keep the labels as text")
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Every failure is one line on stderr, never a traceback: 2 for bad input (a flag, the image, the model,
    the device, the output folder), 1 for an unexpected error (named by its type), 130 for Ctrl-C.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in SUBCOMMANDS:
        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    args = build_parser().parse_args(argv)
    status, outcome = run_reported("lam-captum", lambda: _run(args))
    if outcome is None:
        return status
    result, folder = outcome
    from lam_captum.explain import SAVED_FILES
    from lam_captum.video import CLIP_SAVED_FILES, ClipResult

    gini = "" if math.isnan(result.gini) else f", Gini {result.gini:.4f}"
    print(f"{di_text(result.di)} (LR {result.lr_size[0]}x{result.lr_size[1]}, x{result.scale}){gini}, "
          f"convergence delta {result.delta:.4g}, {result.seconds:.1f} s on {result.device}")
    written = list(CLIP_SAVED_FILES) if isinstance(result, ClipResult) else [
        *SAVED_FILES, *(["signed.png"] if args.signed else []),
        *(f"figure.{format}" for format in args.formats if format != "png")]
    print(f"results in {folder}/: {', '.join(sorted(written))}")
    return 0


def _run(args: argparse.Namespace):
    from lam_captum.explain import explain
    from lam_captum.imageio import default_image_path

    settings = settings_from_flags(args)
    _check_numbers(args)
    check_writable_folder(args.output, "--output")
    if args.frames is not None or args.frame is not None:
        return _run_clip(args, settings)
    image_path = _image_path(args, default_image_path())
    spec, model, scale = _model(args)
    # The default crop and window belong to the built-in photo as the default, not to its file named by hand.
    builtin = args.image is None and args.image_option is None
    crop = args.crop or (DEFAULT_CROP if builtin else None)
    with flags_named({"`path`": "`--imgpath`" if args.image_option else "the image argument"}):
        lr, hr = input_from_flags(image_path, scale=scale, crop=crop, lr=args.lr, grayscale=args.grayscale)
    if args.degrade:
        lr = _degraded(lr, args.degrade, args.seed)
    device = device_from_flag(args.device)
    scale = checked_scale(args, scale, check_model_runs(model, spec, lr, device, grayscale=args.grayscale))
    window = _window(args, lr, scale, builtin=builtin and args.crop is None, margin=detector_margin(settings.detector))
    result = explain(model, lr, window, settings, hr=hr, alpha=args.alpha, device=device,
                     show_progress=not args.no_progress)
    metadata = {"image": str(image_path), "crop": list(crop) if crop else None, "model": spec,
                "model_args": json.loads(args.model_args), "weights": args.weights,
                "degrade": args.degrade, "seed": args.seed if args.degrade else None}
    folder = result.save(args.output, metadata=metadata, extra_pictures=("signed",) if args.signed else (),
                         figure_formats=args.formats)
    return result, folder


def _degraded(lr: torch.Tensor, spec: str, seed: int) -> torch.Tensor:
    """The LR input degraded by ``--degrade`` (its clean version stays the HR reference)."""
    from lam_captum.degrade import degrade

    with flags_named({"`spec`": "`--degrade`"}):
        return degrade(lr, spec, seed=seed)


def _run_clip(args: argparse.Namespace, settings: LAMSettings):
    """``--frames``: video LAM on a folder of frames, with ``--frame`` choosing the output frame."""
    from lam_captum.video import explain_clip, frame_paths

    if args.frames is None:
        raise ValueError("`--frame` chooses a frame of a clip: give the clip's folder with `--frames`")
    if args.image or args.image_option:
        raise ValueError("give an image or `--frames`, not both")
    # A clip's results are its strip, profile and window pictures: the image figure's options have no file to go to.
    if args.signed:
        raise ValueError("`--signed` draws an image's signed map: a clip's results (`--frames`) have no such picture")
    if args.formats != ["png"]:
        raise ValueError(f"`--format` {' '.join(args.formats)} is the image figure's: a clip's pictures (`--frames`) "
                         "are PNG only")
    with flags_named({"`frames`": "`--frames`"}):
        paths = frame_paths(args.frames)
    spec, model, scale = _model(args)
    frames = [input_from_flags(path, scale=scale, crop=args.crop, lr=args.lr, grayscale=args.grayscale)
              for path in paths]
    sizes = {tuple(lr.shape) for lr, _ in frames}
    if len(sizes) > 1:
        raise ValueError(f"the frames of `--frames` {args.frames!r} must all have one size, got {sorted(sizes)}")
    clip = torch.stack([lr for lr, _ in frames])
    hr = None if args.lr else torch.stack([hr for _, hr in frames])
    if args.degrade:
        # Each frame its own noise, as a camera's: the seeds --seed, --seed + 1, ...
        clip = torch.stack([_degraded(frame, args.degrade, args.seed + index) for index, frame in enumerate(clip)])
    device = device_from_flag(args.device)
    scale = checked_scale(args, scale, check_model_runs(model, spec, clip, device, grayscale=args.grayscale))
    with flags_named({"`frame`": "`--frame`"}):
        window = _window(args, clip[0], scale, builtin=False, margin=detector_margin(settings.detector))
        result = explain_clip(model, clip, window, settings, frame=args.frame,
                              hr=hr, alpha=args.alpha, device=device, show_progress=not args.no_progress)
    metadata = {"frame_files": [str(path) for path in paths], "crop": args.crop, "model": spec,
                "model_args": json.loads(args.model_args), "weights": args.weights,
                "degrade": args.degrade, "seed": args.seed if args.degrade else None}
    return result, result.save(args.output, metadata=metadata)


def _check_numbers(args: argparse.Namespace) -> None:
    """Check the numeric flags up front, naming each flag as the user typed it (or its clean name)."""
    if not 0 <= args.alpha <= 1:
        raise ValueError(f"`--alpha` must be in [0, 1], got {args.alpha}")
    if args.size < 1:
        raise ValueError(f"`--size` must be a positive integer, got {args.size}")
    for flag, value in (("--top", args.top), ("--left", args.left)):
        if value is not None and value < 0:
            raise ValueError(f"`{flag}` must be >= 0, got {value}")


def _image_path(args: argparse.Namespace, default: Path) -> Path:
    if args.image and args.image_option:
        raise ValueError("give the image once: as the argument or as `--imgpath`, not both")
    if not (args.image or args.image_option):
        return default
    path = Path(args.image or args.image_option)
    if not path.is_file():
        given = "the image argument" if args.image else "`--imgpath`"
        raise FileNotFoundError(f"{given} {str(path)!r} is not an existing file")
    return path


def _window(args: argparse.Namespace, lr: torch.Tensor, scale: int, *, builtin: bool,
            margin: int) -> tuple[int, int, int]:
    """The window of ``--top``, ``--left`` and ``--size`` (centred where not given), inside the SR output less the
    ``margin`` the detector reads beyond it."""
    height, width = lr.shape[-2] * scale, lr.shape[-1] * scale
    centre = DEFAULT_WINDOW[:2] if builtin and scale == 4 and args.size == 16 else (
        max(0, (height - args.size) // 2), max(0, (width - args.size) // 2))
    top = args.top if args.top is not None else centre[0]
    left = args.left if args.left is not None else centre[1]
    if not Window.square(top, left, args.size).fits(height, width, margin):
        given = ", ".join(f"`{flag}` {value}" for flag, value, typed in (
            ("--top", top, args.top is not None), ("--left", left, args.left is not None), ("--size", args.size, True))
            if typed)
        less = f" less {margin} pixel at the bottom and right (the gradient detector reads one more)" if margin else ""
        raise ValueError(f"the window ({given}) must lie inside the {height}x{width} SR output{less} (the "
                         f"{lr.shape[-2]}x{lr.shape[-1]} LR input at x{scale})")
    return top, left, args.size


def _model(args: argparse.Namespace) -> tuple[str, torch.nn.Module, int]:
    """``--model`` (EDSR-baseline when only ``--weights`` are given, as the unofficial tool does), built and
    loaded, and the scale: ``--scale``, else the model's own, else 4."""
    spec = args.model or ("edsr-baseline" if args.weights else "default")
    with flags_named(model_flags(args.scale is not None)):
        model = model_from_flags(spec, args.model_args, args.weights, args.scale)
    scale = args.scale if args.scale is not None else int(getattr(model, "scale", 4))
    if scale < 1:
        raise ValueError(f"`--scale` must be a positive integer, got {scale}")
    return spec, model, scale


if __name__ == "__main__":
    raise SystemExit(main())
