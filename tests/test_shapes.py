"""`data.shapes` (bench.data.synthetic): the count and size bounds, rotation and palette of the
synthetic shapes. Its defaults draw the very images of a suite without the key (same run id); the
bounds, the upright shapes and the contrast palette are honoured; bad values are refused before any
work."""
from __future__ import annotations

import pytest
import torch
import yaml

from bench.cli import main
from bench.config.schema import ShapesConfig
from bench.config.suite import load_suite
from bench.data.synthetic import SHAPES, _draw_params, draw_shapes

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


def _row_widths(image: torch.Tensor) -> list[int]:
    """Covered pixels per row of a light-on-dark image (rows the shape touches, top to bottom)."""
    widths = (image.float().mean(0) > 127.5).sum(1).tolist()
    return [w for w in widths if w]


def test_the_contrast_palette_puts_light_shapes_on_dark_backgrounds():
    plain = draw_shapes(256, 16, 0, shapes=ShapesConfig(max_count=1))
    light = draw_shapes(256, 16, 0, shapes=ShapesConfig(max_count=1, palette="contrast"))
    assert light[:, :, 0, 0].max() <= round(0.4 * 255)      # every corner is background: dark
    assert (light.amax((1, 2, 3)) >= round(0.6 * 255)).all()  # every image holds a light shape
    between = ((light > 0.4 * 255) & (light < 0.6 * 255)).float().mean()
    assert between < 0.06 < ((plain > 0.4 * 255) & (plain < 0.6 * 255)).float().mean()  # edges only


def test_upright_shapes_stand_level_and_apex_up():
    n, config = 96, ShapesConfig(max_count=1, min_radius=0.3, max_radius=0.4, palette="contrast")
    kinds = _draw_params(n, torch.Generator().manual_seed(0), 1, 0.3, 0.4)["kind"][:, 0]
    upright = draw_shapes(n, 32, 0, shapes=ShapesConfig(**{**vars(config), "rotate": False}))
    turned = draw_shapes(n, 32, 0, shapes=config)
    square, triangle = SHAPES.index("square"), SHAPES.index("triangle")
    for i in range(n):
        rows = _row_widths(upright[i])
        if kinds[i] == square:   # level: every inner row is the side's width
            assert max(rows[1:-1]) - min(rows[1:-1]) <= 1, rows
        elif kinds[i] == triangle:  # apex up: the rows widen downwards
            assert all(b >= a - 1 for a, b in zip(rows, rows[1:])) and rows[-1] >= rows[0] + 4, rows
    spread = [max(r[1:-1]) - min(r[1:-1]) for i in range(n) if kinds[i] == square
              for r in [_row_widths(turned[i])]]
    assert max(spread) > 3      # rotated squares are not level: the test above can fail


def test_the_key_at_its_default_keeps_the_run_id(tmp_path):
    plain, given = tmp_path / "a.yaml", tmp_path / "b.yaml"
    plain.write_text(yaml.safe_dump(SUITE))
    given.write_text(yaml.safe_dump({**SUITE, "data": {**SUITE["data"], "shapes": {}}}))
    assert load_suite(plain).runs[0].run_id == load_suite(given).runs[0].run_id
    changed = {**SUITE, "data": {**SUITE["data"], "shapes": {"max_count": 2}}}
    given.write_text(yaml.safe_dump(changed))
    assert load_suite(plain).runs[0].run_id != load_suite(given).runs[0].run_id
    two = load_suite(given).runs[0].run_id   # the later keys at their defaults: the same id
    spelled = {**changed["data"]["shapes"], "rotate": True, "palette": "uniform"}
    given.write_text(yaml.safe_dump({**SUITE, "data": {**SUITE["data"], "shapes": spelled}}))
    assert load_suite(given).runs[0].run_id == two
    given.write_text(yaml.safe_dump({**SUITE, "data": {**SUITE["data"], "shapes": {"rotate": False}}}))
    assert load_suite(given).runs[0].run_id not in (two, load_suite(plain).runs[0].run_id)


@pytest.mark.parametrize("shapes, data, message", [
    ({"max_count": 4}, {}, "data.shapes.max_count: 4 is out of range"),
    ({"min_radius": 0.4, "max_radius": 0.3}, {}, "min_radius <= max_radius"),
    ({"max_radius": 0.0}, {}, "data.shapes.max_radius: 0.0 is out of range"),
    ({}, {"dataset": "cifar10", "root": "x"}, "needs dataset synthetic"),
    ({"palette": "neon"}, {}, "data.shapes.palette"),
    ({"rotate": "no"}, {}, "data.shapes.rotate: expected true or false"),
])
def test_bad_shapes_are_one_line_errors(tmp_path, capsys, shapes, data, message):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**SUITE, "data": {**SUITE["data"], **data, "shapes": shapes}}))
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and message in err, err
    assert not (tmp_path / "r").exists()
