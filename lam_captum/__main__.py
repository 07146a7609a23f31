"""``python -m lam_captum``: the same as the ``lam-captum`` command."""

from lam_captum.cli import main

raise SystemExit(main())
