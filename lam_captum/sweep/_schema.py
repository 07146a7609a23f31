"""The study file's schema: pydantic models that report every problem at once, each at its location.

Types, bounds, literals and unknown keys are pydantic's (strict: ``"4"`` is not an integer, ``"true"`` not
a boolean; YAML itself reads ``yes`` and ``no`` as booleans, and the study's loader ``1e-3`` as a number);
the checks that need the file system (model files, weights, images) are validators of the field they concern,
reading relative paths from the folder in the validation context; the windows are checked against the images,
the models' scales and the LAM settings whenever those are valid (as the images come last, a bad `maps` does
not hide a bad window). The ``lam`` section follows :class:`lam_captum.LAMSettings`: its fields are the
settings' fields, and the settings type judges them.
:func:`problems_of` turns a :class:`pydantic.ValidationError` into the study's one-line messages.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Union

from PIL import Image
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    PrivateAttr,
    Tag,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from lam_captum._core.settings import PRESETS, LAMSettings, SettingsError, setting_fields
from lam_captum.functional import Window
from lam_captum.imageio import IMAGE_SUFFIXES, images_in
from lam_captum.functional._detectors import detector_margin
from lam_captum.sweep._windows import Location, Problem, expand_windows

BUILTIN_IMAGE = "builtin"
# Windows of one image and model explained together (one forward pass and K input gradients per path step).
DEFAULT_WINDOWS_PER_PASS = 16
_NAME_RULE = "letters, digits and . _ + - (starting with a letter or digit)"
_WINDOW_FORMS = "[top, left, size], [top, left, height, width] or a mapping with `grid` or `random`"


def _problem(message: str) -> PydanticCustomError:
    # The message goes in as a value, not as the template: it may hold braces (a dict's repr).
    return PydanticCustomError("study", "{message}", {"message": message})


def _raise_all(problems: list[Problem], title: str, value: Any) -> None:
    """Raise every ``(location, message)`` at once; pydantic prefixes the locations with the field's."""
    if problems:
        raise ValidationError.from_exception_data(title, [
            InitErrorDetails(type=_problem(message), loc=location, input=value) for location, message in problems
        ])


def _context_folder(info: ValidationInfo) -> Path:
    return (info.context or {}).get("base", Path.cwd())


def _existing_file(value: Any, info: ValidationInfo) -> Path:
    if not isinstance(value, str) or not value:
        raise _problem(f"must be a non-empty string, got {value!r}")
    path = (_context_folder(info) / value).resolve()
    if not path.is_file():
        raise _problem(f"{value!r} is not an existing file (looked for {str(path)!r})")
    return path


def _pair(value: Any) -> tuple[int, int]:
    """An integer >= 1 meaning ``(n, n)``, or a list of two."""
    pair = [value, value] if _is_int(value) else value
    if not isinstance(pair, list) or len(pair) != 2 or not all(_is_int(v) and v >= 1 for v in pair):
        raise _problem(f"must be an integer >= 1 or a list of two, got {value!r}")
    return pair[0], pair[1]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _odd(value: int) -> int:
    if value % 2 == 0:
        raise _problem(f"must be odd (an even kernel is lopsided), got {value}")
    return value


def _in_unit_interval(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise _problem(f"must be in [0.0, 1.0], got {value}")
    return value


def _window(value: list[int]) -> Window:
    window = Window(*value) if len(value) == 4 else Window.square(*value)
    if window.top < 0 or window.left < 0 or window.height < 1 or window.width < 1:
        raise _problem(f"needs top, left >= 0 and a size >= 1, got {value!r}")
    return window


def _crop(value: list[int]) -> tuple[int, int, int, int]:
    top, left, height, width = value
    if top < 0 or left < 0 or height < 1 or width < 1:
        raise _problem(f"needs top, left >= 0 and height, width >= 1, got {value!r}")
    return top, left, height, width


Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")]
Text = Annotated[str, Field(min_length=1)]
ExistingFile = Annotated[Path, BeforeValidator(_existing_file)]
Pair = Annotated[tuple[int, int], PlainValidator(_pair)]
Crop = Annotated[list[int], Field(min_length=4, max_length=4), AfterValidator(_crop)]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GridWindows(_Schema):
    """``{grid: N or [rows, cols], size: S}``: windows spread evenly over the image, corners included."""

    grid: Pair
    size: Pair


class RandomWindows(_Schema):
    """``{random: N, size: S, seed: K}``: N distinct positions drawn with the seed (default: the study's)."""

    random: int = Field(ge=1)
    size: Pair
    seed: int | None = Field(default=None, ge=0)


def _window_form(value: Any) -> str | None:
    if isinstance(value, dict):
        return "grid" if "grid" in value else "random" if "random" in value else None
    if isinstance(value, list) and len(value) in (3, 4) and all(_is_int(v) for v in value):
        return "explicit"
    return None


WindowSpec = Annotated[
    Union[
        Annotated[Annotated[list[int], AfterValidator(_window)], Tag("explicit")],
        Annotated[GridWindows, Tag("grid")],
        Annotated[RandomWindows, Tag("random")],
    ],
    Discriminator(_window_form, custom_error_type="window", custom_error_message=f"must be {_WINDOW_FORMS}"),
]
WindowList = Annotated[list[WindowSpec], Field(min_length=1)]


# The study has always shown these bounds in its own words; every other rule, and these again, are the
# settings type's, checked by building it.
_LAM_RULES = {"n_steps": Field(ge=1), "sigma": Field(ge=0.0), "kernel_size": AfterValidator(_odd)}


def _lam_annotation(field: Any) -> Any:
    """The study's type of a :class:`lam_captum.LAMSettings` field: its type, or a literal of its choices."""
    choices = field.metadata["choices"]
    kind = Literal[choices] if choices else field.metadata["type"]
    kind = kind | None if field.default is None else kind
    return Annotated[kind, _LAM_RULES[field.name]] if field.name in _LAM_RULES else kind


class _LAMBase(_Schema):
    """The behaviour of the `lam` section: it builds the settings type, which judges the values together."""

    def settings(self) -> LAMSettings:
        """The section as :class:`lam_captum.LAMSettings` (everything but the pictures' ``alpha``): the
        ``preset``'s settings with the fields the study sets replaced."""
        given = self.model_dump(include=self.model_fields_set - {"alpha", "preset"})
        return LAMSettings.preset(self.preset, **given)

    @model_validator(mode="after")
    def _valid_settings(self) -> _LAMBase:
        try:
            self.settings()
        except SettingsError as error:
            message = str(error).removeprefix(f"`{error.field}` ")
            _raise_all([((error.field,), message)], "lam", self.model_dump())
        return self


LAMSection = create_model(
    "LAMSection",
    __base__=_LAMBase,
    __doc__="The study's ``lam`` section: a ``preset`` of :data:`lam_captum._core.settings.PRESETS`, the fields of "
            ":class:`lam_captum.LAMSettings` that replace the preset's, and ``alpha``.",
    preset=(Literal[tuple(PRESETS)], "official"),
    **{field.name: (_lam_annotation(field), field.default) for field in setting_fields()},
    alpha=(Annotated[float, Field(allow_inf_nan=False), AfterValidator(_in_unit_interval)], 0.5),
)


class FigureSection(_Schema):
    """The study's ``figures``: the comparison figure of every image (by default, or ``true``: these defaults;
    ``false``: none).

    Attributes:
        blend: The cells' picture: ``heat`` (the heat map on the LR image) or ``kde`` (its KDE on it).
        zoom: Whether each row shows only the part of the image that holds 99% of the attribution.
        formats: The files written, ``figures/<image>.<format>``; PDF and SVG keep the labels as text.
    """

    blend: Literal["heat", "kde"] = "heat"
    zoom: bool = False
    formats: Annotated[list[Literal["png", "pdf", "svg"]], Field(min_length=1)] = ["png", "pdf"]


def _section_switch(value: Any) -> Any:
    """``true`` means the section with its defaults, ``false`` (or null) none; a mapping chooses."""
    if value is True:
        return {}
    if value is False or value is None:
        return None
    if not isinstance(value, dict):
        raise _problem(f"must be true, false or a mapping, got {value!r}")
    return value


Figures = Annotated[FigureSection | None, BeforeValidator(_section_switch)]


class ERFSection(_Schema):
    """The study's ``erf``: each model's effective receptive field over the study's LR images
    (:func:`lam_captum.erf.dataset_erf`; ``true``: these defaults).

    Attributes:
        size: ``(height, width)`` every LR image is resized to (nearest), 120x120 as MambaIR uses.
        batch_size: Images per model call; the ERF does not depend on it.
    """

    size: Pair = (120, 120)
    batch_size: int = Field(default=8, ge=1)


ERFSwitch = Annotated[ERFSection | None, BeforeValidator(_section_switch)]


class ModelSpec(_Schema):
    """One entry of ``models``: a spec, or a mapping with ``spec``, ``name``, ``weights``, ``args``, ``scale``."""

    spec: Text
    name: Name | None = None
    weights: ExistingFile | None = None
    args: dict[str, Any] = {}
    scale: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _from_spec(cls, value: Any) -> Any:
        return {"spec": value} if isinstance(value, str) else value

    @field_validator("spec")
    @classmethod
    def _resolve_spec(cls, spec: str, info: ValidationInfo) -> str:
        """Make a ``file.py:Class`` spec absolute and check its file; a built-in name must be known."""
        from lam_captum.models import builtin_model_names, parse_model_spec

        try:
            parsed = parse_model_spec(spec)
        except ValueError as error:
            if ":" in spec:
                raise _problem(str(error).replace("`spec` ", "")) from None
            raise _problem(f"{spec!r} is neither a built-in model ({', '.join(builtin_model_names())}) nor "
                           "'package.module:Class' nor 'path/to/file.py:Class'") from None
        if parsed.kind != "file":
            return spec
        return f"{_existing_file(parsed.target, info)}:{parsed.attribute}"

    @property
    def label(self) -> str:
        """Its name in the tables: ``name``, else the class (or built-in) name."""
        return self.name or sanitize(self.spec.rpartition(":")[2])

    @property
    def files(self) -> list[Path]:
        """The files its numbers depend on: the model's source file and the weights."""
        from lam_captum.models import parse_model_spec

        parsed = parse_model_spec(self.spec)
        return ([Path(parsed.target)] if parsed.kind == "file" else []) + ([self.weights] if self.weights else [])


class ImageFile(BaseModel):
    """One image file of an entry (a folder entry has one per file), or a clip entry's folder of frames.

    Attributes:
        frames: A clip's frame files, in the order of their names; empty for an image.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    path: Path
    size: tuple[int, int]
    frames: tuple[Path, ...] = ()


class ImageSpec(_Schema):
    """One entry of ``images``: a path, or a mapping with ``path``, ``name``, ``lr``, ``crop``, ``windows``, and for a
    video SR clip ``clip: true`` (``path`` is then one clip's folder of frames) with an optional ``frame``."""

    path: Text
    name: Name | None = None
    lr: bool = False
    crop: Crop | None = None
    clip: bool = False
    frame: int | None = Field(default=None, ge=0)
    windows: WindowList | None = None
    _files: tuple[ImageFile, ...] = PrivateAttr(())
    _windows: dict[str, tuple[Window, ...]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _read_headers(self, info: ValidationInfo) -> ImageSpec:
        base = _context_folder(info)
        self._files = (self._clip_file(base),) if self.clip else self._image_files(base)
        return self

    def _image_files(self, base: Path) -> tuple[ImageFile, ...]:
        if self.frame is not None:
            self._refuse("frame", f"chooses the output frame of a clip (`clip: true`), got {self.frame}")
        files, problems = [], []
        for path, from_folder in self._paths(base):
            size = self._header_size(path, problems)
            if size is not None:
                files.append(ImageFile(name=self._label(path, from_folder), path=path,
                                       size=self.crop[2:] if self.crop else size))
        _raise_all(problems, "image", self.path)
        return tuple(files)

    def _clip_file(self, base: Path) -> ImageFile:
        """The clip of a ``clip: true`` entry: its frames in the order of their names (as ``lam-captum --frames``
        reads them), all of one size, and the frame holding the windows."""
        from lam_captum.video import frame_paths

        folder = (base / self.path).resolve()
        if self.path == BUILTIN_IMAGE or not folder.is_dir():
            found = "a file" if folder.is_file() else "nothing there"
            self._refuse("clip", f"true needs `path` to be a folder of frames, got {self.path!r} (looked for "
                                 f"{str(folder)!r}: {found})")
        try:
            frames = frame_paths(folder)
        except ValueError:
            self._refuse("path", f"the clip's folder {str(folder)!r} holds no frames ({', '.join(IMAGE_SUFFIXES)})")
        problems: list[Problem] = []
        sizes = {path: self._header_size(path, problems) for path in frames}
        _raise_all(problems, "image", self.path)
        if len(set(sizes.values())) > 1:
            found = ", ".join(f"{path.name} {height}x{width}" for path, (height, width) in sizes.items())
            self._refuse("path", f"the frames of the clip {self.path!r} must all have one size, got {found}")
        if self.frame is not None and self.frame >= len(frames):
            self._refuse("frame", f"must be < {len(frames)}, the number of frames in the clip {self.path!r}, got "
                                  f"{self.frame}")
        size = self.crop[2:] if self.crop else sizes[frames[0]]
        return ImageFile(name=self.name or sanitize(folder.name), path=folder, size=size, frames=tuple(frames))

    def _refuse(self, field: str, message: str) -> NoReturn:
        """Raise the entry's one problem, at ``field``."""
        raise ValidationError.from_exception_data("image", [
            InitErrorDetails(type=_problem(message), loc=(field,), input=self.path)])

    def _header_size(self, path: Path, problems: list[Problem]) -> tuple[int, int] | None:
        """The ``(height, width)`` of an image file, or None with its problem (unreadable, or the crop misses)."""
        try:  # Only the header is read here; broken pixels fail the image's own probes.
            with Image.open(path) as image:
                size = image.height, image.width
        except Exception as error:  # Pillow raises many types for a file that is not an image
            problems.append((("path",), f"cannot read {str(path)!r} as an image: {error}"))
            return None
        if not self._crop_fits(size):
            problems.append((("crop",), f"{list(self.crop)} does not fit the {size[0]}x{size[1]} image {str(path)!r}"))
            return None
        return size

    def _crop_fits(self, size: tuple[int, int]) -> bool:
        return self.crop is None or (self.crop[0] + self.crop[2] <= size[0] and self.crop[1] + self.crop[3] <= size[1])

    def _label(self, path: Path, from_folder: bool) -> str:
        # In a folder entry `name` prefixes the file names, so that two test sets can share file names.
        stem = sanitize(path.stem)
        return (f"{self.name}-{stem}" if self.name else stem) if from_folder else (self.name or stem)

    def _paths(self, base: Path) -> list[tuple[Path, bool]]:
        """``(file, came_from_a_folder)`` pairs for a file, a folder or the built-in photo."""
        if self.path == BUILTIN_IMAGE:
            from lam_captum.imageio import default_image_path

            return [(default_image_path(), False)]
        path = (base / self.path).resolve()
        if path.is_file():
            return [(path, False)]
        if not path.is_dir():
            _raise_all([(("path",), f"{self.path!r} is neither an existing file nor a folder (looked for "
                                    f"{str(path)!r})")], "image", self.path)
        files = images_in(path)
        if not files:
            _raise_all([(("path",), f"the folder {str(path)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")],
                       "image", self.path)
        return [(file, True) for file in files]

    @property
    def files(self) -> tuple[ImageFile, ...]:
        """The entry's image files, named."""
        return self._files

    def lr_size(self, file: ImageFile, scale: int) -> tuple[int, int]:
        """``(height, width)`` of the LR input from ``file`` for a model of ``scale``."""
        height, width = file.size
        return (height, width) if self.lr else (height // scale, width // scale)

    def windows_of(self, file: ImageFile) -> tuple[Window, ...]:
        """The windows of one of the entry's files, once :meth:`expand` has checked them."""
        return self._windows[file.name]

    def expand(self, specs: list, scales: list[int], lam: _LAMBase, seed: int) -> tuple[list[str], list[Problem]]:
        """Expand ``specs`` on every file, against the SR output of every model scale.

        Returns:
            Problems of the entry itself (an image too small for the kernel), and those of the windows
            (located in ``specs``).
        """
        own, problems = [], []
        for file in self.files:
            too_small = self._too_small(file, scales, lam.kernel_size)
            if too_small:
                own.append(too_small)
                continue
            bounds = self._sr_bounds(file, scales)
            windows, found = expand_windows(specs, bounds, detector_margin(lam.detector), seed, file.name)
            self._windows[file.name] = windows
            problems += found
        return own, problems

    def _sr_bounds(self, file: ImageFile, scales: list[int]) -> tuple[int, int]:
        """The SR ``(height, width)`` that the output of every model scale covers."""
        sizes = [(self.lr_size(file, scale)[0] * scale, self.lr_size(file, scale)[1] * scale) for scale in scales]
        return min(height for height, _ in sizes), min(width for _, width in sizes)

    def _too_small(self, file: ImageFile, scales: list[int], kernel_size: int) -> str | None:
        for scale in scales:
            lr_height, lr_width = self.lr_size(file, scale)
            # The blur pads by reflection, which needs more LR pixels than the kernel's half width.
            if min(lr_height, lr_width) <= kernel_size // 2:
                what = "image" if self.lr else f"x{scale} LR input of the {file.size[0]}x{file.size[1]} image"
                return (f"the {lr_height}x{lr_width} {what} {file.name!r} must be larger than `lam.kernel_size` // 2 "
                        f"= {kernel_size // 2} pixels each way")
        return None


class StudySpec(_Schema):
    """A study file: the models, the images with their windows, and how LAM runs.

    Fields are validated in this order, so that the problems read from the general to the particular; the
    images come last because their windows are checked against every section before them.
    """

    scale: int = Field(default=4, ge=1)
    seed: int = Field(default=0, ge=0)
    windows_per_pass: int = Field(default=DEFAULT_WINDOWS_PER_PASS, ge=1)
    lam: LAMSection = LAMSection()
    output: Text | None = None
    maps: bool = False
    pictures: bool = False
    figures: Figures = FigureSection()
    erf: ERFSwitch = None
    models: Annotated[list[ModelSpec], Field(min_length=1)]
    windows: WindowList | None = None
    images: Annotated[list[ImageSpec], Field(min_length=1)]

    @field_validator("models")
    @classmethod
    def _distinct_model_names(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        first: dict[str, int] = {}
        problems = []
        for index, model in enumerate(models):
            if model.label in first:
                problems.append(((index, "name"), f"{model.label!r} is already the name of "
                                                  f"`models[{first[model.label]}]`; give one of them another `name`"))
            first.setdefault(model.label, index)
        _raise_all(problems, "models", [model.label for model in models])
        return models

    @field_validator("images")
    @classmethod
    def _names_and_windows(cls, images: list[ImageSpec], info: ValidationInfo) -> list[ImageSpec]:
        _raise_all(_name_clashes(images) + _window_problems(images, info.data), "images", [i.path for i in images])
        return images

    def model_scale(self, model: ModelSpec) -> int:
        """The model's scale: its own, else the study's."""
        return self.scale if model.scale is None else model.scale


def _name_clashes(images: list[ImageSpec]) -> list[Problem]:
    """Two files of the study with one name (it names their records, maps and SR outputs): in two entries,
    or two files of one folder whose names differ only in what :func:`sanitize` drops (``a b.png`` and
    ``a-b.png``, ``photo.png`` and ``photo.jpg``)."""
    first: dict[str, tuple[int, Path]] = {}
    problems = []
    for index, image in enumerate(images):
        for file in image.files:
            if file.name not in first:
                first[file.name] = (index, file.path)
                continue
            where, path = first[file.name]
            if where == index:
                problems.append(((index,), f"the files {str(path)!r} and {str(file.path)!r} of one folder are both "
                                           f"named {file.name!r}: rename one of them"))
            else:
                problems.append(((index,), f"image name {file.name!r} ({str(file.path)!r}) is already used by "
                                           f"`images[{where}]`; give the entries distinct `name`s"))
    return problems


def _window_problems(images: list[ImageSpec], valid: dict[str, Any]) -> list[Problem]:
    """Expand every image's windows and check them, locations relative to ``images``.

    ``valid`` holds the study's fields that passed; when one that windows depend on did not, its own
    problems are reported and the windows wait for the next run.
    """
    if not {"scale", "seed", "lam", "models", "windows"} <= valid.keys():
        return []
    scales = sorted({valid["scale"] if model.scale is None else model.scale for model in valid["models"]})
    problems: list[Problem] = []
    for index, image in enumerate(images):
        if image.windows is None and valid["windows"] is None:
            problems.append(((index, "windows"), "no windows here and no study-level `windows`"))
            continue
        own, found = image.expand(image.windows or valid["windows"], scales, valid["lam"], valid["seed"])
        problems += [((index,), message) for message in own]
        if image.windows is not None:
            problems += [((index, "windows", *_with_form(image.windows, where)), text) for where, text in found]
        else:  # the study's windows: the problem is where they meet this image
            problems += [((index,), f"study-level `{_spelled('windows', where)}`: {text}") for where, text in found]
    return problems


def _with_form(specs: list, location: Location) -> Location:
    """A window problem's location as pydantic spells it, with the spec's form after the index."""
    index, *inside = location
    if not inside:
        return location
    return (index, "grid" if isinstance(specs[index], GridWindows) else "random", *inside)


def _spelled(field: str, location: Location) -> str:
    return field + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location)


def sanitize(text: str) -> str:
    """``text`` with runs of characters other than letters, digits (of any script) and ``._+-`` turned into ``-``.

    Example:
        >>> sanitize("my model (x4)"), sanitize("猫 photo_1")
        ('my-model-x4', '猫-photo_1')
    """
    return re.sub(r"[^\w.+-]+", "-", text).strip("-._+") or "unnamed"


def problems_of(error: ValidationError) -> list[str]:
    """The study's messages for pydantic's errors: "`images[1].windows[0]`: must be ...".

    Example:
        >>> try:
        ...     StudySpec.model_validate({"models": ["default"], "imags": []})
        ... except ValidationError as error:
        ...     problems_of(error)
        ['`images`: is required', "`imags`: unknown key; did you mean 'images'?"]
    """
    problems = []
    for item in error.errors(include_url=False):
        field, keys = _locate(item["loc"])
        problems.append(f"`{field}`: {_message(item, keys)}")
    return problems


def _message(item: dict[str, Any], keys: tuple[str, ...]) -> str:
    kind, value, context = item["type"], item.get("input"), item.get("ctx") or {}
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(item["loc"][-1]), keys, n=1)
        return "unknown key" + (f"; did you mean {close[0]!r}?" if close else f" (expected {', '.join(keys)})")
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", context["expected"])
        return f"must be one of {', '.join(choices)}, got {value!r}"
    if kind in ("greater_than_equal", "less_than_equal"):
        bound = context.get("ge", context.get("le"))
        return f"must be {'>=' if 'ge' in context else '<='} {bound}, got {value!r}"
    if kind == "window":
        return f"{item['msg']}, got {value!r}"
    wording = _WORDING.get(kind)
    return wording.format(value=value) if wording else item["msg"] + ("" if kind == "study" else f", got {value!r}")


_WORDING = {
    "missing": "is required",
    "int_type": "must be an integer, got {value!r}",
    "bool_type": "must be true or false, got {value!r}",
    "float_type": "must be a finite number, got {value!r}",
    "finite_number": "must be a finite number, got {value!r}",
    "string_type": "must be a non-empty string, got {value!r}",
    "string_too_short": "must be a non-empty string, got {value!r}",
    "string_pattern_mismatch": "must be " + _NAME_RULE + ", got {value!r}",
    "list_type": "must be a non-empty list, got {value!r}",
    "too_short": "must be a non-empty list, got {value!r}",
    "too_long": "has too many items, got {value!r}",
    "dict_type": "must be a mapping, got {value!r}",
    "model_type": "must be a mapping, got {value!r}",
}


def _locate(location: tuple[str | int, ...]) -> tuple[str, tuple[str, ...]]:
    """The study's spelling of a pydantic location, and the keys of the mapping it ends in.

    Pydantic puts the tag of a window's form (``grid``, ``random``, ``explicit``) into the location;
    the study's spelling leaves it out, as the file has no such level.
    """
    node: Any = StudySpec
    text, keys = "", tuple(StudySpec.model_fields)
    for part in location:
        node = _unwrap(node)
        if isinstance(node, dict):  # a tagged union: this part is the tag
            node = node.get(part)
            continue
        if isinstance(part, int):
            text += f"[{part}]"
            node = typing.get_args(node)[0] if typing.get_origin(node) is list else None
            continue
        text = f"{text}.{part}" if text else str(part)
        if isinstance(node, type) and issubclass(node, BaseModel):
            keys = tuple(node.model_fields)
            node = node.model_fields[part].annotation if part in node.model_fields else None
        else:
            node = None
    return text, keys


def _unwrap(node: Any) -> Any:
    """``node`` without ``Annotated`` and ``None``; a tagged union as ``{tag: member}``."""
    while True:
        if typing.get_origin(node) is Annotated:
            if any(isinstance(meta, Discriminator) for meta in node.__metadata__):
                members = typing.get_args(typing.get_args(node)[0])
                return {_tag(member): typing.get_args(member)[0] for member in members}
            node = typing.get_args(node)[0]
        elif typing.get_origin(node) in (Union, types.UnionType):
            members = [member for member in typing.get_args(node) if member is not type(None)]
            if len(members) != 1:
                return node
            node = members[0]
        else:
            return node


def _tag(member: Any) -> str:
    return next(meta.tag for meta in member.__metadata__ if isinstance(meta, Tag))
