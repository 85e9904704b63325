"""Study summary: best trial or Pareto front, parameter importances, plots, JSON and Markdown.

Sources: `optuna.visualization.matplotlib` (optimization history, parameter importances, parallel
coordinates, Pareto front for two objectives) and `optuna.importance` (its default PED-ANOVA
evaluator, Watanabe et al. 2023). Written next to the leaderboard in `results/<suite>/`: `study_summary.json`,
`study_summary.md` and `study_<plot>.png`; the report may embed them.
"""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
from optuna.trial import TrialState
from optuna.visualization import matplotlib as vm

from bench.report.markdown import pipe_table
from bench.run.results import write_json, write_with

SUMMARY_JSON, SUMMARY_MD = "study_summary.json", "study_summary.md"


def write_summary(s) -> dict:
    """Summarize a session's study into its results folder; returns the summary."""
    study, search = s.study, s.search
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = (study.best_trials if len(search.objectives) > 1 else [study.best_trial]) if complete else []
    summary = {"study": study.study_name, "storage": s.url, "suite": s.suite.name,
               "objectives": [{"metric": m, "direction": d} for m, d in search.objectives],
               "pruning": search.pruning_note(), "sampler": search.sampler, "seed": search.seed,
               "pruner": search.pruner, "n_trials": search.n_trials, "timeout": search.timeout,
               "states": dict(Counter(t.state.name.lower() for t in trials)),
               "best": [_trial(t, search) for t in best],
               "importances": _importances(study, search, complete),
               "plots": _plots(study, search, Path(s.folder)),
               "trials": [_trial(t, search) for t in trials]}
    write_json(Path(s.folder) / SUMMARY_JSON, summary)
    write_with(Path(s.folder) / SUMMARY_MD, lambda p: p.write_text(to_markdown(summary)))
    return summary


def _trial(t, search) -> dict:
    return {"number": t.number, "state": t.state.name.lower(),
            "values": dict(zip([m for m, _ in search.objectives], t.values)) if t.values else None,
            "params": t.params, "run_id": t.user_attrs.get("run_id"),
            "retry_of": t.system_attrs.get("failed_trial"), "error": t.user_attrs.get("error"),
            "last_step": max(t.intermediate_values) if t.intermediate_values else None,
            "seconds": t.duration.total_seconds() if t.duration else None}


def _importances(study, search, complete) -> dict:
    """PED-ANOVA importance of each parameter, per objective (needs 2+ complete trials)."""
    if len(complete) < 2 or not complete[0].params:
        return {}
    found = {}
    for i, (metric, direction) in enumerate(search.objectives):
        sign = -1.0 if direction == "maximize" else 1.0  # PED-ANOVA looks at low target values
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found[metric] = optuna.importance.get_param_importances(
                    study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                    target=lambda t, i=i, sign=sign: sign * t.values[i])
        except (RuntimeError, ValueError):  # e.g. every trial drew the same values
            pass
    return found


def _plots(study, search, folder: Path) -> dict:
    """PNG plots -> {name: file} (or the reason a plot was skipped)."""
    plt.switch_backend("agg")  # files only: never a window
    metric = search.objectives[0][0]
    target = {} if len(search.objectives) == 1 else {"target": lambda t: t.values[0],
                                                     "target_name": metric}
    plots = {"history": lambda: vm.plot_optimization_history(study, **target),
             "importances": lambda: vm.plot_param_importances(study, **target),
             "parallel": lambda: vm.plot_parallel_coordinate(study, **target)}
    if len(search.objectives) == 2:
        plots["pareto"] = lambda: vm.plot_pareto_front(
            study, target_names=[m for m, _ in search.objectives])
    made = {}
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot()
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            write_with(folder / f"study_{name}.png", lambda p: fig.savefig(p, format="png", dpi=110,
                                                                           bbox_inches="tight"))
            plt.close(fig)
            made[name] = f"study_{name}.png"
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError) as err:
            made[name] = f"skipped: {err}"
            plt.close("all")
    return made


def best_lines(summary: dict) -> list[str]:
    """What the command prints at the end: the best trial or the Pareto front."""
    title = "Pareto front" if len(summary["objectives"]) > 1 else "best trial"
    if not summary["best"]:
        return [f"{title}: no complete trial yet"]
    lines = [f"{title} ({len(summary['best'])}):" if len(summary["best"]) > 1 else f"{title}:"]
    for t in summary["best"]:
        lines.append(f"  trial {t['number']}: " + "  ".join(f"{k}={_fmt(v)}" for k, v in t["values"].items())
                     + "  " + " ".join(f"{k}={_fmt(v)}" for k, v in t["params"].items())
                     + f"  {t['run_id']}")
    return lines


def to_markdown(summary: dict) -> str:
    metrics = [o["metric"] for o in summary["objectives"]]
    states = ", ".join(f"{n} {k}" for k, n in sorted(summary["states"].items()))
    goal = ", ".join(f"{o['direction']} `{o['metric']}`" for o in summary["objectives"])
    out = [f"# Study `{summary['study']}`", "",
           f"- objective: {goal}", f"- pruning: {summary['pruning']}",
           f"- sampler: {summary['sampler']} (seed {summary['seed']}); trials: {states or 'none'}",
           f"- storage: `{summary['storage']}`", "",
           f"## {'Pareto front' if len(metrics) > 1 else 'Best trial'}", "",
           _table(summary["best"], metrics), ""]
    for metric, imp in summary["importances"].items():
        out += [f"## Parameter importances for `{metric}` (PED-ANOVA)", "",
                pipe_table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in imp.items()]), ""]
    out += [f"![{name}]({file})" for name, file in summary["plots"].items() if file.endswith(".png")]
    out += ["", "## All trials", "", _table(summary["trials"], metrics, state=True), ""]
    return "\n".join(out)


def _table(trials: list[dict], metrics: list[str], state: bool = False) -> str:
    if not trials:
        return "_no complete trial yet_"
    params = list(dict.fromkeys(k for t in trials for k in t["params"]))
    head = ["trial", *(["state", "last eval (kimg)"] if state else []), *metrics, *params, "run"]
    rows = [[str(t["number"]), *([t["state"], _fmt(t["last_step"] and t["last_step"] / 1000)]
                                 if state else []),
             *[_fmt((t["values"] or {}).get(m)) for m in metrics],
             *[_fmt(t["params"].get(k)) for k in params], t["run_id"] or ""] for t in trials]
    return pipe_table(head, rows)


def _fmt(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
