"""LAMMonitor with clip probes: video SR models watched inside real Lightning runs, read back from TensorBoard."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from tensorboard.plugins.custom_scalar import layout_pb2
from test_callback import LAM_ARGUMENTS, LOGGED_STEPS, L1Training, read_events, steps, trainer
from test_callback_resilience import cli_config, run_cli
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from video_models import TinyRecurrentVSR, TinySlidingWindowVSR

import lam_captum.callbacks._lam_monitor as monitor_module
from lam_captum.callbacks import LAMMonitor, Probe
from lam_captum.explain import explain
from lam_captum.imageio import load_input, save_png
from lam_captum.video import explain_clip

SCALE = 2
FRAMES = 3
LR_SIZE = 8
WINDOW = (4, 4, 8)
CLIP_SCALARS = ("di", "gini", "negative_share", "delta")


class VideoSR(L1Training):
    """A video SR network trained on clips; an image ``(N, C, H, W)`` is read as a clip of one frame, so that
    image probes can watch the same network."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() == 4:
            return self.network(inputs[:, None])[:, 0]
        return self.network(inputs)


def sample_clips(count: int = 4, frames: int = FRAMES, seed: int = 1) -> torch.Tensor:
    """Smooth random LR clips ``(count, T, 3, 8, 8)`` in [0, 1]."""
    coarse = torch.rand(count * frames, 3, 3, 3, generator=torch.Generator().manual_seed(seed))
    smooth = nn.functional.interpolate(coarse, size=LR_SIZE, mode="bilinear", align_corners=False)
    return smooth.unflatten(0, (count, frames))


def clip_loader(centre_only: bool) -> DataLoader:
    """Clips and their nearest-upscaled targets: every frame (clip to clip) or the centre one (clip to frame)."""
    lr = sample_clips()
    hr = nn.functional.interpolate(lr.flatten(0, 1), scale_factor=SCALE, mode="nearest").unflatten(0, lr.shape[:2])
    return DataLoader(TensorDataset(lr, hr[:, FRAMES // 2] if centre_only else hr), batch_size=2)


def write_frames(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    """HR frames ``frame_<t>.png`` of the given (height, width) sizes, smooth and different from each other."""
    folder.mkdir()
    for index, size in enumerate(sizes):
        frame = sample_clips(count=1, frames=1, seed=10 + index)[0, 0]
        save_png(nn.functional.interpolate(frame[None], size=size, mode="bilinear", align_corners=False)[0],
                 folder / f"frame_{index}.png")
    return folder


@pytest.fixture
def frame_folder(tmp_path: Path) -> Path:
    """Three 16x16 HR frames: downscaled by 2, an 8x8 LR clip of three frames."""
    return write_frames(tmp_path / "frames", [(2 * LR_SIZE, 2 * LR_SIZE)] * FRAMES)


def read_folder_as_the_cli_does(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    frames = [load_input(path, scale=SCALE, mode=None) for path in sorted(folder.glob("*.png"))]
    return torch.stack([lr for lr, _ in frames]), torch.stack([hr for _, hr in frames])


def assert_logged_as_standalone(monitor: LAMMonitor, name: str, standalone, events) -> None:
    """The monitor's last history entry equals the standalone run exactly, and TensorBoard holds it in float32."""
    logged = monitor.history[name][-1]
    assert [logged[key] for key in CLIP_SCALARS] == [standalone.di, standalone.gini, standalone.negative_share,
                                                     standalone.delta]
    assert logged["frame_di"] == standalone.frame_di.tolist()
    assert logged["profile"] == standalone.profile.tolist()
    for key in CLIP_SCALARS:
        assert events.Scalars(f"lam/{name}/{key}")[-1].value == pytest.approx(logged[key], rel=1e-6, abs=1e-7)
    for series in ("frame_di", "profile"):
        tags = sorted(tag for tag in events.Tags()["scalars"] if tag.startswith(f"lam/{name}/{series}/"))
        assert tags == [f"lam/{name}/{series}/{index}" for index in range(FRAMES)]
        assert [events.Scalars(tag)[-1].value for tag in tags] == pytest.approx(logged[series], rel=1e-6, abs=1e-7)
        assert all(steps(events, tag) == LOGGED_STEPS for tag in tags)


def test_clip_to_clip_probes_log_the_numbers_of_explain_clip(tmp_path: Path, frame_folder: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    shared_runs = []
    monkeypatch.setattr(monitor_module, "explain_windows", lambda *args, **kwargs: shared_runs.append(args))
    clip = sample_clips(count=1, seed=7)[0]
    image = sample_clips(count=1, frames=1, seed=8)[0, 0]
    probes = [Probe(clip, WINDOW, "tensor", frame=0), Probe(clip, (0, 7, 8), "tensor_corner"),
              Probe(frame_folder, WINDOW, "folder", scale=SCALE), Probe(image, WINDOW, "image")]
    monitor = LAMMonitor(probes, **LAM_ARGUMENTS, erf=(16, 16))
    model = VideoSR(TinyRecurrentVSR())
    run = trainer(tmp_path, [monitor])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="LAMMonitor", category=RuntimeWarning)
        run.fit(model, clip_loader(centre_only=False), clip_loader(centre_only=False))

    events = read_events(run.logger.log_dir)
    lr, hr = read_folder_as_the_cli_does(frame_folder)
    assert_logged_as_standalone(monitor, "tensor", explain_clip(model, clip, WINDOW, frame=0, **LAM_ARGUMENTS), events)
    assert_logged_as_standalone(monitor, "tensor_corner", explain_clip(model, clip, (0, 7, 8), **LAM_ARGUMENTS),
                                events)
    assert_logged_as_standalone(monitor, "folder", explain_clip(model, lr, WINDOW, hr=hr, **LAM_ARGUMENTS), events)
    assert monitor.history["image"][-1]["di"] == explain(model, image, WINDOW, **LAM_ARGUMENTS).di
    assert shared_runs == [], "clips sharing one tensor must not go to explain_windows"
    assert steps(events, "lam/erf/area_50") == LOGGED_STEPS, "the ERF of the image probe"

    for name in ("tensor", "folder"):
        assert steps(events, f"lam/{name}/strip") == steps(events, f"lam/{name}/profile") == LOGGED_STEPS
        assert steps(events, f"lam/{name}/window") == LOGGED_STEPS[:1]
        assert steps(events, f"lam/{name}/evolution") == [run.global_step]
        assert {tag for tag in events.Tags()["images"] if tag.startswith(f"lam/{name}/")} == {
            f"lam/{name}/{picture}" for picture in ("strip", "profile", "window", "evolution")}
        # The evolution's maps are the clip's frames side by side.
        assert [(len(entry["map"]), len(entry["map"][0])) for entry in monitor.history[name]] == [
            (LR_SIZE, FRAMES * LR_SIZE)] * 2
    strip = events.Images("lam/tensor/strip")[-1]
    assert strip.width > 2 * strip.height, "one panel per frame, side by side"
    assert steps(events, "lam/image/map") == LOGGED_STEPS
    assert profile_charts(events) == {name: [f"lam/{name}/profile/{index}" for index in range(FRAMES)]
                                      for name in ("tensor", "tensor_corner", "folder")}


def profile_charts(events) -> dict[str, list[str]]:
    """Per temporal-profile chart of the custom-scalars layout, its probe and the scalar tags it draws."""
    (layout_event,) = events.Tensors("custom_scalars__config__")
    (section,) = layout_pb2.Layout.FromString(layout_event.tensor_proto.string_val[0]).category
    return {chart.title.removeprefix("temporal profile of "): sorted(
        tag for tag in events.Tags()["scalars"] if any(re.fullmatch(regex, tag) for regex in chart.multiline.tag))
        for chart in section.chart if chart.title.startswith("temporal profile of ")}


def test_settings_text_shows_each_clip_probe_its_frames_and_frame(tmp_path: Path, frame_folder: Path) -> None:
    from test_callback_loggers import table_rows

    probes = [Probe(sample_clips(count=1)[0], WINDOW, "tensor"), Probe(frame_folder, WINDOW, "folder", scale=SCALE,
                                                                          frame=2)]
    monitor = LAMMonitor(probes, n_steps=1, images=())
    run = trainer(tmp_path, [monitor], max_epochs=1, limit_train_batches=1)
    run.fit(VideoSR(TinyRecurrentVSR()), clip_loader(centre_only=False), clip_loader(centre_only=False))

    text = read_events(run.logger.log_dir).Tensors("lam/settings/text_summary")[0].tensor_proto.string_val[0].decode()
    assert table_rows(text.split("\n\n")[0].splitlines()) == [
        {"probe": "tensor", "image": "tensor 3x3x8x8", "window": "(4, 4, 8, 8)", "frame": "1", "scale": "model's"},
        {"probe": "folder", "image": f"{frame_folder} (3 frames)", "window": "(4, 4, 8, 8)", "frame": "2",
         "scale": "2"},
    ]


def test_clip_to_frame_model_logs_the_numbers_of_explain_clip(tmp_path: Path, frame_folder: Path) -> None:
    clip = sample_clips(count=1, seed=7)[0]
    monitor = LAMMonitor([Probe(clip, WINDOW, "tensor"), Probe(frame_folder, (2, 6, 6), "folder", scale=SCALE)],
                         **LAM_ARGUMENTS, images=("window",))
    model = VideoSR(TinySlidingWindowVSR())
    run = trainer(tmp_path, [monitor])
    run.fit(model, clip_loader(centre_only=True), clip_loader(centre_only=True))

    events = read_events(run.logger.log_dir)
    lr, hr = read_folder_as_the_cli_does(frame_folder)
    assert_logged_as_standalone(monitor, "tensor", explain_clip(model, clip, WINDOW, **LAM_ARGUMENTS), events)
    assert_logged_as_standalone(monitor, "folder", explain_clip(model, lr, (2, 6, 6), hr=hr, **LAM_ARGUMENTS),
                                events)
    assert steps(events, "lam/folder/strip") == steps(events, "lam/folder/profile") == LOGGED_STEPS
    assert steps(events, "lam/folder/window") == LOGGED_STEPS[:1]


def test_broken_clip_probe_warns_and_training_finishes(tmp_path: Path) -> None:
    # The sliding-window model fuses exactly three frames: a clip of four cannot go through it.
    probes = [Probe(sample_clips(count=1, frames=4)[0], WINDOW, "four_frames"),
              Probe(sample_clips(count=1)[0], (12, 12, 8), "outside"), Probe(sample_clips(count=1)[0], WINDOW, "good")]
    monitor = LAMMonitor(probes, **LAM_ARGUMENTS)
    run = trainer(tmp_path, [monitor])
    with pytest.warns(RuntimeWarning) as caught:
        run.fit(VideoSR(TinySlidingWindowVSR()), clip_loader(centre_only=True), clip_loader(centre_only=True))

    skipped = [str(warning.message) for warning in caught if "LAMMonitor skipped" in str(warning.message)]
    assert len(skipped) == 4, "one warning per failing probe per epoch"
    assert sum("'four_frames'" in message and "channels" in message for message in skipped) == 2
    assert sum("'outside'" in message and "`window` must lie inside" in message for message in skipped) == 2
    assert run.state.finished
    assert monitor.history["four_frames"] == monitor.history["outside"] == []
    assert len(monitor.history["good"]) == 2
    tags = read_events(run.logger.log_dir).Tags()
    assert {tag.split("/")[1] for tag in tags["images"] + tags["scalars"] if tag.startswith("lam/")} == {
        "good", "seconds"}


def test_twelve_frames_give_zero_padded_tags_in_frame_order() -> None:
    monitor = LAMMonitor(Probe(torch.rand(12, 3, 8, 8), WINDOW, "long"), **LAM_ARGUMENTS)
    model = TinyRecurrentVSR()
    result = explain_clip(model, monitor.probes[0].image, WINDOW, **LAM_ARGUMENTS)
    tags = list(monitor._scalars(monitor.probes[0], result))
    assert tags[4:] == [f"lam/long/frame_di/{index:02d}" for index in range(12)] + [
        f"lam/long/profile/{index:02d}" for index in range(12)]


def test_folder_probe_in_a_lightningcli_yaml(tmp_path: Path, frame_folder: Path) -> None:
    config = cli_config(tmp_path, {"probes": [
        {"image": str(frame_folder), "window": [4, 4, 8], "name": "clip", "scale": SCALE, "frame": 0},
        {"image": str(frame_folder / "frame_0.png"), "window": [4, 4, 8], "name": "image", "scale": SCALE}]})
    monitor = next(callback for callback in run_cli(config).trainer.callbacks if isinstance(callback, LAMMonitor))

    assert [(p.name, p.image, p.is_clip, p.frames, p.frame) for p in monitor.probes] == [
        ("clip", frame_folder, True, FRAMES, 0), ("image", frame_folder / "frame_0.png", False, None, None)]
    lr, hr = monitor.probes[0].load()
    assert tuple(lr.shape) == (FRAMES, 3, LR_SIZE, LR_SIZE) and tuple(hr.shape) == (FRAMES, 3, 16, 16)


def test_resumed_history_follows_the_clip_and_its_frame(frame_folder: Path) -> None:
    saved = LAMMonitor([Probe(frame_folder, WINDOW, "same", scale=SCALE), Probe(frame_folder, WINDOW, "moved",
                                                                               scale=SCALE)])
    saved.history = {"same": [{"epoch": 0}], "moved": [{"epoch": 0}]}
    state = saved.state_dict()
    assert state["probes"]["same"] == {"image": f"{frame_folder} (3 frames)", "window": "(4, 4, 8, 8)", "frame": "1"}

    # The default frame of three is frame 1: naming it keeps the history, another frame drops it.
    resumed = LAMMonitor([Probe(frame_folder, WINDOW, "same", scale=SCALE, frame=1),
                          Probe(frame_folder, WINDOW, "moved", scale=SCALE, frame=2)])
    with pytest.warns(UserWarning, match=r"dropped the DI history of probes \['moved'\].*kept \['same'\]"):
        resumed.load_state_dict(state)
    assert resumed.history == {"same": [{"epoch": 0}], "moved": []}


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"frame": 0}, ValueError, r"`frame` chooses the output frame of a clip probe; probe 'p' is an image, "
                                   r"got frame=0"),
        ({"image": torch.rand(2, 3, 3, 8, 8)}, ValueError,
         r"`image` must be one \(C, H, W\) LR image or one \(T, C, H, W\) LR clip, got shape \(2, 3, 3, 8, 8\)"),
        ({"image": torch.rand(1, 3, 8, 8)}, ValueError, r"got shape \(1, 3, 8, 8\): a batch of one image\? "
                                                        r"A \(T, C, H, W\) clip needs T >= 2 frames"),
        ({"image": torch.rand(3, 3, 8, 8), "frame": 3}, ValueError,
         r"`frame` must be an integer from 0 to 2 for the 3 frames of probe 'p', got 3"),
        ({"image": torch.rand(3, 3, 8, 8), "frame": -1}, ValueError, r"`frame` must be an integer from 0 to 2.*got -1"),
        ({"image": torch.rand(3, 3, 8, 8), "frame": 1.0}, TypeError, r"`frame` must be an int or None, got 1.0"),
        ({"image": "no/such/folder"}, FileNotFoundError,
         r"`image` 'no/such/folder' is neither an existing file nor an existing folder of frames"),
    ],
)
def test_clip_probe_rejects_bad_arguments(arguments: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Probe(**{"image": torch.rand(3, 8, 8), "window": (0, 0, 4), "name": "p", **arguments})


def test_folder_probe_rejects_mixed_frames_an_empty_folder_and_a_frame_outside(tmp_path: Path) -> None:
    mixed = write_frames(tmp_path / "mixed", [(16, 16), (18, 16), (16, 16)])
    with pytest.raises(ValueError, match=rf"the frames of `image` '{re.escape(str(mixed))}' must all have one size, "
                                         r"got 16x16 \(frame_0.png\), 18x16 \(frame_1.png\)"):
        Probe(mixed, WINDOW, "p", scale=SCALE)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=rf"`image` '{re.escape(str(empty))}' holds no image file"):
        Probe(empty, WINDOW, "p")
    grayscale = write_frames(tmp_path / "grayscale", [(16, 16)] * 2)
    save_png(torch.rand(1, 16, 16), grayscale / "frame_1.png")
    with pytest.raises(ValueError, match=rf"the LR frames of `image` '{re.escape(str(grayscale))}' must have one "
                                         r"shape, got \[\(1, 8, 8\), \(3, 8, 8\)\]"):
        Probe(grayscale, WINDOW, "p", scale=SCALE).load()
    folder = write_frames(tmp_path / "two", [(16, 16)] * 2)
    with pytest.raises(ValueError, match=r"`frame` must be an integer from 0 to 1 for the 2 frames of probe 'p', "
                                         r"got 2"):
        Probe(folder, WINDOW, "p", frame=2)


def test_erf_needs_an_image_probe() -> None:
    with pytest.raises(ValueError, match=r"`erf`=True needs at least one image probe.*\['clip'\] are all clips"):
        LAMMonitor(Probe(torch.rand(3, 3, 8, 8), WINDOW, "clip"), erf=True)
