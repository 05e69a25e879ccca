"""A user's module that calls sys.exit() when imported (tests/test_bad_input.py): mutransfer must say so."""

import sys

sys.exit(3)
