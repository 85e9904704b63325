"""eval.variants at the config level: planning, run ids that ignore variants, errors."""
from __future__ import annotations

import copy

import pytest

from bench.config.suite import parse_suite
from bench.errors import BenchError

BASE = {
    "name": "v",
    "data": {"dataset": "synthetic", "image_size": 16, "num_images": 64},
    "budget": {"kimg": 0.1},
    "train": {"batch_size": 8, "device": "cpu"},
    "eval": {"sampler": "ddpm", "steps": None, "sampler_opts": {"variance": "fixed_large"}},
    "models": [{"arch": "unet_tiny", "name": "a"}],
    "seeds": [0, 1],
}
TWO = [{"name": "beta", "sampler": "ddpm", "sampler_opts": {"variance": "fixed_large"}},
       {"name": "short", "sampler": "ddim", "steps": 5, "sampler_opts": {}}]


def suite(variants=None, **eval_keys):
    raw = copy.deepcopy(BASE)
    raw["eval"].update(eval_keys)
    if variants is not None:
        raw["eval"]["variants"] = variants
    return parse_suite(raw, "v.yaml")


def test_each_run_is_evaluated_once_per_variant_under_its_own_eval_section():
    s = suite(TWO)
    assert len(s.runs) == 2 and len(s.evaluations) == 4
    assert [(e.label, e.train.seed) for e in s.evaluations] == [
        ("a@beta", 0), ("a@short", 0), ("a@beta", 1), ("a@short", 1)]
    short = s.evaluations[1]
    assert short.spec.eval.sampler == "ddim" and short.spec.eval.steps == 5
    assert s.evaluations[0].spec.eval.sampler_opts == {"variance": "fixed_large"}
    assert short.spec.eval.sampler_opts == {} and short.spec.eval.metric == "val_loss"
    assert short.spec.eval.variants == [] and short.train is s.runs[0]
    assert short.eval_id.startswith(s.runs[0].run_id + "@short-")


def test_adding_a_variant_keeps_the_run_ids_and_the_other_evaluations():
    two, three = suite(TWO), suite(TWO + [{"name": "tiny", "sampler": "ddim", "steps": 2, "sampler_opts": {}}])
    assert [r.run_id for r in two.runs] == [r.run_id for r in three.runs] == [r.run_id for r in suite().runs]
    assert {e.eval_id for e in two.evaluations} < {e.eval_id for e in three.evaluations}
    changed = suite([TWO[0], {**TWO[1], "steps": 4}])               # a changed variant: a new folder
    assert changed.evaluations[1].eval_id != two.evaluations[1].eval_id


def test_no_variants_means_one_evaluation_per_run_in_the_run_folder():
    s = suite()
    assert [e.eval_id for e in s.evaluations] == [r.run_id for r in s.runs]
    assert [e.label for e in s.evaluations] == ["a", "a"]


@pytest.mark.parametrize("variants,message", [
    ({"name": "x"}, "eval.variants: expected a list"),
    ([{"sampler": "ddim"}], r"eval.variants\[0\]: expected a mapping with a `name:`"),
    ([{"name": "a b"}], r"eval.variants\[0\].name: expected letters"),
    ([{"name": "x"}, {"name": "x"}], "variant name 'x' is used twice"),
    ([{"name": "x", "every_kimg": 1}], r"eval.variants\[0\].every_kimg: unknown variant key"),
    ([{"name": "x", "sampler": "dpm"}], r"eval.sampler: unknown sampler 'dpm'"),
    ([{"name": "x", "steps": "ten"}], r"eval.variants\[0\].steps: expected an integer"),
    ([{"name": "x", "sampler_opts": {"variance": "huge"}}], "variance"),
    ([{"name": "y", "sampler": "ddim", "steps": 5}], r"\(eval.variants\[0\] y\): eval.sampler_opts: unknown ddim"),
])
def test_bad_variants_are_refused_with_the_key(variants, message):
    with pytest.raises(BenchError, match=message):
        suite(variants)
