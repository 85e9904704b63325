"""Bad-input rows of the studies' training-protocol keys (issue 11: train.early_stop, data.folds,
non-square data.image_size, task.loss_on / conditioning, data.protocol), in the corpus format of
`tests/bad_input_cases.py` (read by `tests/test_bad_inputs.py`)."""
from __future__ import annotations

import math

from bad_input_cases import suite_case

EVERY = {"eval.every_kimg": 0.008}

PROTOCOL = [
    suite_case("early_stop.not-mapping", {"train.early_stop": 5}, "train.early_stop: expected a mapping"),
    suite_case("early_stop.unknown-key", {"train.early_stop": {"wait": 5}, **EVERY},
               "train.early_stop.wait: unknown key"),
    suite_case("early_stop.patience-zero", {"train.early_stop": {"patience": 0}, **EVERY},
               "train.early_stop.patience: 0 is out of range"),
    suite_case("early_stop.patience-float", {"train.early_stop": {"patience": 2.5}, **EVERY},
               "train.early_stop.patience: expected an integer"),
    suite_case("early_stop.min-delta-negative", {"train.early_stop": {"min_delta": -0.1}, **EVERY},
               "train.early_stop.min_delta: -0.1 is out of range"),
    suite_case("early_stop.min-delta-nan", {"train.early_stop": {"min_delta": math.nan}, **EVERY},
               "train.early_stop.min_delta", "not a finite number"),
    suite_case("early_stop.end-only-metric", {"train.early_stop": {"metric": "fid"}, **EVERY},
               "train.early_stop.metric: early stopping on fid is impossible"),
    suite_case("early_stop.unknown-metric", {"train.early_stop": {"metric": "val_los"}, **EVERY},
               "train.early_stop.metric: unknown metric"),
    suite_case("early_stop.no-evaluations", {"train.early_stop": {}},
               "train.early_stop: needs in-training evaluations"),
    suite_case("folds.k-one", {"data.folds": {"k": 1}}, "data.folds.k: 1 is out of range"),
    suite_case("folds.fold-by-hand", {"data.folds": {"k": 3, "fold": 0}},
               "data.folds.fold: set by the suite's `folds:` axis"),
    suite_case("folds.axis-out-of-range", {"data.folds": {"k": 3}, "folds": [3]},
               "folds: fold 3 is out of range"),
    suite_case("folds.axis-without-folds", {"folds": "all"}, "folds: no entry sets data.folds"),
    suite_case("task.paste-needs-hole", {"task": {"kind": "inpaint", "condition": "paste"}},
               "task.loss_on: task.condition 'paste'"),
    suite_case("task.hole-unconditional", {"task": {"loss_on": "hole"}},
               "task.loss_on: 'hole' needs task.kind: inpaint"),
    suite_case("image_size.three-sides", {"data.image_size": [8, 8, 8]},
               "data.image_size: expected a list of 2 numbers"),
    suite_case("image_size.odd-side", {"data.image_size": [8, 7]},
               "unet_tiny at data.image_size [8, 7]", "not divisible"),
]
