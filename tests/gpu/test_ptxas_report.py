"""scripts/ptxas_report.py, the CUDA build check's table of registers, shared memory and
spills per kernel (make cuda-build), on canned ptxas output: no nvcc needed."""

from __future__ import annotations

import subprocess
import sys

from helpers import ROOT

SCRIPT = ROOT / "scripts" / "ptxas_report.py"

PTXAS = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z6hungryILi64EEvPfi' for 'sm_90'
ptxas info    : Function properties for _Z6hungryILi64EEvPfi
    232 bytes stack frame, {spill} bytes spill stores, {spill} bytes spill loads
ptxas info    : Used 32 registers, used 1 barriers, 1024 bytes smem
ptxas info    : Compiling entry function '_Z5smallPf' for 'sm_90'
ptxas info    : Function properties for _Z5smallPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 8 registers, used 0 barriers
"""


def ninja_log(spill: int) -> str:
    return (
        "[1/2] /usr/local/cuda/bin/nvcc -MD -MF /b/temp/k.o.d -c -c /s/csrc/k.cu -o /b/temp/k.o\n"
        + PTXAS.format(spill=spill)
        + "[2/2] c++ -shared /b/temp/k.o -o /b/x.so\n"
    )


def report(tmp_path, *args):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=tmp_path
    )


def test_table_names_each_kernel_with_registers_smem_and_spills(tmp_path):
    (tmp_path / "k.log").write_text(PTXAS.format(spill=0))
    out = report(tmp_path, "k.log")
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("sm_90")]
    assert ["sm_90", "32", "1024", "232", "0/0", "k", "hungry<64>"] == rows[0], out.stdout
    assert ["sm_90", "8", "0", "0", "0/0", "k", "small"] == rows[1], out.stdout


def test_a_spill_above_the_allowance_fails_naming_the_kernel(tmp_path):
    (tmp_path / "k.log").write_text(PTXAS.format(spill=24))
    out = report(tmp_path, "--max-spill", "16", "k.log")
    assert out.returncode == 1
    assert "FAIL: sm_90 k: hungry<64> spills 24 B stores / 24 B loads" in out.stderr, out.stderr
    assert report(tmp_path, "--max-spill", "24", "k.log").returncode == 0


def test_split_ninja_keeps_the_figures_of_objects_not_recompiled(tmp_path):
    (tmp_path / "first.log").write_text(ninja_log(spill=24))
    out = report(tmp_path, "--split-ninja", "cache", "--max-spill", "16", "first.log")
    assert out.returncode == 1 and "ptxas output of 1 object(s)" in out.stdout, out.stdout
    # A rebuild that compiled nothing still reports (and fails on) the cached figures...
    (tmp_path / "noop.log").write_text("ninja: no work to do.\n")
    out = report(tmp_path, "--split-ninja", "cache", "--max-spill", "16", "noop.log")
    assert out.returncode == 1 and "hungry<64>" in out.stderr, out.stdout + out.stderr
    # ...and a recompiled object replaces them.
    (tmp_path / "fixed.log").write_text(ninja_log(spill=0))
    out = report(tmp_path, "--split-ninja", "cache", "--max-spill", "16", "fixed.log")
    assert out.returncode == 0, out.stderr


def test_no_ptxas_output_is_an_error(tmp_path):
    (tmp_path / "empty.log").write_text("nvcc without -Xptxas -v\n")
    out = report(tmp_path, "empty.log")
    assert out.returncode == 1 and "no ptxas report found" in out.stderr
