"""The ``daskflow`` command's entry point (and ``python -m daskflow``).

Importing the CLI takes a moment (pydantic, asyncio); a Ctrl-C or SIGTERM in that moment
ends the command with a one-line message, never a traceback. Local worker processes run
this module again as their ``__main__``, so it stays this small.
"""

from __future__ import annotations

import signal
import sys


def main() -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        from .interrupt import EXIT_INTERRUPTED

        print("daskflow: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # each command handles signals its way
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
