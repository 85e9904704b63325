"""`data.shapes` (bench.data.synthetic): the count and size bounds of the synthetic shapes. Its
defaults draw the very images of a suite without the key (same run id); the bounds are honoured;
bad values are refused before any work."""
from __future__ import annotations

import pytest
import torch
import yaml

from bench.cli import main
from bench.config.schema import ShapesConfig
from bench.config.suite import load_suite
from bench.data.synthetic import draw_shapes

SUITE = {"name": "shapes", "data": {"dataset": "synthetic", "image_size": 16, "num_images": 16},
         "budget": {"kimg": 0.016}, "train": {"batch_size": 8, "device": "cpu"},
         "eval": {"val_images": 4}, "models": [{"arch": "unet_tiny"}], "seeds": [0]}


def _covered(images: torch.Tensor) -> float:
    """Mean fraction of pixels that differ from the image's corner (background) colour."""
    corner = images[:, :, :1, :1].int()
    return ((images.int() - corner).abs().sum(1) > 6).float().mean().item()


def test_the_defaults_draw_the_images_of_no_key():
    assert torch.equal(draw_shapes(64, 16, 3), draw_shapes(64, 16, 3, shapes=ShapesConfig()))


def test_larger_and_fewer_shapes_cover_what_their_bounds_say():
    small = draw_shapes(256, 32, 0, shapes=ShapesConfig(max_count=1, min_radius=0.1, max_radius=0.12))
    large = draw_shapes(256, 32, 0, shapes=ShapesConfig(max_count=1, min_radius=0.4, max_radius=0.42))
    # one shape of circumradius r covers between a triangle's and a circle's area: 1.3 r² .. π r²
    assert 1.2 * 0.1 ** 2 < _covered(small) < 3.3 * 0.12 ** 2
    assert _covered(large) > 5 * _covered(small)


def test_the_key_at_its_default_keeps_the_run_id(tmp_path):
    plain, given = tmp_path / "a.yaml", tmp_path / "b.yaml"
    plain.write_text(yaml.safe_dump(SUITE))
    given.write_text(yaml.safe_dump({**SUITE, "data": {**SUITE["data"], "shapes": {}}}))
    assert load_suite(plain).runs[0].run_id == load_suite(given).runs[0].run_id
    changed = {**SUITE, "data": {**SUITE["data"], "shapes": {"max_count": 2}}}
    given.write_text(yaml.safe_dump(changed))
    assert load_suite(plain).runs[0].run_id != load_suite(given).runs[0].run_id


@pytest.mark.parametrize("shapes, data, message", [
    ({"max_count": 4}, {}, "data.shapes.max_count: 4 is out of range"),
    ({"min_radius": 0.4, "max_radius": 0.3}, {}, "min_radius <= max_radius"),
    ({"max_radius": 0.0}, {}, "data.shapes.max_radius: 0.0 is out of range"),
    ({}, {"dataset": "cifar10", "root": "x"}, "needs dataset synthetic"),
])
def test_bad_shapes_are_one_line_errors(tmp_path, capsys, shapes, data, message):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**SUITE, "data": {**SUITE["data"], **data, "shapes": shapes}}))
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and message in err, err
    assert not (tmp_path / "r").exists()
