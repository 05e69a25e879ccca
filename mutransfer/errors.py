"""The errors a user can fix: every one is a `MutransferError`, so a front end catches one class.

Each message is one line that names what is wrong (a recipe field path, an argument, a sweep) and what to do. An
argument is named with `option("allow_extrapolation")`: the message then reads `allow_extrapolation` where the
Python API is used, and the CLI renders the same error with its flag (`--allow-extrapolation`) through `render`
(mutransfer.cli.flag).
The library itself never spells a command-line flag."""

from __future__ import annotations

from collections.abc import Callable

_MARK = "\x1f"  # brackets an argument's name inside a message (a control character no message contains)


def option(name: str) -> str:
    """How a message mentions the API argument `name`; see `MutransferError.render`."""
    return f"{_MARK}{name}{_MARK}"


def api_name(name: str) -> str:
    """An argument as the Python API spells it: its own name."""
    return name



class MutransferError(Exception):
    """Base class of mutransfer's user-facing errors."""

    def render(self, spell: Callable[[str], str] = api_name) -> str:
        """The message with each `option(...)` spelled by `spell` (the API's names by default)."""
        parts = super().__str__().split(_MARK)
        return "".join(spell(p) if i % 2 else p for i, p in enumerate(parts))

    def __str__(self) -> str:
        return self.render()


class UsageError(MutransferError):
    """A mistake in how the API or a command was called: an unknown sweep, a parametrization the sweep does not
    have, a format that cannot describe the model, an export the guard refuses."""
