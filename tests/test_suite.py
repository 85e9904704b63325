"""Suite loading: strict keys and types, teaching one-line errors (exit 2, nothing written), --set,
--dry-run, run ids."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.config.suite import load_suite
from bench.errors import BenchError

ROOT = Path(__file__).resolve().parent.parent

BASE = {
    "name": "t",
    "data": {"dataset": "synthetic", "image_size": 16, "num_images": 64},
    "budget": {"kimg": 0.1},
    "train": {"batch_size": 8, "device": "cpu"},
    "eval": {"sampler": "ddim", "steps": 5},
    "models": [{"arch": "unet_tiny", "name": "a"}, {"arch": "unet_tiny", "name": "b",
                                                    "kwargs": {"base_channels": 8}}],
    "seeds": [0, 1],
}


def write(tmp_path: Path, suite: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(suite))
    return path


def patched(**changes) -> dict:
    """BASE with `section.key` (or top-level) values replaced."""
    suite = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = suite
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        node[last] = value
    return suite


def test_valid_suite_plans_every_entry_and_seed(tmp_path):
    suite = load_suite(write(tmp_path, BASE))
    assert [(r.entry.name, r.seed) for r in suite.runs] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert suite.runs[0].params > suite.runs[2].params > 0
    assert suite.train.lr == 2e-4 and suite.budget.kimg == 0.1
    assert len({r.run_id for r in suite.runs}) == 4


BAD = [
    (dict(epochs=3), "epochs: unknown section 'epochs'"),
    (dict(train__learning_rate=1e-4), "train.learning_rate: unknown key 'learning_rate'"),
    (dict(train__lr="fast"), "train.lr: expected a number, got 'fast'"),
    (dict(train__batch_size=2.5), "train.batch_size: expected an integer"),
    (dict(train__lr_schedule="cosin"), "did you mean cosine"),
    (dict(data__dataset="cifar"), "data.dataset: unknown dataset 'cifar'"),
    (dict(diffusion__schedule="cosin"), "diffusion.schedule: unknown schedule 'cosin' (did you mean cosine"),
    (dict(eval__sampler="ddpx"), "eval.sampler: unknown sampler 'ddpx'"),
    (dict(eval__sampler_opts={"eta": "x"}), "eval.sampler_opts"),
    (dict(budget={"kimg": -1}), "budget.kimg: -1.0 is out of range; the documented range is [0.001, inf)"),
    (dict(budget={"kimg": 1, "steps": 5}), "give exactly one of kimg, steps, seconds"),
    (dict(models__0__arch="unet_tinny"), "unknown architecture 'unet_tinny' (did you mean unet_tiny"),
    (dict(models__0__kwargs={"nonsense": 1}), "models[0].kwargs: unet_tiny:"),
    (dict(data__image_size=17), "unet_tiny at data.image_size 17: unet: image_size 17 is not divisible"),
    (dict(seeds="many"), "seeds: expected a list of integers"),
    (dict(diffusion__timesteps=10), "diffusion.timesteps: 10 does not work with schedule 'linear'"),
    (dict(eval__metrics=["fid", "fidd"]), "eval.metrics: unknown metric 'fidd'"),
    (dict(eval__metric="fid"), "eval.metric: ranking by fid needs 'fid' in eval.metrics"),
    (dict(eval__recon_t=[0]), "eval.recon_t: 0 is out of range"),
    (dict(task={"kind": "inpaint"}, models__0__arch="s003_unet"), "inpaint needs an architecture"),
    (dict(models__0__match={"size": 3}), "models[0].match"),
]


@pytest.mark.parametrize("changes,message", BAD, ids=[m for _, m in BAD])
def test_bad_suite_is_refused_with_one_teaching_line(tmp_path, changes, message):
    path = write(tmp_path, patched(**changes))
    with pytest.raises(BenchError) as err:
        load_suite(path)
    text = str(err.value)
    assert message in text and "\n" not in text
    assert text.startswith(str(path))


def test_cli_error_is_one_line_exit_2_and_writes_nothing(tmp_path):
    path = write(tmp_path, patched(train__lr="fast"))
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "bench", "run", str(path), "--results", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"bench: error: {path}: train.lr: expected a number, got 'fast'"]
    assert "Traceback" not in proc.stderr and not out.exists()


def test_set_overrides_any_key_and_refuses_bad_ones(tmp_path):
    path = write(tmp_path, BASE)
    suite = load_suite(path, ["train.lr=1e-4", "models.1.kwargs.base_channels=24", "seeds=[3]"])
    assert suite.train.lr == 1e-4 and suite.seeds == (3,)
    assert suite.runs[1].entry.kwargs == {"base_channels": 24}
    with pytest.raises(BenchError, match=r"models\[1\]\.kwargs\.base_channels: unet_tiny at data.image_size 16: width 12"):
        load_suite(path, ["models.1.kwargs.base_channels=12"])
    with pytest.raises(BenchError, match="expected KEY=VALUE"):
        load_suite(path, ["train.lr"])
    with pytest.raises(BenchError, match="is not an index"):
        load_suite(path, ["models.7.kwargs.x=1"])
    with pytest.raises(BenchError, match="train.lrr: unknown key"):
        load_suite(path, ["train.lrr=1"])


def test_entry_overrides_resolve_per_entry(tmp_path):
    suite = patched(models__1__overrides={"diffusion": {"schedule": "cosine"}, "train": {"lr": 1e-3}})
    runs = load_suite(write(tmp_path, suite)).runs
    assert runs[0].diffusion.schedule == "linear" and runs[2].diffusion.schedule == "cosine"
    assert runs[2].train.lr == 1e-3 and runs[0].train.lr == 2e-4
    bad = patched(models__1__overrides={"trian": {"lr": 1}})
    with pytest.raises(BenchError, match=r"models\[1\].overrides.trian: unknown section"):
        load_suite(write(tmp_path, bad))


def test_run_id_is_a_hash_of_the_resolved_config(tmp_path):
    path = write(tmp_path, BASE)
    ids = [r.run_id for r in load_suite(path).runs]
    assert ids == [r.run_id for r in load_suite(path).runs]  # stable
    changed = [r.run_id for r in load_suite(path, ["train.lr=1e-3"]).runs]
    assert not set(ids) & set(changed)
    assert ids[0].startswith("a-s0-")


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntrain: {lr: [1, 2}\n")
    with pytest.raises(BenchError, match=r"not valid YAML \(line 2\)"):
        load_suite(path)


def test_dry_run_prints_resolved_suite_and_plan(tmp_path):
    path = write(tmp_path, BASE)
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "bench", "run", str(path), "--dry-run",
                           "--results", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "planned trainings (4):" in proc.stdout and "M params" in proc.stdout
    assert "planned evaluations (4):" in proc.stdout            # no variants: one per training
    assert yaml.safe_load(proc.stdout.split("\nplanned trainings")[0])["train"]["lr"] == 2e-4
    assert not out.exists()


def test_shipped_suites_validate():
    for path in sorted((ROOT / "suites").glob("*.yaml")):
        suite = load_suite(path, check_models=True)
        assert suite.runs, path
