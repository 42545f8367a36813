"""Which images a step trains on, and whether a dataset fits a config."""

from __future__ import annotations

import torch

from fastgen.train.rng import mix_seed


class BatchSampler:
    """The images of step s on rank r: a deterministic function of (seed, s, r).

    All ranks walk one sequence of per-epoch permutations (each seeded by (seed, epoch)) in
    global batches of ``batch_size * world_size``; rank r takes its slice of each.
    """

    def __init__(self, dataset, batch_size: int, seed: int, device, rank: int = 0, world: int = 1):
        # An ImageDataset held as uint8 (image folders) stays uint8 on the device, a quarter of
        # float32, and each batch is converted as the dataset converts its items.
        pixels = getattr(dataset, "pixels", None)
        images = pixels if pixels is not None else getattr(dataset, "images", None)
        if images is None:  # any (image, label) Dataset: stacked once (the datasets are small)
            items = [dataset[i] for i in range(len(dataset))]
            images = torch.stack([torch.as_tensor(item[0]) for item in items])
            labels = torch.tensor([int(item[1]) for item in items])
        else:
            labels = getattr(dataset, "labels", None)
        if len(images) == 0:
            raise ValueError("fastgen.train: the dataset is empty")
        dtype = torch.uint8 if pixels is not None else torch.float32
        self.storage = images.to(device=device, dtype=dtype)
        self.labels = None if labels is None else torch.as_tensor(labels).to(device)
        self.n, self.batch_size, self.seed = len(self.storage), batch_size, seed
        self.rank, self.world = rank, world
        self._perms: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0xDA7A))
            self._perms[epoch] = torch.randperm(self.n, generator=gen)
        return self._perms[epoch]

    def indices(self, step: int) -> torch.Tensor:
        global_batch = self.batch_size * self.world
        start = (step - 1) * global_batch + self.rank * self.batch_size
        positions = torch.arange(start, start + self.batch_size)
        epochs, offsets = positions // self.n, positions % self.n
        return torch.stack(
            [self._permutation(int(e))[int(o)] for e, o in zip(epochs.tolist(), offsets.tolist())]
        )

    def images(self, index: torch.Tensor) -> torch.Tensor:
        """Images ``index`` as float32 in [-1, 1] on the device."""
        index = index.to(self.storage.device)
        if self.storage.dtype == torch.uint8:
            from fastgen.data.dataset import pixels_to_unit_range

            return pixels_to_unit_range(self.storage[index])
        return self.storage[index]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(images [B, C, R, R] float32 in [-1, 1], labels [B] or None) of step `step`."""
        index = self.indices(step).to(self.storage.device)
        labels = None if self.labels is None else self.labels[index]
        return self.images(index), labels


def dataset_shape(dataset) -> tuple[int, int]:
    """(channels, resolution) of a dataset's images."""
    first = torch.as_tensor(dataset[0][0])
    if first.dim() != 3 or first.shape[1] != first.shape[2]:
        raise ValueError(
            f"fastgen.train: dataset images must be [C, R, R], got {tuple(first.shape)}"
        )
    return int(first.shape[0]), int(first.shape[1])


def check_dataset(config, dataset) -> int:
    """The channel count to build the models with; errors if the data does not fit config."""
    channels, resolution = dataset_shape(dataset)
    if resolution != config.resolution:
        raise ValueError(
            f"fastgen.train: config.resolution is {config.resolution} but the dataset's images are "
            f"{resolution}x{resolution} (load the data at resolution={config.resolution})"
        )
    if config.channels not in (None, channels):
        raise ValueError(
            f"fastgen.train: config.channels is {config.channels} but the dataset has {channels}"
        )
    return channels
