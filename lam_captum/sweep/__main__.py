"""``python -m lam_captum.sweep STUDY ...``: the same as ``lam-captum sweep STUDY ...``."""

from __future__ import annotations

import sys

from lam_captum.sweep.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
