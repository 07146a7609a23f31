"""Take a screenshot of real TensorBoard, in a real (headless) browser, showing a LAMMonitor run.

It starts TensorBoard on the loopback address for the run under ``--logdir``, waits until it answers,
and asks headless Chromium (Debian's ``chromium`` package) to render one of TensorBoard's dashboards
to a PNG. Nothing is drawn by this script: the picture is what a user sees in the browser.

Usage, after ``python examples/train_with_callback.py``::

    apt-get install chromium        # once
    python examples/screenshot_tensorboard.py --logdir runs/lam_monitor --output docs/tensorboard_view.png
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

DASHBOARDS = ("images", "scalars", "custom_scalars", "text")


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, timeout: float) -> None:
    """Poll ``url`` until it answers, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"TensorBoard did not answer at {url} within {timeout:.0f} s") from None
            time.sleep(0.5)


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no Chromium found: `apt-get install chromium` (Debian) first")


def screenshot(url: str, output: Path, size: tuple[int, int], render_ms: int) -> None:
    """Render ``url`` in headless Chromium and write the PNG; the virtual-time budget lets the page's
    scripts fetch and draw the cards before the picture is taken."""
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [
        browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={render_ms}",
        f"--screenshot={output.resolve()}", url,
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    if not output.is_file():
        raise SystemExit(f"Chromium wrote no screenshot to {output}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", type=Path, default=Path("runs/lam_monitor"), help="TensorBoard folder")
    parser.add_argument("--output", type=Path, default=Path("docs/tensorboard_view.png"))
    parser.add_argument("--dashboard", choices=DASHBOARDS, default="images")
    parser.add_argument("--filter", default="lam/", help="tag filter typed into the dashboard")
    parser.add_argument("--size", type=int, nargs=2, default=(1400, 1000), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--render-ms", type=int, default=15000, help="browser time to let the page draw")
    args = parser.parse_args(argv)
    if not any(args.logdir.rglob("events.out.tfevents.*")):
        raise SystemExit(f"no TensorBoard event file under {args.logdir}")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(args.logdir), "--host", "127.0.0.1",
         "--port", str(port), "--reload_interval", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/data/runs", timeout=60)
        # TensorBoard keeps a dashboard's state, its tag filter included, in the URL's fragment.
        state = f"&tagFilter={urllib.parse.quote(args.filter)}" if args.filter else ""
        screenshot(f"{base}/#{args.dashboard}{state}", args.output, tuple(args.size), args.render_ms)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
