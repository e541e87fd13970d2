"""``python -m nbio``: the same as the ``nbio`` command."""

import sys

from .cli import main

sys.exit(main())
