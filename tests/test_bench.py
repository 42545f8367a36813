"""`fastgen bench train`: its variants in processes of their own (the step, and `fastgen train`
itself with --main-job), the old in-process setting, the comparisons against the fastest stock
variant, and its argument errors. The end-to-end runs are tiny (16x16, width 4-8, a few
steps, one round, --threads 1): they check what is written, not how fast anything is."""

from __future__ import annotations

import csv

import pytest
import torch

from fastgen import bench, cli
from fastgen.utils import bench_report, process_timing
from fastgen.utils.step_timing import Variant

MACHINE_COLUMNS = ("threads", "device", "cpu_model", "cpu_capability", "avx512_bf16",
                   "fastgen_cpu_capability", "torch", "commit", "date")  # fmt: skip
TINY_DCGAN = ["--models", "dcgan", "--device", "cpu", "--resolution", "16", "--batch-size", "8",
              "--width", "8", "--latent-dim", "8", "--threads", "1"]  # fmt: skip


def read_rows(folder, pattern):
    (path,) = folder.glob(pattern)
    return path, list(csv.DictReader(path.open()))


def check_common_columns(row, *, timing, steps, rounds):
    assert (row["timing"], row["steps"], row["rounds"]) == (timing, str(steps), str(rounds))
    assert (row["resolution"], row["batch"], row["width"], row["threads"]) == ("16", "8", "8", "1")
    for column in MACHINE_COLUMNS:
        assert column in row and (row[column] or column == "fastgen_cpu_capability"), column
    assert row["avx512_bf16"] in ("yes", "no", "unknown")
    assert float(row["median_ms"]) > 0, row["error"]
    assert float(row["p20_ms"]) <= float(row["median_ms"]) <= float(row["p80_ms"])
    assert float(row["images_per_s"]) == pytest.approx(8e3 / float(row["median_ms"]), rel=1e-3)
    assert float(row["run_images_per_s"]) > 0


# --- end to end: one process per variant ---------------------------------------------------------


def test_each_variant_runs_in_a_process_of_its_own(tmp_path, capsys):
    argv = ["bench", "train", "--quick", *TINY_DCGAN, "--amp", "bf16", "--steps", "2",
            "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    path, rows = read_rows(tmp_path, "bench_train_cpu_*.csv")
    assert [(r["layers"], r["mode"], r["amp"]) for r in rows] == [
        ("fused", "eager", "bf16"), ("stock", "eager", "bf16"),
    ]  # fmt: skip
    for row in rows:
        check_common_columns(row, timing="processes", steps=2, rounds=1)
        assert float(row["cpu_median_ms"]) > 0 and row["fastest_stock"] == "stock/eager/bf16"
    stock = rows[1]
    assert stock["speedup_vs_stock_eager"] == stock["speedup_vs_fastest_stock"] == "1.000"
    assert "round 1/1 dcgan fused/eager/bf16" in out and str(path) in out
    (verdict,) = [line for line in out.splitlines() if line.startswith("dcgan: best fused")]
    assert "as fast as the fastest stock (stock/eager/bf16" in verdict


def test_main_job_times_fastgen_train_itself(tmp_path, capsys):
    argv = ["bench", "train", "--main-job", "--quick", *TINY_DCGAN, "--amp", "none",
            "--steps", "2", "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    _, rows = read_rows(tmp_path, "bench_main_job_cpu_*.csv")
    assert [(r["layers"], r["mode"], r["amp"]) for r in rows] == [
        ("fused", "eager", "none"), ("stock", "eager", "none"),
    ]  # fmt: skip
    for row in rows:
        check_common_columns(row, timing="main-job", steps=2, rounds=1)
        assert row["cpu_median_ms"] == "" and row["fastest_stock"] == "stock/eager/none"
    assert "fastgen train" in out and "dcgan: best fused" in out


# --- the old setting, in this process ------------------------------------------------------------


@pytest.fixture
def restore_threads():
    """--in-process --threads sets this process's torch threads: put them back afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


TINY = ["--models", "vae", "--device", "cpu", "--resolution", "16", "--batch-size", "8",
        "--width", "4", "--latent-dim", "4", "--layers", "stock", "--amp", "none",
        "--threads", "1"]  # fmt: skip


def test_in_process_mode_interleaves_every_variant(tmp_path, capsys, restore_threads):
    argv = ["bench", "train", "--in-process", "--models", "dcgan", "--device", "cpu",
            "--resolution", "16", "--batch-size", "8", "--width", "4", "--latent-dim", "4",
            "--steps", "3", "--warmup", "1", "--no-compile", "--amp", "none", "--threads", "1",
            "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    _, rows = read_rows(tmp_path, "bench_train_cpu_*.csv")
    assert [(r["model"], r["layers"], r["timing"], r["rounds"]) for r in rows] == [
        ("dcgan", "fused", "in-process", "1"), ("dcgan", "stock", "in-process", "1"),
    ]  # fmt: skip
    assert all(float(r["median_ms"]) > 0 and r["peak_mem_mb"] == "" for r in rows)
    assert all(r["speedup_vs_stock_eager"] == "1.000" for r in rows if r["layers"] == "stock")
    assert "images/s" in capsys.readouterr().out


def test_quick_mode_runs_a_few_eager_steps_and_says_they_are_few(tmp_path, capsys, restore_threads):
    assert (
        cli.main(["bench", "train", "--in-process", "--quick", *TINY, "--out", str(tmp_path)]) == 0
    )
    err = capsys.readouterr().err
    _, rows = read_rows(tmp_path, "bench_train_cpu_*.csv")
    assert [(r["mode"], r["steps"], r["warmup"]) for r in rows] == [("eager", "5", "1")]
    (warning,) = [line for line in err.splitlines() if "warning" in line]
    assert "only 5 timed steps (fewer than 10)" in warning and "rough" in warning


def test_a_busy_machine_is_reported_in_one_line(tmp_path, capsys, monkeypatch, restore_threads):
    monkeypatch.setattr(bench_report.os, "getloadavg", lambda: (999.0, 999.0, 999.0))
    argv = ["bench", "train", "--in-process", *TINY, "--steps", "10", "--warmup", "0",
            "--no-compile", "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert "busy (load average 999.0 above the" in warning and "timed steps" not in warning
    monkeypatch.setattr(bench_report.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert cli.main(argv) == 0
    assert "warning" not in capsys.readouterr().err


# --- the pieces, without processes --------------------------------------------------------------


def timed(model, layers, mode, amp, median_ms, batch=64):
    variant = Variant(model, layers, mode, None, batch, amp=amp)
    variant.times_ms = [median_ms * 0.9, median_ms, median_ms * 1.3]
    variant.cpu_ms = list(variant.times_ms)
    return variant


def test_each_fused_variant_is_compared_with_the_fastest_stock_one():
    variants = [
        timed("dcgan", "fused", "eager", "none", 70.0),
        timed("dcgan", "stock", "eager", "none", 100.0),
        timed("dcgan", "fused", "eager", "bf16", 50.0),
        timed("dcgan", "stock", "eager", "bf16", 60.0),
        timed("dcgan", "fused", "compile", "none", 65.0),
        timed("dcgan", "stock", "compile", "none", 80.0),
        Variant("dcgan", "stock", "compile", None, 64, amp="bf16", error="failed"),  # no time
        timed("vae", "fused", "eager", "none", 30.0),
        timed("vae", "stock", "eager", "none", 20.0),  # another model: its own fastest stock
    ]
    assert bench_report.fastest_stock(variants, "dcgan").name == "dcgan stock/eager/bf16"
    c = bench_report.compare(variants)
    assert c["dcgan fused/eager/bf16"].fastest_stock == "stock/eager/bf16"
    assert c["dcgan fused/eager/bf16"].vs_fastest_stock == pytest.approx(60 / 50)
    assert c["dcgan fused/eager/bf16"].vs_stock_eager == pytest.approx(60 / 50)  # same amp
    assert c["dcgan fused/eager/none"].vs_fastest_stock == pytest.approx(60 / 70)
    assert c["dcgan fused/eager/none"].vs_stock_eager == pytest.approx(100 / 70)
    assert c["dcgan fused/compile/none"].vs_stock_eager == pytest.approx(100 / 65)
    assert c["dcgan stock/compile/bf16"].vs_fastest_stock is None
    assert c["vae fused/eager/none"].vs_fastest_stock == pytest.approx(20 / 30)
    assert c["vae fused/eager/none"].fastest_stock == "stock/eager/none"
    dcgan, vae = bench_report.verdicts(variants)
    assert dcgan.startswith("dcgan: best fused (fused/eager/bf16, 50.0 ms/step) is 1.20x as fast")
    assert "(stock/eager/bf16, 60.0 ms/step): fused is faster" in dcgan
    assert "0.67x" in vae and vae.endswith("fused is not faster")
    only_fused = bench_report.verdicts([timed("vae", "fused", "eager", "none", 1.0)])
    assert only_fused == ["vae: no verdict (no stock variant ran)"]


def test_rounds_alternate_their_order_and_pool_every_round(monkeypatch):
    calls = []

    def fake_child(variant, setup, workdir, env):
        calls.append(variant.name)
        return {"times_ms": [float(len(calls))], "run_s": 0.5, "run_steps": 1}

    monkeypatch.setattr(bench, "_time_step_in_child", fake_child)
    variants = [Variant("dcgan", layers, "eager", None, 8) for layers in ("fused", "stock")]
    variants.append(Variant("vae", "fused", "eager", None, 8))
    args = cli.build_parser(["bench"]).parse_args(["bench", "train", "--rounds", "3"])
    bench.time_in_processes(variants, bench.setup_from(args), log=lambda line: None)
    a, b, c = (v.name for v in variants)
    assert calls == [a, b, c, c, b, a, a, b, c]
    assert variants[0].times_ms == [1.0, 6.0, 7.0] and variants[0].run_steps == 3
    assert variants[0].run_images_per_s == pytest.approx(8 * 3 / 1.5)


def test_the_main_job_command_is_one_fastgen_train_accepts():
    arguments = process_timing.train_arguments(
        "vae", layers="stock", mode="compile", amp="bf16", steps=200, warmup=20, out_dir="o",
        settings={"batch_size": 64, "width": 32, "latent_dim": None, "threads": 2},
    )  # fmt: skip
    args = cli.build_parser(arguments).parse_args(arguments)
    assert (args.model, args.steps, args.log_every, args.amp) == ("vae", 220, 10, "bf16")
    assert args.fused is False and args.compile is True and args.num_threads == 2
    assert (args.sample_every, args.checkpoint_every, args.quiet) == (0, 0, True)
    assert "--latent-dim" not in arguments  # None: the trainer's default
    assert process_timing.train_log_every(5) == 5 and process_timing.train_log_every(3) == 1


def test_step_times_come_from_the_log_rows_after_the_warm_up():
    rows = [{"step": 10, "time_s": 9.0}, {"step": 20, "time_s": 9.5, "loss": 1.0},
            {"step": 20, "eval": {"fid": 3.0}}, {"step": 30, "time_s": 10.5},
            {"step": 35, "time_s": 11.0}]  # fmt: skip
    per_step, seconds, steps = process_timing.log_step_times(rows, warmup=20)
    assert per_step == pytest.approx([100.0, 100.0]) and (seconds, steps) == (1.5, 15)
    with pytest.raises(ValueError, match="no training rows at step 25"):
        process_timing.log_step_times(rows, warmup=25)


def test_interleaving_visits_every_variant_each_round():
    calls = []
    variants = [bench.Variant("m", layers, "eager", (lambda n=layers: calls.append(n)), 1)
                for layers in ("fused", "stock")]  # fmt: skip
    broken = bench.Variant("m", "x", "eager", None, 1, error="skipped")
    bench.time_interleaved([*variants, broken], 3, torch.device("cpu"))
    assert calls == ["fused", "stock"] * 3
    assert all(len(v.times_ms) == 3 for v in variants) and broken.times_ms == []


def test_bench_times_the_training_tasks_step_with_its_amp(monkeypatch):
    # The bench's step is the trainer's: GANTask.step / VAETask.step under its Precision.
    from fastgen.train.gan import GANTask
    from fastgen.train.vae import VAETask

    calls = []
    for task in (GANTask, VAETask):

        def spy(self, *args, _step=task.step, **kwargs):
            calls.append((self.kind, self.precision.dtype))
            return _step(self, *args, **kwargs)

        monkeypatch.setattr(task, "step", spy)
    for model, amp in (("dcgan", "none"), ("vae", "bf16")):
        step = bench.training_step(
            model, fused=False, compiled=False, resolution=16, channels=1, batch=4, width=4,
            latent_dim=4, device=torch.device("cpu"), seed=0, amp=amp,
        )  # fmt: skip
        step()
    assert calls == [("dcgan", None), ("vae", torch.bfloat16)]


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--models", "resnet"], ["--models expected a subset of dcgan,vae"]),
        (["--amp", "none,fp8"], ["--amp expected a subset of none,bf16,fp16", "fp8"]),
        (["--rounds", "0"], ["--rounds expected >= 1, got 0"]),
        (["--main-job", "--warmup", "0"], ["--warmup expected >= 1 with --main-job, got 0"]),
        (["--main-job", "--in-process"], ["--main-job and --in-process exclude each other"]),
    ],
)
def test_bench_argument_errors(extra, needles, capsys):
    assert cli.main(["bench", "train", *extra]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("fastgen bench train: error: ")
    for needle in needles:
        assert needle in line, line


def test_its_model_defaults_are_fastgen_trains():
    """A user comparing `fastgen bench train` with `fastgen train dcgan` measures the same
    model: width, resolution and batch size default to the training config's, on any device."""
    import dataclasses

    from fastgen.cli import build_parser
    from fastgen.config import GANConfig, VAEConfig

    argv = ["bench", "train"]
    args = build_parser(argv).parse_args(argv)
    for config in (GANConfig, VAEConfig):
        defaults = {f.name: f.default for f in dataclasses.fields(config)}
        got = {"width": args.width, "resolution": args.resolution, "batch_size": args.batch_size}
        assert got == {name: defaults[name] for name in got}, config.__name__
