"""SR models to explain: the one model loader, EDSR, the project's trained default model, safe weights.

:func:`load_model` turns a spec (a built-in name, ``package.module:Class`` or
``path/to/file.py:Class``), its arguments, a checkpoint and a scale into a model in eval mode; the
command line and the sweep load models through it.

Example:
    >>> import torch
    >>> from lam_captum.models import load_model
    >>> model = load_model("default")
    >>> model(torch.rand(1, 3, 8, 8)).shape
    torch.Size([1, 3, 32, 32])
"""

from __future__ import annotations

from lam_captum.models._builtin import build_model, builtin_model_names
from lam_captum.models._loading import load_weights
from lam_captum.models._spec import ModelSpec, load_model, parse_model_spec
from lam_captum.models.default import CompactSR
from lam_captum.models.edsr import EDSR, edsr_baseline, edsr_full

__all__ = [
    "EDSR",
    "CompactSR",
    "ModelSpec",
    "build_model",
    "builtin_model_names",
    "edsr_baseline",
    "edsr_full",
    "load_model",
    "load_weights",
    "parse_model_spec",
]
