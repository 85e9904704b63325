"""`bench tune`'s search section, refused or resolved before any trial trains: multi-objective
pruning notes, bad spaces and options in one line naming the key, space types from the suite
fields, and the reference study's dry run."""
from __future__ import annotations

from pathlib import Path

import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from tune_parts import LR, tune_cli, write_suite

from bench.cli import main
from bench.config.suite import load_suite
from bench.tune.search import parse_search

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning",
                                        "ignore:Heartbeat of storage is supposed to be used")


def test_multi_objective_without_proxy_says_pruning_is_off(tmp_path):
    path = write_suite(tmp_path, {"space": {"train.lr": LR}, "n_trials": 2, "objectives": [
        "val_loss", {"metric": "train_img_per_s", "direction": "maximize"}]})
    search = parse_search(load_suite(path))
    assert search.prune_on is None and search.sampler == "nsga2"
    assert "pruning off" in search.pruning_note() and "multi-objective" in search.pruning_note()


BAD = [
    ({"train.lrr": LR}, "search.space.train.lrr: unknown key 'lrr' (did you mean lr?); choose from"),
    ({"trian.lr": LR}, "search.space.trian.lr: unknown section 'trian' (did you mean train?)"),
    ({"train.lr": {"low": 1e-2, "high": 1e-4}}, "search.space.train.lr: low (0.01) must be below high"),
    ({"train.lr": {"lo": 1e-4, "high": 1e-2}}, "search.space.train.lr: unknown option 'lo'"),
    ({"train.ema_decay": {"low": 0.9, "high": 1.5}},
     "search.space.train.ema_decay: 1.5 is refused: train.ema_decay: 1.5 is out of range; the documented range is [0, 1)"),
    ({"models.kwargs.dropot": {"choices": [0.0, 0.1]}}, "search.space.models.kwargs.dropot: 0.0 is refused"),
    ({"train.batch_size": {"low": 8, "high": 32, "step": 2.5}},
     "search.space.train.batch_size: low, high and step must be integers"),
    ({"train.betas": {"choices": [0.9]}}, "search.space.train.betas: only scalar keys can be searched"),
]


@pytest.mark.parametrize("space, message", BAD, ids=[next(iter(s)) + str(i) for i, (s, _) in enumerate(BAD)])
def test_bad_search_space_is_one_line_naming_the_key(tmp_path, capsys, space, message):
    path = write_suite(tmp_path, {"space": space, "n_trials": 2})
    assert tune_cli(path, tmp_path) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "results").exists()  # refused before any work


def test_bad_search_options_name_their_key(tmp_path, capsys):
    path = write_suite(tmp_path, {"space": {"train.lr": LR}, "n_trials": 2, "sampler": "tpee"})
    assert tune_cli(path, tmp_path) == 2
    assert "search.sampler: unknown value 'tpee' (did you mean tpe?)" in capsys.readouterr().err
    path = write_suite(tmp_path, {"space": {"train.lr": LR}, "pruner_opts": {"n_startup_trials": 1}})
    assert tune_cli(path, tmp_path) == 2
    assert "search: give n_trials and/or timeout" in capsys.readouterr().err
    path = write_suite(tmp_path, {"space": {"train.lr": LR}, "n_trials": 2,
                                  "pruner_opts": {"n_startup": 1}})
    assert tune_cli(path, tmp_path) == 2
    assert "search.pruner_opts: median: " in capsys.readouterr().err


def test_space_types_follow_the_suite_fields(tmp_path):
    path = write_suite(tmp_path, {"n_trials": 1, "space": {
        "train.lr": {"low": "1e-5", "high": "1e-3", "log": True},   # YAML 1.1 reads 1e-5 as text
        "train.batch_size": {"low": 8, "high": 32, "step": 8},
        "train.ema_decay": {"low": 0, "high": 0.99},                 # a float field, int bounds
        "models.kwargs.num_res_blocks": {"low": 1, "high": 2}}})
    space = parse_search(load_suite(path)).space
    assert space["train.lr"] == FloatDistribution(1e-5, 1e-3, log=True)
    assert space["train.batch_size"] == IntDistribution(8, 32, step=8)
    assert space["train.ema_decay"] == FloatDistribution(0.0, 0.99)
    assert space["models.kwargs.num_res_blocks"] == IntDistribution(1, 2)


def test_reference_study_dry_run(tmp_path, capsys):
    suite = Path(__file__).resolve().parents[1] / "suites/cifar_lr.yaml"
    assert main(["tune", str(suite), "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for text in ("objective  minimize fid", "median pruner on fid_proxy",
                 "train.lr               float   [2e-05, 0.001] log", "models.kwargs.dropout",
                 "train.ema_decay", "35.746 M params", "(new)"):
        assert text in out
    assert not list(tmp_path.iterdir())  # a dry run opens no storage
