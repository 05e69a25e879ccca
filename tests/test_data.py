"""Built-in datasets: shapes, splits, next-token pairs, vocabularies, and one-line errors naming data.path."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mutransfer.data import DataError, load_dataset
from mutransfer.recipe import Data, Model


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_digits_shapes_split_and_standardisation() -> None:
    ds = load_dataset(Data(kind="digits", val_fraction=0.2), Model())
    assert (ds.kind, ds.input_dim, ds.num_classes, ds.vocab_size) == ("digits", 64, 10, None)
    n_train, n_val = len(ds.x["train"]), len(ds.x["val"])  # type: ignore[attr-defined]
    assert n_train + n_val == 1797 and n_val == round(1797 * 0.2)
    xt = ds.x["train"]  # type: ignore[attr-defined]
    assert xt.mean(0).abs().max() < 1e-4
    varying = xt.std(0) > 0
    assert torch.allclose(xt.std(0, unbiased=False)[varying], torch.ones(int(varying.sum())), atol=1e-3)
    x, y = ds.get_batch("train", 32, 1, _gen())
    assert x.shape == (32, 64) and x.dtype == torch.float32
    assert y.shape == (32,) and y.dtype == torch.long and int(y.min()) >= 0 and int(y.max()) <= 9
    xv, _ = ds.get_batch("val", 16, 1, _gen())
    assert xv.shape == (16, 64)
    # The same generator state gives the same batch; the cache gives the same object.
    assert torch.equal(ds.get_batch("train", 8, 1, _gen(3))[0], ds.get_batch("train", 8, 1, _gen(3))[0])
    assert load_dataset(Data(kind="digits", val_fraction=0.2), Model()) is ds


def _check_pairs(ds: object, split: str, b: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = ds.get_batch(split, b, t, _gen())  # type: ignore[attr-defined]
    assert x.shape == y.shape == (b, t) and x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
    return x, y


def test_chars_from_a_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("hello world " * 20)
    (tmp_path / "sub" / "a.txt").write_text("zebra! " * 20)
    (tmp_path / "c.py").write_text("IGNORED" * 50)
    ds = load_dataset(Data(kind="chars", path=str(tmp_path), glob="*.txt", val_fraction=0.25), Model())
    text = "hello world " * 20 + "zebra! " * 20  # b.txt sorts before sub/a.txt
    assert ds.kind == "chars" and ds.itos == sorted(set(text))  # type: ignore[attr-defined]
    assert ds.vocab_size == ds.num_classes == len(set(text)) and ds.input_dim is None
    n_train = int(len(text) * 0.75)
    assert len(ds.splits["train"]) == n_train and len(ds.splits["val"]) == len(text) - n_train  # type: ignore[attr-defined]
    x, y = _check_pairs(ds, "train", 4, 16)
    row = ds.decode(torch.cat([x[0], y[0, -1:]]))  # type: ignore[attr-defined]
    assert row in text[:n_train]
    xv, _ = _check_pairs(ds, "val", 4, 16)
    assert ds.decode(xv[0]) in text[n_train:]  # type: ignore[attr-defined]


def test_chars_max_chars_and_single_file(tmp_path: Path) -> None:
    f = tmp_path / "corpus.txt"
    f.write_text("abcdefghij" * 100 + "XYZ" * 100)
    ds = load_dataset(Data(kind="chars", path=str(f), max_chars=1000), Model())
    assert ds.itos == list("abcdefghij")  # type: ignore[attr-defined]


def test_chars_default_is_the_stdlib() -> None:
    data = Data(kind="chars", max_chars=100_000)
    assert data.resolved_path() is not None and data.resolved_path().is_dir()  # type: ignore[union-attr]
    ds = load_dataset(data, Model())
    assert 40 < ds.vocab_size < 500  # type: ignore[operator]
    assert set("def return import") <= set(ds.itos)  # type: ignore[attr-defined]
    n = len(ds.splits["train"]) + len(ds.splits["val"])  # type: ignore[attr-defined]
    assert n == 100_000
    _check_pairs(ds, "train", 8, 64)


def test_chars_errors_name_the_path(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match=r"data\.path: .*empty\.txt"):
        load_dataset(Data(kind="chars", path=str(tmp_path / "empty.txt")), Model())
    with pytest.raises(DataError, match="no text in files matching"):
        load_dataset(Data(kind="chars", path=str(tmp_path), glob="*.md"), Model())
    (tmp_path / "short.txt").write_text("abcdefghijklmnopqrst")
    ds = load_dataset(Data(kind="chars", path=str(tmp_path / "short.txt"), val_fraction=0.5), Model())
    with pytest.raises(DataError, match=r"short\.txt.*fewer than seq_len \+ 1"):
        ds.get_batch("train", 2, 32, _gen())


def _write(path: Path, tokens: np.ndarray) -> None:
    tokens.astype(np.uint16).tofile(path)


def test_tokens_folder_with_train_and_val(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    _write(tmp_path / "train.bin", np.arange(5000) % 300)
    _write(tmp_path / "val.bin", rng.integers(0, 250, 1000))
    ds = load_dataset(Data(kind="tokens", path=str(tmp_path)), Model())
    assert ds.kind == "tokens" and ds.vocab_size == ds.num_classes == 300  # max + 1, computed in chunks
    assert isinstance(ds.splits["train"], np.memmap) and len(ds.splits["val"]) == 1000  # type: ignore[attr-defined]
    x, y = _check_pairs(ds, "train", 4, 32)
    assert torch.equal(y, (x + 1) % 300)  # consecutive tokens of the arange file
    _check_pairs(ds, "val", 4, 32)


def test_tokens_vocab_from_meta_or_model(tmp_path: Path) -> None:
    _write(tmp_path / "train.bin", np.arange(2000) % 50)
    with (tmp_path / "meta.pkl").open("wb") as f:
        pickle.dump({"vocab_size": 65, "itos": {}}, f)
    assert load_dataset(Data(kind="tokens", path=str(tmp_path)), Model()).vocab_size == 65
    assert load_dataset(Data(kind="tokens", path=str(tmp_path)), Model(vocab_size=128)).vocab_size == 128


def test_tokens_single_file_split(tmp_path: Path) -> None:
    f = tmp_path / "all.bin"
    _write(f, np.arange(1000) % 97)
    ds = load_dataset(Data(kind="tokens", path=str(f), val_fraction=0.2), Model())
    assert len(ds.splits["train"]) == 800 and len(ds.splits["val"]) == 200  # type: ignore[attr-defined]
    assert ds.vocab_size == 97
    _check_pairs(ds, "val", 3, 50)


def test_tokens_errors_name_the_path(tmp_path: Path) -> None:
    short = tmp_path / "short.bin"
    _write(short, np.arange(40))
    ds = load_dataset(Data(kind="tokens", path=str(short)), Model())
    with pytest.raises(DataError, match=r"data\.path: .*short\.bin.*fewer than seq_len \+ 1 = 65"):
        ds.get_batch("train", 2, 64, _gen())
    with pytest.raises(DataError, match="short.bin"):
        ds.check(64)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.bin is empty"):
        load_dataset(Data(kind="tokens", path=str(empty)), Model())
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"abc")
    with pytest.raises(DataError, match="odd byte count"):
        load_dataset(Data(kind="tokens", path=str(odd)), Model())
    small = tmp_path / "small.bin"
    _write(small, np.arange(500) % 100)
    with pytest.raises(DataError, match=r"data\.path: .*small\.bin.*token id 99, outside the vocabulary of 50 "
                                        r"\(model\.vocab_size\)"):
        load_dataset(Data(kind="tokens", path=str(small)), Model(vocab_size=50))
    with pytest.raises(ValueError, match="split"):
        ds.get_batch("test", 2, 4, _gen())  # type: ignore[arg-type]
    assert issubclass(DataError, ValueError)


def test_tokens_of_the_wrong_dtype_are_refused(tmp_path: Path) -> None:
    """uint32 (or int64) token files read as uint16: an odd size, every second id 0, or ids past the vocabulary."""
    wide = tmp_path / "wide"
    wide.mkdir()
    (np.arange(3000) % 300).astype(np.uint32).tofile(wide / "train.bin")
    with pytest.raises(DataError, match=r"data\.path: .*wide: the train split looks like 32-bit tokens"):
        load_dataset(Data(kind="tokens", path=str(wide)), Model())
    odd = tmp_path / "odd.bin"
    odd.write_bytes(np.arange(1001, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match=r"data\.path: .*odd\.bin has an odd byte count"):
        load_dataset(Data(kind="tokens", path=str(odd)), Model())
    folder = tmp_path / "meta"
    folder.mkdir()
    _write(folder / "train.bin", np.arange(2000) % 500)
    with (folder / "meta.pkl").open("wb") as f:
        pickle.dump({"vocab_size": 65}, f)
    with pytest.raises(DataError, match=r"data\.path: .*meta: the train split has token id 499, outside the "
                                        r"vocabulary of 65 \(meta\.pkl\)"):
        load_dataset(Data(kind="tokens", path=str(folder)), Model())


@pytest.mark.parametrize(("content", "problem"), [
    ("caf\xe9 cr\xe8me br\xfbl\xe9e ".encode("latin-1") * 20, "not UTF-8 text (it has byte 0xe9)"),
    (bytes(range(256)) * 4, "not UTF-8 text"),
    (b"text\0with\0NULs " * 40, "NUL bytes: a binary file"),
], ids=["latin-1", "binary", "nul bytes"])
def test_chars_refuse_text_that_is_not_utf8(tmp_path: Path, content: bytes, problem: str) -> None:
    f = tmp_path / "corpus.txt"
    f.write_bytes(content)
    with pytest.raises(DataError, match=r"data\.path: .*corpus\.txt: " + re.escape(problem)):
        load_dataset(Data(kind="chars", path=str(f)), Model())
    # In a folder such a file is skipped when others are text; alone, the folder is refused naming it.
    (tmp_path / "good.txt").write_text("plain text " * 30, encoding="utf-8")
    ds = load_dataset(Data(kind="chars", path=str(tmp_path), glob="*.txt"), Model())
    assert set(ds.itos) == set("plain text ")  # type: ignore[attr-defined]
    (tmp_path / "good.txt").unlink()
    with pytest.raises(DataError, match=r"no UTF-8 text in files matching '\*\.txt' \(corpus\.txt: "):
        load_dataset(Data(kind="chars", path=str(tmp_path), glob="*.txt", max_chars=9999), Model())  # not cached
