"""How a recipe is checked and how its problems read: the strict base of every section, the positive number
types, and errors that name the field path (`RecipeError`, `at`, `format_error`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mutransfer.errors import MutransferError


class RecipeError(MutransferError, ValueError):
    """A recipe that cannot be used. The message is one line: `field.path: what is wrong`."""


class Strict(BaseModel):
    """The base of every recipe section: unknown keys refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class FieldError(ValueError):
    """A validator's problem that names its own field path (a check across fields, reported where it points)."""

    def __init__(self, path: str, msg: str) -> None:
        super().__init__(msg)
        self.path = path
        self.msg = msg


def at(path: str, msg: str) -> FieldError:
    """The error a validator raises for `path` (e.g. "model.base_depth"): its message reads `path: msg`."""
    return FieldError(path, msg)


def format_error(err: ValidationError) -> str:
    """Pydantic's first error as one line, `field.path: problem`, the path as the YAML spells it."""
    e = err.errors()[0]
    ctx_err = (e.get("ctx") or {}).get("error")
    if isinstance(ctx_err, FieldError):
        return f"{ctx_err.path}: {ctx_err.msg}"
    # Drop pydantic's union-branch names (e.g. 'LogUniform') so the path reads like the YAML.
    loc = [str(p) if isinstance(p, int) or str(p).isidentifier() else repr(p)  # a key like "\n" stays on one line
           for p in e["loc"] if not (isinstance(p, str) and (p[:1].isupper() or "[" in p))]
    path = ".".join(loc) or "recipe"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key (check its spelling; see the README's recipe format)"
    elif e["type"] == "missing":
        msg = "required field is missing"
    elif isinstance(e.get("input"), (str, int, float)) and e["type"] not in ("value_error", "assertion_error"):
        msg = f"{msg} (got {e['input']!r})"
    if len(err.errors()) > 1 and {x["loc"][:1] for x in err.errors()} != {e["loc"][:1]}:
        msg += f" (and {len(err.errors()) - 1} more problems)"
    return f"{path}: {msg}".replace("\r", "\\r").replace("\n", "\\n")  # one line, whatever the YAML held
