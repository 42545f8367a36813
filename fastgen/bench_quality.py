"""`fastgen bench quality`: what quality each variant reaches, and how soon, over seeds.

    fastgen bench quality [--model dcgan|vae] [--variants fused,stock,fused-bf16,stock-bf16]
                          [--seeds 3]
                          [--steps 2000] [--eval-every 250] [--eval-n 1000]
                          [--metrics fid,kid,c2st] [--extractor digits] [--data digits]
                          [--limit N] [--threshold FID] [--quick] [--out benchmarks/results]

Each variant trains `fastgen train dcgan` (or `vae`, --model) on the same data, recipe and
seeds, every (variant, seed) in a process of its own (the seeds' rounds visit the variants in alternating order, so
a drift of the machine hits all alike), evaluating every --eval-every steps with the EMA
generator. Variants (the `fastgen train` options they add):

    fused          (fastgen's layers, the default)    stock          --no-fused
    fused-bf16     --amp bf16                         stock-bf16     --no-fused --amp bf16
    fused-compile  --compile                          stock-compile  --no-fused --compile
    ada            --ada                              ada-lecam      --ada --lecam W

(--limit N trains every variant on N images: the little-data comparison is
`--variants fused,ada,ada-lecam --limit 300`; ada and ada-lecam are DCGAN-only. With
--model vae, --metrics fid,kid,c2st,nll adds the ELBO and bits/dim on held-out images to each
row.) From each run's log.jsonl evaluation rows it
writes a CSV (variant, seed, step, training wall time without evaluations, images seen, every
metric, the evaluation's time, the extractor, the machine) and a PNG of FID against training
wall time (per variant: the mean over seeds, shaded from the lowest to the highest seed).

It prints, per variant, the best FID as mean +- std over seeds, the confidence risk (c2st)
(and a VAE's bits/dim) at each seed's best FID, and the training time to reach a threshold FID (--threshold; default
1.1x the worst variant's best mean FID, so every variant can reach it); then whether fused
and stock (and each pair of the same amp and compile) reach the same best FID within the
seed spread: |mean difference| <= sqrt(std_a^2 + std_b^2). --quick is a smoke run (fused and
stock, one seed, a few dozen steps at 16x16): a check that the command works, not a
measurement.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VARIANTS = {
    "fused": [], "stock": ["--no-fused"],
    "fused-bf16": ["--amp", "bf16"], "stock-bf16": ["--no-fused", "--amp", "bf16"],
    "fused-compile": ["--compile"], "stock-compile": ["--no-fused", "--compile"],
    "ada": ["--ada"], "ada-lecam": ["--ada", "--lecam", "{lecam}"],
}  # fmt: skip
QUICK = dict(
    variants="fused,stock", seeds=1, steps=24, eval_every=12, eval_n=100, resolution=16,
    width=8, batch_size=16,
)  # fmt: skip
DEFAULTS = dict(
    variants="fused,stock,fused-bf16,stock-bf16", seeds=3, steps=2000, eval_every=250,
    eval_n=1000, resolution=None, width=None, batch_size=None,
)  # fmt: skip
FN = "fastgen bench quality"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=["dcgan", "vae"], default="dcgan")
    parser.add_argument("--variants", default=None,
                        help=f"comma-separated, from {','.join(VARIANTS)}; default: "
                        f"{DEFAULTS['variants']}")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=None, help="seeds per variant (default 3)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are this, +1, ...")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 2000)")
    parser.add_argument("--eval-every", type=int, default=None, help="default 250")
    parser.add_argument("--eval-n", type=int, default=None,
                        help="generated images per evaluation (default 1000)")  # fmt: skip
    parser.add_argument("--metrics", default="fid,kid,c2st", help="must include fid")
    parser.add_argument("--extractor", choices=["digits", "inception"], default="digits")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--limit", type=int, default=0, help="train on N images (0: all)")
    parser.add_argument("--lecam-weight", type=float, default=0.01,
                        help="--lecam of the ada-lecam variant (default 0.01)")  # fmt: skip
    parser.add_argument("--threshold", type=float, default=None,
                        help="FID to time (default: 1.1x the worst variant's best mean FID)")  # fmt: skip
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: fused,stock, 1 seed, 24 steps at 16x16")  # fmt: skip
    parser.add_argument("--runs", default=None,
                        help="keep the runs' folders here (default: a temporary folder)")  # fmt: skip
    parser.add_argument("--out", default="benchmarks/results", help="folder for the CSV and PNG")


@dataclass
class Run:
    """One (variant, seed) training run and its evaluation rows."""

    variant: str
    seed: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""

    def fids(self) -> list[tuple[int, float, float]]:
        """(step, train_time_s, fid) of each evaluation."""
        return [
            (row["step"], row["train_time_s"], row["eval"]["fid"])
            for row in self.rows
            if math.isfinite(row["eval"].get("fid", math.nan))
        ]

    def best(self) -> dict[str, Any] | None:
        """The evaluation row with the least FID."""
        rows = [r for r in self.rows if math.isfinite(r["eval"].get("fid", math.nan))]
        return min(rows, key=lambda r: r["eval"]["fid"]) if rows else None

    def time_to(self, threshold: float) -> float | None:
        """Training seconds (no evaluations) to the first evaluation with FID <= threshold."""
        return next((t for _, t, fid in self.fids() if fid <= threshold), None)


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    base = QUICK if args.quick else DEFAULTS
    chosen = {key: getattr(args, key) if getattr(args, key) is not None else base[key]
              for key in base}  # fmt: skip
    names = [v.strip() for v in chosen["variants"].split(",") if v.strip()]
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names:
        raise ValueError(f"{FN}: --variants expected names from {','.join(VARIANTS)}, got "
                         f"{chosen['variants']!r}")  # fmt: skip
    chosen["variants"] = names
    gan_only = [v for v in names if v.startswith("ada")]
    if args.model == "vae" and gan_only:
        raise ValueError(f"{FN}: --variants {','.join(gan_only)} train a DCGAN, not --model vae")
    for key in ("seeds", "steps", "eval_every", "eval_n"):
        if chosen[key] < 1:
            raise ValueError(f"{FN}: --{key.replace('_', '-')} must be >= 1, got {chosen[key]}")
    if chosen["eval_every"] > chosen["steps"]:
        raise ValueError(f"{FN}: --eval-every {chosen['eval_every']} is more than --steps "
                         f"{chosen['steps']}: no evaluation would run")  # fmt: skip
    if "fid" not in [m.strip() for m in args.metrics.split(",")]:
        raise ValueError(f"{FN}: --metrics must include fid (the curves and thresholds are FID)")
    return chosen


def train_arguments(variant: str, seed: int, out: Path, setup: dict, args) -> list[str]:
    """The `fastgen train MODEL` command line of one run."""
    arguments = [
        "train", args.model, "--data", args.data, "--steps", str(setup["steps"]),
        "--eval-every", str(setup["eval_every"]), "--eval-n", str(setup["eval_n"]),
        "--eval-metrics", args.metrics, "--eval-extractor", args.extractor,
        "--seed", str(seed), "--out", str(out), "--quiet", "--sample-every", "0",
        "--checkpoint-every", "0", "--keep-checkpoints", "1", "--device", args.device,
        "--overwrite",  # the folder is the bench's own (--runs: a rerun replaces its runs)
    ]  # fmt: skip
    for key in ("resolution", "width", "batch_size"):
        if setup[key] is not None:
            arguments += ["--" + key.replace("_", "-"), str(setup[key])]
    if args.limit:
        arguments += ["--limit", str(args.limit)]
    if args.threads:
        arguments += ["--threads", str(args.threads)]
    return arguments + [a.format(lecam=args.lecam_weight) for a in VARIANTS[variant]]


def train_runs(setup: dict, args, workdir: Path, log) -> list[Run]:
    from fastgen.train.run_log import read_log
    from fastgen.utils.process_timing import child_env, round_order, run_child

    runs, env = [], child_env()
    seeds = [args.first_seed + i for i in range(setup["seeds"])]
    for index, seed in enumerate(seeds):
        for variant in round_order(setup["variants"], index):
            out = workdir / f"{variant}_seed{seed}"
            code, last = run_child(train_arguments(variant, seed, out, setup, args), env)
            run = Run(variant, seed)
            if code != 0:
                run.error = last or f"exit status {code}"
            else:
                run.rows = [r for r in read_log(out / "log.jsonl") if "eval" in r]
            runs.append(run)
            best = run.best()
            log(f"  {variant} seed {seed}: "
                + (f"error: {run.error}" if run.error else
                   f"best fid {best['eval']['fid']:.4g} at step {best['step']}" if best
                   else "no evaluation"))  # fmt: skip
    return runs


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[Run], variants: list[str], threshold: float | None) -> dict:
    """Per variant: best FID and c2st-at-best mean/std, time to the threshold; the threshold."""
    table: dict[str, dict[str, Any]] = {}
    for variant in variants:
        mine = [r for r in runs if r.variant == variant and r.best() is not None]
        bests = [r.best() for r in mine]
        fid = _mean_std([b["eval"]["fid"] for b in bests])
        c2st = _mean_std([b["eval"]["c2st"] for b in bests if "c2st" in b["eval"]])
        bits = _mean_std([b["eval"]["bits_per_dim_iw"] for b in bests
                          if "bits_per_dim_iw" in b["eval"]])  # fmt: skip
        table[variant] = {"runs": mine, "seeds": len(mine), "best_fid": fid, "c2st": c2st,
                          "bits_per_dim": bits}  # fmt: skip
    means = [v["best_fid"][0] for v in table.values() if v["seeds"]]
    if threshold is None:
        threshold = 1.1 * max(means) if means else math.nan
    for entry in table.values():
        times = [t for r in entry["runs"] if (t := r.time_to(threshold)) is not None]
        entry["time_to_threshold"] = _mean_std(times)
        entry["reached"] = len(times)
    return {"threshold": threshold, "variants": table}


def same_within_spread(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return abs(a[0] - b[0]) <= math.sqrt(a[1] ** 2 + b[1] ** 2)


def report_lines(summary: dict, extractor: str) -> list[str]:
    threshold, table = summary["threshold"], summary["variants"]
    lines = [f"best FID and training time to FID <= {threshold:.4g} ({extractor} features; "
             f"mean +- std over seeds):"]  # fmt: skip
    for name, entry in table.items():
        if not entry["seeds"]:
            lines.append(f"  {name:<14} no run finished")
            continue
        (fid, fid_std), (c2st, c2st_std) = entry["best_fid"], entry["c2st"]
        t, t_std = entry["time_to_threshold"]
        reached = f"{entry['reached']}/{entry['seeds']} seeds"
        lines.append(
            f"  {name:<14} best fid {fid:.4g} +- {fid_std:.2g}"
            + (f", c2st at best {c2st:.3f} +- {c2st_std:.2g}" if math.isfinite(c2st) else "")
            + (f", bits/dim at best {entry['bits_per_dim'][0]:.4g} +- "
               f"{entry['bits_per_dim'][1]:.2g}" if math.isfinite(entry["bits_per_dim"][0])
               else "")
            + (f", threshold after {t:.1f} +- {t_std:.1f} s ({reached})" if entry["reached"]
               else f", threshold not reached ({reached})")
        )  # fmt: skip
    for name in table:
        if not name.startswith("fused"):
            continue
        other = "stock" + name[len("fused") :]
        a, b = table[name], table.get(other)
        if b is None or not a["seeds"] or not b["seeds"]:
            continue
        same = same_within_spread(a["best_fid"], b["best_fid"])
        verdict = "the same" if same else "a different"
        line = f"{name} vs {other}: {verdict} best FID within the seed spread"
        ta, tb = a["time_to_threshold"][0], b["time_to_threshold"][0]
        if a["reached"] and b["reached"] and ta > 0:
            line += f"; {other} takes {tb / ta:.2f}x {name}'s training time to the threshold"
        lines.append(line)
    return lines


CSV_FIELDS = ["variant", "seed", "step", "images_seen", "train_time_s", "eval_time_s",
              "fid", "kid", "kid_std", "c2st", "c2st_low", "c2st_high", "elbo", "nll_iw",
              "bits_per_dim_elbo", "bits_per_dim_iw", "extractor", "error"]  # fmt: skip


def write_csv(path: Path, runs: list[Run], batch_size: int, fields: dict) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS + list(fields))
        writer.writeheader()
        for run in runs:
            base = {"variant": run.variant, "seed": run.seed, **fields}
            if run.error:
                writer.writerow({**base, "error": run.error})
            for row in run.rows:
                values = {k: row["eval"].get(k, "") for k in CSV_FIELDS if k in row["eval"]}
                writer.writerow({
                    **base, **values, "step": row["step"],
                    "images_seen": row["step"] * batch_size,
                    "train_time_s": row.get("train_time_s", ""),
                    "eval_time_s": row.get("eval_time_s", ""), "extractor": row.get("extractor", ""),
                })  # fmt: skip


def plot(path: Path, summary: dict, extractor: str) -> None:
    """FID against training wall time: per variant the mean over seeds at each evaluation
    step, shaded between the seeds' lowest and highest FID; the threshold dotted."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, entry in summary["variants"].items():
        by_step: dict[int, list[tuple[float, float]]] = {}
        for run in entry["runs"]:
            for step, seconds, fid in run.fids():
                by_step.setdefault(step, []).append((seconds, fid))
        if not by_step:
            continue
        steps = sorted(by_step)
        times = [statistics.fmean(s for s, _ in by_step[k]) for k in steps]
        fids = [[f for _, f in by_step[k]] for k in steps]
        (line,) = ax.plot(times, [statistics.fmean(f) for f in fids], marker="o", ms=3, label=name)
        ax.fill_between(times, [min(f) for f in fids], [max(f) for f in fids],
                        color=line.get_color(), alpha=0.2)  # fmt: skip
    if math.isfinite(summary["threshold"]):
        ax.axhline(summary["threshold"], ls=":", color="grey", label="threshold")
    ax.set_yscale("log")
    ax.set_xlabel("training wall time, evaluations excluded (s)")
    ax.set_ylabel(f"FID ({extractor} features)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    import torch

    from fastgen.utils.bench_report import machine_fields
    from fastgen.utils.devices import resolve_device

    setup = settings_from(args)
    device = resolve_device(args.device, FN)
    log = print
    log(f"{FN}: {args.model}, {', '.join(setup['variants'])} x {setup['seeds']} seed(s), {setup['steps']} "
        f"steps, eval every {setup['eval_every']} ({setup['eval_n']} images, {args.metrics}, "
        f"{args.extractor} features), data {args.data}"
        + (f" limited to {args.limit}" if args.limit else "")
        + (" (--quick: a smoke run, not a measurement)" if args.quick else ""))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fastgen-bench-quality-") as scratch:
        workdir = Path(args.runs) if args.runs else Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        runs = train_runs(setup, args, workdir, log)
    summary = summarise(runs, setup["variants"], args.threshold)
    for line in report_lines(summary, args.extractor):
        print(line)

    now = datetime.datetime.now(datetime.timezone.utc)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bench_quality_{device.type}_{now.strftime('%Y%m%dT%H%M%SZ')}"
    threads = args.threads or torch.get_num_threads()
    batch = setup["batch_size"] or 64  # fastgen train's default
    fields = {
        "model": args.model, "data": args.data, "limit": args.limit, "steps": setup["steps"],
        "eval_every": setup["eval_every"], "eval_n": setup["eval_n"], "batch_size": batch,
        "resolution": setup["resolution"] or 32, "width": setup["width"] or 32,
        "threshold": round(summary["threshold"], 6), **machine_fields(device, threads, now),
    }  # fmt: skip
    write_csv(stem.with_suffix(".csv"), runs, batch, fields)
    plot(stem.with_suffix(".png"), summary, args.extractor)
    log(f"wrote {stem.with_suffix('.csv')} and {stem.with_suffix('.png')}")
    failed = [r for r in runs if r.error]
    if failed:
        print(f"{FN}: {len(failed)} run(s) failed: " + json.dumps(
            {f"{r.variant} seed {r.seed}": r.error for r in failed}), file=sys.stderr)  # fmt: skip
    return 1 if len(failed) == len(runs) else 0
