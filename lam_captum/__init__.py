"""Local Attribution Maps for super-resolution networks, as a Captum attribution method.

Example:
    >>> import torch, lam_captum
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2))
    >>> lam_captum.LAM(model).attribute(torch.rand(1, 3, 16, 16), (8, 8, 8), n_steps=4).shape
    torch.Size([1, 3, 16, 16])
"""

from lam_captum._core.erf import ERF
from lam_captum._core.lam import LAM
from lam_captum._core.settings import LAMSettings, SettingsError
from lam_captum.functional import Window

__version__ = "0.1.0"

__all__ = ["ERF", "LAM", "LAMSettings", "SettingsError", "Window", "__version__"]
