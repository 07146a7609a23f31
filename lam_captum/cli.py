"""The ``lam-captum`` command: explain one window of one image in one command.

``lam-captum`` alone runs the built-in model on the built-in photo. ``lam-captum sweep STUDY`` runs a
whole study (see :mod:`lam_captum.sweep`). The flags of the popular unofficial LAM tool are accepted as
aliases (``--imgpath``, ``--modelpath``, ``--w``, ``--h``, ``--window_size``, ``--fold``, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from lam_captum._core.settings import LAMSettings, SettingsError, setting_fields

# The built-in photo is explained on a 256x256 crop of the face (LR 64x64, the paper's usual size), with
# the window on the rim of the spectacles, where an SR network must rebuild a sharp, curved edge.
DEFAULT_CROP = (80, 120, 256, 256)
DEFAULT_WINDOW = (106, 96, 16)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lam-captum",
        description="Local Attribution Map of one window of a super-resolution network's output. "
        "With no arguments: the built-in x4 model on the built-in photo. `lam-captum sweep --help` runs studies.",
    )
    source = parser.add_argument_group("image and model")
    source.add_argument("image", nargs="?", help="HR image to downscale (default: the built-in photo)")
    source.add_argument("--imgpath", dest="image_option", metavar="PATH", help="alias of the image argument")
    source.add_argument("--lr", action="store_true", help="the image already is the LR input: do not downscale")
    source.add_argument("--crop", type=int, nargs=4, metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"),
                        help="explain this part of the image only (image pixels; default on the built-in photo: "
                        f"{' '.join(map(str, DEFAULT_CROP))})")
    source.add_argument("--grayscale", action="store_true", help="read the image as one channel (Y / grey models)")
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
    lam = parser.add_argument_group("LAM")
    for field in setting_fields():
        flag = field.metadata
        lam.add_argument(flag["flag"], *flag["aliases"], dest=field.name, type=flag["type"], default=field.default,
                         choices=flag["choices"], help=flag["help"])
    lam.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the GPU when there is one)")
    output = parser.add_argument_group("output")
    output.add_argument("--alpha", type=float, default=0.5, help="weight of the LR image in the blends (default: 0.5)")
    output.add_argument("--output", "--output_dir", default="lam_output", metavar="DIR", help="folder (default: lam_output)")
    output.add_argument("--kde", nargs="?", const="true", help="accepted for the unofficial tool's users; the KDE "
                        "blend is always drawn (it is fast here)")
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 2 bad input)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sweep"]:
        from lam_captum.sweep.cli import main as sweep_main

        return sweep_main(argv[1:])
    if argv[:1] == ["compare"]:
        from lam_captum.compare_cli import main as compare_main

        return compare_main(argv[1:])
    if argv[:1] == ["erf"]:
        from lam_captum._erf_cli import main as erf_main

        return erf_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result, folder = _run(args)
    except (ValueError, TypeError, OSError, ImportError, torch.OutOfMemoryError) as error:
        print(f"lam-captum: error: {error}", file=sys.stderr)
        return 2
    print(f"DI {result.di:.2f} (LR {result.lr_size[0]}x{result.lr_size[1]}, x{result.scale}), Gini {result.gini:.4f}, "
          f"convergence delta {result.delta:.4g}, {result.seconds:.1f} s on {result.device}")
    print(f"results in {folder}/: {', '.join(sorted(path.name for path in folder.iterdir()))}")
    return 0


def _run(args: argparse.Namespace):
    from lam_captum.explain import explain
    from lam_captum.imageio import default_image_path

    settings = _settings(args)
    _check_numbers(args)
    image_path = _image_path(args, default_image_path())
    spec = args.model or ("edsr-baseline" if args.weights else "default")
    model = _load_model(args, spec)
    scale = args.scale if args.scale is not None else int(getattr(model, "scale", 4))
    if scale < 1:
        raise ValueError(f"`--scale` must be a positive integer, got {scale}")
    builtin = image_path == default_image_path()
    lr, hr = _load_input(args, image_path, scale, args.crop or (DEFAULT_CROP if builtin else None))
    window = _window(args, lr, scale, builtin=builtin and args.crop is None)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = explain(model, lr, window, settings, hr=hr, alpha=args.alpha, device=_device(device),
                     show_progress=not args.no_progress)
    folder = result.save(args.output)
    summary = {"image": str(image_path), "model": spec, "weights": args.weights, **result.summary()}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result, folder


def _settings(args: argparse.Namespace) -> LAMSettings:
    """The LAM settings from their flags; an error names the flag instead of the setting."""
    try:
        return LAMSettings(**{field.name: getattr(args, field.name) for field in setting_fields()})
    except SettingsError as error:
        flag = next(field.metadata["flag"] for field in setting_fields() if field.name == error.field)
        raise ValueError(str(error).replace(f"`{error.field}`", f"`{flag}`")) from None


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
    return Path(args.image or args.image_option or default)


def _load_model(args: argparse.Namespace, spec: str) -> torch.nn.Module:
    from lam_captum.models import load_model

    try:
        model_args = json.loads(args.model_args)
    except json.JSONDecodeError as error:
        raise ValueError(f"`--model-args` must be a JSON object, got {args.model_args!r} ({error.msg})") from None
    if not isinstance(model_args, dict):
        raise ValueError(f"`--model-args` must be a JSON object, got {args.model_args!r}")
    # The x4 'default' model is not rebuilt for `--scale`: it downscales the image, and explain()
    # then reports a model whose output does not fit.
    scale = None if spec == "default" else args.scale
    return load_model(spec, model_args, weights=args.weights, scale=scale)


def _load_input(args: argparse.Namespace, path: Path, scale: int, crop: tuple[int, int, int, int] | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The LR input (and HR image); an error about an argument names its flag."""
    from lam_captum.imageio import InputError, load_input

    try:
        return load_input(path, scale=scale, crop=crop, lr=args.lr, mode="L" if args.grayscale else "RGB")
    except InputError as error:
        flag = {"crop": "--crop", "scale": "--scale"}[error.argument]
        raise ValueError(str(error).replace(f"`{error.argument}`", f"`{flag}`")) from None


def _window(args: argparse.Namespace, lr: torch.Tensor, scale: int, *, builtin: bool) -> tuple[int, int, int]:
    height, width = lr.shape[-2] * scale, lr.shape[-1] * scale
    centre = DEFAULT_WINDOW[:2] if builtin and scale == 4 and args.size == 16 else (
        max(0, (height - args.size) // 2), max(0, (width - args.size) // 2))
    top = args.top if args.top is not None else centre[0]
    left = args.left if args.left is not None else centre[1]
    return top, left, args.size


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"`--device` must be a torch device such as cpu or cuda:0, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`--device` {name!r} asks for a GPU, but torch sees none")
    return device


if __name__ == "__main__":
    raise SystemExit(main())
