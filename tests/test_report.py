"""The report on fixture result folders with known numbers: means, CIs, paired verdicts, Pareto flags,
protocol grouping, the CLI, and every plot file written."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from fixtures_results import FID, PROTOCOL, VAL_LOSS, build_suite, write_run
from PIL import Image
from scipy import stats as scipy_stats

from bench.cli import main
from bench.report import collect, leaderboard, stats, write_leaderboard, write_report
from bench.report.markdown import leaderboard_markdown

PLOTS = {"curves", "loss", "val_loss_quarters", "recon_vs_t", "fid_vs_n", "fid_vs_steps",
         "quality_vs_cost", "sample_grids"}


def board(folders, **kw) -> pd.DataFrame:
    return leaderboard(collect(folders).runs, kw.pop("metric", "val_loss"), **kw).set_index("label")


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return build_suite(tmp_path_factory.mktemp("res"))


@pytest.fixture(scope="module")
def report(suite, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return write_report([suite], out, "val_loss", "minimize"), out


# ---------------------------------------------------------------- statistics

def test_t_interval_is_the_closed_form():
    x = np.array([0.50, 0.52, 0.49, 0.51, 0.50])
    half = scipy_stats.t.ppf(0.975, 4) * x.std(ddof=1) / np.sqrt(5)
    assert stats.t_interval(x) == pytest.approx((x.mean() - half, x.mean() + half))
    assert stats.t_interval([5.0, 5.0, 5.0]) == (5.0, 5.0)
    assert all(np.isnan(stats.t_interval([5.0])))
    assert all(np.isnan(stats.t_interval([np.nan, 1.0])))


@pytest.mark.parametrize("test", ["ttest", "wilcoxon"])
def test_the_delta_ci_and_the_verdict_agree_on_random_pairs(test):
    """The CI is the inverted test: it excludes 0 exactly when p < alpha (1000 random studies)."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(3, 12))
        base = dict(enumerate(rng.normal(0, 1, n)))
        entry = {s: v + rng.normal(rng.normal(0, 1), 1) for s, v in base.items()}
        out = stats.compare_paired(entry, base, test=test)
        excludes = not out["delta_ci_low"] <= 0 <= out["delta_ci_high"]
        assert excludes == (out["p_value"] < 0.05) == (out["verdict"] != "not distinguishable")


def test_clear_null_and_two_seed_comparisons():
    base = {0: 0.50, 1: 0.52, 2: 0.49, 3: 0.51, 4: 0.50}
    clear = stats.compare_paired({s: v - 0.1 + 0.001 * s for s, v in base.items()}, base)
    d = np.array([-0.1 + 0.001 * s for s in range(5)])
    half = scipy_stats.t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5)
    assert clear["verdict"] == "better" and clear["p_value"] < 1e-6 and clear["pairs"] == 5
    assert (clear["delta_ci_low"], clear["delta_ci_high"]) == pytest.approx(
        (d.mean() - half, d.mean() + half))
    null = stats.compare_paired({0: 0.51, 1: 0.51, 2: 0.50, 3: 0.50, 4: 0.50}, base)
    assert null["verdict"] == "not distinguishable" and null["p_value"] > 0.5
    assert null["delta_ci_low"] < 0 < null["delta_ci_high"]
    # 2 seeds, however clear the difference: no test, no CI, the seed count in the verdict
    two = stats.compare_paired({0: 0.40, 1: 0.42}, {0: 0.50, 1: 0.52})
    assert two["verdict"] == "too few seeds (n = 2)" and two["delta"] == pytest.approx(-0.1)
    assert np.isnan(two["p_value"]) and np.isnan(two["delta_ci_low"])
    # Wilcoxon below 6 pairs cannot reject at 0.05: its interval is unbounded, the verdict agrees
    wil = stats.compare_paired({s: v - 0.1 for s, v in base.items()}, base, test="wilcoxon")
    assert wil["p_value"] == pytest.approx(0.0625) and wil["verdict"] == "not distinguishable"
    assert wil["delta_ci_low"] == -np.inf and wil["delta_ci_high"] == np.inf


def test_signed_rank_interval_matches_a_brute_force_inversion():
    d = np.array([0.3, -0.1, 0.8, 1.2, 0.5, 0.9, -0.4, 1.1])
    low, high = stats.signed_rank_interval(d, 0.95)
    grid = np.linspace(-1, 2, 3001)
    kept = [g for g in grid if scipy_stats.wilcoxon(d - g).pvalue >= 0.05]
    assert low == pytest.approx(min(kept), abs=2e-3) and high == pytest.approx(max(kept), abs=2e-3)


def test_pareto_front_with_ties_and_nans():
    quality = [1.0, 2.0, 1.0, 0.5, np.nan]
    cost = [1.0, 0.5, 2.0, 3.0, 0.1]  # point 2 ties point 0 on quality but costs more
    assert stats.pareto_front(quality, cost).tolist() == [True, True, False, True, False]
    # read as throughput (maximize), point 3 has the best quality and the highest throughput
    assert stats.pareto_front(quality, cost, cost_direction="maximize").tolist() == [
        False, False, False, True, False]


# ---------------------------------------------------------------- leaderboard

def test_means_stds_and_cis_over_seeds(suite):
    table = board([suite])
    for entry, values in VAL_LOSS.items():
        assert table.loc[entry, "val_loss"] == pytest.approx(np.mean(values))
        assert table.loc[entry, "val_loss_std"] == pytest.approx(np.std(values, ddof=1))
        low, high = table.loc[entry, "val_loss_ci_low"], table.loc[entry, "val_loss_ci_high"]
        assert (low, high) == pytest.approx(stats.t_interval(values))  # Student t over 5 seeds
        assert table.loc[entry, "seeds"] == 5
    assert table.loc["base", "params"] == 1_000_000
    assert table.loc["base", "params_ci_low"] == table.loc["base", "params_ci_high"] == 1_000_000
    assert table.loc["clear", "fid"] == pytest.approx(FID["clear"] + 0.2)  # + 0.1 * mean seed
    # SSIM averaged over the t grid of the fixture's recon dicts: 1 - t/1100 - loss/10
    expected = np.mean([1 - t / 1100 for t in (50, 100, 500, 1000)]) - np.mean(VAL_LOSS["base"]) / 10
    assert table.loc["base", "ssim"] == pytest.approx(expected)
    assert table["rank"].tolist() == [1, 2, 2, 4]  # base and noise tie on the mean
    assert table.index.tolist() == ["clear", "base", "noise", "slow"]  # tie: suite order


def test_paired_verdicts_on_a_clear_and_a_null_difference(suite):
    table = board([suite])
    assert table.loc["base", "verdict"] == "baseline"
    assert table.loc["clear", "verdict"] == "better"
    assert table.loc["clear", "delta"] == pytest.approx(-0.1)
    assert table.loc["clear", "p_value"] < 1e-6 and table.loc["clear", "pairs"] == 5
    assert table.loc["noise", "verdict"] == "not distinguishable"
    assert table.loc["noise", "delta"] == pytest.approx(0.0, abs=1e-12)
    assert table.loc["noise", "p_value"] > 0.5
    assert table.loc["slow", "verdict"] == "worse"
    assert table.loc["slow", "delta"] == pytest.approx(0.05)


def test_verdicts_follow_the_direction_and_the_test(suite):
    flipped = board([suite], direction="maximize")
    assert flipped.loc["clear", "verdict"] == "worse" and flipped.loc["slow", "verdict"] == "better"
    # Wilcoxon on 5 pairs, all the same sign: exact two-sided p = 2 / 2^5 = 0.0625
    wil = board([suite], test="wilcoxon")
    assert wil.loc["clear", "p_value"] == pytest.approx(0.0625)
    assert wil.loc["clear", "verdict"] == "not distinguishable"
    assert board([suite], test="wilcoxon", alpha=0.1).loc["clear", "verdict"] == "better"


def test_one_seed_gives_no_verdict_and_no_ci(tmp_path):
    table = board([build_suite(tmp_path, seeds=(0,))])
    assert table.loc["clear", "verdict"] == "too few seeds (n = 1)"
    assert np.isnan(table.loc["clear", "p_value"]) and np.isnan(table.loc["clear", "val_loss_ci_low"])
    assert table.loc["clear", "delta"] == pytest.approx(-0.1)


def test_pairs_only_seeds_both_entries_have(tmp_path):
    folder = build_suite(tmp_path, entries=("base", "clear"), seeds=(0, 1, 2))
    shutil.rmtree(next(folder.glob("base-s2-*")))
    write_run(folder, "clear", 4, suite="fixture")  # a seed the baseline never ran
    table = board([folder])
    assert table.loc["clear", "pairs"] == 2 and table.loc["clear", "seeds"] == 4
    assert table.loc["base", "seeds"] == 2


def test_incomplete_runs_are_left_out_and_listed(tmp_path):
    folder = build_suite(tmp_path, entries=("base", "clear"), seeds=(0, 1))
    write_run(folder, "clear", 2, status="failed", suite="fixture")
    table = board([folder])
    assert table.loc["clear", "seeds"] == 2
    write_leaderboard(folder)
    md = (folder / "leaderboard.md").read_text()
    assert "## Runs not complete" in md and "| failed | boom |" in md


def test_pareto_flags_fid_vs_training_throughput(suite):
    table = board([suite])
    assert table["pareto"].to_dict() == {"clear": True, "base": True, "noise": False, "slow": False}
    assert table["pareto_axes"].iloc[0] == "fid vs train_img_per_s"
    by_params = board([suite], cost="params")  # base and noise tie; base has the lower FID
    assert by_params["pareto"].to_dict() == {"clear": True, "base": True, "noise": False, "slow": False}


def test_pareto_uses_the_ranking_metric_without_fid(tmp_path):
    table = board([build_suite(tmp_path, evaluation=False)])
    assert "fid" not in table and table["pareto_axes"].iloc[0] == "val_loss vs train_img_per_s"
    assert table["pareto"].to_dict() == {"clear": True, "base": True, "noise": False, "slow": False}


def test_rows_with_different_protocols_are_never_ranked_together(tmp_path):
    a = build_suite(tmp_path / "a", entries=("base", "clear"))
    b = build_suite(tmp_path / "b", entries=("base", "slow"), protocol={**PROTOCOL, "n_generated": 512})
    table = leaderboard(collect([a, b]).runs, "fid", "minimize")
    assert table["group"].nunique() == 2
    for _, part in table.groupby("group"):
        assert sorted(part["rank"]) == [1, 2]  # ranked within its group only
        assert set(part["source_name"]) in ({"a/fixture"}, {"b/fixture"})
    slow = table.set_index("label").loc["b/fixture/slow"]
    assert slow["baseline"] == "b/fixture/base" and slow["verdict"] == "worse"
    md = leaderboard_markdown(collect([a, b]), table)
    assert "## Why these rows are not ranked together" in md and "| n_generated |" in md
    # a baseline in the other group is never tested against
    other = leaderboard(collect([a, b]).runs, "fid", baseline="a/fixture:base").set_index("label")
    assert other.loc["b/fixture/slow", "verdict"] == "n/a (no baseline)"


def test_same_protocol_folders_rank_together_and_compare_across(tmp_path):
    a = build_suite(tmp_path / "a", entries=("base",))
    b = build_suite(tmp_path / "b", entries=("clear",))
    table = leaderboard(collect([a, b]).runs, "val_loss", baseline="a/fixture:base").set_index("label")
    assert table["rank"].to_dict() == {"b/fixture/clear": 1, "a/fixture/base": 2}
    assert table.loc["b/fixture/clear", "verdict"] == "better"
    assert table.loc["b/fixture/clear", "delta"] == pytest.approx(-0.1)


def test_different_datasets_are_apart_without_fid(tmp_path):
    a = build_suite(tmp_path / "a", evaluation=False)
    b = build_suite(tmp_path / "b", evaluation=False, dataset="cifar10")
    assert leaderboard(collect([a, b]).runs)["group"].nunique() == 2


# ---------------------------------------------------------------- files and CLI

def test_every_plot_file_is_written_and_non_empty(report):
    done, out = report
    assert {p.stem for p in (out / "plots").iterdir()} == PLOTS
    for path in (out / "plots").iterdir():
        image = np.asarray(Image.open(path).convert("L"), dtype=float)
        assert image.shape[0] > 150 and image.shape[1] > 250, path.name
        assert image.std() > 5, f"{path.name} is blank"
    assert all(p.stat().st_size > 0 for p in done["files"])


def test_plots_without_evaluation_metrics_are_skipped(tmp_path):
    done = write_report([build_suite(tmp_path, entries=("base", "clear"), seeds=(0, 1), evaluation=False)])
    written = {p.stem for p in (tmp_path / "fixture" / "plots").iterdir()}
    assert written == PLOTS - {"curves", "recon_vs_t", "fid_vs_n", "fid_vs_steps"}
    assert (tmp_path / "fixture" / "report.html").stat().st_size > 10_000 and done["seconds"] > 0


def test_leaderboard_csv_and_markdown(report):
    _, out = report
    csv = pd.read_csv(out / "leaderboard.csv")
    assert {"val_loss_ci_low", "val_loss_ci_high", "verdict", "p_value", "pareto", "run_dirs"} <= set(csv)
    assert csv["entry"].tolist() == ["clear", "base", "noise", "slow"]
    md = (out / "leaderboard.md").read_text()
    assert "| rank | entry | seeds | val loss | 95% CI |" in md
    assert "| 1 | clear | 5 | 0.4040 ± 0.0114 | [0.3898, 0.4182] | -0.1000 [-0.1000, -0.1000] " in md
    for text in ("## SSIM vs t", "| 1000 |", "## FID and sampling speed vs steps", "## FID vs number"):
        assert text in md


def test_write_leaderboard_writes_the_tables_bench_tune_leaves(tmp_path):
    """What `bench tune` writes after a study (bench.cli.tune): leaderboard.csv and leaderboard.md,
    ranked by the objective, and no HTML report."""
    folder = build_suite(tmp_path, entries=("base", "clear"), seeds=(0, 1))
    table = write_leaderboard(folder, metric="val_loss", direction="minimize")
    assert table["entry"].tolist() == ["clear", "base"]
    csv = pd.read_csv(folder / "leaderboard.csv")
    assert csv["entry"].tolist() == ["clear", "base"] and csv["rank"].tolist() == [1, 2]
    assert csv["val_loss"].tolist() == pytest.approx(table["val_loss"].tolist(), rel=1e-12)
    md = (folder / "leaderboard.md").read_text()
    assert "Ranked by `val_loss` (minimize)" in md and md.index("| 1 | clear |") < md.index("| 2 | base |")
    assert not (folder / "report.html").exists()


def test_cli_markdown_only_writes_nothing(suite, capsys):
    before = {p.name for p in suite.iterdir()}
    assert main(["report", str(suite), "--markdown-only", "--metric", "fid"]) == 0
    out = capsys.readouterr().out
    assert "Ranked by `fid` (minimize)" in out and "| 1 | clear |" in out
    assert {p.name for p in suite.iterdir()} == before


def test_cli_rejects_bad_inputs(suite, tmp_path, capsys):
    assert main(["report", str(suite), "--markdown-only", "--metric", "fidd"]) == 2
    err = capsys.readouterr().err
    assert "--metric: unknown metric 'fidd'" in err and "did you mean fid" in err
    assert main(["report", str(suite), str(suite), "--metric", "fid"]) == 2
    assert "give --out DIR" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
