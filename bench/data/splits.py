"""Held-out splits of the training images: a seeded hold-out fraction, and k-fold cross-validation.

Both keep groups whole when a `group_by` regex on the relative file path is set (the group is the
regex's first capture group, else its whole match; a path it does not match is its own group):
study 003's cross-validation (seeds/003 §3.3, §5) leaked near-duplicate photos of one fruit across
folds; `group_by: '^[^/]+'` keeps each class folder (one fruit filmed while rotating) on one side.

k-fold (`data.folds: {k, group_by}`; scikit-learn's `GroupKFold` is the model): the groups are
shuffled with `data.seed`, then dealt largest first to the fold with the fewest images so far (ties:
the lowest fold), so the k folds are disjoint, cover every training image, keep each group whole and
differ in size by at most one group. Run `fold` trains on the other k-1 folds and validates on it.
A dataset's own test split (CIFAR-10's test batch, `train/`+`test/` sub-folders) becomes its `test`.
"""
from __future__ import annotations

import dataclasses
import random
import re

import torch

from bench.errors import BenchError


def group_names(rels: list[str], group_by: str | None, key: str = "data.group_by") -> list[str]:
    """The group of each relative path: `group_by`'s first capture group, else its match, else itself."""
    try:
        pattern = re.compile(group_by) if group_by else None
    except re.error as e:
        raise BenchError(f"{key}: invalid regex {group_by!r}: {e}") from None
    names = []
    for rel in rels:
        m = pattern.search(rel) if pattern else None
        names.append(rel if m is None else (m.group(1) if m.re.groups and m.group(1) is not None
                                            else m.group(0)))
    return names


def holdout_split(rels: list[str], holdout: float, group_by: str | None, seed: int):
    """Seeded hold-out of ~`holdout` of the files, taking whole groups (one file = one group by default)."""
    groups: dict[str, list[str]] = {}
    for rel, name in zip(rels, group_names(rels, group_by)):
        groups.setdefault(name, []).append(rel)
    if holdout > 0 and len(groups) < 2:
        raise BenchError(f"data.group_by: {group_by!r} puts all {len(rels)} images in one group; "
                         "nothing can be held out")
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    target, held = round(holdout * len(rels)), set()
    for name in names[:-1]:                                   # the last group always trains
        if len(held) >= target:
            break
        held.update(groups[name])
    how = f", {len(groups)} groups by {group_by!r} kept whole" if group_by else ""
    split = f"seeded hold-out {len(held)}/{len(rels)} (holdout {holdout}, seed {seed}{how})"
    return [r for r in rels if r not in held], sorted(held), split


def assign_folds(groups: list[str], k: int, seed: int) -> list[int]:
    """The fold (0..k-1) of each item, whole groups at a time (see the module docstring)."""
    sizes: dict[str, int] = {}
    for name in groups:
        sizes[name] = sizes.get(name, 0) + 1
    if len(sizes) < k:
        raise BenchError(f"data.folds.k: {k} folds need at least {k} groups; the training images "
                         f"form {len(sizes)} (lower data.folds.k or change data.folds.group_by)")
    names = sorted(sizes)
    random.Random(seed).shuffle(names)
    names.sort(key=lambda n: -sizes[n])                       # stable: ties keep the seeded order
    load, fold_of = [0] * k, {}
    for name in names:
        fold = min(range(k), key=lambda f: (load[f], f))
        fold_of[name], load[fold] = fold, load[fold] + sizes[name]
    return [fold_of[name] for name in groups]


def fold_split(base, folds, seed: int):
    """`base` (a Dataset loaded without hold-out) -> the Dataset of fold `folds.fold`: the other
    folds train, that fold is the held-out split, the base's own test split (if any) is `test`."""
    if folds.fold is None or not 0 <= folds.fold < folds.k:
        raise BenchError(f"data.folds.fold: {folds.fold} is not a fold of k = {folds.k} (the suite's "
                         f"`folds:` axis sets it: all, or a list of indices 0..{folds.k - 1})")
    if folds.group_by and base.train_paths is None:
        raise BenchError(f"data.folds.group_by: dataset {base.name!r} has no file paths to group by; "
                         "only dataset 'folder' has them (else null: image by image)")
    n = len(base.train)
    names = group_names(base.train_paths, folds.group_by, "data.folds.group_by") if folds.group_by \
        else [str(i) for i in range(n)]
    assigned = torch.tensor(assign_folds(names, folds.k, seed))
    val = assigned == folds.fold
    how = f"{len(set(names))} groups by {folds.group_by!r} kept whole" if folds.group_by \
        else "image by image"
    info = {**base.info, "train": int((~val).sum()), "heldout": int(val.sum()), "heldout_is_test": False,
            "split": f"fold {folds.fold} of {folds.k}: {int(val.sum())}/{n} images ({how}, seed {seed})",
            "folds": {"k": folds.k, "fold": folds.fold, "group_by": folds.group_by,
                      "sizes": torch.bincount(assigned, minlength=folds.k).tolist()}}
    test, test_labels = base.test, base.test_labels
    if test is None and base.info.get("heldout_is_test") and len(base.heldout):
        test, test_labels = base.heldout, base.heldout_labels
        info["test"] = {"root": base.info.get("split", "the dataset's test split"), "images": len(test)}
    pick = lambda x, m: None if x is None else x[m]
    paths = None if base.train_paths is None else [p for p, v in zip(base.train_paths, val.tolist())
                                                    if not v]
    return dataclasses.replace(base, train=base.train[~val], heldout=base.train[val], info=info,
                               train_labels=pick(base.train_labels, ~val),
                               heldout_labels=pick(base.train_labels, val), test=test,
                               test_labels=test_labels, train_paths=paths)
