"""The core at the edges: bounded memory, degenerate maps, dtypes, numpy scalars, threads, huge inputs."""

from __future__ import annotations

import functools
import json
import math
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_sr
from torch import nn

from lam_captum import ERF, LAM, LAMSettings, SettingsError
from lam_captum import functional as LF
from lam_captum._core import _memory
from lam_captum._core._context import eval_mode
from lam_captum._core.lam import _chunks, _window_share
from lam_captum.explain import explain, explain_windows
from lam_captum.functional import PathSchedule
from lam_captum.video import explain_clip

STEPS = 4


@pytest.fixture
def model() -> nn.Module:
    return tiny_sr(channels=1, scale=2, width=8)


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(2)
    return torch.rand(2, 1, 12, 12)


# Memory bounded by internal_batch_size, not n_steps


@pytest.mark.parametrize("method", LF.INTEGRATION_METHODS)
def test_any_run_of_path_steps_has_the_whole_paths_kernels_bit_for_bit(method):
    schedule = LF.path_schedule(1.2, 13, 9, method)
    whole = LF.path_kernels(1.2, 13, 9, method)
    for start, stop in [(0, 1), (0, 5), (5, 13), (12, 13), (0, 13)]:
        part = schedule.kernels(start, stop)
        for ours, reference in zip(part, whole):
            assert torch.equal(ours, reference[start:stop])


def test_a_run_outside_the_path_is_refused():
    with pytest.raises(ValueError, match="steps 3 to 9 are not a run of the path's 8 steps"):
        LF.path_schedule(1.2, 8).kernels(3, 9)


def test_kernels_are_built_per_chunk_never_for_the_whole_path(monkeypatch, model, images):
    built = []
    build = PathSchedule.kernels

    def spy(self, start=0, stop=None):
        kernels = build(self, start, stop)
        built.append(kernels.points.shape[0])
        return kernels

    monkeypatch.setattr(PathSchedule, "kernels", spy)
    LAM(model).attribute(images, (2, 2, 8), n_steps=200, internal_batch_size=3)
    assert max(built) <= 3
    assert sum(built) == 2 * 200


@pytest.mark.parametrize(("samples", "steps", "rows"), [(1, 7, 3), (3, 5, 4), (2, 6, 6), (2, 3, 100), (4, 1, 3)])
def test_chunks_cover_every_sample_step_once_within_the_row_budget(samples, steps, rows):
    seen = []
    for chunk in _chunks(samples, steps, rows):
        assert sum(len(run) for _, run in chunk) <= rows
        seen += [(sample, step) for sample, run in chunk for step in run]
    assert seen == [(sample, step) for sample in range(samples) for step in range(steps)]


def test_huge_step_counts_are_refused_before_any_work():
    with pytest.raises(SettingsError, match=r"`n_steps` must be at most 10000, got 100000000"):
        LAM(nn.Identity()).attribute(torch.rand(1, 1, 8, 8), (0, 0, 4), n_steps=100_000_000)


def test_sigma_zero_is_refused_with_a_clear_error(model, images):
    with pytest.raises(SettingsError, match=r"`sigma` must be > 0: at sigma 0 the baseline is the input itself"):
        LAM(model).attribute(images, (2, 2, 8), sigma=0)


# An all-zero map has no Diffusion Index


def test_all_zero_map_has_nan_gini_and_di_with_a_warning():
    maps = torch.stack([torch.zeros(6, 6), torch.rand(6, 6)])
    undefined = r"map\(s\) \[0\] are all zero, so the Diffusion Index is undefined"
    with pytest.warns(RuntimeWarning, match=undefined) as caught:
        index = LF.diffusion_index(maps)
    assert {w.filename for w in caught.list} == {__file__}
    with pytest.warns(RuntimeWarning, match=r"the map is all zero, so the Gini coefficient is undefined"):
        coefficient = LF.gini(torch.zeros(6, 6))
    assert math.isnan(float(index[0])) and math.isnan(float(coefficient))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(index[1]) == pytest.approx(float(LF.diffusion_index(maps[1])))


def test_a_uniform_nonzero_map_is_still_perfectly_diffuse():
    assert float(LF.diffusion_index(torch.full((5, 5), 0.3))) == pytest.approx(100.0)


def dead_model() -> nn.Module:
    """A model whose output is flat in every window: LAM's attribution is all zero."""
    return nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2), nn.Hardtanh(-1e-3, 0.0), nn.ReLU())


def test_explain_of_an_all_zero_map_reports_no_di_and_saves_null(tmp_path):
    with pytest.warns(RuntimeWarning) as record:
        result = explain(dead_model(), torch.rand(3, 12, 12), (2, 2, 8), n_steps=2)
    messages = [str(warning.message) for warning in record]
    assert any("zero at every path step" in message for message in messages)
    assert any("no Diffusion Index (NaN)" in message for message in messages)
    assert math.isnan(result.di) and math.isnan(result.gini)
    result.save(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["di"] is None and summary["gini"] is None
    assert (tmp_path / "figure.png").is_file() and (tmp_path / "kde_blend.png").is_file()


# Dtypes


def test_float64_inputs_are_computed_in_the_models_float32(model, images):
    attribution, delta = LAM(model).attribute(images.double(), (2, 2, 8), n_steps=STEPS, return_convergence_delta=True)
    expected, expected_delta = LAM(model).attribute(images, (2, 2, 8), n_steps=STEPS, return_convergence_delta=True)
    assert attribution.dtype == torch.float32
    torch.testing.assert_close(attribution, expected, rtol=0, atol=0)
    torch.testing.assert_close(delta, expected_delta, rtol=0, atol=0)


def test_float32_inputs_to_a_float64_model_are_computed_in_float64(model, images):
    attribution = LAM(model.double()).attribute(images, (2, 2, 8), n_steps=STEPS)
    assert attribution.dtype == torch.float64


def test_a_function_without_parameters_computes_in_the_inputs_dtype(model, images):
    double = model.double()
    attribution = LAM(lambda x: double(x)).attribute(images.double(), (2, 2, 8), n_steps=STEPS)
    assert attribution.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64, "float32", np.float32])
def test_a_dtype_that_is_not_a_floating_torch_dtype_is_a_clear_error(model, images, dtype):
    with pytest.raises(TypeError, match=r"`dtype` must be a floating torch dtype such as torch.float32, got"):
        LAM(model).attribute(images, (2, 2, 8), n_steps=STEPS, dtype=dtype)


@pytest.mark.parametrize("crop", [False, "auto"])
@pytest.mark.parametrize("windows", [1, 2])
def test_a_dtype_the_model_cannot_take_is_named(model, images, crop, windows):
    lam = LAM(model)
    with pytest.raises(TypeError, match=r"the model failed on torch.float64 inputs, but its parameters are "
                                        r"torch.float32: leave `dtype` unset"):
        if windows == 1:
            lam.attribute(images, (2, 2, 8), n_steps=STEPS, dtype=torch.float64, crop=crop)
        else:
            lam.attribute_windows(images[:1], [(2, 2, 8), (8, 8, 8)], n_steps=STEPS, dtype=torch.float64, crop=crop)


# numpy scalars wherever Python numbers are accepted


def test_numpy_scalars_and_arrays_give_the_same_attribution_as_python_numbers(model, images):
    expected = LAM(model).attribute(images, [(2, 2, 8), (4, 0, 6)], n_steps=STEPS, sigma=1.5, kernel_size=5,
                                    internal_batch_size=3)
    attribution = LAM(model).attribute(images, np.array([[2, 2, 8], [4, 0, 6]], dtype=np.int32),
                                       n_steps=np.int64(STEPS), sigma=np.float64(1.5), kernel_size=np.int16(5),
                                       internal_batch_size=np.uint8(3))
    torch.testing.assert_close(attribution, expected, rtol=0, atol=0)
    single = LAM(model).attribute(images, (np.int64(2), np.int32(2), np.int64(8)), n_steps=STEPS)
    torch.testing.assert_close(single, LAM(model).attribute(images, (2, 2, 8), n_steps=STEPS), rtol=0, atol=0)


def test_numpy_float32_sigma_is_accepted():
    assert LAMSettings(sigma=np.float32(1.5)).sigma == 1.5


def test_functional_helpers_take_numpy_scalars():
    image = torch.rand(1, 1, 10, 10, dtype=torch.float64)
    torch.testing.assert_close(LF.blur_baseline(image, np.float32(1.0), np.int64(5)), LF.blur_baseline(image, 1.0, 5))
    for ours, reference in zip(LF.path_kernels(np.float64(1.2), np.int64(6), np.int32(7)), LF.path_kernels(1.2, 6, 7)):
        assert torch.equal(ours, reference)
    assert LF.gaussian_kernel(np.float32(0.5), np.int64(3)).shape == (3, 3)


def test_explain_takes_a_numpy_window_and_numpy_numbers():
    model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2))
    result = explain(model, torch.rand(3, 12, 12), np.array([2, 2, 8]), n_steps=np.int64(2), alpha=np.float32(0.25))
    assert result.window == LF.Window(2, 2, 8, 8) and result.alpha == 0.25


def test_windows_must_divide_the_samples():
    assert [w.top for w in LF.as_windows([(0, 0, 4), (1, 0, 4)], 4)] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match=r"`window` holds 2 windows for 3 samples; give one, one per sample, or one "
                                         r"per run of consecutive samples"):
        LF.as_windows([(0, 0, 4), (1, 0, 4)], 3)


# Threads


class Rendezvous(nn.Module):
    """A model whose first forward pass in each thread waits for a scripted order of events."""

    def __init__(self, script: dict[str, tuple[threading.Event, threading.Event | None]]) -> None:
        super().__init__()
        self.body = tiny_sr(channels=1, scale=2, width=8)
        self.dropout = nn.Dropout(0.5)
        self.script = script
        self.arrived: set[str] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = threading.current_thread().name
        if name in self.script and name not in self.arrived:
            self.arrived.add(name)
            inside, wait_for = self.script[name]
            inside.set()
            if wait_for is not None:
                assert wait_for.wait(timeout=60)
        return self.dropout(self.body(x))


def test_two_threads_on_one_train_mode_model_leave_it_in_train_mode(images):
    # The first thread enters, the second enters while the first holds the model, the first leaves while the
    # second still runs: exactly the order in which saving and restoring modes per call ends in eval mode.
    first_inside, second_inside, first_done = threading.Event(), threading.Event(), threading.Event()
    model = Rendezvous({"first": (first_inside, second_inside), "second": (second_inside, first_done)}).train()
    model.body[2].eval()
    modes = {name: module.training for name, module in model.named_modules()}
    results, errors = {}, []

    def run(name: str, done: threading.Event | None) -> None:
        try:
            results[name] = LAM(model).attribute(images, (2, 2, 8), n_steps=STEPS)
        except Exception as error:  # noqa: BLE001  (reported by the main thread)
            errors.append(error)
        finally:
            if done is not None:
                done.set()

    first = threading.Thread(target=run, args=("first", first_done), name="first")
    second = threading.Thread(target=run, args=("second", None), name="second")
    first.start()
    assert first_inside.wait(timeout=60)
    second.start()
    first.join(timeout=120)
    second.join(timeout=120)
    assert not errors
    assert {name: module.training for name, module in model.named_modules()} == modes
    torch.testing.assert_close(results["first"], results["second"])


def test_many_threads_give_the_sequential_result_and_the_models_modes_back(images):
    model = nn.Sequential(tiny_sr(channels=1, scale=2, width=8), nn.Dropout(0.5)).train()
    expected = LAM(model).attribute(images, (2, 2, 8), n_steps=STEPS)
    results = [None] * 4
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, LAM(model).attribute(
        images, (2, 2, 8), n_steps=STEPS, internal_batch_size=i + 1))) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(module.training for module in model.modules())
    for result in results:
        torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-7)


def test_holding_a_submodule_while_another_call_holds_the_whole_model_restores_both():
    model = nn.Sequential(nn.Sequential(nn.Dropout()), nn.Dropout()).train()
    outer = eval_mode(model)
    inner = eval_mode(model[0])
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)
    assert not model[0].training and model[1].training  # the submodule is still held
    inner.__exit__(None, None, None)
    assert all(module.training for module in model.modules())


# Inputs too large for the memory that is free


def test_an_input_too_large_for_free_memory_warns_with_the_estimate_before_the_run(monkeypatch, images):
    calls = []
    body = tiny_sr(channels=1, scale=2, width=8)

    class FailsAfterTheProbe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(x.shape[0])
            if len(calls) > 1:
                raise MemoryError("the run itself")
            return self.body(x)

    with torch.enable_grad():
        one_step = _memory.estimate_call_memory(body, images, 1)
    monkeypatch.setattr(_memory, "available_memory", lambda device: int(1.5 * one_step))
    with pytest.warns(RuntimeWarning, match=r"LAM on 12x12 inputs needs about .* MB per model call \(3 path step\(s\) "
                                            r"of about .* MB, .*\), but only .* MB of cpu memory is free.*"
                                            r"lower `internal_batch_size` to 1 \(now 3\)"):
        with pytest.raises(MemoryError, match="the run itself"):
            LAM(FailsAfterTheProbe()).attribute(images, (2, 2, 8), n_steps=STEPS, internal_batch_size=3, crop=False)


def test_an_input_where_even_one_step_does_not_fit_advises_a_crop(monkeypatch, model, images):
    monkeypatch.setattr(_memory, "available_memory", lambda device: 1_000)
    with pytest.warns(RuntimeWarning, match=r"explain a crop of the image \(even one path step does not fit\)"):
        LAM(model).attribute(images, (2, 2, 8), n_steps=1)


def test_many_windows_too_large_for_free_memory_warn_before_the_run(monkeypatch, model, images):
    with torch.enable_grad():
        one_step = _memory.estimate_call_memory(model, images[:1], 1)
    monkeypatch.setattr(_memory, "available_memory", lambda device: int(1.5 * one_step))
    with pytest.warns(RuntimeWarning, match=r"lower `internal_batch_size` to 1 \(now 3\)") as caught:
        LAM(model).attribute_windows(images[:1], [(0, 0, 8), (12, 12, 8)], n_steps=STEPS, internal_batch_size=3,
                                     crop=False)
    assert [w.filename for w in caught.list] == [__file__]  # the user's call, not a frame inside the package


def test_many_windows_where_even_one_step_of_the_whole_image_does_not_fit_advise_a_crop(monkeypatch, model, images):
    monkeypatch.setattr(_memory, "available_memory", lambda device: 1_000)
    with pytest.warns(RuntimeWarning, match=r"LAM on 12x12 inputs .*\(1 path step\(s\).*even one path step") as caught:
        LAM(model).attribute_windows(images[:1], [(0, 0, 8), (12, 12, 8)], n_steps=1)
    assert {w.filename for w in caught.list} == {__file__}


def test_the_gpu_budget_counts_each_extra_window_at_half_a_step_and_the_cpu_at_none():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert _window_share(cpu, 16) == 1.0
    assert _window_share(gpu, 1) == 1.0 and _window_share(gpu, 16) == 8.5


def test_windows_whose_shared_step_does_not_fit_are_advised_to_go_fewer_at_once(monkeypatch, model, images):
    with torch.enable_grad():
        one_step = _memory.estimate_call_memory(model, images[:1], 1)
    monkeypatch.setattr(_memory, "available_memory", lambda device: 2 * one_step)
    with pytest.warns(RuntimeWarning, match=r"pass fewer windows at once"):
        _memory.warn_if_too_large(model, images[:1], 1, share=_window_share(torch.device("cuda"), 16),
                                  step_bytes=one_step)


@pytest.mark.parametrize("crop", [False, "auto"])
@pytest.mark.parametrize(("windows", "stacked"), [(1, False), (3, False), (3, True)])
def test_one_probe_pass_per_call_sizes_the_chunks_and_checks_the_memory(monkeypatch, model, windows, stacked, crop):
    from lam_captum._core import _region, _windows

    for module in (_region, _windows):  # on a GPU every window's crop runs its own calls
        monkeypatch.setattr(module, "stacks_crops", lambda device: stacked)
    probes = []
    measure = _memory._probe_pass

    def counted(forward_func, inputs):
        probes.append(inputs.shape)
        return measure(forward_func, inputs)

    monkeypatch.setattr(_memory, "_probe_pass", counted)
    lam = LAM(model)
    image = torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(3))
    if windows == 1:
        lam.attribute(image, (40, 40, 8), n_steps=STEPS, crop=crop)
    else:
        lam.attribute_windows(image, [(4, 4, 8), (40, 40, 8), (80, 4, 8)], n_steps=STEPS, crop=crop)
    assert len(probes) == 1
    # The probe is per call: the next call measures again.
    lam.attribute(image, (40, 40, 8), n_steps=STEPS, crop=crop)
    assert len(probes) == 2


def test_a_warning_from_inside_a_crop_points_at_the_users_call(model):
    flat = nn.Sequential(model, nn.Hardtanh(5.0, 6.0))  # the output is clamped flat: zero gradients everywhere
    with pytest.warns(RuntimeWarning, match="zero at every path step") as caught:
        LAM(flat).attribute(torch.rand(1, 1, 24, 24), (16, 16, 8), n_steps=STEPS, detector="intensity")
    assert {w.filename for w in caught.list} == {__file__}


def test_the_memory_estimate_scales_with_rows_and_pixels(model):
    with torch.enable_grad():
        one = _memory.estimate_call_memory(model, torch.rand(1, 1, 32, 32), 1)
        assert _memory.estimate_call_memory(model, torch.rand(1, 1, 32, 32), 3) == 3 * one
        assert _memory.estimate_call_memory(model, torch.rand(1, 1, 64, 64), 1) == pytest.approx(4 * one, rel=1e-6)


def test_the_estimate_counts_activations_not_weights():
    big_weights = nn.Conv2d(1, 1, 31, padding=15)  # 961 weights saved for the backward pass, one activation
    with torch.enable_grad():
        per_pixel = _memory.bytes_per_pixel(big_weights, torch.rand(1, 1, 32, 32))
    assert per_pixel == pytest.approx(2 * 4)  # the saved input and the output, 4 bytes each per pixel


def test_a_model_the_probe_cannot_run_gives_no_estimate_and_no_warning(monkeypatch, images):
    monkeypatch.setattr(_memory, "available_memory", lambda device: 1)
    with torch.enable_grad():
        assert _memory.estimate_call_memory(lambda x: (x, x), images, 2) is None


def test_free_memory_is_known_on_this_machines_cpu():
    assert _memory.available_memory(torch.device("cpu")) > 0
    assert _memory.available_memory(torch.device("meta")) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_memory_the_caching_allocator_keeps_after_a_call_counts_as_free():
    device = torch.device("cuda")
    before = _memory.available_memory(device)
    size = 1 << 30
    block = torch.empty(size, dtype=torch.uint8, device=device)
    del block  # freed to PyTorch's cache, not to the driver
    assert torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device) >= size
    assert _memory.available_memory(device) >= before - (64 << 20)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_estimate_is_near_the_real_peak_on_a_gpu():
    model = tiny_sr(channels=3, scale=4, width=32).cuda()
    inputs = torch.rand(1, 3, 128, 128, device="cuda")
    LAM(model).attribute(inputs[..., :16, :16], (0, 0, 8), n_steps=1)
    with torch.enable_grad():
        estimate = _memory.estimate_call_memory(model, inputs, 2)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    LAM(model).attribute(inputs, (0, 0, 8), n_steps=2, internal_batch_size=2)
    peak = torch.cuda.max_memory_allocated() - before
    assert 0.5 * peak <= estimate <= 2 * peak


def write_cgroup(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def test_a_cgroup_v2_limit_counts_less_the_usage_page_cache_cannot_give_back(tmp_path):
    # A container of 8 GiB using 3 GiB, 1 GiB of it inactive page cache: 6 GiB left.
    gib = 1 << 30
    write_cgroup(tmp_path, {"memory.max": f"{8 * gib}\n", "memory.current": f"{3 * gib}\n",
                            "memory.stat": f"anon {2 * gib}\ninactive_file {gib}\nactive_file 0\n"})
    assert _memory.cgroup_memory_left("0::/\n", tmp_path) == 6 * gib


def test_the_tightest_cgroup_on_the_path_to_the_root_counts_and_max_is_no_limit(tmp_path):
    gib = 1 << 30
    write_cgroup(tmp_path, {"memory.max": "max\n", "memory.current": f"{5 * gib}\n"})
    write_cgroup(tmp_path / "jobs", {"memory.max": f"{4 * gib}\n", "memory.current": f"{3 * gib}\n"})
    write_cgroup(tmp_path / "jobs" / "lam", {"memory.max": "max\n", "memory.current": f"{3 * gib}\n"})
    assert _memory.cgroup_memory_left("0::/jobs/lam\n", tmp_path) == gib
    assert _memory.cgroup_memory_left("0::/\n", tmp_path) is None


def test_a_cgroup_v1_memory_controller_counts_and_its_huge_default_is_no_limit(tmp_path):
    gib = 1 << 30
    memory = tmp_path / "memory"
    write_cgroup(memory, {"memory.limit_in_bytes": "9223372036854771712\n", "memory.usage_in_bytes": f"{gib}\n"})
    write_cgroup(memory / "job", {"memory.limit_in_bytes": f"{7 * gib}\n", "memory.usage_in_bytes": f"{3 * gib}\n",
                                  "memory.stat": f"cache {gib}\ntotal_inactive_file {gib}\n"})
    # This machine's layout: cgroup v1 controllers beside an empty v2 hierarchy.
    cgroups = "9:name=systemd:/\n4:memory:/job\n1:cpu:/\n0::/\n"
    assert _memory.cgroup_memory_left(cgroups, tmp_path) == 5 * gib
    assert _memory.cgroup_memory_left("4:memory:/\n0::/\n", tmp_path) is None


def test_unreadable_or_malformed_cgroup_files_mean_no_limit_rather_than_an_error(tmp_path):
    write_cgroup(tmp_path / "job", {"memory.max": "lots\n", "memory.current": "1\n"})
    assert _memory.cgroup_memory_left("0::/job\nnot a cgroup line\n", tmp_path) is None
    write_cgroup(tmp_path / "other", {"memory.max": "100\n", "memory.current": "40\n", "memory.stat": "odd\n"})
    assert _memory.cgroup_memory_left("0::/other\n", tmp_path) == 60
    assert _memory.cgroup_memory_left("0::/missing\n", tmp_path) is None


def test_free_memory_on_a_cpu_is_no_more_than_the_cgroup_allows(monkeypatch):
    monkeypatch.setattr(_memory, "cgroup_memory_left", lambda cgroups, root: 1 << 20)
    assert _memory.available_memory(torch.device("cpu")) == 1 << 20
    monkeypatch.setattr(_memory, "cgroup_memory_left", lambda cgroups, root: None)
    assert _memory.available_memory(torch.device("cpu")) > 1 << 20


# Inputs a researcher passes as they come: uint8 pixels, numpy arrays and scalars, tiny blurs, dead maps


def test_explain_and_explain_clip_refuse_uint8_pixels_as_attribute_does(model):
    pixels = torch.randint(0, 256, (1, 12, 12), dtype=torch.uint8)
    with pytest.raises(TypeError, match=r"`lr` must be a floating tensor .*got torch.uint8"):
        explain(model, pixels, (4, 4, 8), n_steps=STEPS)
    with pytest.raises(TypeError, match=r"`clip` must be a floating tensor .*got torch.uint8"):
        explain_clip(model, pixels[None].expand(3, -1, -1, -1), (4, 4, 8), n_steps=STEPS)


def test_explain_names_dtype_when_the_model_cannot_take_it(model, images):
    with pytest.raises(TypeError, match=r"the model failed on torch.float64 inputs, but its parameters are "
                                        r"torch.float32: leave `dtype` unset"):
        explain(model, images[0], (4, 4, 8), n_steps=STEPS, dtype=torch.float64)


@pytest.mark.parametrize(("values", "field"), [({"kernel_size": 1}, "kernel_size"), ({"sigma": 0.1}, "sigma"),
                                               ({"sigma": 0.3, "kernel_size": 1}, "kernel_size")])
def test_a_blur_that_leaves_the_image_as_it_is_is_refused(values, field, model, images):
    with pytest.raises(SettingsError, match="every attribution is 0") as caught:
        LAMSettings(**values)
    assert caught.value.field == field
    with pytest.raises(ValueError, match="every attribution is 0"):
        LAM(model).attribute(images, (4, 4, 8), n_steps=STEPS, **values)


def test_the_smallest_blur_that_moves_float32_is_accepted(model, images):
    attribution = LAM(model).attribute(images, (4, 4, 8), n_steps=STEPS, sigma=0.2)
    assert attribution.abs().max() > 0


def test_a_path_that_never_moves_the_input_is_explained(model):
    # An all-black image blurs to itself: the gradients are not zero, the path's derivatives are.
    black = torch.zeros(1, 1, 12, 12)
    with pytest.warns(RuntimeWarning, match=r"sample\(s\) \[0\] is all zero although the input gradients are not"):
        attribution = LAM(model).attribute(black, (4, 4, 8), n_steps=STEPS)
    assert not attribution.any()
    with pytest.warns(RuntimeWarning, match=r"window\(s\) \[0, 1\] is all zero although"):
        LAM(model).attribute_windows(black, [(4, 4, 8), (8, 8, 8)], n_steps=STEPS)


def test_a_flat_image_is_said_to_give_rounding_noise_and_one_grey_level_of_detail_is_not(model):
    # A flat grey image blurs to itself within float32 rounding: its map is noise, not an all-zero map.
    flat = torch.full((2, 1, 12, 12), 0.5)
    flat[1, 0, 6, 6] += 1 / 255
    with pytest.warns(RuntimeWarning, match=r"barely changes the input of sample\(s\) \[0\] \(its largest change is "
                                            r"\de-0[5-8] of the image's largest value\): the image is flat") as caught:
        attribution = LAM(model).attribute(flat, (4, 4, 8), n_steps=STEPS)
    assert len([w for w in caught if "barely" in str(w.message)]) == 1
    assert 0 < attribution[0].abs().max() < 1e-6 * attribution[1].abs().max()
    with pytest.warns(RuntimeWarning, match=r"barely changes the input of sample\(s\) \[0\]"):
        LAM(model).attribute_windows(flat[:1], [(4, 4, 8), (8, 8, 8)], n_steps=STEPS)
    with pytest.warns(RuntimeWarning, match=r"barely changes the input of sample\(s\) \[0\]"):
        explain(model, flat[0], (4, 4, 8), n_steps=STEPS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LAM(model).attribute(flat[1:], (4, 4, 8), n_steps=STEPS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LAM(model).attribute(torch.zeros(1, 1, 12, 12), (4, 4, 8), n_steps=STEPS)
    assert [w for w in caught if "all zero although" in str(w.message)]
    assert not [w for w in caught if "barely" in str(w.message)]
    # float64 keeps detail float32 rounds away: 1000 plus a little detail is no flat image there.
    offset = 1000 + 1e-3 * torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LAM(model.double()).attribute(offset, (4, 4, 8), n_steps=STEPS)
    with pytest.warns(RuntimeWarning, match="barely changes"):
        LAM(model.double()).attribute(torch.full((1, 1, 12, 12), 1000.0, dtype=torch.float64), (4, 4, 8),
                                      n_steps=STEPS)


def test_a_dead_maps_area_is_zero_and_null_in_the_summary(tmp_path):
    assert int(LF.attribution_area(torch.zeros(8, 8))) == 0
    assert LF.attribution_area(torch.stack([torch.zeros(4, 4), torch.eye(4)])).tolist() == [0, 2]
    with pytest.raises(ValueError, match="must be finite"):
        LF.attribution_area(torch.tensor([[1.0, float("nan")]]))

    torch.manual_seed(0)
    saturated = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2), nn.Hardtanh(5.0, 6.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = explain(saturated, torch.rand(3, 16, 16), (4, 4, 8), n_steps=STEPS)
        assert result.area is None
        result.save(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["di"] is None and summary["area_50"] is None


def test_map_scores_take_numpy_maps_and_refuse_empty_ones():
    heat = np.random.default_rng(0).random((8, 8))
    assert float(LF.diffusion_index(heat)) == pytest.approx(float(LF.diffusion_index(torch.from_numpy(heat))))
    assert int(LF.attribution_area(heat)) == int(LF.attribution_area(torch.from_numpy(heat)))
    for score in (LF.diffusion_index, LF.gini, LF.attribution_area):
        with pytest.raises(ValueError, match=r"at least one pixel, got shape \(0, 0\)"):
            score(torch.zeros(0, 0))
    with pytest.raises(TypeError, match="`values` must be a tensor .*got list"):
        LF.gini([[0.0, 1.0]])


def test_detectors_take_a_window_as_a_tuple(model, images):
    output = model(images)
    assert torch.equal(LF.gradient_detector(output, (2, 2, 8)), LF.gradient_detector(output, LF.Window(2, 2, 8, 8)))
    assert torch.equal(LF.intensity_detector(output, (2, 2, 4, 6)),
                       LF.intensity_detector(output, LF.Window(2, 2, 4, 6)))


def test_windows_come_as_numpy_rows_and_strings_are_named(model, images):
    lam = LAM(model)
    rows = np.array([[4, 4, 8], [0, 8, 8]])
    together = lam.attribute_windows(images[:1], rows, n_steps=STEPS)
    assert torch.equal(together, lam.attribute_windows(images[:1], [(4, 4, 8), (0, 8, 8)], n_steps=STEPS))
    with pytest.raises(ValueError, match=r"`window` must be \(top, left, size\) .*got '1,2,3'"):
        lam.attribute(images, "1,2,3", n_steps=STEPS)
    with pytest.raises(ValueError, match=r"for one window write \[window\]\), got \(4, 4, 8\)"):
        explain_windows(model, images[0], (4, 4, 8), n_steps=STEPS)


def test_attribute_windows_names_a_clip_it_cannot_take(model):
    clip_model = lambda clip: model(clip.flatten(0, 1)).unflatten(0, clip.shape[:2])  # noqa: E731
    with pytest.raises(ValueError, match=r"`inputs` must be one image, shape \(1, C, H, W\), got \(1, 3, 1, 12, 12\)"):
        LAM(clip_model).attribute_windows(torch.rand(1, 3, 1, 12, 12), [(4, 4, 8), (0, 0, 8)], n_steps=STEPS)


def test_erf_computes_in_the_models_dtype_and_takes_numpy_positions(model, images):
    erf = ERF(model)
    wide = erf.attribute(images.double(), (np.int64(6), np.int64(7)))
    assert wide.dtype == torch.float32
    assert torch.equal(wide, erf.attribute(images, (6, 7)))


class OneImageAtATime(nn.Module):
    """A model written for one image per call."""

    def __init__(self) -> None:
        super().__init__()
        self.model = tiny_sr(channels=1, scale=2, width=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[0] == 1, "one image at a time"
        return self.model(x)


def test_a_model_that_takes_one_image_at_a_time_is_told_to_use_internal_batch_size_1(images):
    model = OneImageAtATime()
    with pytest.raises(ValueError, match=r"fails on a batch of 4 path steps \(AssertionError: one image at a time\) "
                                         r"but runs on one: pass internal_batch_size=1"):
        LAM(model).attribute(images[:1], (4, 4, 8), n_steps=STEPS, internal_batch_size=4)
    one = LAM(model).attribute(images[:1], (4, 4, 8), n_steps=STEPS, internal_batch_size=1)
    torch.testing.assert_close(one, LAM(model.model).attribute(images[:1], (4, 4, 8), n_steps=STEPS))
    with pytest.raises(ValueError, match="but runs on one: pass internal_batch_size=1"):
        LAM(model).attribute_windows(images[:1], [(4, 4, 8), (8, 8, 8)], n_steps=STEPS, internal_batch_size=4)


def test_explain_takes_a_batched_hr_of_one_and_refuses_uint8_pixels(model, images):
    lr = images[0]
    hr = torch.rand(1, 1, 24, 24)
    assert torch.equal(explain(model, lr, (4, 4, 8), n_steps=2, hr=hr).hr, hr[0])
    with pytest.raises(TypeError, match=r"`hr` must be a floating tensor .*got torch.uint8"):
        explain(model, lr, (4, 4, 8), n_steps=2, hr=(hr * 255).to(torch.uint8))


class InPlaceOnInput(nn.Module):
    """A model that writes into its input: autograd refuses it on any batch."""

    def __init__(self) -> None:
        super().__init__()
        self.model = tiny_sr(channels=1, scale=2, width=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.mul_(1.0))


def test_a_model_that_fails_on_one_step_too_gets_its_own_error_not_the_batch_advice(images):
    with pytest.raises(RuntimeError, match="in-place operation") as caught:
        LAM(InPlaceOnInput()).attribute(images[:1], (4, 4, 8), n_steps=STEPS, internal_batch_size=4, crop=False)
    assert "internal_batch_size" not in str(caught.value)


def test_a_detector_autograd_cannot_differentiate_is_refused_naming_it(model, images):
    def count_bright(output, window):
        top, left, height, width = window
        return (output[..., top : top + height, left : left + width] > 0.5).flatten(1).float().sum(dim=1)

    with pytest.raises(ValueError, match="`detector` must be differentiable: its value does not depend on the model's "
                                         "output through autograd"):
        LAM(model).attribute(images, (4, 4, 8), n_steps=STEPS, detector=count_bright)
    with pytest.raises(ValueError, match="`detector` must be differentiable"):
        LAM(model).attribute_windows(images[:1], [(4, 4, 8), (0, 0, 4)], n_steps=STEPS, detector=count_bright)

    learned = nn.Conv2d(1, 1, 3)  # its parameters give the value a graph, but not one back to the output

    def learned_on_detached(output, window):
        top, left, height, width = window
        return learned(output.detach()[..., top : top + height, left : left + width]).flatten(1).mean(dim=1)

    for crop in ("auto", False):
        with pytest.raises(ValueError, match="`detector` must be differentiable"):
            LAM(model).attribute(images, (4, 4, 8), n_steps=STEPS, detector=learned_on_detached, crop=crop)
    with pytest.raises(ValueError, match="`detector` must be differentiable"):
        LAM(model).attribute_windows(images[:1], [(4, 4, 8), (0, 0, 4)], n_steps=STEPS, detector=learned_on_detached)


def test_an_empty_batch_is_refused_naming_inputs(model, images):
    with pytest.raises(ValueError, match=r"`inputs` holds no pixels: shape \(0, 1, 12, 12\)"):
        LAM(model).attribute(images[:0], (4, 4, 8), n_steps=STEPS)


@pytest.mark.parametrize("compiled", ["torch.compile", "Module.compile", "a compiled forward", "a compiled function"])
def test_a_compiled_model_gives_the_eager_models_numbers_with_crops_and_many_windows(compiled):
    # Its compiled backward cannot run twice on one forward pass (torch raised "compiled with non-empty donated
    # buffers" in the crop's reference pass and for K windows); LAM runs it eagerly. aot_eager compiles the
    # backward as inductor does, without a C compiler.
    model = tiny_sr(scale=2)
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    windows = [(40, 40, 8), (8, 8, 8)]
    expected = LAM(model).attribute_windows(image, windows, n_steps=3, crop=False)
    model = tiny_sr(scale=2)
    if compiled == "torch.compile":
        model = torch.compile(model, backend="aot_eager")
    elif compiled == "Module.compile":
        model.compile(backend="aot_eager")
    elif compiled == "a compiled forward":
        model.forward = torch.compile(model.forward, backend="aot_eager")
    else:
        model = torch.compile(lambda x, net=model: net(x), backend="aot_eager")
    lam = LAM(model)
    assert torch.equal(lam.attribute(image, windows[0], n_steps=3), expected[:1])
    assert torch.equal(lam.attribute_windows(image, windows, n_steps=3), expected)
    assert torch.equal(ERF(model).attribute(image, (44, 44)), ERF(tiny_sr(scale=2)).attribute(image, (44, 44)))


def test_a_call_imports_no_compiler_where_nothing_was_compiled():
    # torch.compiler's stance imports torch._dynamo: a second of a process's first call, for nothing.
    code = ("import sys, torch; from lam_captum import LAM; from lam_captum.models import build_model; "
            "LAM(build_model('default')).attribute(torch.rand(1, 3, 32, 32), (56, 56, 8), n_steps=2); "
            "sys.exit(int('torch._dynamo' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=120).returncode == 0


def frozen_script(model: nn.Module) -> nn.Module:
    return torch.jit.freeze(torch.jit.script(model.eval()))


def exported(model: nn.Module) -> nn.Module:
    # Any batch and size: LAM runs chunks of path steps and crops.
    sides = {0: torch.export.Dim("rows", min=1, max=512), 2: torch.export.Dim("height", min=4, max=256),
             3: torch.export.Dim("width", min=4, max=256)}
    return torch.export.export(model.eval(), (torch.rand(2, 3, 24, 24),), dynamic_shapes={"input": sides}).module()


@pytest.mark.parametrize("shipped", [frozen_script, exported], ids=["torch.jit.freeze", "torch.export"])
def test_a_model_shipped_frozen_or_exported_gives_the_eager_models_numbers(shipped):
    # A frozen TorchScript module has no mode attribute ('training'), an exported one refuses eval(): both
    # raised from LAM's switch to eval mode, though autograd runs through them.
    model = tiny_sr(scale=2)
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    expected = LAM(model).attribute_windows(image, [(40, 40, 8), (8, 8, 8)], n_steps=3, crop=False)
    lam = LAM(shipped(model))
    assert_close = functools.partial(torch.testing.assert_close, rtol=0, atol=1e-6 * float(expected.abs().max()))
    assert_close(lam.attribute(image, (40, 40, 8), n_steps=3), expected[:1])
    assert_close(lam.attribute_windows(image, [(40, 40, 8), (8, 8, 8)], n_steps=3), expected)
    assert explain(lam.forward_func, image[0], (40, 40, 8), n_steps=3).di > 0


class WithAuxiliaryOutput(nn.Module):
    """Returns the SR image and the features, as models trained with an auxiliary loss do."""

    def __init__(self) -> None:
        super().__init__()
        self.body = tiny_sr(scale=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.body(x), x


def test_a_model_of_several_outputs_is_told_how_to_wrap_it_and_its_inputs_are_the_path_batch():
    image = torch.rand(1, 3, 24, 24)
    said = (r"got tuple for a batch of 6 path images of \(3, 24, 24\): wrap a model that returns several outputs so "
            r"that it returns the SR image alone \(lambda x: model\(x\)\[0\]\)")
    with pytest.raises(ValueError, match=said):
        LAM(WithAuxiliaryOutput()).attribute(image, (16, 16, 8), n_steps=6)
    with pytest.raises(ValueError, match=r"got tuple for \(1, 3, 24, 24\): wrap a model"):
        ERF(WithAuxiliaryOutput()).attribute(image, (16, 16))
    model = WithAuxiliaryOutput()
    assert LAM(lambda x: model(x)[0]).attribute(image, (16, 16, 8), n_steps=6).abs().sum() > 0


def test_concurrent_calls_on_a_compiled_model_leave_compiled_code_compiled():
    # torch.compiler's stance is one setting of the process: two threads' calls that each saved and restored it
    # left it at "force_eager" for good (the second saved the first's), and compiled models everywhere ran their
    # Python. Here both calls are inside at once, and the second one in finishes last.
    model = torch.compile(tiny_sr(scale=2), backend="aot_eager")
    image = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    both_inside, first_done = threading.Barrier(2), threading.Event()
    waited: set[str] = set()
    errors = []

    def forward(x: torch.Tensor, name: str) -> torch.Tensor:
        if name not in waited:
            waited.add(name)
            both_inside.wait(timeout=60)
            if name == "second":
                first_done.wait(timeout=60)
        return model(x)

    def explain(name: str) -> None:
        try:
            LAM(lambda x: forward(x, name)).attribute(image, (16, 16, 8), n_steps=2, crop=False)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        if name == "first":
            first_done.set()

    threads = [threading.Thread(target=explain, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    eager_runs = []

    class Counting(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not torch.compiler.is_compiling():
                eager_runs.append(1)
            return x * 2

    counting = torch.compile(Counting(), backend="eager")
    counting(torch.rand(3))
    counting(torch.rand(3))
    assert eager_runs == []


class MonteCarloDropoutSR(nn.Module):
    """Keeps its dropout on in eval mode (its train() says so), for Monte Carlo sampling."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Dropout(0.3), nn.Conv2d(8, 12, 3, padding=1),
                                 nn.PixelShuffle(2))

    def train(self, mode: bool = True) -> MonteCarloDropoutSR:
        super().train(mode)
        self.net[1].train(True)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Holder:
    model: nn.Module | None = None


@pytest.mark.parametrize("reach", ["the model", "a class attribute"])
def test_a_models_own_train_override_is_kept_however_lam_reaches_it(reach):
    Holder.model = MonteCarloDropoutSR().eval()
    forward = Holder.model if reach == "the model" else lambda x: Holder.model(x)
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    first, second = (LAM(forward).attribute(image, (8, 8, 8), n_steps=4, crop=False) for _ in range(2))
    assert not torch.equal(first, second)  # the dropout the model keeps on still draws
    assert Holder.model.net[1].training and not Holder.model.training


def test_a_compiled_model_is_explained_without_torchs_warning_about_global_hooks():
    model = torch.compile(tiny_sr(scale=2), backend="aot_eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LAM(model).attribute(torch.rand(1, 3, 24, 24), (16, 16, 8), n_steps=2)


def test_a_hidden_model_in_eval_mode_with_a_part_left_in_training_mode_runs_all_in_eval_mode():
    # As LAM(model) would: model.eval() puts the dropout left in training mode by accident in eval mode too.
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Dropout(0.5), nn.Conv2d(8, 12, 3, padding=1),
                          nn.PixelShuffle(2)).eval()
    model[1].train()
    Holder.model = model
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    hidden = LAM(lambda x: Holder.model(x)).attribute(image, (8, 8, 8), n_steps=4, crop=False)
    model[1].eval()
    assert torch.equal(hidden, LAM(model).attribute(image, (8, 8, 8), n_steps=4, crop=False))


def test_explain_runs_a_hidden_train_mode_model_in_eval_mode_for_its_picture_too():
    # explain's SR output (for the figure and the PSNR) ran the hidden model in training mode: batch norm's
    # running statistics moved by 0.05 and the DI read 4.98 instead of 5.03.
    from test_lam import batch_norm_sr

    Holder.model = batch_norm_sr()
    statistics = Holder.model[1].running_mean.clone()
    image = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(0))
    hidden = explain(lambda x: Holder.model(x), image, (8, 8, 8), n_steps=4)
    assert torch.equal(Holder.model[1].running_mean, statistics) and Holder.model.training
    assert hidden.di == explain(batch_norm_sr().eval(), image, (8, 8, 8), n_steps=4).di
