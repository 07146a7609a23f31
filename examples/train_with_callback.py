"""Train a small x4 SR network on offline photos and watch its Local Attribution Maps in TensorBoard.

The training photos are scikit-image's bundled samples; matplotlib's ``grace_hopper.jpg`` is the
validation image, and two 64x64 crops of its LR version are the probes: after every validation epoch
:class:`lam_captum.callbacks.LAMMonitor` explains a window on the glasses and one on the medal
ribbons. Nothing is downloaded.

Usage (the defaults take about 3 minutes on 2 CPU cores)::

    python examples/train_with_callback.py
    tensorboard --logdir runs/lam_monitor

A longer run with a larger network and the paper's 50 path steps::

    python examples/train_with_callback.py --max-epochs 60 --features 48 --blocks 8 --n-steps 50
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning.pytorch as pl
import matplotlib.cbook
import skimage.data
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lam_captum.callbacks import LAMMonitor, Probe
from lam_captum.imageio import hr_to_lr, load_image

SCALE = 4
TRAINING_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
PROBE_SIZE = 64
# Per probe: the top-left corner of its crop of the LR photo, and the window (top, left, size) in the
# crop's SR pixels: the frame of the glasses, and the stripes of the ribbons.
PROBES = {"glasses": ((24, 32), (100, 82, 16)), "ribbons": ((86, 64), (156, 114, 16))}


def grace_hopper_path() -> Path:
    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def probe_crops(path: Path) -> list[Probe]:
    """Crops of the LR photo: LAM's cost grows with the LR size, and DI is easier to read on small inputs."""
    lr, _ = hr_to_lr(load_image(path), SCALE)
    probes = []
    for name, ((top, left), window) in PROBES.items():
        probes.append(Probe(lr[:, top : top + PROBE_SIZE, left : left + PROBE_SIZE], window, name))
    return probes


def training_pairs() -> list[tuple[Tensor, Tensor]]:
    """(LR, HR) pairs of the sample photos, degraded as LAM's CLI degrades an HR image."""
    pairs = []
    for name in TRAINING_PHOTOS:
        photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        pairs.append(hr_to_lr(photo, SCALE))
    return pairs


class RandomPatches(Dataset):
    """Aligned random (LR, HR) patches with random flips; item ``i`` is always the same patch, so runs repeat."""

    def __init__(self, pairs: list[tuple[Tensor, Tensor]], patch: int, length: int, seed: int) -> None:
        self.pairs, self.patch, self.length, self.seed = pairs, patch, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        lr, hr = self.pairs[int(torch.randint(len(self.pairs), (), generator=generator))]
        top = int(torch.randint(lr.shape[1] - self.patch + 1, (), generator=generator))
        left = int(torch.randint(lr.shape[2] - self.patch + 1, (), generator=generator))
        lr = lr[:, top : top + self.patch, left : left + self.patch]
        hr = hr[:, top * SCALE : (top + self.patch) * SCALE, left * SCALE : (left + self.patch) * SCALE]
        flips = [dim for dim in (1, 2) if torch.randint(2, (), generator=generator)]
        return lr.flip(flips), hr.flip(flips)


class WholeImage(Dataset):
    """One (LR, HR) pair: the validation photo."""

    def __init__(self, path: Path) -> None:
        self.pair = hr_to_lr(load_image(path), SCALE)

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.pair


class SmallSR(nn.Module):
    """Residual blocks that learn the detail missing from a bicubic upscale (which makes early epochs sane)."""

    def __init__(self, features: int, blocks: int) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, features, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(features, features, 3, padding=1), nn.ReLU(), nn.Conv2d(features, features, 3, padding=1)
            )
            for _ in range(blocks)
        )
        self.tail = nn.Sequential(nn.Conv2d(features, 3 * SCALE**2, 3, padding=1), nn.PixelShuffle(SCALE))

    def forward(self, lr: Tensor) -> Tensor:
        features = self.head(lr)
        for block in self.blocks:
            features = features + block(features)
        bicubic = nn.functional.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False)
        return bicubic + self.tail(features)


class SuperResolution(pl.LightningModule):
    """L1 training of :class:`SmallSR`; its ``forward`` maps LR to SR, which is what LAMMonitor calls."""

    def __init__(self, features: int, blocks: int, learning_rate: float, max_epochs: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = SmallSR(features, blocks)

    def forward(self, lr: Tensor) -> Tensor:
        return self.net(lr)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_index: int) -> Tensor:
        lr, hr = batch
        loss = nn.functional.l1_loss(self(lr), hr)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_index: int) -> None:
        lr, hr = batch
        sr = self(lr).clamp(0, 1)
        self.log("val_loss", nn.functional.l1_loss(sr, hr))
        self.log("val_psnr", -10 * torch.log10(nn.functional.mse_loss(sr, hr)), prog_bar=True)

    def configure_optimizers(self) -> dict[str, object]:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.hparams.max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--logdir", type=Path, default=Path("runs/lam_monitor"), help="TensorBoard folder")
    parser.add_argument("--steps-per-epoch", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patch", type=int, default=24, help="LR patch side")
    parser.add_argument("--features", type=int, default=24)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--n-steps", type=int, default=20, help="LAM path steps (the paper uses 50)")
    parser.add_argument("--every-n-epochs", type=int, default=1, help="run LAM every n epochs")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    arguments = parse_arguments()
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)
    pl.seed_everything(arguments.seed, verbose=False)
    started = time.perf_counter()

    patches = RandomPatches(training_pairs(), arguments.patch, arguments.steps_per_epoch * arguments.batch_size,
                            arguments.seed)
    train_loader = DataLoader(patches, batch_size=arguments.batch_size, shuffle=True)
    val_loader = DataLoader(WholeImage(grace_hopper_path()), batch_size=1)
    monitor = LAMMonitor(probe_crops(grace_hopper_path()), every_n_epochs=arguments.every_n_epochs,
                         n_steps=arguments.n_steps)
    model = SuperResolution(arguments.features, arguments.blocks, arguments.learning_rate, arguments.max_epochs)
    trainer = pl.Trainer(
        max_epochs=arguments.max_epochs, logger=TensorBoardLogger(arguments.logdir, name=""), callbacks=[monitor],
        log_every_n_steps=10, enable_model_summary=False,
    )
    trainer.fit(model, train_loader, val_loader)

    minutes = (time.perf_counter() - started) / 60
    print(f"done in {minutes:.1f} min; DI per epoch:")
    for name, entries in monitor.history.items():
        print(f"  {name}: " + ", ".join(f"{entry['di']:.2f}" for entry in entries))
    print(f"see it with:  tensorboard --logdir {arguments.logdir}")


if __name__ == "__main__":
    main()
