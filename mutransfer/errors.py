"""The errors a user can fix. Each message is one line that names what is wrong (a recipe field, a flag, a sweep)
and what to do; the CLI prints it and exits 2, the dashboard shows it as it is."""

from __future__ import annotations


class MutransferError(Exception):
    """Base class of mutransfer's user-facing errors."""


class UsageError(MutransferError):
    """A mistake in how the API or a command was called: an unknown sweep, a parametrization the sweep does not
    have, a format that cannot describe the model, an export the guard refuses."""
