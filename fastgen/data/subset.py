"""`--limit N`: training on little data, a fixed subset of N images.

With labels, the subset is class-balanced: N // K images of each of the K classes (the first
N % K classes one more), each class's drawn by a permutation seeded from `seed`; a class with
too few images gives all it has and the rest is drawn, seeded, from the other classes'
remaining images. Without labels it is the first N images. The subset keeps the dataset's
order, so the same (data, N, seed) is the same subset on every machine.
"""

from __future__ import annotations

import torch


def subset_indices(labels: torch.Tensor | None, n: int, total: int, seed: int) -> torch.Tensor:
    """The sorted indices of the subset of the module docstring."""
    if labels is None:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    classes = sorted(int(c) for c in torch.unique(labels))
    quota = {
        c: n // len(classes) + (1 if i < n % len(classes) else 0) for i, c in enumerate(classes)
    }
    chosen, spare = [], []
    for c in classes:
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        chosen.append(members[: quota[c]])
        spare.append(members[quota[c] :])
    picked = torch.cat(chosen)
    short = n - len(picked)
    if short > 0:  # a class had fewer images than its share
        rest = torch.cat(spare)
        picked = torch.cat([picked, rest[torch.randperm(len(rest), generator=generator)[:short]]])
    return picked.sort().values


def limit_dataset(dataset, n: int, seed: int, fn: str = "fastgen.data.limit_dataset"):
    """The subset of `n` images of `dataset` (see the module docstring); the dataset itself
    when n is 0. An ImageDataset gives an ImageDataset; another Dataset a
    torch.utils.data.Subset. More images than the dataset has is a ValueError."""
    if n == 0:
        return dataset
    total = len(dataset)
    if n > total:
        from fastgen.utils.errors import ArgumentError

        raise ArgumentError(fn, "limit", f"is {n} but the data has {total} images (0: all)")
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        labels = torch.as_tensor(labels)
    index = subset_indices(labels, n, total, seed)
    from fastgen.data.dataset import ImageDataset

    if isinstance(dataset, ImageDataset):
        images = dataset.pixels if dataset.pixels is not None else dataset.images
        return ImageDataset(
            images[index],
            None if dataset.labels is None else dataset.labels[index],
            name=dataset.name,
            num_classes=dataset.num_classes if dataset.labels is not None else None,
            class_names=dataset.class_names,
            unlabelled_reason=dataset.unlabelled_reason,
        )
    return torch.utils.data.Subset(dataset, index.tolist())
