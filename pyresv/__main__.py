"""``python -m pyresv``: the command line."""

from pyresv.tools.cli import main

raise SystemExit(main())
