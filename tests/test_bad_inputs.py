"""The bad-input corpus test: every case of the table (`tests/bad_input_cases.py`, plus the
data-side rows below, which build image folders and files) runs `bench run` in process and must
exit 2 with one stderr line naming the file and the key path, no traceback, nothing written under
the results root.
"""
from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from bad_input_cases import (
    MODELS,
    STRUCTURE,
    Case,
    generated,
    patched,
    run_args,
    suite_file,
)
from bad_input_protocol_cases import PROTOCOL
from bad_input_text_cases import SET_FLAGS, YAML_FILES
from PIL import Image

from bench.cli import main


def images(folder: Path, n: int, size: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def truncated_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def data_case(id: str, prepare: Callable[[Path], dict], *expect: str, file: str = "suite") -> Case:
    """`prepare(tmp)` builds the data on disk and returns the suite changes pointing at it."""
    return Case(id, lambda tmp: run_args(suite_file(tmp, patched(prepare(tmp)))), expect, file)


def folder(tmp: Path, **extra) -> dict:
    return {"data.dataset": "folder", "data.root": str(tmp / "imgs"), **extra}


def _with_bad_file(tmp: Path, name: str, content: bytes | None) -> dict:
    images(tmp / "imgs", 10)
    if content is None:
        truncated_jpeg(tmp / "imgs" / name)
    else:
        (tmp / "imgs" / name).write_bytes(content)
    return folder(tmp)


def _cifar_partial(tmp: Path) -> dict:
    (tmp / "cifar" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp / "cifar" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"x")
    return {"data.dataset": "cifar10", "data.root": str(tmp / "cifar")}


FID = {"eval.metrics": ["fid"], "eval.fid_n": 16, "eval.fid_batch": 8}

DATA = [
    data_case("data.root-missing", lambda tmp: folder(tmp), "data.root", "is not a folder"),
    data_case("data.root-unset", lambda tmp: {"data.dataset": "folder"}, "data.root: required"),
    data_case("data.root-is-file", lambda tmp: (tmp / "imgs").write_text("x") and folder(tmp),
              "data.root", "is not a folder"),
    data_case("data.root-empty", lambda tmp: (tmp / "imgs").mkdir() or folder(tmp), "data.root: no images"),
    data_case("data.root-no-images", lambda tmp: (tmp / "imgs").mkdir() or (tmp / "imgs" / "a.txt").write_text("x")
              and folder(tmp), "data.root: no images"),
    data_case("data.truncated-jpeg", lambda tmp: _with_bad_file(tmp, "broken.jpg", None),
              "data.root: cannot decode", "broken.jpg"),
    data_case("data.text-as-png", lambda tmp: _with_bad_file(tmp, "notes.png", b"not an image"),
              "data.root: cannot decode", "notes.png"),
    data_case("data.empty-file", lambda tmp: _with_bad_file(tmp, "zero.jpg", b""),
              "data.root: cannot decode", "zero.jpg"),
    data_case("data.one-image", lambda tmp: images(tmp / "imgs", 1) and folder(tmp), "data.group_by"),
    data_case("data.bad-regex", lambda tmp: images(tmp / "imgs", 4) and folder(tmp, **{"data.group_by": "("}),
              "data.group_by: invalid regex"),
    data_case("data.one-group", lambda tmp: images(tmp / "imgs", 4) and folder(tmp, **{"data.group_by": "png"}),
              "data.group_by", "one group"),
    data_case("data.cifar-missing", lambda tmp: {"data.dataset": "cifar10", "data.root": str(tmp / "none")},
              "data.root: CIFAR-10 not found"),
    data_case("data.cifar-partial", _cifar_partial, "data.root", "lacks data_batch_2"),
    data_case("data.fashion-missing", lambda tmp: {"data.dataset": "fashion_mnist", "data.root": str(tmp)},
              "data.root: Fashion-MNIST files"),
    data_case("data.device-cuda", lambda tmp: {"train.device": "cuda"}, "train.device"),
    data_case("data.inception-missing", lambda tmp: {**FID, "eval.inception_weights": str(tmp / "w.pt")},
              "eval.inception_weights", "w.pt"),
    data_case("data.fid-test-too-few", lambda tmp: {**FID, "eval.fid_reference": "test",
                                                   "eval.inception_weights": str(tmp / "suite.yaml")},
              "eval.fid_reference: test gives 4 reference images"),
    data_case("data.fid-reference-n", lambda tmp: {**FID, "eval.fid_reference_n": 1000,
                                                  "eval.inception_weights": str(tmp / "suite.yaml")},
              "eval.fid_reference_n: 1000"),
    data_case("data.inpaint-few-heldout", lambda tmp: {"task": {"kind": "inpaint"}, "eval.grid": 16,
                                                      "models.0.arch": "s002_unet", "models.0.kwargs": {},
                                                      "data.image_size": 32},
              "data.holdout: task inpaint"),
]

CASES = generated() + STRUCTURE + MODELS + YAML_FILES + SET_FLAGS + DATA + PROTOCOL


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))   # outside the results root


def test_corpus_size(capsys):
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(CASES) >= 150
    with capsys.disabled():
        print(f"\nbad-input corpus: {len(CASES)} cases ({len(generated())} generated from the schema)")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_line_naming_file_and_key(case, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    results = tmp_path / "results"
    argv = case.make(tmp_path / "in") + ["--results", str(results)]
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), err
    named = str(tmp_path / "in" / "suite.yaml") if case.file == "suite" else str(tmp_path / "in" / case.file)
    assert named.rstrip("/.") in lines[0], lines[0]
    for text in case.expect:
        assert text in lines[0], lines[0]
    assert not results.exists(), sorted(results.rglob("*"))
