"""One-rank (or N-rank) NCCL smoke under torchrun: init the process group from torchrun's
environment, all-reduce a tensor on each rank's GPU, check the sum, print one JSON line.

    python -m torch.distributed.run --standalone --nproc_per_node 1 benchmarks/nccl_smoke.py
"""
from __future__ import annotations

import json
import os
import time

import torch
import torch.distributed as dist


def main() -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    dist.init_process_group("nccl")
    x = torch.full((1 << 20,), float(rank + 1), device="cuda")
    start = time.perf_counter()
    dist.all_reduce(x)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    expected = world * (world + 1) / 2
    ok = bool(torch.all(x == expected))
    print(json.dumps({"rank": rank, "world": world, "backend": dist.get_backend(), "ok": ok,
                      "all_reduce_seconds_4mb": seconds, "nccl": list(torch.cuda.nccl.version())}))
    dist.destroy_process_group()
    if not ok:
        raise SystemExit(f"all_reduce gave {x[0].item()}, expected {expected}")


if __name__ == "__main__":
    main()
