"""A user's own model builders, as a recipe would name them: `userbuilders:mlp` (tests put tests/ on sys.path)."""

from __future__ import annotations

import mup
import torch
from torch import nn

from mutransfer.proxy import BuildConfig


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
