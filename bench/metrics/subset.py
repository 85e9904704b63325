"""Which images a held-out metric scores: the split (`eval.split`) and a seeded subset of it
(`eval.subset`, `eval.subset_seed`), the same images for every entry and seed of a suite.

Study 003's Table 1 scores the Test set; scoring `heldout[:256]` of a class-per-folder tree (sorted
paths) scored one or two classes. `random` draws N images uniformly without replacement (a seeded
permutation); `stratified` deals them out class by class (classes in a seeded order, images within
each class in a seeded order), so every class gets floor(N / K) or one more while its images last —
the sampling of scikit-learn's `StratifiedShuffleSplit` without its rounding corrections. The
selection depends only on (split size, N, rule, seed, labels), never on the run's seed.
"""
from __future__ import annotations

import torch

from bench.errors import BenchError

SPLITS = ("heldout", "test")
SUBSETS = ("random", "stratified")


def select(n_total: int, n: int, rule: str = "random", seed: int = 0,
           labels: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of min(n, n_total) images of a split of `n_total`, by `rule` (one of SUBSETS)."""
    if rule not in SUBSETS:
        raise BenchError(f"eval.subset: unknown rule {rule!r}; choose one of {', '.join(SUBSETS)}")
    gen = torch.Generator().manual_seed(seed)
    k = min(n, n_total)
    if rule == "random" or k == 0:
        return torch.randperm(n_total, generator=gen)[:k]
    if labels is None:
        raise BenchError("eval.subset: 'stratified' needs class labels; this dataset has none "
                         "(a folder with one sub-folder per class, or cifar10); use eval.subset: random")
    if len(labels) != n_total:
        raise BenchError(f"eval.subset: {len(labels)} labels for a split of {n_total} images")
    classes = labels.unique()
    classes = classes[torch.randperm(len(classes), generator=gen)]
    pools = []
    for c in classes.tolist():
        members = (labels == c).nonzero().flatten()
        pools.append(members[torch.randperm(len(members), generator=gen)])
    depth = max(len(p) for p in pools)
    dealt = [p[i] for i in range(depth) for p in pools if i < len(p)]   # one per class per round
    return torch.stack(dealt[:k])


def protocol(split: str, rule: str, seed: int, n: int, labels: torch.Tensor | None,
             picked: torch.Tensor, source: str) -> dict:
    """The record of one selection: split, rule, seed, N, and the classes the images span."""
    out = {"split": split, "source": source, "subset": rule, "subset_seed": seed, "n": len(picked),
           "requested_n": n}
    if labels is not None:
        out["classes_covered"] = int(labels[picked].unique().numel())
        out["classes_in_split"] = int(labels.unique().numel())
    return out
