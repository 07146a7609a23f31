"""LAM for restoration (scale 1): train a tiny denoiser in about a minute, then explain one window.

A DnCNN-style network (residual: it predicts the noise) is trained on crops of two of scikit-image's
sample photos with fresh Gaussian noise (sigma 25 on the 0-255 scale) at every step. It is then
explained on the held-out built-in photo (matplotlib's ``grace_hopper.jpg``): a 128x128 crop of the face,
degraded with :func:`lam_captum.degrade.degrade` (seeded), the window on the rim of the spectacles.
The output is the input's size, so LAM runs at scale 1; the clean crop is drawn under the window.

Usage (300 steps cost about 50 s of CPU time, measured on one thread; the explanation a few seconds)::

    python examples/denoiser.py --steps 300 --output denoiser_output

It prints the PSNR of the noisy and the restored crop, DI (with the LR size) and the negative share of
the attribution, and writes LAM's pictures, ``signed.png`` and ``summary.json`` to the output folder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
from torch import nn

from lam_captum.degrade import degrade
from lam_captum.explain import explain
from lam_captum.functional import negative_share
from lam_captum.imageio import default_image_path, load_image, save_png
from lam_captum.pictures import signed_map_picture

TRAIN_PHOTOS = ("astronaut", "chelsea")
FACE_CROP = (140, 180, 128, 128)  # top, left, height, width of the held-out photo
WINDOW = (40, 16, 12)  # on the rim of the spectacles, in pixels of the crop


class Denoiser(nn.Module):
    """DnCNN-style: conv-ReLU layers estimate the noise, the output is the input minus that estimate."""

    def __init__(self, channels: int = 3, width: int = 24, depth: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return noisy - self.body(noisy)


def training_photos() -> list[torch.Tensor]:
    photos = [np.asarray(getattr(skimage.data, name)(), dtype=np.float32)[..., :3] / 255 for name in TRAIN_PHOTOS]
    return [torch.from_numpy(photo).permute(2, 0, 1).contiguous() for photo in photos]


def random_crops(photos: list[torch.Tensor], count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    crops = []
    for _ in range(count):
        photo = photos[int(torch.randint(len(photos), (1,), generator=generator))]
        top = int(torch.randint(photo.shape[1] - size + 1, (1,), generator=generator))
        left = int(torch.randint(photo.shape[2] - size + 1, (1,), generator=generator))
        crops.append(photo[:, top : top + size, left : left + size])
    return torch.stack(crops)


def train(steps: int, sigma: float, seed: int = 0) -> Denoiser:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    photos, model = training_photos(), Denoiser()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(steps):
        clean = random_crops(photos, 16, 32, generator)
        # Fresh noise every step (a different seed per crop): the network cannot memorise it.
        noisy = torch.stack([degrade(crop, f"noise:{sigma}", seed=1 + step * 16 + n) for n, crop in enumerate(clean)])
        loss = nn.functional.mse_loss(model(noisy), clean)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}/{steps}: training PSNR {psnr(model(noisy).detach(), clean):.2f} dB")
    return model.eval()


def psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((image.clamp(0, 1) - reference) ** 2).mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps (default: 300)")
    parser.add_argument("--sigma", type=float, default=25, help="noise sigma, 0-255 scale (default: 25)")
    parser.add_argument("--output", default="denoiser_output", help="results folder (default: denoiser_output)")
    args = parser.parse_args()

    started = time.perf_counter()
    model = train(args.steps, args.sigma)
    print(f"trained {args.steps} steps in {time.perf_counter() - started:.0f} s")
    top, left, height, width = FACE_CROP
    clean = load_image(default_image_path())[:, top : top + height, left : left + width]
    noisy = degrade(clean, f"noise:{args.sigma}", seed=0)
    with torch.no_grad():
        restored = model(noisy[None])[0]
    print(f"held-out photo: noisy {psnr(noisy, clean):.2f} dB, restored {psnr(restored, clean):.2f} dB")

    result = explain(model, noisy, WINDOW, hr=clean)
    share = float(negative_share(result.attribution))
    folder = result.save(args.output)
    save_png(signed_map_picture(result.attribution), folder / "signed.png")
    summary = {**result.summary(), "negative_share": share, "noise_sigma": args.sigma,
               "psnr_noisy": psnr(noisy, clean), "psnr_restored": psnr(restored, clean)}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"DI {result.di:.2f} (LR {height}x{width}, x{result.scale}), negative share {share:.3f}; "
          f"results in {Path(folder)}/")


if __name__ == "__main__":
    main()
