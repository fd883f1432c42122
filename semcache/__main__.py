"""``python -m semcache``: the same as the ``semcache`` command."""

import sys

from semcache._cli.main import main

sys.exit(main())
