"""Forward outputs as people write them: the logits as a tensor, nanoGPT's (logits, loss), a transformers
ModelOutput, a dict; anything else refused in one line before a sweep writes anything."""

from __future__ import annotations

import sys

import pytest
import torch

from mutransfer.logits import ForwardOutputError, check_logits, logits_of
from mutransfer.plan import plan
from mutransfer.recipe import parse_recipe
from mutransfer.train import train


@pytest.fixture
def no_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers imports torchvision when it is installed; its build does not match this torch. Hidden for the
    test only: other tests check the process still sees it (tests/test_hf_llama.py)."""
    monkeypatch.setitem(sys.modules, "torchvision", None)


def test_logits_of_every_form(no_torchvision: None) -> None:
    from transformers.modeling_outputs import CausalLMOutputWithPast

    t = torch.randn(2, 3, 5)
    assert logits_of(t) is t
    assert logits_of((t, None)) is t
    assert logits_of([t, torch.tensor(1.0)]) is t
    assert logits_of({"loss": None, "logits": t}) is t
    # A ModelOutput is an OrderedDict whose first item is the loss when labels were given: .logits wins.
    assert logits_of(CausalLMOutputWithPast(loss=torch.tensor(2.0), logits=t)) is t
    assert logits_of(CausalLMOutputWithPast(logits=t)) is t


@pytest.mark.parametrize(("output", "said"), [
    (None, "returned None"),
    ({"scores": torch.zeros(1)}, "returned a dict with keys ['scores']"),
    ((None, torch.zeros(1)), "returned a tuple of (NoneType, Tensor)"),
    ((), "returned a tuple of ()"),
    ("logits", "returned a str"),
])
def test_anything_else_is_one_line(output: object, said: str) -> None:
    with pytest.raises(ForwardOutputError) as e:
        logits_of(output)
    msg = str(e.value)
    assert said in msg and "it must return the logits" in msg and "\n" not in msg


def test_shapes_are_checked_and_nanogpt_s_last_position_is_named() -> None:
    x = torch.zeros(2, 8, dtype=torch.long)
    check_logits(torch.zeros(2, 8, 11), x, 11)
    check_logits(torch.zeros(2, 10), torch.zeros(2, 64), 10)
    with pytest.raises(ForwardOutputError, match=r"shape \(2, 1, 11\).*only the last position's logits"):
        check_logits(torch.zeros(2, 1, 11), x, 11)
    with pytest.raises(ForwardOutputError, match=r"expected \(2, 8, 11\)"):
        check_logits(torch.zeros(2, 8, 12), x, 11)


@pytest.mark.parametrize("output", ["tuple", "dict", "model_output"])
def test_a_trial_trains_whatever_form_the_forward_returns(output: str, no_torchvision: None) -> None:
    r = parse_recipe(f"""
name: forms
model: {{family: "userbuilders:wrapped", parametrization: mup, base_width: 16, options: {{output: {output}}}}}
data: {{kind: digits}}
train: {{steps: 20, eval_interval: 10}}
search: {{samples: 1, space: {{lr: {{loguniform: [1.0e-2, 1.1e-2]}}}}}}
scales: {{base: {{width: 16, depth: 2, batch_size: 32}}}}
target: {{width: 64, depth: 2, batch_size: 32}}
""")
    points: list[dict] = []
    res = train(plan(r)[0], points.append)
    assert res.status == "completed" and res.metric is not None
    assert res.metric < points[0]["val_loss"] + 1e-9 and res.metric < 2.0  # it learned: digits start at ln 10
