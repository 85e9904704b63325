"""Bad-input rows of the suite file's text and of `--set` flags (unparsable, unsafe or oversized
YAML, alias bombs, duplicate keys, non-text files, missing files; malformed KEY=VALUE flags), in
the corpus format of `tests/bad_input_cases.py` (read by `tests/test_bad_inputs.py`)."""
from __future__ import annotations

import yaml
from bad_input_cases import BASE, NAME, Case, run_args, set_case, text_case

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
BOMB_FLOW = "[&a [x, x, x, x, x, x, x, x, x, x], " + ", ".join(
    f"&{c} [{', '.join(['*' + p] * 10)}]" for p, c in zip("abcdefgh", "bcdefghi")) + "]"

YAML_FILES = [
    text_case("yaml.empty", "", "expected a mapping of suite sections"),
    text_case("yaml.list", "- 1\n- 2\n", "expected a mapping of suite sections"),
    text_case("yaml.scalar", "just words\n", "expected a mapping of suite sections"),
    text_case("yaml.syntax", "name: x\ntrain: {lr: [1, 2}\n", "not valid YAML (line 2)"),
    text_case("yaml.tab-indent", "name: x\n\tmodels: []\n", "not valid YAML (line 2)"),
    text_case("yaml.tab-in-flow", "train:\n  lr:\t[1,\n", "not valid YAML"),
    text_case("yaml.python-object", "name: !!python/object:os.system x\n", "not valid YAML",
              "python/object"),
    text_case("yaml.python-apply", "name: !!python/object/apply:os.system ['touch pwned']\n",
              "not valid YAML", "python/object/apply"),
    text_case("yaml.python-name", "name: !!python/name:os.system\n", "not valid YAML"),
    text_case("yaml.alias-bomb", BOMB, "alias", "refused before expanding"),
    text_case("yaml.alias-recursive", "models: &m [*m]\n", "alias refers to itself"),
    text_case("yaml.duplicate-top", yaml.safe_dump(BASE) + "budget: {kimg: 5}\n", "key 'budget' is given twice"),
    text_case("yaml.duplicate-nested", "train:\n  lr: 1\n  lr: 2\n", "line 3: key 'lr' is given twice"),
    text_case("yaml.binary", bytes(range(256)) * 4, "not a text file"),
    text_case("yaml.latin1", "name: caf\xe9\n".encode("latin-1"), "not a text file"),
    text_case("yaml.utf16", yaml.safe_dump(BASE).encode("utf-16"), "not a text file"),
    text_case("yaml.huge", "# " + "x" * 1_100_000 + "\n", "bytes; a suite file is at most"),
    text_case("yaml.deep", "a: " + "[" * 5000 + "]" * 5000 + "\n", "YAML"),
    Case("file.missing", lambda tmp: run_args(tmp / "nope.yaml"), ("no such suite file",), "nope.yaml"),
    Case("file.folder", lambda tmp: run_args(tmp), ("is a folder",), "."),
]

SET_FLAGS = [
    set_case("set.unclosed", "train.lr=[1", "--set train.lr", "not valid YAML"),
    set_case("set.no-equals", "train.lr", "--set 'train.lr': expected KEY=VALUE"),
    set_case("set.no-key", "=3", "expected KEY=VALUE"),
    set_case("set.empty-part", "train..lr=1", "--set train..lr: empty key part"),
    set_case("set.index", "models.9.kwargs.x=1", "--set models.9.kwargs.x: '9' is not an index"),
    set_case("set.index-word", "models.x.arch=a", "'x' is not an index"),
    set_case("set.not-section", "train.batch_size.x=1", "--set train.batch_size.x: 'batch_size' is not a section"),
    set_case("set.nan", "train.lr=.nan", "train.lr", "not a finite number"),
    set_case("set.inf", "budget.kimg=.inf", "budget.kimg", "not a finite number"),
    set_case("set.python-object", "train.lr=!!python/object:os.system x", "--set train.lr", "not valid YAML"),
    set_case("set.tab", "train.lr=\t[", "--set train.lr", "not valid YAML"),
    set_case("set.section-scalar", "budget=3", "budget: expected a mapping"),
    set_case("set.unknown-key", "train.lrr=1", "train.lrr: unknown key"),
    set_case("set.unknown-section", "trian.lr=1", "trian: unknown section"),
    set_case("set.seeds-dup", "seeds=[1, 1]", "seeds: seed 1 is listed twice"),
    set_case("set.name-escape", "models.0.name=../../x", NAME, "no / or .."),
    set_case("set.width-zero", "models.0.kwargs.base_channels=0", "models[0].kwargs.base_channels"),
    set_case("set.bomb", "train.lr=" + BOMB_FLOW, "--set train.lr", "refused before expanding"),
    set_case("set.duplicate", "train={lr: 1, lr: 2}", "--set train", "given twice"),
]
