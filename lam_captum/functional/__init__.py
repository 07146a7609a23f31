"""Pure tensor functions underneath :class:`lam_captum.LAM`: kernels, blur path, detectors and metrics."""

from lam_captum.functional._blur import (
    INTEGRATION_METHODS,
    PathKernels,
    PathSchedule,
    blur,
    blur_baseline,
    blur_path,
    gaussian_kernel,
    gaussian_kernel_derivative,
    path_kernels,
    path_schedule,
)
from lam_captum.functional._detectors import gradient_detector, intensity_detector, resolve_detector
from lam_captum.functional._kde import kde_map
from lam_captum.functional._metrics import attribution_area, attribution_map, diffusion_index, gini, negative_share
from lam_captum.functional._window import Window, as_window, as_windows

__all__ = [
    "INTEGRATION_METHODS",
    "PathKernels",
    "PathSchedule",
    "Window",
    "as_window",
    "as_windows",
    "attribution_area",
    "attribution_map",
    "blur",
    "blur_baseline",
    "blur_path",
    "diffusion_index",
    "gaussian_kernel",
    "gaussian_kernel_derivative",
    "gini",
    "gradient_detector",
    "intensity_detector",
    "kde_map",
    "negative_share",
    "path_kernels",
    "path_schedule",
    "resolve_detector",
]
