"""Fixtures of the sweep tests; the helpers they share live in ``sweep_helpers``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

# Appended, not prepended: `conftest` must keep meaning the shared tests/conftest.py.
sys.path.append(str(Path(__file__).parent))

from sweep_helpers import TEST_MODELS  # noqa: E402  (importable once the folder is on the path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 64x64 HR photos (16x16 LR at x4), a truncated PNG and a file of odd models."""
    root = tmp_path_factory.mktemp("sweep")
    Image.fromarray(data.astronaut()[100:164, 150:214]).save(root / "astro.png")
    Image.fromarray(data.chelsea()[50:114, 100:164]).save(root / "cat.png")
    encoded = (root / "cat.png").read_bytes()
    (root / "truncated.png").write_bytes(encoded[: len(encoded) // 2])
    (root / "odd_models.py").write_text(TEST_MODELS)
    return root
