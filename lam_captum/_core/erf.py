"""The effective receptive field (RepLKNet, CVPR 2022) as a Captum attribution method."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor

from lam_captum._core._context import computation_dtype, gradient_context, owning_module
from lam_captum._core.lam import check_image, not_an_sr_image, unpack_inputs

_NO_GRAPH = (
    "the model's output does not depend on its input through autograd; likely causes: torch.no_grad() or "
    "torch.inference_mode() inside the model's forward, or an op that cuts the graph (.detach(), .data, "
    "an integer cast, rounding or quantisation)"
)


class ERF(GradientAttribution):
    r"""Effective receptive field: how much each input pixel moves one output pixel.

    For inputs ``x`` and the output ``y = F(x)``, the attribution is
    ``relu(d sum_{n, c} y[n, c, row, col] / dx)``: the gradient of one output position, summed over the
    batch and the channels, with respect to the inputs, clamped at zero, as RepLKNet and MambaIR compute
    it. The position defaults to the output's centre ``(sH // 2, sW // 2)``. Summed over channels and
    averaged over a data set it is the network's ERF (:func:`lam_captum.erf.dataset_erf`).

    The model runs in eval mode (every submodule's mode is restored afterwards), so the samples of a
    batch do not interact and each sample's attribution is its own gradient.

    Args:
        forward_func: The network, ``(N, C, H, W) -> (N, C', sH, sW)``: SR (``s > 1``), restoration
            (``s = 1``) or any image-to-image function.

    Example:
        >>> model = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
        >>> _ = torch.nn.init.ones_(model.weight)
        >>> ERF(model).attribute(torch.rand(1, 1, 5, 5))[0, 0]
        tensor([[0., 0., 0., 0., 0.],
                [0., 1., 1., 1., 0.],
                [0., 1., 1., 1., 0.],
                [0., 1., 1., 1., 0.],
                [0., 0., 0., 0., 0.]])
    """

    def __init__(self, forward_func: Callable[[Tensor], Tensor]) -> None:
        if not callable(forward_func):
            raise TypeError(f"`forward_func` must be a model or a callable, got {type(forward_func).__name__}")
        super().__init__(forward_func)

    def has_convergence_delta(self) -> bool:
        return False

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    @log_usage()
    def attribute(  # type: ignore[override]
        self, inputs: Tensor | tuple[Tensor], position: tuple[int, int] | None = None
    ) -> Tensor | tuple[Tensor]:
        """The clamped gradient of the output at ``position`` with respect to ``inputs``.

        Args:
            inputs: ``(N, C, H, W)`` floating images, in the range the model expects, or a 1-tuple of them as
                Captum's tools pass them (the result is then a 1-tuple too). They are computed in the dtype of
                the model's parameters, as LAM does (float32 for half types into a function).
            position: ``(row, column)`` of the output pixel, in output pixels. Default: the centre,
                ``(sH // 2, sW // 2)``.

        Returns:
            ``relu(gradient)``, the shape and device of ``inputs``, in the computation dtype; sum it over
            channels for the map.

        Raises:
            TypeError: If ``inputs`` is not a floating tensor.
            ValueError: If ``inputs`` is not 4-D, ``position`` is not two ints inside the output, or
                the output does not depend on the input.
        """
        is_tuple, x = unpack_inputs(inputs)
        x = _prepare_inputs(self.forward_func, x)
        with gradient_context(self.forward_func, x.device):
            x = x.detach().clone().requires_grad_(True)
            output = self.forward_func(x)
            row, column = _check_position(output, x, position)
            (gradient,) = torch.autograd.grad(output[:, :, row, column].sum(), x, allow_unused=True)
        if gradient is None:
            raise ValueError(_NO_GRAPH)
        erf = gradient.clamp_min(0).detach()
        return (erf,) if is_tuple else erf


def _prepare_inputs(forward_func: Callable, inputs: Tensor) -> Tensor:
    if not isinstance(inputs, Tensor):
        raise TypeError(f"`inputs` must be a tensor, got {type(inputs).__name__}")
    if inputs.dim() != 4:
        raise ValueError(f"`inputs` must be a 4-D (N, C, H, W) tensor, got shape {tuple(inputs.shape)}")
    check_image("inputs", inputs)
    module = owning_module(forward_func)
    parameter = next(module.parameters(), None) if module is not None else None
    if parameter is not None and parameter.device != inputs.device:
        raise ValueError(f"`inputs` are on {inputs.device} but the model is on {parameter.device}")
    return inputs.to(computation_dtype(forward_func, inputs))


def _check_position(output: Tensor, inputs: Tensor, position: tuple[int, int] | None) -> tuple[int, int]:
    if not isinstance(output, Tensor) or output.dim() != 4 or output.shape[0] != inputs.shape[0]:
        raise ValueError(not_an_sr_image(output, str(tuple(inputs.shape))))
    if not output.requires_grad:
        raise ValueError(_NO_GRAPH)
    height, width = output.shape[-2:]
    if position is None:
        return height // 2, width // 2
    if (not isinstance(position, (tuple, list)) or len(position) != 2
            or not all(isinstance(value, numbers.Integral) and not isinstance(value, bool) for value in position)):
        raise ValueError(f"`position` must be two ints (row, column), got {position!r}")
    row, column = (int(value) for value in position)
    if not (0 <= row < height and 0 <= column < width):
        raise ValueError(f"`position` must lie inside the {height}x{width} output, got row={row}, column={column}")
    return row, column
