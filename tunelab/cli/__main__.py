"""``python -m tunelab.cli``: the ``tunelab`` command (sweeps start their runs this way)."""

import sys

from tunelab.cli import main

sys.exit(main())
