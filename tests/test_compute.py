"""compute.py: the sweep's FLOPs from a real store against the target's 6·N·D, N from a model built for real."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from launcher_sweeps import GPT, MLP, fill, recipe, trial_flops
from typer.testing import CliRunner

from mutransfer.cli import app
from mutransfer.compute import compute_report, param_counts, target_param_counts
from mutransfer.export import target_build_config
from mutransfer.parametrization import build_model
from mutransfer.plan import plan
from mutransfer.storage import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path}/x.db") as s:
        yield s


def test_gpt_share_matches_a_hand_computation(store: Store, tmp_path: Path) -> None:
    r = recipe(GPT, tmp_path)
    sweep_id = fill(store, r, verify=2, failed=1)
    rep = compute_report(store.trials_frame(sweep_id), r)

    n_planned = len(plan(r))
    spent = sum(trial_flops(i) for i in range(n_planned - 1))  # the last trial failed: no FLOPs stored
    assert rep.sweep_flops == pytest.approx(spent, rel=1e-12)
    assert rep.sweep_trials == n_planned - 1 and rep.trials_without_flops == 1
    assert rep.verify_flops == pytest.approx(7.0e10 + 1.4e11) and rep.verify_trials == 2
    assert rep.sweep_wall_time == pytest.approx(0.25 * (n_planned - 1))

    # N by hand for this GPT: embeddings V·W + T·W, per block 12·W² + 4·W (q, k, v, proj, a 4x MLP; two
    # LayerNorms), the final LayerNorm 2·W, the readout V·W (no bias).
    vocab, w, depth, t = len(set((tmp_path / "corpus.txt").read_text())), 256, 3, 64
    total = 2 * vocab * w + t * w + depth * (12 * w * w + 4 * w) + 2 * w
    assert (rep.target_params_total, rep.target_params_non_embedding) == (total, total - vocab * w - t * w)
    # ... and the count of a model actually built at the target size, on the CPU.
    real = build_model(target_build_config(r, "mup"), "gpt", "cpu")
    assert param_counts(real) == (rep.target_params_total, rep.target_params_non_embedding)
    assert sum(p.numel() for p in real.parameters()) == total

    assert rep.params_used == "total" and rep.target_params == total
    assert rep.target_tokens == 2_048_000
    assert rep.target_flops == pytest.approx(6.0 * total * 2_048_000)
    assert rep.share == pytest.approx(spent / (6.0 * total * 2_048_000))
    assert rep.share_with_verify == pytest.approx((spent + 2.1e11) / (6.0 * total * 2_048_000))
    assert "attention" in rep.note

    d = rep.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["share"] == rep.share and "Tensor Programs V" in d["convention"]
    lines = rep.lines()
    assert len(lines) == 2 and f"{100 * rep.share:.3g}%" in lines[1] and "2 verify trials" in lines[0]


def test_mlp_counts_its_input_layer_and_needs_tokens_for_a_share(store: Store, tmp_path: Path) -> None:
    r = recipe(MLP, tmp_path, target__tokens=None)
    sweep_id = fill(store, r, failed=0)
    rep = compute_report(store.trials_frame(sweep_id), r)
    # digits: 64 inputs, 10 classes; input layer, 3 hidden width x width layers, readout, all with biases.
    w = 512
    total = 64 * w + w + 3 * (w * w + w) + w * 10 + 10
    assert rep.target_params_total == rep.target_params_non_embedding == total  # no lookup tables in an MLP
    assert target_param_counts(r) == (total, total)
    assert rep.target_tokens is None and rep.target_flops is None and rep.share is None
    assert "target.tokens" in rep.note and "cannot be computed" in rep.note
    assert "unknown" in rep.lines()[1]
    assert rep.sweep_flops == pytest.approx(sum(trial_flops(i) for i in range(len(plan(r)))))


def test_params_can_be_given_and_frames_are_checked(tmp_path: Path) -> None:
    import pandas as pd

    r = recipe(MLP, tmp_path)
    frame = pd.DataFrame({"role": ["sweep", "sweep", "verify"], "status": ["completed", "diverged", "completed"],
                          "flops": [3.0e9, 1.0e9, 5.0e9], "wall_time": [1.0, 2.0, 3.0]})
    rep = compute_report(frame, r, params=(1000, 900))
    assert rep.sweep_flops == 4.0e9 and rep.verify_flops == 5.0e9  # a diverged trial's compute was spent too
    assert rep.share == pytest.approx(4.0e9 / (6.0 * 1000 * 640_000))
    with pytest.raises(ValueError, match="'role'"):
        compute_report(frame.drop(columns="role"), r, params=(1, 1))


def test_fit_command_prints_and_json_includes_the_compute(store: Store, tmp_path: Path) -> None:
    r = recipe(GPT, tmp_path)
    fill(store, r)
    db = store.engine.url.render_as_string(hide_password=False)
    out = CliRunner().invoke(app, ["fit", "lg", "--db", db, "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["compute"]["share"] > 0 and doc["compute"]["params_used"] == "total"
    assert doc["fit"]["metric"] == "val_loss"
    text = CliRunner().invoke(app, ["fit", "lg", "--db", db])
    assert text.exit_code == 0, text.output
    assert "sweep compute:" in text.stdout and "of it (Tensor Programs V" in text.stdout
