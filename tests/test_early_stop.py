"""train.early_stop (study 003 §3.2): the stop and best evaluations of scripted metric sequences,
the training loop stopping at exactly that step, resume from a stopped checkpoint, and a tiny real
run that records budget / stopped_at_kimg / best_kimg and is evaluated from its best checkpoint."""
from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from train_parts import BATCH_SIZE, parts

from bench.cli import main
from bench.config.schema import BudgetConfig, TrainConfig
from bench.run.results import BEST, CHECKPOINT, load_checkpoint
from bench.train import early_stop
from bench.train.loop import checkpoint_state, train


def scripted(values, patience, min_delta=0.0, direction="minimize"):
    """(index of the best evaluation, index of the stopping one or None) over `values`."""
    state = early_stop.new_state()
    for i, v in enumerate(values):
        early_stop.update(state, v, step=i, kimg=i / 10, patience=patience, min_delta=min_delta,
                          direction=direction)
        if early_stop.stopped(state):
            break
    return state["best_step"], state["stopped_at_step"]


@pytest.mark.parametrize("values, patience, min_delta, direction, best, stop", [
    ([1.0, 0.8, 0.85, 0.7, 0.75, 0.71, 0.72, 0.1], 3, 0.0, "minimize", 3, 6),
    ([1.0, 0.8, 0.85, 0.7, 0.75, 0.71, 0.72, 0.1], 5, 0.0, "minimize", 7, None),
    ([1.0, 0.97, 0.96, 0.98, 0.5], 2, 0.05, "minimize", 0, 2),    # improvements below min_delta
    ([1.0, 0.94, 0.93, 0.90, 0.88], 2, 0.05, "minimize", 1, 3),   # 0.94 beats 1.0 by 0.06
    ([0.1, 0.3, 0.3, 0.2, 0.5], 2, 0.0, "maximize", 1, 3),        # ties do not improve
    ([1.0, math.nan, math.nan], 2, 0.0, "minimize", 0, 2),        # NaN never improves
])
def test_scripted_sequences_stop_and_best_at_exact_evaluations(values, patience, min_delta,
                                                               direction, best, stop):
    assert scripted(values, patience, min_delta, direction) == (best, stop)


def test_patience_counts_evaluations_in_a_row():
    state = early_stop.new_state()
    for i, v in enumerate([5.0, 6.0, 4.0, 6.0, 6.0]):   # the bad run is reset by the 4.0
        early_stop.update(state, v, i, i, patience=3, min_delta=0.0)
    assert (state["best"], state["best_step"], state["bad_evals"]) == (4.0, 2, 2)
    assert not early_stop.stopped(state)


def _loop(values, patience, steps=20, resume=None):
    model, diffusion, batches, gen = parts()
    evals = iter(values)

    def on_eval(state):
        state["early_stop"] = state["early_stop"] or early_stop.new_state()
        early_stop.update(state["early_stop"], next(evals, 9.0), state["step"],
                          state["images"] / 1000, patience, 0.0)
        state["last_eval_step"] = state["step"]

    cfg = TrainConfig(batch_size=BATCH_SIZE, device="cpu", log_every=1)
    return train(model, diffusion, batches, cfg, BudgetConfig(steps=steps), generator=gen,
                 every_kimg=BATCH_SIZE / 1000, on_eval=on_eval, resume=resume, progress=False)


def test_training_loop_stops_after_the_evaluation_that_exhausts_patience():
    state = _loop([1.0, 0.5, 0.6, 0.7, 0.4], patience=2)   # evaluation after every step
    assert state["step"] == 4 and state["images"] == 4 * BATCH_SIZE
    assert state["early_stop"]["best_step"] == 2 and state["early_stop"]["stopped_at_step"] == 4
    assert len(state["losses"]) == 4
    ckpt = checkpoint_state(state)                           # resume-safe: the state is in it
    assert ckpt["early_stop"]["stopped_at_step"] == 4
    again = _loop([], patience=2, resume=ckpt)               # a stopped run trains no further
    assert again["step"] == 4 and again["early_stop"]["best_step"] == 2


def _suite(tmp_path, **early):
    suite = {"name": "es", "data": {"dataset": "synthetic", "image_size": 8, "num_images": 48},
             "budget": {"kimg": 0.16},
             "train": {"batch_size": 16, "device": "cpu", "early_stop": early},
             "eval": {"every_kimg": 0.032, "steps": 2, "grid": 4, "sample_batch": 4,
                      "val_images": 8},
             "models": [{"arch": "unet_tiny", "name": "tiny", "kwargs": {"base_channels": 8}}],
             "seeds": [0]}
    path = tmp_path / "es.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_a_tiny_run_stops_early_records_both_and_scores_its_best_checkpoint(tmp_path):
    # min_delta far above any loss change: only the first evaluation ever "improves", so the
    # run stops at the 1 + patience-th evaluation (2 x 32 = 64 images of a 160-image budget).
    path = _suite(tmp_path, metric="val_loss", patience=1, min_delta=100.0)
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--no-progress"]) == 0
    run = next(p for p in (tmp_path / "r" / "es").iterdir() if (p / "result.json").is_file())
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "complete"
    es = result["early_stop"]
    assert (es["best_kimg"], es["stopped_at_kimg"], es["budget_kimg"]) == (0.032, 0.064, 0.16)
    assert result["budget"]["kimg"] == 0.064 and result["budget"]["requested"] == 0.16
    assert result["metrics"]["best_kimg"] == 0.032 and result["metrics"]["stopped_at_kimg"] == 0.064
    first = next(p for p in result["history"] if "val_loss" in p)
    assert first["kimg"] == 0.032 and result["metrics"]["val_loss"] == first["val_loss"]
    best, last = load_checkpoint(run / BEST), load_checkpoint(run / CHECKPOINT)
    assert (best["images"], last["images"]) == (32, 64)
    assert not torch.equal(best["ema"]["n_averaged"], last["ema"]["n_averaged"])
    board = (tmp_path / "r" / "es" / "leaderboard.md").read_text()
    assert "stopped at (kimg)" in board and "best at (kimg)" in board


@pytest.mark.parametrize("early, expect", [
    ({"metric": "fid"}, "train.early_stop.metric: early stopping on fid is impossible"),
    ({"metric": "nope"}, "train.early_stop.metric: unknown metric"),
    ({"patience": 0}, "train.early_stop.patience: 0 is out of range"),
    ({"min_delta": -1}, "train.early_stop.min_delta: -1.0 is out of range"),
    ({"wait": 3}, "train.early_stop.wait: unknown key"),
])
def test_bad_early_stop_settings_are_refused_up_front(tmp_path, capsys, early, expect):
    path = _suite(tmp_path, **early)
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0] and str(path) in err[0]
    assert not (tmp_path / "r").exists()
