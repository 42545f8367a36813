"""Pure-PyTorch references: the fallback when no native kernel applies, and the oracle
every test compares the kernels with. They are the stock code each fused op replaces,
written once and shared by tests and benchmarks."""
