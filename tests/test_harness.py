"""benchmarks.harness: timing rows for a trivial case (the per-op benches use the same code)."""

from __future__ import annotations

import torch

from benchmarks import harness


def test_percentile():
    assert harness.percentile([3.0, 1.0, 2.0, 4.0, 5.0], 50) == 3.0
    assert harness.percentile([1.0, 2.0], 20) == 1.2
    assert harness.percentile([7.0], 80) == 7.0


def test_run_case_all_modes_and_csv():
    def make_inputs():
        return (torch.randn(4, 8, requires_grad=True), torch.randn(8, requires_grad=True))

    case = harness.Case(
        op="toy",
        case="4x8",
        make_inputs=make_inputs,
        providers={"fastgen": lambda x, b: torch.tanh(x + b), "eager": lambda x, b: (x + b).tanh()},
        modes=("forward", "backward", "full"),
        min_bytes={"forward": 3 * 4 * 8 * 4},
    )
    results = harness.run_case(case, "cpu", reps=4, warmup=1, compile=False)
    assert [(r.mode, r.provider) for r in results] == [
        (mode, provider) for mode in case.modes for provider in ("fastgen", "eager")
    ]
    assert all(len(r.times_ms) == 4 and r.median_ms > 0 for r in results)
    assert all(r.speedup_vs_eager is not None for r in results)
    rows = harness.csv_rows(results, "cpu", reps=4)
    assert set(rows[0]) == set(harness.CSV_FIELDS)
    assert float(rows[0]["achieved_gbps"]) > 0 and rows[-1]["achieved_gbps"] == ""
    assert rows[0]["peak_mem_mb"] == ""  # not measured on CPU, and says so by being empty
    assert rows[0]["commit"] and rows[0]["device"] and rows[0]["torch"] == torch.__version__
    assert "toy" in harness.format_table(results)


def test_failing_provider_is_skipped_not_fatal():
    def broken(x):
        raise RuntimeError("no kernel")

    case = harness.Case(
        "toy",
        "x",
        lambda: (torch.randn(3),),
        {"fastgen": broken, "eager": torch.sin},
        modes=("forward",),
    )
    messages = []
    results = harness.run_case(case, "cpu", reps=2, warmup=1, compile=False, log=messages.append)
    assert [r.provider for r in results] == ["eager"]
    assert "no kernel" in messages[0]


def test_matmul_fractions_and_engine_providers(monkeypatch):
    """Rows with FLOPs get their fraction of the same run's matmul rate of their dtype; on CUDA
    the conv providers force each route for the call only."""
    rows = [
        harness.Result("matmul", "mm", "forward", "torch.mm", [2.0], flops=2_000_000, dtype="bf16"),
        harness.Result("conv", "c", "full", "fastgen", [4.0], flops=1_000_000, dtype="bf16"),
        harness.Result("conv", "c", "full", "eager", [4.0], flops=1_000_000, dtype="fp32"),
    ]
    harness.add_matmul_fractions(rows)
    assert rows[0].fraction_of_matmul is None and rows[2].fraction_of_matmul is None
    assert abs(rows[1].fraction_of_matmul - 0.25) < 1e-12
    assert harness.csv_rows(rows, "cpu", 1)[1]["fraction_of_matmul"] == "0.250"

    import os

    monkeypatch.delenv("FASTGEN_CONV2D", raising=False)
    seen = []
    providers = harness.engine_providers(
        "cuda", "FASTGEN_CONV2D", fastgen=lambda: seen.append(os.environ["FASTGEN_CONV2D"]),
        eager=lambda: None,
    )  # fmt: skip
    assert set(providers) == {"fastgen", "fastgen-cudnn", "eager"}
    providers["fastgen"](), providers["fastgen-cudnn"]()
    assert seen == ["fastgen", "cudnn"] and "FASTGEN_CONV2D" not in os.environ
    assert set(harness.engine_providers("cpu", "X", fastgen=len, eager=len)) == {"fastgen", "eager"}
