"""User code is imported only when a recipe names it; passwords never reach output."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from mutransfer.recipe import parse_recipe

RECIPE = yaml.safe_load("""
model: {family: mlp, base_width: 16, options: {module: sneaky_module}}
data: {kind: digits}
train: {steps: 20}
search: {space: {lr: {loguniform: [1.0e-3, 1.0e-1]}}}
scales: {base: {width: 16}}
target: {width: 1024, depth: 2, batch_size: 32}
""")


@pytest.fixture
def sneaky(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    marker = tmp_path / "imported"
    (tmp_path / "sneaky_module.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('yes')\ndef build(cfg):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("sneaky_module", None)
    return marker


def test_builtin_family_imports_no_user_code(sneaky: Path) -> None:
    parse_recipe(yaml.safe_dump(RECIPE))
    assert not sneaky.exists() and "sneaky_module" not in sys.modules


def test_named_entrypoint_is_imported(sneaky: Path) -> None:
    doc = {**RECIPE, "model": {**RECIPE["model"], "family": "sneaky_module:build"}}
    parse_recipe(yaml.safe_dump(doc))
    assert sneaky.exists()


def test_password_masked_in_store_messages() -> None:
    from mutransfer.storage import Store, StoreError, mask_url

    assert "s3cr3t" not in mask_url("postgresql://me:s3cr3t@db.example:5432/x")
    with pytest.raises(StoreError) as info:
        Store.open("postgresql://me:s3cr3t@127.0.0.1:1/x")
    assert "s3cr3t" not in str(info.value) and "***" in str(info.value)


def _tokens_folder(tmp_path: Path) -> Path:
    import numpy as np

    (np.arange(2000) % 50).astype(np.uint16).tofile(tmp_path / "train.bin")
    return tmp_path


def test_a_planted_meta_pkl_runs_no_code(tmp_path: Path) -> None:
    """nanoGPT's meta.pkl is read as plain data: a pickle that would call a function is refused, not run."""
    import pickle

    from mutransfer.data import DataError, load_dataset
    from mutransfer.recipe import Data, Model

    marker = tmp_path / "pwned"

    class Plant:
        def __reduce__(self) -> tuple[object, ...]:
            return (Path.write_text, (marker, "yes"))

    folder = _tokens_folder(tmp_path)
    (folder / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 65, "itos": Plant()}))
    with pytest.raises(DataError) as info:
        load_dataset(Data(kind="tokens", path=str(folder)), Model())
    assert not marker.exists()
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"data.path: {folder}: meta.pkl: refused to unpickle it")
    assert "pathlib" in message and "model.vocab_size" in message
    # Named by model.vocab_size, meta.pkl is not read at all.
    assert load_dataset(Data(kind="tokens", path=str(folder)), Model(vocab_size=80)).vocab_size == 80
    assert not marker.exists()


def test_a_genuine_nanogpt_meta_pkl_is_read(tmp_path: Path) -> None:
    """What nanoGPT's data/shakespeare_char/prepare.py writes: vocab_size, itos and stoi."""
    import pickle

    from mutransfer.data import load_dataset
    from mutransfer.recipe import Data, Model

    chars = sorted(set("First Citizen:\nBefore we proceed any further, hear me speak.\n!$&',-.3:;?"))
    meta = {"vocab_size": 65, "itos": dict(enumerate(chars)), "stoi": {c: i for i, c in enumerate(chars)}}
    folder = _tokens_folder(tmp_path)
    for protocol in (2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL):
        (folder / "meta.pkl").write_bytes(pickle.dumps(meta, protocol=protocol))
        data = Data(kind="tokens", path=str(folder), val_fraction=0.1 + protocol / 100)  # not the cached one
        assert load_dataset(data, Model()).vocab_size == 65
