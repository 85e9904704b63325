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
]
