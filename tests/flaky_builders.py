"""User builders that misbehave on purpose, for the reliability tests (tests/ is put on sys.path)."""

from __future__ import annotations

import os
import signal

import torch
from torch import nn
from userbuilders import BypassedReadout

from mutransfer.parametrization import BuildConfig


class Boom(nn.Module):
    """A µP MLP whose forward raises when the trial's own `boom` hyperparameter says so. Its readout lost
    MuReadout's 1/width_mult (userbuilders.BypassedReadout): it fails the coordinate check, so its sweeps run with
    --skip-check, and the one in tests/test_resume.py is also the test that --skip-check sweeps such a model."""

    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__()
        assert cfg.input_dim is not None
        self.fc1 = nn.Linear(cfg.input_dim, cfg.width)
        self.fc2 = nn.Linear(cfg.width, cfg.width)
        self.head = BypassedReadout(cfg.width, cfg.num_classes, readout_zero_init=True)
        self.boom = bool(cfg.hparams.get("boom", 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.boom:
            raise RuntimeError("boom: this trial's model fails on purpose")
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def boom(cfg: BuildConfig) -> nn.Module:
    return Boom(cfg)


class Dies(Boom):
    """The same MLP, whose forward kills its own process, as the kernel's OOM killer would, when the trial's `die`
    hyperparameter says so: the trial never reports, its worker process is gone."""

    def __init__(self, cfg: BuildConfig) -> None:
        super().__init__(cfg)
        self.die = bool(cfg.hparams.get("die", 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.die:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x)


def dies(cfg: BuildConfig) -> nn.Module:
    return Dies(cfg)
