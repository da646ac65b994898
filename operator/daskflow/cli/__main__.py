"""``python -m daskflow.cli``: the same command as ``daskflow``."""

import sys

from . import main

sys.exit(main())
