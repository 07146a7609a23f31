"""Lightning integration for lam_captum: watch Local Attribution Maps change while an SR network trains.

Example:
    >>> import torch
    >>> from lam_captum.callbacks import LAMMonitor, Probe
    >>> monitor = LAMMonitor([Probe(torch.rand(3, 16, 16), (8, 8, 16), "centre")], n_steps=8)
    >>> from lightning.pytorch import Trainer
    >>> trainer = Trainer(callbacks=[monitor], max_epochs=10, enable_progress_bar=False)
"""

from lam_captum.callbacks._lam_monitor import PICTURE_NAMES, LAMMonitor
from lam_captum.callbacks._probe import Probe

__all__ = ["PICTURE_NAMES", "LAMMonitor", "Probe"]
