"""The floor of the pointwise (1×1) path: NumPy's bare matrix products against torch's convolution.

For every 1×1 layer of ``bench_conv.py`` (batch 8, float32) this times, in alternating rounds in one
process, torch's ``conv2d`` (forward, and forward+backward) against the bare ``np.matmul`` of each
layout, its operands already in place (no transposes, no bias, no subsampling, no per-sample sum):

* per sample: ``W (C_out, C) @ x_s (N, C, L)``, N products of width L = H_out·W_out;
* batch folded: ``W @ x_f (C, N·L)``, one product;
* channels-last: ``x_l (N·L, C) @ Wᵀ``.

Forward+backward adds grad_input (``Wᵀ @ g``) and grad_weight (``g @ x_sᵀ``; per sample: N products)
in each layout, the best layout per pass.  The ratio best ÷ torch is what convscope's path could
reach at most with NumPy's BLAS; everything the path does beyond the product (the layouts' copies,
the bias, the call) comes on top.

    python bench/pointwise_floor.py                    # both libraries on all cores, wall time
    python bench/pointwise_floor.py --cpu-time         # one thread each, process CPU time (a loaded machine)
    python bench/pointwise_floor.py --layers layer4.0.conv1 mb.features.15.expand --markdown floor.md
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_conv  # noqa: E402  (the layers and the machine facts)

LAYOUTS = ("per sample", "folded", "channels-last")


def pointwise_layers():
    return [layer for layer in bench_conv.RESNET50 + bench_conv.MOBILENETV2 if layer.kH == layer.kW == 1]


def products(layer, rng):
    """{(pass, layout): a call of the bare product}, its operands made beforehand."""
    N, C, Co = layer.N, layer.C_in, layer.C_out
    L = layer.H_out * layer.W_out
    W = rng.standard_normal((Co, C), dtype=np.float32)
    xs = rng.standard_normal((N, C, L), dtype=np.float32)                 # the subsampled input, per sample
    g = rng.standard_normal((N, Co, L), dtype=np.float32)
    xf = np.ascontiguousarray(xs.transpose(1, 0, 2)).reshape(C, N * L)    # (C, N·L)
    gf = np.ascontiguousarray(g.transpose(1, 0, 2)).reshape(Co, N * L)    # (C_out, N·L)
    xl = np.ascontiguousarray(xf.T)                                       # (N·L, C)
    gl = np.ascontiguousarray(gf.T)                                       # (N·L, C_out)
    Wt = np.ascontiguousarray(W.T)                                        # (C, C_out)
    xst = xs.transpose(0, 2, 1)                                           # (N, L, C) view
    return {
        ("forward", "per sample"): lambda: np.matmul(W, xs),
        ("forward", "folded"): lambda: W @ xf,
        ("forward", "channels-last"): lambda: xl @ Wt,
        ("grad_input", "per sample"): lambda: np.matmul(Wt, g),
        ("grad_input", "folded"): lambda: Wt @ gf,
        ("grad_input", "channels-last"): lambda: gl @ W,
        ("grad_weight", "per sample"): lambda: np.matmul(g, xst),
        ("grad_weight", "folded"): lambda: gf @ xf.T,
        ("grad_weight", "channels-last"): lambda: gl.T @ xl,
    }


def torch_calls(layer, rng, threads):
    arrays = bench_conv.layer_arrays(layer, rng)
    return bench_conv.build("torch", layer, arrays, threads).run


def sample(fn, clock, handover, min_sample):
    end = time.perf_counter() + handover
    while time.perf_counter() < end:
        fn()
    calls, t0 = 0, clock()
    while True:
        fn()
        calls += 1
        elapsed = clock() - t0
        if elapsed >= min_sample:
            return elapsed / calls * 1e3


def measure(layer, threads, clock, repeat, handover, min_sample, rng):
    calls = {("torch", p): f for p, f in torch_calls(layer, rng, threads).items()}
    calls.update(products(layer, rng))
    times = {k: [] for k in calls}
    for _ in range(repeat):
        for key, fn in calls.items():
            times[key].append(sample(fn, clock, handover, min_sample))
    return {k: statistics.median(v) for k, v in times.items()}


def row(layer, t):
    best = {p: min(LAYOUTS, key=lambda lay: t[(p, lay)]) for p in ("forward", "grad_input", "grad_weight")}
    fwd_best = t[("forward", best["forward"])]
    fb_best = sum(t[(p, best[p])] for p in best)
    return (f"| {layer.name} | {layer.C_in}→{layer.C_out} {layer.H_out}²{' /2' if layer.stride > 1 else ''} | "
            f"{t[('torch', 'fwd')]:.3f} | " + " | ".join(f"{t[('forward', lay)]:.3f}" for lay in LAYOUTS) +
            f" | {best['forward']} | {fwd_best / t[('torch', 'fwd')]:.2f} | {t[('torch', 'fb')]:.3f} | "
            f"{fb_best:.3f} | {fb_best / t[('torch', 'fb')]:.2f} |")


HEADER = ("| layer | 1×1 | torch fwd ms | per sample | folded | channels-last | best | best ÷ torch | "
          "torch f+b ms | best GEMMs f+b ms | ÷ torch |\n|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-time", action="store_true", help="one thread each (torch, BLAS), process CPU time")
    ap.add_argument("--layers", nargs="+", metavar="NAME", help="only these layers (bench_conv.py's names)")
    ap.add_argument("--repeat", type=int, default=5, help="alternating samples per call (median; default 5)")
    ap.add_argument("--handover", type=float, default=0.05, help="untimed calls before each sample, seconds")
    ap.add_argument("--min-sample", type=float, default=0.02, help="a sample lasts at least this, seconds")
    ap.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    args = ap.parse_args(argv)
    layers = pointwise_layers()
    if args.layers:
        known = {layer.name for layer in layers}
        unknown = [n for n in args.layers if n not in known]
        if unknown:
            print(f"pointwise_floor.py: error: --layers: not a 1×1 layer of bench_conv.py: {', '.join(unknown)}",
                  file=sys.stderr)
            return 2
        layers = [layer for layer in layers if layer.name in args.layers]
    import torch
    from threadpoolctl import threadpool_limits

    threads = 1 if args.cpu_time else bench_conv.usable_cores()
    torch.set_num_threads(threads)
    threadpool_limits(threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    rng = np.random.default_rng(0)
    lines = [f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  python bench/pointwise_floor.py "
             + " ".join(sys.argv[1:] if argv is None else argv),
             f"# {bench_conv.cpu_model()}, {threads} thread(s) each, "
             f"{'process CPU time' if args.cpu_time else 'wall time'}, median of {args.repeat} alternating samples",
             "", HEADER]
    print("\n".join(lines), flush=True)
    for layer in layers:
        lines.append(row(layer, measure(layer, threads, clock, args.repeat, args.handover, args.min_sample, rng)))
        print(lines[-1], flush=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
