"""``python -m kubetasks``: the ``kubetasks`` command."""

import sys

from kubetasks.cli import main

sys.exit(main())
