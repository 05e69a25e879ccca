"""Built-in datasets and their train/val batches.

- `digits`: scikit-learn's 8x8 handwritten digits (1,797 images, ships with scikit-learn), for the MLP.
- `chars`: character-level text from a file or a folder (the default is this Python's standard library source),
  for the GPT.
- `tokens`: nanoGPT's uint16 token memmaps (`train.bin` [+ `val.bin`] in a folder, or one `.bin` file), read
  through `np.memmap` so a corpus larger than memory costs nothing to open. The vocabulary size comes from
  `model.vocab_size`, else nanoGPT's `meta.pkl` (read as plain data only: a pickle that names any class or function
  is refused, never run), else the largest token id.

`load_dataset` is cached in-process: Ray reuses its actors across trials, and re-reading a corpus for every short
proxy trial would cost more than the trial.
"""

from __future__ import annotations

import fnmatch
import functools
import io
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mutransfer.errors import MutransferError
from mutransfer.recipe import Data, Model

Split = Literal["train", "val"]


class DataError(MutransferError, ValueError):
    """Data a user pointed at that cannot be used. The message is one line and names `data.path`."""


class Dataset:
    """Train/val batches of one corpus. Subclasses fill in `_batch`."""

    kind: str
    input_dim: int | None = None  # digits: features per example
    vocab_size: int | None = None  # chars/tokens
    num_classes: int  # size of the model's output
    path: Path | None = None

    def get_batch(
        self, split: Split, batch_size: int, seq_len: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch. digits: x float32 (B, 64), y long (B,); sequences: x, y long (B, T), y = x shifted by one."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', not {split!r}")
        return self._batch(split, batch_size, seq_len, generator)

    def check(self, seq_len: int) -> None:
        """Raise DataError when batches of `seq_len` cannot be drawn (a corpus split shorter than seq_len + 1)."""

    def _batch(
        self, split: Split, batch_size: int, seq_len: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class DigitsDataset(Dataset):
    kind = "digits"

    def __init__(self, val_fraction: float) -> None:
        x, y = _digits()
        # A fixed permutation: the split must not depend on any trial's seed.
        perm = np.random.default_rng(0).permutation(len(x))
        x, y = x[perm].astype(np.float32), y[perm].astype(np.int64)
        n_val = max(1, round(len(x) * val_fraction))
        n_train = len(x) - n_val
        mean = x[:n_train].mean(axis=0)
        std = x[:n_train].std(axis=0)
        std[std < 1e-6] = 1.0  # border pixels are always 0 in the training images
        x = (x - mean) / std
        self.x = {"train": torch.from_numpy(x[:n_train]), "val": torch.from_numpy(x[n_train:])}
        self.y = {"train": torch.from_numpy(y[:n_train]), "val": torch.from_numpy(y[n_train:])}
        self.input_dim = x.shape[1]
        self.num_classes = 10

    def _batch(
        self, split: Split, batch_size: int, seq_len: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.x[split], self.y[split]
        ix = torch.randint(len(x), (batch_size,), generator=generator)
        return x[ix], y[ix]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (images as rows of 64 floats, labels), as `load_digits(return_X_y=True)` returns them.

    Read from the file scikit-learn ships, as load_digits reads it, without importing scikit-learn: the import
    took 1.4 s of a Ray worker's first trial (2.6 s in all; BENCHMARKS.md, orchestration), in every worker process
    of a sweep. Where that file is not found, load_digits itself.
    """
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        file = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if file.is_file():
            with gzip.open(file, mode="rt", encoding="utf-8") as f:
                data = np.loadtxt(f, delimiter=",")
            return data[:, :-1], data[:, -1].astype(int, copy=False)
    from sklearn.datasets import load_digits

    return load_digits(return_X_y=True)


class _SequenceDataset(Dataset):
    """Next-token pairs at random offsets of a 1-D array of token ids (numpy, possibly a memmap)."""

    splits: dict[str, np.ndarray]

    def check(self, seq_len: int) -> None:
        for split, arr in self.splits.items():
            if len(arr) < seq_len + 1:
                raise DataError(
                    f"data.path: {self.path}: the {split} split has {len(arr)} tokens, "
                    f"fewer than seq_len + 1 = {seq_len + 1}"
                )

    def _batch(
        self, split: Split, batch_size: int, seq_len: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        arr = self.splits[split]
        n = len(arr)
        if n < seq_len + 1:
            self.check(seq_len)
        start = torch.randint(n - seq_len, (batch_size,), generator=generator).numpy()
        idx = start[:, None] + np.arange(seq_len + 1)[None, :]
        # Fancy indexing reads just these rows, also from a memmap.
        chunk = torch.from_numpy(np.asarray(arr[idx]).astype(np.int64))
        if self.vocab_size is not None and int(chunk.max()) >= self.vocab_size:
            raise DataError(
                f"data.path: {self.path}: token id {int(chunk.max())} is outside the vocabulary "
                f"({self.vocab_size}); set model.vocab_size"
            )
        return chunk[:, :-1], chunk[:, 1:]


class CharsDataset(_SequenceDataset):
    kind = "chars"

    def __init__(self, path: Path, text: str, val_fraction: float) -> None:
        self.path = path
        # Code points sort like Python sorts characters: np.unique gives the sorted vocabulary and the ids at once.
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        uniq, ids = np.unique(codes, return_inverse=True)
        self.itos = [chr(c) for c in uniq]
        self.vocab_size = self.num_classes = len(self.itos)
        ids = ids.astype(np.int32)
        n_train = int(len(ids) * (1 - val_fraction))
        self.splits = {"train": ids[:n_train], "val": ids[n_train:]}
        if min(n_train, len(ids) - n_train) < 2:
            raise DataError(f"data.path: {path}: {len(ids)} characters are too few to split into train and val")

    def decode(self, ids: torch.Tensor | np.ndarray | list[int]) -> str:
        return "".join(self.itos[int(i)] for i in ids)


class TokensDataset(_SequenceDataset):
    kind = "tokens"

    def __init__(self, path: Path, val_fraction: float, vocab_size: int | None) -> None:
        self.path = path
        if path.is_dir():
            train = _memmap(path / "train.bin", path)
            val_file = path / "val.bin"
            if val_file.exists():
                val = _memmap(val_file, path)
            else:
                train, val = _split(train, val_fraction, path)
            meta = path / "meta.pkl"
        else:
            train, val = _split(_memmap(path, path), val_fraction, path)
            meta = path.parent / "meta.pkl"
        self.splits = {"train": train, "val": val}
        for split, arr in self.splits.items():
            _check_uint16(arr, split, path)
        source = "model.vocab_size"
        if vocab_size is None and meta.exists():
            vocab_size, source = _meta_vocab(meta, path), meta.name
        if vocab_size is None:
            vocab_size = 1 + max(_chunked_max(a) for a in (train, val) if len(a))
        else:
            for split, arr in self.splits.items():
                top = _sampled_max(arr)
                if top >= vocab_size:
                    raise DataError(
                        f"data.path: {path}: the {split} split has token id {top}, outside the vocabulary of "
                        f"{vocab_size} ({source}): are these uint16 tokens (nanoGPT's dtype)? else set "
                        "model.vocab_size")
        self.vocab_size = self.num_classes = vocab_size


def _memmap(file: Path, path: Path) -> np.ndarray:
    if not file.is_file():
        raise DataError(f"data.path: {path}: {file.name} is not a file")
    size = file.stat().st_size
    if size < 2:
        raise DataError(f"data.path: {path}: {file.name} is empty")
    if size % 2:
        raise DataError(f"data.path: {path}: {file.name} has an odd byte count; expected uint16 tokens")
    try:
        return np.memmap(file, dtype=np.uint16, mode="r")
    except (OSError, ValueError) as e:
        raise DataError(f"data.path: {path}: cannot map {file.name}: {e}") from e


def _split(arr: np.ndarray, val_fraction: float, path: Path) -> tuple[np.ndarray, np.ndarray]:
    n_train = int(len(arr) * (1 - val_fraction))
    if min(n_train, len(arr) - n_train) < 2:
        raise DataError(f"data.path: {path}: {len(arr)} tokens are too few to split into train and val")
    return arr[:n_train], arr[n_train:]


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data only: dicts, lists, tuples, sets, str, bytes, numbers, None, bools (what nanoGPT's
    meta.pkl holds: vocab_size, itos, stoi). Those need no import; anything that names a class or a function (the
    way a pickle runs code) is refused before it is looked up."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"it names {module}.{name}, not plain data")


# nanoGPT's meta.pkl is a few kB (a byte-pair vocabulary a few MB): anything far larger is not one.
MAX_META_BYTES = 64 << 20


def _meta_vocab(meta: Path, path: Path) -> int:
    what = f"data.path: {path}: {meta.name}"
    fix = "set model.vocab_size to skip it"
    try:
        if meta.stat().st_size > MAX_META_BYTES:
            raise DataError(f"{what} is larger than {MAX_META_BYTES >> 20} MiB, not nanoGPT's metadata: {fix}")
        obj = _PlainUnpickler(io.BytesIO(meta.read_bytes())).load()
    except DataError:
        raise
    except pickle.UnpicklingError as e:
        raise DataError(f"{what}: refused to unpickle it ({e}): {fix}, or write it with plain dicts, "
                        "strings and ints") from e
    except Exception as e:  # any unreadable meta.pkl is the user's to fix; say so in one line
        raise DataError(f"{what}: cannot read vocab_size: {type(e).__name__}: {e}: {fix}") from e
    vocab = obj.get("vocab_size") if isinstance(obj, dict) else None
    if type(vocab) is not int or vocab < 1:
        raise DataError(f"{what} has no positive integer vocab_size (found {type(vocab).__name__}): {fix}")
    return vocab


def _check_uint16(arr: np.ndarray, split: str, path: Path) -> None:
    """Refuse 32-bit tokens read as uint16: for ids below 65536 every second uint16 is then 0 (little-endian)."""
    head = np.asarray(arr[:1 << 16])
    if len(head) >= 512 and not head[1::2].any() and head[0::2].any():
        raise DataError(f"data.path: {path}: the {split} split looks like 32-bit tokens (every second uint16 is 0); "
                        "mutransfer reads nanoGPT's uint16 .bin files: write them with np.uint16")


def _sampled_max(arr: np.ndarray, window: int = 1 << 20, windows: int = 16) -> int:
    """The largest id in `arr`, or (for a corpus larger than `windows` x `window` tokens) in that many windows
    spread over it: a wrong vocabulary shows in any window, and a 10 GB corpus is not read whole at start-up.
    Batches check the ids they draw too (`_SequenceDataset._batch`)."""
    n = len(arr)
    if n <= window * windows:
        return _chunked_max(arr)
    starts = np.linspace(0, n - window, windows).astype(np.int64)
    return max(int(np.asarray(arr[s:s + window]).max()) for s in starts)


def _chunked_max(arr: np.ndarray, chunk: int = 1 << 24) -> int:
    # A memmap's .max() would page in the whole file at once; chunks keep the resident set small.
    return max(int(arr[i : i + chunk].max()) for i in range(0, len(arr), chunk))


def _walk(root: Path, pattern: str) -> Iterator[Path]:
    """Files under `root` matching `pattern`, in the order of sorted(root.rglob(pattern)), lazily.

    Lazy so that reading the first `max_chars` of a large tree (the standard library) does not list all of it.
    """
    if "/" in pattern or os.sep in pattern:
        yield from (p for p in sorted(root.rglob(pattern)) if p.is_file())
        return
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                yield from _walk(Path(e.path), pattern)
            elif e.is_file() and fnmatch.fnmatch(e.name, pattern):
                yield Path(e.path)
        except OSError:
            continue


def _read_text(path: Path, pattern: str, max_chars: int) -> str:
    """The first `max_chars` characters of the file, or of the folder's files matching `pattern` in sorted order.

    Text must be UTF-8: replacing undecodable bytes would train on a corpus of U+FFFD. A file named on its own that
    is latin-1 or binary is refused; in a folder such files are skipped (a large tree, like the standard library
    with its site-packages, holds a few test files in other encodings by design), and refused when nothing else
    is left."""
    if path.is_file():
        files: Iterator[Path] = iter([path])
    elif path.is_dir():
        files = _walk(path, pattern)
    else:
        raise DataError(f"data.path: {path} does not exist")
    parts: list[str] = []
    left = max_chars
    not_text: str | None = None
    for f in files:
        try:
            with f.open(encoding="utf-8") as fh:
                s = fh.read(left)
            if "\0" in s:
                raise ValueError("NUL bytes: a binary file, not text (token ids are kind: tokens)")
        except UnicodeDecodeError as e:
            problem = f"not UTF-8 text (it has byte {e.object[e.start]:#04x}): convert it to UTF-8"
        except ValueError as e:
            problem = str(e)
        except OSError:
            continue  # an unreadable file in a large tree is skipped, not fatal
        else:
            parts.append(s)
            left -= len(s)
            if left <= 0:
                break
            continue
        if f == path:
            raise DataError(f"data.path: {path}: {problem}")
        not_text = not_text or f"{f.relative_to(path)}: {problem}"
    if not parts and not_text:
        raise DataError(f"data.path: {path}: no UTF-8 text in files matching {pattern!r} ({not_text})")
    return "".join(parts)


@functools.lru_cache(maxsize=8)
def _load(data: Data, vocab_size: int | None) -> Dataset:
    if data.kind == "digits":
        return DigitsDataset(data.val_fraction)
    path = data.resolved_path()
    if path is None:
        raise DataError(f"data.path: {data.kind} data needs a path")
    if not path.exists():
        raise DataError(f"data.path: {path} does not exist")
    if data.kind == "chars":
        text = _read_text(path, data.glob, data.max_chars)
        if not text:
            what = f"no text in files matching {data.glob!r}" if path.is_dir() else "the file is empty"
            raise DataError(f"data.path: {path}: {what}")
        return CharsDataset(path, text, data.val_fraction)
    if data.kind == "tokens":
        return TokensDataset(path, data.val_fraction, vocab_size)
    raise DataError(f"data.kind: unknown kind {data.kind!r}")


def load_dataset(data: Data, model: Model) -> Dataset:
    """The dataset a recipe names, loaded once per process. Raises DataError for unusable data."""
    # Keyed on the only part of `model` that matters: the whole Model holds a dict (options) and is not hashable.
    return _load(data, model.vocab_size if data.kind == "tokens" else None)
