"""The study file: which models, images and windows a sweep explains, validated before any work starts.

A study is read from YAML or JSON (or given as a mapping) and checked as a whole: every problem is
collected with the path of the offending field (``images[1].windows[0]``) and reported at once, so
that a long run never dies on a typo after hours of work.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from lam_captum.functional import Window
from lam_captum.functional._blur import INTEGRATION_METHODS

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp")
BUILTIN_IMAGE = "builtin"
DETECTORS = ("gradient", "intensity")
# Names become folder and file names of the results, so they keep to portable characters.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_PROBLEMS_SHOWN = 5
# Hashing large checkpoints once per process is enough; the key changes when the file does.
_FILE_DIGESTS: dict[tuple[Path, int, int], str] = {}

_TOP_KEYS = ("models", "images", "windows", "lam", "scale", "seed", "output", "maps", "pictures")
_MODEL_KEYS = ("spec", "name", "weights", "args", "scale")
_IMAGE_KEYS = ("path", "name", "lr", "crop", "windows")
_GRID_KEYS = ("grid", "size")
_RANDOM_KEYS = ("random", "size", "seed")


class StudyError(ValueError):
    """A study that cannot run; ``problems`` lists every problem found, each naming its field.

    Example:
        >>> str(StudyError(["`lam.sigma`: must be >= 0, got -1", "`scale`: must be >= 1, got 0"]))
        '2 problems in the study: `lam.sigma`: must be >= 0, got -1; `scale`: must be >= 1, got 0'
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = "; ".join(self.problems[:_PROBLEMS_SHOWN])
        more = f"; ... and {len(self.problems) - _PROBLEMS_SHOWN} more" if len(self.problems) > _PROBLEMS_SHOWN else ""
        prefix = f"{len(self.problems)} problems in the study: " if len(self.problems) > 1 else ""
        super().__init__(prefix + shown + more)


@dataclasses.dataclass(frozen=True)
class LAMSettings:
    """The LAM parameters of every probe; the keyword arguments of :func:`lam_captum.explain.explain`."""

    n_steps: int = 50
    sigma: float = 1.2
    kernel_size: int = 9
    method: str = "official"
    detector: str = "gradient"
    internal_batch_size: int | None = None
    alpha: float = 0.5

    @property
    def margin(self) -> int:
        """SR pixels the detector needs below and right of the window (the gradient looks one ahead)."""
        return 1 if self.detector == "gradient" else 0


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One network of the study.

    Attributes:
        name: Its label in the tables and result paths.
        spec: A built-in name, ``package.module:Class`` or ``/absolute/file.py:Class``.
        weights: Checkpoint to load, if any.
        args: Keyword arguments for the class (or for :func:`lam_captum.models.build_model`).
        scale: The upscaling factor the study expects of it (checked when it first runs).
        field: Where it came from in the study file, e.g. ``models[1]``.
        digest: Hash of everything above that changes its numbers, including the files' contents.
    """

    name: str
    spec: str
    weights: Path | None
    args: dict[str, Any]
    scale: int
    field: str
    digest: str


@dataclasses.dataclass(frozen=True)
class ImageEntry:
    """One image file of the study (a folder entry becomes one per file).

    Attributes:
        name: Its label in the tables and result paths.
        path: The image file.
        lr: Whether the file is already the LR input (then no HR, no PSNR).
        crop: ``(top, left, height, width)`` of the file to use, or None for all of it.
        size: ``(height, width)`` of the used region, in file pixels.
        field: Where it came from in the study file, e.g. ``images[0]``.
        digest: Hash of the file's contents and of how it is used.
    """

    name: str
    path: Path
    lr: bool
    crop: tuple[int, int, int, int] | None
    size: tuple[int, int]
    field: str
    digest: str

    def lr_size(self, scale: int) -> tuple[int, int]:
        """``(height, width)`` of the LR input for a model of ``scale``."""
        height, width = self.size
        return (height, width) if self.lr else (height // scale, width // scale)


@dataclasses.dataclass(frozen=True)
class Probe:
    """One LAM computation: a model, an image and a window of the SR output.

    Attributes:
        model: The network.
        image: The image.
        window: The window, in SR pixels.
        fingerprint: Hash of everything that determines the probe's numbers; a stored result with
            another fingerprint is stale and is computed again.
    """

    model: ModelEntry
    image: ImageEntry
    window: Window
    fingerprint: str

    @property
    def id(self) -> str:
        """``model/image/tTOP-lLEFT-HxW``: stable, readable, sortable, and the path of its result files."""
        top, left, height, width = self.window
        return f"{self.model.name}/{self.image.name}/t{top:04d}-l{left:04d}-{height}x{width}"


@dataclasses.dataclass(frozen=True)
class Study:
    """A validated study; :meth:`probes` lists the work in model-major order.

    Attributes:
        models: The networks.
        images: The image files.
        windows: The windows of each image, keyed by image name.
        lam: The LAM parameters.
        output: The results folder.
        maps: Whether to save each probe's attribution and map (``.npz``).
        pictures: Whether to save each probe's pictures (PNG).
        source: The study file, if read from one.
    """

    models: tuple[ModelEntry, ...]
    images: tuple[ImageEntry, ...]
    windows: Mapping[str, tuple[Window, ...]]
    lam: LAMSettings
    output: Path
    maps: bool = False
    pictures: bool = False
    source: Path | None = None

    def probes(self) -> list[Probe]:
        """Every probe, model by model and image by image, so that each process reloads little."""
        lam = json.dumps(dataclasses.asdict(self.lam), sort_keys=True)
        return [
            Probe(model, image, window, _digest([model.digest, image.digest, list(window), lam]))
            for model in self.models
            for image in self.images
            for window in self.windows[image.name]
        ]

    def to_dict(self) -> dict[str, Any]:
        """The study as resolved (absolute paths, expanded folders and windows), for ``study.json``."""
        return {
            "source": str(self.source) if self.source else None,
            "models": [
                {"name": m.name, "spec": m.spec, "weights": str(m.weights) if m.weights else None,
                 "args": m.args, "scale": m.scale}
                for m in self.models
            ],
            "images": [
                {"name": i.name, "path": str(i.path), "lr": i.lr, "crop": list(i.crop) if i.crop else None,
                 "windows": [list(w) for w in self.windows[i.name]]}
                for i in self.images
            ],
            "lam": dataclasses.asdict(self.lam),
            "maps": self.maps,
            "pictures": self.pictures,
            "probes": sum(len(self.windows[i.name]) for i in self.images) * len(self.models),
        }


def load_study(study: str | Path | Mapping[str, Any], *, base_dir: str | Path | None = None) -> Study:
    """Read and validate a study; every problem is reported at once, before any work starts.

    Args:
        study: A YAML or JSON study file, or the same content as a mapping.
        base_dir: Folder that relative paths in a mapping start from (default: the current folder);
            paths in a file start from the file's folder.

    Returns:
        The validated :class:`Study`.

    Raises:
        StudyError: Listing each problem with its field path, e.g. "`images[1].windows[0]`: ...".

    Example:
        >>> study = load_study({"models": ["default"], "images": [{"path": "builtin", "crop": [0, 0, 64, 64],
        ...                     "windows": [[20, 20, 16], {"grid": 2, "size": 16}]}], "lam": {"n_steps": 4}})
        >>> [probe.id for probe in study.probes()]  # doctest: +NORMALIZE_WHITESPACE
        ['default/grace_hopper/t0020-l0020-16x16', 'default/grace_hopper/t0000-l0000-16x16',
         'default/grace_hopper/t0000-l0047-16x16', 'default/grace_hopper/t0047-l0000-16x16',
         'default/grace_hopper/t0047-l0047-16x16']
    """
    if isinstance(study, Mapping):
        data, source, base = study, None, Path(base_dir or ".").resolve()
    else:
        source = Path(study).resolve()
        data, base = _read_study_file(source), source.parent
    report = _Reporter()
    if not isinstance(data, Mapping):
        raise StudyError([f"`study`: must be a mapping with `models` and `images`, got {type(data).__name__}"])
    report.keys(data, _TOP_KEYS, "", required=("models", "images"))
    scale = report.integer(data.get("scale", 4), "scale", minimum=1)
    seed = report.integer(data.get("seed", 0), "seed", minimum=0)
    lam = _parse_lam(data.get("lam", {}), report)
    output = report.text(data.get("output", f"{source.stem}-sweep" if source else "sweep"), "output")
    maps = report.boolean(data.get("maps", False), "maps")
    pictures = report.boolean(data.get("pictures", False), "pictures")
    models = _parse_models(data.get("models"), scale or 4, base, report)
    images, window_specs = _parse_images(data.get("images"), data.get("windows"), base, report)
    scales = sorted({model.scale for model in models})
    windows = {}
    if scales and lam is not None:
        for image in images:
            windows[image.name] = _resolve_windows(image, window_specs[image.name], scales, lam, seed or 0, report)
    if report.problems:
        raise StudyError(report.problems)
    return Study(models=tuple(models), images=tuple(images), windows=windows, lam=lam,
                 output=(base / output).resolve(), maps=maps, pictures=pictures, source=source)


def _read_study_file(path: Path) -> Any:
    if not path.is_file():
        raise StudyError([f"`study`: {str(path)!r} is not an existing file"])
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise StudyError([f"`study`: cannot read {str(path)!r}: {' '.join(str(error).split())}"]) from error


class _Reporter:
    """Type checks that record a problem under a field path and return None instead of raising."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, field: str, message: str) -> None:
        self.problems.append(f"`{field}`: {message}")

    def keys(self, mapping: Mapping, allowed: Sequence[str], field: str, required: Sequence[str] = ()) -> None:
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f" (expected {', '.join(allowed)})"
                self.add(_join(field, str(key)), f"unknown key{hint}")
        for key in required:
            if mapping.get(key) is None:
                self.add(_join(field, key), "is required")

    def integer(self, value: Any, field: str, minimum: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(field, f"must be an integer, got {value!r}")
            return None
        if value < minimum:
            self.add(field, f"must be >= {minimum}, got {value}")
            return None
        return value

    def number(self, value: Any, field: str, low: float, high: float = math.inf) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.add(field, f"must be a finite number, got {value!r}")
            return None
        if not low <= value <= high:
            self.add(field, f"must be in [{low}, {high}], got {value}" if high < math.inf else
                     f"must be >= {low}, got {value}")
            return None
        return float(value)

    def boolean(self, value: Any, field: str) -> bool:
        if not isinstance(value, bool):
            self.add(field, f"must be true or false, got {value!r}")
            return False
        return value

    def text(self, value: Any, field: str) -> str | None:
        if not isinstance(value, str) or not value:
            self.add(field, f"must be a non-empty string, got {value!r}")
            return None
        return value

    def choice(self, value: Any, field: str, choices: Sequence[str]) -> str | None:
        if value not in choices:
            self.add(field, f"must be one of {', '.join(choices)}, got {value!r}")
            return None
        return value

    def mapping(self, value: Any, field: str) -> Mapping | None:
        if not isinstance(value, Mapping):
            self.add(field, f"must be a mapping, got {value!r}")
            return None
        return value

    def entries(self, value: Any, field: str) -> list:
        """The items of a required list; None (a missing key, reported as such) gives no items."""
        if value is None:
            return []
        if not isinstance(value, list) or not value:
            self.add(field, f"must be a non-empty list, got {value!r}")
            return []
        return value


def _join(field: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{field}[{key}]"
    return f"{field}.{key}" if field else key


def _parse_lam(value: Any, report: _Reporter) -> LAMSettings | None:
    lam = report.mapping(value, "lam")
    if lam is None:
        return None
    report.keys(lam, [field.name for field in dataclasses.fields(LAMSettings)], "lam")
    values = {**dataclasses.asdict(LAMSettings()), **lam}
    before = len(report.problems)
    kernel_size = report.integer(values["kernel_size"], "lam.kernel_size", minimum=1)
    if kernel_size is not None and kernel_size % 2 == 0:
        report.add("lam.kernel_size", f"must be odd (an even kernel is lopsided), got {kernel_size}")
    batch = values["internal_batch_size"]
    settings = LAMSettings(
        n_steps=report.integer(values["n_steps"], "lam.n_steps", minimum=1),
        sigma=report.number(values["sigma"], "lam.sigma", low=0.0),
        kernel_size=kernel_size,
        method=report.choice(values["method"], "lam.method", INTEGRATION_METHODS),
        detector=report.choice(values["detector"], "lam.detector", DETECTORS),
        internal_batch_size=None if batch is None else report.integer(batch, "lam.internal_batch_size", minimum=1),
        alpha=report.number(values["alpha"], "lam.alpha", low=0.0, high=1.0),
    )
    if settings.method == "riemann_trapezoid" and settings.n_steps == 1:
        report.add("lam.n_steps", "must be >= 2 for method riemann_trapezoid, got 1")
    return settings if len(report.problems) == before else None


def _parse_models(value: Any, default_scale: int, base: Path, report: _Reporter) -> list[ModelEntry]:
    from lam_captum.models import builtin_model_names

    builtins = builtin_model_names()
    models: list[ModelEntry] = []
    names: dict[str, str] = {}
    for index, item in enumerate(report.entries(value, "models")):
        field = _join("models", index)
        entry = _parse_model(item, field, default_scale, base, builtins, report)
        if entry is None:
            continue
        if entry.name in names:
            report.add(_join(field, "name"), f"{entry.name!r} is already the name of `{names[entry.name]}`; "
                                             "give one of them another `name`")
            continue
        names[entry.name] = field
        models.append(entry)
    return models


def _parse_model(
    item: Any, field: str, default_scale: int, base: Path, builtins: list[str], report: _Reporter
) -> ModelEntry | None:
    item = {"spec": item} if isinstance(item, str) else item
    if report.mapping(item, field) is None:
        return None
    before = len(report.problems)
    report.keys(item, _MODEL_KEYS, field, required=("spec",))
    spec, files = None, []
    if item.get("spec") is not None and report.text(item["spec"], _join(field, "spec")):
        spec, files = _resolve_spec(item["spec"], _join(field, "spec"), base, builtins, report)
    weights = _existing_file(item["weights"], _join(field, "weights"), base, report) if "weights" in item else None
    args = report.mapping(item.get("args", {}), _join(field, "args"))
    if args is not None and not all(isinstance(key, str) for key in args):
        report.add(_join(field, "args"), f"keys must be argument names, got {list(args)!r}")
    scale = report.integer(item.get("scale", default_scale), _join(field, "scale"), minimum=1)
    if "name" in item:
        name = _check_name(item["name"], _join(field, "name"), report)
    else:
        name = _default_model_name(spec) if spec else None
    if len(report.problems) > before:
        return None
    files += [weights] if weights else []
    digest = _digest([spec, dict(args), scale, [_file_digest(path) for path in files]])
    return ModelEntry(name=name, spec=spec, weights=weights, args=dict(args), scale=scale, field=field, digest=digest)


def _resolve_spec(
    spec: str, field: str, base: Path, builtins: list[str], report: _Reporter
) -> tuple[str | None, list[Path]]:
    """Make a ``file.py:Class`` spec absolute and check its file; built-in names must be known."""
    target, _, attribute = spec.rpartition(":")
    if not target:
        if spec not in builtins:
            report.add(field, f"{spec!r} is neither a built-in model ({', '.join(builtins)}) nor "
                              "'package.module:Class' nor 'path/to/file.py:Class'")
            return None, []
        return spec, []
    if not attribute.isidentifier():
        report.add(field, f"{attribute!r} after ':' in {spec!r} is not a class or function name")
        return None, []
    if not (target.endswith(".py") or "/" in target or "\\" in target):
        return spec, []
    path = _existing_file(target, field, base, report)
    return (f"{path}:{attribute}", [path]) if path else (None, [])


def _default_model_name(spec: str) -> str:
    target, _, attribute = spec.rpartition(":")
    return _sanitize(attribute if target else spec)


def _parse_images(
    value: Any, default_windows: Any, base: Path, report: _Reporter
) -> tuple[list[ImageEntry], dict[str, tuple[str, Any]]]:
    """The image files (folders expanded) and, per image name, its windows' field path and spec."""
    images: list[ImageEntry] = []
    window_specs: dict[str, tuple[str, Any]] = {}
    names: dict[str, str] = {}
    for index, item in enumerate(report.entries(value, "images")):
        field = _join("images", index)
        item = {"path": item} if isinstance(item, str) else item
        if report.mapping(item, field) is None:
            continue
        report.keys(item, _IMAGE_KEYS, field, required=("path",))
        windows_field = _join(field, "windows") if "windows" in item else "windows"
        windows = item.get("windows", default_windows)
        if windows is None:
            report.add(_join(field, "windows"), "no windows here and no study-level `windows`")
        for image in _parse_image(item, field, base, report):
            if image.name in names:
                report.add(field, f"image name {image.name!r} ({str(image.path)!r}) is already used by "
                                  f"`{names[image.name]}`; give the entries distinct `name`s")
                continue
            names[image.name] = field
            images.append(image)
            window_specs[image.name] = (windows_field, windows)
    return images, window_specs


def _parse_image(item: Mapping, field: str, base: Path, report: _Reporter) -> list[ImageEntry]:
    before = len(report.problems)
    lr = report.boolean(item.get("lr", False), _join(field, "lr"))
    crop = _parse_crop(item["crop"], _join(field, "crop"), report) if "crop" in item else None
    name = _check_name(item["name"], _join(field, "name"), report) if "name" in item else None
    files = _image_files(item["path"], _join(field, "path"), base, report) if item.get("path") is not None else []
    if len(report.problems) > before:
        return []
    images = []
    for path, from_folder in files:
        size = _image_size(path, _join(field, "path"), report)
        if size is None or (crop is not None and not _crop_fits(crop, size, _join(field, "crop"), path, report)):
            continue
        stem = _sanitize(path.stem)
        # In a folder entry `name` prefixes the file names, so that two test sets can share file names.
        label = (f"{name}-{stem}" if name else stem) if from_folder else (name or stem)
        digest = _digest([_file_digest(path), lr, crop])
        images.append(ImageEntry(name=label, path=path, lr=lr, crop=crop, size=crop[2:] if crop else size,
                                 field=field, digest=digest))
    return images


def _image_files(value: Any, field: str, base: Path, report: _Reporter) -> list[tuple[Path, bool]]:
    """``(file, came_from_a_folder)`` pairs for a file, a folder or the built-in photo."""
    if report.text(value, field) is None:
        return []
    if value == BUILTIN_IMAGE:
        from lam_captum.imageio import default_image_path

        return [(default_image_path(), False)]
    path = (base / value).resolve()
    if path.is_file():
        return [(path, False)]
    if not path.is_dir():
        report.add(field, f"{value!r} is neither an existing file nor a folder (looked for {str(path)!r})")
        return []
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        report.add(field, f"the folder {str(path)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return [(file, True) for file in files]


def _image_size(path: Path, field: str, report: _Reporter) -> tuple[int, int] | None:
    # Only the header is read here; a file whose pixels turn out to be broken fails its own probes.
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception as error:  # Pillow raises many types for a file that is not an image
        report.add(field, f"cannot read {str(path)!r} as an image: {error}")
        return None
    return height, width


def _parse_crop(value: Any, field: str, report: _Reporter) -> tuple[int, int, int, int] | None:
    if not isinstance(value, list) or len(value) != 4 or not all(_is_int(v) for v in value):
        report.add(field, f"must be [top, left, height, width] integers, got {value!r}")
        return None
    top, left, height, width = value
    if top < 0 or left < 0 or height < 1 or width < 1:
        report.add(field, f"needs top, left >= 0 and height, width >= 1, got {value!r}")
        return None
    return top, left, height, width


def _crop_fits(crop: tuple[int, int, int, int], size: tuple[int, int], field: str, path: Path,
               report: _Reporter) -> bool:
    top, left, height, width = crop
    if top + height > size[0] or left + width > size[1]:
        report.add(field, f"{list(crop)} does not fit the {size[0]}x{size[1]} image {str(path)!r}")
        return False
    return True


def _resolve_windows(
    image: ImageEntry, spec: tuple[str, Any], scales: list[int], lam: LAMSettings, seed: int, report: _Reporter
) -> tuple[Window, ...]:
    """The image's windows, checked against the SR output of every model scale (the smallest bounds)."""
    field, items = spec
    bounds = _window_bounds(image, scales, lam, field, report)
    if bounds is None or items is None:
        return ()
    windows: list[Window] = []
    for index, item in enumerate(report.entries(items, field)):
        item_field = _join(field, index)
        if isinstance(item, Mapping):
            windows += _generated_windows(item, item_field, image, bounds, lam.margin, seed, report)
        else:
            windows += _explicit_window(item, item_field, image, bounds, lam.margin, report)
    return tuple(dict.fromkeys(windows))


def _window_bounds(image: ImageEntry, scales: list[int], lam: LAMSettings, field: str,
                   report: _Reporter) -> tuple[int, int] | None:
    """The SR ``(height, width)`` that every model's output covers, after checking the LR sizes."""
    bounds = []
    for scale in scales:
        lr_height, lr_width = image.lr_size(scale)
        # The blur pads by reflection, which needs more LR pixels than the kernel's half width.
        if min(lr_height, lr_width) <= lam.kernel_size // 2:
            what = "image" if image.lr else f"x{scale} LR input of the {image.size[0]}x{image.size[1]} image"
            report.add(image.field, f"the {lr_height}x{lr_width} {what} {image.name!r} must be larger than "
                                    f"`lam.kernel_size` // 2 = {lam.kernel_size // 2} pixels each way")
            return None
        bounds.append((lr_height * scale, lr_width * scale))
    return min(h for h, _ in bounds), min(w for _, w in bounds)


def _explicit_window(item: Any, field: str, image: ImageEntry, bounds: tuple[int, int], margin: int,
                     report: _Reporter) -> list[Window]:
    if not isinstance(item, list) or len(item) not in (3, 4) or not all(_is_int(v) for v in item):
        report.add(field, f"must be [top, left, size], [top, left, height, width] or a mapping with `grid` or "
                          f"`random`, got {item!r}")
        return []
    window = Window(*item) if len(item) == 4 else Window.square(*item)
    if window.top < 0 or window.left < 0 or window.height < 1 or window.width < 1:
        report.add(field, f"needs top, left >= 0 and a size >= 1, got {item!r}")
        return []
    if window.top + window.height + margin > bounds[0] or window.left + window.width + margin > bounds[1]:
        report.add(field, f"window {window} lies outside {_bounds_text(image, bounds, margin)}")
        return []
    return [window]


def _generated_windows(item: Mapping, field: str, image: ImageEntry, bounds: tuple[int, int], margin: int,
                       seed: int, report: _Reporter) -> list[Window]:
    kind = "grid" if "grid" in item else "random" if "random" in item else None
    if kind is None:
        report.add(field, f"a generated window needs `grid` or `random`, got keys {sorted(map(str, item))}")
        return []
    before = len(report.problems)
    report.keys(item, _GRID_KEYS if kind == "grid" else _RANDOM_KEYS, field, required=("size",))
    size = _pair(item.get("size"), _join(field, "size"), report)
    if len(report.problems) > before or size is None:
        return []
    room = (bounds[0] - margin - size[0] + 1, bounds[1] - margin - size[1] + 1)
    if min(room) < 1:
        report.add(_join(field, "size"), f"a {size[0]}x{size[1]} window does not fit "
                                         f"{_bounds_text(image, bounds, margin)}")
        return []
    if kind == "grid":
        return _grid_windows(item["grid"], _join(field, "grid"), size, room, image, report)
    count = report.integer(item["random"], _join(field, "random"), minimum=1)
    window_seed = report.integer(item.get("seed", seed), _join(field, "seed"), minimum=0)
    if count is None or window_seed is None:
        return []
    if count > room[0] * room[1]:
        report.add(_join(field, "random"), f"{count} distinct {size[0]}x{size[1]} windows do not fit "
                                           f"{_bounds_text(image, bounds, margin)} ({room[0] * room[1]} positions)")
        return []
    return random_windows(count, size, room, window_seed, image.name)


def _grid_windows(value: Any, field: str, size: tuple[int, int], room: tuple[int, int], image: ImageEntry,
                  report: _Reporter) -> list[Window]:
    shape = _pair(value, field, report)
    if shape is None:
        return []
    if shape[0] > room[0] or shape[1] > room[1]:
        report.add(field, f"a {shape[0]}x{shape[1]} grid of {size[0]}x{size[1]} windows needs more distinct "
                          f"positions than image {image.name!r} has ({room[0]}x{room[1]})")
        return []
    tops, lefts = _spread(shape[0], room[0] - 1), _spread(shape[1], room[1] - 1)
    return [Window(top, left, *size) for top in tops for left in lefts]


def _spread(count: int, last: int) -> list[int]:
    """``count`` distinct integers from 0 to ``last``, evenly spaced and rounded; one is centred."""
    if count == 1:
        return [last // 2]
    return [(2 * i * last + count - 1) // (2 * (count - 1)) for i in range(count)]


def random_windows(count: int, size: tuple[int, int], room: tuple[int, int], seed: int, image_name: str
                   ) -> list[Window]:
    """``count`` distinct window positions drawn uniformly; the same for the same seed and image name.

    The image name is mixed into the seed so that one study-level setting gives each image its own
    windows; the draw depends on nothing else, so every process of a run draws the same windows.

    Example:
        >>> random_windows(2, (16, 16), (49, 49), seed=0, image_name="baby") == \\
        ...     random_windows(2, (16, 16), (49, 49), seed=0, image_name="baby")
        True
    """
    generator = np.random.default_rng([seed, zlib.crc32(image_name.encode())])
    positions = generator.choice(room[0] * room[1], size=count, replace=False)
    return [Window(int(p) // room[1], int(p) % room[1], *size) for p in positions]


def _bounds_text(image: ImageEntry, bounds: tuple[int, int], margin: int) -> str:
    text = f"the {bounds[0]}x{bounds[1]} SR output of image {image.name!r}"
    return text + (" (the gradient detector also needs one pixel below and right of it)" if margin else "")


def _pair(value: Any, field: str, report: _Reporter) -> tuple[int, int] | None:
    """An integer >= 1 meaning ``(n, n)``, or a list of two."""
    pair = [value, value] if _is_int(value) else value
    if not isinstance(pair, list) or len(pair) != 2 or not all(_is_int(v) and v >= 1 for v in pair):
        report.add(field, f"must be an integer >= 1 or a list of two, got {value!r}")
        return None
    return pair[0], pair[1]


def _existing_file(value: Any, field: str, base: Path, report: _Reporter) -> Path | None:
    if report.text(value, field) is None:
        return None
    path = (base / value).resolve()
    if not path.is_file():
        report.add(field, f"{value!r} is not an existing file (looked for {str(path)!r})")
        return None
    return path


def _check_name(value: Any, field: str, report: _Reporter) -> str | None:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        report.add(field, f"must be letters, digits and . _ + - (starting with a letter or digit), got {value!r}")
        return None
    return value


def _sanitize(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-._+") or "unnamed"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    """SHA-256 of a file's contents, so that retrained weights or an edited image make results stale."""
    status = path.stat()
    key = (path, status.st_size, status.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        hasher = hashlib.sha256()
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                hasher.update(block)
        _FILE_DIGESTS[key] = hasher.hexdigest()
    return _FILE_DIGESTS[key]
