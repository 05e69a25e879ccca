"""`StoreError`: what every storage failure raises; `LeaseError` when another driver runs the sweep."""

from __future__ import annotations

from mutransfer.errors import MutransferError


class StoreError(MutransferError, RuntimeError):
    """A database that cannot be used. The message is one line and never contains a password."""


class LeaseError(StoreError):
    """Another driver holds the sweep's lease (or took it over from this one): this driver must not touch its
    trials."""


__all__ = ["LeaseError", "StoreError"]
