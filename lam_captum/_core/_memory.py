"""How much memory a LAM run needs, measured before it starts, and how much the device has free.

A path step is one forward and one backward pass of the model, and what dominates its memory is what
autograd keeps from the forward pass for the backward one. A probe forward pass on a small crop of the
input counts those saved activations per input pixel; a model call of ``rows`` steps of ``H x W`` images
needs about ``rows * H * W`` times that. A 4000x4000 HR image (1000x1000 LR at x4) is the case this
guards: it took 10 GB and minutes for 2 steps, and a run that does not fit fails only after that.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from lam_captum._core._context import modules_behind, outside_stacklevel

# The probe runs on a crop of at most this many LR pixels a side: cheap next to a path step, and large
# enough that border effects do not dominate the count.
_PROBE_SIDE = 32
# The backward pass briefly holds gradients of the largest activations beside the saved ones.
# benchmarks/bench_memory_estimate.py: with 2.0 the estimate was 0.95-1.07x the measured peak of real
# steps of EDSR-baseline and the default model (128 to 256 px LR, 1 to 4 rows) on a CPU.
_BACKWARD_HEADROOM = 2.0
# cgroup v1 writes "no limit" as the largest page-aligned 64-bit number (9223372036854771712); anything this
# large is no limit.
_NO_CGROUP_LIMIT = 1 << 62
_CGROUP_ROOT = Path("/sys/fs/cgroup")
# A forward pass without gradients holds about this many times its largest activation at once (a layer's input
# and output, and a skip connection), beside its output: benchmarks/bench_memory_estimate.py, 0.95-1.10x the
# measured peak of EDSR-baseline and the default model from 256x256 to 1000x1000 LR on a CPU.
_FORWARD_LIVE = 2.5
# The probes made inside `probes_shared`, by model and kind of input: one LAM call probes once, whatever the
# crops it runs on (each a call of its own on a GPU, where a probe costs what a small crop's step does).
_PROBES: ContextVar[dict[tuple, Probe | None] | None] = ContextVar("lam_captum_probes", default=None)


@contextlib.contextmanager
def probes_shared() -> Iterator[None]:
    """Within the block, :func:`bytes_per_pixel` probes each model once per kind of input (channels, frames,
    dtype, device): a LAM call's full image and its crops share the figure of the first probe, the full
    image's (the crops' own smaller probes would count their borders more)."""
    token = _PROBES.set({})
    try:
        yield
    finally:
        _PROBES.reset(token)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a new allocation on ``device``, or None where that cannot be told cheaply.

    CPU: ``MemAvailable`` of ``/proc/meminfo`` (Linux), else ``os.sysconf``, and no more than the process's
    memory cgroup still allows (:func:`cgroup_memory_left`: a container's limit, which ``/proc/meminfo`` does
    not show); CUDA: the driver's free memory and what PyTorch's caching allocator holds reserved but unused
    (the driver counts that as taken, though every new tensor of this process can use it: after one LAM call,
    the next would otherwise see its peak as gone).

    Example:
        >>> available_memory(torch.device("cpu")) > 0
        True
    """
    if device.type == "cuda":
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + cached
    if device.type != "cpu":
        return None
    free = _system_memory_available()
    try:
        allowed = cgroup_memory_left(Path("/proc/self/cgroup").read_text(), _CGROUP_ROOT)
    except OSError:
        allowed = None
    if free is None or allowed is None:
        return allowed if free is None else free
    return min(free, allowed)


def _system_memory_available() -> int | None:
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def cgroup_memory_left(cgroups: str, root: Path) -> int | None:
    """Bytes the process's memory cgroup lets it allocate before the kernel's OOM killer ends it, or None where
    no cgroup limits its memory.

    That is the least, over its cgroup and every ancestor with a limit, of the limit less the memory charged to
    it that the kernel cannot reclaim (page cache it can: the inactive file pages). Both cgroup v2 (``memory.max``,
    ``memory.current``) and v1's memory controller (``memory.limit_in_bytes``, ``memory.usage_in_bytes``) count.

    Args:
        cgroups: The text of ``/proc/self/cgroup``.
        root: Where the cgroup file systems are mounted (``/sys/fs/cgroup``).
    """
    left = None
    for line in cgroups.splitlines():
        if line.count(":") < 2:
            continue
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:
            base, files = root, ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            base, files = root / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        directory = base / path.strip("/")
        while True:
            here = _cgroup_left(directory, *files)
            if here is not None:
                left = here if left is None else min(left, here)
            if directory == base:
                break
            directory = directory.parent
    return left


def _cgroup_left(directory: Path, limit_file: str, usage_file: str, inactive_key: str) -> int | None:
    try:
        limit = (directory / limit_file).read_text().strip()
        if limit == "max" or int(limit) >= _NO_CGROUP_LIMIT:
            return None
        usage = int((directory / usage_file).read_text())
        stat = (directory / "memory.stat").read_text() if (directory / "memory.stat").is_file() else ""
        fields = (line.split() for line in stat.splitlines())
        inactive = next((int(field[1]) for field in fields if len(field) == 2 and field[0] == inactive_key), 0)
    except (OSError, ValueError):
        return None
    return max(0, int(limit) - (usage - inactive))


class Probe(NamedTuple):
    """What a probe forward pass measured, in bytes per LR pixel of one image."""

    kept: float  # what the pass keeps for the backward pass, and its output
    largest: float  # the largest single tensor among those kept
    output: float  # the output


def bytes_per_pixel(forward_func: Callable[[Tensor], Tensor], inputs: Tensor) -> float | None:
    """Bytes that one forward pass keeps for the backward pass, per LR pixel of one image.

    Measured on a crop of at most 32x32 pixels of the first image (every frame of a clip), under the caller's autograd state
    (call it with gradients on). Model weights saved for the backward pass do not grow with the image and
    are not counted. None if the probe fails: the real run then reports the model's own error.
    """
    probe = _probe(forward_func, inputs)
    return None if probe is None else probe.kept


def _probe(forward_func: Callable[[Tensor], Tensor], inputs: Tensor) -> Probe | None:
    """:func:`_probe_pass` on a crop of ``inputs``, once per kind of input inside :func:`probes_shared`."""
    crop = inputs[:1, ..., :_PROBE_SIDE, :_PROBE_SIDE].detach().clone().requires_grad_(True)
    probes = _PROBES.get()
    key = (id(forward_func), tuple(crop.shape[:-2]), crop.dtype, crop.device, torch.is_grad_enabled())
    if probes is not None and key in probes:
        return probes[key]
    probe = _probe_pass(forward_func, crop)
    if probes is not None:
        probes[key] = probe
    return probe


def _probe_pass(forward_func: Callable[[Tensor], Tensor], crop: Tensor) -> Probe | None:
    # The weights are saved for the backward pass too, but do not grow with the image.
    weights = {p.untyped_storage().data_ptr() for module in modules_behind(forward_func) for p in module.parameters()}
    saved: dict[int, int] = {}

    def count(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    try:
        with torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor):
            output = forward_func(crop)
        output_bytes = output.numel() * output.element_size()
    # Any failure of the probe (a model that needs other sizes, returns a tuple, or wraps its tensors)
    # only means there is no estimate; the run itself diagnoses the model.
    except Exception:  # noqa: BLE001
        return None
    pixels = crop.shape[-2] * crop.shape[-1]
    return Probe((sum(saved.values()) + output_bytes) / pixels, max([output_bytes, *saved.values()]) / pixels,
                 output_bytes / pixels)


def estimate_call_memory(forward_func: Callable[[Tensor], Tensor], inputs: Tensor, rows: int) -> int | None:
    """Estimated peak bytes of one model call of ``rows`` path steps of ``inputs``-sized images, or None.

    Example:
        >>> model = torch.nn.Conv2d(1, 8, 3, padding=1)
        >>> with torch.enable_grad():
        ...     one, two = (estimate_call_memory(model, torch.rand(1, 1, 16, 16), rows) for rows in (1, 2))
        >>> two == 2 * one
        True
    """
    per_pixel = bytes_per_pixel(forward_func, inputs)
    if per_pixel is None:
        return None
    image_bytes = inputs[0].numel() * inputs.element_size()
    # Beside the activations: the path points, their gradients and the path derivatives of the chunk.
    per_step = per_pixel * _BACKWARD_HEADROOM * inputs.shape[-2] * inputs.shape[-1] + 3 * image_bytes
    return int(rows * per_step)


def estimate_forward_memory(forward_func: Callable[[Tensor], Tensor], image: Tensor) -> int | None:
    """Estimated peak bytes of one forward pass of the ``(1, C, H, W)`` image without gradients, or None.

    Without gradients a pass keeps no activations: what it holds at once is about a layer's input and output
    and a skip connection, :data:`_FORWARD_LIVE` times the largest activation the probe saw, and the output.
    Call it where gradients are on (the probe counts what a pass keeps for the backward pass).
    """
    probe = _probe(forward_func, image)
    if probe is None:
        return None
    pixels = image.shape[-2] * image.shape[-1]
    return int((_FORWARD_LIVE * probe.largest + probe.output) * pixels + image[0].numel() * image.element_size())


def warn_if_forward_too_large(forward_func: Callable[[Tensor], Tensor], image: Tensor, available: int | None) -> None:
    """Warn before the whole image's forward pass without gradients, the least that checking a crop against the
    whole image costs, where it would need more than the ``available`` bytes (:func:`estimate_forward_memory`).
    Call it where gradients are on."""
    needed = None if available is None else estimate_forward_memory(forward_func, image)
    if needed is None or needed <= available:
        return
    height, width = image.shape[-2:]
    warnings.warn(f"LAM on {height}x{width} inputs needs about {_size(needed)} for even one forward pass of the whole "
                  f"image without gradients (what checking a crop against it takes, estimated from a probe forward "
                  f"pass), but only {_size(available)} of {image.device} memory is free: the run may fail or swap; "
                  "explain a crop of the image", RuntimeWarning, stacklevel=outside_stacklevel())


def warn_if_too_large(forward_func: Callable[[Tensor], Tensor], inputs: Tensor, rows: int, *, share: float = 1.0,
                      step_bytes: int | None = None) -> None:
    """Warn before the run when one model call of ``rows`` steps would need more memory than is free.

    ``share`` scales one path step's memory: several windows' gradients held together through one backward
    pass (``attribute_windows`` on a GPU). ``step_bytes`` is one step's estimate if the caller already made it
    (:func:`estimate_call_memory` with one row); otherwise the probe runs here. Call it where gradients are
    on (inside :func:`~lam_captum._core._context.gradient_context`).
    """
    available = available_memory(inputs.device)
    if available is None:
        return
    if step_bytes is None:
        step_bytes = estimate_call_memory(forward_func, inputs, 1)
    if step_bytes is None:
        return
    per_step = int(step_bytes * share)
    needed = rows * per_step
    if needed <= available:
        return
    height, width = inputs.shape[-2:]
    if per_step <= available:
        advice = f"lower `internal_batch_size` to {max(1, available // per_step)} (now {rows})"
    elif step_bytes <= available:
        advice = "pass fewer windows at once (even one path step of them all does not fit)"
    else:
        advice = "explain a crop of the image (even one path step does not fit)"
    warnings.warn(f"LAM on {height}x{width} inputs needs about {_size(needed)} per model call ({rows} path "
                  f"step(s) of about {_size(per_step)}, estimated from a probe forward pass), but only "
                  f"{_size(available)} of {inputs.device} memory is free: the run may fail or swap; "
                  f"{advice}", RuntimeWarning, stacklevel=outside_stacklevel())


def _size(count: int) -> str:
    return f"{count / 1e9:.3g} GB" if count >= 1e9 else f"{count / 1e6:.3g} MB"
