"""``python -m nas.sweep``."""

from nas.sweep.cli import main

raise SystemExit(main())
