"""``python -m pyresv``: the command line."""

from pyresv.cli import main

raise SystemExit(main())
