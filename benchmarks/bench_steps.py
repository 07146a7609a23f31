"""How many path steps each integration rule needs, per model, against a converged integral.

For every model and rule, the ladder of step counts is climbed until the Diffusion Index is within
``--di-tol`` (relative) and the normalised map within ``--map-tol`` (max abs) of the reference on every
image and window; the reference is Gauss-Legendre with ``--reference-steps`` nodes (same sigma and kernel).
The official scheme is also compared with its own ``--reference-steps`` result (``--official-limit``).

The gradient of the window's detector depends only on the path point, and many rules and step counts
share points (official and riemann_right use the same ones), so each point's gradients (one forward,
one input-gradient backward per window) are computed once per image and reused by every rule. The
integration itself is LAM's: ``sum_i weight_i * grad_i * blur(x, derivative_i)`` with the kernels of
:func:`lam_captum.functional.path_kernels`; the script checks it against :meth:`lam_captum.LAM.attribute`.

Models: the built-in ``default`` (trained) and ``edsr-baseline`` (random init), and the three tiny
architectures of ``tests/architectures.py``, trained for ``--train-seconds`` each on x4 bicubic pairs of
photos that are not among the test photos (``--train-seconds 0``: random init).

    python benchmarks/bench_steps.py    # every model and rule at 32x32, 3 photos x 3 windows (README: what ran)
    python benchmarks/bench_steps.py --models plain --size 24 --windows 2 --train-seconds 0   # a quick look
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

import lam_captum
from lam_captum.functional import Window, attribution_map, blur, diffusion_index, gradient_detector, path_kernels
from lam_captum.imageio import default_image_path, hr_to_lr, load_image
from lam_captum.models import build_model

RULES = ("official", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
LADDER = (4, 8, 12, 16, 24, 32, 50, 64, 100)
MODELS = ("default", "edsr-baseline", "plain", "rrdb", "swin")
SCALE = 4
WINDOW = 16


def load_architectures():
    """``tests/architectures.py`` imported by path (tests/ is not a package)."""
    path = Path(__file__).resolve().parent.parent / "tests" / "architectures.py"
    spec = importlib.util.spec_from_file_location("architectures", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["architectures"] = module
    spec.loader.exec_module(module)
    return module


def build(name: str, train_seconds: float, train_steps: int) -> tuple[nn.Module, str]:
    """The model and a note on its weights."""
    torch.manual_seed(0)
    if name in ("default", "edsr-baseline"):
        note = "packaged trained weights" if name == "default" else "random init"
        return build_model(name), note
    architectures = load_architectures()
    model = {"plain": architectures.PlainCNN, "rrdb": architectures.TinyRRDBNet,
             "swin": architectures.TinySwinIR}[name]()
    if train_seconds <= 0:
        return model.eval(), "random init"
    started = time.perf_counter()
    loss, steps, bicubic = architectures.train_on_photos(model, iterations=train_steps, seconds=train_seconds)
    return model, (f"trained {steps} steps in {time.perf_counter() - started:.0f} s, final L1 {loss:.4f} "
                   f"(bicubic {bicubic:.4f})")


def photos(names: list[str]) -> dict[str, Tensor]:
    """Each photo as a (3, H, W) float tensor in [0, 1]."""
    import skimage.data

    loaded = {}
    for name in names:
        if name == "grace_hopper":
            loaded[name] = load_image(default_image_path())
        else:
            loaded[name] = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255
    return loaded


def busiest_crop(photo: Tensor, size: int) -> Tensor:
    """The LR crop (size x size, x4 bicubic of the HR crop) with the most edge energy, on a coarse grid:
    a study of edges and textures, not of sky."""
    lr_full, _ = hr_to_lr(photo, SCALE)
    energy = _edge_energy(lr_full)
    stride = size // 2
    best, best_score = (0, 0), -1.0
    for top in range(0, lr_full.shape[1] - size + 1, stride):
        for left in range(0, lr_full.shape[2] - size + 1, stride):
            score = float(energy[top : top + size, left : left + size].mean())
            if score > best_score:
                best, best_score = (top, left), score
    top, left = best
    return lr_full[:, top : top + size, left : left + size].contiguous()


def _edge_energy(image: Tensor) -> Tensor:
    grey = image.mean(dim=0)
    rows = torch.zeros_like(grey)
    cols = torch.zeros_like(grey)
    rows[:-1] = (grey[1:] - grey[:-1]).abs()
    cols[:, :-1] = (grey[:, 1:] - grey[:, :-1]).abs()
    return rows + cols


def pick_windows(image: Tensor, count: int) -> list[Window]:
    """``count`` SR windows of the paper's size, from the busiest (a strong edge) down to the median
    edge energy (texture), kept apart so that they probe different places."""
    energy = _edge_energy(image)
    side = WINDOW // SCALE
    limit = image.shape[-1] - side - 1
    candidates = [(float(energy[t : t + side, l : l + side].mean()), t, l)
                  for t in range(1, limit, 2) for l in range(1, limit, 2)]
    candidates.sort(reverse=True)
    targets = np.linspace(0, len(candidates) // 2, count).astype(int)
    chosen: list[tuple[int, int]] = []
    for target in targets:
        for _, t, l in candidates[target:] + candidates[:target]:
            if all(abs(t - ct) >= side or abs(l - cl) >= side for ct, cl in chosen):
                chosen.append((t, l))
                break
    return [Window.square(t * SCALE, l * SCALE, WINDOW) for t, l in chosen]


@dataclass
class GradientCache:
    """Detector gradients of one image's windows at every path point computed so far, keyed by the
    point's kernel (the gradient depends on nothing else)."""

    model: nn.Module
    image: Tensor
    windows: list[Window]
    rows: int
    gradients: dict[bytes, Tensor] = field(default_factory=dict)
    passes: int = 0

    def get(self, kernels: Tensor) -> Tensor:
        """(steps, windows, C, H, W) gradients at ``blur(image, kernels[i])``."""
        keys = [np.round(kernel.numpy(), 12).tobytes() for kernel in kernels]
        missing = sorted({key: kernel for key, kernel in zip(keys, kernels) if key not in self.gradients}.items())
        for start in range(0, len(missing), self.rows):
            chunk = missing[start : start + self.rows]
            for (key, _), gradient in zip(chunk, self._compute(torch.stack([kernel for _, kernel in chunk]))):
                self.gradients[key] = gradient
        return torch.stack([self.gradients[key] for key in keys])

    def _compute(self, kernels: Tensor) -> Tensor:
        points = blur(self.image[None], kernels)[0].requires_grad_(True)
        output = self.model(points)
        per_window = []
        for index, window in enumerate(self.windows):
            detected = gradient_detector(output, window).sum()
            (gradient,) = torch.autograd.grad(detected, points, retain_graph=index < len(self.windows) - 1)
            per_window.append(gradient.detach())
        self.passes += len(kernels)
        return torch.stack(per_window, dim=1)


def attribution(cache: GradientCache, sigma: float, kernel_size: int, method: str, n_steps: int) -> Tensor:
    """LAM's attribution of every window, (windows, C, H, W), from the cached gradients."""
    kernels = path_kernels(sigma, n_steps, kernel_size, method)
    gradients = cache.get(kernels.points)
    derivatives = blur(cache.image[None], kernels.derivatives)[0].to(torch.float64)
    weights = kernels.weights.reshape(-1, 1, 1, 1)
    return torch.stack([(weights * gradients[:, k].to(torch.float64) * derivatives).sum(dim=0)
                        for k in range(len(cache.windows))])


def summary(attributions: Tensor) -> tuple[Tensor, Tensor]:
    """(maps (windows, H, W), DI (windows,))."""
    maps = attribution_map(attributions)
    return maps, diffusion_index(maps)


def errors(candidate: tuple[Tensor, Tensor], reference: tuple[Tensor, Tensor]) -> tuple[float, float]:
    """Worst relative DI error and worst max-abs map error over the windows."""
    (maps, di), (ref_maps, ref_di) = candidate, reference
    di_error = float(((di - ref_di).abs() / ref_di).max())
    map_error = float((maps - ref_maps).abs().flatten(1).amax(dim=1).max())
    return di_error, map_error


@dataclass
class RuleResult:
    min_steps: int | None
    di_error: float
    map_error: float


def climb(caches: list[GradientCache], references: list, method: str, args) -> RuleResult:
    """The first rung of the ladder where every image and window is within both tolerances."""
    worst = (math.inf, math.inf)
    for n_steps in args.ladder:
        if method == "riemann_trapezoid" and n_steps < 2:
            continue
        worst = (0.0, 0.0)
        for cache, reference in zip(caches, references):
            di_error, map_error = errors(summary(attribution(cache, args.sigma, args.kernel_size, method, n_steps)),
                                         reference)
            worst = (max(worst[0], di_error), max(worst[1], map_error))
        if worst[0] <= args.di_tol and worst[1] <= args.map_tol:
            return RuleResult(n_steps, *worst)
    return RuleResult(None, *worst)


def curve(caches: list[GradientCache], references: list, method: str, args) -> list[tuple[int, float, float]]:
    """Worst DI and map errors at every rung of the ladder (no early stop), to pick one step count for all models."""
    rungs = []
    for n_steps in args.ladder:
        worst = (0.0, 0.0)
        for cache, reference in zip(caches, references):
            di_error, map_error = errors(summary(attribution(cache, args.sigma, args.kernel_size, method, n_steps)),
                                         reference)
            worst = (max(worst[0], di_error), max(worst[1], map_error))
        rungs.append((n_steps, *worst))
    return rungs


def check_integration(model: nn.Module, cache: GradientCache, args) -> float:
    """Max abs difference between this script's integration and LAM.attribute (official, 8 steps, first
    window), relative to the attribution's max."""
    ours = attribution(cache, args.sigma, args.kernel_size, "official", 8)[0].float()
    theirs = lam_captum.LAM(model).attribute(cache.image[None], cache.windows[0], n_steps=8, sigma=args.sigma,
                                             kernel_size=args.kernel_size)[0]
    return float((ours - theirs).abs().max() / theirs.abs().max())


def study_model(name: str, images: dict[str, Tensor], args) -> dict:
    started = time.perf_counter()
    model, note = build(name, args.train_seconds, args.train_steps.get(name, 300))
    model = model.to(args.device)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    caches = [GradientCache(model, image.to(args.device), pick_windows(image, args.windows), args.rows)
              for image in images.values()]
    reference = [summary(attribution(c, args.sigma, args.kernel_size, "gausslegendre", args.reference_steps))
                 for c in caches]
    results = {rule: climb(caches, reference, rule, args) for rule in args.rules}
    if args.official_limit and "official" in args.rules:
        own = [summary(attribution(c, args.sigma, args.kernel_size, "official", args.reference_steps)) for c in caches]
        results["official vs own limit"] = climb(caches, own, "official", args)
        gap = [errors(o, r) for o, r in zip(own, reference)]
        results["official limit vs reference"] = RuleResult(args.reference_steps, max(g[0] for g in gap),
                                                            max(g[1] for g in gap))
    curves = {rule: curve(caches, reference, rule, args) for rule in args.curves}
    return {"name": name, "note": note, "results": results, "curves": curves, "caches": caches, "model": model,
            "references": reference, "integration_check": check_integration(model, caches[0], args),
            "seconds": time.perf_counter() - started, "passes": sum(c.passes for c in caches)}


def common_preset(studies: list[dict], args) -> tuple[str, int, float, float] | None:
    """The rule and step count that hold on every model (the fewest steps), checked on every model."""
    best = None
    for rule in args.rules:
        needed = [study["results"][rule].min_steps for study in studies]
        if None not in needed and (best is None or max(needed) < best[1]):
            best = (rule, max(needed))
    if best is None:
        return None
    worst = (0.0, 0.0)
    for study in studies:
        for cache, reference in zip(study["caches"], study["references"]):
            di_error, map_error = errors(summary(attribution(cache, args.sigma, args.kernel_size, *best)), reference)
            worst = (max(worst[0], di_error), max(worst[1], map_error))
    return (*best, *worst)


def print_table(studies: list[dict], ladder: list[int]) -> None:
    print("| model | rule | min steps | worst DI error | worst map error |")
    print("|---|---|---:|---:|---:|")
    for study in studies:
        for rule, result in study["results"].items():
            steps = result.min_steps if result.min_steps is not None else f"> {ladder[-1]}"
            print(f"| {study['name']} | {rule} | {steps} | {100 * result.di_error:.2f}% | {result.map_error:.4f} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--images", default="grace_hopper,chelsea,coffee", help="grace_hopper or skimage.data photos")
    parser.add_argument("--size", type=int, default=32, help="LR crop side (default: 32)")
    parser.add_argument("--windows", type=int, default=3, help="windows per image (default: 3)")
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--curves", default="riemann_middle", help="rules to evaluate at every rung (may be empty)")
    parser.add_argument("--ladder", default=",".join(map(str, LADDER)))
    parser.add_argument("--reference-steps", type=int, default=400)
    parser.add_argument("--official-limit", action="store_true", help="also compare official with its own limit")
    parser.add_argument("--di-tol", type=float, default=0.01)
    parser.add_argument("--map-tol", type=float, default=0.02)
    parser.add_argument("--sigma", type=float, default=1.2)
    parser.add_argument("--kernel-size", type=int, default=9)
    parser.add_argument("--train-seconds", type=float, default=60.0, help="0: the tiny models stay random")
    parser.add_argument("--train-steps", default="", help="e.g. plain=300,rrdb=52: steps per tiny model "
                        "(default 300; with a large --train-seconds this reproduces a model exactly)")
    parser.add_argument("--rows", type=int, default=4, help="path points per forward pass")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    args.ladder = [int(n) for n in args.ladder.split(",")]
    args.train_steps = {name: int(steps) for name, steps in
                        (item.split("=") for item in args.train_steps.split(",") if item)}
    args.rules = args.rules.split(",")
    args.curves = [rule for rule in args.curves.split(",") if rule]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.images.split(",")
    images = {name: busiest_crop(photo, args.size) for name, photo in photos(names).items()}
    print(f"LR {args.size}x{args.size} crops of {', '.join(names)}; {args.windows} windows of {WINDOW}x{WINDOW} "
          f"SR pixels each; reference: {args.reference_steps}-step gausslegendre; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}", flush=True)
    studies = []
    for name in args.models.split(","):
        study = study_model(name, images, args)
        studies.append(study)
        print(f"{name} ({study['note']}): {study['passes']} path points in {study['seconds']:.0f} s; integration "
              f"vs LAM.attribute: {study['integration_check']:.1e} of the max", flush=True)
        print_table([study], args.ladder)
        for rule, rungs in study["curves"].items():
            print(f"{name} {rule} at every rung: " + ", ".join(
                f"{n}: {100 * di:.2f}% / {error:.4f}" for n, di, error in rungs), flush=True)
    if len(studies) > 1:
        print_table(studies, args.ladder)
    preset = common_preset(studies, args)
    if preset is None:
        print("no rule holds both bounds on every model within the ladder")
    else:
        print(f"holds on every model: {preset[0]} at {preset[1]} steps (worst DI error {100 * preset[2]:.2f}%, "
              f"worst map error {preset[3]:.4f})")


if __name__ == "__main__":
    main()
