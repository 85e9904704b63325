"""Reading a suite file: YAML 1.1 with PyYAML's `SafeLoader` (no Python tags), refusing duplicate
keys and alias bombs, and text that is not UTF-8.

A YAML alias is a reference to an earlier node, so "billion laughs" (each level aliasing the one
before ten times) is a tiny node graph that expands to 10^9 values once anything walks it. The
composed graph is measured before any Python object is built: its expanded size is counted with a
memo per node (linear in the file), and more than `MAX_NODES` values is refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.errors import BenchError, located

MAX_NODES = 100_000        # expanded values in a suite; the shipped suites have a few hundred
MAX_BYTES = 1_000_000      # a suite file is a page of YAML, not a data set


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise BenchError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice "
                                 f"(first on line {seen[key]}); keep one")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def expanded_size(node, memo: dict | None = None) -> int:
    """Values in the node graph with every alias expanded, counted once per distinct node."""
    memo = {} if memo is None else memo
    if id(node) in memo:
        if memo[id(node)] is None:
            raise BenchError(f"line {node.start_mark.line + 1}: a YAML alias refers to itself")
        return memo[id(node)]
    memo[id(node)] = None  # in progress: meeting it again is a recursive alias
    children = node.value if isinstance(node.value, list) else []
    total = 1
    for child in children:
        for part in (child if isinstance(child, tuple) else (child,)):
            total += expanded_size(part, memo)
    memo[id(node)] = total
    return total


def read_yaml(path: str | Path) -> Any:
    """The suite file's YAML document; BenchError naming the file (and line) on any problem."""
    where, path = str(path), Path(path)
    if path.is_dir():
        raise BenchError(f"{where}: is a folder; give a suite YAML file, e.g. suites/smoke.yaml")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BenchError(f"{where}: no such suite file") from None
    except OSError as err:
        raise BenchError(f"{where}: cannot read the suite file: {err.strerror or err}") from None
    if len(data) > MAX_BYTES:
        raise BenchError(f"{where}: {len(data)} bytes; a suite file is at most {MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BenchError(f"{where}: not a text file (byte {err.start} is not UTF-8)") from None
    return parse_yaml(text, where)


def parse_yaml(text: str, where: str) -> Any:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = expanded_size(node)
        if size > MAX_NODES:
            raise BenchError(f"{where}: YAML aliases expand to more than {MAX_NODES} values "
                             f"({size}); refused before expanding (an alias bomb?)")
        return loader.construct_document(node)
    except BenchError as err:
        raise located(where, err) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(err, "problem", None) or err
        raise BenchError(f"{where}: not valid YAML{line}: {problem}") from None
    except RecursionError:
        raise BenchError(f"{where}: YAML nested too deeply") from None
    finally:
        loader.dispose()
