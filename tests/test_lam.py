from __future__ import annotations

import functools
import weakref
import pickle
import warnings

import numpy as np
import pytest
import torch
from conftest import tiny_sr
from reference_lam import demo_lam
from torch import nn

from lam_captum import LAM, Window
from lam_captum.functional import blur_baseline


def relative_error(ours: torch.Tensor, reference: np.ndarray) -> float:
    return float(np.abs(ours.detach().double().numpy() - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize(
    ("channels", "scale", "window"),
    [(3, 4, (40, 36, 16)), (1, 2, (10, 8, 16)), (3, 3, (20, 30, 16)), (1, 8, (60, 100, 16)), (3, 4, (0, 0, 16))],
)
def test_official_method_matches_the_demo(photo_lr, channels, scale, window):
    model = tiny_sr(channels, scale)
    image = photo_lr[:, :channels]
    reference = demo_lam(model, image[0].numpy(), *window)
    ours = LAM(model).attribute(image, window)
    assert ours.shape == image.shape
    assert relative_error(ours[0], reference) <= 1e-4


def test_parity_holds_with_other_parameters(photo_lr):
    model = tiny_sr(3, 2, seed=3)
    reference = demo_lam(model, photo_lr[0].numpy(), 12, 6, 8, sigma=2.5, fold=13, kernel_size=5)
    ours = LAM(model).attribute(photo_lr, (12, 6, 8), sigma=2.5, n_steps=13, kernel_size=5)
    assert relative_error(ours[0], reference) <= 1e-4


def test_parity_on_a_model_with_frozen_mean_shift_and_residuals(photo_lr):
    from lam_captum.models import build_model

    model = build_model("edsr-baseline", scale=2, n_resblocks=2, n_feats=8).eval()
    reference = demo_lam(model, photo_lr[0].numpy(), 14, 20, 16, fold=10)
    assert relative_error(LAM(model).attribute(photo_lr, (14, 20, 16), n_steps=10)[0], reference) <= 1e-4


def test_result_does_not_depend_on_internal_batch_size(photo_lr):
    model = tiny_sr()
    images = torch.cat([photo_lr, photo_lr.flip(-1), photo_lr.flip(-2)])
    windows = [Window(8, 8, 16, 16), (30, 40, 12), (50, 20, 8, 24)]
    lam = LAM(model)
    one_at_a_time = torch.cat([lam.attribute(image[None], w, n_steps=7, internal_batch_size=1)
                               for image, w in zip(images, windows)])
    for rows in (2, 5, 7, 21, 100):
        batched = lam.attribute(images, windows, n_steps=7, internal_batch_size=rows)
        torch.testing.assert_close(batched, one_at_a_time, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["official", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre"])
def test_convergence_delta_equals_compute_convergence_delta(photo_lr, method):
    model = tiny_sr()
    lam = LAM(model)
    attribution, delta = lam.attribute(photo_lr, (20, 20, 16), n_steps=12, method=method,
                                       return_convergence_delta=True)
    recomputed = lam.compute_convergence_delta(attribution, blur_baseline(photo_lr), photo_lr, window=(20, 20, 16))
    assert delta.shape == (1,)
    torch.testing.assert_close(delta, recomputed)


def test_analytic_rules_converge_faster_than_the_demo_scheme(photo_lr):
    lam = LAM(tiny_sr())
    gap = {}
    for method in ("official", "riemann_trapezoid", "gausslegendre"):
        attribution, delta = lam.attribute(photo_lr, (20, 20, 16), n_steps=20, method=method,
                                           return_convergence_delta=True)
        gap[method] = abs(float(delta)) / abs(float(attribution.sum()))
    assert gap["gausslegendre"] < gap["official"] / 3
    assert gap["riemann_trapezoid"] < gap["official"]


def test_demo_scheme_error_shrinks_like_one_over_steps(photo_lr):
    lam = LAM(tiny_sr())
    deltas = [abs(float(lam.attribute(photo_lr, (20, 20, 16), n_steps=n, return_convergence_delta=True)[1]))
              for n in (10, 40)]
    assert deltas[1] < deltas[0] / 2.5


def test_demo_scheme_telescopes_exactly_on_a_linear_model():
    # A linear model with the intensity detector has a constant gradient, and the demo's finite differences
    # of kernels sum to x - baseline, so completeness holds to rounding.
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.PixelShuffle(2))
    x = torch.rand(1, 2, 10, 10, dtype=torch.float64)
    model = model.double()
    attribution, delta = LAM(model).attribute(x, (4, 4, 6), detector="intensity", n_steps=8, return_convergence_delta=True)
    assert abs(float(delta)) < 1e-9 * max(1.0, abs(float(attribution.sum())))


def test_custom_detector_callable(photo_lr):
    model = tiny_sr()

    def red_mean(output: torch.Tensor, window: Window) -> torch.Tensor:
        return output[:, 0, window.top : window.top + window.height, window.left : window.left + window.width].mean((1, 2))

    attribution = LAM(model).attribute(photo_lr, (8, 8, 4), n_steps=4, detector=red_mean)
    assert attribution.abs().sum() > 0


def test_parameter_grads_and_module_modes_are_untouched(photo_lr):
    model = nn.Sequential(tiny_sr(), nn.Dropout(0.5))
    model[0][1].train()
    model.train()
    model[0][2].eval()
    modes = {name: module.training for name, module in model.named_modules()}
    model(photo_lr).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    LAM(model).attribute(photo_lr, (8, 8, 16), n_steps=4)
    assert {name: module.training for name, module in model.named_modules()} == modes
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=0, atol=0)


def test_train_mode_batch_norm_does_not_mix_path_steps(photo_lr):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.Conv2d(12, 12, 3, padding=1),
                          nn.PixelShuffle(2))
    model(torch.rand(4, 3, 24, 24))  # gives the running statistics a value
    model.train()
    lam = LAM(model)
    batched = lam.attribute(photo_lr, (8, 8, 8), n_steps=6, internal_batch_size=6)
    single = lam.attribute(photo_lr, (8, 8, 8), n_steps=6, internal_batch_size=1)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-7)
    assert model.training


def batch_norm_sr() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.Dropout(0.2),
                          nn.Conv2d(12, 12, 3, padding=1), nn.PixelShuffle(2))
    model(torch.rand(4, 3, 24, 24))  # gives the running statistics a value
    return model.train()


def scaled_by(model: nn.Module, factor: float):
    """A wrapper of the kind users write to adapt the range: its model lives in a closure."""
    return lambda x: model(x * factor) / factor


WRAPPED = batch_norm_sr()  # a module a wrapper names as a global


class Options(dict):
    """A dict with attribute access, as research code keeps its options (``opt.rgb_range``)."""

    __getattr__ = dict.__getitem__


class Runner:
    """An object whose ``__call__`` runs ``self.model``."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.options = model, Options(rgb_range=2.0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.options.rgb_range) / self.options.rgb_range


class Registry:
    """Models kept as class attributes, as a registry or a config class does."""

    model: nn.Module | None = None


class SlottedRunner:
    """A light wrapper with ``__slots__``: no ``__dict__`` to look into."""

    __slots__ = ("net",)

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0) / 2.0


@pytest.mark.parametrize("wrap", ["closure", "global", "partial", "wrapper of a wrapper", "object", "bound method",
                                  "dict", "list", "class attribute", "slots", "weak reference",
                                  "class attribute beside a module found"])
def test_a_train_mode_model_behind_a_wrapper_runs_in_eval_mode_and_keeps_its_statistics(photo_lr, wrap):
    # The last four are found only as they run (`eval_mode_of_what_runs`): they ran in training mode, their
    # dropout drawing other numbers on each call and their batch norm overwriting its running statistics.
    model = WRAPPED if wrap == "global" else batch_norm_sr()
    models = {"sr": model}
    Registry.model = model
    forward = {"closure": lambda: scaled_by(model, 2.0), "global": lambda: lambda x: WRAPPED(x * 2.0) / 2.0,
               "partial": lambda: functools.partial(lambda x, net: net(x * 2.0) / 2.0, net=model),
               "wrapper of a wrapper": lambda: scaled_by(scaled_by(model, 4.0), 0.5),
               "object": lambda: Runner(model), "bound method": lambda: Runner(model).__call__,
               "dict": lambda: lambda x: models["sr"](x * 2.0) / 2.0,
               "list": lambda: lambda x, nets=[model]: nets[0](x * 2.0) / 2.0,
               "class attribute": lambda: lambda x: Registry.model(x * 2.0) / 2.0, "slots": lambda: SlottedRunner(model),
               "weak reference": lambda: lambda x, net=weakref.ref(model): net()(x * 2.0) / 2.0,
               "class attribute beside a module found":
                   lambda: lambda x, up=nn.Upsample(scale_factor=2): Registry.model(x * 2.0) / 2.0 + 0 * up(x)}[wrap]()
    statistics = model[1].running_mean.clone()
    batched = LAM(forward).attribute(photo_lr, (8, 8, 8), n_steps=6, internal_batch_size=6)
    single = LAM(forward).attribute(photo_lr, (8, 8, 8), n_steps=6, internal_batch_size=1)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-7)
    assert torch.equal(model[1].running_mean, statistics)
    assert all(module.training for module in model.modules())
    in_eval_mode = LAM(scaled_by(batch_norm_sr().eval(), 2.0)).attribute(photo_lr, (8, 8, 8), n_steps=6)
    torch.testing.assert_close(batched, in_eval_mode, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("guard", [torch.no_grad, torch.inference_mode])
def test_works_under_no_grad_and_inference_mode(photo_lr, guard):
    model = tiny_sr()
    expected = LAM(model).attribute(photo_lr, (8, 8, 16), n_steps=4)
    with guard():
        inputs = photo_lr.clone()
        attribution = LAM(model).attribute(inputs, (8, 8, 16), n_steps=4)
    torch.testing.assert_close(attribution, expected)


def test_autocast_outside_is_switched_off(photo_lr):
    model = tiny_sr()
    expected = LAM(model).attribute(photo_lr, (8, 8, 16), n_steps=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attribution = LAM(model).attribute(photo_lr, (8, 8, 16), n_steps=4)
    assert attribution.dtype == torch.float32
    torch.testing.assert_close(attribution, expected)


def test_half_inputs_are_computed_in_float32(photo_lr):
    attribution = LAM(tiny_sr()).attribute(photo_lr.bfloat16(), (8, 8, 16), n_steps=3)
    assert attribution.dtype == torch.float32


def test_non_contiguous_inputs(photo_lr):
    model = tiny_sr()
    wide = torch.cat([photo_lr, photo_lr], dim=-1)[..., ::2]
    assert not wide.is_contiguous()
    torch.testing.assert_close(LAM(model).attribute(wide, (8, 8, 16), n_steps=3),
                               LAM(model).attribute(wide.contiguous(), (8, 8, 16), n_steps=3))


def test_flat_window_gives_zero_not_nan():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.PixelShuffle(2), nn.Hardtanh(-1e-3, 0.0), nn.ReLU())
    with pytest.warns(RuntimeWarning, match="zero at every path step"):
        attribution = LAM(model).attribute(torch.rand(1, 1, 12, 12), (4, 4, 8), n_steps=3)
    assert torch.isfinite(attribution).all() and not attribution.any()


def test_flat_pixels_inside_a_live_window_do_not_poison_the_map():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.PixelShuffle(2), nn.ReLU())
    attribution = LAM(model).attribute(torch.rand(1, 1, 12, 12), (0, 0, 20), n_steps=3)
    assert torch.isfinite(attribution).all() and attribution.any()


class Detaching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = tiny_sr(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).detach()


class Rounding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = tiny_sr(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.detach()) + 0 * self.body[0].weight.sum()


@pytest.mark.parametrize("model", [Detaching(), Rounding()], ids=["detach", "input-cut"])
def test_cut_graph_is_diagnosed(model):
    with pytest.raises(ValueError, match="does not depend on its input through autograd"):
        LAM(model).attribute(torch.rand(1, 1, 12, 12), (2, 2, 8), n_steps=2)


def test_no_grad_inside_forward_is_diagnosed():
    body = tiny_sr(1, 2)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return body(x)

    with pytest.raises(ValueError, match=r"torch.no_grad\(\)"):
        LAM(forward).attribute(torch.rand(1, 1, 12, 12), (2, 2, 8), n_steps=2)


def test_non_finite_output_is_diagnosed():
    body = tiny_sr(1, 2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        LAM(lambda x: body(x) / 0.0).attribute(torch.rand(1, 1, 12, 12), (2, 2, 8), n_steps=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": (90, 0, 16)}, r"`window` must lie inside the 96x96 SR output less 1 pixel"),
        ({"window": (0, 0, 96)}, r"`window` must lie inside"),
        ({"window": (0, 0)}, r"`window` must be \(top, left, size\)"),
        ({"window": (-1, 0, 4)}, r"top, left >= 0"),
        ({"window": (0.5, 0, 4)}, r"`window` must be"),
        ({"window": [(0, 0, 4)] * 2}, r"holds 2 windows for 1 samples"),
        ({"kernel_size": 8}, r"`kernel_size` must be a positive odd integer, got 8"),
        ({"kernel_size": -3}, r"`kernel_size` must be a positive odd integer, got -3"),
        ({"n_steps": 0}, r"`n_steps` must be an integer >= 1, got 0"),
        ({"sigma": -1.0}, r"`sigma` must be a finite number >= 0, got -1.0"),
        ({"method": "simpson"}, r"`method` must be one of official, .*got 'simpson'"),
        ({"internal_batch_size": 0}, r"`internal_batch_size` must be an integer >= 1 or None, got 0"),
        ({"detector": "edges"}, r"`detector` must be 'gradient', 'intensity' or a callable, got 'edges'"),
    ],
)
def test_bad_arguments_get_clear_errors(photo_lr, kwargs, message):
    arguments = {"window": (8, 8, 16), **kwargs}
    with pytest.raises(ValueError, match=message):
        LAM(tiny_sr()).attribute(photo_lr, arguments.pop("window"), **arguments)


def test_bad_inputs_get_clear_errors(photo_lr):
    lam = LAM(tiny_sr())
    with pytest.raises(ValueError, match=r"4-D \(N, C, H, W\) tensor, got shape \(3, 24, 24\)"):
        lam.attribute(photo_lr[0], (0, 0, 8))
    with pytest.raises(TypeError, match="floating tensor"):
        lam.attribute((photo_lr * 255).to(torch.uint8), (0, 0, 8))
    with pytest.raises(TypeError, match="`forward_func` must be a model or a callable"):
        LAM("model.pt")


def test_non_integer_scale_is_an_error():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Upsample(scale_factor=1.5))
    with pytest.raises(ValueError, match=r"same integer multiple of the input \(12x12\)"):
        LAM(model).attribute(torch.rand(1, 1, 12, 12), (0, 0, 8), n_steps=2)


def test_gradient_flows_only_to_input_and_history_is_released(photo_lr):
    model = tiny_sr()
    inputs = photo_lr.clone().requires_grad_(True)
    attribution = LAM(model).attribute(inputs, (8, 8, 16), n_steps=3)
    assert not attribution.requires_grad
    assert inputs.grad is None


def test_lam_pickles_with_its_model():
    lam = pickle.loads(pickle.dumps(LAM(tiny_sr())))
    assert lam.has_convergence_delta()


def test_no_warnings_on_a_healthy_run(photo_lr):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LAM(tiny_sr()).attribute(photo_lr, (8, 8, 16), n_steps=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_result_equals_cpu_result_and_stays_on_the_gpu(photo_lr):
    model = tiny_sr()
    expected, expected_delta = LAM(model).attribute(photo_lr, (8, 8, 16), n_steps=6, return_convergence_delta=True)
    attribution, delta = LAM(model.cuda()).attribute(photo_lr.cuda(), (8, 8, 16), n_steps=6,
                                                     return_convergence_delta=True)
    assert attribution.device.type == "cuda" and delta.device.type == "cuda"
    torch.testing.assert_close(attribution.cpu(), expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(delta.cpu(), expected_delta, rtol=1e-4, atol=1e-5)


def test_tf32_is_off_while_lam_runs_and_given_back_after():
    from lam_captum._core._context import _full_float32

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with _full_float32():
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_crop_equals_the_full_image_in_full_float32_with_tf32_on_outside(photo_lr):
    model = tiny_sr().cuda()
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(torch.backends.cudnn.allow_tf32))
    image = torch.nn.functional.interpolate(photo_lr, scale_factor=4, mode="bicubic").cuda()
    torch.backends.cudnn.allow_tf32 = True
    cropped = LAM(model).attribute(image, (200, 200, 16), n_steps=6)
    full = LAM(model).attribute(image, (200, 200, 16), n_steps=6, crop=False)
    assert torch.backends.cudnn.allow_tf32 and seen and not any(seen)
    assert float((cropped - full).abs().max()) <= 1e-5 * float(full.abs().max())


def test_inputs_and_model_on_different_devices_is_a_clear_error(photo_lr):
    with pytest.raises(ValueError, match=r"`inputs` are on cpu but the model is on meta"):
        LAM(tiny_sr().to("meta")).attribute(photo_lr, (8, 8, 16), n_steps=2)


def test_a_wrapper_decides_its_own_inputs_dtype():
    # A float64 model behind a wrapper that casts: the wrapper takes the inputs' dtype, float32 here.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2)).double()
    wrapped = lambda x: model(x.double()).float()  # noqa: E731
    attribution = LAM(wrapped).attribute(torch.rand(1, 3, 8, 8), (4, 4, 8), n_steps=3)
    assert attribution.dtype == torch.float32
