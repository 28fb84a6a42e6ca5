"""`python -m uem.train DATA -o RUN [options]` — the same as `uemctl train`."""

import sys

from ..cli.app import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
