"""Non-square images (`data.image_size: [H, W]`, study 002's CelebA crops): the schema (a square
[S, S] is S, with S's run id), resize + centre crop of files and synthetic shapes to H x W, masks
split at H // 2, architecture size checks per side, and a 24x16 run end to end."""
from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from PIL import Image

from bench.cli import main
from bench.config.schema import DataConfig
from bench.config.suite import parse_suite
from bench.data import load_dataset
from bench.errors import BenchError
from bench.task import keep_mask

pytestmark = pytest.mark.usefixtures("one_thread")


def _raw(size, arch="unet_tiny", kwargs=None, task=None):
    raw = {"name": "ns", "data": {"dataset": "synthetic", "image_size": size, "num_images": 48},
           "budget": {"kimg": 0.032}, "train": {"batch_size": 16, "device": "cpu"},
           "eval": {"steps": 2, "grid": 4, "sample_batch": 4, "val_images": 8},
           "models": [{"arch": arch, "name": "m", "kwargs": kwargs or {"base_channels": 8}}], "seeds": [0]}
    if task:
        raw["task"] = task
    return raw


def test_image_size_takes_h_w_and_a_square_pair_is_the_square():
    assert DataConfig(image_size=[24, 16]).image_size == (24, 16)
    assert DataConfig(image_size=[16, 16]).image_size == 16
    square = parse_suite(_raw(16), "ns.yaml").runs[0]
    assert parse_suite(_raw([16, 16]), "ns.yaml").runs[0].run_id == square.run_id   # unchanged
    wide = parse_suite(_raw([24, 16]), "ns.yaml").runs[0]
    assert wide.data.image_size == (24, 16) and wide.run_id != square.run_id
    assert wide.config()["data"]["image_size"] == (24, 16)


@pytest.mark.parametrize("size, expect", [
    ([0, 16], "data.image_size[0]: 0 is out of range"),
    ([24, "x"], "data.image_size[1]: expected an integer"),
    ([24, 16, 8], "data.image_size: expected a list of 2 numbers"),
    ("big", "data.image_size: expected an integer"),
    ([24, 17], "models[0]: unet_tiny at data.image_size [24, 17]: unet: image_size [24, 17] is not "
               "divisible by its down-sampling factor 2"),
])
def test_bad_sizes_are_one_line_errors(size, expect):
    with pytest.raises(BenchError, match=re.escape(expect)) as err:
        parse_suite(_raw(size), "ns.yaml")
    assert "\n" not in str(err.value) and str(err.value).startswith("ns.yaml: ")


def test_architectures_check_each_side_and_dit_refuses_non_square():
    with pytest.raises(BenchError, match=re.escape("image_size [108, 88] is not divisible by its "
                                                   "down-sampling factor 8")):
        parse_suite(_raw([108, 88], "s002_unet", {"base_channels": 8}), "ns.yaml")
    spec = parse_suite(_raw([104, 88], "s002_unet", {"base_channels": 8}), "ns.yaml").runs[0]
    assert spec.params > 0
    with pytest.raises(BenchError, match="dit: square images only"):
        parse_suite(_raw([32, 16], "dit_s2", {"depth": 1}), "ns.yaml")


def test_files_and_shapes_are_resized_and_cropped_to_h_by_w(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "imgs").mkdir()
    im = Image.new("RGB", (40, 30), (0, 0, 255))            # W 40 x H 30: a red band at x in [0, 4)
    im.paste((255, 0, 0), (0, 0, 4, 30))
    for i in range(4):
        im.save(tmp_path / "imgs" / f"{i}.png")
    d = load_dataset(DataConfig(dataset="folder", root=str(tmp_path / "imgs"), image_size=(24, 16),
                                holdout=0.25))
    assert d.train.shape == (3, 3, 24, 16) and d.heldout.shape == (1, 3, 24, 16)
    # scale max(24/30, 16/40) = 0.8 -> 24 x 32, centre crop of the width 32 -> 16: the band is cut off
    assert d.train[0, 0].max() < 40 and d.train[0, 2].min() > 215
    assert "24x16px" in d.info["cache"]
    shapes = load_dataset(DataConfig(image_size=(24, 16), num_images=8, holdout=0.25))
    assert shapes.train.shape == (8, 3, 24, 16)
    square = load_dataset(DataConfig(image_size=16, num_images=8, holdout=0.25))
    assert torch.equal(shapes.train[:, :, 4:20], square.train)   # the centred 16 x 16 square


def test_masks_split_the_rows_at_h_over_2():
    keep = keep_mask("bottom_half", (24, 16))
    assert keep.shape == (1, 1, 24, 16) and keep[0, 0, :12].eq(1).all() and keep[0, 0, 12:].eq(0).all()
    right = keep_mask("right_half", (24, 16))
    assert right[0, 0, :, :8].eq(1).all() and right[0, 0, :, 8:].eq(0).all()
    assert int((keep_mask("center", (24, 16)) == 0).sum()) == 12 * 8
    assert torch.equal(keep_mask("bottom_half", 16), keep_mask("bottom_half", (16, 16)))


def test_a_24_by_16_inpainting_run_end_to_end(tmp_path):
    path = tmp_path / "ns.yaml"
    path.write_text(yaml.safe_dump(_raw([24, 16], task={"kind": "inpaint", "condition": "paste",
                                                        "loss_on": "hole"})))
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--no-progress",
                 "--no-tensorboard"]) == 0
    run = next(p for p in (tmp_path / "r" / "ns").iterdir() if (p / "result.json").is_file())
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "complete" and result["config"]["data"]["image_size"] == [24, 16]
    assert 0 < result["metrics"]["inpaint_psnr"] < 60 and result["metrics"]["gflops"] > 0
    with Image.open(run / "samples.png") as grid:                 # 2 x 2 grid, torchvision's 2-px pad
        assert grid.size == (2 * 16 + 3 * 2, 2 * 24 + 3 * 2)
    board = (tmp_path / "r" / "ns" / "leaderboard.md").read_text()
    assert "synthetic 24x16px" in board


def test_fid_features_of_an_h_by_w_image_are_those_of_its_299_square_resize():
    import torch.nn.functional as F

    from bench.metrics.inception import load_inception
    module, _ = load_inception()
    x = torch.randint(0, 256, (2, 3, 24, 16), generator=torch.Generator().manual_seed(0)).float() / 255
    with torch.no_grad():
        direct = module(x)[0].flatten(1)
        resized = module(F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False))[0].flatten(1)
    assert direct.shape == (2, 2048) and torch.allclose(direct, resized, atol=1e-5)


def test_inpaint_002_trains_their_crops_at_104_by_88():
    from pathlib import Path

    from bench.config.suite import load_suite
    suite = load_suite(Path(__file__).resolve().parent.parent / "suites" / "inpaint_002.yaml", ["seeds=[0]"])
    assert {r.data.image_size for r in suite.runs} == {(104, 88)}
    assert all(r.params > 1e6 for r in suite.runs)              # s002 builds at 104 x 88 (factor 8)
