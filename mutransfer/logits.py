"""The logits in what a model's forward returns, as people write forwards.

A builder's model may return the logits themselves, or what its own training code wants next to them: nanoGPT's
`(logits, loss)`, a Hugging Face `ModelOutput` (`.logits`), a dict with `"logits"`. Training, evaluation and the
coordinate check take the logits out with `logits_of`; anything else is refused in one line that says what the
forward returned and what it must return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mutransfer.errors import MutransferError

EXPECTED = ("the logits: a tensor, a tuple or list whose first element is the logits (nanoGPT's (logits, loss)), an "
            "object with .logits (transformers' ModelOutput) or a dict with 'logits'")


class ForwardOutputError(MutransferError, TypeError):
    """The model's forward returned something that holds no logits, or logits of the wrong shape."""


def logits_of(output: Any) -> torch.Tensor:
    """The logits in a forward's `output`; ForwardOutputError if it holds none."""
    if isinstance(output, torch.Tensor):
        return output
    # `.logits` before the mapping and sequence forms: a ModelOutput is an OrderedDict that indexes like a tuple,
    # and its first item is the loss when labels were given.
    found = getattr(output, "logits", None)
    if found is None and isinstance(output, Mapping):
        found = output.get("logits")
    if found is None and isinstance(output, Sequence) and not isinstance(output, str) and len(output):
        found = output[0]
    if isinstance(found, torch.Tensor):
        return found
    raise ForwardOutputError(f"the model's forward returned {describe(output)}; it must return {EXPECTED}")


def check_logits(logits: torch.Tensor, x: torch.Tensor, num_classes: int) -> None:
    """The logits' shape for a batch `x`: (B, num_classes) for a classifier's (B, features) input, (B, T,
    num_classes) for a sequence model's (B, T) tokens. nanoGPT's forward, given no targets, returns only the last
    position's logits (B, 1, V): training needs every position's."""
    seq = not x.is_floating_point()
    want = (*x.shape, num_classes) if seq else (x.shape[0], num_classes)
    if tuple(logits.shape) == want:
        return
    hint = ""
    if seq and logits.dim() == 3 and logits.shape[1] == 1 and x.shape[1] > 1:
        hint = ("; it returned only the last position's logits (nanoGPT does when targets is None): return the "
                "logits of every position")
    raise ForwardOutputError(f"the model's forward returned logits of shape {tuple(logits.shape)} for a batch of "
                             f"shape {tuple(x.shape)}; expected {want}{hint}")


def describe(value: Any) -> str:
    """A short description of a forward's output, for the error."""
    if value is None:
        return "None"
    if isinstance(value, Mapping):
        keys = ", ".join(repr(k) for k in list(value)[:6])
        return f"a {type(value).__name__} with keys [{keys}]" + (" ..." if len(value) > 6 else "")
    if isinstance(value, (tuple, list)):
        inner = ", ".join(type(v).__name__ for v in value[:4]) + (", ..." if len(value) > 4 else "")
        return f"a {type(value).__name__} of ({inner})"
    return f"a {type(value).__name__}"
