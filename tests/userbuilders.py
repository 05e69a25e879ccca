"""A user's own model builders, as a recipe would name them: `userbuilders:mlp` (tests put tests/ on sys.path)."""

from __future__ import annotations

import mup
import torch
from torch import nn

from mutransfer.parametrization import BuildConfig


class TwoLayer(nn.Module):
    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        assert cfg.input_dim is not None
        self.fc1 = nn.Linear(cfg.input_dim, cfg.width)
        self.fc2 = nn.Linear(cfg.width, cfg.width)
        readout = mup.MuReadout if cfg.parametrization == "mup" else nn.Linear
        self.head = readout(cfg.width, cfg.num_classes)
        self.scale = float(cfg.options.get("scale", 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x) * self.scale))))


def mlp(cfg: BuildConfig) -> nn.Module:
    return TwoLayer(cfg)


def not_a_module(cfg: BuildConfig) -> object:
    return object()


# Broken µP, for the coordinate check (tests/test_check.py): each is declared `parametrization: mup` in a recipe.


class PlainReadout(nn.Module):
    """µP's classic mistake: the output layer is a plain nn.Linear, not a mup.MuReadout."""

    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        assert cfg.input_dim is not None
        self.fc1 = nn.Linear(cfg.input_dim, cfg.width)
        self.fc2 = nn.Linear(cfg.width, cfg.width)
        self.readout = nn.Linear(cfg.width, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def plain_readout(cfg: BuildConfig) -> nn.Module:
    return PlainReadout(cfg)


class FlooredHidden(nn.Module):
    """A hidden size floored at 8 x base_width: equal in the base and delta models that set_base_shapes compares,
    so mup takes it for a fixed dimension, yet it grows at larger widths."""

    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        assert cfg.input_dim is not None
        hidden = max(2 * cfg.width, 8 * cfg.base_width)
        self.fc1 = nn.Linear(cfg.input_dim, cfg.width)
        self.fc2 = nn.Linear(cfg.width, hidden)
        self.fc3 = nn.Linear(hidden, cfg.width)
        self.head = mup.MuReadout(cfg.width, cfg.num_classes, readout_zero_init=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.head(torch.relu(self.fc3(torch.relu(self.fc2(h)))))


def floored_hidden(cfg: BuildConfig) -> nn.Module:
    return FlooredHidden(cfg)


class BypassedReadout(mup.MuReadout):
    """A MuReadout whose forward was rewritten (say, to add a temperature) and lost the 1/width_mult: mup's shape
    assertion passes, trials train, but the logits grow with width."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(self.output_mult * x, self.weight, self.bias)


class BypassedMLP(nn.Module):
    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        assert cfg.input_dim is not None
        self.fc1 = nn.Linear(cfg.input_dim, cfg.width)
        self.fc2 = nn.Linear(cfg.width, cfg.width)
        self.head = BypassedReadout(cfg.width, cfg.num_classes, readout_zero_init=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def bypassed_readout(cfg: BuildConfig) -> nn.Module:
    return BypassedMLP(cfg)


class DoubleScaledReadout(mup.MuReadout):
    """MuReadout's 1/width_mult applied twice (the user divided by the width multiplier again): the logits stop
    learning as width grows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x / self.width_mult())


class DoubleScaledMLP(BypassedMLP):
    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__(cfg)
        # No bias: a bias learns at the same pace at every width and would hide the vanishing weight's part.
        self.head = DoubleScaledReadout(cfg.width, cfg.num_classes, bias=False, readout_zero_init=True)


def double_scaled(cfg: BuildConfig) -> nn.Module:
    return DoubleScaledMLP(cfg)


def gpt(cfg: BuildConfig) -> nn.Module:
    """A GPT-like builder (the built-in GPT) that reads its shape from model.options, as README "Your own model"
    asks a builder to declare it: head_dim or n_heads, ffn_ratio. Undeclared, its own defaults: head_dim 8, ratio 4."""
    from dataclasses import replace

    from mutransfer.models import GPT

    o = cfg.options
    head_dim = o.get("head_dim", 8 if o.get("n_heads") is None else None)
    return GPT(replace(cfg, head_dim=head_dim, n_heads=o.get("n_heads"), ffn_ratio=float(o.get("ffn_ratio", 4.0))))


def exits(cfg: BuildConfig) -> nn.Module:
    """A builder that calls sys.exit() (tests/test_bad_input.py): an error naming it, not a silent exit."""
    import sys

    sys.exit(3)


# Forward outputs as people write them (tests/test_logits.py): the logits inside a tuple, a dict, an object.


class Wrapped(nn.Module):
    """TwoLayer whose forward returns its logits wrapped as `cfg.options["output"]` says."""

    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        self.inner = TwoLayer(cfg)
        self.output = cfg.options.get("output", "tuple")

    def forward(self, x: torch.Tensor) -> object:
        logits = self.inner(x)
        if self.output == "tuple":
            return logits, None  # nanoGPT's (logits, loss) without targets
        if self.output == "dict":
            return {"loss": None, "logits": logits}
        if self.output == "model_output":
            from transformers.modeling_outputs import SequenceClassifierOutput

            return SequenceClassifierOutput(logits=logits)
        if self.output == "no_logits":
            return {"scores": logits}
        return None


def wrapped(cfg: BuildConfig) -> nn.Module:
    return Wrapped(cfg)
