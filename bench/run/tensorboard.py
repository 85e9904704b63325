"""TensorBoard event files of a run's training curves: `<run>/tensorboard/events.out.tfevents.*`,
so `tensorboard --logdir results/<suite>` shows every run of a suite side by side.

What is written is the run's `history` (bench.train.loop): `train/loss` and `train/lr` at every log
point and `eval/<metric>` for every scalar of an in-training evaluation (validation loss and its
quarters, `fid_proxy`, ...), each at its training step. The writer is torch's
`torch.utils.tensorboard.SummaryWriter` (PyTorch's TensorBoard support); `tensorboard` itself is the
optional extra `pip install -e ".[tensorboard]"`, and without it no event file is written.

The folder is rewritten from the whole history at every evaluation and at the end, into a
`.bench-tmp-` folder moved into place (as every result file), so a resumed run's curves carry
exactly the history of its checkpoint: nothing is written twice and nothing is left half-written.
Used as the last hook of a run (`hook(phase, ctx)`, bench.metrics.hook), typed against `RunContext`
because it needs the run folder.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

from bench.run.context import RunContext
from bench.run.results import TEMP_PREFIX

try:  # tensorboard is an optional extra: torch.utils.tensorboard imports it
    from torch.utils.tensorboard import SummaryWriter
except ImportError:
    SummaryWriter = None

EVENTS_DIR = "tensorboard"
NOT_INSTALLED = ("tensorboard is not installed: no TensorBoard event files "
                 "(pip install -e \".[tensorboard]\" to have them)")
_TAGS = {"train_loss": "train/loss", "lr": "train/lr"}
_NOT_CURVES = ("step", "kimg")


def available() -> bool:
    return SummaryWriter is not None


def scalars(history: list[dict]) -> list[tuple[str, float, int]]:
    """(tag, value, step) of every finite scalar of every history point, in order."""
    rows = []
    for point in history:
        for key, value in point.items():
            if key in _NOT_CURVES or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                rows.append((_TAGS.get(key, f"eval/{key}"), float(value), int(point["step"])))
    return rows


def write_events(run_dir: Path, history: list[dict]) -> Path | None:
    """Rewrite `run_dir/tensorboard/` from `history`; None (nothing written) without tensorboard."""
    if not available():
        return None
    target, tmp = run_dir / EVENTS_DIR, run_dir / f"{TEMP_PREFIX}{EVENTS_DIR}"
    shutil.rmtree(tmp, ignore_errors=True)
    writer = SummaryWriter(log_dir=str(tmp))
    for tag, value, step in scalars(history):
        writer.add_scalar(tag, value, global_step=step)
    writer.close()
    old = run_dir / f"{TEMP_PREFIX}{EVENTS_DIR}-old"
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def events_hook(phase: str, ctx: RunContext) -> None:
    """The run's hook: after every evaluation (and at the end) the event files of its history."""
    if ctx.state is not None and ctx.run_dir is not None:
        write_events(Path(ctx.run_dir), ctx.state["history"])
