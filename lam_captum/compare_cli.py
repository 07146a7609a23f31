"""``lam-captum compare``: the comparison figure of several models on several windows of one image.

``lam-captum compare IMAGE --model A --model B --weights B.pt --window TOP LEFT SIZE --window ...``
writes ``comparison.png`` (and ``.pdf`` / ``.svg`` on request) and ``summary.json`` to the output folder.
The ``--weights``, ``--model-args`` and ``--name`` that follow a ``--model`` belong to that model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lam_captum._atomic import check_writable_folder
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
from lam_captum.cli import DEFAULT_CROP
from lam_captum.pictures import di_text

if TYPE_CHECKING:
    from lam_captum.compare import Comparison

_MODEL_OPTIONS = {"--weights": "weights", "--model-args": "model_args", "--name": "name"}


class ModelAction(argparse.Action):
    """``--model SPEC`` starts a new model entry in ``namespace.models``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: str,
                 option_string: str | None = None) -> None:
        models = list(getattr(namespace, self.dest) or [])
        models.append({"spec": values, "weights": None, "model_args": None, "name": None})
        setattr(namespace, self.dest, models)


class ModelOptionAction(argparse.Action):
    """``--weights``, ``--model-args`` and ``--name`` set an option of the latest ``--model``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: str,
                 option_string: str | None = None) -> None:
        models = getattr(namespace, "models", None)
        if not models:
            parser.error(f"`{option_string}` must follow the `--model` it belongs to, got {values!r} before any `--model`")
        key = _MODEL_OPTIONS[option_string]
        if models[-1][key] is not None:
            parser.error(f"`{option_string}` given twice for `--model` {models[-1]['spec']!r}: "
                         f"{models[-1][key]!r} and {values!r}")
        models[-1][key] = values


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="lam-captum compare",
        description="LAM of several models on several windows of one image, side by side with their DI: "
        "the comparison figure of LAM papers.",
    )
    source = parser.add_argument_group("image")
    source.add_argument("image", nargs="?", help="HR image to downscale (default: the built-in photo, cropped to "
                        f"{' '.join(map(str, DEFAULT_CROP))})")
    source.add_argument("--lr", action="store_true", help="the image already is the LR input: do not downscale")
    source.add_argument("--crop", type=int, nargs=4, metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"),
                        help="use this part of the image only (image pixels)")
    source.add_argument("--grayscale", action="store_true", help="read the image as one channel (Y / grey models)")
    source.add_argument("--scale", type=int, metavar="S", help="SR scale used to downscale the HR image "
                        "(default: the first model's, else 4)")
    models = parser.add_argument_group("models, one column each; the options after a --model belong to it")
    models.add_argument("--model", dest="models", action=ModelAction, required=True, metavar="SPEC",
                        help="built-in name (default, edsr-baseline, edsr), package.module:Class or "
                        "path/to/file.py:Class; repeat for each model")
    models.add_argument("--weights", action=ModelOptionAction, metavar="PATH", help="the model's checkpoint")
    models.add_argument("--model-args", action=ModelOptionAction, metavar="JSON",
                        help='the model\'s constructor arguments, e.g. \'{"rgb_range": 255}\'')
    models.add_argument("--name", action=ModelOptionAction, help="the model's label in the figure (default: SPEC)")
    windows = parser.add_argument_group("windows, one row each, in SR-output pixels")
    windows.add_argument("--window", dest="windows", type=int, nargs=3, action="append", required=True,
                         metavar=("TOP", "LEFT", "SIZE"), help="a window; repeat for each window")
    lam = parser.add_argument_group("LAM")
    add_setting_flags(lam)
    lam.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the GPU when there is one)")
    output = parser.add_argument_group("output")
    output.add_argument("--kde", action="store_true", help="show the KDE blend in the cells instead of the heat blend")
    output.add_argument("--zoom", action="store_true", help="show in each row only the part of the image that "
                        "holds 99%% of every model's attribution and the window, upscaled")
    output.add_argument("--alpha", type=float, default=0.5, help="weight of the LR image in the blends (default: 0.5)")
    output.add_argument("--output", default="lam_compare", metavar="DIR", help="folder (default: lam_compare)")
    output.add_argument("--format", dest="formats", nargs="+", choices=("png", "pdf", "svg"), default=["png"],
                        help="figure formats (default: png); pdf and svg keep the labels as text")
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lam-captum compare``; returns the exit status (0 success, 2 bad input, 1 unexpected error, 130 Ctrl-C)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    status, outcome = run_reported("lam-captum compare", lambda: _run(args))
    if outcome is None:
        return status
    comparison, written = outcome
    for row, window in enumerate(comparison.windows):
        for column, name in enumerate(comparison.models):
            result = comparison.results[row][column]
            print(f"window {row + 1} ({window}), {name}: {di_text(result.di)} (LR {result.lr_size[0]}x"
                  f"{result.lr_size[1]})")
    print(f"results in {written[0].parent}/: {', '.join(path.name for path in written)}")
    return 0


def _run(args: argparse.Namespace) -> tuple[Comparison, list[Path]]:
    from lam_captum.compare import compare
    from lam_captum.imageio import default_image_path

    settings = settings_from_flags(args)
    if not 0 <= args.alpha <= 1:
        raise ValueError(f"`--alpha` must be in [0, 1], got {args.alpha}")
    check_writable_folder(args.output, "--output")
    models = {}
    for entry in args.models:
        name = entry["name"] or entry["spec"]
        if name in models:
            raise ValueError(f"two models are named {name!r}: give each a `--name`")
        with flags_named(model_flags(args.scale is not None)):
            models[name] = model_from_flags(entry["spec"], entry["model_args"], entry["weights"], args.scale,
                                            owner=entry["spec"])
    scale = args.scale if args.scale is not None else int(getattr(next(iter(models.values())), "scale", 4))
    image_path = Path(args.image) if args.image else default_image_path()
    if not image_path.is_file():
        raise FileNotFoundError(f"the image argument {str(image_path)!r} is not an existing file")
    crop = args.crop or (DEFAULT_CROP if args.image is None else None)
    with flags_named({"`path`": "the image argument"}):
        lr, hr = input_from_flags(image_path, scale=scale, crop=crop, lr=args.lr, grayscale=args.grayscale)
    device = device_from_flag(args.device)
    # Each model once on the image before any path: the wrong channels or scale fail now, naming the flag.
    for name, model in models.items():
        checked_scale(args, scale, check_model_runs(model, name, lr, device, grayscale=args.grayscale))
    with flags_named({"`window`": "`--window`", "`windows`": "`--window`"}):
        comparison = compare(models, lr, [tuple(window) for window in args.windows], settings, hr=hr,
                             blend="kde" if args.kde else "heat", zoom=args.zoom, alpha=args.alpha, device=device,
                             show_progress=not args.no_progress)
    metadata = {"image": str(image_path), "crop": crop, "specs": {name: entry for name, entry in zip(models, args.models)}}
    return comparison, comparison.save(args.output, args.formats, metadata=metadata)


if __name__ == "__main__":
    raise SystemExit(main())
