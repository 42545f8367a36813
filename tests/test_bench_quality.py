"""`fastgen bench quality`: --quick end to end (fused and stock, each `fastgen train` in a
process of its own), what it writes and prints, the summary's arithmetic, argument errors."""

from __future__ import annotations

import csv
import math

import pytest

from fastgen import bench_quality, cli
from fastgen.bench_quality import Run, report_lines, same_within_spread, summarise


def test_quick_runs_fused_and_stock_and_writes_csv_and_plot(tmp_path, capsys):
    argv = ["bench", "quality", "--quick", "--steps", "4", "--eval-every", "2", "--eval-n", "32",
            "--metrics", "fid,c2st", "--threads", "1", "--device", "cpu", "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    (table,) = tmp_path.glob("bench_quality_cpu_*.csv")
    assert table.with_suffix(".png").is_file()
    rows = list(csv.DictReader(table.open()))
    assert {(r["variant"], r["seed"], r["step"]) for r in rows} == {
        (v, "0", s) for v in ("fused", "stock") for s in ("2", "4")
    }
    for row in rows:
        assert not row["error"] and float(row["fid"]) > 0 and 0 <= float(row["c2st"]) <= 1
        assert float(row["train_time_s"]) > 0 and float(row["eval_time_s"]) > 0
        assert row["images_seen"] == str(int(row["step"]) * 16) and row["extractor"]
        assert row["cpu_model"] and row["commit"] is not None
    assert "fused vs stock:" in out and "best fid" in out and "smoke run" in out


def scripted_run(variant, seed, fids, seconds=10.0):
    rows = [
        {"step": 10 * (i + 1), "train_time_s": seconds * (i + 1), "eval": {"fid": f, "c2st": 0.8}}
        for i, f in enumerate(fids)
    ]
    return Run(variant, seed, rows)


def test_summary_threshold_time_and_spread():
    runs = [
        scripted_run("fused", 0, [9.0, 4.0, 5.0]), scripted_run("fused", 1, [8.0, 6.0, 3.0]),
        scripted_run("stock", 0, [9.0, 7.0, 5.0], 20.0), scripted_run("stock", 1, [9.0, 6.0, 5.0], 20.0),
    ]  # fmt: skip
    summary = summarise(runs, ["fused", "stock"], None)
    assert summary["threshold"] == pytest.approx(1.1 * 5.0)
    fused, stock = summary["variants"]["fused"], summary["variants"]["stock"]
    assert fused["best_fid"] == (3.5, pytest.approx(math.sqrt(0.5)))
    assert fused["time_to_threshold"] == (25.0, pytest.approx(math.sqrt(50)))  # 20 s and 30 s
    assert stock["time_to_threshold"][0] == 60.0 and stock["reached"] == 2
    assert not same_within_spread(fused["best_fid"], stock["best_fid"])
    lines = report_lines(summary, "digits")
    assert "fused vs stock: a different best FID" in lines[-1] and "2.40x" in lines[-1]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--variants", "fused,nope"], "--variants expected names from"),
        (["--metrics", "kid"], "--metrics must include fid"),
        (["--eval-every", "50", "--steps", "10"], "no evaluation would run"),
    ],
)
def test_argument_errors_are_one_line(extra, needle, capsys):
    assert cli.main(["bench", "quality", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1
        and needle in err
        and err.startswith("fastgen bench quality: error:")
    )
    assert bench_quality.FN == "fastgen bench quality"
