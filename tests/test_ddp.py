"""Data-parallel runs under torchrun with 2 gloo ranks on the CPU (issue 12 item 3): the run
completes, writes one result, spends exactly its budget, resumes after both ranks are killed; a
one-rank torchrun run is bit-identical to a plain run; the global-batch split's gradient is the
one-process gradient (bench.train.parallel); a checkpoint of another world size resumes with
restarted streams."""
from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
import yaml
from train_parts import BATCH_SIZE, parts

from bench import dist
from bench.config.schema import BudgetConfig, TrainConfig
from bench.errors import BenchError
from bench.run import distributed
from bench.train.loop import checkpoint_state, train
from bench.train.parallel import Split, sync_at, wrap

ROOT = Path(__file__).resolve().parent.parent
SUITE = {"name": "ddp", "data": {"dataset": "synthetic", "image_size": 8, "num_images": 64},
         "budget": {"kimg": 0.48},
         "train": {"batch_size": 8, "micro_batch": 2, "device": "cpu", "log_every": 2, "lr": 1e-3},
         "eval": {"steps": 2, "grid": 4, "sample_batch": 4, "val_images": 4, "every_kimg": 0.096},
         "models": [{"arch": "unet_tiny", "name": "tiny", "kwargs": {"base_channels": 8}}],
         "seeds": [0]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_suite(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump({**SUITE, **changes}))
    return path


def launcher(ranks: int) -> list[str]:
    """`torchrun --nproc_per_node ranks` on a free local port."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port())]


def command(suite: Path, results: Path, ranks: int | None) -> list[str]:
    """`torchrun --nproc_per_node ranks -m bench run ...`, or the plain `python -m bench run`."""
    bench = ["-m", "bench", "run", str(suite), "--results", str(results), "--no-progress",
             "--no-tensorboard"]
    return [sys.executable, *bench] if ranks is None else [*launcher(ranks), *bench]


def env(tmp_path: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            "BENCH_CACHE": str(tmp_path / "cache")}


def run(tmp_path, suite, results, ranks, timeout=240) -> subprocess.CompletedProcess:
    done = subprocess.run(command(suite, results, ranks), env=env(tmp_path), cwd=ROOT, timeout=timeout,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def one_run(results: Path) -> Path:
    runs = [p for p in (results / "ddp").iterdir() if p.is_dir() and p.name.startswith("tiny-")]
    assert len(runs) == 1, runs
    return runs[0]


def kill_after_first_checkpoint(tmp_path, suite, results) -> Path:
    """Start a 2-rank run and SIGKILL torchrun and both ranks once the first evaluation is saved."""
    proc = subprocess.Popen(command(suite, results, 2), env=env(tmp_path), cwd=ROOT,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    try:
        while not list(results.glob("ddp/tiny-*/samples/*.png")):
            assert proc.poll() is None and time.time() < deadline, "run ended before a checkpoint"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return one_run(results)


def test_two_ranks_spend_the_budget_write_one_result_and_resume_after_a_kill(tmp_path):
    suite, results = write_suite(tmp_path), tmp_path / "r"
    run_dir = kill_after_first_checkpoint(tmp_path, suite, results)
    killed = json.loads((run_dir / "result.json").read_text())
    assert killed["status"] == "running" and killed["budget"]["images"] < 480
    first_grid = sorted((run_dir / "samples").glob("*.png"))[0]
    inode = first_grid.stat().st_ino
    run(tmp_path, suite, results, 2)
    result = json.loads((one_run(results) / "result.json").read_text())
    assert result["status"] == "complete" and result["parallel"]["world_size"] == 2
    assert result["parallel"]["rank_batch"] == 4 and result["parallel"]["micro_batch"] == 2
    assert result["budget"]["images"] == 480 and result["budget"]["steps"] == 60
    assert first_grid.stat().st_ino == inode   # resumed: the evaluation before the kill is not redone
    assert [p["step"] for p in result["history"] if "val_loss" in p] == [12, 24, 36, 48, 60]
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["images"] == 480
    assert not torch.equal(ckpt["ranks"][0]["generator"], ckpt["ranks"][1]["generator"])
    assert torch.equal(ckpt["ranks"][0]["generator"], ckpt["generator"])
    assert list(results.rglob("result.json")) == [run_dir / "result.json"]   # one result, rank 0's
    assert not list(results.rglob(".bench-tmp-*"))


def test_a_seconds_budget_stops_every_rank_at_the_same_step(tmp_path):
    suite = write_suite(tmp_path, budget={"seconds": 1.5}, eval={**SUITE["eval"], "every_kimg": None})
    run(tmp_path, suite, tmp_path / "r", 2)     # a rank stopping alone would hang, then time out
    result = json.loads((one_run(tmp_path / "r") / "result.json").read_text())
    budget = result["budget"]
    assert result["status"] == "complete" and budget["images"] == 8 * budget["steps"] > 0
    assert 1.5 <= budget["train_seconds"] < 1.5 + 5 * budget["train_seconds"] / budget["steps"]


def test_one_rank_under_torchrun_is_the_plain_run_bit_for_bit(tmp_path):
    """World size 1: the same loss history, validation losses and final weights as `bench run`."""
    suite = write_suite(tmp_path, budget={"kimg": 0.096}, eval={**SUITE["eval"], "every_kimg": 0.048},
                        train={**SUITE["train"], "micro_batch": None})
    run(tmp_path, suite, tmp_path / "ddp", 1)
    run(tmp_path, suite, tmp_path / "plain", None)
    a, b = (json.loads((one_run(tmp_path / k) / "result.json").read_text()) for k in ("ddp", "plain"))
    assert a["run_id"] == b["run_id"] and a["parallel"]["world_size"] == 1
    assert b["parallel"] == {"world_size": 1, "backend": None, "rank_batch": 8, "micro_batch": None}
    assert a["history"] == b["history"] and len(a["history"]) == 8
    wa, wb = (torch.load(one_run(tmp_path / k) / "checkpoint.pt", weights_only=True)["ema"]
              for k in ("ddp", "plain"))
    assert all(torch.equal(wa[k], wb[k]) for k in wb)


def test_a_global_batch_that_does_not_split_over_the_ranks_is_refused(monkeypatch):
    from bench.config.suite import load_suite
    suite = load_suite(str(ROOT / "suites" / "smoke.yaml"), ["train.batch_size=33"])
    monkeypatch.setattr(dist, "world", lambda: 2)
    with pytest.raises(BenchError, match=r"smoke.yaml: tiny: train.batch_size: 33 does not split "
                                         r"over the 2 ranks .* choose a multiple of 2"):
        distributed.check(suite)
    monkeypatch.setattr(dist, "world", lambda: 3)
    distributed.check(load_suite(str(ROOT / "suites" / "smoke.yaml"), ["train.batch_size=33"]))


def test_split_shares_and_weights():
    shares = [Split(3, r).share(7) for r in range(3)]
    assert shares == [3, 2, 2] and [Split(4, r).share(2) for r in range(4)] == [1, 1, 0, 0]
    x = torch.arange(4.0)
    assert [(len(c), w) for c, w in Split(2, 0, micro=2).chunks(x, 8)] == [(2, 0.5), (2, 0.5)]
    assert [(len(c), w) for c, w in Split(4, 3).chunks(x, 2)] == [(1, 0.0)]   # empty share
    assert [(len(c), w) for c, w in Split(1, 0).chunks(x, 4)] == [(4, 1.0)]


NS = (1, 5, 8)   # an empty share on rank 1, unequal shares, equal ones (micro-batches of 2)


def _linear(n: int):
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1), torch.randn(n, 3, generator=torch.Generator().manual_seed(1))


def _grad_main(rank: int, world: int, port: int, out: str) -> None:
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                             world_size=world)
    try:
        grads = {}
        for n in NS:
            (model, x), split = _linear(n), Split.current(micro=2)
            share, start = split.share(n), sum(Split(world, r).share(n) for r in range(rank))
            net = wrap(model)
            chunks = split.chunks(x[start:start + share] if share else x[:1], n)  # any image, weight 0
            for i, (c, w) in enumerate(chunks):
                with sync_at(net, i == len(chunks) - 1):
                    (net(c).square().mean() * w).backward()
            grads[n] = [p.grad for p in model.parameters()]
        if rank == 0:
            torch.save(grads, out)
    finally:
        tdist.destroy_process_group()


def test_the_split_gradient_is_the_one_process_gradient(tmp_path):
    out = str(tmp_path / "grads.pt")
    mp.start_processes(_grad_main, args=(2, free_port(), out), nprocs=2, start_method="spawn")
    got = torch.load(out)
    for n in NS:
        model, x = _linear(n)
        model(x).square().mean().backward()
        for g, want in zip(got[n], [p.grad for p in model.parameters()]):
            torch.testing.assert_close(g, want, rtol=1e-6, atol=1e-7)


def _train(steps: int, **kw) -> dict:
    """test_train's tiny loop (train_parts), one process."""
    model, diffusion, batches, gen = parts(0)
    cfg = TrainConfig(batch_size=BATCH_SIZE, lr=1e-3, ema_decay=0.9, device="cpu", log_every=1)
    return train(model, diffusion, batches, cfg, BudgetConfig(steps=steps), generator=gen,
                 progress=False, **kw)


def _checkpoint_at_step_3() -> tuple[list[float], dict]:
    """The losses of an uninterrupted 6-step run and its checkpoint after step 3 (in memory)."""
    full, saved = _train(6)["losses"], {}

    def snapshot(state):
        state["last_eval_step"] = state["step"]
        if state["step"] == 3:
            saved["ckpt"] = copy.deepcopy(checkpoint_state(state))
    _train(6, every_kimg=0.024, on_eval=snapshot)
    return full, saved["ckpt"]


def test_a_checkpoint_of_another_world_size_resumes_with_restarted_streams(capsys):
    full, ckpt = _checkpoint_at_step_3()
    streams = {"generator": ckpt["generator"], "batches": ckpt["batches"]}
    one = _train(6, resume={**ckpt, "ranks": [streams], "world_size": 1})
    assert one["losses"] == full and capsys.readouterr().err == ""   # a 1-rank checkpoint: exact
    two = _train(6, resume={**ckpt, "ranks": [streams, streams], "world_size": 2})
    assert "resuming a 2-rank checkpoint on 1 ranks" in capsys.readouterr().err
    assert two["step"] == 6 and two["losses"][:3] == full[:3] and two["losses"][3:] != full[3:]
