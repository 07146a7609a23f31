"""LAM's default call on a 4000x4000 HR photo's LR image inside a memory-limited container (a memory cgroup).

``/proc/meminfo`` shows the machine's memory, not a container's limit, so a LAM that only read it would take
the full image's pass with gradients where the container cannot hold it, and the kernel's OOM killer would end
the process. LAM reads the cgroup's limit too (``available_memory``) and then takes the crops' path, whose
peak is the full image's forward pass without gradients.

Each run is a fresh process in a fresh child of this process's memory cgroup, limited to ``--limit-gib``:
*as shipped*; *meminfo only*, with the cgroup's limit hidden from LAM (how it read free memory before); then
the same call without a limit, whose attribution the others are compared with. Needs root and a writable
cgroup file system (v1's memory controller or v2); elsewhere it says so and stops.

    sudo python benchmarks/bench_container.py
    python benchmarks/bench_container.py --size 1000 --steps 10 --limit-gib 7
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
MODES = ("as shipped", "meminfo only")


def own_cgroup() -> tuple[Path, str] | None:
    """This process's memory cgroup directory and its version ("v1" or "v2"), or None."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            directory = ROOT / "memory" / path.strip("/")
            if (directory / "memory.limit_in_bytes").is_file():
                return directory, "v1"
        if hierarchy == "0" and not controllers and (ROOT / path.strip("/") / "memory.max").is_file():
            return ROOT / path.strip("/"), "v2"
    return None


def limited_child(parent: Path, version: str, limit: int, name: str) -> Path:
    """A new child cgroup of ``parent`` limited to ``limit`` bytes, without swap where that can be set."""
    child = parent / name
    child.mkdir()
    if version == "v1":
        (child / "memory.limit_in_bytes").write_text(str(limit))
    else:
        (child / "memory.max").write_text(str(limit))
        if (child / "memory.swap.max").is_file():
            (child / "memory.swap.max").write_text("0")
    return child


def peak_bytes(child: Path, version: str) -> int | None:
    name = "memory.max_usage_in_bytes" if version == "v1" else "memory.peak"
    path = child / name
    return int(path.read_text()) if path.is_file() else None


def run_one(mode: str, size: int, steps: int, model: str, out: str, cgroup: str | None) -> None:
    """The child: join the cgroup, then one default LAM call; print its seconds and save the attribution."""
    if cgroup:
        Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))
    # torch is imported only now, inside the cgroup, so that all of its memory is charged there.
    import torch

    from lam_captum import LAM
    from lam_captum._core import _memory
    from lam_captum.models import build_model

    if mode == "meminfo only":
        _memory.cgroup_memory_left = lambda cgroups, root: None
    torch.manual_seed(0)
    network = build_model(model)
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    scale = network(image[..., :8, :8]).shape[-1] // 8
    centre = size * scale // 2 - 8
    started = time.perf_counter()
    attribution = LAM(network).attribute(image, (centre, centre, 16), n_steps=steps)
    print(f"{time.perf_counter() - started:.1f}", flush=True)
    torch.save(attribution, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1000, help="LR side (1000: a 4000x4000 HR photo at x4)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--model", default="default")
    parser.add_argument("--limit-gib", type=float, default=7.0, help="the container's memory limit")
    parser.add_argument("--one", nargs=3, metavar=("MODE", "OUT", "CGROUP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        mode, out, cgroup = args.one
        run_one(mode, args.size, args.steps, args.model, out, cgroup if cgroup != "-" else None)
        return
    found = own_cgroup()
    if found is None or not os.access(found[0], os.W_OK):
        print("no writable memory cgroup here (needs root and cgroup v1's memory controller or v2): nothing measured")
        return
    parent, version = found
    limit = int(args.limit_gib * 2**30)
    print(f"{args.model}, {args.size}x{args.size} LR, {args.steps} steps, cgroup {version} limited to "
          f"{args.limit_gib:g} GiB, in a fresh process each")
    print("| LAM | exit | seconds | peak of the cgroup | max difference / max vs no limit |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        unlimited = Path(folder, "unlimited.pt")
        rows = []
        for mode in (*MODES, "no limit"):
            name = f"lam-bench-{os.getpid()}-{len(rows)}"
            child = None if mode == "no limit" else limited_child(parent, version, limit, name)
            out = unlimited if child is None else Path(folder, f"{len(rows)}.pt")
            command = [sys.executable, __file__, "--size", str(args.size), "--steps", str(args.steps), "--model",
                       args.model, "--one", "as shipped" if child is None else mode, str(out), str(child or "-")]
            result = subprocess.run(command, capture_output=True, text=True)
            peak = None if child is None else peak_bytes(child, version)
            if child is not None:
                child.rmdir()
            rows.append((mode, result, peak, out))
        import torch  # here too, not at the top: each child imports this file before it joins its cgroup

        reference = torch.load(unlimited) if unlimited.is_file() else None
        for mode, result, peak, out in rows:
            seconds = result.stdout.strip().splitlines()[-1] if result.returncode == 0 else "-"
            difference = "-"
            if reference is not None and out.is_file():
                difference = f"{float((torch.load(out) - reference).abs().max() / reference.abs().max()):.2g}"
            peak_text = "-" if peak is None else f"{peak / 2**30:.2f} GiB"
            killed = " (killed)" if result.returncode in (-9, 137) else ""
            print(f"| {mode} | {result.returncode}{killed} | {seconds} | {peak_text} | {difference} |", flush=True)


if __name__ == "__main__":
    main()
