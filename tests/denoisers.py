"""A small real denoiser for the scale-1 tests: a DnCNN-style residual network trained for a few seconds."""

from __future__ import annotations

import torch
from torch import nn

from lam_captum.degrade import degrade


class TinyDenoiser(nn.Module):
    """Conv-ReLU layers that predict the noise; the output is the input minus it (the input's size)."""

    def __init__(self, channels: int = 3, width: int = 16, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)


def trained_denoiser(clean: torch.Tensor, sigma: float = 25, steps: int = 60, seed: int = 0) -> TinyDenoiser:
    """Train on random 32x32 crops of ``clean`` (C, H, W) with fresh noise each step; eval mode."""
    torch.manual_seed(seed)
    model = TinyDenoiser(clean.shape[0])
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        tops = torch.randint(0, clean.shape[1] - 31, (8,), generator=generator)
        lefts = torch.randint(0, clean.shape[2] - 31, (8,), generator=generator)
        batch = torch.stack([clean[:, top : top + 32, left : left + 32] for top, left in zip(tops, lefts)])
        noisy = torch.stack([degrade(crop, f"noise:{sigma}", seed=seed * 100_000 + step * 8 + n)
                             for n, crop in enumerate(batch)])
        loss = nn.functional.mse_loss(model(noisy), batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()
