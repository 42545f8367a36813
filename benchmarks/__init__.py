"""Benchmarks: one harness (harness.py, run.py) and one bench_<op>.py per op."""
