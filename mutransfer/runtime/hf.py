"""The Hugging Face side: the µP optimizer of a transformers model (`hf_optimizer`) and `MuTrainer`, a
transformers.Trainer with µP's param groups. transformers is imported only when `MuTrainer` is first used."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mutransfer.runtime.optimizer import make_optimizer
from mutransfer.runtime.rules import load_rules, optim_rule


def hf_optimizer(model: Any, hf: Any = None, **kw: Any) -> Any:
    """The µP optimizer of a transformers model from the export's hf files (`mutransfer export --format hf -o DIR`:
    DIR, the JSON that command prints without -o, or the `hf_files` dict), or, with `hf` None, from the
    `mup_*` keys of `model.config` (a config made from that config.json; learning rate, weight decay and eps
    then come from `kw` or the mup_* values). `kw`: lr, weight_decay, eps, betas and the classification keywords."""
    return make_optimizer(model, load_rules(model.config if hf is None else hf), **kw)


def _mu_trainer() -> type:
    from transformers import Trainer

    class MuTrainer(Trainer):  # type: ignore[misc, valid-type]
        """transformers.Trainer whose optimizer has µP's param groups: the learning rate, weight decay, epsilon,
        betas and optim (adamw_* or sgd, with optim_args momentum=) from its TrainingArguments, the µP rules from
        `mup_config` (hf files) or else the `mup_*` keys of the model's config. The schedulers keep each group's
        LR ratio. `mup_names`: the classification keywords (see mutransfer.runtime's doc)."""

        def __init__(self, *args: Any, mup_config: Any = None, mup_names: dict[str, Any] | None = None,
                     **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.mup_config, self.mup_names = mup_config, dict(mup_names or {})

        def create_optimizer(self, model: Any = None) -> Any:
            if self.optimizer is None:
                m, a = self.model if model is None else model, self.args
                rules = load_rules(m.config if self.mup_config is None else self.mup_config)
                optim = optim_rule(str(getattr(a.optim, "value", a.optim)), a.optim_args, rules.width_mult)
                self.optimizer = make_optimizer(
                    m, replace(rules, **optim), lr=a.learning_rate, weight_decay=a.weight_decay, eps=a.adam_epsilon,
                    betas=(a.adam_beta1, a.adam_beta2), **self.mup_names)
            return self.optimizer

    return MuTrainer


def __getattr__(name: str) -> Any:
    if name == "MuTrainer":  # built on first use: importing this module does not import transformers
        globals()["MuTrainer"] = cls = _mu_trainer()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
