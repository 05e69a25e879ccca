"""The names a user's model builder imports from here, where the README first documented them.

``BuildConfig`` (the argument of ``fn(cfg: BuildConfig) -> nn.Module``) lives in mutransfer.parametrization with the
µP/SP rules, ``mark_block`` in mutransfer.models with the built-in families: users' builders that import them from
mutransfer.proxy keep working. mutransfer's own code imports them from their modules.
"""

from __future__ import annotations

from mutransfer.models import mark_block
from mutransfer.parametrization import BuildConfig

__all__ = ["BuildConfig", "mark_block"]
