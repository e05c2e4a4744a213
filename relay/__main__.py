"""The ``relay`` command's entry point (and ``python -m relay``'s).

It imports nothing but ``sys`` before it can catch Ctrl-C: loading the command line and what it imports takes a
fraction of a second, in which a KeyboardInterrupt was a traceback rather than the quiet status 130 of a Ctrl-C a
moment later.
"""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from relay.cli import main as run_command

        return run_command()
    except KeyboardInterrupt:  # before the command catches it itself, naming the command (relay.cli.main)
        print("relay: interrupted", file=sys.stderr)
        return 130  # as a shell reports a command that SIGINT ended


if __name__ == "__main__":
    sys.exit(main())
