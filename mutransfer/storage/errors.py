"""`StoreError`: what every storage failure raises."""

from __future__ import annotations

from mutransfer.errors import MutransferError


class StoreError(MutransferError, RuntimeError):
    """A database that cannot be used. The message is one line and never contains a password."""


__all__ = ["StoreError"]
