"""Two tiny video SR models for the video LAM tests: a recurrent clip-to-clip one and a sliding-window
clip-to-frame one (both x2, seeded, untrained; their weights make every frame matter differently)."""

from __future__ import annotations

import torch
from torch import nn


class TinyRecurrentVSR(nn.Module):
    """BasicVSR in miniature: hidden states carried backward and forward over the frames, one x2 output frame
    per input frame, ``(N, T, C, H, W) -> (N, T, C, 2H, 2W)``."""

    scale = 2

    def __init__(self, channels: int = 3, width: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.width = width
        self.backward_step = nn.Conv2d(channels + width, width, 3, padding=1)
        self.forward_step = nn.Conv2d(channels + 2 * width, width, 3, padding=1)
        self.upsample = nn.Sequential(nn.Conv2d(width, channels * 4, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        n, t, _, h, w = clip.shape
        hidden = clip.new_zeros(n, self.width, h, w)
        backward_states = []
        for index in reversed(range(t)):
            hidden = torch.tanh(self.backward_step(torch.cat([clip[:, index], hidden], dim=1)))
            backward_states.insert(0, hidden)
        hidden = clip.new_zeros(n, self.width, h, w)
        frames = []
        for index in range(t):
            hidden = torch.tanh(self.forward_step(torch.cat([clip[:, index], hidden, backward_states[index]], dim=1)))
            frames.append(self.upsample(hidden))
        return torch.stack(frames, dim=1)


class TinySlidingWindowVSR(nn.Module):
    """EDVR in miniature: all frames fused by one convolution into the centre output frame,
    ``(N, T, C, H, W) -> (N, C, 2H, 2W)``."""

    scale = 2

    def __init__(self, channels: int = 3, frames: int = 3, width: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fuse = nn.Conv2d(channels * frames, width, 3, padding=1)
        self.upsample = nn.Sequential(nn.Conv2d(width, channels * 4, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.upsample(torch.relu(self.fuse(clip.flatten(1, 2))))
