"""The dashboard: figures as data (pure functions), and every page through Streamlit's AppTest on a seeded
database, good cases and bad ones (no traceback, one sentence)."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")

from dashboard.data import database_url  # noqa: E402
from dashboard.figures import learning_curves, progress, style, transfer_curves, transfer_fit  # noqa: E402
from mutransfer.fit import FitResult  # noqa: E402
from mutransfer.fit.stopped import fit_frame, stopped_floors  # noqa: E402
from mutransfer.plan import plan  # noqa: E402
from mutransfer.recipe import Recipe  # noqa: E402
from mutransfer.storage import Store, TrialRecord  # noqa: E402
from mutransfer.testing.recipes import make_recipe  # noqa: E402
from mutransfer.testing.seeded_sweeps import LR_STAR, Seeded, seed_demo, seed_sweep, true_optimum  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
PAGES = ("sweeps", "transfer_curves", "transfer_fit", "trials", "export")
WIDTHS = [64, 128, 256, 512, 1024]
EARLY_WIDTHS = [64, 128, 256]
STOP_STEP = 90  # where the scheduler stopped the slow learners of sweep "early"


def _early_curve(final: float, steps: int, upto: int) -> list[dict]:
    """A learning curve decaying to `final`, evaluated every 30 steps up to `upto` (a stopped trial's end)."""
    grid = [s for s in range(30, steps + 1, 30) if s <= upto]
    val = [final + (2.3 - final) * math.exp(-5.0 * s / steps) for s in grid]
    return [{"step": s, "val_loss": v, "train_loss": v - 0.02} for s, v in zip(grid, val, strict=True)]


def _seed_early(store: Store) -> Seeded:
    """A sweep with search.early_stop and search.refine, stored as the sweep driver stores one: per width 2 draws
    diverge, the 2 slowest learners are stopped at STOP_STEP (with their curve up to there), 2 complete; then a
    refine round of 2 draws around the optimum (round 1), which complete."""
    doc = make_recipe("early", samples=6, parametrizations=("mup",), widths=EARLY_WIDTHS).model_dump(mode="json")
    doc["search"] = {**doc["search"], "early_stop": {"method": "asha", "grace_steps": 60},
                     "refine": {"rounds": 1, "samples": 2}}
    recipe = Recipe.model_validate(doc)
    first = [TrialRecord.from_spec(s) for s in plan(recipe)]
    refine = [TrialRecord(key=f"{r.group}/{6 + i:03d}", group=r.group, parametrization="mup", width=r.width,
                          depth=r.depth, batch_size=r.batch_size, seq_len=r.seq_len, steps_planned=r.steps_planned,
                          sample=6 + i, repeat=0, seed=0, hparams={"lr": LR_STAR * f}, round=1)
              for r in first if r.sample == 0 for i, f in enumerate((0.7, 1.4))]
    sweep = store.create_sweep("early", recipe.model_dump_json(indent=2), recipe.model_dump_json(), recipe.hash(),
                               len(first) + len(refine), recipe.train.metric)
    store.add_trials(sweep.id, first)
    store.set_sweep_status(sweep.id, "running")

    def finish(rec: TrialRecord) -> None:
        d = math.log2(float(rec.hparams["lr"]) / LR_STAR)
        loss = 0.2 + 0.6 * (rec.width / 64) ** -0.3 + 0.04 * d * d + 0.001 * rec.sample
        steps = rec.steps_planned
        if d > 2.5:
            store.finish_trial(sweep.id, rec.key, "diverged", steps=60,
                               points=[{"step": 30, "val_loss": 2.0}, {"step": 60, "val_loss": math.nan}])
        elif d < -1.1:  # the slow learners: behind at STOP_STEP
            curve = _early_curve(loss, steps, STOP_STEP)
            store.finish_trial(sweep.id, rec.key, "stopped", metric=curve[-1]["val_loss"], steps=STOP_STEP,
                               flops=1e9, points=curve)
        else:
            curve = _early_curve(loss, steps, steps)
            store.finish_trial(sweep.id, rec.key, "completed", metric=loss, best_metric=loss, steps=steps,
                               flops=3e9, points=curve)

    for rec in first:
        finish(rec)
    store.add_trials(sweep.id, refine)
    for rec in refine:
        finish(rec)
    store.set_sweep_status(sweep.id, "done")
    info = store.get_sweep(sweep.id)
    assert info is not None
    return Seeded(info, len(first) + len(refine), 0, None)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    url = f"sqlite:///{tmp_path_factory.mktemp('dash') / 'demo.db'}"
    seeded = seed_demo(url)
    with Store.open(url) as store:
        seeded["early"] = _seed_early(store)
    return url, seeded


@pytest.fixture(scope="module")
def frames(demo: tuple[str, dict]) -> dict:
    url, seeded = demo
    with Store.open(url) as store:
        # As the dashboard reads them (dashboard.data.trials): with the floors of stopped trials, where some are.
        out = {name: fit_frame(store, s.sweep.id, s.sweep.metric_name) for name, s in seeded.items()}
        fit = FitResult.from_dict(store.latest_fit(seeded["good"].sweep.id)[1])
        curves = store.curves_frame(seeded["good"].sweep.id)
        early_curves = store.curves_frame(seeded["early"].sweep.id)
    return {"trials": out, "fit": fit, "curves": curves, "early_curves": early_curves,
            "sweeps": [s.sweep for s in seeded.values()]}


# ------------------------------------------------------------------------------------------------ figures as data


def test_transfer_curves_one_trace_per_width_with_fit_and_diverged(frames: dict) -> None:
    trials, fit = frames["trials"]["good"], frames["fit"]
    recipe = make_recipe("good", samples=12)
    for param in ("mup", "sp"):
        data = transfer_curves.curves_data(trials, fit, parametrization=param, hparam="lr", kind="log", axis="width",
                                   base=recipe.scales.base, metric="val_loss")
        assert data.scales == WIDTHS
        fig = transfer_curves.transfer_curves_figure(data)
        assert style.count_traces(fig, "trials") == len(WIDTHS)
        assert style.count_traces(fig, "optimum") == len(WIDTHS)
        assert style.count_traces(fig, "fit") >= 1
        assert fig.layout.xaxis.type == "log"
        # Diverged trials are drawn, all of them, apart from the curves.
        on_axis = trials[(trials.parametrization == param) & (trials.role == "sweep")]
        n_div = int((on_axis.status == "diverged").sum())
        assert n_div > 0
        div = [t for t in fig.data if t.meta["role"] == "diverged"]
        assert len(div) == 1 and len(div[0].x) == n_div == sum(len(s.diverged_x) for s in data.series)
        # Narrow to wide: the colours follow Viridis from dark to light.
        colors = [t.line.color for t in fig.data if t.meta["role"] == "trials"]
        assert colors == list(style.scale_colors(WIDTHS).values())
        # The fitted optimum is the known one: LR_STAR under µP at every width, drifting down under SP.
        for s in data.series:
            assert abs(math.log2(s.opt_x) - math.log2(true_optimum(param, s.scale, 64))) < 1.0, (param, s.scale)
            assert s.opt_lo <= s.opt_x <= s.opt_hi


def test_repeated_seeds_draw_a_line_through_their_mean(frames: dict) -> None:
    # search.repeats: the same lr twice at each width. The line must go through the mean of the seeds at each lr,
    # not zigzag between them; every seed stays drawn as a point.
    trials = frames["trials"]["good"]
    one = trials[(trials.parametrization == "mup") & (trials.role == "sweep")]
    again = one.assign(key=one["key"] + "-r1", metric=one["metric"] + 0.2)
    both = pd.concat([one, again], ignore_index=True)
    base = make_recipe("good").scales.base
    data = transfer_curves.curves_data(both, None, parametrization="mup", hparam="lr", kind="log", axis="width", base=base)
    for s in data.series:
        assert s.lines and len(s.x) == 2 * len(s.mean_x)
        assert s.mean_x == sorted(set(s.x))
        for x, y in zip(s.mean_x, s.mean_y, strict=True):
            ys = [b for a, b in zip(s.x, s.y, strict=True) if a == x]
            assert len(ys) == 2 and y == pytest.approx(sum(ys) / 2)
    fig = transfer_curves.transfer_curves_figure(data)
    assert style.count_traces(fig, "trials") == style.count_traces(fig, "mean") == len(WIDTHS)
    assert {t.mode for t in fig.data if t.meta["role"] == "trials"} == {"markers"}
    # One seed per value: no mean line, the points are joined as before.
    single = transfer_curves.curves_data(one, None, parametrization="mup", hparam="lr", kind="log", axis="width", base=base)
    assert all(not s.mean_x for s in single.series)
    assert style.count_traces(transfer_curves.transfer_curves_figure(single), "mean") == 0


def test_verification_trials_are_their_own_trace(frames: dict) -> None:
    trials, fit = frames["trials"]["good"], frames["fit"]
    base = make_recipe("good").scales.base
    data = transfer_curves.curves_data(trials, fit, parametrization="mup", hparam="lr", kind="log", axis="width", base=base)
    assert data.verify is not None and len(data.verify) == 3
    assert set(data.verify["scale"]) == {2048}
    assert 2048 not in data.scales  # not a curve of its own: a verification is not part of the sweep
    fig = transfer_curves.transfer_curves_figure(data)
    assert style.count_traces(fig, "verify") == 1
    assert style.count_traces(fig, "trials") == len(WIDTHS)


def test_shared_y_range_leaves_room_for_diverged_rows(frames: dict) -> None:
    trials, fit = frames["trials"]["good"], frames["fit"]
    base = make_recipe("good").scales.base
    datas = [transfer_curves.curves_data(trials, fit, parametrization=p, hparam="lr", kind="log", axis="width", base=base)
             for p in ("mup", "sp")]
    lo, hi = transfer_curves.shared_y_range(datas)
    ys = [y for d in datas for s in d.series for y in s.y]
    assert lo < min(ys) and hi > max(ys)
    fig = transfer_curves.transfer_curves_figure(datas[1], y_range=(lo, hi))
    div = next(t for t in fig.data if t.meta["role"] == "diverged")
    assert all(max(ys) < y < hi for y in div.y)


def test_law_data_recovers_the_drift_and_marks_the_target(frames: dict) -> None:
    fit = frames["fit"]
    mup = transfer_fit.law_data(fit, "mup", "lr", "width")
    sp = transfer_fit.law_data(fit, "sp", "lr", "width")
    assert mup is not None and sp is not None
    assert mup.scales == WIDTHS and mup.fitted
    assert abs(mup.slope) < 0.25  # µP: the optimum stays put
    assert -0.8 < sp.slope < -0.2  # SP: half an octave down per doubling
    assert mup.target_x == 8192
    assert mup.target_lo <= mup.target_y <= mup.target_hi
    assert abs(math.log2(mup.target_y) - math.log2(LR_STAR)) < 1.0
    assert all(lo <= hi for lo, hi in zip(sp.band_lo, sp.band_hi, strict=True))
    fig = transfer_fit.law_figure([mup, sp])
    for role, n in (("band", 2), ("law", 2), ("optima", 2), ("target", 2)):
        assert style.count_traces(fig, role) == n, role
    assert fig.layout.yaxis.type == "log"
    # The drawn law is the one the export uses: through the joint model's base optimum, to the exported value.
    t = fit.transfer("mup", "lr")
    assert mup.line_y[0] == pytest.approx(t.base_value, rel=1e-6) or mup.line_x[0] != fit.base.width
    assert mup.target_y == pytest.approx(t.value)
    table = transfer_fit.transfers_table(fit)
    assert list(table["parametrization"]) == ["µP", "SP"]
    assert table["value at target"].iloc[0] == pytest.approx(fit.transfer("mup", "lr").value)


def test_law_data_skips_choices(frames: dict) -> None:
    fit = frames["fit"]
    assert transfer_fit.law_data(fit, "mup", "nope", "width") is None
    assert transfer_fit.law_data(fit, "mup", "lr", "depth") is None or not transfer_fit.law_data(fit, "mup", "lr", "depth").fitted


def test_sweeps_table_progress(frames: dict) -> None:
    table = progress.sweeps_table(frames["sweeps"])
    rows = table.set_index("name")
    assert rows.loc["good", "progress"] == 1.0 and rows.loc["good", "done/total"] == "120/120"
    assert rows.loc["live", "status"] == "running" and rows.loc["live", "running"] == 1
    assert 0 < rows.loc["live", "progress"] < 1
    assert rows.loc["pending", "progress"] == 0 and pd.isna(rows.loc["pending", "best"])
    assert rows.loc["diverged", "diverged"] == 40
    assert progress.any_running(frames["sweeps"])
    assert progress.sweeps_table([]).empty


def test_sentences_for_bad_sweeps(frames: dict) -> None:
    by_name = {s.name: s for s in frames["sweeps"]}
    t = frames["trials"]
    assert progress.no_result_reason(by_name["good"], t["good"]) is None
    assert "diverged (40 of 40)" in progress.no_result_reason(by_name["diverged"], t["diverged"])
    assert "no completed trial yet (40 pending)" in progress.no_result_reason(by_name["pending"], t["pending"])
    assert transfer_curves.single_value_reason(t["good"], "lr") is None
    assert "single value (2)" in transfer_curves.single_value_reason(t["single"], "output_mult")
    assert "single value" in transfer_curves.single_value_reason(t["single"], "lr")  # one sample: one lr
    assert "no value of" in transfer_curves.single_value_reason(t["good"], "output_mult")


def test_varied_axes(frames: dict) -> None:
    t = frames["trials"]
    base = make_recipe("x").scales.base
    assert transfer_curves.varied_axes(t["good"], base) == ["width"]
    assert transfer_curves.varied_axes(t["unfitted"], base) == ["width", "depth"]
    assert transfer_curves.varied_axes(t["single"], base) == ["width"]


def test_trials_filter_table_and_learning_curves(frames: dict) -> None:
    trials, curves = frames["trials"]["good"], frames["curves"]
    div = learning_curves.filter_trials(trials, statuses=["diverged"], parametrizations=["sp"])
    assert len(div) and set(div.status) == {"diverged"} and set(div.parametrization) == {"sp"}
    assert len(learning_curves.filter_trials(trials, roles=["verify"])) == 3
    table = learning_curves.trials_table(trials)
    assert {"key", "width", "status", "metric", "wall_time", "lr"} <= set(table.columns)
    picked = learning_curves.default_selection(trials)
    assert 0 < len(picked) <= 8
    assert trials.set_index("key").loc[picked, "status"].eq("completed").all()
    keys = [*picked[:2], div["key"].iloc[0]]
    fig = learning_curves.learning_curves_figure(curves[curves.key.isin(keys)], trials, "val_loss")
    assert style.count_traces(fig, "curve") == 3
    assert style.count_traces(fig, "nonfinite") == 1  # the diverged trial's curve ends on a NaN: marked
    for t in fig.data:
        assert np.isfinite(np.asarray(t.y, dtype=float)).all()


def test_groups_table(frames: dict) -> None:
    g = progress.groups_table(frames["trials"]["good"])
    assert len(g) == 11  # 2 parametrizations x 5 widths + the verification point
    assert set(g["role"]) == {"sweep", "verify"}
    assert g["trials"].sum() == 123


def test_stopped_and_refined_counts(frames: dict) -> None:
    sweeps = progress.sweeps_table(frames["sweeps"]).set_index("name")
    assert sweeps.loc["early", "stopped"] == 6 and sweeps.loc["early", "completed"] == 12
    assert sweeps.loc["early", "done/total"] == "24/24" and sweeps.loc["early", "progress"] == 1.0
    assert sweeps.loc["good", "stopped"] == 0
    # A column only where some sweep stopped trials early.
    assert "stopped" not in progress.sweeps_table([s for s in frames["sweeps"] if s.name != "early"]).columns

    early = frames["trials"]["early"]
    g = progress.groups_table(early)
    assert len(g) == len(EARLY_WIDTHS)
    assert list(g.columns[:6]) == ["parametrization", "scale point", "role", "trials", "refined", "completed"]
    assert (g["trials"] == 8).all() and (g["refined"] == 2).all() and (g["stopped"] == 2).all()
    assert (g["completed"] == 4).all() and (g["diverged"] == 2).all()
    for _, row in g.iterrows():  # the best over completed trials only: a stopped trial's metric is not a final one
        at = early[early["group"].str.endswith(row["scale point"])]
        assert row["best"] == pytest.approx(at.loc[at.status == "completed", "metric"].min())
    assert not {"refined", "stopped"} & set(progress.groups_table(frames["trials"]["good"]).columns)

    # Stopped trials are finished: with none completed, the sentence says so, not "yet".
    sweep = next(s for s in frames["sweeps"] if s.name == "early")
    none_done = early.assign(status=early["status"].replace({"completed": "failed"}))
    reason = progress.no_result_reason(sweep, none_done)
    assert "No trial of sweep 'early' completed: 6 diverged, 12 failed, 6 stopped early" in reason
    assert "yet" not in reason
    waiting = none_done.assign(status=none_done["status"].replace({"failed": "pending"}))
    assert "no completed trial yet (6 diverged, 12 pending, 6 stopped)" in progress.no_result_reason(sweep, waiting)


def _early_curves_data(trials: pd.DataFrame) -> transfer_curves.CurvesData:
    base = make_recipe("early", widths=EARLY_WIDTHS).scales.base
    return transfer_curves.curves_data(trials, None, parametrization="mup", hparam="lr", kind="log", axis="width",
                                       base=base, metric="val_loss")


def test_transfer_curves_draw_stopped_trials_at_their_floor(frames: dict) -> None:
    trials = frames["trials"]["early"]
    stopped = trials[trials.status == "stopped"].set_index("key")
    assert stopped["floor"].notna().all()  # each width has completed trials to compare with
    data = _early_curves_data(trials)
    assert data.scales == EARLY_WIDTHS and not data.hidden
    for s in data.series:
        assert len(s.stopped_x) == 2 and s.stopped_steps == [STOP_STEP, STOP_STEP]
        assert not set(s.stopped_keys) & set(s.keys)  # apart from the curve: never joined into its line
        for key, y, at in zip(s.stopped_keys, s.stopped_y, s.stopped_at, strict=True):
            assert y == pytest.approx(stopped.loc[key, "floor"])  # drawn at its floor...
            assert at == pytest.approx(stopped.loc[key, "metric"]) and y < at  # ...below where it stopped
        assert len(s.x) == 4 and s.lines
    fig = transfer_curves.transfer_curves_figure(data)
    assert style.count_traces(fig, "trials") == len(EARLY_WIDTHS)
    colors = style.scale_colors(EARLY_WIDTHS)
    trace = next(t for t in fig.data if t.meta["role"] == "stopped")
    assert trace.meta["count"] == len(trace.x) == 6 and trace.mode == "markers"
    assert set(trace.marker.symbol) == {"circle-open"}  # hollow, in the scale value's colour
    assert list(trace.marker.color) == [colors[w] for w in EARLY_WIDTHS for _ in range(2)]
    assert all(f"stopped at step {STOP_STEP}; would end at least at " in t for t in trace.text)
    assert sorted(trace.y) == pytest.approx(sorted(stopped["floor"]))
    for t in fig.data:  # no curve goes through a floor
        if t.meta["role"] == "trials":
            assert not set(t.y) & set(trace.y)
    lo, hi = transfer_curves.shared_y_range([data])
    assert lo < min(trace.y) and max(trace.y) < hi


def test_a_stopped_trial_without_a_floor_is_not_drawn(frames: dict) -> None:
    # Nothing completed at width 256: its stopped trials have nothing to be compared with (no floor).
    trials = frames["trials"]["early"].drop(columns="floor")
    at_256 = (trials.width == 256) & (trials.status == "completed")
    trials.loc[at_256, ["status", "metric"]] = ["failed", np.nan]
    trials["floor"] = stopped_floors(trials, frames["early_curves"], "val_loss")
    data = _early_curves_data(trials)
    assert data.hidden == {"failed": 4, transfer_curves.NO_FLOOR: 2}
    assert [len(s.stopped_x) for s in data.series] == [2, 2, 0]
    # Read without floors at all (a frame not from fit_frame): every stopped trial is hidden, none is drawn.
    bare = _early_curves_data(frames["trials"]["early"].drop(columns="floor"))
    assert bare.hidden == {transfer_curves.NO_FLOOR: 6}
    assert style.count_traces(transfer_curves.transfer_curves_figure(bare), "stopped") == 0


def test_refine_round_trials_have_their_own_marker(frames: dict) -> None:
    trials = frames["trials"]["early"].copy()
    refined = set(trials.loc[trials["round"] == 1, "key"])
    assert len(refined) == 2 * len(EARLY_WIDTHS)
    data = _early_curves_data(trials)
    for s in data.series:
        assert s.rounds == [1 if k in refined else 0 for k in s.keys] and sum(s.rounds) == 2
    fig = transfer_curves.transfer_curves_figure(data)
    for t in (t for t in fig.data if t.meta["role"] == "trials"):
        rounds = [1 if k in refined else 0 for k in t.customdata]
        assert list(t.marker.symbol) == ["diamond" if r else "circle" for r in rounds]
        assert [("refine round 1" in x) for x in t.text] == [bool(r) for r in rounds]
        assert "%{text}" in t.hovertemplate
    keys = [t for t in fig.data if t.meta["role"] == "refine"]
    assert [(t.name, t.marker.symbol, t.meta["count"]) for t in keys] == [("refine round 1 (6 trials)", "diamond", 6)]
    # A stopped trial of a later round: hollow, in that round's symbol, and the hover says which round.
    one = trials.index[trials.status == "stopped"][0]
    trials.loc[one, "round"] = 2
    fig = transfer_curves.transfer_curves_figure(_early_curves_data(trials))
    st = next(t for t in fig.data if t.meta["role"] == "stopped")
    i = [trials.loc[one, "key"] in t for t in st.text].index(True)
    assert st.marker.symbol[i] == "square-open" and "refine round 2" in st.text[i]
    assert [t.meta["round"] for t in fig.data if t.meta["role"] == "refine"] == [1, 2]
    # Without refine rounds the charts are as before: one symbol, no legend key.
    good = transfer_curves.transfer_curves_figure(transfer_curves.curves_data(
        frames["trials"]["good"], None, parametrization="mup", hparam="lr", kind="log", axis="width",
        base=make_recipe("good").scales.base))
    assert style.count_traces(good, "refine") == style.count_traces(good, "stopped") == 0
    assert all(t.marker.symbol is None for t in good.data if t.meta["role"] == "trials")


def test_learning_curves_of_stopped_trials(frames: dict) -> None:
    trials, curves = frames["trials"]["early"], frames["early_curves"]
    stopped = learning_curves.filter_trials(trials, statuses=["stopped"])
    assert len(stopped) == 6
    table = learning_curves.trials_table(trials)
    assert {"round", "floor", "steps", "steps_planned"} <= set(table.columns)
    assert sorted(table["round"].unique()) == [0, 1]
    keys = [stopped["key"].iloc[0], *learning_curves.default_selection(trials)[:1]]
    fig = learning_curves.learning_curves_figure(curves[curves.key.isin(keys)], trials, "val_loss")
    by_status = {t.meta["status"]: t for t in fig.data if t.meta["role"] == "curve"}
    assert set(by_status) == {"stopped", "completed"}
    stop = by_status["stopped"]
    assert max(stop.x) == STOP_STEP and stop.line.dash == "dot" and stop.name.endswith("(stopped)")
    assert f"stopped early at step {STOP_STEP} of 300" in stop.hovertemplate
    assert max(by_status["completed"].x) == 300 and "stopped" not in by_status["completed"].hovertemplate


def test_database_url_from_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUTRANSFER_DB", "sqlite:////env.db")
    assert database_url(["--db", "sqlite:////a.db"]) == "sqlite:////a.db"
    assert database_url(["--db=sqlite:////b.db"]) == "sqlite:////b.db"
    assert database_url([]) == "sqlite:////env.db"


# ------------------------------------------------------------------------------------------------ pages (AppTest)


def _app(url: str, monkeypatch: pytest.MonkeyPatch, sweep: str | None = None):  # type: ignore[no-untyped-def]
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MUTRANSFER_DB", url)
    at = AppTest.from_file(APP, default_timeout=60)
    if sweep is not None:
        at.session_state["sweep"] = sweep
    return at.run()


def _page(at, page: str):  # type: ignore[no-untyped-def]
    if page != "sweeps":
        at.switch_page(f"app_pages/{page}.py")
    return at.run()


def _clean(at) -> str:  # type: ignore[no-untyped-def]
    """No exception and no error box on the page; returns the page's text (infos and captions)."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return " ".join(str(e.value) for e in (*at.info, *at.warning, *at.caption, *at.markdown))


def _specs(at) -> list[dict]:  # type: ignore[no-untyped-def]
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def test_pages_on_a_good_sweep(demo: tuple[str, dict], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url, seeded = demo
    at = _app(url, monkeypatch, sweep="good")
    _clean(at)
    assert at.title[0].value == "Sweeps"
    sweeps = at.dataframe[0].value
    assert set(sweeps["name"]) == set(seeded) and "progress" in sweeps
    assert "refreshes" in _clean(at) or "every 2 seconds" in _clean(at)  # a sweep is running
    assert at.dataframe[1].value["trials"].sum() == 123

    _page(at, "transfer_curves")
    text = _clean(at)
    specs = _specs(at)
    assert len(specs) == 2  # µP and SP side by side
    for spec in specs:
        roles = [t["meta"]["role"] for t in spec["data"]]
        assert roles.count("trials") == len(WIDTHS)
        assert "diverged" in roles
        assert spec["layout"]["xaxis"]["type"] == "log"
    assert "µP" in specs[0]["layout"]["title"]["text"] and "SP" in specs[1]["layout"]["title"]["text"]
    assert "diverged trials are drawn" in text and "verification trials" in text
    assert any("Fit warnings" in e.label for e in at.get("expander"))

    _page(at, "transfer_fit")
    text = _clean(at)
    specs = _specs(at)
    assert len(specs) == 2  # the law, and the metric to expect at the target
    assert [t["meta"]["role"] for t in specs[0]["data"]].count("target") == 2
    roles = [t["meta"]["role"] for t in specs[1]["data"]]
    assert roles.count("floors") == 2 and roles.count("target") == 2 and "best" in specs[1]["layout"]["title"]["text"]
    forecast = next(d.value for d in at.dataframe if "backtest" in d.value.columns)
    assert list(forecast["param."]) == ["mup", "sp"] and forecast.iloc[:, 1].str.match(r"^\d").all()
    transfers = at.dataframe[0].value
    assert list(transfers["hyperparameter"]) == ["lr", "lr"]
    assert "stored fit" in text
    # The backtest: the widest proxy left out, predicted from the others, per parametrization.
    backtest = next(d.value for d in at.dataframe if "left out" in d.value.columns)
    assert set(backtest["parametrization"]) == {"µP", "SP"} and set(backtest["left out"]) == {max(WIDTHS)}
    noise = next(d.value for d in at.dataframe if "noise / depth" in d.value.columns)
    assert list(noise["hyperparameter"]) == ["lr", "lr"]
    checks = at.dataframe[-1].value
    assert set(checks["kind"]) == {"coord", "verify"}

    _page(at, "trials")
    _clean(at)
    assert len(at.dataframe[0].value) == 123
    status = next(m for m in at.multiselect if m.label == "Status")
    status.set_value(["diverged"]).run()
    _clean(at)
    shown = at.dataframe[0].value
    assert len(shown) == 42 and set(shown["status"]) == {"diverged"}
    assert len(_specs(at)) == 1  # learning curves of the selected trials

    _page(at, "export")
    _clean(at)
    yaml_text, json_text = (c.value for c in at.code)
    config = json.loads(json_text)
    assert config["provenance"]["sweep"]["name"] == "good" and config["parametrization"] == "mup"
    assert "hyperparameters:" in yaml_text
    assert len(at.get("download_button")) >= 2
    # The launcher formats are tabs too; this sweep is an MLP, so the GPT launchers say why they are missing.
    infos = " ".join(str(i.value) for i in at.info)
    assert "No nanoGPT config for this sweep" in infos and "describes a GPT" in infos
    # One export path: the page shows what `mutransfer export` writes, byte for byte but the timestamp (on a copy
    # of the database: the command stores what it writes, the dashboard must not).
    copy = tmp_path / "copy.db"
    copy.write_bytes(Path(url.removeprefix("sqlite:///")).read_bytes())
    from typer.testing import CliRunner

    from mutransfer.cli import app as cli

    def undated(text: str) -> str:
        return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[0-9:+Z.-]*", "<created>", text)

    for fmt, text in (("yaml", yaml_text), ("json", json_text)):
        out = CliRunner().invoke(cli, ["export", "good", "--db", f"sqlite:///{copy}", "--format", fmt,
                                       "--parametrization", "mup", "--allow-extrapolation"])
        assert out.exit_code == 0, out.output
        assert undated(out.stdout).rstrip("\n") == undated(text).rstrip("\n"), fmt  # st.code drops the last newline
    at.radio[0].set_value("sp").run()
    _clean(at)
    assert json.loads(at.code[1].value)["parametrization"] == "sp"


def test_pages_on_a_sweep_without_a_stored_fit_and_two_axes(demo: tuple[str, dict],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = demo
    at = _app(url, monkeypatch, sweep="unfitted")
    _page(at, "transfer_curves")
    text = _clean(at)
    assert "computed here" in text
    assert [s.value for s in at.subheader] == ["by width", "by depth"]
    assert len(_specs(at)) == 2
    _page(at, "transfer_fit")
    _clean(at)
    assert len(_specs(at)) == 2  # one law chart per axis
    _page(at, "export")
    _clean(at)
    assert len(at.code) == 2


@pytest.mark.parametrize("sweep,expect", [
    ("pending", "no completed trial yet"),
    ("diverged", "Every trial of sweep 'diverged' diverged"),
])
def test_pages_on_sweeps_with_nothing_to_fit(demo: tuple[str, dict], monkeypatch: pytest.MonkeyPatch,
                                             sweep: str, expect: str) -> None:
    url, _ = demo
    at = _app(url, monkeypatch, sweep=sweep)
    _clean(at)
    for page in ("transfer_curves", "transfer_fit", "export"):
        _page(at, page)
        assert expect in _clean(at), page
        assert not at.get("plotly_chart") and not at.code
    _page(at, "trials")
    _clean(at)
    assert len(at.dataframe[0].value) == 40


def test_pages_on_a_hyperparameter_with_a_single_value(demo: tuple[str, dict],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = demo
    at = _app(url, monkeypatch, sweep="single")
    _page(at, "transfer_curves")
    assert "has a single value" in _clean(at)
    assert not at.get("plotly_chart")
    hp = next(s for s in at.selectbox if s.label == "Hyperparameter")
    hp.set_value("output_mult").run()
    assert "output_mult has a single value (2)" in _clean(at)
    _page(at, "transfer_fit")
    _clean(at)
    _page(at, "export")
    _clean(at)
    assert len(at.code) == 2


def test_pages_on_a_running_sweep(demo: tuple[str, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = demo
    at = _app(url, monkeypatch, sweep="live")
    for page in PAGES:
        _page(at, page)
        _clean(at)
    _page(at, "transfer_curves")
    text = _clean(at)
    assert "not drawn: 19 pending, 1 running" in text


def test_pages_on_a_sweep_with_stopped_and_refined_trials(demo: tuple[str, dict],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = demo
    at = _app(url, monkeypatch, sweep="early")
    _clean(at)
    sweeps = at.dataframe[0].value.set_index("name")
    assert sweeps.loc["early", "stopped"] == 6 and sweeps.loc["good", "stopped"] == 0
    groups = at.dataframe[1].value
    assert list(groups["refined"]) == [2, 2, 2] and list(groups["stopped"]) == [2, 2, 2]

    _page(at, "transfer_curves")
    text = _clean(at)
    spec, = _specs(at)  # µP only
    roles = [t["meta"]["role"] for t in spec["data"]]
    assert roles.count("trials") == len(EARLY_WIDTHS) and roles.count("stopped") == 1 and "refine" in roles
    stopped = next(t for t in spec["data"] if t["meta"]["role"] == "stopped")
    assert len(stopped["x"]) == 6 and set(stopped["marker"]["symbol"]) == {"circle-open"}
    assert all("would end at least at" in t for t in stopped["text"])
    assert "6 trials stopped early are open markers at the floor" in text
    assert "refine round 1 (diamonds)" in text and "not drawn" not in text

    _page(at, "transfer_fit")  # the fit reads the stopped trials at their floors
    _clean(at)
    assert _specs(at)

    _page(at, "trials")
    _clean(at)
    table = at.dataframe[0].value
    assert len(table) == 24 and {"round", "floor"} <= set(table.columns)
    assert (table["round"] == 1).sum() == 6
    status = next(m for m in at.multiselect if m.label == "Status")
    assert "stopped" in status.options
    status.set_value(["stopped"]).run()
    _clean(at)
    shown = at.dataframe[0].value
    assert len(shown) == 6 and set(shown["status"]) == {"stopped"} and (shown["steps"] == STOP_STEP).all()
    spec, = _specs(at)
    curves = [t for t in spec["data"] if t["meta"]["role"] == "curve"]
    assert curves and all(max(t["x"]) == STOP_STEP and "stopped early" in t["hovertemplate"] for t in curves)

    _page(at, "export")
    _clean(at)
    assert len(at.code) == 2


def _every_page_says(url: str, monkeypatch: pytest.MonkeyPatch, sentence: str) -> None:
    at = _app(url, monkeypatch)
    for page in PAGES:
        _page(at, page)
        text = _clean(at)
        assert sentence in text, (page, text)
        assert not at.get("plotly_chart") and not at.dataframe


def test_empty_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    Store.open(url).close()
    _every_page_says(url, monkeypatch, "has no sweeps yet")


def test_missing_database_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "nowhere" / "missing.db"
    _every_page_says(f"sqlite:///{path}", monkeypatch, "There is no database at")
    assert not path.exists() and not path.parent.exists()  # the dashboard created nothing


def test_database_without_a_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "blank.db"
    path.touch()
    _every_page_says(f"sqlite:///{path}", monkeypatch, "mutransfer db upgrade")
    import sqlite3

    with sqlite3.connect(path) as conn:  # not migrated behind the user's back
        assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == []


def test_new_sweep_shows_up_without_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    url = f"sqlite:///{tmp_path / 'grow.db'}"
    Store.open(url).close()
    at = _app(url, monkeypatch)
    assert "has no sweeps yet" in _clean(at)
    with Store.open(url) as store:
        seed_sweep(store, make_recipe("late", samples=4, parametrizations=("mup",), widths=(64, 128)), points=5)
    time.sleep(2.2)  # the sweeps list's time-to-live
    at.run()
    _clean(at)
    assert list(at.dataframe[0].value["name"]) == ["late"]


def test_cli_dashboard_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from typer.testing import CliRunner

    from mutransfer.cli import app

    calls: list[tuple] = []

    def fake_exec(path: str, args: list[str], env: dict) -> None:
        calls.append((path, args, env))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", fake_exec)  # never replace the test process with a server
    runner = CliRunner()
    url = f"sqlite:///{tmp_path / 'x.db'}"
    res = runner.invoke(app, ["dashboard", "--db", url, "--port", "8765"])
    assert res.exit_code == 0, res.output
    (_, args, env), = calls
    assert args[1:4] == ["-m", "streamlit", "run"] and args[4] == APP
    assert "--server.address=127.0.0.1" in args and "--server.port=8765" in args
    assert env["MUTRANSFER_DB"] == url and url not in args  # the URL (and any password) is not on the command line
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(Path(APP).parents[1])  # app.py imports its own package
    res = runner.invoke(app, ["dashboard", "--db", "nonsense://x"])
    assert res.exit_code == 2 and "error:" in res.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = runner.invoke(app, ["dashboard", "--db", url, "--port", str(port)])
    assert res.exit_code == 2 and "--port" in res.output
    assert len(calls) == 1
    assert "dashboard" in runner.invoke(app, ["--help"]).output
    assert os.path.isfile(Path(APP))


def _everything_on_screen(at) -> str:  # type: ignore[no-untyped-def]
    """Every text the page shows, including tables, code blocks and the sidebar."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success",
                 "code", "text", "metric", "json"):
        parts += [str(getattr(e, "value", "")) for e in at.get(kind)]
    parts += [str(e.proto) for e in at.get("text_input")]
    for df in at.dataframe:
        parts.append(df.value.to_string())
    parts += [str(e.proto) for e in at.sidebar]
    return "\n".join(parts)


@pytest.mark.postgres
def test_password_in_the_url_is_never_on_a_page(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.engine import make_url

    # The local server trusts every connection: any password gets in, so it must show as *** everywhere.
    url = make_url(pg_url).set(password="s3cr3t-pw").render_as_string(hide_password=False)
    with Store.open(url) as store:
        seed_sweep(store, make_recipe("masked", samples=6, widths=WIDTHS[:3]), points=5)
    at = _app(url, monkeypatch, sweep="masked")
    for page in PAGES:
        _page(at, page)
        _clean(at)
        text = _everything_on_screen(at)
        assert "s3cr3t-pw" not in text, page
    assert "postgres:***@" in _everything_on_screen(at)  # the sidebar names the database, masked

    # An unreachable server: the error sentence names the server, not the password.
    bad = make_url(url).set(host="127.0.0.1", port=1).render_as_string(hide_password=False)
    at = _app(bad, monkeypatch)
    for page in PAGES:
        _page(at, page)
        text = _everything_on_screen(at)
        assert "s3cr3t-pw" not in text and "Traceback" not in text, page
