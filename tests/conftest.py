from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))


def tiny_sr(channels: int = 3, scale: int = 4, width: int = 16, seed: int = 0) -> nn.Module:
    """A small residual-free SR network: convs, ReLU and a pixel shuffle, in eval mode."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, channels * scale * scale, 3, padding=1),
        nn.PixelShuffle(scale),
    ).eval()


@pytest.fixture
def photo_lr() -> torch.Tensor:
    """A real 24x24 crop of a photo (grace_hopper, shipped with matplotlib), as a (1, 3, H, W) tensor."""
    import matplotlib.cbook
    import numpy as np
    from PIL import Image

    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        crop = image.convert("RGB").crop((200, 120, 296, 216)).resize((24, 24), Image.BICUBIC)
    return torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255).permute(2, 0, 1).unsqueeze(0)
