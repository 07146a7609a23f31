"""explain() and LAMResult: what a run returns and how its results are written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_sr

from lam_captum import pictures
from lam_captum.explain import SAVED_FILES, LAMResult, explain


def _result(seed: int) -> LAMResult:
    lr = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(seed))
    return explain(tiny_sr(3, 2, width=8, seed=seed), lr, (6, 6, 8), n_steps=2)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A folder holding the results of one run and a file of the user's."""
    folder = _result(seed=0).save(tmp_path / "results")
    (folder / "notes.txt").write_text("the user's own file")
    return folder


def _contents(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def test_save_writes_the_pictures_the_attribution_and_the_summary(tmp_path: Path) -> None:
    result = _result(seed=0)
    folder = result.save(tmp_path / "new" / "results", metadata={"image": "face.png", "model": "tiny"})
    assert sorted(path.name for path in folder.iterdir()) == sorted(SAVED_FILES)
    summary = json.loads((folder / "summary.json").read_text())
    assert list(summary)[:2] == ["image", "model"] and summary["model"] == "tiny"
    assert summary["di"] == result.di and summary["n_steps"] == 2
    np.testing.assert_array_equal(np.load(folder / "attribution.npy"), result.attribution.numpy())
    for name in ("figure", "kde_blend"):
        from PIL import Image

        with Image.open(folder / f"{name}.png") as written:
            np.testing.assert_array_equal(np.asarray(written.convert("RGB")), result.picture(name))


def test_save_replaces_the_previous_results_and_keeps_other_files(saved: Path) -> None:
    second = _result(seed=1)
    second.save(saved)
    assert sorted(path.name for path in saved.iterdir()) == sorted([*SAVED_FILES, "notes.txt"])
    assert (saved / "notes.txt").read_text() == "the user's own file"
    np.testing.assert_array_equal(np.load(saved / "attribution.npy"), second.attribution.numpy())


def test_save_removes_the_result_files_an_earlier_run_wrote_and_this_one_does_not(saved: Path) -> None:
    _result(seed=1).save(saved, extra_pictures=("signed",), figure_formats=("pdf",))
    assert json.loads((saved / "summary.json").read_text())["files"] == sorted(
        [*SAVED_FILES, "signed.png", "figure.pdf"])
    _result(seed=2).save(saved)
    assert sorted(path.name for path in saved.iterdir()) == sorted([*SAVED_FILES, "notes.txt"])


def test_save_never_removes_a_users_file_that_has_a_result_files_name(tmp_path: Path) -> None:
    # Files no earlier save listed are the user's, whatever their names (a paper's figure.pdf).
    (tmp_path / "figure.pdf").write_bytes(b"the user's figure")
    (tmp_path / "strip.png").write_bytes(b"the user's strip")
    _result(seed=1).save(tmp_path)
    _result(seed=2).save(tmp_path)
    assert (tmp_path / "figure.pdf").read_bytes() == b"the user's figure"
    assert (tmp_path / "strip.png").read_bytes() == b"the user's strip"


class _FailingLastMove:
    """os.replace that fails as Ctrl-C would on its last call: the stale file's move out."""

    def __init__(self, last: int) -> None:
        self.calls, self.last = 0, last
        self.replace = os.replace

    def __call__(self, source: object, target: object) -> None:
        self.calls += 1
        if self.calls == self.last:
            raise KeyboardInterrupt
        self.replace(source, target)


def test_a_save_interrupted_while_removing_stale_files_puts_everything_back(saved: Path, monkeypatch) -> None:
    _result(seed=1).save(saved, extra_pictures=("signed",))
    before = _contents(saved)
    # Each of the SAVED_FILES moves twice (the previous one out, the new one in), then signed.png moves out.
    monkeypatch.setattr(os, "replace", _FailingLastMove(2 * len(SAVED_FILES) + 1))
    with pytest.raises(KeyboardInterrupt):
        _result(seed=2).save(saved)
    monkeypatch.undo()
    assert _contents(saved) == before


def _failing_figure(*args: object, **kwargs: object) -> np.ndarray:
    raise RuntimeError("the figure cannot be drawn")


def _failing_npy(*args: object, **kwargs: object) -> None:
    raise OSError(28, "No space left on device")


class _FailingSecondMove:
    """os.replace that moves one file of the new set in, then fails as Ctrl-C would, halfway through."""

    def __init__(self) -> None:
        self.calls = 0
        self.replace = os.replace

    def __call__(self, source: object, target: object) -> None:
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt
        self.replace(source, target)


@pytest.mark.parametrize(
    ("target", "replacement", "error"),
    [
        (pictures, ("draw_lam_figure", _failing_figure), RuntimeError),
        (np, ("save", _failing_npy), OSError),
        (os, ("replace", _FailingSecondMove()), KeyboardInterrupt),
    ],
    ids=["a picture fails to draw", "the disk fills up while staging", "Ctrl-C while moving the files in"],
)
def test_failed_save_leaves_the_previous_results_untouched(saved, monkeypatch, target, replacement, error) -> None:
    before = _contents(saved)
    second = _result(seed=1)
    monkeypatch.setattr(target, *replacement)
    with pytest.raises(error):
        second.save(saved)
    monkeypatch.undo()
    assert _contents(saved) == before, "the folder holds a mix of old and new files, or lost one"


def test_failed_save_into_a_new_folder_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(np, "save", _failing_npy)
    with pytest.raises(OSError, match="cannot write the results to `folder`.*No space left on device"):
        _result(seed=0).save(tmp_path / "results")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_a_folder_inside_a_file_before_drawing(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    monkeypatch.setattr(pictures, "draw_lam_figure", _failing_figure)
    with pytest.raises(NotADirectoryError, match="`folder` .*notes.txt/results'.*is a file, not a folder"):
        _result(seed=0).save(tmp_path / "notes.txt" / "results")


def test_save_rejects_metadata_json_cannot_write_before_touching_the_folder(saved: Path) -> None:
    before = _contents(saved)
    with pytest.raises(TypeError, match="not JSON serializable"):
        _result(seed=1).save(saved, metadata={"image": Path("face.png")})
    assert _contents(saved) == before


def test_zoom_picture_shows_the_map_and_blend_where_the_attribution_is() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2))
    torch.manual_seed(0)
    result = explain(model, torch.rand(3, 32, 32), (20, 24, 8), n_steps=4)
    box = pictures.focus_box(result.map, result.window, result.scale)
    zoomed = result.picture("zoom")
    heat = pictures.zoom(result.picture("heat"), box)
    # The box holds the window and is far smaller than the 64x64 SR image: the zoom enlarges it.
    assert box.height < 64 and box.top <= 20 and box.top + box.height >= 28
    assert zoomed.shape[0] == heat.shape[0] > box.height
    np.testing.assert_array_equal(zoomed[:, : heat.shape[1]], heat)
    np.testing.assert_array_equal(zoomed[:, -heat.shape[1] :], pictures.zoom(result.picture("heat_blend"), box))


def test_explain_windows_gives_the_numbers_of_explain_per_window() -> None:
    from lam_captum.explain import explain_windows

    model = tiny_sr(channels=3, scale=2)
    lr = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(2))
    windows = [(4, 4, 8), (20, 24, 8), (30, 2, 6)]
    together = explain_windows(model, lr, windows, n_steps=6)
    for window, shared in zip(windows, together):
        alone = explain(model, lr, window, n_steps=6)
        assert shared.window == alone.window
        tolerance = 1e-6 * float(alone.attribution.abs().max())
        torch.testing.assert_close(shared.attribution, alone.attribution, rtol=1e-4, atol=tolerance)
        assert shared.di == pytest.approx(alone.di, rel=1e-5) and shared.delta == pytest.approx(alone.delta, rel=1e-4)
    with pytest.raises(ValueError, match=r"`windows` must be a non-empty sequence of windows.*got \[\]"):
        explain_windows(model, lr, [])


@pytest.mark.parametrize("window", [(4, 4, 1), (4, 4, 1, 6)])
def test_a_map_on_one_pixel_or_one_line_is_saved_with_its_heat_map_as_density(window, tmp_path):
    # A per-pixel model's map of a one-pixel window sits on one LR pixel (or one row): its KDE has no width.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 1), torch.nn.PixelShuffle(2))
    result = explain(model, torch.rand(3, 16, 16), window, n_steps=4)
    assert np.array_equal(result.picture("kde_blend"), result.picture("heat_blend"))
    result.save(tmp_path)
    assert (tmp_path / "kde_blend.png").is_file() and (tmp_path / "summary.json").is_file()


@pytest.mark.parametrize("channels", [2, 4])
def test_any_channel_count_is_explained_and_saved(channels, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(channels, 4 * channels, 3, padding=1), torch.nn.PixelShuffle(2))
    result = explain(model, torch.rand(channels, 16, 16), (4, 4, 8), n_steps=4)
    result.save(tmp_path)
    assert {path.name for path in tmp_path.iterdir()} >= {"figure.png", "heat_blend.png", "sr.png", "window.png"}


def test_a_bfloat16_model_is_explained_drawn_and_saved_in_float32(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2)).to(torch.bfloat16)
    result = explain(model, torch.rand(3, 16, 16), (8, 8, 8), n_steps=3)
    assert result.attribution.dtype == result.map.dtype == torch.float32
    result.save(tmp_path)
    assert np.load(tmp_path / "attribution.npy").dtype == np.float32
