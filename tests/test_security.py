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
