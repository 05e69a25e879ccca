"""The export document's schema: what `mutransfer export --format yaml|json` writes, as pydantic models.

`mutransfer.export.export_config` builds the document as a plain dict (rendered to YAML/JSON as it is);
`ExportDocument.from_config` (or `load_document`) reads one back, the dict or a YAML/JSON file, and checks it once,
at the edge: a missing, misspelt, stale or mistyped field of a (hand-edited) export is a `DocumentError` whose one
line names its path, e.g. ``target.width: missing from the export (export it again with this mutransfer)``. The
launcher formats (`mutransfer.launchers`), `mutransfer.target` and `mutransfer.runtime` then read the document by
attribute: ``doc.target.width``, ``doc.mup.rules.hidden.lr_scale``.

The sections they read forbid unknown keys. A field every export has is required; one that only some exports have
(the vocabulary of a GPT, the input size of an MLP, the heads of a user's builder) is optional here, and the reader
that needs it says so. The reports (fit checks, warnings, compute, conventions, the predicted metric) are plain
dicts and lists: nothing reads them back as inputs. Pure: pydantic only, no torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mutransfer.errors import MutransferError

__all__ = [
    "AttentionRule", "DepthSection", "DocumentError", "EmbeddingRule", "ExportDocument", "FixedRule",
    "Hyperparameter", "KindRule", "ModelSection", "Multipliers", "MupRules", "MupSection", "OptimizerSection",
    "ParamGroup", "Provenance", "ReadoutRule", "ScheduleSection", "TargetSection", "load_document", "read_export",
]

AGAIN = "export it again with this mutransfer"


class DocumentError(MutransferError, ValueError):
    """An export this mutransfer cannot read: one line naming the field path and what to do."""


class _Section(BaseModel):
    # strict: a hand-edited "256" or true is not a width; an int is a float.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, strict=True)


# --------------------------------------------------------------------------------------------- provenance


class SweepRef(_Section):
    name: str
    id: int


class FitRef(_Section):
    metric: str
    seed: int
    n_boot: int


class Provenance(_Section):
    sweep: SweepRef
    recipe_name: str | None = None
    recipe_hash: str
    created: str
    mutransfer_version: str
    fit: FitRef


# --------------------------------------------------------------------------------------------- model and target


class Multipliers(_Section):
    """The µP multipliers at their base-width values (transferred by the fit, else the recipe's)."""

    init_std: float | None = None  # None: the family's default
    output_mult: float = 1.0
    embed_mult: float = 1.0
    attn_mult: float = 1.0


class DepthSection(_Section):
    """The depth rule and its factors at the target (mutransfer.conventions.depth_section); exports written
    before depth scaling have none: these defaults, plain residual sums."""

    scaling: Literal["none", "depth-mup", "completep"] = "none"
    alpha: float = 0.0
    base_depth: int | None = None
    residual: bool = False
    eps_scaling: Literal["none", "width"] = "none"
    depth_mult: float = 1.0
    branch_multiplier: float = 1.0
    block_lr_scale: float = 1.0


class ModelSection(_Section):
    """The architecture as the proxies had it: family (gpt, hf-llama, mlp or a builder 'package.module:function'),
    sizes."""

    family: str
    base_width: int
    head_dim: int | None = None
    n_heads: int | None = None
    ffn_ratio: float | None = None
    input_dim: int | None = None  # the mlp's
    vocab_size: int | None = None  # a GPT's
    num_classes: int | None = None
    multipliers: Multipliers
    depth: DepthSection = Field(default_factory=DepthSection)
    # The readout shares the token embedding's weight (recipe model.tie_embeddings); exports before it have none.
    tie_embeddings: bool = False
    options: dict[str, Any] = Field(default_factory=dict)  # model.options, handed to a user's builder


class ProxyBase(_Open):
    """The base proxy's scale (mutransfer.recipe.Scale): a report."""

    width: int
    depth: int
    batch_size: int
    seq_len: int
    steps: int | None = None


class TargetSection(_Section):
    """The target's size; a GPT's heads and FFN ratio (the built-in gpt's, or those a builder declares)."""

    width: int
    depth: int
    batch_size: int
    seq_len: int
    tokens: int | None = None
    head_dim: int | None = None
    n_heads: int | None = None
    ffn_ratio: float | None = None
    vocab_size: int | None = None
    # hf-llama's LlamaConfig at the target beyond the gpt's keys (mutransfer.hf_llama.llama_config; rope_theta and
    # rms_norm_eps, when set, are in model.options)
    kv_heads: int | None = None
    intermediate_size: int | None = None


# --------------------------------------------------------------------------------------------- training


class Hyperparameter(_Section):
    """One tuned value: where it came from ("fit", "recipe", ...), its interval and laws when fitted."""

    source: str
    value: Any = None
    interval: list[float | None] | None = None
    coordinate: Literal["log2", "linear"] | None = None
    base_optimum: dict[str, Any] | None = None
    laws: dict[str, dict[str, Any]] | None = None
    rule: str | None = None
    unstable: bool | None = None
    note: str | None = None
    transfers: bool | None = None


class OptimizerSection(_Section):
    name: Literal["adam", "adamw", "sgd"]
    lr: float  # the base-width LR (under µP each parameter kind scales it: see mup.rules)
    weight_decay: float = 0.0
    betas: list[float] | None = None
    eps: float | None = None
    momentum: float | None = None
    grad_clip: float | None = None


class ScheduleSection(_Section):
    kind: Literal["constant", "cosine", "linear", "warmup"] = "constant"
    warmup_steps: int = 0
    min_lr_frac: float = 0.0
    proxy_steps: int | None = None
    warmup_fraction: float | None = None
    target_steps: int | None = None  # None: the recipe gives no target.tokens
    target_warmup_steps: int | None = None
    note: str | None = None


# --------------------------------------------------------------------------------------------- µP


class KindRule(_Section):
    """The LR, weight decay and init of one parameter kind at the target (hidden, vector_like)."""

    applies_to: str | None = None
    lr: float
    lr_scale: float
    weight_decay: float
    weight_decay_scale: float
    init_std: float | None = None
    init_std_scale: float | None = None
    init_note: str | None = None


class FixedRule(_Section):
    """MuSGD's parameters with no width dimension."""

    applies_to: str | None = None
    lr: float
    lr_scale: float = 1.0
    weight_decay: float


class ReadoutRule(_Section):
    init: str = "zeros"  # "tied": the readout is the token embedding's weight, with its init
    output_multiplier: float  # output_mult / width_mult
    formula: str | None = None


class EmbeddingRule(_Section):
    multiplier: float = 1.0
    formula: str | None = None


class AttentionRule(_Section):
    scale: float  # attn_mult * sqrt(base_head_dim) / head_dim
    formula: str | None = None
    base_head_dim: int
    head_dim: int
    query_init: str = "zeros"


class MupRules(_Section):
    hidden: KindRule
    vector_like: KindRule
    readout: ReadoutRule
    embedding: EmbeddingRule = Field(default_factory=EmbeddingRule)
    attention: AttentionRule | None = None  # a GPT's
    fixed: FixedRule | None = None  # MuSGD's


class ParamGroup(_Open):
    """One parameter group (mutransfer.param_groups.describe_groups, or the caller's own): its keys are kept."""

    name: str | None = None
    kind: str | None = None
    lr_mult: float
    lr: float
    weight_decay: float | None = None
    init: str | None = None
    init_std: float | None = None
    forward_mult: float | None = None


class MupSection(_Section):
    base_width: int
    target_width: int
    width_mult: float
    optimizer: Literal["adam", "adamw", "sgd"]
    rules: MupRules
    param_groups: list[ParamGroup] | None = None


class Extrapolation(_Section):
    allowed: bool
    problem: str


# --------------------------------------------------------------------------------------------- the document


class ExportDocument(_Section):
    """The whole export. `mup` under µP, `scaling` (a sentence) under SP."""

    provenance: Provenance
    parametrization: Literal["mup", "sp"]
    model: ModelSection
    proxy_base: ProxyBase | None = None
    target: TargetSection
    hyperparameters: dict[str, Hyperparameter]
    optimizer: OptimizerSection
    schedule: ScheduleSection
    conventions: dict[str, str] = Field(default_factory=dict)
    mup: MupSection | None = None
    scaling: str | None = None
    compute: dict[str, Any] | None = None
    parametrization_choice: dict[str, Any] | None = None
    predicted_metric: dict[str, Any] | None = None
    fit_checks: dict[str, Any] = Field(default_factory=dict)
    warnings: list[dict[str, Any]] = Field(default_factory=list)
    extrapolation: Extrapolation | None = None

    @classmethod
    def from_config(cls, source: ExportDocument | Mapping[str, Any] | str | Path,
                    error: type[MutransferError] | None = None) -> ExportDocument:
        """The document of an export dict (`export_config`'s) or YAML/JSON file, checked: a DocumentError naming
        the first field that is wrong otherwise (or the same message as `error`, the caller's own error class). A
        document is returned as it is."""
        if error is not None:
            try:
                return cls.from_config(source)
            except DocumentError as e:
                raise error(*e.args) from e
        if isinstance(source, ExportDocument):
            return source
        if isinstance(source, (str, Path)):
            source = read_export(source)
        if not isinstance(source, Mapping):
            raise DocumentError(f"config: a {type(source).__name__} is not an export (a mapping of sections)")
        try:
            return cls.model_validate(dict(source))
        except ValidationError as e:
            raise DocumentError(_one_line(e)) from e


def load_document(source: ExportDocument | Mapping[str, Any] | str | Path) -> ExportDocument:
    """`ExportDocument.from_config`."""
    return ExportDocument.from_config(source)


def read_export(path: str | Path) -> dict[str, Any]:
    """An export file (YAML or JSON: JSON is YAML) as a dict, unchecked."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DocumentError(f"{p}: cannot read: {getattr(e, 'strerror', None) or e}") from e
    try:
        doc = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise DocumentError(f"{p}: not a YAML/JSON export: {str(e).splitlines()[0]}") from e
    if not isinstance(doc, dict):
        raise DocumentError(f"{p}: not an export (a mapping with model, target, optimizer sections)")
    return doc


_TYPES = {"int_type": "int", "int_parsing": "int", "int_from_float": "int", "float_type": "float",
          "float_parsing": "float", "string_type": "str", "bool_type": "bool", "bool_parsing": "bool",
          "dict_type": "dict", "model_type": "dict", "model_attributes_type": "dict", "list_type": "list"}


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"


def _one_line(err: ValidationError) -> str:
    """The first problem as `path: what (what to do)`; how many more there are."""
    errors = err.errors()
    e = errors[0]
    path, kind, value = _path(e["loc"]), e["type"], e.get("input")
    if kind == "missing" or (value is None and kind in _TYPES):
        msg = f"{path}: missing from the export ({AGAIN})"
    elif kind == "extra_forbidden":
        msg = f"{path}: not a field of the export (misspelt, or from another version: {AGAIN})"
    elif kind == "literal_error":
        msg = f"{path}: {value!r} is not one of {(e.get('ctx') or {}).get('expected')}"
    elif kind in _TYPES:
        msg = f"{path}: {value!r} is not a {_TYPES[kind]}"
    else:
        msg = f"{path}: {e['msg']}"
    return msg + (f"; and {len(errors) - 1} more" if len(errors) > 1 else "")
