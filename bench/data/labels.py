"""Class labels of an image folder: the class of a file is its class folder (the folder below
`train/` or `test/` when the tree is split by folders, else the top folder), as torchvision's
`ImageFolder`; class indices follow the sorted class names.
"""
from __future__ import annotations

import torch


def folder_labels(train: list[str], heldout: list[str], split_dirs: set[str]):
    """(train labels, held-out labels, class names) from each file's class folder (the folder below
    train/ or test/ when split by folders, else the top folder); None unless every file has one."""
    rels = train + heldout
    cut = [r.split("/")[1:] if r.split("/")[0].lower() in split_dirs else r.split("/")
           for r in rels]
    if not rels or any(len(parts) < 2 for parts in cut):
        return None
    names = [parts[0] for parts in cut]
    classes = sorted(set(names))
    lookup = {name: i for i, name in enumerate(classes)}
    index = torch.tensor([lookup[n] for n in names], dtype=torch.int64)
    return index[: len(train)], index[len(train):], classes
