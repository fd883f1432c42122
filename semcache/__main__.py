"""``python -m semcache``: the same as the ``semcache`` command."""

import sys

from .cli import main

sys.exit(main())
