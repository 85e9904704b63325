"""`python -m bench eval RUN_DIR [RUN_DIR ...]`: FID-vs-N and FID-vs-steps curves of finished runs,
without retraining (`bench.run.curves`): written into each run's result.json under `curves`, printed.

Under `torchrun --nproc_per_node N -m bench eval ...` every rank draws and scores its share of the
sampling batches (`bench.metrics.quality`), rank 0 computes the curves and writes them: the same
numbers as one process, since every image's noise is a function of (seed, index).

Everything is checked before any sampling starts: the folders are complete runs with a checkpoint,
the step counts fit every sampler and run, and the Inception weights are there.
"""
from __future__ import annotations

import time
from pathlib import Path

from bench import dist
from bench.data import DatasetMemo
from bench.device import resolve_device
from bench.errors import BenchError
from bench.metrics.inception import load_inception
from bench.run import distributed
from bench.run.curves import (
    CURVES,
    CurveSettings,
    RunCurves,
    check_settings,
    load_run,
    write_curves,
)


def add_parser(sub) -> None:
    ev = sub.add_parser("eval", help="FID vs N and FID vs sampling steps of finished runs")
    ev.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders: results/<suite>/<run_id>")
    ev.add_argument("--fid-n", type=int, nargs="+", default=[2048, 4096], metavar="N",
                    help="FID/KID at each N, prefixes of one set of max(N) samples (default 2048 4096)")
    ev.add_argument("--steps", type=int, nargs="+", default=None, metavar="K",
                    help="sampling steps of the FID-vs-steps curve (default: those of "
                         "10 20 50 100 up to T; ddpm always runs T)")
    ev.add_argument("--sampler", nargs="+", default=None, metavar="NAME",
                    help="samplers of the FID-vs-steps curve: ddim, respaced, ddpm, ... "
                         "(default: the run's eval.sampler)")
    ev.add_argument("--curve-n", type=int, default=None, metavar="N",
                    help="samples per point of the FID-vs-steps curve (default: max --fid-n)")
    ev.add_argument("--curves", nargs="+", default=list(CURVES), metavar="CURVE",
                    help="which curves: n, steps (default: both)")
    ev.add_argument("--raw", action="store_true", help="raw weights instead of the EMA")
    ev.add_argument("--seed", type=int, default=None,
                    help="sampling seed (default: the run's eval.fid_seed, so N = fid_n is the run's FID)")
    ev.add_argument("--png", type=int, default=0, metavar="N",
                    help="also write the first N samples of the FID-vs-N set as PNGs (RUN_DIR/curve_samples)")
    ev.add_argument("--device", default=None, help="auto, cpu, cuda[:N] (default: the run's train.device)")
    ev.set_defaults(func=run)


def run(args) -> int:
    distributed.start()   # under torchrun: every rank samples and scores its share (rank 0 writes)
    say = print if dist.is_main() else lambda *a, **k: None
    settings = CurveSettings(fid_n=tuple(args.fid_n), steps=tuple(args.steps) if args.steps else None,
                             samplers=tuple(args.sampler) if args.sampler else None,
                             curve_n=args.curve_n, curves=tuple(args.curves), raw=args.raw,
                             seed=args.seed, png=args.png, device=args.device)
    plans = []
    for run_dir in args.runs:
        _, spec = load_run(run_dir)
        pairs = check_settings(settings, spec)
        plans.append((Path(run_dir), spec, pairs, _device(settings.device, spec)))
    inceptions, datasets = {}, DatasetMemo()
    for _, spec, _, device in plans:   # no weights: refused before any sampling
        key = (spec.eval.inception_weights, str(device))
        if key not in inceptions:
            inceptions[key] = load_inception(*key)
    for run_dir, spec, pairs, device in plans:
        started = time.perf_counter()
        what = [f"FID vs N up to {max(settings.fid_n)}"] if "n" in settings.curves else []
        what += [f"{len(pairs)} (sampler, steps) points"] if "steps" in settings.curves else []
        say(f"{run_dir}: {' and '.join(what)} on {device} ...", flush=True)
        curves = RunCurves(run_dir, spec, settings, datasets(spec.data),
                           inceptions[(spec.eval.inception_weights, str(device))], device)
        new = curves.evaluate(pairs)
        if not dist.is_main():
            continue
        written = write_curves(run_dir, new)
        say(format_curves(run_dir, written, settings.curves))
        png = f"; {settings.png} PNGs in {run_dir / 'curve_samples'}" if settings.png else ""
        say(f"wrote {run_dir / 'result.json'} (curves) in {time.perf_counter() - started:.1f} s{png}\n")
    distributed.stop()
    return 0


def _device(given: str | None, spec):
    """--device, else the run's train.device; a missing GPU says how to evaluate on this machine."""
    try:
        return resolve_device(given or spec.train.device)
    except BenchError:
        source = "--device" if given else "the run's train.device"
        raise BenchError(f"eval: {source} {given or spec.train.device!r}: no CUDA device here; "
                         f"pass --device cpu (or auto)") from None


def format_curves(run_dir: Path, curves: dict, which=CURVES) -> str:
    """The run's curves as plain aligned tables (the whole merged curve, not only the new rows)."""
    lines, protocol = [str(run_dir)], curves.get("protocol", {})
    if "n" in which and curves.get("fid_vs_n"):
        p = protocol["fid_vs_n"]
        lines += [f"FID vs N: {p['sampler']}/{p['steps']} steps, {_common(p)}",
                  f"{'N':>8} {'FID':>10} {'KID x 1e3':>20}"]
        lines += [f"{r['n']:>8} {r['fid']:>10.3f} {r['kid_mean'] * 1e3:>11.3f} ± {r['kid_std'] * 1e3:<6.3f}"
                  for r in curves["fid_vs_n"]]
    if "steps" in which and curves.get("fid_vs_steps"):
        p = protocol["fid_vs_steps"]
        lines += [f"FID vs sampling steps: N={p['n_generated']}, {_common(p)}, img/s on {p['device']}",
                  f"{'sampler':>10} {'steps':>6} {'eta':>5} {'FID':>10} {'img/s':>10}"]
        lines += [f"{r['sampler']:>10} {r['steps']:>6} {r['eta']:>5g} {r['fid']:>10.3f} "
                  f"{r['sample_img_per_s']:>10.1f}" for r in curves["fid_vs_steps"]]
    return "\n".join(lines)


def _common(p: dict) -> str:
    return (f"{'EMA' if p['ema'] else 'raw'} weights, seed {p['sampling_seed']}, "
            f"reference {p['reference_split']}:{p['reference_n']}")
