"""Video LAM: which frames of a clip a video SR model draws on for one window of one output frame.

The clip is five 192x192 crops of the built-in photo (matplotlib's ``grace_hopper.jpg``), each shifted four
pixels right of the one before (a slow pan), degraded to 48x48 LR frames as the demo degrades an image.
The model is a clip-to-clip network built on the built-in x4 model: output frame ``t`` is the x4 model
applied to a temporal blend of frames ``t - 1``, ``t`` and ``t + 1`` (weights 1/4, 1/2, 1/4, repeated at
the clip's ends), the simplest form of the temporal aggregation that recurrent VSR networks learn. Its
temporal profile should give the window's own frame about half of the attribution and each neighbour a
quarter; frames further away none.

Usage (50 steps of five 48x48 frames: about a minute of CPU time)::

    python examples/video_lam.py --output video_output
    python examples/video_lam.py --docs docs   # the README's pictures

It prints DI per frame and of the clip and the temporal profile, and writes ``strip.png``, ``profile.png``,
``window.png``, ``attribution.npy`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from torch import nn

from lam_captum.imageio import default_image_path, hr_to_lr, load_image
from lam_captum.models import build_model
from lam_captum.video import explain_clip

FRAMES = 5
PAN = 4  # HR pixels between two frames
FACE = (80, 150, 192, 192)  # top, left, height, width of the first frame in the photo
WINDOW = (90, 54, 16)  # on the rim of the spectacles, in SR pixels of the centre frame


class TemporalBlendSR(nn.Module):
    """Clip to clip: each output frame is a single-image SR model applied to a 1-2-1 blend of its neighbours."""

    def __init__(self, single_image_model: nn.Module) -> None:
        super().__init__()
        self.single_image_model = single_image_model
        self.scale = getattr(single_image_model, "scale", 4)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        length = clip.shape[1]
        before = clip[:, [max(index - 1, 0) for index in range(length)]]
        after = clip[:, [min(index + 1, length - 1) for index in range(length)]]
        blended = 0.25 * before + 0.5 * clip + 0.25 * after
        return self.single_image_model(blended.flatten(0, 1)).unflatten(0, clip.shape[:2])


def panned_clip() -> tuple[torch.Tensor, torch.Tensor]:
    """``(lr, hr)`` clips ``(T, 3, 48, 48)`` and ``(T, 3, 192, 192)`` of the built-in photo, panning right."""
    photo = load_image(default_image_path())
    top, left, height, width = FACE
    pairs = [hr_to_lr(photo[:, top : top + height, left + PAN * index : left + PAN * index + width], scale=4)
             for index in range(FRAMES)]
    return torch.stack([lr for lr, _ in pairs]), torch.stack([hr for _, hr in pairs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="video_output", help="results folder (default: video_output)")
    parser.add_argument("--steps", type=int, default=50, help="path steps (default: 50)")
    parser.add_argument("--docs", help="also copy the strip and the profile here as video_lam_*.png")
    args = parser.parse_args()
    lr, hr = panned_clip()
    result = explain_clip(TemporalBlendSR(build_model("default")), lr, WINDOW, hr=hr, n_steps=args.steps)
    folder = result.save(args.output)
    frame_di = ", ".join(f"{value:.2f}" for value in result.frame_di.tolist())
    profile = ", ".join(f"{share:.3f}" for share in result.profile.tolist())
    print(f"window on frame {result.frame} of {FRAMES}; DI per frame [{frame_di}], clip DI {result.di:.2f} "
          f"(LR {result.lr_size[0]}x{result.lr_size[1]} x {FRAMES} frames); temporal profile [{profile}]")
    print(f"results in {folder}/")
    if args.docs:
        Path(args.docs).mkdir(parents=True, exist_ok=True)
        for name in ("strip", "profile"):
            shutil.copyfile(folder / f"{name}.png", Path(args.docs) / f"video_lam_{name}.png")


if __name__ == "__main__":
    main()
