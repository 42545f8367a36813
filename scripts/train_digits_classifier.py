"""Trains the digits classifier shipped as fastgen/assets/digits_classifier.pt.

    PYTHONPATH=$PWD python scripts/train_digits_classifier.py [--epochs 40] [--out PATH]

Data: fastgen.data.load_dataset("digits", split="train") (32x32, [-1, 1]); the held-out
accuracy is measured on split="test", printed, and should be copied into TEST_ACCURACY in
fastgen/metrics/digits_classifier.py. Seeded and single-threaded, so a rerun on the same
torch build gives the same weights.

Augmentation: random shifts of up to 3 pixels, small rotations/scales and pixel noise, so
the features respond to digit shape rather than exact placement (generated digits are
rarely centred like the scanned ones) and the classifier does not overfit 1,617 images.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from fastgen.data import load_dataset
from fastgen.metrics.digits_classifier import WEIGHTS, DigitsClassifier


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n = images.shape[0]
    angle = (torch.rand(n, generator=generator) - 0.5) * (2 * math.pi * 15 / 360 * 2)
    scale = 1 + (torch.rand(n, generator=generator) - 0.5) * 0.2
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * (2 * 3 / 16)  # +-3 px of 32
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # Pad with background (-1), not zeros (mid-grey).
    moved = F.grid_sample(images + 1, grid, align_corners=False, padding_mode="zeros") - 1
    noise = torch.randn(moved.shape, generator=generator) * 0.05
    return (moved + noise).clamp(-1, 1)


@torch.no_grad()
def accuracy(model: DigitsClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    _, logits = model(images)
    return float((logits.argmax(1) == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(args.seed)
    train = load_dataset("digits", split="train")
    test = load_dataset("digits", split="test")
    model = DigitsClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch
    )
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total = 0.0
        for start in range(0, len(train), args.batch_size):
            rows = order[start : start + args.batch_size]
            images = augment(train.images[rows], generator)
            _, logits = model(images)
            loss = F.cross_entropy(logits, train.labels[rows], label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * rows.numel()
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            print(
                f"epoch {epoch + 1:3d}  loss {total / len(train):.4f}  "
                f"train acc {accuracy(model, train.images, train.labels):.4f}  "
                f"test acc {accuracy(model, test.images, test.labels):.4f}"
            )
    model.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, args.out)
    test_accuracy = accuracy(model, test.images, test.labels)
    size_kb = args.out.stat().st_size / 1024
    print(f"saved {args.out} ({size_kb:.0f} KiB); held-out test accuracy {test_accuracy:.4f} "
          f"({round(test_accuracy * len(test))}/{len(test)})")  # fmt: skip


if __name__ == "__main__":
    main()
