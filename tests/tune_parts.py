"""Shared by the `bench tune` tests: a tiny suite (a U-Net of width 8 on 8 px synthetic shapes, four
steps of 16 images), the learning-rate range they search, and the CLI call."""
from __future__ import annotations

from pathlib import Path

import yaml

from bench.cli import main

SUITE = {
    "data": {"dataset": "synthetic", "image_size": 8, "num_images": 64},
    "diffusion": {"timesteps": 50},
    "budget": {"kimg": 0.064},                    # 4 steps of 16 images
    "train": {"batch_size": 16, "lr": 1e-3, "ema_decay": 0.9, "device": "cpu"},
    "eval": {"every_kimg": 0.032, "steps": 3, "grid": 4, "sample_batch": 16, "val_images": 16,
             "val_t_per_image": 1},
    "models": [{"arch": "unet_tiny", "name": "tiny",
                "kwargs": {"base_channels": 8, "attention_resolutions": []}}],
}
LR = {"low": 1e-4, "high": 1e-2, "log": True}


def write_suite(tmp_path: Path, search: dict, **sections) -> Path:
    path = tmp_path / "tt.yaml"
    path.write_text(yaml.safe_dump({"name": "tt", **SUITE, **sections, "search": search}))
    return path


def tune_cli(path: Path, tmp_path: Path, *extra: str) -> int:
    return main(["tune", str(path), "--results", str(tmp_path / "results"), "--no-progress", *extra])
