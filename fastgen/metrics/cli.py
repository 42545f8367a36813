"""`fastgen eval CKPT`; the evaluator it runs, also the trainers', is fastgen.metrics.evaluator.

    fastgen eval runs/dcgan/checkpoints/ckpt_002000.pt --metrics fid,kid,is,pr,coverage \
        --n 10000 [--extractor digits|inception] [--data digits] [--out eval.json]

Generates n images with the checkpoint's EMA generator (a VAE: decoded prior samples), streams
them and the real images through the feature extractor, prints a table and writes a JSON
(metrics, settings, checkpoint hash). For a VAE checkpoint the metric "nll" adds the ELBO,
the k-sample importance-weighted NLL bound and bits/dim on the held-out split.
Reference ("real") images: the checkpoint's dataset (``--data`` overrides it), split
``--split`` (default "train", the set the generator was trained to match).

The table and the JSON name the extractor: numbers from the digits classifier are not
Inception numbers and are comparable only with other digits-classifier runs. The digits
classifier is refused for data that is not single-channel (it would grade RGB photographs
by how much they look like handwritten digits), and warned about on single-channel data
other than fastgen's "digits". Images are quantised to 8-bit levels before extraction, as
the reference implementations measure saved PNGs (``--no-quantize`` feeds the floats).
KID is printed x 10^-3 (the JSON keeps the plain value); the JSON records the KID subset
size actually used, which is smaller than ``--kid-subset-size`` when there are fewer rows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from pathlib import Path

import torch

from fastgen.metrics.evaluate import IS_SPLITS, METRICS
from fastgen.metrics.evaluator import (
    EXTRACTORS,
    VAE_METRICS,
    check_extractor_fits,
    describe_extractor,
    evaluate_models,
    generator_sampler,
    load_real,
    make_evaluator,
    make_extractor,
    split_metrics,
)
from fastgen.metrics.inception_score import check_sample_count
from fastgen.utils.checks import check_int
from fastgen.utils.devices import resolve_device

# the command, and the evaluator's names as they were importable from here before
__all__ = [
    "add_arguments", "format_table", "run", "check_extractor_fits", "describe_extractor",
    "evaluate_models", "generator_sampler", "make_evaluator", "make_extractor", "split_metrics",
]  # fmt: skip

# --- the command ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", metavar="CKPT", help="a checkpoint written by fastgen train, or a run folder"
    )
    parser.add_argument(
        "--checkpoint", dest="which", choices=["latest", "best"], default="latest",
        help="with a run folder: its newest checkpoint, or best (checkpoints/best.pt); "
        "default: latest",
    )  # fmt: skip
    parser.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated, from {','.join(METRICS + VAE_METRICS)} "
        "(default: fid,kid,is,pr,coverage; a VAE adds nll)",
    )
    parser.add_argument("--n", type=int, default=10_000, help="generated images (default 10000)")
    parser.add_argument(
        "--extractor",
        choices=EXTRACTORS,
        default="digits",
        help="digits (shipped; single-channel digit data only) or inception (local weights)",
    )
    parser.add_argument(
        "--inception-weights",
        default=None,
        help="local Inception-v3 state_dict (else $FASTGEN_INCEPTION_WEIGHTS); never downloaded",
    )
    parser.add_argument(
        "--c2st-input", choices=["features", "pixels"], default="features",
        help="what the c2st metric's classifier sees: the extractor's features or the pixels",
    )  # fmt: skip
    parser.add_argument("--data", default=None, help="reference images (default: the checkpoint's)")
    parser.add_argument("--split", default="train", choices=("train", "test", "all"))
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-size", type=int, default=10_000,
                        help="feature rows kept per set for KID and precision/recall")  # fmt: skip
    parser.add_argument("--kid-subsets", type=int, default=100)
    parser.add_argument("--kid-subset-size", type=int, default=1000)
    parser.add_argument("--pr-k", type=int, default=3, help="k of the k-NN manifolds")
    parser.add_argument("--iw-samples", type=int, default=64, help="k of the IWAE bound (nll)")
    parser.add_argument(
        "--no-quantize",
        dest="quantize",
        action="store_false",
        help="feed generated images as floats (default: rounded to 8-bit levels, as PNGs)",
    )
    parser.add_argument("--out", default=None, help="JSON to write (default: CKPT with .eval.json)")


KID_KEYS = ("kid", "kid_std", "kid_std_error")
C2ST_KEYS = ("c2st", "c2st_low", "c2st_high")


def format_table(results: dict) -> str:
    width = max(len(k) for k in results)
    lines = []
    for key, value in results.items():
        if isinstance(value, float) and key in KID_KEYS and math.isfinite(value):
            text = f"{value * 1e3:.6g} x 10^-3"  # the scale papers print KID at
        elif key == "c2st" and {"c2st_low", "c2st_high"} <= results.keys():
            low, high = results["c2st_low"], results["c2st_high"]
            text = f"{value:.4f} (95%: {low:.4f}..{high:.4f}; 0.5: cannot tell from real)"
        elif isinstance(value, float):
            text = f"{value:.6g}" if math.isfinite(value) else str(value)
        else:
            text = json.dumps(value) if isinstance(value, list) else str(value)
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)


def _write_json(path: Path, payload: dict) -> None:
    from fastgen.utils.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2) + "\n", fn="fastgen eval")


def run(args: argparse.Namespace) -> int:
    from fastgen.checkpoint_io import checkpoint_file
    from fastgen.models.loading import load_model

    args.checkpoint = checkpoint_file(args.checkpoint, args.which)
    check_int("fastgen eval", "n", args.n, minimum=2)  # statistics need two feature vectors
    device = resolve_device(args.device, "fastgen eval")
    loaded = load_model(args.checkpoint, device=device)
    models, is_vae = loaded.models, loaded.kind == "vae"
    metrics = args.metrics or ("fid,kid,is,pr,coverage" + (",nll" if is_vae else ""))
    sample_metrics, nll = split_metrics(metrics, "fastgen eval")
    if "is" in sample_metrics:
        check_sample_count(args.n, IS_SPLITS, "fastgen eval", "n")
    extractor = (
        make_extractor(args.extractor, inception_weights=args.inception_weights)
        if sample_metrics
        else None
    )
    data = args.data or loaded.config.data
    resolution, channels = loaded.model.resolution, loaded.model.channels
    if extractor is not None:
        check_extractor_fits(
            extractor, channels=channels, data=data, fn="fastgen eval", option="--extractor"
        )
    real = load_real(data, resolution, channels, args.split) if sample_metrics else None
    held_out = load_real(data, resolution, channels, "test").images if nll else None
    results = evaluate_models(
        models,
        real=real,
        held_out=held_out,
        metrics=metrics,
        extractor=extractor,
        n=args.n,
        batch_size=args.batch_size,
        device=device,
        seed=args.seed,
        sample_size=args.sample_size,
        iw_samples=args.iw_samples,
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
        pr_k=args.pr_k,
        quantize=args.quantize,
        c2st_input=args.c2st_input,
    )
    if extractor is not None:
        results = {"extractor": describe_extractor(extractor), **results}
    payload = {
        "checkpoint": str(args.checkpoint),
        "checkpoint_hash": loaded.hash,
        "model": "vae" if is_vae else "dcgan (ema generator)",
        "metrics": results,
        "settings": {
            "metrics": metrics,
            "n": args.n,
            "extractor": args.extractor if extractor is not None else None,
            "quantize": args.quantize if extractor is not None else None,
            "data": data,
            "split": args.split,
            "real_images": None if real is None else len(real),
            "seed": args.seed,
            "device": str(device),
            "kid_subsets": args.kid_subsets,
            # the size used (smaller than requested when there were fewer feature rows)
            "kid_subset_size": results.get("kid_subset_size", args.kid_subset_size),
            "kid_subset_size_requested": args.kid_subset_size,
            "pr_k": args.pr_k,
            "c2st_input": args.c2st_input,
            "iw_samples": args.iw_samples if nll else None,
        },
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
    }
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".eval.json")
    _write_json(out, payload)
    print(format_table(results))
    print(f"wrote {out}")
    return 0
