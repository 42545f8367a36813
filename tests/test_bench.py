"""`fastgen bench train` on a tiny configuration: it runs, interleaves and writes its CSV."""

from __future__ import annotations

import csv

import pytest
import torch

pytest.importorskip("fastgen.models")
pytest.importorskip("fastgen.train")
cli = pytest.importorskip("fastgen.cli")

from fastgen import bench  # noqa: E402


def test_bench_train_writes_csv(tmp_path, capsys):
    argv = ["bench", "train", "--models", "dcgan,vae", "--device", "cpu", "--resolution", "16",
            "--batch-size", "8", "--width", "8", "--latent-dim", "8", "--steps", "3",
            "--warmup", "1", "--no-compile", "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    (path,) = tmp_path.glob("bench_train_cpu_*.csv")
    rows = list(csv.DictReader(path.open()))
    assert [(r["model"], r["layers"], r["mode"]) for r in rows] == [
        ("dcgan", "fused", "eager"), ("dcgan", "stock", "eager"),
        ("vae", "fused", "eager"), ("vae", "stock", "eager"),
    ]  # fmt: skip
    for row in rows:
        assert row["torch"] and row["commit"] and row["date"] and row["device"]
        if row["error"]:  # e.g. a fused op that has not landed: reported, not fatal
            assert row["median_ms"] == ""
            continue
        assert float(row["median_ms"]) > 0
        assert float(row["images_per_s"]) == pytest.approx(
            8e3 / float(row["median_ms"]), rel=1e-3, abs=0.06
        )
        assert row["peak_mem_mb"] == ""  # CPU: no allocator peak counter
    stock = [r for r in rows if r["layers"] == "stock"]
    assert all(r["speedup_vs_stock_eager"] == "1.000" for r in stock)
    assert "images/s" in out and str(path) in out


def test_bench_argument_errors(capsys):
    assert cli.main(["bench", "train", "--models", "resnet"]) == 2
    assert "--models expected a subset of dcgan,vae" in capsys.readouterr().err


def test_interleaving_visits_every_variant_each_round():
    calls = []
    variants = [bench.Variant("m", layers, "eager", (lambda n=layers: calls.append(n)), 1)
                for layers in ("fused", "stock")]  # fmt: skip
    broken = bench.Variant("m", "x", "eager", None, 1, error="skipped")
    bench.time_interleaved([*variants, broken], 3, torch.device("cpu"))
    assert calls == ["fused", "stock"] * 3
    assert all(len(v.times_ms) == 3 for v in variants) and broken.times_ms == []
