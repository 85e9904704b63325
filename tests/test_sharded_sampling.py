"""Per-image sampling noise (bench.noise) and sharded sampling (bench.dist): the same 64 samples,
bit for bit, from two batch sizes and from 1 and 2 gloo ranks (issue 12 item 4)."""
from __future__ import annotations

import dataclasses
import socket
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from architectures import create
from bench import dist
from bench.config.schema import EvalConfig
from bench.diffusion import Diffusion
from bench.metrics.quality import QualityHook
from bench.metrics.sampling import grid_noise, sample
from bench.metrics.ssim import reconstruction_metrics
from bench.noise import ImageNoise, image_seed

pytestmark = pytest.mark.usefixtures("one_thread")
DIFFUSION = Diffusion(timesteps=12, schedule="cosine")
SHAPE, N = (3, 8, 8), 64
CONFIGS = {"ddpm": EvalConfig(sampler="ddpm", steps=None, fid_seed=7),
           "ddim_eta": EvalConfig(sampler="ddim", steps=6, sampler_opts={"eta": 0.7}, fid_seed=7)}


def tiny_net() -> torch.nn.Module:
    """unet_tiny at 8 px with its zero-initialised output perturbed (else it predicts zeros)."""
    torch.manual_seed(0)
    model = create("unet_tiny", in_channels=3, out_channels=3, image_size=8)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model.eval()


def stream(model, cfg, batch: int) -> np.ndarray:
    """Images [0, N) of cfg's FID stream as the quality hook draws them (this rank's share gathered
    in index order on rank 0), as uint8 bytes: what FID scores."""
    hook = QualityHook(SimpleNamespace(eval=dataclasses.replace(cfg, sample_batch=batch)))
    ctx = SimpleNamespace(net_for_sampling=lambda n, offset: model, diffusion=DIFFUSION, shape=SHAPE,
                          amp="none", device=torch.device("cpu"), generated=lambda x, offset: x)
    parts = [(start, ((x + 1) * 127.5).round().to(torch.uint8).numpy().reshape(len(x), -1))
             for start, x in hook.sample_batches(ctx, N, None)]
    return dist.gather_ordered(parts)


def test_image_seeds_are_distinct_and_depend_on_seed_index_and_stream():
    seeds = {image_seed(s, i, k) for s in range(3) for i in range(200) for k in ("sample", "grid")}
    assert len(seeds) == 3 * 200 * 2 and all(0 <= s < 2**63 for s in seeds)
    assert image_seed(5, 9) == image_seed(5, 9)


def test_a_row_of_image_noise_does_not_depend_on_its_batch():
    whole = ImageNoise(3, range(10)).randn((10, *SHAPE))
    part = ImageNoise(3, range(4, 7)).randn((3, *SHAPE))
    assert torch.equal(whole[4:7], part) and not torch.equal(whole[0], whole[1])
    assert torch.equal(grid_noise(10, SHAPE, 3)[6:], grid_noise(4, SHAPE, 3, start=6))
    assert not torch.equal(grid_noise(1, SHAPE, 3), ImageNoise(3, [0]).randn((1, *SHAPE)))
    with pytest.raises(ValueError, match="batch of 2 for 3 images"):
        ImageNoise(0, range(3)).randn((2, *SHAPE))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_same_64_samples_from_two_batch_sizes_bit_for_bit(name):
    model = tiny_net()
    big, small = stream(model, CONFIGS[name], 64), stream(model, CONFIGS[name], 24)
    assert big.shape == (N, 3 * 8 * 8) and np.array_equal(big, small)
    assert len({row.tobytes() for row in big}) == N           # 64 different images
    direct = sample(model, DIFFUSION, CONFIGS[name], 5, SHAPE, seed=7, start=30)
    assert torch.equal(((direct + 1) * 127.5).round().to(torch.uint8).reshape(5, -1),
                       torch.from_numpy(big[30:35]))         # image i alone, from anywhere


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                             world_size=world)
    try:
        model = tiny_net()
        got = {name: stream(model, cfg, 24) for name, cfg in CONFIGS.items()}
        counts = dist.all_gather(len(list(dist.shard(list(range(0, N, 24))))))
        if rank == 0:
            np.savez(out, counts=np.array(counts), **got)
        else:
            assert all(v is None for v in got.values())      # only rank 0 holds the gathered set
    finally:
        tdist.destroy_process_group()


def test_the_same_64_samples_from_one_and_two_gloo_ranks(tmp_path):
    out = str(tmp_path / "two_ranks.npz")
    mp.start_processes(_rank_main, args=(2, _free_port(), out), nprocs=2, start_method="spawn",
                       join=True)
    model, got = tiny_net(), np.load(out)
    assert list(got["counts"]) == [2, 1]                     # batches 0, 48 on rank 0; 24 on rank 1
    for name, cfg in CONFIGS.items():
        assert np.array_equal(got[name], stream(model, cfg, 64)), name


def test_recon_noise_is_per_image_so_its_scores_do_not_depend_on_the_batch_size():
    model, diffusion = tiny_net(), Diffusion(timesteps=100, schedule="cosine")
    images = torch.randint(0, 256, (10, *SHAPE), generator=torch.Generator().manual_seed(2),
                           dtype=torch.uint8)
    a, b = (reconstruction_metrics(model, diffusion, images, [10, 60, 100], batch_size=size, ssim="torchmetrics",
                                   noise_seed=4) for size in (10, 3))
    flat = lambda table: [v for t in sorted(table) for v in table[t].values()]
    assert flat(a) == pytest.approx(flat(b), rel=1e-6) and a[60]["ssim_std"] > 0  # float32 sums only
    one = reconstruction_metrics(model, diffusion, images[7:8], [60], batch_size=1, ssim="torchmetrics",
                                 noise_seed=4)
    other = reconstruction_metrics(model, diffusion, images[7:8], [60], batch_size=1, ssim="torchmetrics",
                                   noise_seed=5)
    assert one != other                                      # the seed matters
