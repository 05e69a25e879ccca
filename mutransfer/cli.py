"""The `mutransfer` command. Each command is a few lines of glue; user mistakes exit 2 with one line."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import typer.core

from mutransfer.errors import MutransferError, UsageError
from mutransfer.interruption import Interrupted
from mutransfer.recipe import load_recipe

# Typer ships its own copy of click; its UsageError is the base of the public typer.BadParameter.
CLICK_USAGE_ERROR: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class OneLineUsage(typer.core.TyperGroup):
    """Click's usage errors (an unknown option, a missing argument) in one line and exit 2, like every other user
    mistake here, instead of click's usage box."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except CLICK_USAGE_ERROR as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # `mutransfer` alone, `mutransfer db`: the help
                e.show()
                sys.exit(e.exit_code)
            where = f" (`{e.ctx.command_path} --help` lists the options)" if e.ctx is not None else ""
            typer.echo(f"error: {' '.join(e.format_message().split())}{where}", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineUsage, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Tune small µP proxies with Ray Tune, store every trial in SQL, fit transfer curves, export a target config.",
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema commands.")
app.add_typer(db_app, name="db")

DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Database URL (sqlite:///file.db, postgresql://...). Default: $MUTRANSFER_DB or "
                              "./mutransfer.db", show_default=False),
]
F = TypeVar("F", bound=Callable[..., Any])


# A mistake the user can fix: printed as one line, exit code 2.
UserError = UsageError

# The API arguments whose flag is not their name with dashes (library messages name arguments, see
# mutransfer.errors.option; the flag is `--` + the name with `_` -> `-` otherwise).
FLAGS = {"fmt": "--format", "nproc": "--nproc-per-node", "check=False": "--skip-check", "allow_extrapolation=True": "--allow-extrapolation"}


def flag(name: str) -> str:
    """The command-line spelling of an API argument named in an error message."""
    return FLAGS.get(name) or "--" + name.replace("_", "-")


def _user_errors(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MutransferError as e:  # every user-fixable error; anything else is a bug and keeps its traceback
            text = e.render(flag).strip()
            typer.echo(f"error: {text.splitlines()[0] if text else type(e).__name__}", err=True)
            raise typer.Exit(2) from None
        except Interrupted as e:  # SIGINT or SIGTERM of a sweep: the same command resumes it
            command = shlex.join(["mutransfer", *sys.argv[1:]])
            typer.echo(f"interrupted by {e.signal_name}: {e}; resume with: {command}", err=True)
            raise typer.Exit(e.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _store(db: str | None, *, upgrade: bool = True, create: bool = False) -> Any:
    """The store at --db. Only the commands that may start one (sweep, coord-check, db upgrade) create it."""
    from mutransfer.api import open_store

    return open_store(db, upgrade=upgrade, create=create)


def _sweep(store: Any, ref: str) -> Any:
    from mutransfer.api import get_sweep

    return get_sweep(store, ref)


def _console() -> Any:
    """A rich console; piped or captured (a log, CI, grep) rich would fall back to 80 columns and cut sweep names
    and intervals short, so then it gets a width that fits every table here."""
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=200)


@app.command()
@_user_errors
def validate(recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")]) -> None:
    """Check a recipe and print its trial plan, without running anything."""
    from mutransfer.api import preflight
    from mutransfer.plan import plan, refine_total

    r = load_recipe(recipe)
    specs = plan(r)
    preflight(r)  # the data and the builder, as `sweep` checks them before it trains
    points = r.scales.points()
    search = r.search
    how = "optuna (TPE)" if search.method == "optuna" else (
        "random search, Latin hypercube" if search.sampler == "latin" else "random search")
    typer.echo(f"ok: {recipe} -> sweep {r.name!r}, {len(specs)} trials "
               f"({len(r.model.parametrizations)} parametrization(s) x {len(points)} scale point(s) x "
               f"{search.samples} samples x {search.repeats} repeat(s)), {how}")
    for p in points:
        typer.echo(f"  {p.tag()}: {r.steps_at(p)} steps")
    if (es := search.early_stop) is not None:
        rule = (f"asha, rungs at step {es.grace_steps} x {es.reduction_factor:g}^k, the best "
                f"1/{es.reduction_factor:g} of each scale point go on" if es.method == "asha" else
                f"median rule from step {es.grace_steps}, once {es.min_samples} others of the scale point got there")
        typer.echo(f"  early stop: {rule}")
    if (rf := search.refine) is not None:
        alloc = ("at every scale point" if rf.allocate == "even" else
                 "at each parametrization's cheapest point, elsewhere what the same FLOPs buy (by_cost)")
        typer.echo(f"  refine: {rf.rounds} round(s) of {rf.samples} draws {alloc}, within {rf.span:g} of each "
                   f"range around the fitted optimum: up to {refine_total(r)} more trials")
    typer.echo(f"  target: width {r.target.width}, depth {r.target.depth}, batch {r.target.batch_size}, "
               f"seq {r.target.seq_len}")


@app.command("coord-check")
@_user_errors
def coord_check(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    parametrization: Annotated[str | None, typer.Option(help="mup or sp (default: mup if the recipe has it).")]
    = None,
    widths: Annotated[str | None, typer.Option(help="Comma-separated widths (default: base_width x 1, 2, 4, 8).")]
    = None,
    depths: Annotated[str | None, typer.Option(help="Comma-separated depths, e.g. 2,4,8,16: check over depth at the "
                                                    "base width instead of over width.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="HTML plot to write (default: "
                                                "<recipe name>-coord-check.html, -coord-check-depth.html with "
                                                "--depths).")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps per width.")] = 3,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: 3e-3 for Adam/AdamW, 0.1 for SGD).")]
    = None,
    db: DbOpt = None,
    store: Annotated[bool, typer.Option("--store/--no-store", help="Store the result (with the recipe's sweep "
                                                                   "when it has one).")] = True,
) -> None:
    """Train the recipe's model a few steps at several widths; say which layers blow up or vanish with width.

    Exit code 0 when the check passes (or the model is SP: it is expected to blow up), 1 when a µP model fails it.
    With --depths, the same over depth: 1 when a model with depth scaling fails it (without, growth is expected).
    """
    from rich.markup import escape

    from mutransfer import api
    from mutransfer.coordcheck import parse_depths, parse_widths, save_figure
    from mutransfer.tables import coord_check_table

    ws = parse_widths(widths) if widths else None
    ds = parse_depths(depths) if depths is not None else None
    r = load_recipe(recipe)
    out = output or Path(f"{r.name}-coord-check{'-depth' if ds is not None else ''}.html")
    st = _store(db, create=True) if store else None  # a bad --db fails now, not after the check
    done = api.coord_check(r, parametrization, widths=ws, depths=ds, steps=steps, lr=lr, store=st)
    rep = done.report
    c = _console()
    c.print(coord_check_table(r, rep))
    c.print(escape(rep.summary()))
    try:
        save_figure(rep, out)
    except OSError as e:
        raise UserError(f"-o: cannot write {out}: {e.strerror}") from e
    c.print(f"plot: {out} ({rep.seconds:.1f}s)")
    if done.check_id is not None:
        c.print(f"stored as check {done.check_id}" + (f" of sweep {done.sweep_name}" if done.sweep_name else "")
                + f" in {st.masked_url}")
    if not rep.passed:
        raise typer.Exit(1)


@app.command()
@_user_errors
def sweep(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    db: DbOpt = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (ray://host:10001 or host:6379); "
                                                     "default: start Ray in this process.")] = None,
    name: Annotated[str | None, typer.Option(help="Sweep name (default: the recipe's name or file stem).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    skip_check: Annotated[bool, typer.Option("--skip-check", help="Do not run the coordinate check first (it "
                                                                  "refuses a µP model that fails it).")] = False,
) -> None:
    """Run (or resume) the sweep of RECIPE; every trial lands in the database.

    First, for a µP recipe, the coordinate check (`mutransfer coord-check`): a model that fails it is refused.
    """
    from mutransfer import api
    from mutransfer.sweep import WORKER_RETRIES
    from mutransfer.tables import best_trials_table

    summary = api.sweep(recipe, db=db, name=name, address=address, progress=not quiet, check=not skip_check,
                        notify=lambda line: typer.echo(line, err=True))
    c = _console()
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items()))
    ran = f"ran {summary.ran} now" if summary.ran else "nothing left to run"
    c.print(f"sweep [bold]{summary.name}[/] (id {summary.sweep_id}): {summary.total} trials: {counts}; {ran}; "
            f"{summary.wall_time:.0f}s")
    if summary.best:
        c.print(best_trials_table(summary))
    if summary.left:
        typer.echo(f"error: {summary.left} trial(s) not finished: their worker process died {1 + WORKER_RETRIES} "
                   f"times; run the same command again to retry them", err=True)
        raise typer.Exit(1)
    c.print(f"next: mutransfer fit {summary.name}")


@app.command("ls")
@_user_errors
def ls(db: DbOpt = None) -> None:
    """List the sweeps in the database."""
    from mutransfer.tables import sweeps_table

    store = _store(db)
    sweeps = store.list_sweeps()
    if not sweeps:
        typer.echo(f"no sweeps in {store.masked_url}: run `mutransfer sweep RECIPE`")
        return
    _console().print(sweeps_table(sweeps))


@app.command()
@_user_errors
def show(sweep: Annotated[str, typer.Argument(help="Sweep id or name.")], db: DbOpt = None) -> None:
    """Show a sweep: its trials per scale point and the best of each."""
    from mutransfer.tables import check_lines, scale_points_table

    store = _store(db)
    s = _sweep(store, sweep)
    c = _console()
    counts = ", ".join(f"{k} {v}" for k, v in sorted((s.counts or {}).items()))
    c.print(f"sweep [bold]{s.name}[/] (id {s.id}, recipe {s.recipe_hash}) {s.status}: {s.total_trials} trials: "
            f"{counts}")
    c.print(scale_points_table(store.trials_frame(s.id)))
    fit = store.latest_fit(s.id)
    c.print("fit: " + ("stored; `mutransfer fit` prints it" if fit else f"none yet: mutransfer fit {s.name}"))
    for line in check_lines(store.checks(s.id)):
        c.print(line)


@app.command()
@_user_errors
def fit(sweep: Annotated[str, typer.Argument(help="Sweep id or name.")], db: DbOpt = None,
        seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
        as_json: Annotated[bool, typer.Option("--json", help="Print the fit and the compute as JSON.")] = False) -> None:
    """Fit the optimum per scale point and the transfer law per axis; store and print it, with what it cost.
    A database this user cannot write (a read-only SQLite file) gets the fit printed, and a line that it is not
    stored."""
    from rich.markup import escape

    from mutransfer import api
    from mutransfer.tables import fit_tables

    store = _store(db)
    f = api.fit(store, sweep, seed=seed, save=not store.read_only)
    if f.fit_id is None:
        typer.echo(f"note: the fit is not stored: {store.masked_url} is read-only for this user", err=True)
    if as_json:
        from mutransfer.values import plain

        doc = {"fit_id": f.fit_id, "sweep": {"id": f.sweep.id, "name": f.sweep.name}, "fit": f.result.to_dict(),
               "compute": f.compute.to_dict() if f.compute is not None else None}
        sys.stdout.write(json.dumps(plain(doc), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
        return
    c = _console()
    c.print(f"fit {f.fit_id if f.fit_id is not None else '(not stored)'} of sweep [bold]{f.sweep.name}[/]")
    for table in fit_tables(f.result):
        c.print(table)
    if f.compute is not None:
        for line in f.compute.lines():
            c.print(escape(line))
    c.print(f"next: mutransfer export {f.sweep.name} --format yaml")


@app.command()
@_user_errors
def export(
    sweep: Annotated[str, typer.Argument(help="Sweep id or name.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="yaml, json, nanogpt, nanogpt-mup, hf, torchrun, "
                                                            "litgpt or megatron (see the README).")] = "yaml",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write (default: stdout); for hf, "
                                                "a directory: training_args.json and config.json.")] = None,
    parametrization: Annotated[str | None, typer.Option(help="mup or sp, when the sweep has both (default: the "
                                                        "one the fit predicts trains the better target, else "
                                                        "mup).")] = None,
    nproc_per_node: Annotated[int, typer.Option("--nproc-per-node", help="Processes (GPUs) per node the launcher "
                                                "runs: splits the batch.")] = 1,
    micro_batch_size: Annotated[int | None, typer.Option("--micro-batch-size", help="Sequences per process per "
                                                         "forward pass (default: the largest divisor <= 16).")]
    = None,
    allow_extrapolation: Annotated[bool, typer.Option(
        "--allow-extrapolation", help="Export a transferred value outside the searched range or with a 95% "
        "interval wider than 3 octaves (refused by default).")] = False,
    db: DbOpt = None,
) -> None:
    """Write the tuned config for the recipe's target model, as a config file or a launcher's format."""
    from mutransfer import api

    if output is not None:
        _check_output(output, directory=fmt == "hf")  # before a fit or an export is stored
    store = _store(db)
    api.check_format(api.get_sweep(store, sweep), fmt)  # before any work
    exp = api.export(store, sweep, parametrization=parametrization, allow_extrapolation=allow_extrapolation)
    if exp.why is not None:
        typer.echo(f"exporting {exp.parametrization}: {exp.why}", err=True)
    text = api.render(exp, fmt, nproc=nproc_per_node, micro_batch_size=micro_batch_size)
    files = api.render_files(exp, fmt, nproc=nproc_per_node, micro_batch_size=micro_batch_size) \
        if fmt == "hf" and output is not None else None
    store.save_export(exp.sweep.id, exp.fit_id, fmt, text)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        if files is not None:
            output.mkdir(parents=True, exist_ok=True)
            for name, doc in files.items():
                (output / name).write_text(json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n",
                                           encoding="utf-8")
        else:
            output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise UserError(f"-o: cannot write {output}: {e.strerror}") from e
    what = f"{', '.join(files)} in {output}" if files is not None else str(output)
    typer.echo(f"wrote {what} ({fmt}, sweep {exp.sweep.name}, fit {exp.fit_id})", err=True)


def _check_output(output: Path, *, directory: bool) -> None:
    """-o names a file (or, `directory`, a folder made if need be) that can be written."""
    if directory:
        if output.exists() and not output.is_dir():
            raise UserError(f"-o: {output} is a file; the hf format writes a folder")
        existing = next(p for p in (output, *output.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"-o: cannot write {output}: {existing} is not a folder this user may write in")
        return
    if output.is_dir():
        raise UserError(f"-o: {output} is a folder; name a file")
    parent = output.parent
    if not parent.is_dir():
        raise UserError(f"-o: cannot write {output}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise UserError(f"-o: cannot write {output}: permission denied")


@app.command()
@_user_errors
def target(
    config: Annotated[Path, typer.Argument(help="An exported config (mutransfer export --format yaml or json).")],
    device: Annotated[str, typer.Option(help="meta (no memory, any size) or cpu (materialise it).")] = "meta",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Build the target model of an export: its parameter count and the learning rate of each parameter group."""
    from mutransfer.target import TargetError, build_target

    if device not in ("meta", "cpu"):
        raise UserError(f"--device: use meta or cpu, not {device!r}")
    try:
        tm = build_target(config, device=device)
    except TargetError as e:
        raise UserError(f"{config}: {e}") from e
    if as_json:
        sys.stdout.write(json.dumps(tm.summary(), indent=2, allow_nan=False) + "\n")
        return
    from mutransfer.tables import param_groups_table

    cfg = tm.config
    c = _console()
    c.print(f"target: {tm.family} ({cfg.parametrization}), width {cfg.width}, depth {cfg.depth}, width_mult "
            f"{cfg.width_mult:g}, on {device}: {tm.n_params:,} parameters ({tm.n_params_non_embedding:,} "
            "non-embedding)")
    c.print(param_groups_table(tm))


@app.command()
@_user_errors
def verify(
    sweep: Annotated[str, typer.Argument(help="Sweep id or name.")],
    width: Annotated[int | None, typer.Option(help="Width to verify at (larger than every proxy).")] = None,
    depth: Annotated[int | None, typer.Option(help="Depth to verify at.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size to verify at.")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Sequence length to verify at.")] = None,
    hparam: Annotated[str, typer.Option(help="The hyperparameter to vary around its transferred value.")] = "lr",
    factors: Annotated[str, typer.Option(help="Multipliers of the transferred value to try.")] = "0.5,2",
    repeats: Annotated[int, typer.Option(min=1, help="Seeds per value.")] = 1,
    parametrization: Annotated[str | None, typer.Option(help="mup or sp, when the sweep has both (default: "
                                                        "both, side by side).")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    db: DbOpt = None,
) -> None:
    """Train the transferred value and its neighbours at a size larger than any proxy; say if the transfer held.
    A sweep of both parametrizations verifies both (unless --parametrization), and compares them side by side."""
    from mutransfer import api
    from mutransfer.tables import side_by_side_table, verify_table
    from mutransfer.verify import parse_factors

    sizes = {k: v for k, v in {"width": width, "depth": depth, "batch_size": batch_size, "seq_len": seq_len}.items()
             if v is not None}
    store = _store(db)
    metric = api.get_sweep(store, sweep).metric_name
    v = api.verify(store, sweep, sizes=sizes, hparam=hparam, factors=parse_factors(factors), repeats=repeats,
                   parametrization=parametrization, address=address, progress=not quiet,
                   notify=lambda line: typer.echo(line, err=True))
    c = _console()
    for rep in v.reports:
        c.print(verify_table(rep, metric))
        c.print(rep.summary())
    if v.side_by_side is not None:
        rows, line = v.side_by_side
        c.print(side_by_side_table(rows, v.scale))
        c.print(line)


@app.command()
@_user_errors
def dashboard(
    db: DbOpt = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 8501,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 opens it to the network.")] = "127.0.0.1",
) -> None:
    """Serve the dashboard (Streamlit): sweeps, transfer curves, the fit, trials, the export."""
    import socket

    from mutransfer.storage import default_url, make_engine, mask_url

    url = db or default_url()
    make_engine(url).dispose()  # a malformed URL or an unknown driver fails here, in one line (no connection yet)
    app_path = _dashboard_app()
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as e:
            raise UserError(f"--port: cannot listen on {host}:{port} ({e.strerror}): pass another --port") from e
    # The URL travels in the environment, not on the command line (where `ps` would show a password). Streamlit
    # runs app.py as a script (its folder first on sys.path, not its parent): the `dashboard` package it imports
    # is the one beside app.py because that package's parent comes first on the child's PYTHONPATH.
    package_parent = str(app_path.parent.parent)
    env = {**os.environ, "MUTRANSFER_DB": url,
           "PYTHONPATH": os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)}
    env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    args = [sys.executable, "-m", "streamlit", "run", str(app_path), f"--server.address={host}",
            f"--server.port={port}", "--server.headless=true", "--server.fileWatcherType=none",
            "--client.showErrorDetails=none", "--client.toolbarMode=minimal"]
    typer.echo(f"dashboard of {mask_url(url)} at http://{host}:{port} (Ctrl-C stops it)", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, args, env)


def _dashboard_app() -> Path:
    """dashboard/app.py: beside the mutransfer package in a checkout, else the installed `dashboard` package."""
    import importlib.util

    import mutransfer

    here = Path(mutransfer.__file__).resolve().parent.parent / "dashboard" / "app.py"
    if here.is_file():
        return here
    spec = importlib.util.find_spec("dashboard")
    if spec is not None and spec.origin and (Path(spec.origin).parent / "app.py").is_file():
        return Path(spec.origin).parent / "app.py"
    raise UserError("the dashboard is not installed with this mutransfer: install it from a checkout (pip install -e .)")


@db_app.command("upgrade")
@_user_errors
def db_upgrade(db: DbOpt = None) -> None:
    """Create the schema or bring it to the newest revision (safe to repeat)."""
    from mutransfer.storage import current_revision, head_revision

    store = _store(db, upgrade=True, create=True)
    typer.echo(f"{store.masked_url}: at revision {current_revision(store.engine)} (head {head_revision()})")


@db_app.command("current")
@_user_errors
def db_current(db: DbOpt = None) -> None:
    """Print the database's schema revision."""
    from mutransfer.storage import current_revision, head_revision

    store = _store(db, upgrade=False)
    typer.echo(f"{store.masked_url}: at revision {current_revision(store.engine)} (head {head_revision()})")


def main() -> None:
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted: run the same command again to resume the sweep", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()


__all__ = ["app", "main", "json"]
