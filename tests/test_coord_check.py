"""THE µP correctness test: after a few Adam steps, per-coordinate activation changes stay flat across widths under
µP and grow with width under SP, for the MLP and the GPT. Mutations of µP must fail it: a readout that skips
MuReadout's 1/width multiplier (an nn.Linear readout in disguise, so mup's own shape assertion does not catch it),
and a µP model trained with the plain optimizer (no LR / width_mult on hidden matrices). A 1/sqrt(d) attention
scale shows in the attention logits' bound (tests/test_coord_matrix.py plants it), not in these layers' outputs.

Measured here (2 seeds, fixed batch, Adam lr 3e-3, 3 steps): µP max |slope| 0.04 (mlp, widths 64..1024) and 0.16
(gpt, 64..512; finite widths pull attention a little below 0 and it flattens with width); SP logits slope +0.9
(mlp) and +0.5 (gpt), hidden layers up to +1..+2; the mutation's logits slope +0.8.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from mup import MuReadout
from torch import nn

import mutransfer.coordcheck.measure as measure
import mutransfer.models as models
from mutransfer.coordcheck.measure import CoordCheck, coord_check
from mutransfer.parametrization import BuildConfig

pytestmark = pytest.mark.slow

MLP_WIDTHS = [64, 128, 256, 512, 1024]
GPT_WIDTHS = [64, 128, 256, 512]


def mlp_cfg(parametrization: str) -> Callable[[int], BuildConfig]:
    return lambda w: BuildConfig(width=w, depth=3, parametrization=parametrization, input_dim=64, num_classes=10,
                                 base_width=64)


def gpt_cfg(parametrization: str) -> Callable[[int], BuildConfig]:
    return lambda w: BuildConfig(width=w, depth=2, parametrization=parametrization, vocab_size=64, num_classes=64,
                                 seq_len=16, head_dim=16, base_width=64)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _check(family: str, parametrization: str) -> CoordCheck:
    if family == "mlp":
        return coord_check(mlp_cfg(parametrization), MLP_WIDTHS, "mlp", batch_size=32)
    return coord_check(gpt_cfg(parametrization), GPT_WIDTHS, "gpt", batch_size=16)


def _describe(cc: CoordCheck) -> str:
    return ", ".join(f"{k} {s:+.2f}" for k, s in cc.slopes.items())


@pytest.mark.parametrize(("family", "mup_bound"), [("mlp", 0.12), ("gpt", 0.3)])
def test_mup_is_flat_and_sp_blows_up(family: str, mup_bound: float) -> None:
    mu = _check(family, "mup")
    assert "logits" in mu.slopes and len(mu.slopes) > 4
    assert max(abs(s) for s in mu.slopes.values()) < mup_bound, _describe(mu)
    assert mu.unstable(mup_bound) == []
    assert abs(mu.slopes["logits"]) < 0.2, _describe(mu)

    sp = _check(family, "sp")
    assert sp.slopes["logits"] > (0.6 if family == "mlp" else 0.35), _describe(sp)
    assert max(sp.slopes.values()) > 0.8, _describe(sp)  # some hidden layer grows about like width
    assert sp.unstable(0.3), _describe(sp)


class _NoDivReadout(MuReadout):
    """Passes mup's isinstance checks but computes like nn.Linear: no 1/width_mult on the output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.Linear.forward(self, self.output_mult * x)


@pytest.mark.parametrize("family", ["mlp", "gpt"])
def test_broken_mup_fails_the_check(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "MuReadout", _NoDivReadout)
    broken = _check(family, "mup")
    assert broken.slopes["logits"] > 0.5, _describe(broken)
    assert "logits" in broken.unstable(0.3)


@pytest.mark.parametrize("family", ["mlp", "gpt"])
def test_mup_model_with_plain_adam_fails_the_check(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = measure.optimizer_for
    # µP model, SP optimizer: hidden matrices keep the base LR at every width.
    monkeypatch.setattr(measure, "optimizer_for", lambda params, _p, opt, **kw: real(params, "sp", opt, **kw))
    broken = _check(family, "mup")
    assert max(broken.slopes.values()) > 0.6, _describe(broken)
    assert any(k.startswith(("hidden", "blocks")) for k in broken.unstable(0.3)), _describe(broken)
