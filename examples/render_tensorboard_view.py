"""Draw what TensorBoard shows for a LAMMonitor run into one PNG, from the event file alone.

It reads the newest event file under ``--logdir`` back with TensorBoard's own reader and lays out, per
probe, the image cards of the last logged step (``lam/<probe>/window``, ``map``, ``heat_blend``,
``kde_blend``, ``sr``) with the DI curve next to them, and the evolution picture under them.

Usage, after ``python examples/train_with_callback.py``::

    python examples/render_tensorboard_view.py --logdir runs/lam_monitor --output docs/tensorboard_view.png
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

IMAGE_CARDS = ("window", "map", "heat_blend", "kde_blend", "sr")
TENSORBOARD_ORANGE = "#ff7043"


def newest_run(logdir: Path) -> Path:
    """The folder of the most recently written event file under ``logdir``."""
    event_files = sorted(logdir.rglob("events.out.tfevents.*"), key=lambda path: path.stat().st_mtime)
    if not event_files:
        raise SystemExit(f"no TensorBoard event file under {logdir}")
    return event_files[-1].parent


def read_run(run: Path) -> EventAccumulator:
    events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def probe_names(events: EventAccumulator) -> list[str]:
    return sorted({tag.split("/")[1] for tag in events.Tags()["images"] if tag.startswith("lam/")})


def last_image(events: EventAccumulator, tag: str) -> tuple[np.ndarray, int]:
    event = events.Images(tag)[-1]
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB")), event.step


def image_card(axes: Axes, events: EventAccumulator, tag: str) -> None:
    picture, step = last_image(events, tag)
    axes.imshow(picture, interpolation="nearest")
    axes.set_title(f"{tag}\nstep {step}", fontsize=8, loc="left")
    axes.set_axis_off()


def scalar_card(axes: Axes, events: EventAccumulator, tag: str) -> None:
    points = events.Scalars(tag)
    axes.plot([point.step for point in points], [point.value for point in points], color=TENSORBOARD_ORANGE,
              marker="o", markersize=3)
    axes.set_title(tag, fontsize=8, loc="left")
    axes.set_xlabel("step", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)


def render(events: EventAccumulator, title: str) -> np.ndarray:
    probes = probe_names(events)
    columns = len(IMAGE_CARDS) + 1
    figure = Figure(figsize=(2.3 * columns, 4.6 * len(probes) + 0.4), dpi=110, layout="constrained")
    figure.suptitle(f"TensorBoard, IMAGES and SCALARS tabs: {title}", fontsize=10, x=0.01, ha="left")
    rows = figure.subfigures(len(probes), 1, squeeze=False)[:, 0]
    for probe, row in zip(probes, rows, strict=True):
        top, bottom = row.subfigures(2, 1, height_ratios=[1.3, 1])
        cards = top.subplots(1, columns)
        for axes, name in zip(cards[:-1], IMAGE_CARDS, strict=True):
            image_card(axes, events, f"lam/{probe}/{name}")
        scalar_card(cards[-1], events, f"lam/{probe}/di")
        image_card(bottom.subplots(), events, f"lam/{probe}/evolution")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", type=Path, default=Path("runs/lam_monitor"))
    parser.add_argument("--output", type=Path, default=Path("docs/tensorboard_view.png"))
    arguments = parser.parse_args()
    run = newest_run(arguments.logdir)
    picture = render(read_run(run), str(run.relative_to(arguments.logdir.parent)))
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette keeps the PNG small enough to live in the repository.
    Image.fromarray(picture).quantize(colors=256).save(arguments.output, optimize=True)
    print(f"wrote {arguments.output} ({arguments.output.stat().st_size // 1024} KB) from {run}")


if __name__ == "__main__":
    main()
