"""Helpers of the sweep tests: the small study, reading tables back, running the sweep's command line."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import finish_or_kill

# Two gloo processes start in seconds and the study takes seconds; a run still going after this hangs.
TIMEOUT_SECONDS = 180
RUN_DEPENDENT = ("seconds", "device")
N_STEPS = 4

TEST_MODELS = '''
import torch
from torch import nn


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        raise RuntimeError("weights server unreachable")


class Doubler(nn.Module):
    """An x2 model, for a study that wrongly declares it x4."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.conv(x))


class Quick(nn.Module):
    """A small x4 model: a second network to compare with the built-in one, seconds per study."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(7)
        self.conv = nn.Conv2d(3, 48, 5, padding=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) * 0.1)
        self.shuffle = nn.PixelShuffle(4)

    def forward(self, x):
        return self.shuffle(self.conv(x))


class WithActivation(nn.Module):
    """An x4 model that takes its activation's class, as SwinIR-style constructors take `act_layer`."""

    def __init__(self, act=nn.ReLU):
        super().__init__()
        self.conv = nn.Conv2d(3, 48, 3, padding=1)
        self.act = act()
        self.shuffle = nn.PixelShuffle(4)

    def forward(self, x):
        return self.shuffle(self.act(self.conv(x)))


class ClipsOnly(nn.Module):
    """A video SR model: it unpacks (N, T, C, H, W) clips."""

    def forward(self, x):
        n, t, c, h, w = x.shape
        return x[:, t // 2].repeat_interleave(4, dim=-1).repeat_interleave(4, dim=-2)


class Interrupted(nn.Module):
    """Ctrl-C pressed while it runs."""

    def forward(self, x):
        raise KeyboardInterrupt


class TupleOut(nn.Module):
    """An x4 model that returns (SR, features), as some research code does."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 48, 3, padding=1)
        self.shuffle = nn.PixelShuffle(4)

    def forward(self, x):
        features = self.conv(x)
        return self.shuffle(features), features


class CachedMask(nn.Module):
    """An x4 model that keeps a mask per input size, made the first time it sees that size."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 48, 3, padding=1)
        self.shuffle = nn.PixelShuffle(4)
        self.masks = {}

    def forward(self, x):
        size = tuple(x.shape[-2:])
        if size not in self.masks:
            self.masks[size] = torch.ones(size)
        return self.shuffle(self.conv(x * self.masks[size]))
'''


def small_study(root: Path, **changes: object) -> dict:
    """The tiny study of most tests: the built-in model, 2 images, 4 windows."""
    study = {
        "models": ["default"],
        "images": [
            {"path": str(root / "astro.png"), "windows": [[20, 20, 16], {"random": 1, "size": 12, "seed": 3}]},
            {"path": str(root / "cat.png"), "windows": [{"grid": [1, 2], "size": 16}]},
        ],
        "lam": {"n_steps": N_STEPS},
    }
    study.update(changes)
    return study


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def comparable(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key not in RUN_DEPENDENT} for row in rows]


def run_cli(args: list[str], *, interrupt_when: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m lam_captum.sweep ARGS`` in its own session, killed (and failed) if it hangs.

    With ``interrupt_when``, a SIGINT (Ctrl-C) goes to the run as soon as that folder holds a file.
    """
    environment = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen([sys.executable, "-m", "lam_captum.sweep", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=environment, start_new_session=True)
    if interrupt_when is not None:
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            if interrupt_when.is_dir() and any(interrupt_when.rglob("*.json")):
                process.send_signal(signal.SIGINT)
                break
            time.sleep(0.05)
    return finish_or_kill(process, TIMEOUT_SECONDS, "the sweep")


def edit(study: dict, path: str, value: object) -> dict:
    """Set ``study[a][b]...`` for ``path`` "a.b.0.c" (a digit indexes a list)."""
    *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
    node = study
    for part in parents:
        node = node[part]
    node[last] = value
    return study


def record_times(output: Path) -> dict[str, int]:
    return {str(path.relative_to(output)): path.stat().st_mtime_ns for path in (output / "records").rglob("*.json")}
