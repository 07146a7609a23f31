from __future__ import annotations

import threading

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from skimage import data

from lam_captum.functional import Window, kde_map
from lam_captum.pictures import (
    blend,
    channels_last,
    draw_lam_figure,
    draw_window,
    evolution_figure,
    focus_box,
    heat_map,
    kde_picture,
    lam_figure,
    render_figure,
    save_figure,
    sr_picture,
    zoom,
)

SEISMIC = matplotlib.colormaps["seismic"]


def seismic_rgb(value: float) -> list[int]:
    """The demo's colour for a map value: ``(255 * cmap(0.5 + 0.5 * m)).astype(uint8)``."""
    return (255 * np.asarray(SEISMIC(0.5 + 0.5 * value))[:3]).astype(np.uint8).tolist()


def blob_map(height: int, width: int) -> np.ndarray:
    rows, columns = np.mgrid[0:height, 0:width]
    blob = np.exp(-((rows - height / 2) ** 2 + (columns - width / 3) ** 2) / 6.0)
    noisy = blob + 0.05 * np.random.default_rng(0).random((height, width))
    return noisy / noisy.max()


@pytest.fixture(scope="module")
def lr_photo() -> torch.Tensor:
    """A 12x10 crop of a real photo as a (3, h, w) LR input in [0, 1]."""
    return torch.from_numpy(data.astronaut()[60:72, 200:210].copy()).permute(2, 0, 1) / 255.0


def test_heat_map_colours() -> None:
    picture = heat_map(np.array([[0.0, 1.0], [0.5, 0.25]]), scale=1)
    assert picture.dtype == np.uint8
    assert picture[0, 0].tolist() == seismic_rgb(0.0)
    assert picture[0, 1].tolist() == seismic_rgb(1.0)
    assert picture[1, 0].tolist() == seismic_rgb(0.5)
    assert min(picture[0, 0]) >= 250, "zero attribution is drawn (nearly) white"
    assert picture[0, 1].tolist() == [127, 0, 0], "full attribution is drawn dark red"


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_heat_map_nearest_upscale(scale: int) -> None:
    attribution_map = blob_map(5, 7)
    picture = heat_map(torch.from_numpy(attribution_map), scale)
    assert picture.shape == (5 * scale, 7 * scale, 3)
    np.testing.assert_array_equal(picture[::scale, ::scale], heat_map(attribution_map, 1))
    last = scale - 1
    np.testing.assert_array_equal(picture[last::scale, last::scale], heat_map(attribution_map, 1))


def test_heat_map_accepts_map_with_grad() -> None:
    attribution_map = torch.from_numpy(blob_map(4, 4)).requires_grad_()
    assert heat_map(attribution_map, 2).shape == (8, 8, 3)


def test_kde_picture_is_coloured_kde_upscaled_bicubic() -> None:
    attribution_map = blob_map(9, 11)
    density = kde_map(torch.from_numpy(attribution_map)).numpy()
    colours = (255 * SEISMIC(0.5 + 0.5 * density)[..., :3]).astype(np.uint8)
    expected = np.asarray(Image.fromarray(colours).resize((44, 36), Image.BICUBIC))
    picture = kde_picture(attribution_map, 4)
    assert picture.shape == (36, 44, 3)
    np.testing.assert_array_equal(picture, expected)


def test_kde_picture_peak_is_dark_red() -> None:
    picture = kde_picture(blob_map(8, 8), 1)
    assert seismic_rgb(1.0) in picture.reshape(-1, 3).tolist()


def test_blend_extremes(lr_photo: torch.Tensor) -> None:
    heat = heat_map(blob_map(12, 10), 3)
    upscaled = np.asarray(Image.fromarray(sr_picture(lr_photo)).resize((30, 36), Image.BICUBIC))
    np.testing.assert_array_equal(blend(heat, lr_photo, alpha=0.0), heat)
    np.testing.assert_array_equal(blend(heat, lr_photo, alpha=1.0), upscaled)


def test_blend_half_is_the_demos_truncated_mean(lr_photo: torch.Tensor) -> None:
    heat = heat_map(blob_map(12, 10), 2)
    upscaled = np.asarray(Image.fromarray(sr_picture(lr_photo)).resize((20, 24), Image.BICUBIC))
    expected = (heat * 0.5 + upscaled * 0.5).astype(np.uint8)
    np.testing.assert_array_equal(blend(heat, lr_photo.numpy()), expected)


def test_blend_grayscale_lr_is_gray(lr_photo: torch.Tensor) -> None:
    gray = lr_photo.mean(dim=0, keepdim=True)
    mixed = blend(heat_map(np.zeros((12, 10)), 2), gray, alpha=1.0)
    assert mixed.shape == (24, 20, 3)
    np.testing.assert_array_equal(mixed[..., 0], mixed[..., 1])
    np.testing.assert_array_equal(mixed[..., 0], mixed[..., 2])


@pytest.mark.parametrize(("alpha", "message"), [
    (-0.1, r"`alpha` must be a number in \[0, 1\], got -0.1"),
    (1.5, r"`alpha` must be a number in \[0, 1\], got 1.5"),
    (float("nan"), r"`alpha` must be a number in \[0, 1\], got nan"),
])
def test_blend_rejects_alpha(alpha: float, message: str, lr_photo: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=message):
        blend(heat_map(np.zeros((12, 10)), 2), lr_photo, alpha=alpha)


def test_blend_rejects_mismatched_sizes(lr_photo: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"`heat` \(25x20\) must be `lr_image` \(12x10\) upscaled"):
        blend(np.zeros((25, 20, 3), np.uint8), lr_photo)
    with pytest.raises(ValueError, match=r"`heat` \(24x30\) must be `lr_image` \(12x10\) upscaled"):
        blend(np.zeros((24, 30, 3), np.uint8), lr_photo)
    with pytest.raises(ValueError, match=r"`lr_image` must be a \(C, H, W\) image"):
        blend(np.zeros((24, 20, 3), np.uint8), lr_photo[0])
    with pytest.raises(TypeError, match="`lr_image` must be a floating image"):
        blend(np.zeros((24, 20, 3), np.uint8), (lr_photo * 255).to(torch.uint8))


def test_draw_window_outline_and_interior() -> None:
    image = np.random.default_rng(0).integers(0, 200, (20, 24, 3), dtype=np.uint8)
    framed = draw_window(image, (3, 5, 10, 12), width=2)
    outline = np.zeros((20, 24), bool)
    outline[3:13, 5:17] = True
    outline[5:11, 7:15] = False
    assert (framed[outline] == [255, 0, 0]).all()
    np.testing.assert_array_equal(framed[~outline], image[~outline])
    assert framed is not image and image.max() < 200, "the input is left untouched"


def test_draw_window_colour_width_and_float_input() -> None:
    framed = draw_window(torch.zeros(1, 8, 8), (0, 0, 8, 8), color=(0, 255, 0), width=1)
    assert framed[0, 3].tolist() == [0, 255, 0]
    assert framed[7, 7].tolist() == [0, 255, 0]
    assert framed[1, 1].tolist() == [0, 0, 0]


@pytest.mark.parametrize(("window", "message"), [
    ((10, 0, 16, 16), r"must lie inside the 20x24 image, got top=10, left=0, height=16, width=16"),
    ((0, 10, 16, 16), r"got top=0, left=10, height=16, width=16"),
    ((-1, 0, 4, 4), r"got top=-1"),
    ((0, 0, 0, 4), r"positive size, got height=0, width=4"),
    ((0, 0, 4), r"four ints \(top, left, height, width\), got \(0, 0, 4\)"),
    ((0.5, 0, 4, 4), r"four ints"),
])
def test_draw_window_rejects(window: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        draw_window(np.zeros((20, 24, 3), np.uint8), window)


def test_draw_window_rejects_style() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="`width` must be an int >= 1, got 0"):
        draw_window(image, (0, 0, 4, 4), width=0)
    with pytest.raises(ValueError, match=r"`color` must be three ints in \[0, 255\], got \(300, 0, 0\)"):
        draw_window(image, (0, 0, 4, 4), color=(300, 0, 0))
    with pytest.raises(ValueError, match=r"`image_sr_size` must be a uint8 \(H, W, 3\) RGB picture"):
        draw_window(np.zeros((8, 8), np.uint8), (0, 0, 4, 4))


def test_sr_picture_clamps_and_rounds() -> None:
    sr = torch.tensor([-0.2, 0.5, 1.7]).reshape(3, 1, 1).expand(3, 2, 2)
    picture = sr_picture(sr)
    assert picture.dtype == np.uint8
    assert picture.shape == (2, 2, 3)
    assert picture[0, 0].tolist() == [0, 128, 255]


def test_sr_picture_grayscale_and_errors() -> None:
    assert sr_picture(np.full((1, 3, 4), 0.2, np.float32))[2, 3].tolist() == [51, 51, 51]
    with pytest.raises(ValueError, match=r"`sr_output` must be a \(C, H, W\) image, got shape \(1, 3, 8, 8\)"):
        sr_picture(torch.zeros(1, 3, 8, 8))


@pytest.mark.parametrize("channels", [2, 4, 6])
def test_other_channel_counts_are_shown_as_the_grey_of_their_mean(channels) -> None:
    image = torch.linspace(0, 1, channels)[:, None, None].expand(channels, 2, 2)
    grey = round(255 * float(image.mean()))
    assert sr_picture(image)[1, 1].tolist() == [grey] * 3


@pytest.mark.parametrize("bad", [
    np.full((3, 3), np.nan),
    np.full((3, 3), 1.5),
    -np.ones((3, 3)),
    np.ones((1, 3, 3)),
])
def test_map_pictures_reject_invalid_maps(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="`attribution_map` must"):
        heat_map(bad, 2)
    with pytest.raises(ValueError, match="`attribution_map` must"):
        kde_picture(bad, 2)


@pytest.mark.parametrize(("scale", "error"), [(0, ValueError), (2.5, TypeError)])
def test_map_pictures_reject_scale(scale: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="`scale` must be"):
        heat_map(np.zeros((3, 3)), scale)
    with pytest.raises(error, match="`scale` must be"):
        kde_picture(blob_map(3, 3), scale)


def test_kde_picture_reports_degenerate_map() -> None:
    with pytest.raises(ValueError, match="one pixel"):
        kde_picture(np.eye(1, 9).reshape(3, 3), 2)


@pytest.fixture(scope="module")
def panels(lr_photo: torch.Tensor) -> dict[str, np.ndarray]:
    attribution_map = blob_map(12, 10)
    heat = heat_map(attribution_map, 4)
    sr = torch.nn.functional.interpolate(lr_photo[None], scale_factor=4, mode="bilinear")[0]
    return {
        "window_image": draw_window(sr, (16, 8, 16, 16)),
        "heat": heat,
        "heat_blend": blend(heat, lr_photo),
        "kde_blend": blend(kde_picture(attribution_map, 4), lr_photo),
        "sr": sr,
    }


def test_lam_figure_renders_rgb(panels: dict[str, np.ndarray]) -> None:
    figure = lam_figure(**panels, di=12.34, lr_size=(12, 10), title="bilinear x4")
    assert figure.dtype == np.uint8
    assert figure.ndim == 3 and figure.shape[2] == 3
    assert 1200 <= figure.shape[1] <= 2000 and 250 <= figure.shape[0] <= 500
    assert figure.shape[1] > 3 * figure.shape[0], "the five panels sit in one row"
    red = (figure[..., 0] > 200) & (figure[..., 1] < 60) & (figure[..., 2] < 60)
    assert red.any(), "the window outline and the heat map show"


def test_lam_figure_caption_changes_the_picture(panels: dict[str, np.ndarray]) -> None:
    first = lam_figure(**panels, di=12.34, lr_size=(12, 10))
    assert not np.array_equal(first, lam_figure(**panels, di=99.99, lr_size=(12, 10)))
    assert not np.array_equal(first, lam_figure(**panels, di=12.34, lr_size=(24, 20)))


def test_lam_figure_is_thread_safe(panels: dict[str, np.ndarray]) -> None:
    expected = lam_figure(**panels, di=1.0, lr_size=(12, 10))
    results: list[np.ndarray] = []
    threads = [
        threading.Thread(target=lambda: results.append(lam_figure(**panels, di=1.0, lr_size=(12, 10))))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3
    assert all(np.array_equal(result, expected) for result in results)


def test_lam_figure_rejects(panels: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="must share one SR size"):
        lam_figure(**{**panels, "heat": panels["heat"][:-4]}, di=1.0, lr_size=(12, 10))
    with pytest.raises(ValueError, match="`di` must be finite, got nan"):
        lam_figure(**panels, di=float("nan"), lr_size=(12, 10))
    with pytest.raises(ValueError, match=r"`lr_size` must hold two positive ints, got \(12, 0\)"):
        lam_figure(**panels, di=1.0, lr_size=(12, 0))
    with pytest.raises(ValueError, match=r"`lr_size` must be \(height, width\), got \(12,\)"):
        lam_figure(**panels, di=1.0, lr_size=(12,))


def test_evolution_figure() -> None:
    maps = [blob_map(8, 8) ** power for power in (1, 2, 4)]
    one = evolution_figure(maps[:1], ["epoch 1\nDI 10.2"])
    labels = ["epoch 1", "epoch 2", "epoch 3\nDI 5.0"]
    three = evolution_figure([torch.from_numpy(maps[0]), *maps[1:]], labels)
    assert one.dtype == three.dtype == np.uint8
    assert one.shape[0] == three.shape[0] and one.shape[2] == three.shape[2] == 3
    assert three.shape[1] == 3 * one.shape[1]


def test_evolution_figure_rejects() -> None:
    with pytest.raises(ValueError, match="`maps` must hold at least one map"):
        evolution_figure([], [])
    with pytest.raises(ValueError, match="one label per map: 2 maps, got 1"):
        evolution_figure([np.eye(3), np.eye(3)], ["epoch 1"])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        evolution_figure([2 * np.eye(3)], ["epoch 1"])


def test_channels_last_feeds_captums_visualize_image_attr(lr_photo: torch.Tensor) -> None:
    from captum.attr import visualization

    matplotlib.use("Agg")
    attribution = torch.randn(1, 3, 12, 10)
    values = channels_last(attribution)
    assert values.shape == (12, 10, 3)
    np.testing.assert_array_equal(values[4, 7], attribution[0, :, 4, 7].numpy())
    figure, axes = visualization.visualize_image_attr(
        values, channels_last(lr_photo), method="blended_heat_map", sign="absolute_value", use_pyplot=False,
    )
    shown = axes.get_images()[-1].get_array()
    assert shown.shape == (12, 10)
    expected = np.abs(values.sum(axis=2))
    assert np.unravel_index(np.argmax(shown), shown.shape) == np.unravel_index(np.argmax(expected), expected.shape)
    assert channels_last(attribution[0].requires_grad_()).shape == (12, 10, 3)
    with pytest.raises(ValueError, match=r"`attribution` must be one \(C, H, W\) or \(1, C, H, W\) attribution, "
                       r"got shape \(2, 3, 12, 10\)"):
        channels_last(torch.zeros(2, 3, 12, 10))


def share_inside(attribution_map: np.ndarray, box: Window, scale: int) -> float:
    rows = slice(box.top // scale, (box.top + box.height) // scale)
    columns = slice(box.left // scale, (box.left + box.width) // scale)
    return attribution_map[rows, columns].sum() / attribution_map.sum()


def test_focus_box_holds_99_percent_of_the_attribution_and_the_window() -> None:
    attribution_map = np.zeros((40, 40))
    attribution_map[20:24, 25:31] = blob_map(4, 6)
    attribution_map[2, 2] = 0.001  # a speck of the last percent: left out of the zoom
    box = focus_box(attribution_map, (84, 100, 8), scale=4, padding=2)
    assert share_inside(attribution_map, box, 4) >= 0.99
    assert box.top <= 84 and box.left <= 100 and box.top + box.height >= 92 and box.left + box.width >= 108
    assert box.height == box.width, "square where the image has room"
    assert all(value % 4 == 0 for value in box), "whole LR pixels"
    assert box.top >= 4 * (20 - 2) - 4 * 2 and box.height <= 4 * (8 + 2 * 2), "tight around the blob, padded"


def test_focus_box_at_the_edge_stays_inside_the_image() -> None:
    attribution_map = np.zeros((10, 30))
    attribution_map[0:3, 25:30] = 1.0
    box = focus_box(attribution_map, (0, 112, 8), scale=4, padding=3)
    assert box.top == 0 and box.left + box.width == 120
    assert (box.height, box.width) == (4 * 10, 4 * 11), "5 columns + 2 x 3 padding; the 10 rows are all there is"
    assert share_inside(attribution_map, box, 4) == 1.0


def test_focus_box_of_an_empty_map_is_the_padded_window() -> None:
    box = focus_box(np.zeros((16, 16)), (20, 24, 8, 12), scale=4, padding=1)
    assert box == Window(12, 20, 20, 20), "LR rows 5-6 and columns 6-8, padded by 1 to a 5x5 square"


@pytest.mark.parametrize(("arguments", "error", "message"), [
    ({"fraction": 0.0}, ValueError, r"`fraction` must be a number in \(0, 1\], got 0.0"),
    ({"fraction": 1.5}, ValueError, r"`fraction` must be a number in \(0, 1\], got 1.5"),
    ({"padding": -1}, ValueError, "`padding` must be an int >= 0, got -1"),
    ({"window": (60, 0, 8)}, ValueError, "`window` must lie inside the 64x64 image, got top=60"),
    ({"scale": 2.0}, TypeError, "`scale` must be an int"),
])
def test_focus_box_rejects(arguments: dict, error: type[Exception], message: str) -> None:
    call = {"window": (8, 8, 8), "scale": 4, **arguments}
    with pytest.raises(error, match=message):
        focus_box(np.zeros((16, 16)), call.pop("window"), call.pop("scale"), **call)


def test_zoom_crops_and_upscales_every_pixel_to_an_equal_square() -> None:
    picture = np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8)
    zoomed = zoom(picture, Window(8, 4, 16, 10))
    assert zoomed.shape == (64, 40, 3), "factor 4: the most that fits 64x48"
    np.testing.assert_array_equal(zoomed, np.kron(picture[8:24, 4:14], np.ones((4, 4, 1), np.uint8)))
    with pytest.raises(ValueError, match="`window` must lie inside the 64x48 image"):
        zoom(picture, (60, 0, 8, 8))


def test_lam_figure_zoom_panels_colour_bar_and_normalisation(panels: dict[str, np.ndarray]) -> None:
    box = Window(8, 8, 24, 24)
    figure = draw_lam_figure(**panels, di=12.34, lr_size=(12, 10), zoom_box=box, map_max=0.0123)
    image_axes = [axes for axes in figure.axes if axes.get_images() and axes.get_title()]
    assert [axes.get_title() for axes in image_axes] == [
        "window", "LAM heat map", "heat blend", "heat map, zoom x1", "heat blend, zoom x1", "KDE blend", "SR output"]
    np.testing.assert_array_equal(image_axes[3].get_images()[0].get_array(), panels["heat"][8:32, 8:32])
    bar = [axes for axes in figure.axes if axes not in image_axes]
    assert len(bar) == 1 and bar[0].get_ylabel() == "map (0 none, 1 its max)"
    assert "map = |channel sum of the attribution| / 0.0123" in figure.get_suptitle()
    assert "DI 12.34 (LR 12x10)" in figure.get_suptitle()
    pixels = lam_figure(**panels, di=12.34, lr_size=(12, 10), zoom_box=box)
    assert pixels.shape[1] <= 2000 and pixels.shape[1] > 4 * pixels.shape[0], "seven panels in one readable row"
    with pytest.raises(ValueError, match="`window` must lie inside the 48x40 image"):
        lam_figure(**panels, di=1.0, lr_size=(12, 10), zoom_box=(40, 0, 16, 16))
    with pytest.raises(ValueError, match="`map_max` must be finite, got inf"):
        lam_figure(**panels, di=1.0, lr_size=(12, 10), map_max=float("inf"))


@pytest.mark.parametrize("file_format", ["png", "pdf", "svg"])
def test_save_figure_writes_each_format(file_format: str, panels: dict[str, np.ndarray], tmp_path) -> None:
    figure = draw_lam_figure(**panels, di=12.34, lr_size=(12, 10))
    path = save_figure(figure, tmp_path / f"figure.{file_format}", file_format)
    assert sorted(tmp_path.iterdir()) == [path]
    if file_format == "png":
        np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")),
                                      lam_figure(**panels, di=12.34, lr_size=(12, 10)))
    elif file_format == "pdf":
        from pypdf import PdfReader

        page = PdfReader(path).pages[0]
        assert "DI 12.34 (LR 12x10)" in page.extract_text()
        assert [(image.image.width, image.image.height) for image in page.images][:5] == [(40, 48)] * 5
    else:
        assert "DI 12.34 (LR 12x10)" in path.read_text() and path.read_text().count("<image ") >= 5
    assert matplotlib.rcParams["pdf.fonttype"] == 3, "the global settings are left as they were"


def test_save_figure_rejects_format(tmp_path) -> None:
    with pytest.raises(ValueError, match="`format` must be one of png, pdf, svg, got 'jpg'"):
        save_figure(Figure(), tmp_path / "figure.jpg", "jpg")


def test_lam_result_figure_zooms_into_its_map(lr_photo: torch.Tensor) -> None:
    from conftest import tiny_sr

    from lam_captum.explain import explain

    result = explain(tiny_sr(), lr_photo, (16, 12, 8), n_steps=4)
    figure = result.draw_figure()
    titles = [axes.get_title() for axes in figure.axes]
    box = focus_box(result.map, result.window, result.scale)
    assert any(title.startswith("heat map, zoom") for title in titles)
    map_max = float(result.attribution.sum(dim=0).abs().max())
    assert f"/ {map_max:.3g}" in figure.get_suptitle()
    assert share_inside(result.map.numpy(), box, 4) >= 0.99
    np.testing.assert_array_equal(result.picture("figure"), render_figure(result.draw_figure()))
