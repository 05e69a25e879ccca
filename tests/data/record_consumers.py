"""Record what the launchers' consumers read, from their source: the files tests/test_launchers_consumers.py checks
the megatron and nanogpt-mup renderers against. Not a test; run it by hand to refresh them:

    python tests/data/record_consumers.py megatron TREE COMMIT OUT.txt [--ref WHAT] [--deprecated=FLAG ...]
    python tests/data/record_consumers.py nanogpt-mup GIT_DIR OUT.json BRANCH ...

megatron: TREE is a tree of NVIDIA/Megatron-LM at COMMIT (`git archive COMMIT megatron | tar -x`). The
flags are those of the parser `megatron/training/arguments.py` builds (`add_megatron_arguments`): its own
`add_argument` calls and the flags its `ArgumentGroupFactory` generates from the config dataclasses, so the module is
imported (with torch; the modules that need triton are stubbed, the parser does not use them). DEPRECATED flags are
written with a `deprecated` mark.

nanogpt-mup: the global config keys of EleutherAI/nanoGPT-mup's train.py at each BRANCH (the assignments before
`config_keys = ...`: configurator.py refuses a key that is not one, and a `--key=value` whose type differs from the
default's), with the type and value of each default.
"""

from __future__ import annotations

import argparse
import ast
import importlib.abc
import importlib.machinery
import json
import subprocess
import sys
import typing
from pathlib import Path
from unittest import mock


class _Stub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Megatron modules that import triton at module level: empty stand-ins (the parser never calls them)."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, name: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.machinery.ModuleSpec(name, self, is_package=True) if name in self.names else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> object:
        m = mock.MagicMock(name=spec.name)
        m.__path__, m.__spec__, m.__name__ = [], spec, spec.name
        return m

    def exec_module(self, module: object) -> None:
        pass


def megatron_flags(tree: Path) -> list[str]:
    needs_triton = {
        ".".join(p.relative_to(tree).with_suffix("").parts)
        for p in (tree / "megatron").rglob("*.py")
        if any(line.strip().startswith(("import triton", "from triton")) for line in p.read_text().splitlines())
    }
    if not hasattr(typing, "override"):  # Megatron uses Python 3.12's typing.override
        typing.override = lambda f: f  # type: ignore[attr-defined]
    sys.meta_path.insert(0, _Stub(needs_triton))
    sys.path.insert(0, str(tree))
    from megatron.training.arguments import add_megatron_arguments  # type: ignore[import-not-found]

    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_megatron_arguments(parser)
    return sorted({s for a in parser._actions for s in a.option_strings if s.startswith("--")})


def nanogpt_mup_keys(git_dir: str, ref: str) -> dict[str, list[object]]:
    src = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{ref}:train.py"], check=True,
                         capture_output=True, text=True).stdout
    keys: dict[str, list[object]] = {}
    torch = mock.MagicMock()
    torch.cuda.is_available.return_value = False  # dtype's default: 'float16' here, a str on every machine
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "config_keys" for t in node.targets):
            break
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            try:
                value = eval(compile(ast.Expression(node.value), "train.py", "eval"), {"torch": torch})  # noqa: S307
            except Exception:  # noqa: BLE001 - an import or a call: not a config key
                continue
            if not name.startswith("_") and isinstance(value, (int, float, bool, str)):
                keys[name] = [type(value).__name__, value]
    return keys


def main() -> None:
    kind, *args = sys.argv[1:]
    if kind == "megatron":
        p = argparse.ArgumentParser(prog="record_consumers.py megatron")
        p.add_argument("tree")
        p.add_argument("commit")
        p.add_argument("out")
        p.add_argument("--ref", default="", help="which ref COMMIT is (written in the header)")
        p.add_argument("--deprecated", action="append", default=[], help="a flag its docs call deprecated")
        a = p.parse_args(args)
        lines = [f"# NVIDIA/Megatron-LM megatron/training/arguments.py @ {a.commit}{' (' + a.ref + ')' if a.ref else ''}"
                 ": every --flag of the parser add_megatron_arguments builds (its add_argument calls and the "
                 "ArgumentGroupFactory dataclass fields), recorded by tests/data/record_consumers.py"]
        lines += [f"{f} deprecated" if f in a.deprecated else f for f in megatron_flags(Path(a.tree))]
        Path(a.out).write_text("\n".join(lines) + "\n")
    elif kind == "nanogpt-mup":
        git_dir, out, *branches = args
        doc: dict[str, object] = {"_source": "EleutherAI/nanoGPT-mup train.py: the global config keys (assignments "
                                  "before config_keys), [type, default]; recorded by tests/data/record_consumers.py"}
        for b in branches:
            commit = subprocess.run(["git", f"--git-dir={git_dir}", "rev-parse", b], check=True, capture_output=True,
                                    text=True).stdout.strip()
            doc[b] = {"repo": "EleutherAI/nanoGPT-mup", "path": "train.py", "commit": commit,
                      "keys": nanogpt_mup_keys(git_dir, commit)}
        # One key a line: a reviewable diff when the source changes.
        parts = [f' "_source": {json.dumps(doc["_source"], ensure_ascii=False)}']
        for b in branches:
            info = doc[b]
            keys = ",\n".join(f"   {json.dumps(k)}: {json.dumps(v)}" for k, v in info["keys"].items())  # type: ignore[index]
            head = ", ".join(f"{json.dumps(k)}: {json.dumps(info[k])}" for k in ("repo", "path", "commit"))  # type: ignore[index]
            parts.append(f' {json.dumps(b)}: {{{head}, "keys": {{\n{keys}\n  }}}}')
        text = "{\n" + ",\n".join(parts) + "\n}"
        assert json.loads(text) == doc
        Path(out).write_text(text + "\n")
    else:
        raise SystemExit(f"unknown kind {kind!r}: megatron or nanogpt-mup")


if __name__ == "__main__":
    main()
