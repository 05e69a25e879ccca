"""How a recipe is checked and how its problems read: the strict base of every section, the positive number
types, and errors that name the field path (`RecipeError`, `at`, `format_error`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from mutransfer.errors import MutransferError
from mutransfer.recipe.bounds import INT64_MAX, MAX_BATCH_SIZE, MAX_DEPTH, MAX_SEQ_LEN, MAX_VOCAB, MAX_WIDTH


class RecipeError(MutransferError, ValueError):
    """A recipe that cannot be used. The message is one line: `field.path: what is wrong`."""


class Strict(BaseModel):
    """The base of every recipe section: unknown keys refused, values frozen, every float finite (an inf would run
    trials at lr = Infinity and be stored as JSON null, which no longer reads back)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def at_most(limit: int, why: str) -> Callable[[int], int]:
    """A validator refusing integers above `limit` (a bound of mutransfer.recipe.bounds), saying `why`."""

    def check(v: int) -> int:
        if v > limit:
            raise ValueError(f"{v} is above {limit}, {why} (mutransfer.recipe.bounds)")
        return v

    return check


_STORABLE = AfterValidator(at_most(INT64_MAX, "the largest integer the store can hold (64 bits)"))
PositiveInt = Annotated[int, Field(gt=0), _STORABLE]
NonNegativeInt = Annotated[int, Field(ge=0), _STORABLE]
PositiveFloat = Annotated[float, Field(gt=0)]
# Model sizes, bounded against typos and hostile input (see mutransfer.recipe.bounds), far above real models.
SIZE_CHECKS = {
    "width": at_most(MAX_WIDTH, "the widest model a recipe may ask for"),
    "depth": at_most(MAX_DEPTH, "the deepest model a recipe may ask for"),
    "batch_size": at_most(MAX_BATCH_SIZE, "the largest batch a recipe may ask for"),
    "seq_len": at_most(MAX_SEQ_LEN, "the longest sequence a recipe may ask for"),
    "vocab_size": at_most(MAX_VOCAB, "the largest vocabulary a recipe may ask for"),
}
Width = Annotated[PositiveInt, AfterValidator(SIZE_CHECKS["width"])]
Depth = Annotated[PositiveInt, AfterValidator(SIZE_CHECKS["depth"])]
BatchSize = Annotated[PositiveInt, AfterValidator(SIZE_CHECKS["batch_size"])]
SeqLen = Annotated[PositiveInt, AfterValidator(SIZE_CHECKS["seq_len"])]
VocabSize = Annotated[PositiveInt, AfterValidator(SIZE_CHECKS["vocab_size"])]


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
