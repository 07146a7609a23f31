"""Local Attribution Maps as a Captum attribution method."""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, overload

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor

from lam_captum._core._context import (
    computation_dtype,
    evaluating,
    gradient_context,
    model_placement,
    outside_stacklevel,
    owning_module,
)
from lam_captum._core._memory import available_memory, estimate_call_memory, probes_shared, warn_if_too_large
from lam_captum._core._region import CropMode, PathBlur, RowsIntegrate, attribute_in_crops, call_on_steps, check_crop
from lam_captum._core._windows import (
    Integrate,
    as_window_list,
    DETECTOR_WITHOUT_GRAPH,
    attribute_windows_in_crop,
    detected_rows,
    integrate_windows,
    reaches,
    window_values,
)
from lam_captum._core.settings import LAMSettings
from lam_captum.functional._blur import IntegrationMethod, PathSchedule, blur, blur_baseline
from lam_captum.functional._detectors import Detector, DetectorLike, resolve_detector
from lam_captum.functional._window import Window, WindowLike, as_windows, windows_listed


_NO_GRAPH_CAUSES = (
    "the model's output does not depend on its input through autograd; likely causes: torch.no_grad() or "
    "torch.inference_mode() inside the model's forward, or an op that cuts the graph (.detach(), .data, "
    "an integer cast, rounding or quantisation)"
)

# LR pixels per model call when `internal_batch_size` is not given (memory grows with rows x pixels).
# benchmarks/bench_lam.py on 2 CPU cores: 1-2 rows of 64x64 were fastest for EDSR-baseline and the
# default model alike, larger chunks only cost memory (68 MiB per row).
_DEFAULT_PIXELS_CPU = 2 * 64 * 64
# On a GPU batching is what fills the device. benchmarks/bench_budget.py on an H100: time per step falls until
# about 200 rows of 64x64 per call (all 50 steps of a 128x128 image: 1.2-1.4x faster than 12 rows); the
# memory that takes is capped below.
_DEFAULT_PIXELS_GPU = 200 * 64 * 64
# Share of the GPU's free memory one call may take by the estimate of `_memory.estimate_call_memory`.
_GPU_MEMORY_SHARE = 0.5
# attribute_windows on a GPU: each window beyond the first holds its own gradients through the vectorised
# backward pass; measured (EDSR-baseline, 64x64, 50 rows, H100) at 0.5 of one window's whole call. (On a
# CPU the K backward passes run one after the other and share the memory of one.)
_MEMORY_PER_EXTRA_WINDOW = 0.5


class LAM(GradientAttribution):
    r"""Local Attribution Maps (Gu & Dong, CVPR 2021) for super-resolution networks.

    LAM attributes a scalar of a window of the SR output (the detector; by default the summed gradient
    magnitude) to the pixels of the LR input, integrating input gradients along a path from a blurred copy
    of the input (the baseline) to the input itself. With the default ``method="official"`` the numbers
    are those of the paper's demo; the path steps run through the model in batches.

    Captum's wrappers and metrics take it as they take their own methods: ``NoiseTunnel(LAM(model))``
    (pass ``window=`` among the keyword arguments), ``captum.metrics.sensitivity_max(lam.attribute, ...)``
    and ``captum.metrics.infidelity(lam.objective(window), ...)``.

    Args:
        forward_func: The SR network, ``(N, C, H, W) -> (N, C, sH, sW)`` for an integer scale ``s``, or
            any function of that form.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.PixelShuffle(2))
        >>> attribution = LAM(model).attribute(torch.rand(1, 1, 12, 12), window=(4, 4, 8), n_steps=5)
        >>> attribution.shape
        torch.Size([1, 1, 12, 12])
    """

    def __init__(self, forward_func: Callable[[Tensor], Tensor]) -> None:
        if not callable(forward_func):
            raise TypeError(f"`forward_func` must be a model or a callable, got {type(forward_func).__name__}")
        super().__init__(forward_func)

    def has_convergence_delta(self) -> bool:
        return True

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    @overload
    def attribute(
        self, inputs: Tensor, window: WindowLike | Sequence[WindowLike], *,
        return_convergence_delta: Literal[False] = False, **kwargs,
    ) -> Tensor: ...

    @overload
    def attribute(
        self, inputs: tuple[Tensor], window: WindowLike | Sequence[WindowLike], *,
        return_convergence_delta: Literal[False] = False, **kwargs,
    ) -> tuple[Tensor]: ...

    @overload
    def attribute(
        self, inputs: Tensor, window: WindowLike | Sequence[WindowLike], *,
        return_convergence_delta: Literal[True], **kwargs,
    ) -> tuple[Tensor, Tensor]: ...

    @overload
    def attribute(
        self, inputs: tuple[Tensor], window: WindowLike | Sequence[WindowLike], *,
        return_convergence_delta: Literal[True], **kwargs,
    ) -> tuple[tuple[Tensor], Tensor]: ...

    @log_usage()
    def attribute(  # type: ignore[override]
        self,
        inputs: Tensor | tuple[Tensor],
        window: WindowLike | Sequence[WindowLike],
        *,
        n_steps: int = 50,
        sigma: float = 1.2,
        kernel_size: int = 9,
        method: IntegrationMethod = "official",
        detector: DetectorLike = "gradient",
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
        dtype: torch.dtype | None = None,
        show_progress: bool = False,
        frame: int | None = None,
        crop: CropMode = "auto",
    ) -> Tensor | tuple[Tensor] | tuple[Tensor | tuple[Tensor], Tensor]:
        """Attribute the detector of ``window`` of the SR output to every pixel of ``inputs``.

        Args:
            inputs: ``(N, C, H, W)`` LR images, in the range the model expects; any channel count. Or
                ``(N, T, C, H, W)`` LR clips for a video model that returns clips ``(N, T, C, sH, sW)``
                (BasicVSR style) or one frame ``(N, C, sH, sW)`` (EDVR style); every frame is blurred along
                the same path. As in Captum, a 1-tuple ``(images,)`` is accepted and the attribution is
                then a 1-tuple too.
            window: In SR-output pixels: ``(top, left, size)``, ``(top, left, height, width)`` or a
                :class:`Window`, one for all samples, or a sequence of one per sample. ``M`` windows for
                ``N = k * M`` samples give each window to ``k`` consecutive samples: Captum's ``NoiseTunnel``
                and ``sensitivity_max`` repeat every sample ``k`` times in a row.
            n_steps: Steps along the path (the demo's ``fold``).
            sigma: Blur of the baseline (the path's largest sigma).
            kernel_size: Odd side of the Gaussian kernel (the demo's ``l``).
            method: ``"official"`` (the demo's scheme) or a rule named as in Captum, ``"riemann_left"``,
                ``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"`` (its weights sum to 1,
                Captum's to ``(n - 1) / n``), ``"gausslegendre"``, which use the analytic derivative of the path.
            detector: ``"gradient"`` (default), ``"intensity"`` or a callable
                ``(output (B, C, sH, sW), window) -> (B,)``.
            internal_batch_size: Path steps per model call (all samples' steps are chunked together);
                the result does not depend on it. Default: a budget of LR pixels per call measured for
                the device (2 steps of 64x64 on a CPU, 50 on a GPU), at least 1.
            return_convergence_delta: Also return Captum's convergence delta per sample,
                ``sum(attribution) - (D(input) - D(baseline))``.
            dtype: Floating dtype to compute in (the inputs are cast to it). Default: the dtype of the
                model's parameters (float64 images into a float32 model are computed in float32); for a
                function without parameters, the inputs' dtype, float32 for half types. Autocast is switched
                off during the call either way.
            show_progress: Show a progress bar over the path steps.
            frame: For clips only: the output frame the window lies in, ``0 <= frame < T``; default the
                centre, ``ceil(T / 2) - 1``, as the public video LAM tool chooses. A model that returns one
                frame has no choice: a ``frame`` given for it is ignored, with a warning.
            crop: ``"auto"``: compute each image on the smallest crop of the input that reproduces the
                full image's result (the region the window can see plus the blur kernel's radius), zero
                elsewhere. It is verified on every call (the window's output pixels and an input
                gradient agree between crop and full image at the input, the window's output pixels at the
                baseline, every path point's gradient stays inside the region); where it cannot be, the full
                image is used (logged at debug level), as it is for a model that computes a statistic of the
                whole image (a maximum, a top-k, a pooled average, a group norm), which can change what the
                window sees anywhere along the path. What a local model's window sees only in the middle of
                the path, outside the crop, escapes these checks (units dead at both ends of the path and
                alive between): where that can happen, pass ``False``. The cost is one extra forward
                and backward pass of the full image and one forward pass (at the baseline); where the first
                would not fit in the free memory (estimated by the probe), forward passes of the full image
                without gradients and a few passes of crops, whose output must match it (the peak memory is
                then that forward pass or the crop's, not a step of the full image). Clips always use the whole
                clip.
                ``False``: always the full image.

        Returns:
            The attribution, shape and device of ``inputs`` (a 1-tuple for a 1-tuple), in the computation
            dtype, signed and per channel; with ``return_convergence_delta`` a tuple ``(attribution, delta)``
            with ``delta`` of shape ``(N,)``.

        Warns:
            RuntimeWarning: Before the run, if one model call would need more memory than the device has
                free (estimated by a probe forward pass on a crop) or for a flat image, which the path cannot
                change beyond rounding; after it, for zeroed non-finite gradients
                or an all-zero attribution; for a ``frame`` given with a model that returns one frame.

        Raises:
            ValueError: For a bad argument, a window outside the SR output, a non-integer scale, a model
                whose output does not depend on its input, or non-finite outputs.
            TypeError: For inputs that are not a floating tensor or a 1-tuple of one, or a ``dtype`` that is
                not a floating torch dtype.
        """
        settings = LAMSettings(n_steps, sigma, kernel_size, method, detector, internal_batch_size)
        is_tuple, x = unpack_inputs(inputs)
        x = self._prepare_inputs(x, dtype)
        windows = as_windows(window, x.shape[0])
        target = OutputFrame.of(x, frame)
        check_crop(crop)
        detector = settings.resolved_detector()
        with gradient_context(self.forward_func, x.device), naming_dtype_errors(self.forward_func, x.dtype), \
                probes_shared():
            x = x.detach().clone()
            # A clip's frames are blurred as channels of one image, each on its own (the blur is per channel).
            baseline = blur_baseline(x.flatten(1, -3), settings.sigma, settings.kernel_size).reshape(x.shape)
            _warn_if_flat(x, baseline)
            if crop and x.dim() == 4:
                # The crops' calls, and the full image's where a sample has no crop, warn about their own memory;
                # the pass that finds the region fits by its choice (`window_references`).
                attribution = attribute_in_crops(self.forward_func, x, windows, detector, PathBlur.of(settings),
                                                 self._rows_engine(settings, show_progress))
            else:
                # A clip's row holds all its frames: the budget per call counts them all. (Crops count their own.)
                rows = _call_rows(self.forward_func, x, settings.internal_batch_size, x.shape[0] * settings.n_steps)
                attribution = self._integrate(x, windows, detector, settings.path_schedule(), rows, show_progress,
                                              target)
            result = (attribution,) if is_tuple else attribution
            if not return_convergence_delta:
                return result
            delta = self.compute_convergence_delta(attribution, baseline, x, window=windows, detector=detector,
                                                   frame=frame)
        return result, delta

    def objective(self, window: WindowLike | Sequence[WindowLike], detector: DetectorLike = "gradient",
                  frame: int | None = None, *, repeats: Literal["each", "batch"] | None = None) -> Callable:
        """The scalar LAM attributes, ``images -> D(model(images))`` per image, as a Captum forward function.

        For Captum's metrics that call the model, such as ``captum.metrics.infidelity``, and its other methods
        (to set LAM beside ``IntegratedGradients`` on the same objective). The model runs in eval mode as during
        :meth:`attribute`; ``window`` and ``frame`` are read as there.

        Args:
            window: One window for every sample, or ``M`` windows, one per image of the batch Captum was given.
            detector, frame: As in :meth:`attribute`.
            repeats: How a batch of ``k * M`` samples (k > 1) repeats the ``M`` images: ``"each"``, each image
                ``k`` times in a row (``NoiseTunnel``, ``captum.metrics``), or ``"batch"``, the whole batch ``k``
                times (``IntegratedGradients``, ``FeatureAblation``, ``Occlusion``). Needed only then: with one
                window, or one per sample, there is nothing to choose. Methods that explain one image at a time
                (``Lime``, ``KernelShap``) and wrappers of wrappers (``NoiseTunnel`` around
                ``IntegratedGradients``) repeat in neither order: give them one window.

        Raises:
            ValueError: For a ``repeats`` other than those; when the objective is called on ``k * M`` samples
                for ``M > 1`` windows without one.

        Example:
            >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.PixelShuffle(2))
            >>> LAM(model).objective((2, 2, 8))(torch.rand(3, 1, 12, 12)).shape
            torch.Size([3])
        """
        if repeats not in (None, "each", "batch"):
            raise ValueError(f"`repeats` must be 'each', 'batch' or None, got {repeats!r}")
        return _WindowObjective(self.forward_func, window, resolve_detector(detector), frame, repeats)

    def attribute_windows(
        self,
        inputs: Tensor,
        windows: Sequence[WindowLike] | Tensor,
        *,
        n_steps: int = 50,
        sigma: float = 1.2,
        kernel_size: int = 9,
        method: IntegrationMethod = "official",
        detector: DetectorLike = "gradient",
        internal_batch_size: int | None = None,
        return_convergence_delta: bool = False,
        dtype: torch.dtype | None = None,
        show_progress: bool = False,
        crop: CropMode = "auto",
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Attribute K windows of one image at once: one forward pass and K input gradients per path step.

        The numbers are those of :meth:`attribute` called once per window; the path images, and so the
        forward passes, are shared. With ``crop="auto"`` one full-image pass finds every window's region
        (one forward pass, and an input gradient per window, windows far apart sharing one backward pass; or,
        where that would not fit in the free memory, a forward pass without gradients and crops, as in
        :meth:`attribute`);
        windows whose regions lie close together then share one verified crop (see :meth:`attribute`), and
        windows far apart get crops of their own, whichever costs fewer pixels through the model.

        Args:
            inputs: ``(1, C, H, W)``: one LR image.
            windows: K >= 1 windows in SR-output pixels, each ``(top, left, size)``,
                ``(top, left, height, width)`` or a :class:`Window`, or a ``(K, 3)`` / ``(K, 4)`` tensor.
            n_steps, sigma, kernel_size, method, detector, dtype, show_progress, crop: As in :meth:`attribute`.
            internal_batch_size: Path steps per model call; on a GPU each call also holds K gradients of that size.
            return_convergence_delta: Also return each window's convergence delta, shape ``(K,)``.

        Returns:
            ``(K, C, H, W)``: window k's attribution in row k; with ``return_convergence_delta`` a tuple
            ``(attribution, delta)``.

        Raises:
            ValueError: As :meth:`attribute`, and if ``inputs`` holds more than one image or ``windows`` is
                not a sequence of windows.
            TypeError: For inputs that are not a floating tensor.

        Example:
            >>> import torch
            >>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.PixelShuffle(2))
            >>> lam = LAM(model)
            >>> image = torch.rand(1, 1, 12, 12)
            >>> together = lam.attribute_windows(image, [(0, 0, 8), (12, 4, 8)], n_steps=5)
            >>> together.shape
            torch.Size([2, 1, 12, 12])
            >>> torch.allclose(together[1], lam.attribute(image, (12, 4, 8), n_steps=5)[0])
            True
        """
        settings = LAMSettings(n_steps, sigma, kernel_size, method, detector, internal_batch_size)
        x = self._prepare_inputs(inputs, dtype)
        if x.dim() != 4:
            raise ValueError(f"`inputs` must be one image, shape (1, C, H, W), got {tuple(x.shape)}: a clip's windows "
                             "take one attribute() call each (lam_captum.video.explain_clip)")
        if x.shape[0] != 1:
            raise ValueError(f"`inputs` must hold one image, shape (1, C, H, W), got {tuple(x.shape)}; for one "
                             "window per image use attribute()")
        window_list = as_window_list(windows)
        check_crop(crop)
        detector = settings.resolved_detector()
        with gradient_context(self.forward_func, x.device), naming_dtype_errors(self.forward_func, x.dtype), \
                probes_shared():
            x = x.detach().clone()
            baseline = blur_baseline(x, settings.sigma, settings.kernel_size)
            _warn_if_flat(x, baseline)
            # Each group's integration warns about its own calls; the pass that finds the windows' regions fits by
            # its choice (`window_references`).
            attribution = attribute_windows_in_crop(self.forward_func, x, window_list, detector, PathBlur.of(settings),
                                                    crop, self._windows_engine(settings, show_progress),
                                                    self._rows_engine(settings, show_progress, noun="window"))
            if not return_convergence_delta:
                return attribution
            detected = window_values(self.forward_func, x, window_list, detector)
            delta = attribution.flatten(1).sum(dim=1) - (detected - window_values(self.forward_func, baseline,
                                                                                  window_list, detector))
        return attribution, delta

    def _windows_engine(self, settings: LAMSettings, show_progress: bool) -> Integrate:
        """``(image, windows, inspect, labels) -> (K, C, H, W)``, integrating all windows in one pass (see
        :data:`~lam_captum._core._windows.Integrate`)."""

        def integrate(image: Tensor, windows: list[Window], inspect: Callable[[Tensor], None] | None = None,
                      labels: list[int] | None = None) -> Tensor:
            rows = _call_rows(self.forward_func, image, settings.internal_batch_size, settings.n_steps, len(windows))
            cleaner = _GradientHealth(len(windows), labels, noun="window")
            with _progress_bar(settings.n_steps, show_progress, image.shape) as progress:
                attribution = integrate_windows(self.forward_func, image, windows, settings.resolved_detector(),
                                                settings.path_schedule(), rows, check_output=self._check_output,
                                                cleaner=cleaner, progress=progress, inspect=inspect)
            cleaner.report(attribution)
            return attribution

        return integrate

    def compute_convergence_delta(  # type: ignore[override]
        self,
        attributions: Tensor,
        start_point: Tensor,
        end_point: Tensor,
        target: None = None,
        additional_forward_args: None = None,
        *,
        window: WindowLike | Sequence[WindowLike],
        detector: DetectorLike = "gradient",
        frame: int | None = None,
    ) -> Tensor:
        """Captum's completeness gap ``sum(attributions) - (D(end_point) - D(start_point))`` per sample.

        ``D`` is the detector of ``window`` on the model's output, evaluated in eval mode as during
        :meth:`attribute`, on output frame ``frame`` for clips. ``start_point`` is the blurred baseline
        (:func:`lam_captum.functional.blur_baseline`, frame by frame for clips).
        """
        if target is not None or additional_forward_args is not None:
            raise ValueError("LAM's objective is set by `window` and `detector`; `target` and "
                             "`additional_forward_args` must be None")
        objective = _WindowObjective(self.forward_func, window, resolve_detector(detector), frame)
        end = end_point[0] if isinstance(end_point, tuple) else end_point
        with gradient_context(self.forward_func, end.device):
            return GradientAttribution(objective).compute_convergence_delta(attributions, start_point, end_point)

    def _rows_engine(self, settings: LAMSettings, show_progress: bool, noun: str = "sample") -> RowsIntegrate:
        """LAM of every row of images (crops, and samples without one) with its window, rows stacked into the
        model calls (see :class:`~lam_captum._core._region.RowsIntegrate`); warnings call the rows ``noun``."""
        return _RowsEngine(self, settings, show_progress, noun)

    def _prepare_inputs(self, inputs: Tensor, dtype: torch.dtype | None) -> Tensor:
        if not isinstance(inputs, Tensor):
            raise TypeError(f"`inputs` must be a tensor, got {type(inputs).__name__}")
        if inputs.dim() not in (4, 5):
            raise ValueError(f"`inputs` must be a 4-D (N, C, H, W) tensor, got shape {tuple(inputs.shape)}; add a "
                             "batch dimension with inputs.unsqueeze(0) (clips of video frames: a 5-D (N, T, C, H, W) "
                             "tensor)")
        check_image("inputs", inputs)
        if inputs.numel() == 0:
            raise ValueError(f"`inputs` holds no pixels: shape {tuple(inputs.shape)}")
        check_dtype(dtype)
        module = owning_module(self.forward_func)
        parameter = next(module.parameters(), None) if module is not None else None
        if parameter is not None and parameter.device != inputs.device:
            raise ValueError(f"`inputs` are on {inputs.device} but the model is on {parameter.device}")
        return inputs.to(dtype or computation_dtype(module, inputs))

    def _integrate(
        self,
        x: Tensor,
        windows: list[Window],
        detector: Detector,
        path: PathSchedule,
        rows_per_call: int,
        show_progress: bool,
        target: OutputFrame,
        inspect: Callable[[int, Tensor], None] | None = None,
        labels: list[int] | None = None,
        noun: str = "sample",
    ) -> Tensor:
        """Sum ``weight * grad(D)(point) * derivative`` over all path steps of all samples, in chunks.

        Kernels, path points and derivatives exist for one chunk at a time, so memory is bounded by
        ``rows_per_call`` whatever the number of steps. A clip's frames are blurred as channels of one image:
        the blur is per channel, so every frame follows the same path. ``inspect(sample, gradients)`` sees each
        sample's input gradients of every chunk; warnings name the samples ``noun`` by ``labels``.
        """
        frames = x.flatten(1, -3)
        attribution = torch.zeros_like(frames)
        failures = _GradientHealth(x.shape[0], labels, noun)
        # The bar closes its line whatever happens, Ctrl-C included.
        with _progress_bar(x.shape[0] * path.n_steps, show_progress, x.shape) as progress:
            for chunk in _chunks(x.shape[0], path.n_steps, rows_per_call):
                kernels = [path.kernels(steps.start, steps.stop) for _, steps in chunk]
                points = torch.cat([blur(frames[n : n + 1], step_kernels.points)[0]
                                    for (n, _), step_kernels in zip(chunk, kernels)])
                gradients = self._input_gradients(points.reshape(-1, *x.shape[1:]), chunk, windows, detector, target)
                start = 0
                for (n, steps), step_kernels in zip(chunk, kernels):
                    if inspect is not None:
                        inspect(n, gradients[start : start + len(steps)])
                    block = failures.clean(n, gradients[start : start + len(steps)].flatten(1, -3))
                    derivatives = blur(frames[n : n + 1], step_kernels.derivatives)[0]
                    weights = step_kernels.weights.to(dtype=x.dtype, device=x.device)
                    attribution[n] += torch.einsum("s,schw->chw", weights, block * derivatives)
                    start += len(steps)
                progress.update(points.shape[0])
        failures.report(attribution)
        return attribution.reshape(x.shape)

    def _input_gradients(self, points: Tensor, chunk: list[tuple[int, range]], windows: list[Window],
                         detector: Detector, target: OutputFrame) -> Tensor:
        """``dD/dpoint`` for every path point of one chunk, in one forward and one backward pass."""
        points.requires_grad_(True)
        output = target.select(call_on_steps(self.forward_func, points), points)
        self._check_output(output, points, windows)
        detected = _detect(output, chunk, windows, detector)
        (gradients,) = torch.autograd.grad(detected.sum(), points, allow_unused=True)
        if gradients is None:
            raise ValueError(_NO_GRAPH_CAUSES if reaches(detected, output) else DETECTOR_WITHOUT_GRAPH)
        return gradients

    @staticmethod
    def _check_output(output: Tensor, points: Tensor, windows: list[Window]) -> None:
        if not isinstance(output, Tensor) or output.dim() != 4 or output.shape[0] != points.shape[0]:
            raise ValueError(not_an_sr_image(output, f"a batch of {points.shape[0]} path images of "
                                                     f"{tuple(points.shape[1:])}"))
        if not output.requires_grad:
            raise ValueError(_NO_GRAPH_CAUSES)
        (h, w), (sh, sw) = points.shape[-2:], output.shape[-2:]
        if sh % h or sw % w or sh // h != sw // w:
            raise ValueError(f"the SR output ({sh}x{sw}) must be the same integer multiple of the input ({h}x{w}) "
                             "in both dimensions")
        if not torch.isfinite(output).all():
            raise ValueError("the model's output holds NaN or infinite values on the blur path; check the input "
                             "range the model expects")


class _WindowObjective:
    """``x -> D(model(x))`` per sample, in eval mode: the scalar function whose completeness Captum checks."""

    def __init__(self, forward_func: Callable[[Tensor], Tensor], window: WindowLike | Sequence[WindowLike],
                 detector: Detector, frame: int | None = None, repeats: Literal["each", "batch"] | None = None) -> None:
        self.forward_func = forward_func
        self.window = window
        self.detector = detector
        self.frame = frame
        self.repeats = repeats

    def __call__(self, x: Tensor) -> Tensor:
        listed = windows_listed(self.window)
        if self.repeats is None and listed is not None and 1 < len(listed) < x.shape[0] \
                and x.shape[0] % len(listed) == 0:
            # Captum's methods repeat a batch in two orders, and the wrong one gives windows to the wrong images.
            raise ValueError(f"`repeats` must say how the {x.shape[0]} samples repeat the images of the "
                             f"{len(listed)} windows: 'each' (each image in a row: NoiseTunnel, captum.metrics) or "
                             "'batch' (the whole batch again: IntegratedGradients, FeatureAblation, Occlusion); "
                             "got None")
        windows = as_windows(self.window, x.shape[0], self.repeats or "each")
        with evaluating(self.forward_func):
            output = OutputFrame.of(x, self.frame).select(self.forward_func(x), x)
        return torch.cat([self.detector(output[n : n + 1], window) for n, window in enumerate(windows)])


class OutputFrame:
    """The output frame whose window LAM explains: the output itself for images; for clips, frame ``index`` of a
    clip-to-clip model's output, or the one frame a clip-to-frame model returns.

    Example:
        >>> OutputFrame.of(torch.zeros(1, 4, 3, 8, 8), None).index
        1
        >>> OutputFrame.of(torch.zeros(1, 3, 8, 8), None).index is None
        True
    """

    def __init__(self, clip_length: int | None, index: int | None, chosen: bool) -> None:
        self.clip_length = clip_length
        self.index = index
        self.chosen = chosen  # the caller named the frame (so a one-frame model ignoring it deserves a warning)
        self._warned = False

    @classmethod
    def of(cls, inputs: Tensor, frame: int | None) -> OutputFrame:
        """The frame for ``inputs`` (images or clips) and the caller's ``frame``.

        Raises:
            ValueError: For a ``frame`` given with images, or not an integer in ``[0, T)`` for clips of ``T`` frames.
        """
        if inputs.dim() != 5:
            if frame is not None:
                raise ValueError(f"`frame` is for clips (N, T, C, H, W), got frame={frame!r} for inputs of shape "
                                 f"{tuple(inputs.shape)}")
            return cls(None, None, False)
        length = inputs.shape[1]
        if frame is None:
            return cls(length, (length + 1) // 2 - 1, False)
        if isinstance(frame, bool) or not isinstance(frame, numbers.Integral) or not 0 <= frame < length:
            raise ValueError(f"`frame` must be an integer from 0 to {length - 1} for clips of {length} frames, "
                             f"got {frame!r}")
        return cls(length, int(frame), True)

    def select(self, output: Tensor, inputs: Tensor) -> Tensor:
        """The ``(N, C, sH, sW)`` frame of ``output`` that holds the window.

        Raises:
            ValueError: For clips, if ``output`` is neither ``(N, T, C, sH, sW)`` nor ``(N, C, sH, sW)``.
        """
        if self.clip_length is None or not isinstance(output, Tensor):
            return output
        if output.dim() == 5 and output.shape[:2] == inputs.shape[:2]:
            return output[:, self.index]
        # A one-frame output has the frames' channels; more (T * C) would be a clip folded into channels.
        if output.dim() == 4 and output.shape[:2] == (inputs.shape[0], inputs.shape[2]):
            self._warn_if_ignored()
            return output
        raise ValueError(f"for (N, T, C, H, W) clips the model must return clips (N, T, C, sH, sW) or one frame "
                         f"(N, C, sH, sW), got {tuple(output.shape)} for {tuple(inputs.shape)}")

    def _warn_if_ignored(self) -> None:
        if self.chosen and not self._warned:
            self._warned = True
            warnings.warn(f"`frame`={self.index} has no effect: the model returns one frame, which holds the window",
                          RuntimeWarning, stacklevel=outside_stacklevel())


class _GradientHealth:
    """Zeroes non-finite gradients as the demo does, and tells the user once what went wrong."""

    def __init__(self, n_samples: int, labels: list[int] | None = None, noun: str = "sample") -> None:
        self.non_finite = 0
        self.nonzero = [False] * n_samples
        self.labels = list(range(n_samples)) if labels is None else labels
        self.noun = noun

    def clean(self, sample: int, gradients: Tensor) -> Tensor:
        finite = torch.isfinite(gradients)
        if not finite.all():
            self.non_finite += int((~finite).sum())
            gradients = torch.where(finite, gradients, 0.0)
        self.nonzero[sample] = self.nonzero[sample] or bool(gradients.any())
        return gradients

    def report(self, attribution: Tensor) -> None:
        """Warn once for zeroed non-finite gradients, and for each row whose ``attribution`` (rows first) is all
        zero: its gradients were, or the path never changed its input."""
        if self.non_finite:
            warnings.warn(f"{self.non_finite} non-finite input-gradient values were set to 0 (as the official demo "
                          "does); the model may overflow or divide by zero on blurred inputs", RuntimeWarning,
                          stacklevel=outside_stacklevel())
        dead = [self.labels[n] for n, nonzero in enumerate(self.nonzero) if not nonzero]
        if dead:
            warnings.warn(f"the input gradients of {self.noun}(s) {dead} are zero at every path step, so the attribution "
                          "is all zero: the window may be flat (clamped or saturated output) all along the path, "
                          "or the model cuts the gradient (rounding, quantisation, integer casts)", RuntimeWarning,
                          stacklevel=outside_stacklevel())
        still = [self.labels[n] for n, nonzero in enumerate(self.nonzero) if nonzero and not attribution[n].any()]
        if still:
            warnings.warn(f"the attribution of {self.noun}(s) {still} is all zero although the input gradients are "
                          "not: the blur path never changes the input there (a flat image, or a `sigma` too small to "
                          "blur it)", RuntimeWarning, stacklevel=outside_stacklevel())


# The largest change the blur makes to an image, as a share of its largest value, below which the path is only
# rounding: float32 blurs a flat image to itself within about 1e-7 of it; one 8-bit grey level of detail (1/255)
# changes it by more than 1e-4. float64 rounds 1e9 times finer: detail of 1e-6 on an offset of 1000 is real there.
FLAT_CHANGE = {torch.float64: 1e-13}
DEFAULT_FLAT_CHANGE = 1e-5


def _warn_if_flat(x: Tensor, baseline: Tensor) -> None:
    """Warn for samples of ``x`` (images or clips) that the blur path cannot change beyond rounding (``baseline``
    is its most blurred point): their attribution would be rounding noise with a Diffusion Index of its own.
    All-black samples are left to :class:`_GradientHealth`, whose attribution is exactly zero."""
    change = (x - baseline).abs().flatten(1).amax(dim=1)
    largest = x.abs().flatten(1).amax(dim=1)
    threshold = FLAT_CHANGE.get(x.dtype, DEFAULT_FLAT_CHANGE)
    flat = [n for n in range(x.shape[0]) if 0 < largest[n] and change[n] <= threshold * largest[n]]
    if flat:
        shares = ", ".join(f"{float(change[n] / largest[n]):.1g}" for n in flat)
        warnings.warn(f"the blur path barely changes the input of sample(s) {flat} (its largest change is {shares} of "
                      "the image's largest value): the image is flat, so its attribution and Diffusion Index are "
                      "rounding noise; LAM needs detail for the blur to remove", RuntimeWarning,
                      stacklevel=outside_stacklevel())


def _chunks(n_samples: int, n_steps: int, rows: int) -> Iterator[list[tuple[int, range]]]:
    """Split all (sample, step) rows, sample by sample, into model calls of at most ``rows``; each call is a
    list of ``(sample, run of steps)``."""
    total = n_samples * n_steps
    for start in range(0, total, rows):
        stop = min(start + rows, total)
        chunk = []
        while start < stop:
            sample, step = divmod(start, n_steps)
            end = min(stop, (sample + 1) * n_steps)
            chunk.append((sample, range(step, step + end - start)))
            start = end
        yield chunk


def _detect(output: Tensor, chunk: list[tuple[int, range]], windows: list[Window], detector: Detector) -> Tensor:
    values, start = [], 0
    for n, steps in chunk:
        values.append(detected_rows(detector(output[start : start + len(steps)], windows[n]), len(steps)))
        start += len(steps)
    return torch.cat(values)


def unpack_inputs(inputs: Tensor | tuple[Tensor]) -> tuple[bool, Tensor]:
    """``(was a tuple, images)``: Captum's methods take a tuple of input tensors; LAM and ERF have one input."""
    if not isinstance(inputs, tuple):
        return False, inputs
    if len(inputs) != 1:
        raise ValueError(f"`inputs` must be a tensor or a tuple of one tensor (one input is explained), got a tuple "
                         f"of {len(inputs)}")
    return True, inputs[0]


def not_an_sr_image(output: object, given: str) -> str:
    """What to say of a model ``output`` that is no ``(N, C, sH, sW)`` tensor for the inputs (``given``, in words).

    Example:
        >>> not_an_sr_image({"sr": 1, "features": 2}, "(1, 3, 8, 8)")  # doctest: +NORMALIZE_WHITESPACE
        "the model must return an (N, C, sH, sW) tensor for (N, C, H, W) inputs, got dict for (1, 3, 8, 8): wrap a
         model that returns several outputs so that it returns the SR image alone (lambda x: model(x)[key], one of
         ['features', 'sr'])"
    """
    said = "the model must return an (N, C, sH, sW) tensor for (N, C, H, W) inputs, got "
    if isinstance(output, Tensor):
        return said + f"{tuple(output.shape)} for {given}"
    hint, wrap = "", ": wrap a model that returns several outputs so that it returns the SR image alone"
    if isinstance(output, (tuple, list)):
        hint = f"{wrap} (lambda x: model(x)[0])"
    elif isinstance(output, dict):
        hint = f"{wrap} (lambda x: model(x)[key], one of {sorted(output, key=str)})"
    return said + f"{type(output).__name__} for {given}{hint}"


def check_image(name: str, image: object) -> Tensor:
    """Raise unless ``image`` is a floating tensor (an image in the model's range, not uint8 pixels); return it.

    Example:
        >>> check_image("lr", torch.zeros(3, 2, 2, dtype=torch.uint8))
        Traceback (most recent call last):
        ...
        TypeError: `lr` must be a floating tensor in the range the model expects (uint8 pixels: image.float() / 255), got torch.uint8
    """
    if not isinstance(image, Tensor):
        raise TypeError(f"`{name}` must be a tensor, got {type(image).__name__}")
    if not image.is_floating_point():
        raise TypeError(f"`{name}` must be a floating tensor in the range the model expects (uint8 pixels: "
                        f"image.float() / 255), got {image.dtype}")
    return image


def check_dtype(dtype: object) -> None:
    """Raise unless ``dtype`` is None or a floating torch dtype."""
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"`dtype` must be a floating torch dtype such as torch.float32, got {dtype!r}")


@contextlib.contextmanager
def naming_dtype_errors(forward_func: Callable, dtype: torch.dtype) -> Iterator[None]:
    """Turn the model's raw error on inputs of another dtype than its parameters' into one that names `dtype`."""
    model_dtype = model_placement(forward_func)[1]
    try:
        yield
    except RuntimeError as error:
        if model_dtype is None or model_dtype == dtype:
            raise
        raise TypeError(f"the model failed on {dtype} inputs, but its parameters are {model_dtype}: leave `dtype` "
                        f"unset to compute in {model_dtype}, or convert the model ({error})") from error


def default_internal_batch_size(
    device: torch.device, height: int, width: int, windows: int = 1, *, step_bytes: int | None = None,
    free_bytes: int | None = None,
) -> int:
    """Path steps per model call when ``internal_batch_size`` is not given, for ``height x width`` inputs and
    ``windows`` windows integrated together (their gradients share the budget).

    On a CPU a budget of LR pixels per call (the fastest there; its K windows' backward passes run one after
    the other); on a GPU a larger one shared with the K windows' vectorised gradients, capped so that the
    call's estimated memory (``step_bytes`` per path step for one window) stays within half of ``free_bytes``.

    Example:
        >>> default_internal_batch_size(torch.device("cpu"), 64, 64)
        2
        >>> default_internal_batch_size(torch.device("cuda"), 128, 128)
        50
        >>> default_internal_batch_size(torch.device("cuda"), 128, 128, step_bytes=360 << 20, free_bytes=8 << 30)
        11
        >>> default_internal_batch_size(torch.device("cuda"), 64, 64, windows=16)
        23
    """
    if device.type == "cpu":
        return max(1, _DEFAULT_PIXELS_CPU // (height * width))
    share = _window_share(device, windows)
    rows = max(1, int(_DEFAULT_PIXELS_GPU // (height * width * share)))
    if step_bytes and free_bytes:
        rows = min(rows, max(1, int(_GPU_MEMORY_SHARE * free_bytes // (step_bytes * share))))
    return rows


def _call_rows(forward_func: Callable[[Tensor], Tensor], inputs: Tensor, requested: int | None, steps: int,
               windows: int = 1) -> int:
    """Path steps per model call for ``inputs`` (one image or clip per row) and ``windows`` windows integrated
    together: :func:`_budget_rows`, at most the ``steps`` of the whole run. Warns before the run when a call of
    that many steps would not fit in the memory that is free. Call it where gradients are on.

    The probe forward pass of the estimate runs once, for both the budget and the warning.
    """
    rows, step_bytes = _budget_rows(forward_func, inputs, requested, windows)
    rows = min(rows, steps)
    warn_if_too_large(forward_func, inputs, rows, share=_window_share(inputs.device, windows), step_bytes=step_bytes)
    return rows


def _budget_rows(forward_func: Callable[[Tensor], Tensor], inputs: Tensor, requested: int | None,
                 windows: int = 1) -> tuple[int, int | None]:
    """``requested``, or :func:`default_internal_batch_size` with the memory of a step estimated on a GPU; and
    that estimate (None if the probe failed)."""
    step_bytes = estimate_call_memory(forward_func, inputs[:1], 1)
    if requested is not None:
        return requested, step_bytes
    frames = inputs.shape[1] if inputs.dim() == 5 else 1
    height, width = frames * inputs.shape[-2], inputs.shape[-1]
    free = None if inputs.device.type == "cpu" else available_memory(inputs.device)
    return default_internal_batch_size(inputs.device, height, width, windows, step_bytes=step_bytes,
                                       free_bytes=free), step_bytes


class _RowsEngine:
    """LAM of every row of images (crops, and samples without one) with its window, rows stacked into the model
    calls (:class:`~lam_captum._core._region.RowsIntegrate`)."""

    def __init__(self, lam: LAM, settings: LAMSettings, show_progress: bool, noun: str) -> None:
        self.lam, self.settings, self.show_progress, self.noun = lam, settings, show_progress, noun

    def __call__(self, inputs: Tensor, windows: list[Window], inspect: Callable[[int, Tensor], None] | None = None,
                 labels: list[int] | None = None) -> Tensor:
        settings = self.settings
        steps = inputs.shape[0] * settings.n_steps
        rows = _call_rows(self.lam.forward_func, inputs, settings.internal_batch_size, steps)
        return self.lam._integrate(inputs, windows, settings.resolved_detector(), settings.path_schedule(), rows,
                                   self.show_progress, OutputFrame.of(inputs, None), inspect, labels, self.noun)

    def rows_per_call(self, inputs: Tensor) -> int:
        return _budget_rows(self.lam.forward_func, inputs, self.settings.internal_batch_size)[0]


def _window_share(device: torch.device, windows: int) -> float:
    """One path step's memory with ``windows`` windows' gradients, in steps of one window."""
    return 1.0 if device.type == "cpu" else 1 + _MEMORY_PER_EXTRA_WINDOW * (windows - 1)


def _progress_bar(total: int, show: bool, shape: torch.Size):
    """A bar over the path steps naming the size computed on (the crop's, when LAM runs on a crop), with
    tqdm's estimate of the time left."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"LAM path steps on {shape[-2]}x{shape[-1]}", unit="step", disable=not show)
