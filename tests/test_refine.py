"""search.refine: the refine round's plan, deterministic from the recipe and its centre, and how a sweep plans it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mutransfer.plan import plan, point_costs, refine_counts, refine_draws, refine_specs, refine_total
from mutransfer.recipe import RecipeError, Scale, parse_recipe
from mutransfer.storage import Store, TrialRecord
from mutransfer.sweep import refine_round
from mutransfer.testing.recipes import mlp_recipe, tiny_sweep_recipe
from mutransfer.testing.synthetic import LEVEL, bowl

REFINE = {"rounds": 2, "samples": 5, "span": 0.1}


def recipe(**changes: object):  # noqa: ANN201
    return parse_recipe(mlp_recipe(**{"search__refine": REFINE, "search__samples": 12, **changes}))


def centres_at(r, u: float) -> dict:  # noqa: ANN001
    return {"mup": {s: {"lr": u} for s in r.scales.points()}}


def test_same_recipe_and_centre_same_trials_and_the_round_and_seed_change_the_draws() -> None:
    r = recipe()
    a, b = refine_specs(r, 1, centres_at(r, -7.0)), refine_specs(r, 1, centres_at(r, -7.0))
    assert [(s.key, s.hparams) for s in a] == [(s.key, s.hparams) for s in b]
    assert len(a) == 5 * len(r.scales.points()) and refine_total(r) == 2 * len(a)
    assert refine_draws(r, 1) != refine_draws(r, 2)
    assert refine_draws(r, 1) != refine_draws(recipe(search__seed=9), 1)
    # keys: the round's own numbering; sample indices go on after round 0's (and round 1's)
    assert a[0].key.endswith("/r1-000") and {s.sample for s in a} == set(range(12, 17))
    assert {s.sample for s in refine_specs(r, 2, centres_at(r, -7.0))} == set(range(17, 22))
    assert {s.round for s in a} == {1}
    assert not {s.key for s in a} & {s.key for s in plan(r)}


def test_the_same_offsets_at_every_point_around_each_points_own_centre() -> None:
    r = recipe()
    points = r.scales.points()
    centres = {"mup": {s: {"lr": -8.0 + 0.5 * i} for i, s in enumerate(points)}}
    specs = refine_specs(r, 1, centres)
    half = 0.1 * math.log2(1e4)
    by_point: dict[Scale, list[float]] = {}
    for s in specs:
        by_point.setdefault(s.scale, []).append(math.log2(s.hparams["lr"]) - centres["mup"][s.scale]["lr"])
    offsets = list(by_point.values())
    assert all(np.allclose(o, offsets[0]) for o in offsets)  # common random numbers: the same draws everywhere
    assert all(abs(x) <= half + 1e-9 for x in offsets[0])
    assert max(offsets[0]) - min(offsets[0]) > half  # spread over the window, not bunched


def test_a_window_at_the_edge_moves_inside_the_range_and_a_point_without_a_centre_gets_none() -> None:
    r = recipe()
    points = r.scales.points()
    centres = {"mup": {points[0]: {"lr": math.log2(1e-4) - 3.0}, points[1]: {"lr": math.log2(1.0)}}}
    specs = refine_specs(r, 1, centres)
    assert {s.scale for s in specs} == {points[0], points[1]}
    half = 0.1 * math.log2(1e4)
    for s in specs:
        u = math.log2(s.hparams["lr"])
        assert math.log2(1e-4) - 1e-9 <= u <= 1e-9  # inside the searched range
        if s.scale == points[0]:
            assert u <= math.log2(1e-4) + 2 * half + 1e-9  # a full window at the bottom of the range
    assert refine_specs(r, 1, {}) == []


def test_choices_are_drawn_as_in_round_zero() -> None:
    r = parse_recipe(mlp_recipe(search__refine=REFINE, search__space={
        "lr": {"loguniform": [1e-4, 1.0]}, "init_std": {"choice": [0.5, 1.0, 2.0]}}))
    specs = refine_specs(r, 1, centres_at(r, -7.0))
    assert {s.hparams["init_std"] for s in specs} <= {0.5, 1.0, 2.0}
    assert len({s.hparams["init_std"] for s in specs}) >= 2


@pytest.mark.parametrize(("changes", "where"), [
    ({"search__method": "optuna"}, "search.refine: refine rounds follow a random search"),
    ({"search__refine": {"samples": 4, "rounds": 9}}, "search.refine.rounds"),
    ({"search__refine": {"samples": 4, "span": 0.7}}, "search.refine.span"),
    ({"search__refine": {"rounds": 1}}, "search.refine.samples"),
])
def test_recipe_refuses(changes: dict, where: str) -> None:
    with pytest.raises(RecipeError) as e:
        parse_recipe(tiny_sweep_recipe(**{"search__refine": {"samples": 4}, **changes}))
    assert where in str(e.value)


def test_a_sweep_plans_its_refine_round_around_the_fitted_optimum_and_reads_it_back(tmp_path: Path) -> None:
    """No Ray: round 0's trials are stored finished (a bowl with its optimum at lr 2^-6.5), then the round is
    planned from their fit; planned again, or read back once stored, it is the same trials."""
    r = recipe(search__refine={"rounds": 1, "samples": 6, "span": 0.1})
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    rng = np.random.default_rng(0)
    with Store.open(url) as store:
        specs = plan(r)
        sweep = store.create_sweep("refine", "text", r.model_dump_json(), r.hash(), len(specs), "val_loss",
                                   trials=[TrialRecord.from_spec(s) for s in specs])
        for s in specs:
            y = LEVEL + bowl(math.log2(s.hparams["lr"]) + 6.5) + 0.01 * rng.normal()
            store.finish_trial(sweep.id, s.key, "completed", metric=y, steps=s.steps,
                               points=[{"step": s.steps, "val_loss": y}])
        planned = refine_round(r, store, sweep.id, 1)
        assert len(planned) == 6 * len(r.scales.points())
        u = np.log2([s.hparams["lr"] for s in planned])
        assert abs(np.median(u) - -6.5) < 0.6 and np.all(np.abs(u - -6.5) < 0.1 * math.log2(1e4) + 0.6)
        again = refine_round(r, store, sweep.id, 1)
        assert [(s.key, s.hparams) for s in again] == [(s.key, s.hparams) for s in planned]
        store.add_trials(sweep.id, [TrialRecord.from_spec(s) for s in planned])
        stored = refine_round(r, store, sweep.id, 1)
        assert [(s.key, s.round, s.sample, s.scale) for s in stored] == \
            [(s.key, s.round, s.sample, s.scale) for s in planned]
        assert all(math.isclose(a.hparams["lr"], b.hparams["lr"]) for a, b in zip(stored, planned, strict=True))
        frame = store.trials_frame(sweep.id)
        assert sorted(frame["round"].unique()) == [0, 1]


# search.sampler: latin, and refine.allocate: by_cost.

def test_a_latin_first_round_puts_one_draw_in_each_stratum_and_choices_evenly() -> None:
    space = {"lr": {"loguniform": [1e-4, 1.0]}, "init_std": {"uniform": [0.5, 2.0]},
             "output_mult": {"choice": [1.0, 2.0, 4.0]}}
    r = parse_recipe(mlp_recipe(search__sampler="latin", search__samples=7, search__space=space))
    configs = [s.hparams for s in plan(r) if s.group == plan(r)[0].group]
    for name, lo, hi, coord in (("lr", -4 * math.log2(10), 0.0, math.log2), ("init_std", 0.5, 2.0, float)):
        strata = sorted(int((coord(c[name]) - lo) / (hi - lo) * 7) for c in configs)
        assert strata == list(range(7)), (name, strata)
    counts = np.unique([c["output_mult"] for c in configs], return_counts=True)[1]
    assert len(counts) == 3 and counts.max() - counts.min() <= 1
    # Deterministic from the seed; the same draws at every scale point; independent draws cluster more.
    assert [s.hparams for s in plan(r)] == [s.hparams for s in plan(r)]
    assert {tuple(sorted(s.hparams.items())) for s in plan(r)} == {tuple(sorted(c.items())) for c in configs}
    gaps = []
    for sampler in ("random", "latin"):
        for seed in range(40):
            u = np.sort([math.log2(s.hparams["lr"]) for s in plan(parse_recipe(mlp_recipe(
                search__sampler=sampler, search__samples=6, search__seed=seed))) if s.scale.width == 32])
            gaps.append((sampler, np.diff(np.r_[-4 * math.log2(10), u, 0.0]).max()))
    widest = {s: max(g for t, g in gaps if t == s) for s in ("random", "latin")}
    assert widest["latin"] <= 2 * 4 * math.log2(10) / 6 + 1e-9 < widest["random"]


def test_a_latin_refine_round_spreads_its_offsets_over_the_window() -> None:
    r = recipe(search__sampler="latin", search__refine={"samples": 8, "span": 0.1})
    offsets = sorted(d["lr"] for d in refine_draws(r, 1))
    assert [int((x + 1) / 2 * 8) for x in offsets] == list(range(8))


def test_sampler_random_is_the_default_and_keeps_the_hash_and_optuna_refuses_latin() -> None:
    assert parse_recipe(tiny_sweep_recipe(search__sampler="random")).hash() == parse_recipe(tiny_sweep_recipe()).hash()
    assert parse_recipe(tiny_sweep_recipe(search__refine={"samples": 3, "allocate": "even"})).hash() == \
        parse_recipe(tiny_sweep_recipe(search__refine={"samples": 3})).hash()
    with pytest.raises(RecipeError) as e:
        parse_recipe(tiny_sweep_recipe(search__method="optuna", search__sampler="latin"))
    assert str(e.value).startswith("recipe: search.sampler: latin") and "\n" not in str(e.value)


def test_by_cost_gives_each_point_the_draws_the_cheapest_points_compute_buys() -> None:
    r = recipe(search__refine={"samples": 8, "span": 0.1, "allocate": "by_cost"})
    groups = [f"mup/{s.tag()}" for s in r.scales.points()]  # widths 32, 64, 128, 256
    costs = dict(zip(groups, (1.0, 3.2, 11.2, 40.0), strict=True))
    assert list(refine_counts(r, costs).values()) == [8, 2, 0, 0]
    assert refine_counts(r, {groups[0]: 1.0, groups[1]: 2.0}) == dict(zip(groups, (8, 4, 8, 8), strict=True))
    assert set(refine_counts(r, None).values()) == {8}  # nothing measured yet: as even
    even = recipe(search__refine={"samples": 8, "span": 0.1})
    assert set(refine_counts(even, costs).values()) == {8}
    # Each point takes the round's first draws: the same keys and values as the even round's.
    c = centres_at(r, -7.0)
    by_cost, all_ = refine_specs(r, 1, c, costs), refine_specs(even, 1, c)
    assert [s.key for s in by_cost] == [s.key for s in all_ if s.group == groups[0]] + \
        [s.key for s in all_ if s.group == groups[1]][:2]
    assert {s.key: s.hparams for s in by_cost}.items() <= {s.key: s.hparams for s in all_}.items()


def test_point_costs_are_the_median_flops_of_completed_trials() -> None:
    import pandas as pd

    frame = pd.DataFrame({"group": ["a", "a", "a", "b", "b"], "status": ["completed", "completed", "stopped",
                                                                          "completed", "diverged"],
                          "flops": [2.0, 4.0, 0.5, 9.0, 1.0]})
    assert point_costs(frame) == {"a": 3.0, "b": 9.0}


@pytest.mark.slow
def test_a_latin_sweep_with_a_by_cost_refine_round_plans_by_the_measured_flops_and_ends_done(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real sweep (Ray Tune, SQLite): a Latin first round, then a refine round that gives the wider point the
    draws the narrow point's compute buys there; the sweep is `done` with fewer trials than the even plan's, and its
    progress counts on through the refine round."""
    import re

    from mutransfer import api
    from mutransfer.testing.recipes import edit

    text = edit(tiny_sweep_recipe(name="cost", search__samples=5, search__sampler="latin",
                                  scales__vary={"width": [16, 64]}),
                search__refine={"samples": 4, "span": 0.1, "allocate": "by_cost"})
    path = tmp_path / "cost.yaml"
    path.write_text(text)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    r = parse_recipe(text)
    summary = api.sweep(path, db=url, check=False, progress=True)
    lines = [m for m in (re.match(r"\[(\d+)/(\d+)\] \S+ (\w+)", x) for x in capsys.readouterr().err.splitlines())
             if m and m.group(3) != "lost"]
    with Store.open(url) as store:
        sweep = store.get_sweep("cost")
        frame = store.trials_frame(sweep.id)
        first = frame[frame["round"] == 0]
        assert [int(m.group(1)) for m in lines] == list(range(1, len(frame) + 1))
        assert {int(m.group(2)) for m in lines} == {len(first), len(frame)}
        costs = point_costs(first)
        counts = refine_counts(r, costs)
        assert costs["mup/w64-d2-b32-s1"] > 2 * costs["mup/w16-d2-b32-s1"]
        assert counts["mup/w16-d2-b32-s1"] == 4 and counts["mup/w64-d2-b32-s1"] < 4
        assert frame[frame["round"] == 1].groupby("group").size().to_dict() == \
            {g: n for g, n in counts.items() if n}
        assert sweep.status == "done" and summary.total == len(frame) < refine_total(r) + len(first)
        lr = np.log2(first.loc[first["group"] == "mup/w16-d2-b32-s1", "hp.lr"].to_numpy())
        lo, hi = math.log2(1e-3), math.log2(3e-2)
        assert sorted(((lr - lo) / (hi - lo) * 5).astype(int)) == list(range(5))  # one draw per stratum
        again = api.sweep(path, store=store, check=False)
        assert again.ran == 0 and store.get_sweep("cost").status == "done"


def test_validate_prints_the_sampler_early_stop_and_refine_plans() -> None:
    """`mutransfer validate` says how the draws are spread, when trials stop and what a refine round adds: a user
    reads the compute a recipe commits to before running it."""
    from typer.testing import CliRunner

    from mutransfer.cli import app

    path = Path(__file__).resolve().parents[1] / "recipes" / "quickstart_asha_refine.yaml"
    res = CliRunner().invoke(app, ["validate", str(path)])
    assert res.exit_code == 0, res.output
    r = parse_recipe(path.read_text())
    es, rf = r.search.early_stop, r.search.refine
    assert "Latin hypercube" in res.output
    assert f"early stop: asha, rungs at step {es.grace_steps} x {es.reduction_factor:g}^k" in res.output
    assert f"refine: {rf.rounds} round(s) of {rf.samples} draws at every scale point" in res.output
    assert f"up to {refine_total(r)} more trials" in res.output
