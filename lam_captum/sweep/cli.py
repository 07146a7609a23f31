"""``lam-captum sweep``: run a LAM study from a YAML or JSON file."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from lam_captum.sweep._lock import OutputFolderError
from lam_captum.sweep._study import StudyError, load_study

PROG = "lam-captum sweep"

_EPILOG = """\
The study file lists `models` (built-in names, module:Class or file.py:Class, with `weights`, `args`,
`scale`), `images` (files, folders or `builtin`; `lr: true` for LR inputs; optional `crop`; `clip: true`
for a video model's folder of frames, with `frame`) with their
`windows` ([top, left, size], {grid: N, size: S} or {random: N, size: S, seed: K}), and the `lam`
parameters; see examples/study.yaml. Results: OUTPUT/probes.csv and probes.jsonl (one row per probe),
models.csv, plots/, records/ (one JSON per finished probe). Re-running skips finished probes.
Exit status: 0 when no probe in the table failed, 1 when some did (see its `error` column), 2 for bad input
or an output folder that another sweep is writing to (one sweep per folder; a killed one's lock is taken over),
130 for Ctrl-C (the finished probes are kept).
"""


class _UsageError(Exception):
    """A bad command line, reported in one line."""


class _Parser(argparse.ArgumentParser):
    @staticmethod
    def error(message: str) -> NoReturn:
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Run LAM over every (model, image, window) probe of a study.",
                     epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", help="the study file (.yaml, .yml or .json)")
    parser.add_argument("-o", "--output", help="results folder (default: the study's `output`, else "
                                               "STUDY-sweep next to the study file)")
    parser.add_argument("--maps", action="store_true", default=None, help="save each probe's attribution and map "
                                                                          "(maps/<probe id>.npz)")
    parser.add_argument("--pictures", action="store_true", default=None, help="save each probe's pictures "
                                                                              "(pictures/<probe id>/*.png)")
    parser.add_argument("--limit", type=_non_negative, metavar="N",
                        help="compute at most N pending probes in this run (0: only rebuild the tables)")
    parser.add_argument("--check", action="store_true", help="validate the study, print the probe count, exit")
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, ... "
                                                              "(default: auto)")
    parser.add_argument("--devices", default="auto", type=_devices, help="Lightning devices: auto, a count, "
                                                                         "or a list like 0,1 (default: auto)")
    parser.add_argument("--strategy", default="auto", help="Lightning strategy: auto, ddp, ddp_spawn, ... "
                                                           "(default: auto)")
    parser.add_argument("--num-nodes", default=1, type=_positive, help="number of nodes (default: 1)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    return parser


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return int(text)


def _devices(text: str) -> int | str:
    # Lightning reads "0,1" as device indices and "2" as a count, but only an int counts CPU processes.
    return int(text) if text.isdigit() else text


def main(argv: list[str] | None = None) -> int:
    """Run ``lam-captum sweep`` with ``argv`` (the arguments after ``sweep``).

    Args:
        argv: Command-line arguments; default ``sys.argv[1:]``.

    Returns:
        The exit status: 0 when no probe in the table failed, 1 when some did, 2 for bad input, 130 for Ctrl-C.

    Example:
        >>> main(["no-such-study.yaml", "--check"])
        2
    """
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
        study = load_study(args.study)
    except SystemExit as exit_request:  # --help
        return int(exit_request.code or 0)
    except (_UsageError, StudyError) as error:
        return _fail(str(error))
    if args.output is not None and not args.output.strip():
        return _fail(f"`--output` must name a folder, got {args.output!r} (for the working folder write '.')")
    if args.check:
        print(f"{PROG}: {args.study}: valid; {len(study.probes())} probes ({len(study.models)} models, "
              f"{len(study.images)} images)")
        return 0
    from lam_captum.sweep._engine import TrainerSettingsError, run_sweep

    try:
        report = run_sweep(study, output=args.output, maps=args.maps, pictures=args.pictures, limit=args.limit,
                           accelerator=args.accelerator, devices=args.devices, strategy=args.strategy,
                           num_nodes=args.num_nodes, progress=args.progress)
    except (TrainerSettingsError, OutputFolderError) as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the finished probes are kept, and running the study again goes on from them",
              file=sys.stderr)
        return 130
    if report is None:  # not global rank 0: rank 0 reports
        return 0
    print(f"{PROG}: {len(report.rows)} probes: {report.count('ok')} ok, {report.count('error')} failed, "
          f"{report.count('pending')} pending ({report.computed} computed in this run); table: "
          f"{report.output / 'probes.csv'}")
    return 1 if report.count("error") else 0


def _fail(message: str) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2
