"""How exact is "the same numbers"? LAM's float32 rounding on one device, beside the crop's difference.

The crop (``crop="auto"``, the default) is exact in exact arithmetic: outside the region the attribution is
zero, and inside it the crop's path images and gradients are the full image's. In float32 the two still
round differently wherever the kernels sum in another order for another input size (cuDNN picks its
convolution algorithms by shape; oneDNN on a CPU sums a convolution in the same order, and there EDSR-baseline's
crop is bit for bit its full image). This
script sets the crop's difference beside the rounding of the full-image computation itself, all against
a float64 full-image computation of the same model, image and window:

- *full f32*: ``crop=False`` in float32, the computation the crop is compared with;
- *other kernels*: the same with the device's other convolution kernels (cuDNN off on a GPU, oneDNN off
  on a CPU): two correct float32 computations of the full image;
- *crop f32*: the default call in float32; *crop f64*: the default call in float64 (the region's cut alone,
  without float32 rounding: should be about 1e-15);
- *crop vs full*: the figure the issue bounds (<= 1e-5 of the maximum).

Every figure is the largest absolute difference divided by the largest absolute attribution.

    python benchmarks/bench_rounding.py                                # CPU, 64x64 and 128x128
    python benchmarks/bench_rounding.py --device cuda --sizes 256x256,339x510
"""

from __future__ import annotations

import argparse
import contextlib
import time
import warnings

import torch

from lam_captum import LAM
from lam_captum.models import build_model


def other_kernels(device: torch.device):
    """The device's other float32 convolution kernels: native ones instead of cuDNN's or oneDNN's."""
    if device.type == "cuda":
        return torch.backends.cudnn.flags(enabled=False)
    if torch.backends.mkldnn.is_available():
        # Setting oneDNN's flags warns that TF32 on oneDNN needs an Intel GPU: nothing to do with a CPU run.
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        return torch.backends.mkldnn.flags(enabled=False)
    return contextlib.nullcontext()


def relative(values: torch.Tensor, reference: torch.Tensor) -> float:
    return float((values.double() - reference.double()).abs().max() / reference.double().abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="edsr-baseline,default")
    parser.add_argument("--sizes", default="64x64,128x128", help="LR sizes, HxW")
    parser.add_argument("--steps", type=int, default=10, help="path steps (the rounding hardly depends on them)")
    args = parser.parse_args()
    device = torch.device(args.device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"{device} ({card}), torch {torch.__version__}, {args.steps} steps, window 16x16 at the centre; "
          "differences / max |float64 attribution|")
    print(f"{'model':<14} {'LR HxW':>9} {'full f32':>9} {'other kernels':>14} {'crop f32':>9} {'crop f64':>9} "
          f"{'crop vs full':>13} {'s':>6}")
    for name in args.models.split(","):
        model32 = build_model(name).to(device)
        model64 = build_model(name).to(device=device, dtype=torch.float64)
        model64.load_state_dict(model32.state_dict())
        lam32, lam64 = LAM(model32), LAM(model64)
        for size in args.sizes.split(","):
            height, width = (int(v) for v in size.split("x"))
            image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(device)
            window = (height * 4 // 2 - 8, width * 4 // 2 - 8, 16)
            started = time.perf_counter()
            reference = lam64.attribute(image.double(), window, n_steps=args.steps, crop=False)
            crop64 = lam64.attribute(image.double(), window, n_steps=args.steps)
            full = lam32.attribute(image, window, n_steps=args.steps, crop=False)
            crop = lam32.attribute(image, window, n_steps=args.steps)
            with other_kernels(device):
                other = lam32.attribute(image, window, n_steps=args.steps, crop=False)
            print(f"{name:<14} {size:>9} {relative(full, reference):9.1e} {relative(other, reference):14.1e} "
                  f"{relative(crop, reference):9.1e} {relative(crop64, reference):9.1e} "
                  f"{relative(crop, full):13.1e} {time.perf_counter() - started:6.1f}", flush=True)


if __name__ == "__main__":
    main()
