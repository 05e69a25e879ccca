"""The coordinate check as a gate: `mutransfer.coordcheck`, `mutransfer coord-check`, and `mutransfer sweep` refusing a
model declared µP that fails it (user builders in tests/userbuilders.py)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mutransfer.coordcheck.measure as measure
from mutransfer.cli import flag
from mutransfer.coordcheck import (
    BLOW_UP,
    CheckError,
    CoordCheckReport,
    LayerCheck,
    default_widths,
    figure,
    figure_data,
    parse_widths,
    run_coord_check,
    verdict,
)
from mutransfer.recipe import parse_recipe

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # userbuilders, as a recipe names them

MLP = """
name: {name}
model: {{family: "{family}", parametrization: {param}, base_width: 32}}
data: {{kind: digits, val_fraction: 0.2}}
train: {{steps: 20, eval_interval: 10, schedule: constant}}
search: {{samples: 2, seed: 0, space: {{lr: {{loguniform: [1.0e-3, 1.0e-2]}}}}}}
scales: {{base: {{width: 32, depth: 2, batch_size: 32}}}}
target: {{width: 1024, depth: 2, batch_size: 32}}
"""


def mlp_recipe(family: str = "mlp", param: str = "mup", name: str = "cc") -> str:
    return MLP.format(name=name, family=family, param=param)


def gpt_recipe(corpus: Path, param: str = "mup") -> str:
    return f"""
name: ccg
model: {{family: gpt, parametrization: {param}, base_width: 32, head_dim: 8}}
data: {{kind: chars, path: {corpus}}}
train: {{steps: 20, eval_interval: 10, optimizer: adamw}}
search: {{samples: 2, space: {{lr: {{loguniform: [1.0e-3, 1.0e-2]}}}}}}
scales: {{base: {{width: 32, depth: 2, batch_size: 8, seq_len: 32}}}}
target: {{width: 1024, depth: 2, batch_size: 8, seq_len: 32}}
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    f = tmp_path_factory.mktemp("corpus") / "text.txt"
    f.write_text(Path(json.__file__).read_text() + Path(os.__file__).read_text())  # some real Python source
    return f


def _describe(rep: CoordCheckReport) -> str:
    return ", ".join(f"{x.name} {x.slope:+.2f}" for x in rep.layers)


# ------------------------------------------------------------------------------------------------ pure parts


def test_verdicts() -> None:
    assert verdict([1.0, 1.0, 1.0], 0.0) == "flat"
    assert verdict([1.0, 2.0, 4.0], 1.0) == "blows up"
    assert verdict([1.0, 0.5, 0.25], -1.0) == "vanishes"
    assert verdict([1.0, 1.1, 1.2], BLOW_UP - 0.01) == "flat"
    assert verdict([0.0, 0.0, 0.0], 0.0, floor=1e-12) == "unchanged"
    assert verdict([1.0, float("nan"), 1.0], 0.0) == "non-finite"
    assert verdict([1.0, 2.0], float("inf")) == "non-finite"


def test_parse_widths() -> None:
    assert parse_widths("128, 64,256") == [64, 128, 256]
    for bad in ("64", "a,b", "0,64", "64,64"):
        with pytest.raises(CheckError, match="^widths: ") as e:  # the argument's name; the CLI's flag below
            parse_widths(bad)
        assert e.value.render(flag).startswith("--widths: ")


def _fake(param: str = "mup", readout_slope: float = 0.9, hidden_slope: float = 0.0) -> CoordCheckReport:
    widths = [32, 64, 128]

    def layer(name: str, role: str, module: str, slope: float) -> LayerCheck:
        values = [0.1 * (w / 32) ** slope for w in widths]
        return LayerCheck(name=name, role=role, module=module, slope=slope, values=values,
                          verdict=verdict(values, slope), step_values=[[v / 2 for v in values], values])

    layers = [layer("fc1", "input", "Linear", 0.01), layer("fc2", "hidden", "Linear", hidden_slope),
              layer("act", "other", "ReLU", hidden_slope), layer("head", "readout", "MuReadout", readout_slope),
              layer("logits", "output", "Net", readout_slope)]
    return CoordCheckReport(recipe="r", family="x:y", parametrization=param, optimizer="adam", lr=3e-3, steps=2,
                            widths=widths, depth=2, batch_size=8, seq_len=1, data="digits", metric="change",
                            layers=layers)


def test_report_words_round_trip_and_figure() -> None:
    bad = _fake()
    assert not bad.passed and not bad.stable
    assert bad.culprits() == ["head", "logits"]
    assert "head" in bad.summary() and "FAILED" in bad.summary() and "1/width" in bad.summary()
    line = bad.headline("r.yaml")
    assert "\n" not in line and "head" in line and "mutransfer coord-check r.yaml" in line
    assert "hidden" in _fake(readout_slope=0.4, hidden_slope=0.9).causes()[0]  # downstream readout: not blamed
    good = _fake(readout_slope=0.02)
    assert good.passed and "passed" in good.summary()
    sp = _fake("sp")
    assert sp.passed and not sp.stable and "expected" in sp.summary()

    d = json.loads(json.dumps(bad.to_dict()))
    assert d["passed"] is False and d["layers"][3]["verdict"] == "blows up"
    assert CoordCheckReport.from_dict(d) == bad

    rows = figure_data(bad)
    assert len(rows) == 5 * 2 * 3  # layers x steps x widths
    assert {r["step"] for r in rows} == {1, 2}
    fig = figure(bad)
    assert len(fig.data) == 5 * 2
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    head = [t for t in fig.data if t.legendgroup == "head"]
    assert head[0].line.width > [t for t in fig.data if t.legendgroup == "fc1"][0].line.width
    assert sum(bool(t.showlegend) for t in fig.data) == 5
    # A report stored without per-step values still plots (one panel).
    flat = replace(bad, layers=[replace(x, step_values=[]) for x in bad.layers])
    assert len(figure(flat).data) == 5 and {r["step"] for r in figure_data(flat)} == {2}


def test_default_widths_respect_the_budget() -> None:
    r = parse_recipe(mlp_recipe())
    assert default_widths(r) == [32, 64, 128, 256]
    assert default_widths(r, budget=1.0) == [32, 64, 128]  # never fewer than three


def test_store_keeps_checks(db_url: str) -> None:
    from mutransfer.storage import CheckInfo, Store, StoreError

    store = Store.open(db_url)
    sweep = store.create_sweep("s", "text", "{}", "h", 0, "val_loss")
    a = store.save_check(sweep.id, "coord", "mup", True, "flat", {"slope": 0.01, "inf": float("inf")})
    b = store.save_check(None, "coord", "sp", False, "blows up", {"layers": [{"name": "head"}]})
    c = store.save_check(sweep.id, "verify", "mup", False, "moved", {})
    got = store.checks(sweep.id)
    assert [x.id for x in got] == [a, c] and all(isinstance(x, CheckInfo) for x in got)
    assert got[0].passed is True and got[0].result["slope"] == 0.01 and got[0].result["inf"] == float("inf")
    assert got[0].created_at is not None and got[0].sweep_id == sweep.id
    assert [x.id for x in store.checks(sweep.id, kind="verify")] == [c]
    assert [x.id for x in store.checks(None)] == [b]
    with pytest.raises(StoreError, match="no sweep"):
        store.save_check(sweep.id + 99, "coord", "mup", True, "x", {})
    store.close()


# ------------------------------------------------------------------------------------------------ the check


def test_builtin_mlp_mup_passes_sp_blows_up() -> None:
    mu = run_coord_check(parse_recipe(mlp_recipe()), "mup")
    assert mu.passed and mu.stable, _describe(mu)
    assert max(abs(x.slope) for x in mu.layers) < 0.2, _describe(mu)
    assert {x.role for x in mu.layers} >= {"input", "hidden", "readout", "output"}
    assert all(len(x.step_values) == mu.steps for x in mu.layers)

    sp = run_coord_check(parse_recipe(mlp_recipe(param="sp")), "sp")
    assert sp.passed and not sp.stable  # SP informs, it does not fail
    up = {x.name for x in sp.offending("blows up")}
    assert {"logits", "out"} <= up and any(n.startswith("hidden") for n in up), _describe(sp)
    assert "expected" in sp.summary()


def test_builtin_gpt_mup_passes_sp_blows_up(corpus: Path) -> None:
    mu = run_coord_check(parse_recipe(gpt_recipe(corpus)), "mup")
    assert mu.passed, mu.summary()
    assert max(abs(x.slope) for x in mu.layers) < 0.25, _describe(mu)
    assert mu.widths == [32, 64, 128, 256]
    sp = run_coord_check(parse_recipe(gpt_recipe(corpus, "sp")), "sp", widths=[32, 64, 128])
    assert not sp.stable and sp.passed
    assert "logits" in {x.name for x in sp.offending("blows up")}, _describe(sp)


def test_plain_linear_readout_fails_and_is_named() -> None:
    rep = run_coord_check(parse_recipe(mlp_recipe("userbuilders:plain_readout")), "mup")
    assert not rep.passed
    assert rep.plain_readouts == ["readout"]
    assert rep.culprits()[0] == "readout"
    readout = next(x for x in rep.layers if x.name == "readout")
    assert readout.verdict == "blows up" and readout.role == "readout", _describe(rep)
    assert "'readout' is a plain nn.Linear, not a mup.MuReadout" in rep.summary()
    assert "readout" in rep.headline()


def test_bypassed_mureadout_fails() -> None:
    rep = run_coord_check(parse_recipe(mlp_recipe("userbuilders:bypassed_readout")), "mup")
    assert not rep.passed and not rep.plain_readouts  # mup's own assertion cannot see this one
    assert [x.name for x in rep.offending()][:2] == ["head", "logits"], _describe(rep)
    assert "'head' (BypassedReadout) is not scaled by 1/width" in rep.summary()
    assert all(x.verdict == "flat" for x in rep.layers if x.name in ("fc1", "fc2")), _describe(rep)


def test_dimension_fixed_between_base_and_delta_fails() -> None:
    rep = run_coord_check(parse_recipe(mlp_recipe("userbuilders:floored_hidden")), "mup")
    assert not rep.passed
    assert rep.shape_problems and rep.shape_problems[0].startswith("fc2.weight dim 0: 256 at widths 32 and 64")
    assert "set_base_shapes takes a width dimension for a fixed one" in rep.summary()
    assert "fc2" in {x.name for x in rep.offending("blows up")}, _describe(rep)


def test_mup_model_with_plain_adam_fails_in_hidden_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not expressible in a recipe (µP always gets mup's optimizer): the lower-level seam the proxy tests use.
    real = measure.optimizer_for
    monkeypatch.setattr(measure, "optimizer_for", lambda params, _p, opt, **kw: real(params, "sp", opt, **kw))
    rep = run_coord_check(parse_recipe(mlp_recipe()), "mup")
    assert not rep.passed
    assert {"hidden.0", "hidden.1"} <= {x.name for x in rep.offending("blows up")}, _describe(rep)
    assert rep.causes()[0].startswith("hidden weights (hidden.1, hidden.0")
    assert "mup's optimizer" in rep.summary()


def test_double_scaled_readout_vanishes() -> None:
    rep = run_coord_check(parse_recipe(mlp_recipe("userbuilders:double_scaled")), "mup")
    assert not rep.passed
    assert "logits" in {x.name for x in rep.offending("vanishes")}, _describe(rep)
    assert "stop learning as width grows" in rep.summary()


def test_a_model_that_cannot_run_is_a_check_error() -> None:
    r = parse_recipe(mlp_recipe())
    with pytest.raises(CheckError, match="width 48"):
        run_coord_check(r.model_copy(update={"model": r.model.model_copy(update={"family": "gpt"})}), "mup",
                        widths=[48, 96])


# ------------------------------------------------------------------------------------------------ CLI


def _cli(args: list[str], db: str, cwd: Path) -> object:
    from mutransfer.cli import app

    old = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(app, args, env={"MUTRANSFER_DB": db}, catch_exceptions=False)
    finally:
        os.chdir(old)


def test_cli_coord_check_exit_codes_plot_and_store(tmp_path: Path) -> None:
    from mutransfer.storage import Store

    db = f"sqlite:///{tmp_path / 'mt.db'}"
    (tmp_path / "good.yaml").write_text(mlp_recipe(name="good"))
    (tmp_path / "bad.yaml").write_text(mlp_recipe("userbuilders:plain_readout", name="bad"))
    (tmp_path / "sp.yaml").write_text(mlp_recipe(param="sp", name="sp"))

    res = _cli(["coord-check", "good.yaml", "--widths", "32,64,128"], db, tmp_path)
    assert res.exit_code == 0, res.output
    assert "µP check passed" in res.stdout and "hidden.1" in res.stdout
    html = (tmp_path / "good-coord-check.html").read_text()
    assert "plotly" in html and "hidden.0" in html

    res = _cli(["coord-check", "bad.yaml", "--widths", "32,64,128", "-o", "plot.html", "--no-store"], db, tmp_path)
    assert res.exit_code == 1, res.output
    assert "blows up" in res.stdout and "FAILED" in res.stdout and "'readout'" in res.stdout
    assert (tmp_path / "plot.html").exists()

    res = _cli(["coord-check", "sp.yaml", "--widths", "32,64,128"], db, tmp_path)
    assert res.exit_code == 0, res.output  # SP blows up, as expected: not a failure
    assert "blows up" in res.stdout and "as expected" in res.stdout

    res = _cli(["coord-check", "good.yaml", "--widths", "32"], db, tmp_path)
    assert res.exit_code == 2 and "--widths" in res.stderr and len(res.stderr.strip().splitlines()) == 1

    checks = Store.open(db).checks(None)
    assert [(c.parametrization, c.passed) for c in checks] == [("mup", True), ("sp", True)]
    assert checks[0].result["widths"] == [32, 64, 128]


def test_sweep_refuses_a_broken_mup_model(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'mt.db'}"
    (tmp_path / "broken.yaml").write_text(mlp_recipe("userbuilders:plain_readout", name="broken"))
    res = _cli(["sweep", "broken.yaml", "-q"], db, tmp_path)  # refused before Ray: in this process
    assert res.exit_code == 2, res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    # Named by the recipe field that is wrong: the user's builder.
    assert lines[0].startswith("error: model.family: coordinate check failed"), lines[0]
    assert "'readout'" in lines[0] and "--skip-check" in lines[0]
    assert "mutransfer coord-check broken.yaml" in lines[0]
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "mt.db").exists()  # the check ran before the database (and its schema) was made


def test_sweep_stores_a_passing_check_and_show_prints_it(tmp_path: Path) -> None:
    """A sweep whose trials are all finished: the gate runs and passes, run_sweep stores the check and returns
    before Ray starts."""
    from mutransfer.plan import plan
    from mutransfer.storage import Store, TrialRecord

    db = f"sqlite:///{tmp_path / 'mt.db'}"
    text = mlp_recipe(name="done")
    (tmp_path / "done.yaml").write_text(text)
    r = parse_recipe(text)
    store = Store.open(db)
    specs = plan(r)
    sweep = store.create_sweep("done", text, r.model_dump_json(), r.hash(), len(specs), r.train.metric)
    store.add_trials(sweep.id, [TrialRecord.from_spec(s) for s in specs])
    for s in specs:
        store.finish_trial(sweep.id, s.key, "completed", metric=1.0, steps=20)

    res = _cli(["sweep", "done.yaml", "-q"], db, tmp_path)
    assert res.exit_code == 0, res.output
    assert "coordinate check (mup): passed" in res.stderr and "nothing left to run" in res.stdout
    checks = store.checks(sweep.id)
    assert len(checks) == 1 and checks[0].kind == "coord" and checks[0].passed
    assert checks[0].result["layers"] and checks[0].summary.startswith("µP check passed")

    res = _cli(["show", "done"], db, tmp_path)
    assert res.exit_code == 0, res.output
    assert "coordinate check (mup" in res.stdout and "passed" in res.stdout

    # --skip-check: nothing run, nothing more stored.
    res = _cli(["sweep", "done.yaml", "-q", "--skip-check"], db, tmp_path)
    assert res.exit_code == 0 and "coordinate check" not in res.stderr
    assert len(store.checks(sweep.id)) == 1


# --skip-check sweeping a model the check refuses (trials run, no check stored): tests/test_resume.py's
# test_trial_that_raises_is_stored_failed_and_the_sweep_goes_on, whose builder fails the check (one sweep for both).


# ------------------------------------------------------------------------------------------------ over depth


def depth_gpt_recipe(corpus: Path, scaling: str, name: str) -> str:
    rule = f", depth_scaling: {scaling}, base_depth: 2" if scaling != "none" else ""
    return f"""
name: {name}
model: {{family: gpt, parametrization: mup, base_width: 32, head_dim: 16{rule}}}
data: {{kind: chars, path: {corpus}}}
train: {{steps: 20, eval_interval: 10, optimizer: adamw}}
search: {{samples: 2, space: {{lr: {{loguniform: [1.0e-3, 1.0e-2]}}}}}}
scales: {{base: {{width: 32, depth: 2, batch_size: 8, seq_len: 32}}}}
target: {{width: 1024, depth: 16, batch_size: 8, seq_len: 32}}
"""


def depth_mlp_recipe(scaling: str, residual: bool = True) -> str:
    rule = f", depth_scaling: {scaling}, base_depth: 2" if scaling != "none" else ""
    return MLP.format(name="ccd", family="mlp", param="mup").replace(
        "base_width: 32}", f"base_width: 32, residual: {str(residual).lower()}{rule}}}")


def test_cli_coord_check_over_depth_passes_with_depth_mup_and_reports_growth_without(
        tmp_path: Path, corpus: Path) -> None:
    from mutransfer.storage import Store

    db = f"sqlite:///{tmp_path / 'mt.db'}"
    mup_text = depth_gpt_recipe(corpus, "depth-mup", "deep")
    (tmp_path / "deep.yaml").write_text(mup_text)
    (tmp_path / "plain.yaml").write_text(depth_gpt_recipe(corpus, "none", "plain"))
    # A sweep of the depth-µP recipe exists: its depth check is stored with it, and `show` labels it.
    r = parse_recipe(mup_text)
    store = Store.open(db)
    sweep = store.create_sweep("deep", mup_text, r.model_dump_json(), r.hash(), 0, r.train.metric)

    res = _cli(["coord-check", "deep.yaml", "--depths", "2,4,8", "--steps", "3"], db, tmp_path)
    assert res.exit_code == 0, res.output
    assert "Depth check passed (depth-mup)" in res.stdout, res.stdout
    assert "coordinate check over depth" in res.stdout and "against log(depth)" in res.stdout
    assert "d2" in res.stdout and "d8" in res.stdout and "w32" not in res.stdout
    html = (tmp_path / "deep-coord-check-depth.html").read_text()
    assert '"title":{"text":"depth"}' in html

    res = _cli(["coord-check", "plain.yaml", "--depths", "2,4,8", "--steps", "3"], db, tmp_path)
    assert res.exit_code == 0, res.output  # growth without depth scaling is expected: reported, not failed
    assert "blows up" in res.stdout and "as expected without depth scaling" in res.stdout
    assert "The recipe has no depth scaling (model.depth_scaling: none), so its optimal learning rate will drift " \
           "with depth" in " ".join(res.stdout.split())

    (deep,) = store.checks(sweep.id)
    assert deep.kind == "coord_depth" and deep.passed
    rep = CoordCheckReport.from_dict(deep.result)
    assert rep.axis == "depth" and rep.widths == [2, 4, 8] and rep.width == 32 and rep.depth_scaling == "depth-mup"
    judged = {x.name: x.slope for x in rep.layers if x.judged}
    assert set(judged) == {"blocks.last", "logits"} and all(abs(s) < 0.3 for s in judged.values()), judged
    assert CoordCheckReport.from_dict(json.loads(json.dumps(rep.to_dict()))) == rep

    (plain,) = store.checks(None)
    rep = CoordCheckReport.from_dict(plain.result)
    assert plain.kind == "coord_depth" and plain.passed and not rep.stable and rep.axis == "depth"
    assert [x.name for x in rep.offending("blows up")] == ["blocks.last"], _describe(rep)

    res = _cli(["show", "deep"], db, tmp_path)
    assert res.exit_code == 0, res.output
    assert "coordinate check over depth (mup" in res.stdout and "passed" in res.stdout


def test_residual_mlp_over_depth_flat_with_depth_scaling_and_grows_without() -> None:
    for scaling in ("depth-mup", "completep"):
        rep = run_coord_check(parse_recipe(depth_mlp_recipe(scaling)), "mup", depths=[2, 4, 8])
        assert rep.passed and rep.stable and rep.axis == "depth", _describe(rep)
        judged = {x.name: x for x in rep.layers if x.judged}
        assert set(judged) == {"hidden.last", "logits"} and judged["hidden.last"].role == "stream"
        assert all(x.verdict == "flat" for x in judged.values()), _describe(rep)
        assert "Depth check passed" in rep.summary()

    none = run_coord_check(parse_recipe(depth_mlp_recipe("none")), "mup", depths=[2, 4, 8])
    assert none.passed and not none.stable and not none.expects_flat
    assert {"hidden.last", "logits"} <= {x.name for x in none.offending("blows up")}, _describe(none)
    assert "model.depth_scaling" in none.summary() and "model.residual: true" in none.summary()
    # An interior block's verdict is shown but cannot fail a depth check.
    assert all(x.judged == (x.name in ("hidden.last", "logits")) for x in none.layers)

    plain = run_coord_check(parse_recipe(depth_mlp_recipe("none", residual=False)), "mup", depths=[2, 4])
    assert plain.passed and plain.axis == "depth"  # a plain MLP over depth is reported, never failed

    fig = figure(none)
    assert fig.layout.xaxis.title.text == "depth" and "over depth" in fig.layout.title.text
    assert {"depth", "value"} <= set(figure_data(none)[0]) and "width" not in figure_data(none)[0]


def test_depth_check_mistakes_and_old_reports() -> None:
    from mutransfer.coordcheck import parse_depths

    assert parse_depths("8, 2,4") == [2, 4, 8]
    for bad in ("4", "0,4", "-2,4", "a,b"):
        with pytest.raises(CheckError, match="^depths: "):
            parse_depths(bad)
    with pytest.raises(CheckError, match="^widths, depths: "):
        run_coord_check(parse_recipe(mlp_recipe()), "mup", widths=[32, 64], depths=[2, 4])
    # A check stored before the depth check existed has no axis, width, depth_scaling or judged: a width check.
    d = _fake().to_dict()
    for key in ("axis", "width", "depth_scaling"):
        d.pop(key)
    for layer in d["layers"]:
        layer.pop("judged")
    old = CoordCheckReport.from_dict(d)
    assert old.axis == "width" and old == _fake() and not old.passed


def test_cli_depth_check_mistakes_are_one_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'mt.db'}"
    (tmp_path / "r.yaml").write_text(depth_mlp_recipe("depth-mup"))
    for args, word in ((["--widths", "32,64", "--depths", "2,4"], "--widths, --depths"),
                       (["--depths", "4"], "--depths"), (["--depths", "0,4"], "--depths")):
        res = _cli(["coord-check", "r.yaml", *args], db, tmp_path)
        assert res.exit_code == 2, res.output
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and word in lines[0] and "Traceback" not in res.output, res.stderr
    assert not list(tmp_path.glob("*.html"))
