"""The study file: every problem reported with its field path before any work starts, the `lam` section
following LAMSettings, generated windows, fingerprints, and files refused before they are expanded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from skimage import data
from sweep_helpers import edit, small_study

from lam_captum import LAMSettings
from lam_captum._core.settings import MAX_STEPS, setting_fields
from lam_captum.models import build_model
from lam_captum.sweep import MAX_STUDY_BYTES, MAX_STUDY_NODES, StudyError, load_study


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("lamm", {}, r"`lamm`: unknown key; did you mean 'lam'\?"),
        ("images.0.windws", [], r"`images\[0\]\.windws`: unknown key; did you mean 'windows'\?"),
        ("images.0.windows.0", [60, 20, 16], r"`images\[0\]\.windows\[0\]`: window top=60, .* outside the 64x64 SR"),
        ("images.0.windows.0", [48, 20, 16], r"`images\[0\]\.windows\[0\]`: .* one pixel below and right"),
        ("images.0.windows.0", [1, 2], r"`images\[0\]\.windows\[0\]`: must be \[top, left, size\]"),
        ("images.0.windows.1.random", 5000, r"`images\[0\]\.windows\[1\]\.random`: 5000 distinct 12x12"),
        ("images.0.windows.1", {"grid": 2}, r"`images\[0\]\.windows\[1\]\.size`: is required"),
        ("images.1.windows.0.grid", [60, 1], r"`images\[1\]\.windows\[0\]\.grid`: a 60x1 grid .* more distinct"),
        ("images.1.path", "missing.png", r"`images\[1\]\.path`: 'missing.png' is neither an existing file"),
        ("images.1.crop", [0, 0, 65, 8], r"`images\[1\]\.crop`: \[0, 0, 65, 8\] does not fit the 64x64 image"),
        ("images.1.crop", [0, 0, 12, 12], r"`images\[1\]`: the 3x3 x4 LR input .* larger than `lam.kernel_size`"),
        ("images.1.lr", "yes", r"`images\[1\]\.lr`: must be true or false, got 'yes'"),
        ("models.0", {"spec": "default", "weights": "none.pt"}, r"`models\[0\]\.weights`: 'none.pt' is not an"),
        ("models.0", "edsr-tiny", r"`models\[0\]\.spec`: 'edsr-tiny' is neither a built-in model"),
        ("models.0", "nowhere.py:Net", r"`models\[0\]\.spec`: 'nowhere.py' is not an existing file"),
        ("models.0", {"spec": "default", "scale": "4"}, r"`models\[0\]\.scale`: must be an integer, got '4'"),
        ("models", [], r"`models`: must be a non-empty list"),
        ("lam.n_steps", "4", r"`lam\.n_steps`: must be an integer, got '4'"),
        ("lam.sigma", -1, r"`lam\.sigma`: must be >= 0.0, got -1"),
        ("lam.kernel_size", 8, r"`lam\.kernel_size`: must be odd"),
        ("lam.method", "simpson", r"`lam\.method`: must be one of official, .*, got 'simpson'"),
        ("lam.alpha", 1.5, r"`lam\.alpha`: must be in \[0.0, 1.0\], got 1.5"),
        ("lam.detector", "edges", r"`lam\.detector`: must be one of gradient, intensity, got 'edges'"),
    ],
)
def test_a_bad_value_is_reported_with_its_field(workspace: Path, path: str, value: object, message: str) -> None:
    study = edit(small_study(workspace), path, value)
    with pytest.raises(StudyError, match=message):
        load_study(study, base_dir=workspace)


def test_every_problem_is_reported_at_once(workspace: Path) -> None:
    study = small_study(workspace, models=["default", "default"], scale=0)
    study["lam"]["n_steps"] = 0
    with pytest.raises(StudyError) as caught:
        load_study(study)
    assert caught.value.problems == [
        "`scale`: must be >= 1, got 0",
        "`lam.n_steps`: must be >= 1, got 0",
        "`models[1].name`: 'default' is already the name of `models[0]`; give one of them another `name`",
    ]


def test_a_bad_study_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("models: [default\nimages: []\n")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(StudyError, match=r"`study`: cannot read .*broken\.yaml"):
        load_study(tmp_path / "broken.yaml")
    with pytest.raises(StudyError, match=r"`study`: must be a mapping with `models` and `images`, got list"):
        load_study(tmp_path / "list.json")
    with pytest.raises(StudyError, match=r"`study`: .*absent\.yaml' is not an existing file"):
        load_study(tmp_path / "absent.yaml")


def test_paths_start_from_the_study_file_and_folders_expand(workspace: Path, tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    for name in ("b.png", "a.png"):
        (folder / name).write_bytes((workspace / "cat.png").read_bytes())
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "study.json").write_text(json.dumps({
        "models": ["default"], "images": [{"path": "set", "name": "set5"}], "windows": [[0, 0, 8]],
    }))
    study = load_study(tmp_path / "study.json")
    assert [image.name for image in study.images] == ["set5-a", "set5-b"]
    assert study.output == tmp_path / "study-sweep"


def test_generated_windows_are_deterministic_and_inside(workspace: Path) -> None:
    study = small_study(workspace, windows=[{"random": 3, "size": 8}, {"grid": 2, "size": 8}])
    del study["images"][0]["windows"], study["images"][1]["windows"]
    first, again = load_study(study).windows, load_study(study).windows
    assert first == again
    astro, cat = first["astro"], first["cat"]
    assert astro[:3] != cat[:3], "each image draws its own random windows"
    assert [tuple(w[:2]) for w in astro[3:]] == [(0, 0), (0, 55), (55, 0), (55, 55)]
    assert all(w.top + 8 < 64 and w.left + 8 < 64 for w in astro + cat)


def test_a_changed_setting_or_file_makes_results_stale(workspace: Path, tmp_path: Path) -> None:
    image = tmp_path / "astro.png"
    image.write_bytes((workspace / "astro.png").read_bytes())
    study = small_study(workspace)
    study["images"][0]["path"] = str(image)
    fingerprints = {probe.id: probe.fingerprint for probe in load_study(study).probes()}
    study["lam"]["sigma"] = 1.0
    assert all(probe.fingerprint != fingerprints[probe.id] for probe in load_study(study).probes())
    study["lam"]["sigma"] = 1.2
    Image.fromarray(data.astronaut()[:64, :64]).save(image)
    changed = {probe.id for probe in load_study(study).probes() if fingerprints[probe.id] != probe.fingerprint}
    assert changed == {probe_id for probe_id in fingerprints if "/astro/" in probe_id}


def test_the_example_study_is_valid() -> None:
    study = load_study(Path(__file__).parents[2] / "examples" / "study.yaml")
    assert len(study.probes()) == 20


def test_the_lam_section_takes_every_setting_and_builds_the_settings_type(workspace: Path) -> None:
    values = {field.name: field.default for field in setting_fields()}
    study = load_study(small_study(workspace, lam={**values, "n_steps": 7, "alpha": 0.25}))
    assert study.lam == LAMSettings(**{**values, "n_steps": 7}) and study.alpha == 0.25


def test_a_preset_gives_its_settings_and_the_fields_given_replace_them(workspace: Path) -> None:
    fast = load_study(small_study(workspace, lam={"preset": "fast"}))
    assert fast.lam == LAMSettings.preset("fast")
    tuned = load_study(small_study(workspace, lam={"preset": "fast", "internal_batch_size": 2, "alpha": 0.3}))
    assert tuned.lam == LAMSettings.preset("fast", internal_batch_size=2) and tuned.alpha == 0.3
    spelled_out = load_study(small_study(workspace, lam={"n_steps": 32, "method": "riemann_trapezoid",
                                                         "internal_batch_size": 2, "alpha": 0.3}))
    # The fingerprints hold the settings, not how they were written: the same probes either way.
    assert [probe.fingerprint for probe in tuned.probes()] == [probe.fingerprint for probe in spelled_out.probes()]
    with pytest.raises(StudyError, match=r"^`lam\.preset`: must be one of official, fast, got 'quick'$"):
        load_study(small_study(workspace, lam={"preset": "quick"}))


@pytest.mark.parametrize(
    ("lam", "message"),
    [
        ({"sigma": 0}, r"^`lam\.sigma`: must be > 0: at sigma 0 the baseline is the input itself"),
        ({"method": "riemann_trapezoid", "n_steps": 1}, r"^`lam\.n_steps`: must be >= 2 for riemann_trapezoid, got 1$"),
        ({"internal_batch_size": 0}, r"^`lam\.internal_batch_size`: must be an integer >= 1 or None, got 0$"),
        ({"n_step": 4}, r"^`lam\.n_step`: unknown key; did you mean 'n_steps'\?$"),
    ],
)
def test_the_settings_type_judges_the_lam_section(workspace: Path, lam: dict, message: str) -> None:
    with pytest.raises(StudyError, match=message):
        load_study(small_study(workspace, lam=lam))


def test_a_huge_step_count_is_refused_at_lam_n_steps_with_its_cost(workspace: Path) -> None:
    with pytest.raises(StudyError) as caught:
        load_study(small_study(workspace, lam={"n_steps": MAX_STEPS * 10}))
    (problem,) = caught.value.problems
    assert problem.startswith(f"`lam.n_steps`: must be at most {MAX_STEPS}, got {MAX_STEPS * 10}")
    assert f"{MAX_STEPS * 10:,}" in problem, "the message states what the run would cost"


def test_problems_inside_a_generated_window_name_the_study_field(workspace: Path) -> None:
    study = edit(small_study(workspace), "images.1.windows.0", {"grid": "2", "size": 8, "sise": 3})
    with pytest.raises(StudyError) as caught:
        load_study(study)
    assert caught.value.problems == [
        "`images[1].windows[0].grid`: must be an integer >= 1 or a list of two, got '2'",
        "`images[1].windows[0].sise`: unknown key; did you mean 'size'?",
    ]


def test_a_study_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    # Past the limit the text is not even YAML: the refusal names the size, so nothing was parsed.
    (tmp_path / "huge.yaml").write_text("models: [" + " " * MAX_STUDY_BYTES)
    with pytest.raises(StudyError, match=f"over the limit of {MAX_STUDY_BYTES:,} bytes"):
        load_study(tmp_path / "huge.yaml")


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    (tmp_path / "bomb.yaml").write_text("\n".join(levels) + "\nmodels: *a9\n")
    with pytest.raises(StudyError, match=f"expands to .* values through YAML aliases, over the limit of "
                                         f"{MAX_STUDY_NODES:,}"):
        load_study(tmp_path / "bomb.yaml")


def test_yaml_aliases_of_a_real_study_are_accepted(workspace: Path, tmp_path: Path) -> None:
    text = yaml.safe_dump(small_study(workspace))
    text = text.replace("windows:\n  - grid:", "windows: &shared\n  - grid:", 1)
    study_file = tmp_path / "aliases.yaml"
    study_file.write_text(text + "windows: *shared\n")
    assert len(load_study(study_file).probes()) == 4


def test_a_bad_window_is_reported_with_the_other_problems(workspace: Path) -> None:
    study = edit(small_study(workspace, maps="yes"), "images.0.windows.0", [60, 20, 16])
    with pytest.raises(StudyError) as caught:
        load_study(study)
    assert [problem.split(":")[0] for problem in caught.value.problems] == ["`maps`", "`images[0].windows[0]`"]


def test_a_study_level_window_is_reported_where_it_meets_an_image(workspace: Path) -> None:
    study = small_study(workspace, windows=[[8, 8, 16], {"random": 3000, "size": 12}])
    del study["images"][1]["windows"]
    with pytest.raises(StudyError) as caught:
        load_study(study)
    assert caught.value.problems == [
        "`images[1]`: study-level `windows[1].random`: 3000 distinct 12x12 windows do not fit the 64x64 SR output "
        "of image 'cat' (the gradient detector also needs one pixel below and right of it) (2704 positions)",
    ]


def test_two_files_of_one_folder_with_one_name_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("baby.png", "baby.jpg", "a b.png", "a-b.png", "猫.png", "狗.png"):
        Image.fromarray(data.astronaut()[:64, :64]).save(folder / name)
    with pytest.raises(StudyError) as caught:
        load_study({"models": ["default"], "images": [{"path": str(folder), "windows": [[8, 8, 16]]}]})
    message = str(caught.value)
    assert "of one folder are both named 'baby': rename one of them" in message
    assert "are both named 'a-b'" in message and "猫" not in message  # other scripts' letters are names


@pytest.mark.parametrize(("suffix", "text", "message"), [
    (".yaml", "models: [default]\nlam: {n_steps: 25}\nimages: [builtin]\nlam: {n_steps: 2}\n",
     "names the key 'lam' twice in one mapping, on lines 2 and 4: YAML would keep the last"),
    (".json", '{"models": ["default"], "models": ["edsr"], "images": ["builtin"]}',
     "names the key 'models' twice in one object: JSON would keep the last"),
])
def test_a_key_given_twice_is_refused(tmp_path: Path, suffix: str, text: str, message: str) -> None:
    study_file = tmp_path / f"study{suffix}"
    study_file.write_text(text)
    with pytest.raises(StudyError, match=message):
        load_study(study_file)


def test_a_byte_order_mark_exponents_and_a_home_folder_are_read_as_meant(tmp_path: Path) -> None:
    study_file = tmp_path / "study.json"
    study_file.write_text('\ufeff{"models": ["default"], "images": ["builtin"], "windows": [[8, 8, 16]]}',
                          encoding="utf-8")
    assert load_study(study_file).models[0].name == "default"
    yaml_file = tmp_path / "study.yaml"
    yaml_file.write_text("models: [default]\nimages: [builtin]\nwindows: [[8, 8, 16]]\nlam: {sigma: 5e-1}\n"
                         "output: ~/lam-results\n")
    study = load_study(yaml_file)
    assert study.lam.sigma == 0.5 and study.output == Path.home() / "lam-results"


def test_changing_internal_batch_size_leaves_results_current_and_full_image_does_not(workspace: Path) -> None:
    fingerprint = {name: load_study(small_study(workspace, lam={"n_steps": 4, **lam})).probes()[0].fingerprint
                   for name, lam in (("default", {}), ("batch", {"internal_batch_size": 3}),
                                     ("full", {"full_image": True}))}
    assert fingerprint["batch"] == fingerprint["default"] != fingerprint["full"]


def test_a_model_without_weights_is_one_network_in_every_build(workspace: Path) -> None:
    (model,) = load_study(small_study(workspace, models=["edsr-baseline"])).models
    first, second = model.build().state_dict(), model.build().state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_weights_that_do_not_fit_are_named_by_the_entrys_field(workspace: Path, tmp_path: Path) -> None:
    torch.save(build_model("edsr-baseline", scale=2).state_dict(), tmp_path / "x2.pt")
    study = load_study(small_study(workspace, models=[{"spec": "edsr-baseline", "weights": str(tmp_path / "x2.pt")}]))
    with pytest.raises(ValueError, match=r"^the weights in `weights` '.*x2\.pt' do not fit EDSR: "):
        study.models[0].build()


def test_a_file_model_counts_by_its_path_in_the_studys_folder_not_only_its_contents(workspace: Path,
                                                                                     tmp_path: Path) -> None:
    # Two byte-identical model files in two folders may import different sibling modules: two models.
    for folder in ("v1", "v2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "net.py").write_bytes((workspace / "odd_models.py").read_bytes())
    (tmp_path / "astro.png").write_bytes((workspace / "astro.png").read_bytes())
    fingerprints = {}
    for folder in ("v1", "v2"):
        study_file = tmp_path / f"{folder}.yaml"
        study_file.write_text(yaml.safe_dump({"models": [f"{folder}/net.py:Quick"], "lam": {"n_steps": 2},
                                              "images": [{"path": "astro.png", "windows": [[20, 20, 16]]}]}))
        fingerprints[folder] = load_study(study_file).probes()[0].fingerprint
    assert fingerprints["v1"] != fingerprints["v2"]
    # Outside the study's folder a file counts by its absolute path, as it always did.
    outside = load_study(small_study(workspace, models=[f"{tmp_path / 'v1' / 'net.py'}:Quick"]),
                         base_dir=tmp_path / "v2")
    assert outside.models[0].earlier_digest is None
