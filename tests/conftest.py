from __future__ import annotations

import os
import signal
import subprocess
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


@pytest.fixture(scope="session")
def photo_lr() -> torch.Tensor:
    """A real 24x24 crop of a photo (grace_hopper, shipped with matplotlib), as a (1, 3, H, W) tensor."""
    import matplotlib.cbook
    import numpy as np
    from PIL import Image

    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        crop = image.convert("RGB").crop((200, 120, 296, 216)).resize((24, 24), Image.BICUBIC)
    return torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255).permute(2, 0, 1).unsqueeze(0)


@pytest.fixture
def hr_photo(tmp_path: Path) -> Path:
    """A 96x80 HR crop of the built-in photo (the face), saved as PNG: an image file as users give one."""
    import matplotlib.cbook
    from PIL import Image

    path = tmp_path / "face.png"
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        image.convert("RGB").crop((180, 140, 260, 236)).save(path)
    return path


def finish_or_kill(process: subprocess.Popen, timeout: float, what: str) -> subprocess.CompletedProcess:
    """Wait for ``process`` (started with ``start_new_session=True``); if it hangs, kill its whole process
    group, DDP ranks included, and fail the test instead of freezing CI."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{what} hung for {timeout} s:\n{output[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, output)
