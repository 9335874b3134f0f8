"""``python -m cdat_core``: the ``cdat-core`` command line (see :mod:`cdat_core.lab.cli`)."""

import sys

from cdat_core.lab.cli import main

if __name__ == "__main__":
    sys.exit(main())
