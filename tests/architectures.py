"""Tiny x4 SR networks of three kinds, for tests and benchmarks that must not depend on one architecture.

Written for this project from the papers' descriptions (no code carried over):

- :class:`PlainCNN`: a plain stack of 3x3 convolutions and a pixel-shuffle upsampler, no skip connection
  (the SRCNN / ESPCN family).
- :class:`TinyRRDBNet`: ESRGAN's generator (Wang et al., 2018) in miniature: residual-in-residual dense
  blocks (three dense blocks of five convolutions each, LeakyReLU 0.2, residuals scaled by 0.2) on a
  trunk with a long skip, then nearest-neighbour x2 upsampling + conv twice.
- :class:`TinySwinIR`: SwinIR (Liang et al., 2021) in miniature: a conv head, residual Swin groups of
  window self-attention layers (relative position bias, every second layer's windows shifted by half a
  window with a cyclic roll and a mask), a conv after the body with a long skip and a pixel-shuffle
  upsampler. Like SwinIR it reflect-pads the input to a multiple of its window size and crops the output,
  so its attention windows sit on a fixed grid: the output near a pixel depends on where the image starts.

Each takes (N, 3, H, W) images in [0, 1] and returns (N, 3, 4H, 4W). ``train_on_photos`` gives any of them
a short training on x4 bicubic pairs cut from scikit-image's photos, so that a study can see trained
behaviour rather than random-initialised behaviour.

Example:
    >>> import torch
    >>> [tuple(cls()(torch.rand(1, 3, 10, 13)).shape) for cls in (PlainCNN, TinyRRDBNet, TinySwinIR)]
    [(1, 3, 40, 52), (1, 3, 40, 52), (1, 3, 40, 52)]
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

SCALE = 4


class PlainCNN(nn.Module):
    """Convolutions with ReLU, then a conv to ``3 * 16`` channels and a x4 pixel shuffle.

    Args:
        channels: Feature channels.
        depth: Number of 3x3 convolutions before the upsampler (receptive field ``2 * depth + 3`` LR pixels).
    """

    def __init__(self, channels: int = 32, depth: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        layers += [nn.Conv2d(channels, 3 * SCALE**2, 3, padding=1), nn.PixelShuffle(SCALE)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class _DenseBlock(nn.Module):
    """Five convolutions, each seeing the block input and all earlier outputs; the last one's output,
    scaled by 0.2, is added to the input (ESRGAN's residual dense block)."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        widths = [channels + i * growth for i in range(5)]
        outs = [growth] * 4 + [channels]
        self.convs = nn.ModuleList(nn.Conv2d(w, o, 3, padding=1) for w, o in zip(widths, outs))

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for conv in self.convs[:-1]:
            features.append(F.leaky_relu(conv(torch.cat(features, dim=1)), 0.2))
        return x + 0.2 * self.convs[-1](torch.cat(features, dim=1))


class _RRDB(nn.Module):
    """Three dense blocks in sequence inside one more residual, again scaled by 0.2."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(_DenseBlock(channels, growth) for _ in range(3)))

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.2 * self.blocks(x)


class TinyRRDBNet(nn.Module):
    """ESRGAN's generator with ``n_blocks`` RRDBs of ``channels`` features and dense growth ``growth``."""

    def __init__(self, channels: int = 16, growth: int = 8, n_blocks: int = 2) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.trunk = nn.Sequential(*(_RRDB(channels, growth) for _ in range(n_blocks)))
        self.trunk_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.up_convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(2))
        self.hr_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        features = self.head(x)
        features = features + self.trunk_conv(self.trunk(features))
        for conv in self.up_convs:
            features = F.leaky_relu(conv(F.interpolate(features, scale_factor=2, mode="nearest")), 0.2)
        return self.tail(F.leaky_relu(self.hr_conv(features), 0.2))


class _WindowAttention(nn.Module):
    """Multi-head self-attention inside ``size x size`` windows, with a learned bias per relative offset."""

    def __init__(self, channels: int, size: int, heads: int) -> None:
        super().__init__()
        self.size, self.heads = size, heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.bias_table = nn.Parameter(torch.randn((2 * size - 1) ** 2, heads) * 0.02)
        rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        coords = torch.stack([rows.flatten(), cols.flatten()])
        offsets = coords[:, :, None] - coords[:, None, :] + size - 1
        self.register_buffer("bias_index", offsets[0] * (2 * size - 1) + offsets[1], persistent=False)

    def forward(self, tokens: Tensor, mask: Tensor | None) -> Tensor:
        batch, length, channels = tokens.shape
        q, k, v = self.qkv(tokens).reshape(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        scores = scores + self.bias_table[self.bias_index].permute(2, 0, 1)
        if mask is not None:  # (windows, L, L), one per window position; the batch cycles over them
            scores = scores.reshape(-1, mask.shape[0], self.heads, length, length) + mask[None, :, None]
            scores = scores.reshape(batch, self.heads, length, length)
        attended = scores.softmax(dim=-1) @ v
        return self.proj(attended.transpose(1, 2).reshape(batch, length, channels))


def _to_windows(features: Tensor, size: int) -> Tensor:
    n, h, w, c = features.shape
    blocks = features.reshape(n, h // size, size, w // size, size, c).transpose(2, 3)
    return blocks.reshape(-1, size * size, c)


def _from_windows(tokens: Tensor, size: int, n: int, h: int, w: int) -> Tensor:
    blocks = tokens.reshape(n, h // size, w // size, size, size, -1).transpose(2, 3)
    return blocks.reshape(n, h, w, -1)


def _shift_mask(h: int, w: int, size: int, shift: int, device: torch.device) -> Tensor:
    """After a cyclic roll by ``shift``, windows at the far edges hold pixels from opposite sides of
    the image; the mask stops tokens from different regions attending to each other."""
    regions = torch.zeros(1, h, w, 1, device=device)
    bands = (slice(0, -size), slice(-size, -shift), slice(-shift, None))
    for label, (rows, cols) in enumerate((r, c) for r in bands for c in bands):
        regions[:, rows, cols] = label
    labels = _to_windows(regions, size).squeeze(-1)
    different = labels[:, :, None] != labels[:, None, :]
    return different.float() * -100.0


class _SwinLayer(nn.Module):
    def __init__(self, channels: int, size: int, heads: int, shifted: bool) -> None:
        super().__init__()
        self.size, self.shift = size, size // 2 if shifted else 0
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.attention = _WindowAttention(channels, size, heads)
        self.mlp = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels))

    def forward(self, features: Tensor) -> Tensor:
        n, h, w, _ = features.shape
        shifted = self.norm1(features)
        mask = None
        if self.shift:
            shifted = torch.roll(shifted, (-self.shift, -self.shift), dims=(1, 2))
            mask = _shift_mask(h, w, self.size, self.shift, features.device)
        attended = _from_windows(self.attention(_to_windows(shifted, self.size), mask), self.size, n, h, w)
        if self.shift:
            attended = torch.roll(attended, (self.shift, self.shift), dims=(1, 2))
        features = features + attended
        return features + self.mlp(self.norm2(features))


class _SwinGroup(nn.Module):
    """Swin layers alternating plain and shifted windows, a closing conv and a residual (SwinIR's RSTB)."""

    def __init__(self, channels: int, size: int, heads: int, depth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_SwinLayer(channels, size, heads, i % 2 == 1) for i in range(depth))
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, features: Tensor) -> Tensor:
        tokens = features.permute(0, 2, 3, 1)
        for layer in self.layers:
            tokens = layer(tokens)
        return features + self.conv(tokens.permute(0, 3, 1, 2))


class TinySwinIR(nn.Module):
    """SwinIR-style network: ``groups`` residual Swin groups of ``depth`` layers on ``window`` windows."""

    def __init__(self, channels: int = 24, window: int = 8, heads: int = 2, groups: int = 2, depth: int = 2) -> None:
        super().__init__()
        self.window = window
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*(_SwinGroup(channels, window, heads, depth) for _ in range(groups)))
        self.body_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.upsample = nn.Sequential(nn.Conv2d(channels, 3 * SCALE**2, 3, padding=1), nn.PixelShuffle(SCALE))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        # SwinIR pads (reflecting) to whole windows; the partition therefore starts at the image's corner.
        padded = F.pad(x, (0, -w % self.window, 0, -h % self.window), mode="reflect")
        features = self.head(padded)
        features = features + self.body_conv(self.body(features))
        return self.upsample(features)[..., : SCALE * h, : SCALE * w]


def photo_patches(names: tuple[str, ...], count: int, hr_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """``count`` random HR patches of scikit-image photos and their x4 bicubic LR versions (Pillow's).

    Returns:
        ``(lr, hr)``: (count, 3, hr_size / 4, hr_size / 4) and (count, 3, hr_size, hr_size) in [0, 1].
    """
    import skimage.data

    from lam_captum.imageio import hr_to_lr

    rng = np.random.default_rng(seed)
    photos = [torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255 for name in names]
    lows, highs = [], []
    for index in range(count):
        photo = photos[index % len(photos)]
        top = int(rng.integers(0, photo.shape[1] - hr_size + 1))
        left = int(rng.integers(0, photo.shape[2] - hr_size + 1))
        low, high = hr_to_lr(photo[:, top : top + hr_size, left : left + hr_size], SCALE)
        lows.append(low)
        highs.append(high)
    return torch.stack(lows), torch.stack(highs)


TRAINING_PHOTOS = ("rocket", "astronaut", "immunohistochemistry", "cat")


def train_on_photos(
    model: nn.Module, *, iterations: int = 300, seconds: float = 60.0, seed: int = 0
) -> tuple[float, int, float]:
    """Train ``model`` with Adam on L1 loss over x4 bicubic pairs of :data:`TRAINING_PHOTOS`, in place.

    Stops after ``iterations`` steps or ``seconds`` of wall time, whichever comes first, and puts the
    model in eval mode.

    Returns:
        The mean L1 loss of the last 20 steps, the steps taken, and bicubic upsampling's L1 on the same pairs.
    """
    torch.manual_seed(seed)
    lows, highs = photo_patches(TRAINING_PHOTOS, 512, 64, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    for _ in range(iterations):
        batch = torch.randint(0, lows.shape[0], (16,))
        loss = F.l1_loss(model(lows[batch]), highs[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if time.perf_counter() - started > seconds:
            break
    model.eval()
    bicubic = F.l1_loss(F.interpolate(lows, scale_factor=SCALE, mode="bicubic", align_corners=False), highs)
    return float(np.mean(losses[-20:])), len(losses), float(bicubic)
