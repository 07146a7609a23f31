"""Train the project's default x4 model, ``lam_captum.models.CompactSR``, on offline photos only.

Training photos are scikit-image's bundled samples; matplotlib's ``grace_hopper.jpg`` is held out
for testing. LR images are made as LAM makes them: the HR photo cropped to a multiple of 4, then
Pillow's bicubic resize down by 4, then divided by 255.

Usage (2000 steps take roughly 6 minutes on 2 otherwise idle CPU cores)::

    python examples/train_default_model.py --steps 2000 --threads 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib.cbook
import numpy as np
import skimage.data
import torch
from PIL import Image

from lam_captum.models import CompactSR

SCALE = 4
TRAIN_PHOTOS = (
    "astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "page", "rocket", "stereo_motorcycle", "text",
)  # fmt: skip
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "lam_captum" / "models" / "weights" / "default_x4.pt"


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Return an (H, W, 3) uint8 copy of a grey, RGB or RGBA uint8 image."""
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def make_lr_hr_pair(hr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop an HR uint8 photo to a multiple of the scale and bicubic-downscale it with Pillow."""
    height, width = (hr.shape[0] // SCALE) * SCALE, (hr.shape[1] // SCALE) * SCALE
    hr = hr[:height, :width]
    lr = Image.fromarray(hr).resize((width // SCALE, height // SCALE), Image.BICUBIC)
    return np.array(lr), hr


def load_training_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """Load scikit-image's sample photos (none need a download) as (LR, HR) uint8 pairs."""
    pairs = []
    for name in TRAIN_PHOTOS:
        image = getattr(skimage.data, name)()
        if isinstance(image, tuple):  # stereo_motorcycle returns (left, right, disparity)
            image = image[0]
        pairs.append(make_lr_hr_pair(as_rgb_uint8(image)))
    return pairs


def load_test_pair() -> tuple[np.ndarray, np.ndarray]:
    """The held-out photo: matplotlib's grace_hopper.jpg as an (LR, HR) uint8 pair."""
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
        hr = np.array(Image.open(file).convert("RGB"))
    return make_lr_hr_pair(hr)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


class PatchSampler:
    """Draws aligned random (LR, HR) patches with random flips.

    Patches are cut from LR images made from whole photos, so that they carry no border effects of
    the downscaling. A photo is picked with probability proportional to its area.
    """

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], patch: int, batch: int, seed: int) -> None:
        self.pairs = pairs
        self.lr_patch = patch // SCALE
        self.batch = batch
        self.rng = np.random.default_rng(seed)
        areas = np.array([lr.shape[0] * lr.shape[1] for lr, _ in pairs], dtype=float)
        self.weights = areas / areas.sum()

    def _one(self) -> tuple[np.ndarray, np.ndarray]:
        lr, hr = self.pairs[self.rng.choice(len(self.pairs), p=self.weights)]
        top = self.rng.integers(0, lr.shape[0] - self.lr_patch + 1)
        left = self.rng.integers(0, lr.shape[1] - self.lr_patch + 1)
        lr = lr[top : top + self.lr_patch, left : left + self.lr_patch]
        hr = hr[SCALE * top : SCALE * (top + self.lr_patch), SCALE * left : SCALE * (left + self.lr_patch)]
        for axis in (0, 1):
            if self.rng.random() < 0.5:
                lr, hr = np.flip(lr, axis), np.flip(hr, axis)
        return lr, hr

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        lrs, hrs = zip(*(self._one() for _ in range(self.batch)), strict=True)
        return to_tensor(np.stack(lrs)), to_tensor(np.stack(hrs))


def psnr(estimate: torch.Tensor, target: torch.Tensor, border: int = SCALE) -> float:
    """RGB PSNR in dB of images in [0, 1], ignoring ``border`` pixels on each side."""
    crop = (..., slice(border, -border), slice(border, -border))
    mse = torch.mean((estimate.clamp(0, 1)[crop] - target[crop]) ** 2)
    return float(10 * torch.log10(1 / mse))


@torch.no_grad()
def evaluate(model: torch.nn.Module, lr: np.ndarray, hr: np.ndarray) -> tuple[float, float]:
    """PSNR of the model and of Pillow bicubic upsampling against the HR photo."""
    model.eval()
    sr = model(to_tensor(lr[None]))
    bicubic = np.array(Image.fromarray(lr).resize((hr.shape[1], hr.shape[0]), Image.BICUBIC))
    target = to_tensor(hr[None])
    return psnr(sr, target), psnr(to_tensor(bicubic[None]), target)


def train(model: torch.nn.Module, sampler: PatchSampler, steps: int, learning_rate: float) -> None:
    """L1 loss, Adam, cosine learning-rate decay; logs about twenty times."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    model.train()
    start, log_every, running = time.perf_counter(), max(1, steps // 20), 0.0
    for step in range(1, steps + 1):
        lr_batch, hr_batch = sampler()
        loss = torch.nn.functional.l1_loss(model(lr_batch), hr_batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running += loss.item()
        if step % log_every == 0:
            elapsed = time.perf_counter() - start
            print(f"step {step:5d}/{steps}  L1 {running / log_every:.5f}  {elapsed:6.0f} s", flush=True)
            running = 0.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    parser.add_argument("--patch", type=int, default=96, help="HR patch size, a multiple of 4")
    parser.add_argument("--batch", type=int, default=16, help="patches per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="initial Adam learning rate")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to save the state dict")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and patches")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    args = parser.parse_args(argv)
    if args.patch < SCALE or args.patch % SCALE:
        parser.error(f"`--patch` must be a positive multiple of {SCALE}, got {args.patch}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = CompactSR()
    sampler = PatchSampler(load_training_pairs(), args.patch, args.batch, args.seed)
    start = time.perf_counter()
    train(model, sampler, args.steps, args.lr)
    minutes = (time.perf_counter() - start) / 60
    model_psnr, bicubic_psnr = evaluate(model, *load_test_pair())
    print(f"trained {args.steps} steps in {minutes:.1f} min")
    print(f"grace_hopper x{SCALE}: model {model_psnr:.2f} dB, bicubic {bicubic_psnr:.2f} dB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
