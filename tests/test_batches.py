"""bench.data.DeviceBatches (epochs without repeats, seeded and resumable order, horizontal flips)
and the one uint8 <-> float pair (bench.images)."""
from __future__ import annotations

import torch

from bench.data import DeviceBatches
from bench.images import to_float, to_uint8


def test_float_uint8_round_trip():
    u = torch.arange(256, dtype=torch.uint8)
    f = to_float(u)
    assert f[0] == -1 and f[-1] == 1 and f.dtype == torch.float32
    assert torch.equal(to_uint8(f), u)
    assert torch.equal(to_uint8(torch.tensor([-3.0, 3.0])), torch.tensor([0, 255], dtype=torch.uint8))


def _indexed_images(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 1, 2, 2).contiguous()


def _batches(seed: int, n=50, bs=8, count=7, flip=False):
    it = DeviceBatches(_indexed_images(n), bs, torch.Generator().manual_seed(seed), flip=flip)
    return it, [to_uint8(next(it))[:, 0, 0, 0].long() for _ in range(count)]


def test_device_batches_epoch_visits_every_image_once():
    it, batches = _batches(0)
    seen = torch.cat(batches)                                      # 56 draws over 50 images
    assert torch.equal(seen[:50].sort().values, torch.arange(50))
    assert len(set(seen[50:].tolist())) == 6                       # next epoch started, no repeats within it
    assert it.images_seen == 56 and all(len(b) == 8 for b in batches)


def test_device_batches_deterministic_and_resumable():
    _, a = _batches(3)
    _, b = _batches(3)
    _, c = _batches(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    it, _ = _batches(3, count=3, flip=True)
    state = it.state_dict()
    rest = [next(it) for _ in range(4)]
    fresh = DeviceBatches(_indexed_images(50), 8, torch.Generator().manual_seed(99), flip=True)
    fresh.load_state_dict(state)
    assert all(torch.equal(x, next(fresh)) for x in rest) and fresh.images_seen == 56


def test_device_batches_flip_about_half():
    img = torch.zeros(64, 1, 2, 4, dtype=torch.uint8)
    img[..., 2:] = 255                                             # dark left half, bright right half
    it = DeviceBatches(img, 64, torch.Generator().manual_seed(0), flip=True)
    flipped = torch.cat([next(it)[:, 0, 0, 0] > 0 for _ in range(40)]).float()
    assert 0.45 < flipped.mean() < 0.55
    it = DeviceBatches(img, 64, torch.Generator().manual_seed(0), flip=False)
    assert not (next(it)[:, 0, 0, 0] > 0).any()
