"""bf16 operands on the Winograd layers: float32 products, bf16 products, and aten's bf16.

    python -m benchmarks.bench_winograd_bf16 [--threads 1] [--reps 25] [--out benchmarks/results]

On the four 4x4 stride-2 layers of the main job's DCGAN (32x32, width 32, batch 64), with
bfloat16 operands as torch.autocast gives them, three providers:
  aten             stock F.conv2d / F.conv_transpose2d (oneDNN; FASTGEN_CONV_CPU=aten)
  fastgen-f32      fastgen's Winograd kernel, operands converted to float32 on load (the
                   default when the measured choice picks fastgen; FASTGEN_WINOGRAD_BF16=0)
  fastgen-bf16     the same with the GEMMs multiplying bfloat16 (FASTGEN_WINOGRAD_BF16=1;
                   only on CPUs with AVX-512 BF16)
each forced with FASTGEN_CONV_CPU, timed forward and forward + backward (data and weight
gradients) round-robin, and its error against float64 (largest absolute error over the
largest exact value, output and both gradients). Also the one-core float32 FMA and bf16
`vdpbf16ps` peaks, and aten's forward rate in GFLOP/s of the direct convolution, so the
rows say how close to the machine's limit the stock convolution already is. Rows go to
<out>/winograd-bf16-<day>.csv with the CPU model, capability, threads, torch and commit.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time

import torch
import torch.nn.functional as F

from benchmarks.results_csv import append_rows, peak_gflops
from fastgen import _extension, ops
from fastgen.utils.environment import environment
from fastgen.utils.run_info import device_name, git_commit

# (name, transposed, input shape, weight shape) of the main job's 4x4 stride-2 layers.
LAYERS = [
    ("G 128->64 (4x4->8x8)", True, (64, 128, 4, 4), (128, 64, 4, 4)),
    ("G 64->32 (8x8->16x16)", True, (64, 64, 8, 8), (64, 32, 4, 4)),
    ("D 32->64 (16x16->8x8)", False, (64, 32, 16, 16), (64, 32, 4, 4)),
    ("D 64->128 (8x8->4x4)", False, (64, 64, 8, 8), (128, 64, 4, 4)),
]
PROVIDERS = {
    "aten": {"FASTGEN_CONV_CPU": "aten", "FASTGEN_WINOGRAD_BF16": "0"},
    "fastgen-f32": {"FASTGEN_CONV_CPU": "fastgen", "FASTGEN_WINOGRAD_BF16": "0"},
    "fastgen-bf16": {"FASTGEN_CONV_CPU": "fastgen", "FASTGEN_WINOGRAD_BF16": "1"},
}


def forward_backward(fn, x, w, grad):
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    out = fn(x, w, None, 2, 1)
    grad_x, grad_w = torch.autograd.grad(out, (x, w), grad.to(out.dtype))
    return out.detach(), grad_x, grad_w


def relative_errors(got, exact) -> list[float]:
    return [((g.double() - e).abs().max() / e.abs().max()).item() for g, e in zip(got, exact)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_winograd_bf16", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=25)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not _extension.LOADED:
        print(f"bench_winograd_bf16: the extension is not loaded ({_extension.LOAD_ERROR})",
              file=sys.stderr)  # fmt: skip
        return 2
    C = _extension._C
    active, _, features = C._cpu_capability()
    has_bf16 = active == "avx512" and "avx512bf16" in features
    providers = [p for p in PROVIDERS if p != "fastgen-bf16" or has_bf16]
    torch.set_num_threads(1)
    fma_peak = peak_gflops(C._cpu_fma_loop)
    bf16_peak = peak_gflops(C._cpu_bf16_dot_loop) if has_bf16 else None
    torch.set_num_threads(args.threads)
    print(f"one core: float32 FMA peak {fma_peak:.0f} GFLOP/s, "
          f"bf16 vdpbf16ps peak {bf16_peak or float('nan'):.0f} GFLOP/s")  # fmt: skip
    common = {"threads": args.threads, "device": device_name("cpu"), "capability": active,
              "avx512_bf16": "yes" if has_bf16 else "no", "fma_peak_gflops": round(fma_peak, 1),
              "bf16_dot_peak_gflops": round(bf16_peak, 1) if bf16_peak else "",
              "torch": torch.__version__, "commit": git_commit(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    rows = []
    for name, transposed, x_shape, w_shape in LAYERS:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(x_shape, generator=gen).bfloat16()
        w = (torch.randn(w_shape, generator=gen) * 0.02).bfloat16()
        stock = F.conv_transpose2d if transposed else F.conv2d
        op = ops.conv_transpose2d if transposed else ops.conv2d
        out_shape = stock(x[:1].float(), w.float(), None, 2, 1).shape[1:]
        grad = torch.randn((x_shape[0], *out_shape), generator=gen)
        exact = forward_backward(stock, x.double(), w.double(), grad)
        # The direct convolution's multiply-adds: every output (conv2d), or every input
        # (transposed), value meets 16 taps of each channel on the other side (w_shape[1]).
        direct_flops = 2.0 * (x if transposed else exact[0]).numel() * w_shape[1] * 16
        errors, fwd, full = {}, {p: [] for p in providers}, {p: [] for p in providers}
        for p in providers:
            fn = stock if p == "aten" else op
            with environment(PROVIDERS[p]):
                errors[p] = relative_errors(forward_backward(fn, x, w, grad), exact)
                for _ in range(3):  # warm-up (and the measured choice's first call)
                    fn(x, w, None, 2, 1)
                    forward_backward(fn, x, w, grad)
        for _ in range(args.reps):  # round-robin, so drifts hit every provider alike
            for p in providers:
                fn = stock if p == "aten" else op
                with environment(PROVIDERS[p]):
                    start = time.perf_counter()
                    fn(x, w, None, 2, 1)
                    fwd[p].append(time.perf_counter() - start)
                    start = time.perf_counter()
                    forward_backward(fn, x, w, grad)
                    full[p].append(time.perf_counter() - start)
        for p in providers:
            f_ms = sorted(fwd[p])[len(fwd[p]) // 2] * 1e3
            b_ms = sorted(full[p])[len(full[p]) // 2] * 1e3
            e_out, e_gx, e_gw = errors[p]
            rate = direct_flops / (f_ms / 1e3) / 1e9
            rows.append({"layer": name, "provider": p, "forward_ms": round(f_ms, 3),
                         "forward_backward_ms": round(b_ms, 3),
                         "forward_direct_gflops": round(rate, 1),
                         "error_out": f"{e_out:.2e}", "error_grad_input": f"{e_gx:.2e}",
                         "error_grad_weight": f"{e_gw:.2e}", "reps": args.reps, **common})  # fmt: skip
            print(f"{name:24s} {p:13s} fwd {f_ms:6.3f} ms ({rate:5.0f} GFLOP/s direct)  "
                  f"fwd+bwd {b_ms:6.3f} ms  error out {e_out:.1e} grad_x {e_gx:.1e} "
                  f"grad_w {e_gw:.1e}")  # fmt: skip
    print(f"wrote {append_rows(args.out, 'winograd-bf16', rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
