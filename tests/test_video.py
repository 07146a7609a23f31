"""Video LAM: clips through LAM.attribute, per-frame reading with explain_clip, pictures and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import cbook
from PIL import Image
from reference_video_lam import tool_gradient_detector, tool_video_lam
from video_models import TinyRecurrentVSR, TinySlidingWindowVSR

from lam_captum import LAM
from lam_captum.cli import main
from lam_captum.functional import blur_baseline, diffusion_index
from lam_captum.video import CLIP_SAVED_FILES, explain_clip, temporal_profile

MODELS = Path(__file__).parent / "video_models.py"


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    """Four 12x12 RGB frames of a photo crop drifting right by a pixel a frame (a real, moving texture)."""
    photo = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"), dtype=np.float32) / 255
    frames = [photo[200:248:4, 180 + 4 * shift : 228 + 4 * shift : 4] for shift in range(4)]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


def _relative_error(ours: torch.Tensor, reference: np.ndarray) -> float:
    return float(np.abs(ours.double().numpy() - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("frame", [None, 0, 3])
def test_clip_to_clip_attribution_matches_the_video_tool_literally(clip, frame):
    model = TinyRecurrentVSR().eval()
    ours = LAM(model).attribute(clip[None], (6, 6, 8), n_steps=10, frame=frame, internal_batch_size=3)
    reference = tool_video_lam(model, clip.numpy(), 6, 6, 8, frame=frame, fold=10)
    assert ours.shape == (1, 4, 3, 12, 12)
    assert _relative_error(ours[0], reference) <= 1e-4
    assert all(np.abs(reference[t]).sum() > 0 for t in range(4))  # a bidirectional model: every frame counts


def test_clip_to_frame_attribution_matches_the_video_tool_literally(clip):
    model = TinySlidingWindowVSR().eval()
    ours = LAM(model).attribute(clip[None, :3], (4, 10, 10), n_steps=10)
    reference = tool_video_lam(model, clip[:3].numpy(), 4, 10, 10, fold=10)
    assert ours.shape == (1, 3, 3, 12, 12)
    assert _relative_error(ours[0], reference) <= 1e-4


def test_default_frame_is_the_centre_ceil_half_minus_one(clip):
    model = TinyRecurrentVSR().eval()
    for length, centre in ((1, 0), (2, 0), (3, 1), (4, 1), (5, 2)):
        frames = clip[None, [index % 4 for index in range(length)]]
        default = LAM(model).attribute(frames, (6, 6, 8), n_steps=3)
        chosen = LAM(model).attribute(frames, (6, 6, 8), n_steps=3, frame=centre)
        assert torch.equal(default, chosen), length


def test_frame_out_of_range_is_refused_naming_frame(clip):
    lam = LAM(TinyRecurrentVSR().eval())
    for frame in (4, -1, 1.0, True):
        with pytest.raises(ValueError, match=r"`frame` must be an integer from 0 to 3 for clips of 4 frames"):
            lam.attribute(clip[None], (6, 6, 8), n_steps=2, frame=frame)
    with pytest.raises(ValueError, match=r"`frame` is for clips"):
        LAM(torch.nn.Upsample(scale_factor=2)).attribute(clip[:1], (6, 6, 8), n_steps=2, frame=0)


def test_clip_model_with_the_wrong_output_shape_is_refused(clip):
    model = TinyRecurrentVSR().eval()
    with pytest.raises(ValueError, match=r"must return clips \(N, T, C, sH, sW\) or one frame \(N, C, sH, sW\), "
                                         r"got \(1, 3, 3, 24, 24\) for \(1, 4, 3, 12, 12\)"):
        LAM(lambda x: model(x)[:, 1:]).attribute(clip[None], (6, 6, 8), n_steps=2, internal_batch_size=1)
    with pytest.raises(ValueError, match=r"got \(1, 12, 24, 24\)"):
        explain_clip(lambda x: model(x).flatten(1, 2), clip, (6, 6, 8), n_steps=2)


def test_frame_given_for_a_clip_to_frame_model_warns_that_it_has_no_effect(clip):
    lam = LAM(TinySlidingWindowVSR().eval())
    with pytest.warns(RuntimeWarning, match=r"`frame`=0 has no effect"):
        with_frame = lam.attribute(clip[None, :3], (4, 10, 10), n_steps=3, frame=0)
    assert torch.equal(with_frame, lam.attribute(clip[None, :3], (4, 10, 10), n_steps=3))


def test_chunking_does_not_change_a_clip_attribution(clip):
    lam = LAM(TinyRecurrentVSR().eval())
    one = lam.attribute(clip[None].repeat(2, 1, 1, 1, 1), (6, 6, 8), n_steps=5, internal_batch_size=1)
    seven = lam.attribute(clip[None].repeat(2, 1, 1, 1, 1), (6, 6, 8), n_steps=5, internal_batch_size=7)
    torch.testing.assert_close(one, seven, rtol=1e-5, atol=1e-7)


def test_clip_convergence_delta_is_the_completeness_gap_on_the_chosen_frame(clip):
    model = TinyRecurrentVSR().eval()
    attribution, delta = LAM(model).attribute(clip[None], (6, 6, 8), n_steps=8, frame=2,
                                              return_convergence_delta=True)
    baseline = blur_baseline(clip, 1.2, 9)[None]
    with torch.no_grad():
        gap = tool_gradient_detector(model(clip[None])[:, 2], 6, 6, 8) - tool_gradient_detector(
            model(baseline)[:, 2], 6, 6, 8)
    torch.testing.assert_close(delta, (attribution.sum() - gap).reshape(1), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def result(clip):
    return explain_clip(TinyRecurrentVSR(), clip, (6, 6, 8), n_steps=6)


def test_explain_clip_refuses_an_hr_clip_that_does_not_fit(clip):
    with pytest.raises(ValueError, match=r"the HR clip `hr` must be \(4, C, 24, 24\).*got \(4, 3, 48, 48\)"):
        explain_clip(TinyRecurrentVSR(), clip, (6, 6, 8), hr=torch.rand(4, 3, 48, 48), n_steps=2)


def test_joint_normalisation_lets_frames_compare_and_per_frame_does_not(clip, result):
    per_frame = explain_clip(TinyRecurrentVSR(), clip, (6, 6, 8), n_steps=6, normalise="frame")
    magnitude = result.attribution.sum(dim=1).abs()
    torch.testing.assert_close(result.maps, magnitude / magnitude.max())
    assert float(result.maps.max()) == 1.0 and float(result.maps.amax(dim=(1, 2)).min()) < 1.0
    torch.testing.assert_close(per_frame.maps.amax(dim=(1, 2)), torch.ones(4))
    torch.testing.assert_close(per_frame.maps, magnitude / magnitude.amax(dim=(1, 2), keepdim=True))


def test_temporal_profile_is_each_frames_share_and_sums_to_one(result):
    assert result.frame == 1 and result.profile.shape == (4,)
    assert float(result.profile.sum()) == pytest.approx(1.0, abs=1e-12)
    per_frame = result.attribution.double().sum(dim=1).abs().sum(dim=(1, 2))
    torch.testing.assert_close(result.profile, per_frame / per_frame.sum())
    assert temporal_profile(torch.zeros(3, 1, 4, 4)).tolist() == [0.0, 0.0, 0.0]


def test_di_is_reported_per_frame_and_for_the_whole_clip(result):
    magnitude = result.attribution.sum(dim=1).abs()
    expected = [float(diffusion_index(frame_map)) for frame_map in magnitude]
    np.testing.assert_allclose(result.frame_di.numpy(), expected, rtol=1e-6)
    assert result.di == pytest.approx(float(diffusion_index(magnitude.flatten())), rel=1e-6)


def test_clip_result_saves_the_strip_the_profile_and_the_numbers(result, tmp_path):
    folder = result.save(tmp_path / "clip", metadata={"model": "tiny"})
    assert sorted(path.name for path in folder.iterdir()) == sorted(CLIP_SAVED_FILES)
    strip = np.asarray(Image.open(folder / "strip.png"))
    assert strip.shape == (24, 4 * 24 + 3 * 4, 3)
    assert (strip[6, 24 + 4 + 6] == [255, 0, 0]).all()  # the window's corner, on frame 1 only
    assert not (strip[6, 6] == [255, 0, 0]).all()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["model"] == "tiny" and summary["frame"] == 1 and summary["frames"] == 4
    assert sum(summary["temporal_profile"]) == pytest.approx(1.0)
    assert len(summary["frame_di"]) == 4
    assert np.load(folder / "attribution.npy").shape == (4, 3, 12, 12)


def _write_frames(folder: Path, count: int = 3) -> Path:
    """HR frames: 48x48 crops of a photo, shifted two pixels a frame, named so that their order is by name."""
    folder.mkdir()
    photo = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    for index in range(count):
        photo.crop((180 + 2 * index, 200, 228 + 2 * index, 248)).save(folder / f"frame_{index:03d}.png")
    return folder


def test_cli_explains_a_folder_of_frames_end_to_end(tmp_path, capsys):
    frames = _write_frames(tmp_path / "frames")
    output = tmp_path / "out"
    status = main(["--frames", str(frames), "--model", f"{MODELS}:TinyRecurrentVSR", "--frame", "0",
                   "--top", "10", "--left", "12", "--size", "12", "--steps", "4", "--output", str(output),
                   "--device", "cpu", "--no-progress"])
    assert status == 0, capsys.readouterr().err
    assert sorted(path.name for path in output.iterdir()) == sorted(CLIP_SAVED_FILES)
    summary = json.loads((output / "summary.json").read_text())
    assert summary["frame"] == 0 and summary["frames"] == 3 and summary["lr_size"] == [24, 24]
    assert summary["scale"] == 2
    assert [Path(path).name for path in summary["frame_files"]] == ["frame_000.png", "frame_001.png",
                                                                    "frame_002.png"]
    assert np.load(output / "attribution.npy").shape == (3, 3, 24, 24)


def test_cli_degrades_each_frame_with_its_own_noise_and_records_it(tmp_path, capsys):
    frames = _write_frames(tmp_path / "frames")
    common = ["--frames", str(frames), "--model", f"{MODELS}:TinyRecurrentVSR", "--size", "12", "--steps", "2",
              "--no-progress"]
    assert main([*common, "--output", str(tmp_path / "clean")]) == 0
    assert main([*common, "--degrade", "noise:25", "--seed", "3", "--output", str(tmp_path / "noisy")]) == 0
    summary = json.loads((tmp_path / "noisy" / "summary.json").read_text())
    assert summary["degrade"] == "noise:25" and summary["seed"] == 3
    assert not np.array_equal(np.load(tmp_path / "clean" / "attribution.npy"),
                              np.load(tmp_path / "noisy" / "attribution.npy"))
    capsys.readouterr()


@pytest.mark.parametrize(("flags", "message"), [(["--signed"], "`--signed` draws an image's signed map"),
                                                (["--format", "png", "pdf"], "`--format` png pdf is the image figure's")])
def test_cli_refuses_the_image_figures_flags_for_a_clip(flags, message, tmp_path, capsys):
    frames = _write_frames(tmp_path / "frames")
    status = main(["--frames", str(frames), "--model", f"{MODELS}:TinyRecurrentVSR", *flags, "--steps", "2",
                   "--output", str(tmp_path / "out"), "--no-progress"])
    assert status == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_hidden_files_beside_the_frames_are_not_frames(tmp_path, capsys):
    # A folder copied from macOS holds a "._name" resource fork beside each file: not an image.
    frames = _write_frames(tmp_path / "frames")
    (frames / "._frame_000.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    status = main(["--frames", str(frames), "--model", f"{MODELS}:TinyRecurrentVSR", "--size", "12", "--steps", "2",
                   "--output", str(tmp_path / "out"), "--no-progress"])
    assert status == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["frames"] == 3


def test_cli_refuses_a_frame_outside_the_clip_naming_the_flag(tmp_path, capsys):
    frames = _write_frames(tmp_path / "frames")
    status = main(["--frames", str(frames), "--model", f"{MODELS}:TinyRecurrentVSR", "--frame", "3",
                   "--steps", "2", "--output", str(tmp_path / "out"), "--no-progress"])
    assert status == 2
    assert "`--frame` must be an integer from 0 to 2 for clips of 3 frames, got 3" in capsys.readouterr().err


def test_noise_tunnel_takes_clips_and_the_frame(clip):
    from captum.attr import NoiseTunnel

    lam = LAM(TinyRecurrentVSR().eval())
    smoothed = NoiseTunnel(lam).attribute(clip[None], nt_samples=2, stdevs=0.0, window=(6, 6, 8), n_steps=3, frame=0)
    torch.testing.assert_close(smoothed, lam.attribute(clip[None], (6, 6, 8), n_steps=3, frame=0))


def test_clip_pictures_refuse_mismatched_frames_and_a_frame_outside_the_clip():
    from lam_captum.pictures import clip_strip, temporal_profile_chart

    with pytest.raises(ValueError, match=r"`maps` \(T, h, w\) and `clip` \(T, C, h, w\) must describe the same"):
        clip_strip(np.zeros((3, 4, 4)), torch.zeros(2, 3, 4, 4), (0, 0, 4, 4), 0, 2)
    with pytest.raises(ValueError, match=r"`frame` must be an integer from 0 to 2, got 3"):
        clip_strip(np.zeros((3, 4, 4)), torch.zeros(3, 3, 4, 4), (0, 0, 4, 4), 3, 2)
    with pytest.raises(ValueError, match=r"`frame` must be an integer from 0 to 1, got 2"):
        temporal_profile_chart(np.array([0.5, 0.5]), 2)


def test_cli_names_a_missing_frames_folder_and_a_frame_without_frames(tmp_path, capsys):
    assert main(["--frames", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")]) == 2
    assert "`--frames`" in capsys.readouterr().err
    assert main(["--frame", "1", "--output", str(tmp_path / "out")]) == 2
    assert "give the clip's folder with `--frames`" in capsys.readouterr().err
