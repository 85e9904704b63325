"""`--executor local|slurm` (submitit): one job per pending run on the shared results folder, the
leaderboard by whoever finishes last, a resubmission that skips what is done; a real one-node Slurm
(`.ci/slurm_up.sh`) runs a two-run tiny suite, or the test skips with the daemons' own error;
`--slurm` keys and values are checked before any work."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_workers import ROOT, bench_env, check_folder, tiny_suite

from bench.cli import main, parser
from bench.cli.scale import RunJob


def run_jobs(tmp_path: Path, path: Path, *flags: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "bench", "run", str(path), "--results",
                           str(tmp_path / "r"), "--no-tensorboard", *flags], cwd=ROOT,
                          env=bench_env(tmp_path), capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def check_jobs(tmp_path: Path, path: Path, executor: list[str]) -> None:
    out = tmp_path / "r" / "jobs"
    log = run_jobs(tmp_path, path, *executor)
    assert "submitted 2 " in log and log.count(" done") == 2, log
    assert "leaderboard written" in log and "leaderboard: " in log, log  # by the last job too
    results = check_folder(out, runs=2, images=32)
    assert {r["run_id"] for r in results.values()} == set(results)
    logs = sorted((out / "submitit").glob("*_log.out"))
    assert len(logs) == 2 and all("unet_tiny, seed" in p.read_text() for p in logs)
    again = run_jobs(tmp_path, path, *executor)
    assert "nothing to submit" in again and "submitted" not in again   # done runs are skipped


def test_local_executor_runs_one_job_per_run(tmp_path):
    check_jobs(tmp_path, tiny_suite(tmp_path, "jobs", archs=1, kimg=0.032), ["--executor", "local"])


def _slurm_up() -> str | None:
    """None when a Slurm node is idle (starting one with .ci/slurm_up.sh), else why not."""
    if not shutil.which("sinfo") and not Path("/usr/bin/sinfo").exists():
        return "Slurm is not installed (apt-get install slurm-wlm munge)"
    up = subprocess.run([str(ROOT / ".ci" / "slurm_up.sh")], capture_output=True, text=True,
                        timeout=120)
    if up.returncode:
        return "one-node Slurm did not start: " + " | ".join((up.stdout + up.stderr).split("\n")[-6:])
    return None


def test_slurm_executor_runs_a_two_run_suite_on_a_one_node_slurm(tmp_path):
    reason = _slurm_up()
    if reason:
        pytest.skip(reason)
    check_jobs(tmp_path, tiny_suite(tmp_path, "jobs", archs=1, kimg=0.032),
               ["--executor", "slurm", "--slurm", "time=20,cpus_per_task=1,array_parallelism=2"])
    script = next((tmp_path / "r" / "jobs" / "submitit").glob("*_submission.sh")).read_text()
    assert "#SBATCH --time=20" in script and "#SBATCH --array=0-1%2" in script


@pytest.mark.parametrize("flags, message", [
    (["--executor", "slurm", "--slurm", "partitio=gpu"],
     "--slurm: unknown key 'partitio'; choose from partition, time, gpus_per_node"),
    (["--executor", "slurm", "--slurm", "time=soon"], "--slurm: time: 'soon' is not a positive"),
    (["--executor", "slurm", "--slurm", "gpus_per_node=0"], "--slurm: gpus_per_node: '0'"),
    (["--executor", "slurm", "--slurm", "partition"], "--slurm: partition: '' is not a positive"),
    (["--slurm", "time=5"], "--slurm time=5: only with --executor slurm"),
])
def test_bad_slurm_options_are_one_line_errors_before_any_work(tmp_path, capsys, flags, message):
    path = tiny_suite(tmp_path, "bad")
    assert main(["run", str(path), "--results", str(tmp_path / "r"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_resubmitting_after_a_lost_job_resumes_its_run(tmp_path):
    """A job killed part-way (its claim left behind, its partial result and checkpoint kept):
    the next submission sends only that run and it resumes from its checkpoint."""
    path = tiny_suite(tmp_path, "jobs", archs=1, kimg=0.032)
    out = tmp_path / "r" / "jobs"
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--no-progress",
                 "--no-tensorboard"]) == 0
    done = sorted(out.glob("*/result.json"))
    partial = json.loads(done[0].read_text())
    history = [p for p in partial["history"] if p["step"] <= 4]
    partial.update(status="running", history=history)
    done[0].write_text(json.dumps(partial))
    (done[0].parent / ".claim").write_text(json.dumps({"pid": 4_000_000, "host": "elsewhere"}))
    log = run_jobs(tmp_path, path, "--executor", "local")
    assert "submitted 1 local job(s) for 1 pending run(s)" in log, log
    job_log = next((out / "submitit").glob("*_log.out")).read_text()
    assert "took over the stale claim of PID 4000000 on elsewhere" in job_log, job_log
    check_folder(out, runs=2, images=32)


def test_a_preempted_job_requeues_itself_with_the_same_run():
    """submitit calls `checkpoint` on preemption or timeout and resubmits what it returns."""
    args = parser().parse_args(["run", "suites/smoke.yaml", "--set", "budget.kimg=1",
                                "--executor", "slurm", "--no-tensorboard"])
    job = RunJob(args)
    again = job.checkpoint("tiny-s0-abc")
    assert again.function is job and again.args == ("tiny-s0-abc",)
    assert (job.suite, job.sets, job.tensorboard) == ("suites/smoke.yaml", ["budget.kimg=1"], False)
