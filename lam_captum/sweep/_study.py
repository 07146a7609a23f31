"""The study file: which models, images and windows a sweep explains, validated before any work starts.

A study is read from YAML or JSON (or given as a mapping) and checked as a whole against the schema of
:mod:`lam_captum.sweep._schema`: every problem is reported at once with the path of the offending field
(``images[1].windows[0]``), so that a long run never dies on a typo after hours of work. A file larger
than :data:`MAX_STUDY_BYTES`, or whose YAML aliases expand to more than :data:`MAX_STUDY_NODES` values
(a "billion laughs" file), is refused before it is expanded.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import ValidationError

from lam_captum._core.settings import LAMSettings
from lam_captum.functional import Window
from lam_captum.sweep._fingerprints import digest, file_digest
from lam_captum.sweep._schema import (
    DEFAULT_WINDOWS_PER_PASS,
    ERFSection,
    FigureSection,
    ImageFile,
    ImageSpec,
    ModelSpec,
    StudySpec,
    problems_of,
)

# A study names files and windows; even thousands of explicit windows take a few hundred kilobytes.
MAX_STUDY_BYTES = 1 << 20
# Values of a YAML study once its aliases are expanded: far above any real study, far below a bomb.
MAX_STUDY_NODES = 100_000
_PROBLEMS_SHOWN = 5


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
class ModelEntry:
    """One network of the study.

    Attributes:
        name: Its label in the tables and result paths.
        spec: A built-in name, ``package.module:Class`` or ``/absolute/file.py:Class``.
        weights: Checkpoint to load, if any.
        args: Keyword arguments for the class (or for :func:`lam_captum.models.build_model`).
        scale: The upscaling factor the study expects of it (checked when it first runs).
        field: Where it came from in the study file, e.g. ``models[1]``.
        digest: Hash of everything above that changes its numbers, including the files' contents (a
            ``file.py:Class`` model inside the study's folder by its path from there: moving the project keeps
            it).
        earlier_digest: The digest earlier versions gave it, which held the file's absolute path (None for models
            without a file spec, whose digest has not changed).
    """

    name: str
    spec: str
    weights: Path | None
    args: dict[str, Any]
    scale: int
    field: str
    digest: str
    earlier_digest: str | None = None

    def build(self) -> torch.nn.Module:
        """The network, on the CPU. Its random initialisation is seeded (0, on a forked generator): a model
        without weights (the example study's EDSR-baseline) is then the same network in every process of a
        distributed run, on a resume and for the ERF, as its records' fingerprint claims."""
        from lam_captum._flags import flags_named
        from lam_captum.models import load_model

        # The checkpoint reader names its file `path`; in a study it is the entry's `weights`.
        with torch.random.fork_rng(devices=[]), flags_named({"`path`": "`weights`"}):
            torch.manual_seed(0)
            return load_model(self.spec, self.args, weights=self.weights, scale=self.scale)


@dataclasses.dataclass(frozen=True)
class ImageEntry:
    """One image file of the study (a folder entry becomes one per file), or one clip of a video SR model.

    Attributes:
        name: Its label in the tables and result paths.
        path: The image file, or a clip's folder of frames.
        lr: Whether the file (every frame) is already the LR input (then no HR, no PSNR).
        crop: ``(top, left, height, width)`` of the file (of every frame) to use, or None for all of it.
        size: ``(height, width)`` of the used region, in file pixels.
        field: Where it came from in the study file, e.g. ``images[0]``.
        digest: Hash of the file's (every frame's) contents and of how it is used.
        frames: A clip's frame files in the order of their names; empty for an image.
        frame: The output frame that holds a clip's windows, as the study gives it (None: the centre,
            as :func:`lam_captum.video.explain_clip` chooses).
    """

    name: str
    path: Path
    lr: bool
    crop: tuple[int, int, int, int] | None
    size: tuple[int, int]
    field: str
    digest: str
    frames: tuple[Path, ...] = ()
    frame: int | None = None

    @property
    def is_clip(self) -> bool:
        """Whether the entry is a clip (explained with :func:`lam_captum.video.explain_clip`)."""
        return bool(self.frames)

    def lr_size(self, scale: int) -> tuple[int, int]:
        """``(height, width)`` of the LR input (of each frame of a clip) for a model of ``scale``."""
        height, width = self.size
        return (height, width) if self.lr else (height // scale, width // scale)


@dataclasses.dataclass(frozen=True)
class StudyProbe:
    """One LAM computation of a study: a model, an image and a window of the SR output.

    (Not :class:`lam_captum.callbacks.Probe`, the callback's fixed image to watch during training.)

    Attributes:
        model: The network.
        image: The image.
        window: The window, in SR pixels.
        fingerprint: Hash of everything that determines the probe's numbers; a stored result with
            another fingerprint is stale and is computed again.
        earlier_fingerprint: The fingerprint earlier versions gave a ``file.py:Class`` model's probe (with the
            file's absolute path), where it differs: a record of it is current too, and is given the new one.
    """

    model: ModelEntry
    image: ImageEntry
    window: Window
    fingerprint: str
    earlier_fingerprint: str | None = None

    @property
    def fingerprints(self) -> tuple[str, ...]:
        """The fingerprints a current record may carry: its own, and the earlier one, if any."""
        return (self.fingerprint,) if self.earlier_fingerprint is None else (self.fingerprint,
                                                                            self.earlier_fingerprint)

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
        lam: The LAM settings of every probe.
        output: The results folder.
        alpha: Weight of the LR image in the blended pictures (not a LAM setting: no number depends on it).
        maps: Whether to save each probe's attribution and map (``.npz``).
        pictures: Whether to save each probe's pictures (PNG).
        figures: How to draw each image's comparison figure (``figures/<image>.png``; drawn by default), or
            None for none (``figures: false``).
        erf: How to compute each model's effective receptive field (``erf/<model>.npy``), or None for none.
        windows_per_pass: At most this many windows of one image share one LAM pass for a model
            (:func:`lam_captum.explain.explain_windows`); 1 computes each window alone, as
            :func:`lam_captum.explain.explain` does.
        source: The study file, if read from one.
    """

    models: tuple[ModelEntry, ...]
    images: tuple[ImageEntry, ...]
    windows: Mapping[str, tuple[Window, ...]]
    lam: LAMSettings
    output: Path
    alpha: float = 0.5
    maps: bool = False
    pictures: bool = False
    figures: FigureSection | None = None
    erf: ERFSection | None = None
    windows_per_pass: int = DEFAULT_WINDOWS_PER_PASS
    source: Path | None = None

    def probes(self) -> list[StudyProbe]:
        """Every probe, model by model and image by image, so that each process reloads little."""
        lam = json.dumps(self._lam_fingerprint(), sort_keys=True)
        return [
            StudyProbe(model, image, window, digest([model.digest, image.digest, list(window), lam]),
                       None if model.earlier_digest is None else digest([model.earlier_digest, image.digest,
                                                                         list(window), lam]))
            for model in self.models
            for image in self.images
            for window in self.windows[image.name]
        ]

    def passes(self) -> list[tuple[StudyProbe, ...]]:
        """The probes in the groups that share one LAM pass: the windows of one model and image, in the study's
        order, at most :attr:`windows_per_pass` at a time; a clip's probe is a pass of its own (video LAM
        explains one window per pass).

        The groups depend on the study alone, not on what is finished or on the number of processes, so that
        a resumed or distributed run gives the numbers of an uninterrupted one.
        """
        passes: list[tuple[StudyProbe, ...]] = []
        for _, probes in itertools.groupby(self.probes(), key=lambda probe: (probe.model.name, probe.image.name)):
            group = list(probes)
            size = 1 if group[0].image.is_clip else self.windows_per_pass
            passes += [tuple(group[start:start + size]) for start in range(0, len(group), size)]
        return passes

    def _lam_fingerprint(self) -> dict[str, Any]:
        """The LAM values that a probe's fingerprint holds: alpha stays, as it always was, so that earlier
        results remain current; ``internal_batch_size`` does not change the numbers, so changing it leaves
        them current (None, as it was by default); ``full_image`` counts only when set, as results from
        before the setting existed were computed without it."""
        values = {**self._lam_values(), "internal_batch_size": None}
        if not values.pop("full_image"):
            return values
        return {**values, "full_image": True}

    def _lam_values(self) -> dict[str, Any]:
        return {**self.lam.to_dict(), "alpha": self.alpha}

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
                 "windows": [list(w) for w in self.windows[i.name]],
                 **({"frames": [str(path) for path in i.frames], "frame": i.frame} if i.is_clip else {})}
                for i in self.images
            ],
            "lam": self._lam_values(),
            "maps": self.maps,
            "pictures": self.pictures,
            "figures": self.figures.model_dump() if self.figures else None,
            "erf": self.erf.model_dump() if self.erf else None,
            "windows_per_pass": self.windows_per_pass,
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
        data, base = read_study_file(source), source.parent
    if not isinstance(data, Mapping):
        raise StudyError([f"`study`: must be a mapping with `models` and `images`, got {type(data).__name__}"])
    try:
        spec = StudySpec.model_validate(dict(data), context={"base": base})
    except ValidationError as error:
        raise StudyError(problems_of(error)) from None
    return _resolved(spec, source, base)


def _resolved(spec: StudySpec, source: Path | None, base: Path) -> Study:
    """The study's entries with their digests, from a valid schema."""
    models = tuple(_model_entry(spec, model, index, base) for index, model in enumerate(spec.models))
    images = tuple(entry for index, image in enumerate(spec.images) for entry in _image_entries(image, index))
    windows = {file.name: image.windows_of(file) for image in spec.images for file in image.files}
    output = Path(spec.output or (f"{source.stem}-sweep" if source else "sweep")).expanduser()
    return Study(models=models, images=images, windows=windows, lam=spec.lam.settings(), alpha=spec.lam.alpha,
                 output=(base / output).resolve(), maps=spec.maps, pictures=spec.pictures, figures=spec.figures,
                 erf=spec.erf, windows_per_pass=spec.windows_per_pass, source=source)


def _model_entry(spec: StudySpec, model: ModelSpec, index: int, base: Path) -> ModelEntry:
    scale = spec.model_scale(model)
    contents = [file_digest(path) for path in model.files]
    fingerprint = digest([_portable_spec(model.spec, base), dict(model.args), scale, contents])
    earlier = digest([model.spec, dict(model.args), scale, contents])
    return ModelEntry(name=model.label, spec=model.spec, weights=model.weights, args=dict(model.args), scale=scale,
                      field=f"models[{index}]", digest=fingerprint,
                      earlier_digest=None if earlier == fingerprint else earlier)


def _portable_spec(spec: str, base: Path) -> str:
    """The spec as a fingerprint holds it: a ``/absolute/file.py:Class`` inside the study's folder ``base`` by its
    path from there, so that moving the project keeps its results, while another folder's file of the same
    contents (whose sibling modules may differ) is another model; any other spec as it is."""
    from lam_captum.models import parse_model_spec

    parsed = parse_model_spec(spec)
    if parsed.kind != "file":
        return spec
    try:
        return f"file:{Path(parsed.target).relative_to(base).as_posix()}:{parsed.attribute}"
    except ValueError:  # outside the study's folder: where it lies is part of what it is
        return spec


def _image_entries(image: ImageSpec, index: int) -> list[ImageEntry]:
    return [
        ImageEntry(name=file.name, path=file.path, lr=image.lr, crop=image.crop, size=file.size,
                   field=f"images[{index}]", digest=_entry_digest(image, file), frames=file.frames, frame=image.frame)
        for file in image.files
    ]


def _entry_digest(image: ImageSpec, file: ImageFile) -> str:
    if not file.frames:  # an image's digest as it always was, so that earlier results remain current
        return digest([file_digest(file.path), image.lr, image.crop])
    return digest([[file_digest(path) for path in file.frames], image.lr, image.crop, image.frame])


def read_study_file(path: Path) -> Any:
    """The content of a YAML or JSON study file, refused early when it is too large or an alias bomb.

    Raises:
        StudyError: If the file is missing, unreadable, not YAML/JSON, over :data:`MAX_STUDY_BYTES`, or
            expands to more than :data:`MAX_STUDY_NODES` values.
    """
    if not path.is_file():
        raise StudyError([f"`study`: {str(path)!r} is not an existing file"])
    size = path.stat().st_size
    if size > MAX_STUDY_BYTES:
        raise StudyError([f"`study`: {str(path)!r} is {size:,} bytes, over the limit of {MAX_STUDY_BYTES:,} bytes "
                          "(MAX_STUDY_BYTES); a study names files and windows, it does not hold data"])
    try:
        # utf-8-sig: a byte-order mark, which Windows editors write, is not part of the study.
        text = path.read_text(encoding="utf-8-sig")
        if path.suffix.lower() == ".json":
            return json.loads(text, object_pairs_hook=functools.partial(_unique_keys, path))
        return _load_yaml(text, path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise StudyError([f"`study`: cannot read {str(path)!r}: {' '.join(str(error).split())}"]) from error
    except RecursionError:
        raise StudyError([f"`study`: cannot read {str(path)!r}: it is nested too deeply"]) from None


def _load_yaml(text: str, path: Path) -> Any:
    """YAML through the safe loader, with the size after alias expansion checked on the node graph.

    Composing keeps an alias as a reference to its anchor's node, so the graph is as small as the text;
    only building Python values (and every later walk over them) would expand it.
    """
    loader = _StudyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_unique_keys(node, path, set())
        values = _expanded_size(node, {})
        if values > MAX_STUDY_NODES:
            raise StudyError([f"`study`: {str(path)!r} expands to {values:,} values through YAML aliases, over the "
                              f"limit of {MAX_STUDY_NODES:,} (MAX_STUDY_NODES); write the values out"])
        return loader.construct_document(node)
    finally:
        loader.dispose()


class _StudyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-3`` as a number as YAML 1.2 does (YAML 1.1 wants ``1.0e-3``: ``sigma:
    1e-1`` would be text, refused as not a number)."""


_StudyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _check_unique_keys(node: yaml.Node, path: Path, seen: set[int]) -> None:
    """Refuse a mapping that names a key twice: YAML keeps the last, and the first (a whole `lam:` section
    pasted twice) would be dropped without a word."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: dict[str, int] = {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if key.value in keys:
                    raise StudyError([f"`study`: {str(path)!r} names the key {key.value!r} twice in one mapping, "
                                      f"on lines {keys[key.value]} and {key.start_mark.line + 1}: YAML would keep "
                                      "the last"])
                keys[key.value] = key.start_mark.line + 1
    children = node.value if isinstance(node, yaml.SequenceNode) else (
        [item for pair in node.value for item in pair] if isinstance(node, yaml.MappingNode) else [])
    for child in children:
        _check_unique_keys(child, path, seen)


def _unique_keys(path: Path, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused when it names a key twice (JSON keeps the last)."""
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise StudyError([f"`study`: {str(path)!r} names the key {twice[0]!r} twice in one object: JSON would keep "
                          "the last"])
    return dict(pairs)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias is replaced by a copy (memoised per node)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 1  # a node that contains itself counts once, as the loader builds it once
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [item for pair in node.value for item in pair]
    else:
        children = []
    sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]
