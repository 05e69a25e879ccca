"""A recipe's YAML text to plain Python values, refusing what `yaml.safe_load` lets through silently: a key given
twice (the second would silently override the first), aliases that expand beyond a budget (a "billion laughs"
hangs whatever walks the result), an alias inside its own anchor, nesting deeper than a recipe needs.

Anchors and aliases themselves are allowed (a scale point written once, reused): only their expansion is bounded.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mutransfer.recipe.bounds import MAX_YAML_DEPTH, MAX_YAML_VALUES
from mutransfer.recipe.validation import RecipeError

_MERGE = "tag:yaml.org,2002:merge"  # `<<: *base`: keys written next to it override the merged ones, by design


def read_yaml(text: str, source: str = "recipe") -> Any:
    """The YAML document in `text` (None when empty); a RecipeError of one line naming where it is wrong."""
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # reading starts here: a control character fails now
        node = loader.get_single_node()
        if node is None:
            return None
        _check(node, loader, source)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise RecipeError(f"{source}: not valid YAML{_where(e)}: {_problem(e)}") from e
    except RecursionError as e:  # PyYAML composes recursively: a few hundred levels of brackets exhaust the stack
        raise RecipeError(f"{source}: not valid YAML: nested deeper than a recipe may be ({MAX_YAML_DEPTH} levels)") \
            from e
    finally:
        if loader is not None:
            loader.dispose()


def _where(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        return f" at line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(e, yaml.reader.ReaderError):
        return f" at character {e.position}"
    return ""


def _problem(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.reader.ReaderError):  # a control character: binary data rather than text
        char = f"#x{e.character:04x}" if isinstance(e.character, int) else repr(e.character)
        return f"unacceptable character {char} (binary data, not text?)"
    return getattr(e, "problem", None) or "invalid YAML"


def _step(path: str, name: object) -> str:
    """`path` one level down, spelled as format_error spells recipe paths."""
    part = str(name) if isinstance(name, int) or str(name).isidentifier() else repr(name)
    return f"{path}.{part}" if path else part


def _children(node: Node) -> list[tuple[object, Node]]:
    if isinstance(node, SequenceNode):
        return list(enumerate(node.value))
    if isinstance(node, MappingNode):
        named = [(k.value if isinstance(k, ScalarNode) else "?", k, v) for k, v in node.value]
        return [pair for name, k, v in named for pair in ((name, k), (name, v))]
    return []


def _check(root: Node, loader: yaml.SafeLoader, source: str) -> None:
    """Duplicate keys, alias expansion, recursion and depth, on the composed nodes: an alias is the same node
    object again, so the size of each node's expansion is counted once (linear in the text, whatever it expands
    to)."""
    size: dict[int, int] = {}  # id(node) -> values in its expansion, once counted
    open_: set[int] = set()  # nodes being counted: the ancestors of the current one
    stack: list[tuple[Node, str, bool]] = [(root, "", False)]
    while stack:
        node, path, counted = stack.pop()
        key = id(node)
        if counted:
            open_.discard(key)
            size[key] = 1 + sum(size[id(c)] for _, c in _children(node))
            if size[key] > MAX_YAML_VALUES:
                raise RecipeError(f"{source}: {path or 'recipe'}: expands to more than {MAX_YAML_VALUES} values "
                                  "(aliases of aliases?), more than a recipe may hold (mutransfer.recipe.bounds)")
            continue
        if key in size:
            continue
        if key in open_:
            raise RecipeError(f"{source}: {path}: an alias inside its own anchor (a recursive recipe)")
        if path.count(".") >= MAX_YAML_DEPTH:
            shown = path if len(path) < 60 else path[:60] + "..."
            raise RecipeError(f"{source}: {shown}: nested deeper than a recipe may be ({MAX_YAML_DEPTH} levels)")
        open_.add(key)
        if isinstance(node, MappingNode):
            _no_duplicates(node, path, loader, source)
        stack.append((node, path, True))
        # Reversed: popped in document order, so an anchor is counted (and reported) where it is written.
        stack.extend((child, _step(path, name), False) for name, child in reversed(_children(node)))


def _no_duplicates(node: MappingNode, path: str, loader: yaml.SafeLoader, source: str) -> None:
    first: dict[Any, int] = {}  # key -> the line it was first given on
    for k, _ in node.value:
        if not isinstance(k, ScalarNode) or k.tag == _MERGE:
            continue
        name = loader.construct_object(k)  # as the mapping will see it: `1` and `0x1` are the same key
        line = k.start_mark.line + 1
        if name in first:
            raise RecipeError(f"{source}: {_step(path, k.value)}: duplicate key (lines {first[name]} and {line}): "
                              "the second would silently override the first")
        first[name] = line
