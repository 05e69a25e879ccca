"""The largest values a recipe may ask for, and why each is what it is.

These bounds are against absurd or hostile input (an alias bomb, a typo with six more zeros) and against what cannot
be stored, never against big models: each sits orders of magnitude above any model trained today, so that a real
recipe (a target tens of thousands wide, millions of steps) stays valid. What a machine can hold is checked where it
matters, against the machine (the coordinate check's widest model: mutransfer.coordcheck.run).
"""

from __future__ import annotations

# The store keeps integers (steps, sizes, seeds) in 64-bit columns: a larger one cannot be inserted.
INT64_MAX = 2**63 - 1

# A model width (d_model, hidden size): the widest transformers trained are ~2^14-2^15; 2^20 is a matrix of 10^12
# weights per layer.
MAX_WIDTH = 2**20
# A depth in layers or blocks: the deepest networks trained have ~10^4 layers (10,000-layer CNNs, Xiao et al. 2018).
MAX_DEPTH = 10_000
# A batch size in examples (sequences): today's largest are ~10^4 sequences (a few million tokens).
MAX_BATCH_SIZE = 2**24
# A sequence length in tokens: the longest context windows are ~10^7 tokens.
MAX_SEQ_LEN = 2**24
# A vocabulary: the largest are ~10^6 (byte-level and multilingual tokenizers are 2^8-2^18).
MAX_VOCAB = 2**24

# search.samples, configurations per scale point: random search over a handful of hyperparameters needs tens to
# hundreds; a million already means months of proxies, and every configuration is held in memory by the plan.
MAX_SAMPLES = 1_000_000
# search.repeats, seeds per configuration.
MAX_REPEATS = 10_000
# Trials in one sweep (parametrizations x scale points x samples x repeats): each is a Ray Tune trial and a row of
# the store, and the plan holds them all in the driver's memory (about a kilobyte each).
MAX_TRIALS = 1_000_000

# YAML values in a recipe once its aliases are expanded: a recipe has tens to hundreds, a long choice list
# thousands. Without a budget a few lines of nested aliases (a "billion laughs") expand to 10^9 values and hang
# the validation and the stored JSON.
MAX_YAML_VALUES = 100_000
# Nesting of YAML collections: a recipe nests three or four levels (a builder's options a few more).
MAX_YAML_DEPTH = 64
