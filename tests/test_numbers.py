"""Paper-style numbers (`bench.report.numbers`, `bench.report.tables.column`): the std to 2
significant digits, the mean to the same place, one precision per column, CI bounds at the mean's
precision, the metric table's precision without a spread; the CSV keeps full precision."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from fixtures_results import build_suite

from bench.report import numbers, write_report
from bench.report.tables import ci_column, column, protocol_label


@pytest.mark.parametrize("mean, std, low, high, cell, ci", [
    # the examples, as a paper prints them
    (0.2784, 0.0002053, 0.27815, 0.27866, "0.27840 ± 0.00021", "[0.27815, 0.27866]"),
    (291.0, 0.08353, 290.9, 291.1, "291.000 ± 0.084", "[290.900, 291.100]"),
    (0.02489, 0.01556, 0.0056, 0.0442, "0.025 ± 0.016", "[0.006, 0.044]"),
    (0.278, 0.003, 0.2743, 0.2817, "0.2780 ± 0.0030", "[0.2743, 0.2817]"),
    (12.34, 1.26, 10.1, 14.6, "12.3 ± 1.3", "[10.1, 14.6]"),
    (1234.5, 37.0, 1180.0, 1290.0, "1234 ± 37", "[1180, 1290]"),     # round half to even
    (0.5, 0.0996, 0.37, 0.63, "0.50 ± 0.10", "[0.37, 0.63]"),        # 0.0996 rounds up a place
])
def test_known_mean_std_ci_triples(mean, std, low, high, cell, ci):
    places = numbers.decimals(mean, std)
    assert numbers.mean_std(mean, std, places) == cell
    assert numbers.interval(low, high, places) == ci


def test_without_a_spread_the_metric_precision_rules():
    assert column([291.04, 12.345], [math.nan, math.nan], "fid") == ["291.0", "12.3"]  # 3 sig of 12.3
    assert column([2_000_000, 1_000_000], [0.0, 0.0], "params") == ["2.00", "1.00"]  # in millions
    assert column([0.000123], [None], "gflops") == ["0.000123"]
    assert numbers.mean_std(0.5, 0.0, 3) == "0.500"  # identical seeds: no "± 0.000"


def test_one_precision_per_column_and_ci_at_the_means_precision():
    means, stds = [0.404, 0.504], [0.0114, 0.0055]  # 3 and 4 decimals: the column takes 4
    assert column(means, stds, "val_loss") == ["0.4040 ± 0.0114", "0.5040 ± 0.0055"]
    assert ci_column(means, stds, [0.38983, 0.49717], [0.41817, 0.51083], "val_loss") == [
        "[0.3898, 0.4182]", "[0.4972, 0.5108]"]


def test_p_values_and_edge_cases():
    assert [numbers.p_value(p) for p in (0.4567, 0.04512, 0.0012, 3e-11, 1.0, math.nan)] == [
        "0.46", "0.045", "0.0012", "< 0.001", "1.0", ""]
    assert numbers.fixed(-0.00001, 3) == "0.000"  # no negative zero
    assert numbers.interval(-math.inf, math.inf, 2) == "[-∞, ∞]"
    assert numbers.decimals(math.nan) is None and numbers.mean_std(None, 1.0, 2) == ""


def test_the_csv_keeps_full_precision_and_the_markdown_rounds(tmp_path):
    folder = build_suite(tmp_path, entries=("base", "clear"), seeds=(0, 1, 2))
    write_report([folder])
    csv = pd.read_csv(folder / "leaderboard.csv").set_index("entry")
    assert csv.loc["base", "val_loss"] == pytest.approx((0.50 + 0.52 + 0.49) / 3, abs=1e-15)
    assert csv.loc["base", "val_loss_std"] == pytest.approx(0.015275252316519468, abs=1e-15)
    md = (folder / "leaderboard.md").read_text()
    assert "| 0.503 ± 0.015 |" in md and "0.50333" not in md


@pytest.mark.parametrize("sampler, steps, eta, label", [
    ("ddpm", 1000, None, "DDPM-1000"), ("ddim", 50, 0.0, "DDIM-50"), ("ddim", 50, 1.0, "DDIM-50 η=1"),
    ("ddim", 20, 0.5, "DDIM-20 η=0.5")])
def test_the_short_protocol_label_says_a_stochastic_ddims_eta(sampler, steps, eta, label):
    protocol = {"n_generated": 64, "reference_split": "train", "sampler": sampler, "steps": steps,
                "eta": eta, "ema": True}
    assert protocol_label("synthetic 16px", protocol) == f"synthetic 16px · FID-64 vs train · {label} · EMA"
