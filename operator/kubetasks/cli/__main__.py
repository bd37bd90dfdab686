"""``python -m kubetasks.cli``: what the dev environment and the tests start (the same as
``python -m kubetasks`` and the ``kubetasks`` script)."""

import sys

from kubetasks.cli import main

sys.exit(main())
