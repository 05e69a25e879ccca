"""The Python API: one function per step of the pipeline, called by the `mutransfer` commands and the dashboard
alike (neither assembles a pipeline of its own).

    import mutransfer.api as mt

    store = mt.open_store("sqlite:///mutransfer.db")
    mt.sweep("recipes/quickstart.yaml", store=store)           # Ray Tune; every trial lands in the store
    fitted = mt.fit(store, "quickstart")                        # the joint model, stored as a fit
    exp = mt.export(store, "quickstart")                        # the target's config (guarded, see below)
    print(mt.render(exp, "megatron"))                           # in a launcher's format

User mistakes raise `mutransfer.errors.UsageError` (or the recipe's, store's, data's own errors), each with a
one-line message; nothing is written to the store before the inputs have been checked. Heavy libraries (torch,
Ray) are imported inside the functions that use them: `import mutransfer` stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mutransfer.errors import MutransferError, UsageError, option
from mutransfer.recipe import Recipe, RecipeError, load_recipe, stored_recipe

if TYPE_CHECKING:
    from mutransfer.compute import ComputeReport
    from mutransfer.coordcheck import CoordCheckReport
    from mutransfer.document import ExportDocument
    from mutransfer.fit import FitResult
    from mutransfer.recipe import Scale
    from mutransfer.storage import Store, SweepInfo
    from mutransfer.sweep import SweepSummary
    from mutransfer.verify import VerifyReport

__all__ = [
    "CoordCheck", "Export", "Fitted", "Verification", "check_format", "coord_check", "export", "fit", "get_sweep",
    "latest_fit", "open_store", "preflight",
    "recipe_of", "render", "render_files", "sweep", "verify",
]

Notify = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# ------------------------------------------------------------------------------------------------ store


def open_store(db: str | None = None, *, upgrade: bool = True, create: bool = True) -> Store:
    """The store at `db` (sqlite:///file.db, postgresql://...; default $MUTRANSFER_DB or ./mutransfer.db).
    `upgrade=False` opens it read-only as far as the schema goes (the dashboard). `create=False`, for work that
    reads a store that is there already: a SQLite file that does not exist is refused, not made (a mistyped path
    would otherwise leave a new, empty database behind)."""
    from mutransfer.storage import Store, StoreError, default_url

    url = db or default_url()
    if not create and (missing := _missing_file(url)) is not None:
        raise StoreError(f"no database at {missing}: check {option('db')} (default $MUTRANSFER_DB or "
                         "./mutransfer.db); `mutransfer sweep` creates one")
    return Store.open(url, upgrade=upgrade)


def _missing_file(url: str) -> Path | None:
    """The file a SQLite URL names when it does not exist; None for any other URL (or one that cannot be parsed:
    Store.open says why)."""
    from mutransfer.storage import StoreError, normalize_url

    try:
        u = normalize_url(url)
    except StoreError:
        return None
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:" or \
            "mode=memory" in u.database or u.query.get("uri") in ("true", "1"):
        return None
    path = Path(u.database)
    return None if path.exists() else path


def _fresh(url: str) -> bool:
    """Whether opening `url` would create the database or its schema (then a sweep joins Ray and checks the
    resources first: a refused recipe leaves nothing behind)."""
    from mutransfer.storage import StoreError, current_revision, make_engine, mask_url

    make_engine(url).dispose()  # a malformed URL or an unknown driver: one line now (no connection yet)
    missing = _missing_file(url)
    if missing is not None:
        if not missing.parent.is_dir():
            raise StoreError(f"cannot create database {mask_url(url)}: the folder {missing.parent} does not exist")
        return True
    try:
        return current_revision(url) is None
    except Exception:  # unreachable, or not a database: Store.open reports it in one line
        return False


def get_sweep(store: Store, ref: str | int) -> SweepInfo:
    """The sweep with this id or name, or a UsageError that lists the sweeps there are."""
    found = store.get_sweep(str(ref))
    if found is None:
        names = ", ".join(s.name for s in store.list_sweeps()[:10]) or "none yet"
        raise UsageError(f"no sweep {str(ref)!r} in the database (sweeps: {names}); `mutransfer ls` lists them")
    return found


def recipe_of(sweep: SweepInfo) -> Recipe:
    """The recipe a sweep was run with, validated again: a RecipeError naming the sweep and the field if it no longer
    validates (stored by an earlier version that let through what is refused now)."""
    return stored_recipe(sweep.recipe_json, sweep.name)


def _parametrization(recipe: Recipe, sweep_name: str, given: str | None) -> str:
    params = recipe.model.parametrizations
    param = given or ("mup" if "mup" in params else params[0])
    if param not in params:
        raise UsageError(f"{option('parametrization')}: sweep {sweep_name!r} has {', '.join(params)}, not {param!r}")
    return param


def _recipe(recipe: Recipe | str | Path, name: str | None = None) -> tuple[Recipe, str]:
    """The recipe and its text (what the store keeps), from a path or a validated `Recipe`."""
    import yaml

    if isinstance(recipe, Recipe):
        r, text = recipe, yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
    else:
        r, text = load_recipe(Path(recipe)), Path(recipe).read_text(encoding="utf-8")
    if name:
        try:
            r = Recipe.model_validate({**r.model_dump(), "name": name})
        except Exception as e:
            raise UsageError(f"{option('name')}: {name!r} is not a valid sweep name (letters, digits, '-', '_', '.')") from e
    return r, text


# ------------------------------------------------------------------------------------------------ checks


@dataclass(frozen=True)
class CoordCheck:
    report: CoordCheckReport
    check_id: int | None  # None: not stored
    sweep_name: str | None  # the sweep it was stored with, if the recipe has one in the store


def coord_check(recipe: Recipe | str | Path, parametrization: str | None = None, *,
                widths: Sequence[int] | None = None, depths: Sequence[int] | None = None, steps: int = 3,
                lr: float | None = None, store: Store | None = None) -> CoordCheck:
    """Train the recipe's model a few steps at several widths (or depths) and judge each layer; stored in `store`
    when given (with the recipe's sweep when the store has it)."""
    from mutransfer.coordcheck import KIND, KIND_DEPTH, run_coord_check

    if widths is not None and depths is not None:
        raise UsageError(f"{option('widths')}, {option('depths')}: give one of them (a check varies width or depth, not both)")
    r, _ = _recipe(recipe)
    params = r.model.parametrizations
    param = parametrization or ("mup" if "mup" in params else params[0])
    if param not in ("mup", "sp"):
        raise UsageError(f"{option('parametrization')}: use mup or sp, not {param!r}")
    rep = run_coord_check(r, param, widths, depths=depths, steps=steps, lr=lr)
    if store is None:
        return CoordCheck(rep, None, None)
    found = store.get_sweep(r.name) if r.name else None
    sweep_id = found.id if found is not None and found.recipe_hash == r.hash() else None
    kind = KIND_DEPTH if depths is not None else KIND
    check_id = store.save_check(sweep_id, kind, param, rep.passed, rep.summary(), rep.to_dict())
    return CoordCheck(rep, check_id, found.name if sweep_id is not None else None)


def _coord_gate(r: Recipe, where: str, dataset: Any, notify: Notify) -> list[Any]:
    """The coordinate check of each µP parametrization before a sweep; a failure refuses it."""
    from mutransfer.coordcheck import KIND, CheckError, run_coord_check
    from mutransfer.storage import CheckRecord

    records = []
    for param in r.model.parametrizations:
        if param != "mup":
            continue  # SP is expected to blow up: nothing to gate
        # A failure is the model's, as the recipe names it: a user's builder, or a built-in with its settings.
        field = "model" if r.model.is_builtin else "model.family"
        try:
            rep = run_coord_check(r, param, dataset=dataset)
        except CheckError as e:
            raise CheckError(f"{field}: {e}") from e
        if not rep.passed:
            raise UsageError(f"{field}: {rep.headline(where)}, or pass {option('check=False')} to sweep anyway")
        flat = [x.slope for x in rep.layers if x.verdict == "flat"] or [0.0]
        notify(f"coordinate check ({param}): passed, every layer flat in width (slopes {min(flat):+.2f}..{max(flat):+.2f}"
               f" within {rep.vanish:+.2f}..{rep.blow_up:+.2f}, attention logits included; widths {rep.widths[0]}.."
               f"{rep.widths[-1]}, {rep.seconds:.1f}s)")
        records.append(CheckRecord(kind=KIND, parametrization=param, passed=rep.passed, summary=rep.summary(),
                                   result=rep.to_dict()))
    return records


# ------------------------------------------------------------------------------------------------ sweep


def sweep(recipe: Recipe | str | Path, *, store: Store | None = None, db: str | None = None,
          name: str | None = None, address: str | None = None, progress: bool = False, check: bool = True,
          notify: Notify = _quiet) -> SweepSummary:
    """Run (or resume) the sweep of `recipe` (a YAML path or a `Recipe`) with Ray Tune, into `store` (else the one
    at `db`). The recipe, its data and its builder are checked first, then for µP the coordinate check; a database
    that is not there yet is created only after those and Ray's resource check: a refused sweep writes nothing.
    `address`: a Ray cluster (default: Ray in this process)."""
    from mutransfer.ray_setup import check_resources, init_ray
    from mutransfer.storage import default_url
    from mutransfer.sweep import run_sweep

    r, text = _recipe(recipe, name)
    url = db or default_url()
    fresh = store is None and _fresh(url)  # reads only: creates neither a file nor a schema
    if store is None and not fresh:
        store = open_store(url)  # there already: a bad URL or an unreachable server fails now, before the checks
    dataset = preflight(r)  # bad data and a builder that cannot build fail here, before anything is written
    checks = _coord_gate(r, str(recipe) if not isinstance(recipe, Recipe) else "recipe", dataset, notify) \
        if check else []
    if store is None:
        # A new database: every trial will run, so Ray is needed; join it and check the resources before the
        # schema is created, so that a refused recipe (or an unreachable cluster) leaves no file behind.
        init_ray(r, address)
        check_resources(r)
        store = open_store(url)
    notify(f"sweep {r.name!r} -> {store.masked_url}")
    return run_sweep(r, store, recipe_text=text, address=address, progress=progress, checks=checks)


def preflight(recipe: Recipe) -> Any:
    """What a sweep checks before it trains, without training: the data loads and is long enough for every scale
    point, and the model builds at every scale point (on the meta device). Returns the dataset."""
    from mutransfer.data import load_dataset
    from mutransfer.parametrization import build_config, builder, construct, is_builtin
    from mutransfer.plan import spec_for

    dataset = load_dataset(recipe.data, recipe.model)
    family = recipe.model.family
    fn, builtin = builder(family), is_builtin(family)
    for param in recipe.model.parametrizations:
        for point in recipe.scales.points():
            dataset.check(point.seq_len)
            cfg = build_config(spec_for(recipe, param, point, 0, 0, {}), dataset)
            where, what = ("model", f"the {family} model") if builtin else ("model.family", "the builder")
            try:
                construct(fn, cfg, "meta", builtin)
            except MutransferError:
                raise
            except Exception as e:
                raise RecipeError(f"{where}: {what} cannot build the {param} model at {point.tag()}: "
                                  f"{type(e).__name__}: {' '.join(str(e).split())[:300]}") from e
            if point == recipe.scales.base:
                _check_forward(cfg, family, f"{where}: {what}'s {param} model at {point.tag()}")
    return dataset


def _check_forward(cfg: Any, family: str, where: str) -> None:
    """One forward pass on a batch of two, on the meta device (free; base shapes set, as MuReadout needs): the
    output must hold logits of the data's shape. A model or forward that cannot run on meta is left to the first
    trial."""
    import torch

    from mutransfer.logits import ForwardOutputError, check_logits, logits_of
    from mutransfer.parametrization import build_with_shapes

    try:
        model = build_with_shapes(cfg, family, "meta")[0]
    except Exception:
        return
    device = next((p.device for p in model.parameters()), torch.device("meta"))
    with torch.no_grad():
        if cfg.input_dim is not None:
            x = torch.zeros(2, cfg.input_dim, device=device)
        else:
            x = torch.zeros(2, cfg.seq_len, dtype=torch.long, device=device)
        try:
            out = model(x)
        except Exception:
            return
        try:
            check_logits(logits_of(out), x, cfg.num_classes)
        except ForwardOutputError as e:
            raise RecipeError(f"{where}: {e}") from None


# ------------------------------------------------------------------------------------------------ fit


@dataclass(frozen=True)
class Fitted:
    sweep: SweepInfo
    recipe: Recipe
    result: FitResult
    fit_id: int | None  # None: computed, not stored
    compute: ComputeReport | None = None


def _completed_frame(store: Store, s: SweepInfo) -> Any:
    """The sweep's trials as the fit reads them (stopped ones with their floors), or a one-line reason why there is
    nothing to fit."""
    from mutransfer.fit.stopped import fit_frame

    frame = fit_frame(store, s.id, s.metric_name)
    if len(frame) and (frame["status"] == "completed").any():
        return frame
    counts = frame["status"].value_counts().to_dict() if len(frame) else {}
    finished = sum(counts.get(k, 0) for k in ("diverged", "failed", "stopped"))
    if finished and finished == len(frame):
        detail = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        raise UsageError(f"sweep {s.name!r} has no completed trial ({detail}): lower the top of the learning-rate "
                         "range (diverged) or see `mutransfer show` for the errors (failed)")
    raise UsageError(f"sweep {s.name!r} has no completed trial yet: run `mutransfer sweep` on its recipe first")


def _compute(frame: Any, recipe: Recipe, result: FitResult) -> ComputeReport:
    """The sweep's FLOPs against the target's 6·N·D (mutransfer.compute); the target is built on meta."""
    from mutransfer.compute import compute_report

    try:
        return compute_report(frame, recipe, fit=result)
    except (ValueError, TypeError, RuntimeError) as e:
        # A target the builder refuses (e.g. a size it cannot make) is the recipe's problem: say which field.
        raise UsageError(f"target: cannot build the target to count its parameters: {str(e).splitlines()[0]}") \
            from e


def fit(store: Store, sweep: str | int, *, seed: int = 0, save: bool = True) -> Fitted:
    """Fit the sweep's trials (mutransfer.fit.fit_sweep) and, with `save`, store the fit; with its compute."""
    from mutransfer.fit import fit_sweep

    s = get_sweep(store, sweep)
    frame = _completed_frame(store, s)
    recipe = recipe_of(s)
    result = fit_sweep(frame, recipe, seed=seed)
    compute = _compute(frame, recipe, result)  # before storing: a target that cannot be built stores nothing
    fit_id = store.save_fit(s.id, result.to_dict()) if save else None
    return Fitted(s, recipe, result, fit_id, compute)


def latest_fit(store: Store, sweep: str | int) -> Fitted:
    """The sweep's latest stored fit, else one computed from its trials (not stored)."""
    from mutransfer.fit import FitResult, fit_sweep

    s = get_sweep(store, sweep)
    recipe = recipe_of(s)
    latest = store.latest_fit(s.id)
    if latest is not None:
        return Fitted(s, recipe, FitResult.from_dict(latest[1]), latest[0])
    return Fitted(s, recipe, fit_sweep(_completed_frame(store, s), recipe), None)


# ------------------------------------------------------------------------------------------------ export


@dataclass(frozen=True)
class Export:
    sweep: SweepInfo
    recipe: Recipe
    fit_id: int | None
    parametrization: str
    why: str | None  # why this parametrization, when the sweep has more than one and none was asked for
    config: dict[str, Any]  # the export document as a plain dict (mutransfer.export.export_config): YAML/JSON
    problem: str | None = None  # the extrapolation guard's finding, exported anyway (allow_extrapolation)

    @property
    def document(self) -> ExportDocument:
        """`config` as the typed document (mutransfer.document), read by attribute: `exp.document.target.width`."""
        from mutransfer.document import ExportDocument

        return ExportDocument.from_config(self.config)


def check_format(sweep: SweepInfo, fmt: str) -> None:
    """A UsageError, before any work, for a format that does not exist or cannot describe the sweep's model."""
    from mutransfer.gpt_shape import missing_options, refusal
    from mutransfer.launchers import FORMATS, format_problem

    if fmt not in FORMATS:
        raise UsageError(f"{option('fmt')}: {fmt!r} is not a format: use {', '.join(FORMATS)}")
    if fmt in ("yaml", "json"):
        return
    model = recipe_of(sweep).model
    if model.family == "mlp":
        raise UsageError(f"{option('fmt')}: {fmt} describes a GPT, and sweep {sweep.name!r} is a {model.family!r} model: "
                         f"use {option('fmt')} yaml or json")
    problem = format_problem(fmt, model.family)
    if problem is not None:
        raise UsageError(f"{option('fmt')}: sweep {sweep.name!r} is an {model.family!r} model: {problem}")
    missing = missing_options(model.options) if not model.is_builtin else []
    if missing:  # a user's builder that does not declare its GPT shape (mutransfer.gpt_shape)
        raise UsageError(refusal(fmt, model.family, missing, sweep=sweep.name))


def export(store: Store, sweep: str | int, *, parametrization: str | None = None,
           allow_extrapolation: bool = False, save: bool = True) -> Export:
    """The tuned config of the sweep's target, from its latest fit (fitted now if it has none; stored if `save`).

    Not told which parametrization: the one the fit predicts trains the better target, else µP (`Export.why`
    says). A transferred value outside the searched range or with too wide an interval raises UsageError, unless
    `allow_extrapolation` (then the document says so under `extrapolation`)."""
    from mutransfer.export import (
        choice_of,
        data_sizes,
        default_parametrization,
        export_config,
        extrapolation_problem,
        target_build_config,
    )
    from mutransfer.param_groups import describe_groups

    f = latest_fit(store, sweep)
    s, recipe, result = f.sweep, f.recipe, f.result
    if parametrization is not None:
        _parametrization(recipe, s.name, parametrization)
    param = parametrization or default_parametrization(result)
    why = choice_of(result, param)["why"] if parametrization is None and len(result.parametrizations) > 1 else None
    problem = extrapolation_problem(recipe, result, param)
    if problem is not None and not allow_extrapolation:
        # before anything is stored
        raise UsageError(f"{problem}; {option('allow_extrapolation=True')} exports it anyway")
    fit_id = f.fit_id
    if fit_id is None and save:
        fit_id = store.save_fit(s.id, result.to_dict())
    cfg = target_build_config(recipe, param, result)
    groups = [g.to_dict() for g in describe_groups(cfg, recipe.model.family, recipe.train.optimizer)]
    compute = _compute(store.trials_frame(s.id), recipe, result)
    config = export_config(recipe, result, sweep_name=s.name, sweep_id=s.id, recipe_hash=s.recipe_hash,
                           param_groups=groups, parametrization=param, data_sizes=data_sizes(cfg),
                           compute=compute.to_dict())
    if problem is not None:
        config["extrapolation"] = {"allowed": True, "problem": problem}
    return Export(s, recipe, fit_id, param, why, config, problem)


def _config(exp: Export | dict[str, Any]) -> dict[str, Any]:
    return exp.config if isinstance(exp, Export) else exp


def render(exp: Export | dict[str, Any], fmt: str = "yaml", *, nproc: int = 1,
           micro_batch_size: int | None = None) -> str:
    """The export as text in `fmt` (mutransfer.launchers.FORMATS); a format that cannot take it raises
    UsageError with the launcher's one-line reason. `nproc`: processes (GPUs) per node, which split the batch."""
    from mutransfer.launchers import LauncherError, render_format

    try:
        text = render_format(_config(exp), fmt, nproc=nproc, micro_batch_size=micro_batch_size)
    except LauncherError as e:
        raise UsageError(*e.args) from e  # the launcher's message as written: the CLI spells its options
    return text if text.endswith("\n") else text + "\n"


def render_files(exp: Export | dict[str, Any], fmt: str = "hf", *, nproc: int = 1,
                 micro_batch_size: int | None = None) -> dict[str, Any]:
    """A format that is several files (hf: config.json and training_args.json): file name -> JSON document."""
    from mutransfer.launchers import LauncherError, hf_files

    if fmt != "hf":
        raise UsageError(f"{option('fmt')}: {fmt} is one file: use render()")
    try:
        return hf_files(_config(exp), nproc=nproc, micro_batch_size=micro_batch_size)
    except LauncherError as e:
        raise UsageError(*e.args) from e


# ------------------------------------------------------------------------------------------------ verify


@dataclass(frozen=True)
class Verification:
    scale: Scale
    hparam: str
    reports: list[VerifyReport]
    # With more than one parametrization: the side-by-side rows and the one-line verdict.
    side_by_side: tuple[list[dict[str, str]], str] | None


def verify(store: Store, sweep: str | int, *, sizes: dict[str, int] | None = None, hparam: str = "lr",
           factors: Sequence[float] = (0.5, 2.0), repeats: int = 1, parametrization: str | None = None,
           address: str | None = None, progress: bool = False, notify: Notify = _quiet) -> Verification:
    """Train the transferred value (and x `factors` of it) at a size larger than any proxy (`sizes`: width,
    depth, batch_size, seq_len; default the recipe's verification size), each parametrization of the sweep
    unless one is given; store the trials and each parametrization's verdict as a check."""
    from mutransfer.sweep import run_trials
    from mutransfer.verify import plan_verification, report, side_by_side, verify_scale

    f = latest_fit(store, sweep)
    s, recipe, result = f.sweep, f.recipe, f.result
    params = [_parametrization(recipe, s.name, parametrization)] if parametrization else \
        list(recipe.model.parametrizations)
    scale = verify_scale(recipe, dict(sizes or {}))
    plans = {p: plan_verification(recipe, result, scale, parametrization=p, hparam=hparam,
                                  factors=tuple(factors), repeats=repeats) for p in params}
    specs = [x for p in params for x in plans[p]]
    shown = ", ".join(sorted({k.rsplit('-x', 1)[1].split('-r')[0] for k in (x.key for x in specs)}))
    notify(f"verify {s.name}: {len(specs)} trials at {scale.tag()} ({', '.join(params)}), {hparam} x {shown}")
    run_trials(recipe, store, s.id, specs, role="verify", address=address, progress=progress)
    frame = store.trials_frame(s.id)
    reports = []
    for p in params:
        rep = report(frame, plans[p], hparam)
        reports.append(rep)
        store.save_check(s.id, "verify", p, rep.transferred_is_best, rep.summary(), rep.to_dict())
    both = side_by_side(reports, result, scale) if len(reports) > 1 else None
    return Verification(scale, hparam, reports, both)
