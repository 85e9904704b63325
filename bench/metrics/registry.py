"""The one metric table: every metric a run records or the report derives, with its label, unit,
direction, the producer that records it, where it lives and how it is displayed.

Everything that needs a metric fact reads it here: suite checks (`bench.config.checks`: which names
`eval.metric` may rank by and what `eval.metrics` must then contain), the tuner (`bench.tune.space`:
objectives and the pruning metric), the quality hook (`bench.metrics.quality`: the `eval.metrics`
choices) and the report (`bench.report`: columns, directions, labels, display precision).

A metric's `producer` is what makes a run record it: `always` (every run: losses, cost counts,
throughput), one of the `eval.metrics` choices (`PRODUCERS`), `fid_proxy` (`eval.fid_proxy_n > 0`)
or `inpaint` (`task.kind: inpaint`). Its `source` says where it lives: `run` (a scalar in
result.json `metrics`), `report` (derived by the report from a run's tables: SSIM/PSNR averaged over
the t grid) or `history` (only in the in-training evaluation points of result.json `history`).
Display precision (`digits`) is the number of significant digits shown when no spread over seeds
is known; with a spread the report rounds to what the spread supports (`bench.report.numbers`).
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.errors import BenchError, choices_error

ALWAYS = "always"
# The closed set a suite's `eval.metrics` picks from (papers: bench.metrics.quality).
PRODUCERS = {"fid": "Fréchet Inception distance", "kid": "kernel Inception distance (mean ± std)",
             "pr": "precision and recall (k-NN manifolds)", "recon": "SSIM/PSNR of one-step x̂0 vs t",
             "roundtrip": "SSIM/PSNR of DDIM encode->decode vs t",
             "classify": "class histogram of samples by a harness-trained classifier"}
PRODUCER_NOTES = {ALWAYS: "every run", "fid_proxy": "eval.fid_proxy_n > 0",
                  "inpaint": "task.kind: inpaint", **{k: f"eval.metrics: [{k}]" for k in PRODUCERS}}


@dataclass(frozen=True)
class Metric:
    name: str
    label: str                        # column heading / axis label
    direction: str = "minimize"       # minimize | maximize
    producer: str = ALWAYS            # always | a PRODUCERS key | fid_proxy | inpaint
    source: str = "run"               # run (result.json metrics) | report (derived) | history
    group: str = "quality"            # quality | loss | cost | reference | other (which tables show it)
    unit: str = ""                    # shown after the label: dB, MB, img/s...
    scale: float = 1.0                # display scale (parameters in millions)
    digits: int = 3                   # significant digits without a spread over seeds
    rankable: bool = True             # a leaderboard may rank by it / a study may optimise it
    in_training: bool = False         # in every in-training evaluation point (can prune on it)

    @property
    def heading(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label


def _losses() -> list[Metric]:
    quarters = {1: " (low t or σ)", 4: " (high t or σ)"}   # edm: quartiles of its training σ
    return [Metric("val_loss", "val loss", group="loss", in_training=True),
            *[Metric(f"val_loss_q{q}", f"val loss q{q}{quarters.get(q, '')}", group="loss",
                     in_training=True) for q in range(1, 5)],
            Metric("final_train_loss", "train loss", group="loss"),
            Metric("train_loss", "train loss", group="loss", source="history", rankable=False)]


def _costs() -> list[Metric]:
    return [Metric("params", "params", group="cost", unit="M", scale=1e-6),
            Metric("gflops", "GFLOPs", group="cost"),
            Metric("train_img_per_s", "train img/s", "maximize", group="cost"),
            Metric("sample_img_per_s", "sample img/s", "maximize", group="cost"),
            Metric("peak_mem_train_mb", "peak mem train", group="cost", unit="MB", rankable=False),
            Metric("peak_mem_sample_mb", "peak mem sample", group="cost", unit="MB",
                   rankable=False),
            Metric("sample_seconds", "sample batch time", group="other", unit="s", rankable=False),
            # train.early_stop (bench.run.stopping): the budget allowed, where it stopped, the best
            *[Metric(n, lab, group="cost", unit="kimg", rankable=False) for n, lab in (
                ("budget_kimg", "budget"), ("stopped_at_kimg", "stopped at"),
                ("best_kimg", "best at"))]]


def _quality() -> list[Metric]:
    up = "maximize"
    return [Metric("fid", "FID", producer="fid"),
            Metric("kid_mean", "KID", producer="kid"),
            Metric("kid_std", "KID std over subsets", producer="kid", group="other", rankable=False),
            Metric("precision", "precision", up, producer="pr"),
            Metric("recall", "recall", up, producer="pr"),
            Metric("ssim", "SSIM, avg over t", up, producer="recon", source="report"),
            Metric("psnr", "PSNR, avg over t", up, producer="recon", source="report", unit="dB"),
            Metric("ssim_mean", "SSIM, mean over t", up, producer="recon", group="other"),
            Metric("psnr_mean", "PSNR, mean over t", up, producer="recon", group="other",
                   unit="dB"),
            Metric("roundtrip_ssim_mean", "round-trip SSIM", up, producer="roundtrip",
                   group="other"),
            Metric("roundtrip_psnr_mean", "round-trip PSNR", up, producer="roundtrip",
                   group="other", unit="dB"),
            Metric("inpaint_psnr", "inpaint PSNR", up, producer="inpaint", unit="dB"),
            # study 001's classifier check (bench.metrics.classify; evalproto, issue 14)
            Metric("classify_entropy", "class entropy", up, producer="classify", unit="nats"),
            Metric("classify_kl_uniform", "class KL to uniform", producer="classify", unit="nats"),
            Metric("classify_confidence", "classifier confidence", up, producer="classify",
                   group="other"),
            # eval.untrained_reference: the same network at initialisation, the same protocol
            Metric("untrained_fid", "FID untrained", producer="fid", group="reference",
                   rankable=False),
            Metric("untrained_kid_mean", "KID untrained", producer="kid", group="reference",
                   rankable=False),
            Metric("fid_proxy", "FID proxy", producer="fid_proxy", source="history",
                   rankable=False, in_training=True)]


METRICS: dict[str, Metric] = {m.name: m for m in (*_quality(), *_losses(), *_costs())}
# The Pareto cost axis of the report: the first of these a group has wins.
PARETO_COSTS = ("train_img_per_s", "gflops", "params")
# The leaderboard's columns after the ranking metric, in this order.
BOARD = ("fid", "kid_mean", "precision", "recall", "ssim", "psnr", "val_loss")


def get(name: str, where: str = "metric") -> Metric:
    """The metric called `name`; a BenchError naming the known metrics otherwise."""
    if name not in METRICS:
        raise choices_error(where, "metric", name, METRICS)
    return METRICS[name]


def direction(name: str) -> str:
    """The registered direction of `name` (`minimize` for a column the table does not know)."""
    return METRICS[name].direction if name in METRICS else "minimize"


def label(name: str) -> str:
    """Column heading of `name` (its unit in brackets); the bare name for unknown columns."""
    return METRICS[name].heading if name in METRICS else name


def names(*, group: str | None = None, source: str | None = None) -> list[str]:
    """Registered names (table order), optionally of one group and/or one source."""
    return [m.name for m in METRICS.values()
            if (group is None or m.group == group) and (source is None or m.source == source)]


def producers_on(metrics, fid_proxy: bool = False, task_kind: str = "unconditional") -> set[str]:
    """The producers active for a run with these `eval.metrics`, proxy flag and task kind."""
    active = {ALWAYS, *metrics}
    if fid_proxy:
        active.add("fid_proxy")
    if task_kind == "inpaint":
        active.add("inpaint")
    return active


def recorded(eval_cfg, task_kind: str = "unconditional") -> list[str]:
    """Rankable scalars a run with this eval section records in result.json `metrics`."""
    active = producers_on(eval_cfg.metrics, eval_cfg.fid_proxy_n > 0, task_kind)
    return [m.name for m in METRICS.values()
            if m.source == "run" and m.rankable and m.producer in active]


def in_training(eval_cfg) -> list[str]:
    """Metrics every in-training evaluation point of a run with this eval section carries."""
    active = producers_on(eval_cfg.metrics, eval_cfg.fid_proxy_n > 0)
    return [m.name for m in METRICS.values() if m.in_training and m.producer in active]


def check_recorded(name, eval_cfg, task_kind: str, where: str, verb: str = "ranking by",
                   when: str = "recorded") -> str:
    """`name` if a run with this eval section records it (`when`: recorded | in_training), else a
    one-line BenchError at `where` that says why and lists the valid choices."""
    valid = recorded(eval_cfg, task_kind) if when == "recorded" else in_training(eval_cfg)
    if isinstance(name, str) and name in valid:
        return name
    if not isinstance(name, str) or name not in METRICS:
        raise choices_error(where, "metric", name, valid)
    m, got = METRICS[name], list(eval_cfg.metrics) or "none"
    if when == "in_training" and not m.in_training:
        why = f"is impossible: {name} is measured only at the end of a run"
    elif m.source == "report":
        why = f"is impossible: {name} is derived by the report; a run records {name}_mean"
    elif when == "recorded" and (not m.rankable or m.source != "run"):
        why = f"is impossible: {name} is not a rankable result.json metric"
    elif m.producer in PRODUCERS:
        why = f"needs '{m.producer}' in eval.metrics (got {got})"
    else:
        why = f"needs {PRODUCER_NOTES[m.producer]}"
    raise BenchError(f"{where}: {verb} {name} {why}; choose from "
                     f"{', '.join(valid)}")
