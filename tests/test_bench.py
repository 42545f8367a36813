"""`fastgen bench train` on a tiny configuration: it runs, interleaves and writes its CSV."""

from __future__ import annotations

import csv

import pytest
import torch

from fastgen import bench, cli


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


TINY = ["--models", "vae", "--device", "cpu", "--resolution", "16", "--batch-size", "8",
        "--width", "4", "--latent-dim", "4", "--layers", "stock"]  # fmt: skip


def test_quick_mode_runs_a_few_eager_steps_and_says_they_are_few(tmp_path, capsys):
    assert cli.main(["bench", "train", "--quick", *TINY, "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    (path,) = tmp_path.glob("bench_train_cpu_*.csv")
    rows = list(csv.DictReader(path.open()))
    assert [(r["mode"], r["steps"]) for r in rows] == [("eager", "5")]  # no compile variants
    (warning,) = [line for line in err.splitlines() if "warning" in line]
    assert "only 5 timed steps (fewer than 10)" in warning and "rough" in warning


def test_a_busy_machine_is_reported_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (999.0, 999.0, 999.0))
    argv = ["bench", "train", *TINY, "--steps", "10", "--warmup", "0", "--no-compile",
            "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert "busy (load average 999.0 above the" in warning and "timed steps" not in warning
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert cli.main(argv) == 0
    assert "warning" not in capsys.readouterr().err


def test_bench_times_the_training_tasks_step(monkeypatch):
    # The bench's step is the trainer's: GANTask.step / VAETask.step, nothing of its own.
    from fastgen.train.gan import GANTask
    from fastgen.train.vae import VAETask

    calls = []
    for task in (GANTask, VAETask):

        def spy(self, *args, _step=task.step, **kwargs):
            calls.append(self.kind)
            return _step(self, *args, **kwargs)

        monkeypatch.setattr(task, "step", spy)
    for model in ("dcgan", "vae"):
        step = bench.training_step(
            model, fused=False, compiled=False, resolution=16, channels=1, batch=4, width=4,
            latent_dim=4, device=torch.device("cpu"), seed=0,
        )  # fmt: skip
        step()
    assert calls == ["dcgan", "vae"]
